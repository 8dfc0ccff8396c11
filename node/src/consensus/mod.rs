//! Tendermint-style BFT consensus: a pure state machine ([`state_machine`]), its vote keeper,
//! stake-weighted proposer rotation, a signer with double-sign protection, and a deterministic
//! simulator that drives the very same core. See `docs/CONSENSUS.md`.

pub mod keeper;
pub mod signer;
pub mod sim;
pub mod state_machine;
pub use blyan_wire::types;
pub mod validators;

#[cfg(test)]
mod state_machine_tests;
