//! Blyan's wire formats, apart from the node so that they build (and fuzz) without its I/O:
//! blocks and their hashes ([`block`]), consensus messages ([`types`]) and their encodings
//! ([`wire`]), transactions ([`tx`]), and the CBOR request-response messages of block sync,
//! state sync and expert tiles ([`sync`]). Every decoder refuses malformed input with an error,
//! never a panic (fuzzed in `fuzz/`).

pub mod block;
pub mod sync;
pub mod tx;
pub mod types;
pub mod wire;
