//! The Docker backend behind the [`Backend`] trait: one container per node on the devnet's
//! bridge network (`crate::docker` builds the image and starts them); node faults are
//! container operations, `isolate` disconnects the container from the network.

use std::path::Path;
use std::time::Duration;

use bollard::models::{
    EndpointIpamConfig, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RestartContainerOptions, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use bollard::Docker;

use super::{
    each, logs_error, runtime, stream_logs, unless_interrupted, Backend, BackendError, BackendKind,
    DownSummary, LogOptions, UpSettings,
};
use crate::docker::{self as engine, Stage};
use crate::manifest::Manifest;
use crate::scenario::{Action, Planned, ScenarioError};
use crate::testnet::record::DevnetState;

/// Containers on this host's Docker daemon.
pub struct Containers {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) docker: Docker,
}

/// Node `index`'s container (a Swarm node's: its service).
pub(super) fn container_of(state: &DevnetState, index: usize) -> Result<String, String> {
    state.nodes[index]
        .container
        .clone()
        .ok_or_else(|| "no container".to_string())
}

/// Node `index`'s data directory on the host (under the home its container binds).
fn data_dir(state: &DevnetState, index: usize) -> std::path::PathBuf {
    blyan_node::home::Home::new(&state.nodes[index].home).data()
}

fn ip_of(api: &str) -> Option<String> {
    let rest = api.strip_prefix("http://")?;
    Some(rest.split(':').next()?.to_string())
}

impl Containers {
    /// Connects to the local daemon (it must answer within 3 s).
    pub fn connect() -> Result<Containers, BackendError> {
        let runtime = runtime()?;
        let docker = runtime.block_on(engine::connect())?;
        Ok(Containers { runtime, docker })
    }

    /// A container's state as the daemon reports it (`running`, `paused`, `exited`, ...).
    pub(super) fn state_of(&self, container: &str) -> String {
        self.runtime
            .block_on(self.docker.inspect_container(container, None))
            .ok()
            .and_then(|inspect| inspect.state?.status)
            .map_or("unknown".to_string(), |status| status.to_string())
    }

    pub(super) fn kill(&self, container: &str) -> Result<(), String> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        self.runtime
            .block_on(self.docker.kill_container(container, Some(options)))
            .map_err(|e| e.to_string())
    }

    pub(super) fn stop(&self, container: &str) -> Result<(), String> {
        let options = StopContainerOptionsBuilder::default().t(5).build();
        self.runtime
            .block_on(self.docker.stop_container(container, Some(options)))
            .map_err(|e| e.to_string())
    }

    pub(super) fn pause(&self, container: &str) -> Result<(), String> {
        self.runtime
            .block_on(self.docker.pause_container(container))
            .map_err(|e| e.to_string())
    }

    pub(super) fn unpause(&self, container: &str) -> Result<(), String> {
        self.runtime
            .block_on(self.docker.unpause_container(container))
            .map_err(|e| e.to_string())
    }

    fn start(&self, container: &str) -> Result<(), String> {
        self.runtime
            .block_on(
                self.docker
                    .start_container(container, None::<StartContainerOptions>),
            )
            .map_err(|e| e.to_string())
    }

    /// Whether the container is running (a node that exited on its own stopped it).
    fn running(&self, container: &str) -> Result<bool, String> {
        let inspect = self
            .runtime
            .block_on(self.docker.inspect_container(container, None))
            .map_err(|e| e.to_string())?;
        Ok(inspect.state.and_then(|s| s.running).unwrap_or(false))
    }

    /// A power loss of node `i`'s container: SIGKILL, then, once it has exited (its files
    /// closed), its FUSE layer on the host drops every unsynced write and is mounted again over
    /// what was synced; the container starts again when the fault ends (its home bind then
    /// takes the new mount).
    fn power_loss(&self, state: &mut DevnetState, i: usize) -> Result<(), String> {
        let pid = state.nodes[i]
            .lazyfs_pid
            .ok_or("its data directory is not on blyan-lazyfs")?;
        let container = container_of(state, i)?;
        self.kill(&container)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.running(&container)? {
            if std::time::Instant::now() > deadline {
                return Err(format!("{container} still runs 10 s after SIGKILL"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let data = data_dir(state, i);
        crate::disk::end_lazyfs(pid, libc::SIGUSR1, &data)?;
        state.nodes[i].lazyfs_pid = Some(crate::disk::mount_lazyfs(&state.node_bin, &data)?);
        // The new pid goes into the record, for `devnet down`.
        let base = crate::testnet::record::base_of(state).ok_or("a devnet without nodes")?;
        crate::testnet::record::save_state(&base, state).map_err(|e| e.to_string())
    }

    fn restart(&self, container: &str) -> Result<(), String> {
        self.runtime
            .block_on(
                self.docker
                    .restart_container(container, None::<RestartContainerOptions>),
            )
            .map_err(|e| e.to_string())
    }

    fn disconnect(&self, network: &str, container: String) -> Result<(), String> {
        let request = NetworkDisconnectRequest {
            container,
            force: Some(true),
        };
        self.runtime
            .block_on(self.docker.disconnect_network(network, request))
            .map_err(|e| e.to_string())
    }

    /// Connects the container again at the address it had.
    fn reconnect(&self, network: &str, container: String, ip: String) -> Result<(), String> {
        let request = NetworkConnectRequest {
            container,
            endpoint_config: Some(EndpointSettings {
                ipam_config: Some(EndpointIpamConfig {
                    ipv4_address: Some(ip),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        self.runtime
            .block_on(self.docker.connect_network(network, request))
            .map_err(|e| e.to_string())
    }

    /// Each node's container memory, by node name.
    pub(super) fn memory_by_name(&self, state: &DevnetState) -> Vec<Option<u64>> {
        let usage: std::collections::HashMap<String, u64> = self
            .runtime
            .block_on(engine::memory_usage(&self.docker, &state.name))
            .unwrap_or_default()
            .into_iter()
            .collect();
        state
            .nodes
            .iter()
            .map(|node| usage.get(&node.moniker).copied())
            .collect()
    }
}

fn stage_line(stage: Stage, wait_height: u64) -> String {
    match stage {
        Stage::Image => "image: checking blyan-node:dev".to_string(),
        Stage::Genesis => "keys, configs and genesis".to_string(),
        Stage::Network => "network".to_string(),
        Stage::Containers { started, of } => format!("containers: {started}/{of} started"),
        Stage::Heights { ready, of } => format!("{ready}/{of} nodes at height >= {wait_height}"),
    }
}

impl Backend for Containers {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn up(
        &self,
        manifest: &Manifest,
        settings: &UpSettings,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<DevnetState, BackendError> {
        let stages = |stage: Stage| progress(stage_line(stage, settings.wait_height));
        let up = engine::up(&self.docker, manifest, settings, stages);
        let clean = async {
            let removed = engine::remove_by_label(&self.docker, Some(&manifest.name)).await?;
            Ok(format!(
                "removed {} containers and {} networks",
                removed.containers, removed.networks
            ))
        };
        self.runtime.block_on(unless_interrupted(up, clean))
    }

    fn down(&self, base: &Path, name: &str, _grace: Duration) -> Result<DownSummary, BackendError> {
        let removed = self
            .runtime
            .block_on(engine::remove_by_label(&self.docker, Some(name)))?;
        crate::docker::release_disks(base, name);
        Ok(format!(
            "devnet {name:?}: removed {} containers and {} networks",
            removed.containers, removed.networks
        ))
    }

    fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Isolate => {
                let network = state.network.clone().unwrap_or_default();
                each(self, state, nodes, "isolate", |this, state, i| {
                    this.disconnect(&network, container_of(state, i)?)
                })
            }
            Action::Kill => each(self, state, nodes, "kill", |this, state, i| {
                this.kill(&container_of(state, i)?)
            }),
            Action::Stop => each(self, state, nodes, "stop", |this, state, i| {
                this.stop(&container_of(state, i)?)
            }),
            Action::Pause => each(self, state, nodes, "pause", |this, state, i| {
                this.pause(&container_of(state, i)?)
            }),
            Action::Restart => each(self, state, nodes, "restart", |this, state, i| {
                this.restart(&container_of(state, i)?)
            }),
            Action::Heal
            | Action::Resume
            | Action::Cut
            | Action::Toxic
            | Action::OneWay
            | Action::InNode => Ok(()),
            Action::DiskFull => each(self, state, nodes, "fill the disk of", |_, state, i| {
                crate::disk::fill(&data_dir(state, i)).map(drop)
            }),
            Action::DiskSlow(ms) => each(self, state, nodes, "slow the disk of", |_, state, i| {
                crate::disk::set_fsync_delay(&data_dir(state, i), ms)
            }),
            Action::PowerLoss => each(self, state, nodes, "cut the power of", |this, state, i| {
                this.power_loss(state, i)
            }),
            // Created with the devnet and `--state-sync` in its command; started now.
            Action::Join => each(self, state, nodes, "join", |this, state, i| {
                this.start(&container_of(state, i)?)
            }),
            Action::Upgrade => each(self, state, nodes, "upgrade", |this, state, i| {
                let binary = step.binary.clone().ok_or("an upgrade names its binary")?;
                let id = this
                    .runtime
                    .block_on(crate::docker::replace_node(&this.docker, state, i, &binary))
                    .map_err(|e| e.to_string())?;
                state.nodes[i].container = Some(id);
                state.nodes[i].bin = Some(binary);
                let base =
                    crate::testnet::record::base_of(state).ok_or("a devnet without nodes")?;
                crate::testnet::record::save_state(&base, state).map_err(|e| e.to_string())
            }),
        }
    }

    fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Isolate => {
                let network = state.network.clone().unwrap_or_default();
                each(self, state, nodes, "reconnect", |this, state, i| {
                    let ip = ip_of(&state.nodes[i].api).ok_or("no address")?;
                    this.reconnect(&network, container_of(state, i)?, ip)
                })
            }
            Action::Kill | Action::Stop => each(self, state, nodes, "start", |this, state, i| {
                this.start(&container_of(state, i)?)
            }),
            Action::Pause => each(self, state, nodes, "unpause", |this, state, i| {
                this.unpause(&container_of(state, i)?)
            }),
            // Space freed; a node that stopped on the full disk (its container exited) starts.
            Action::DiskFull => each(self, state, nodes, "free the disk of", |this, state, i| {
                crate::disk::free(&data_dir(state, i))?;
                let container = container_of(state, i)?;
                if !this.running(&container)? {
                    this.start(&container)?;
                }
                Ok(())
            }),
            Action::DiskSlow(_) => {
                each(self, state, nodes, "speed up the disk of", |_, state, i| {
                    crate::disk::set_fsync_delay(&data_dir(state, i), 0)
                })
            }
            Action::PowerLoss => each(self, state, nodes, "start", |this, state, i| {
                this.start(&container_of(state, i)?)
            }),
            _ => Ok(()),
        }
    }

    fn memory(&self, state: &DevnetState) -> Vec<Option<u64>> {
        self.memory_by_name(state)
    }

    fn running(&self, state: &DevnetState) -> Vec<String> {
        (0..state.nodes.len())
            .map(|index| match container_of(state, index) {
                Ok(container) => self.state_of(&container),
                Err(reason) => reason,
            })
            .collect()
    }

    fn logs(
        &self,
        state: &DevnetState,
        index: usize,
        options: LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        let container = container_of(state, index).map_err(|e| logs_error(state, index, e))?;
        self.runtime
            .block_on(stream_logs(&self.docker, &container, false, options, out))
            .map_err(|e| logs_error(state, index, e))
    }
}
