//! The lean Blyan node: crash-safe RocksDB storage, Tendermint-style consensus over libp2p
//! (TLS 1.3), a proof-of-stake chain state (staking, epochs, slashing, rewards), an HTTP API with
//! Prometheus metrics, and mixture-of-experts inference with candle whose experts are verified
//! tiles fetched from peers. `ARCHITECTURE.md` maps the modules.

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
pub mod migrate;
pub mod node;
pub mod p2p;
pub mod pki;
pub mod seeder;
pub mod service;
pub mod state;
pub mod statesync;
pub mod storage;
pub use blyan_wire::wire;

/// Crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("BUILD_GIT_COMMIT");
/// `--version`: the version and the commit (the harness reads the commit from it).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ")"
);

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text
/// the line already holds (an error whose message embeds its source would print it twice).
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;
    use crate::storage::StorageError;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("storage: {0}")]
        Storage(#[from] StorageError),
        #[error("opening the home")]
        Context(#[source] StorageError),
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let corrupt = || StorageError::Corrupt {
            path: "H/data".into(),
            detail: "the chain is at height 3 but holds no state".into(),
        };
        let embedded = Outer::from(corrupt());
        assert_eq!(
            error_line(&embedded),
            "storage: database H/data is corrupt: the chain is at height 3 but holds no state"
        );
        let wrapped = Outer::Context(corrupt());
        assert_eq!(
            error_line(&wrapped),
            "opening the home: database H/data is corrupt: the chain is at height 3 but holds no state"
        );
    }
}
