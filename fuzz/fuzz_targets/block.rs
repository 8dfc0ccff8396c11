//! Blocks as stored and synced, and blocks of the first encoding (read when a database of that
//! encoding is upgraded).
#![no_main]
use blyan_wire::block::{Block, V1Block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        let again = Block::decode(&block.encode()).expect("a re-encoded block decodes");
        assert_eq!(again, block);
        assert_eq!(again.hash(), block.hash());
    }
    if let Ok(block) = V1Block::decode(data) {
        assert_eq!(data.first(), Some(&1), "a v1 block starts with its version");
        assert!(block.txs.iter().map(|tx| tx.len() + 4).sum::<usize>() < data.len());
    }
});
