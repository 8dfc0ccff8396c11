//! Shared helpers for the workspace-level integration tests in `tests/`.

use std::path::PathBuf;

/// The repository root (where the workspace `Cargo.toml` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
