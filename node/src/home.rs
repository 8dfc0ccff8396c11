//! The layout of a node's home directory.

use std::path::{Path, PathBuf};

/// Paths inside a node home:
///
/// ```text
/// HOME/config.toml
/// HOME/keys/node_key.json        libp2p identity (ed25519), mode 0600
/// HOME/keys/validator_key.json   consensus signing key (ed25519), mode 0600
/// HOME/genesis.json               the chain's genesis (validators, accounts)
/// HOME/data/                     RocksDB
/// HOME/checkpoints/<height>/     RocksDB checkpoints
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn node_key(&self) -> PathBuf {
        self.keys_dir().join("node_key.json")
    }

    pub fn validator_key(&self) -> PathBuf {
        self.keys_dir().join("validator_key.json")
    }

    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.json")
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// Expert weights and their tile manifests (`crate::inference::tiles`).
    pub fn experts(&self) -> PathBuf {
        self.root.join("experts")
    }
}
