//! The lean Blyan node: crash-safe RocksDB storage, an HTTP API with Prometheus metrics, and
//! (in later issues) Tendermint-style consensus, libp2p networking and MoE inference.

pub mod api;
pub mod bench;
pub mod block;
pub mod config;
pub mod consensus;
pub mod home;
pub mod keys;
pub mod metrics;
pub mod storage;

/// Crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("BUILD_GIT_COMMIT");
