//! Blocks as stored and synced.
#![no_main]
use blyan_wire::block::Block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        let again = Block::decode(&block.encode()).expect("a re-encoded block decodes");
        assert_eq!(again, block);
        assert_eq!(again.hash(), block.hash());
    }
});
