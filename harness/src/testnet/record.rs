//! The record of a running devnet, `BASE/NAME/devnet.json`: what every command after `up`
//! (status, logs, down, run, bench) reads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io, NatPlan, TestnetError};
use crate::backend::kind::BackendKind;

/// One node of a running devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    pub index: usize,
    pub moniker: String,
    pub home: PathBuf,
    pub api: String,
    pub p2p: String,
    pub peer_id: String,
    pub validator_key: String,
    #[serde(default = "yes")]
    pub validator: bool,
    pub pid: Option<u32>,
    /// The container id (Docker backend).
    #[serde(default)]
    pub container: Option<String>,
    pub log: PathBuf,
    /// The HTTPS API URL (certificates under the devnet's `pki/`), when the node serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_https: Option<String>,
    /// The binary this node runs when not the devnet's `node_bin` (process backend: an upgrade,
    /// or `devnet run --old-build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<PathBuf>,
    /// The `blyan-lazyfs` process under this node's data directory (a slow or power-loss disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazyfs_pid: Option<u32>,
}

fn yes() -> bool {
    true
}

/// `BASE/NAME/devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetState {
    pub name: String,
    pub backend: BackendKind,
    pub chain_id: String,
    pub seed: u64,
    pub node_bin: PathBuf,
    pub nodes: Vec<NodeEntry>,
    pub started_ms: u64,
    /// The Docker network (Docker backend).
    #[serde(default)]
    pub network: Option<String>,
    /// The link proxy, when every P2P link runs through one (`network.proxy`).
    #[serde(default)]
    pub proxy: Option<crate::links::ProxyInfo>,
    /// The swarm (Swarm backend; node `container` fields hold service ids).
    #[serde(default)]
    pub swarm: Option<SwarmInfo>,
    /// NAT topology: node indices of the relays and of the nodes behind NAT.
    #[serde(default)]
    pub nat: Option<NatPlan>,
}

/// What a Swarm devnet records of its swarm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmInfo {
    /// The harness initialised the swarm (and `down` leaves it).
    pub created: bool,
    /// Hostnames of the members the nodes were placed on.
    pub members: Vec<String>,
}

/// A funded devnet account (devnet only: the secret is on disk in the clear).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountEntry {
    pub address: String,
    pub secret_key: String,
    pub balance: u64,
}

pub fn devnet_dir(base: &Path, name: &str) -> PathBuf {
    base.join(name)
}

/// The base directory `state`'s record lives under: every node's home is
/// `BASE/NAME/MONIKER` (`homes::write_devnet`).
pub fn base_of(state: &DevnetState) -> Option<PathBuf> {
    let home = &state.nodes.first()?.home;
    Some(home.parent()?.parent()?.to_path_buf())
}

fn state_path(base: &Path, name: &str) -> PathBuf {
    devnet_dir(base, name).join("devnet.json")
}

pub fn load_state(base: &Path, name: &str) -> Result<DevnetState, TestnetError> {
    let path = state_path(base, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(TestnetError::NotFound {
                name: name.to_string(),
                base: base.to_path_buf(),
            })
        }
        Err(error) => return Err(io(&path)(error)),
    };
    serde_json::from_str(&text)
        .map_err(|error| TestnetError::Invalid(format!("{}: {error}", path.display())))
}

pub fn save_state(base: &Path, state: &DevnetState) -> Result<(), TestnetError> {
    let path = state_path(base, &state.name);
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(&temporary, text).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))
}
