//! The resolved testnet: every node's name, stake, addresses and settings, decided before a
//! home is written or a process or container starts (`DevnetPlan`), the one writer of node
//! homes for every backend and renderer (`homes`), and the record of a running devnet
//! (`record`, `devnet.json`).

use std::ops::Not;
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
    /// Blocks between state snapshots, when not the node's default (a late joiner needs one
    /// early in a short run).
    pub snapshot_interval: Option<u64>,
}

/// How a backend or renderer places its nodes, handed to [`resolve`] as data: where node `i`
/// listens and how it is reached, whether a link proxy runs and where, and the settings that
/// are the harness's rather than the manifest's.
pub struct Addressing<'a> {
    pub backend: BackendKind,
    /// Node `index`'s listen addresses and URLs (its `moniker` and `stake` come from the
    /// manifest and are overwritten).
    pub node: &'a dyn Fn(usize) -> NodePlan,
    /// Where the link proxy runs, when the manifest asks for one (`network.proxy`); `None`
    /// renders without one.
    pub proxy: Option<crate::links::ProxyPlan>,
    pub log_level: &'a str,
    pub node_bin: &'a std::path::Path,
    /// Genesis time; `None`: now.
    pub genesis_time_ms: Option<u64>,
}

/// The testnet a manifest describes, placed by `addressing`: every node's name, stake and
/// addresses, the chain's settings, the Byzantine switches, twins, the link proxy and the NAT
/// plan. The one builder of a [`DevnetPlan`] from a manifest (Docker, Swarm, compose and k8s;
/// the process backend's programmatic `UpOptions` build theirs in `process::prepare`).
/// Blocks between snapshots in a devnet with a late joiner (`kind = "join"`): the node's
/// default of 500 is more than a short run makes, and a joiner started with `--state-sync`
/// needs a snapshot to restore.
pub const JOIN_SNAPSHOT_INTERVAL: u64 = 50;

pub fn resolve(manifest: &crate::manifest::Manifest, addressing: &Addressing) -> DevnetPlan {
    use crate::manifest::Role;
    let resolved = manifest.resolve();
    let nodes = resolved
        .iter()
        .map(|node| NodePlan {
            moniker: node.name.clone(),
            stake: if node.role == Role::Validator {
                node.stake
            } else {
                0
            },
            ..(addressing.node)(node.index)
        })
        .collect();
    let index_of = |name: &String| {
        resolved
            .iter()
            .position(|node| &node.name == name)
            .expect("validated: topology names are nodes")
    };
    let nat = manifest.network.topology.as_ref().map(|topology| NatPlan {
        relays: topology.relays.iter().map(index_of).collect(),
        behind: topology
            .homes
            .iter()
            .flat_map(|home| home.nodes.iter().map(index_of))
            .collect(),
    });
    let consensus = &manifest.consensus;
    DevnetPlan {
        name: manifest.name.clone(),
        backend: addressing.backend,
        chain_id: manifest.chain_id.clone(),
        seed: manifest.seed,
        accounts: manifest.load.accounts as usize,
        account_balance: 1_000_000_000,
        timeout_commit_ms: consensus.timeout_commit_ms as u64,
        timeout_propose_ms: consensus.timeout_propose_ms as u64,
        timeout_prevote_ms: consensus.timeout_prevote_ms as u64,
        timeout_precommit_ms: consensus.timeout_precommit_ms as u64,
        commit_delay_ms: consensus.commit_delay_ms as u64,
        equivocators: manifest.equivocators(),
        log_level: addressing.log_level.into(),
        node_bin: addressing.node_bin.to_path_buf(),
        nodes,
        genesis_time_ms: addressing.genesis_time_ms,
        staking: manifest.staking_params(),
        proxy: addressing.proxy.clone().filter(|_| manifest.network.proxy),
        byzantine: manifest.byzantine_settings(),
        twins: manifest.twins(),
        nat,
        snapshot_interval: manifest
            .joiners()
            .is_empty()
            .not()
            .then_some(JOIN_SNAPSHOT_INTERVAL),
    }
}
