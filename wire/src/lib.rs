//! Blyan's wire formats, apart from the node so that they build (and fuzz) without its I/O:
//! blocks and their hashes ([`block`]), consensus messages ([`types`]) and their encodings
//! ([`wire`]), and transactions ([`tx`]). Every decoder refuses malformed input with an error,
//! never a panic (fuzzed in `fuzz/`).

pub mod block;
pub mod tx;
pub mod types;
pub mod wire;
