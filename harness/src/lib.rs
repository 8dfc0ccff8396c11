//! The Blyan devnet harness: it turns a manifest into a running devnet (Docker or local
//! processes), drives load and faults, records histories, checks them and compares baselines.
//!
//! Built so far: `devnet sim`, batches of seeded scenarios in the deterministic consensus
//! simulator, and the process backend (`devnet up/down/status`). The manifest, the Docker
//! backend, scenario runner, history, checkers, reports and baselines arrive with their issues.

pub mod compose;
pub mod docker;
pub mod manifest;
pub mod plan;
pub mod process;
pub mod sim;
