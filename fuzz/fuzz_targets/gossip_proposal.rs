//! Gossip proposals (the `/proposals` topic, a signed proposal and its block).
#![no_main]
use blyan_wire::wire::{decode_proposal, encode_proposal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((proposal, block)) = decode_proposal(data) {
        let (again, again_block) =
            decode_proposal(&encode_proposal(&proposal, &block)).expect("re-encoded decodes");
        assert_eq!(again, proposal);
        assert_eq!(again_block, block);
    }
});
