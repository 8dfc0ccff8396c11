//! Which backend runs a devnet: the one enum every other module names a backend by (the
//! manifest's `backend`, the devnet record's, `--backend`). A leaf: it imports nothing of the
//! harness, so the manifest can use it without importing the backends.

use serde::{Deserialize, Serialize};

/// Which backend runs the devnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Docker when a daemon answers, local processes otherwise.
    Auto,
    Docker,
    Process,
    /// Docker Swarm services (`docs/SCALING.md`).
    Swarm,
}

impl BackendKind {
    /// The name written in manifests, `devnet.json` and `--backend`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Docker => "docker",
            BackendKind::Process => "process",
            BackendKind::Swarm => "swarm",
        }
    }

    /// `--backend`'s text; the error names the value and the choices.
    pub fn parse(text: &str) -> Result<BackendKind, String> {
        [
            BackendKind::Auto,
            BackendKind::Docker,
            BackendKind::Process,
            BackendKind::Swarm,
        ]
        .into_iter()
        .find(|kind| kind.name() == text)
        .ok_or_else(|| format!("{text:?} is not auto, docker, process or swarm"))
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a backend can do, asked before anything starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `isolate` without a link proxy: the node is taken off the devnet's network.
    pub isolate: bool,
    /// `network.topology`: NAT routers and home networks.
    pub nat: bool,
    /// `[inference]`: a model generated into a node's home before the run.
    pub inference: bool,
    /// The nodes run on this host, so they must fit its memory and cores (Swarm plans against
    /// its members instead).
    pub on_this_host: bool,
    /// One bridge network holds every node, so the kernel's neighbour (ARP) table must too.
    pub shared_bridge: bool,
    /// A node can be started again from another binary of this host with its home kept
    /// (`upgrade`, `devnet run --old-build`): a process, or a container of an image built from
    /// that binary.
    pub host_binaries: bool,
    /// A node can be left unstarted with the devnet and started later (`join`): a process, or
    /// a container created with the devnet and started at its time.
    pub late_start: bool,
    /// The nodes' data directories are directories of this host (a process's home, or the home
    /// a container binds), so `disk` faults mount their layers under them (a tmpfs,
    /// `blyan-lazyfs`).
    pub host_disks: bool,
}

impl BackendKind {
    /// What a devnet on this backend can do; `None` for `Auto`, which is not a backend until
    /// resolved.
    pub fn capabilities(self) -> Option<Capabilities> {
        let caps = |isolate, nat, inference, on_this_host, shared_bridge| Capabilities {
            isolate,
            nat,
            inference,
            on_this_host,
            shared_bridge,
            host_binaries: on_this_host,
            host_disks: on_this_host,
            late_start: on_this_host,
        };
        match self {
            BackendKind::Auto => None,
            // Processes share loopback: nothing to disconnect a single node from.
            BackendKind::Process => Some(caps(false, false, true, true, false)),
            BackendKind::Docker => Some(caps(true, true, true, true, true)),
            // Task containers cannot leave the overlay network; homes live in volumes on the
            // members; the nodes are placed on the members, not on this host.
            BackendKind::Swarm => Some(caps(false, false, false, false, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BackendKind;

    #[test]
    fn every_kind_parses_back_from_its_name_and_json_uses_the_same_name() {
        for kind in [
            BackendKind::Auto,
            BackendKind::Docker,
            BackendKind::Process,
            BackendKind::Swarm,
        ] {
            assert_eq!(BackendKind::parse(kind.name()), Ok(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
        let error = BackendKind::parse("k8s").unwrap_err();
        assert!(error.contains("\"k8s\""), "{error}");
    }
}
