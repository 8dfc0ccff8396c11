//! Commit certificates (block sync answers carry one per block).
#![no_main]
use blyan_wire::wire::Commit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(commit) = Commit::decode(data) {
        let again = Commit::decode(&commit.encode()).expect("a re-encoded commit decodes");
        assert_eq!(again, commit);
    }
});
