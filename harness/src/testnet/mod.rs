//! The resolved testnet: every node's name, stake, addresses and settings, decided before a
//! home is written or a process or container starts (`DevnetPlan`), the one writer of node
//! homes for every backend and renderer (`homes`), and the record of a running devnet
//! (`record`, `devnet.json`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::kind::BackendKind;

pub mod homes;
pub mod record;

/// Why a testnet cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no devnet {name:?} under {base} (start one with `devnet up`)")]
    NotFound { name: String, base: PathBuf },
    #[error("key: {0}")]
    Key(String),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TestnetError + '_ {
    move |source| TestnetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who relays and who is behind NAT, by node index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NatPlan {
    pub relays: Vec<usize>,
    pub behind: Vec<usize>,
}

/// Where one node listens and how the others reach it.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub moniker: String,
    /// Voting power; 0 makes a full node (not in the genesis validator set).
    pub stake: u64,
    /// `api.listen` inside the node.
    pub api_listen: String,
    /// The API URL from where the harness runs.
    pub api_url: String,
    /// `p2p.listen` inside the node.
    pub p2p_listen: String,
    /// The address the other nodes dial (and this node announces), without `/p2p/`.
    pub p2p_address: String,
    /// HTTPS beside the plain API: (`api.tls.listen` inside the node, URL from the harness).
    /// With it the devnet gets a CA (`DIR/pki/`), this node a server certificate and the
    /// harness an admin client certificate (`DIR/pki/admin.crt`).
    pub api_https: Option<(String, String)>,
}

/// Everything `write_devnet` needs.
#[derive(Clone, Debug)]
pub struct DevnetPlan {
    pub name: String,
    pub backend: BackendKind,
    pub chain_id: String,
    pub seed: u64,
    pub accounts: usize,
    pub account_balance: u64,
    pub timeout_commit_ms: u64,
    pub timeout_propose_ms: u64,
    pub timeout_prevote_ms: u64,
    pub timeout_precommit_ms: u64,
    /// Devnet-only slowdown added to every commit (0: none).
    pub commit_delay_ms: u64,
    /// Monikers of the validators that equivocate on purpose (devnet Byzantine mode).
    pub equivocators: Vec<String>,
    pub log_level: String,
    pub node_bin: PathBuf,
    pub nodes: Vec<NodePlan>,
    /// Genesis time; `None`: now. Fixed for renderings that are checked in or snapshotted.
    pub genesis_time_ms: Option<u64>,
    /// Staking, epoch and slashing parameters written into genesis.
    pub staking: blyan_node::state::StakingParams,
    /// Route every directed P2P link through its own proxy.
    pub proxy: Option<crate::links::ProxyPlan>,
    /// Devnet Byzantine settings per node moniker (written into each node's `[devnet]`).
    pub byzantine: Vec<(String, blyan_node::config::DevnetConfig)>,
    /// Twins: (twin moniker, moniker of the validator whose key it runs).
    pub twins: Vec<(String, String)>,
    /// NAT topology: which nodes are relays and which sit behind NAT (Docker backend).
    pub nat: Option<NatPlan>,
}
