//! The lean Blyan node: crash-safe RocksDB storage, Tendermint-style consensus over libp2p
//! (TLS 1.3), a proof-of-stake chain state (staking, epochs, slashing, rewards), an HTTP API with
//! Prometheus metrics, and (in a later issue) MoE inference.

pub mod api;
pub mod api_tls;
pub mod app;
pub mod bench;
pub use blyan_wire::block;
pub mod config;
pub mod consensus;
pub mod genesis;
pub mod home;
pub mod inference;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod p2p;
pub mod pki;
pub mod seeder;
pub mod state;
pub mod statesync;
pub mod storage;
pub use blyan_wire::wire;

/// Crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("BUILD_GIT_COMMIT");
