//! How to start a devnet beyond its manifest (the command line's choices), for every backend.
//! A leaf, so that the backends' machinery (`crate::docker`, `crate::swarm`) takes it as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to start a devnet, beyond its manifest: the command line's choices.
#[derive(Clone, Debug)]
pub struct UpSettings {
    /// Directory holding devnets (`BASE/NAME/devnet.json`).
    pub base: PathBuf,
    pub node_bin: PathBuf,
    /// Process backend: API and P2P port of node 0 (node i on base + i). Swarm: the host port
    /// of node 0's API.
    pub api_port_base: u16,
    pub p2p_port_base: u16,
    pub wait_height: u64,
    pub wait_timeout: Duration,
    pub log_level: String,
    /// Start although the plan says the nodes do not fit this host.
    pub force: bool,
    /// Swarm: push the node image to this registry instead of loading it on every member.
    pub registry: Option<String>,
    /// Swarm: create a single-node swarm when the daemon is in none.
    pub swarm_init: bool,
    /// Process backend: nodes that start from another binary than `node_bin` (name, binary;
    /// `devnet run --old-build`).
    pub node_bins: Vec<(String, PathBuf)>,
}

impl UpSettings {
    /// The settings the harness's own commands use: height 1 on every node within 300 s,
    /// default ports.
    pub fn new(base: &Path, node_bin: PathBuf) -> UpSettings {
        UpSettings {
            base: base.to_path_buf(),
            node_bin,
            api_port_base: 27000,
            p2p_port_base: 28000,
            wait_height: 1,
            wait_timeout: Duration::from_secs(300),
            log_level: "info".into(),
            force: false,
            registry: None,
            swarm_init: true,
            node_bins: Vec::new(),
        }
    }
}
