//! Carrying out a manifest's `[[faults]]` on a running devnet, with what the node and the
//! backends offer before the fault proxy lands:
//!
//! | kind | Docker | processes |
//! |---|---|---|
//! | `isolate`, `partition` | the listed nodes are disconnected from the devnet network (each alone) | refused: needs Docker |
//! | `kill` | SIGKILL; started again when the fault ends | SIGKILL; started again when it ends |
//! | `pause` | `docker pause`; unpaused when it ends | SIGSTOP; SIGCONT when it ends |
//! | `restart` | `docker restart` (instant) | SIGKILL and start again (instant) |
//! | `heal` | ends every active fault | same |
//! | `resume` | ends the listed nodes' active pauses | same |
//!
//! `latency` needs the link proxy (chaos) and is refused with that reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;

use crate::manifest::Fault;
use crate::process::{self, DevnetState};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("faults[{index}]: {reason}")]
    Unsupported { index: usize, reason: String },
    #[error("faults[{index}]: node {name:?} is not in the devnet")]
    UnknownNode { index: usize, name: String },
    #[error("{action} {node}: {reason}")]
    Action {
        action: String,
        node: String,
        reason: String,
    },
}

/// What a fault does to its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Isolate,
    Kill,
    Pause,
    Restart,
    Heal,
    Resume,
}

/// One step of the schedule: when, what, to which nodes (indices), and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub action: Action,
    pub nodes: Vec<usize>,
    pub duration: Option<Duration>,
    pub label: String,
}

/// A fault in force, to be ended at `until` (or by a heal).
#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    pub action: Action,
    pub nodes: Vec<usize>,
    pub until: Option<Duration>,
    pub label: String,
}

/// Turns the manifest's faults into a schedule, refusing what cannot be done on `backend`
/// before anything starts.
pub fn plan(
    faults: &[Fault],
    state: &DevnetState,
    backend: &str,
) -> Result<Vec<Planned>, ScenarioError> {
    let mut out = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        let unsupported = |reason: &str| ScenarioError::Unsupported {
            index,
            reason: reason.to_string(),
        };
        let action = match fault.kind.as_str() {
            "isolate" | "partition" if backend == "docker" => Action::Isolate,
            "isolate" | "partition" => {
                return Err(unsupported(
                    "cutting links needs the Docker backend (processes share loopback)",
                ))
            }
            "kill" => Action::Kill,
            "pause" => Action::Pause,
            "restart" => Action::Restart,
            "heal" => Action::Heal,
            "resume" => Action::Resume,
            "latency" => {
                return Err(unsupported(
                    "link latency needs the fault proxy (chaos), not built yet",
                ))
            }
            other => return Err(unsupported(&format!("unknown fault kind {other:?}"))),
        };
        let nodes = fault
            .nodes
            .iter()
            .map(|name| {
                state
                    .nodes
                    .iter()
                    .position(|node| &node.moniker == name)
                    .ok_or_else(|| ScenarioError::UnknownNode {
                        index,
                        name: name.clone(),
                    })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        if nodes.is_empty() && !matches!(action, Action::Heal) {
            return Err(unsupported("names no node"));
        }
        let lasting = matches!(action, Action::Isolate | Action::Kill | Action::Pause);
        if lasting && fault.duration_s.is_none() {
            let healed_later = faults[index + 1..]
                .iter()
                .any(|later| later.kind == "heal" || later.kind == "resume");
            if !healed_later {
                return Err(unsupported(
                    "has no duration_s and no later heal: it would last to the end of the run",
                ));
            }
        }
        out.push(Planned {
            at: Duration::from_secs_f64(fault.at_s.max(0.0)),
            action,
            nodes: nodes.clone(),
            duration: fault.duration_s.map(Duration::from_secs_f64),
            label: format!(
                "{} {}",
                fault.kind,
                nodes
                    .iter()
                    .map(|&i| state.nodes[i].moniker.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .trim()
            .to_string(),
        });
    }
    out.sort_by_key(|planned| planned.at);
    Ok(out)
}

/// Carries faults out on one devnet.
pub struct Injector {
    base: PathBuf,
    docker: Option<Docker>,
    runtime: tokio::runtime::Runtime,
}

/// The Docker container of node `index`.
fn container_of(state: &DevnetState, index: usize) -> Result<String, String> {
    state.nodes[index]
        .container
        .clone()
        .ok_or_else(|| "no container".to_string())
}

fn ip_of(api: &str) -> Option<String> {
    let rest = api.strip_prefix("http://")?;
    Some(rest.split(':').next()?.to_string())
}

impl Injector {
    pub fn new(base: &Path, state: &DevnetState) -> Result<Injector, ScenarioError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| ScenarioError::Action {
                action: "start".into(),
                node: "runtime".into(),
                reason: error.to_string(),
            })?;
        let docker = if state.backend == "docker" {
            Some(
                runtime
                    .block_on(crate::docker::connect())
                    .map_err(|error| ScenarioError::Action {
                        action: "connect".into(),
                        node: "docker".into(),
                        reason: error.to_string(),
                    })?,
            )
        } else {
            None
        };
        Ok(Injector {
            base: base.to_path_buf(),
            docker,
            runtime,
        })
    }

    fn each(
        &self,
        state: &mut DevnetState,
        nodes: &[usize],
        name: &str,
        mut act: impl FnMut(&Self, &mut DevnetState, usize) -> Result<(), String>,
    ) -> Result<(), ScenarioError> {
        for &index in nodes {
            act(self, state, index).map_err(|reason| ScenarioError::Action {
                action: name.into(),
                node: state.nodes[index].moniker.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    fn signal(state: &DevnetState, index: usize, signal: i32) -> Result<(), String> {
        let pid = state.nodes[index].pid.ok_or("not running")?;
        // SAFETY: kill(2) on a pid this devnet started; no memory is touched.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(())
    }

    /// Starts `action` on `nodes`.
    pub fn begin(
        &self,
        state: &mut DevnetState,
        action: Action,
        nodes: &[usize],
    ) -> Result<(), ScenarioError> {
        use bollard::models::NetworkDisconnectRequest;
        match (action, &self.docker) {
            (Action::Isolate, Some(docker)) => {
                let network = state.network.clone().unwrap_or_default();
                self.each(state, nodes, "isolate", |this, state, index| {
                    let container = container_of(state, index)?;
                    this.runtime
                        .block_on(docker.disconnect_network(
                            &network,
                            NetworkDisconnectRequest {
                                container,
                                force: Some(true),
                            },
                        ))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Kill, Some(docker)) => self.each(state, nodes, "kill", |this, state, i| {
                let container = container_of(state, i)?;
                let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                this.runtime
                    .block_on(docker.kill_container(&container, Some(options)))
                    .map_err(|e| e.to_string())
            }),
            (Action::Pause, Some(docker)) => self.each(state, nodes, "pause", |this, state, i| {
                let container = container_of(state, i)?;
                this.runtime
                    .block_on(docker.pause_container(&container))
                    .map_err(|e| e.to_string())
            }),
            (Action::Restart, Some(docker)) => {
                self.each(state, nodes, "restart", |this, state, i| {
                    let container = container_of(state, i)?;
                    this.runtime
                        .block_on(docker.restart_container(
                            &container,
                            None::<bollard::query_parameters::RestartContainerOptions>,
                        ))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Kill, None) => self.each(state, nodes, "kill", |_, state, i| {
                Self::signal(state, i, libc::SIGKILL)
            }),
            (Action::Pause, None) => self.each(state, nodes, "pause", |_, state, i| {
                Self::signal(state, i, libc::SIGSTOP)
            }),
            (Action::Restart, None) => self.each(state, nodes, "restart", |this, state, i| {
                Self::signal(state, i, libc::SIGKILL)?;
                std::thread::sleep(Duration::from_millis(200));
                process::start_node(&this.base, state, i)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
            (Action::Isolate, None) => Err(ScenarioError::Action {
                action: "isolate".into(),
                node: "-".into(),
                reason: "needs the Docker backend".into(),
            }),
            (Action::Heal | Action::Resume, _) => Ok(()),
        }
    }

    /// Undoes `action` on `nodes` (reconnect, start, unpause).
    pub fn end(
        &self,
        state: &mut DevnetState,
        action: Action,
        nodes: &[usize],
    ) -> Result<(), ScenarioError> {
        use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkConnectRequest};
        match (action, &self.docker) {
            (Action::Isolate, Some(docker)) => {
                let network = state.network.clone().unwrap_or_default();
                self.each(state, nodes, "reconnect", |this, state, index| {
                    let node = &state.nodes[index];
                    let container = container_of(state, index)?;
                    let ip = ip_of(&node.api).ok_or("no address")?;
                    this.runtime
                        .block_on(docker.connect_network(
                            &network,
                            NetworkConnectRequest {
                                container,
                                endpoint_config: Some(EndpointSettings {
                                    ipam_config: Some(EndpointIpamConfig {
                                        ipv4_address: Some(ip),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }),
                            },
                        ))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Kill, Some(docker)) => self.each(state, nodes, "start", |this, state, i| {
                let container = container_of(state, i)?;
                this.runtime
                    .block_on(docker.start_container(
                        &container,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    ))
                    .map_err(|e| e.to_string())
            }),
            (Action::Pause, Some(docker)) => {
                self.each(state, nodes, "unpause", |this, state, i| {
                    let container = container_of(state, i)?;
                    this.runtime
                        .block_on(docker.unpause_container(&container))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Kill, None) => self.each(state, nodes, "start", |this, state, i| {
                process::start_node(&this.base, state, i)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
            (Action::Pause, None) => self.each(state, nodes, "continue", |_, state, i| {
                Self::signal(state, i, libc::SIGCONT)
            }),
            _ => Ok(()),
        }
    }
}
