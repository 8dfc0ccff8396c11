//! The Swarm backend behind the [`Backend`] trait: one service per node (`crate::swarm` makes
//! them). A node's `container` is its service; process faults act on the service's running
//! task container, and a killed or stopped node comes back as a new task.

use std::path::Path;
use std::time::Duration;

use super::docker::{container_of, Containers};
use super::{
    each, logs_error, stream_logs, unless_interrupted, Backend, BackendError, BackendKind,
    DownSummary, LogOptions, UpSettings,
};
use crate::manifest::Manifest;
use crate::scenario::{Action, Planned, ScenarioError};
use crate::swarm::{self, Stage};
use crate::testnet::record::DevnetState;

/// Services of the swarm this host's Docker daemon manages.
pub struct Services {
    containers: Containers,
}

fn stage_line(stage: Stage, wait_height: u64) -> String {
    match stage {
        Stage::Swarm => "swarm: checking this daemon's swarm".to_string(),
        Stage::Image => "image: checking blyan-node:dev on every member".to_string(),
        Stage::Genesis => "keys, configs and genesis".to_string(),
        Stage::Network => "overlay network".to_string(),
        Stage::Services { created, of } => format!("services: {created}/{of} created"),
        Stage::Heights { ready, of } => format!("{ready}/{of} nodes at height >= {wait_height}"),
    }
}

impl Services {
    pub fn connect() -> Result<Services, BackendError> {
        Ok(Services {
            containers: Containers::connect()?,
        })
    }

    /// The running task container of node `index`'s service.
    fn task(&self, state: &DevnetState, index: usize) -> Result<String, String> {
        let service = container_of(state, index)?;
        let c = &self.containers;
        c.runtime
            .block_on(swarm::task_container(
                &c.docker,
                &service,
                Duration::from_secs(30),
            ))
            .map_err(|error| error.to_string())
    }

    /// A new task of node `index`'s service (its task was killed or stopped).
    fn restart_task(&self, state: &DevnetState, index: usize) -> Result<(), String> {
        let service = container_of(state, index)?;
        let c = &self.containers;
        c.runtime
            .block_on(swarm::restart_service(&c.docker, &service))
            .map_err(|error| error.to_string())
    }
}

impl Backend for Services {
    fn kind(&self) -> BackendKind {
        BackendKind::Swarm
    }

    fn up(
        &self,
        manifest: &Manifest,
        settings: &UpSettings,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<DevnetState, BackendError> {
        let c = &self.containers;
        let stages = |stage: Stage| progress(stage_line(stage, settings.wait_height));
        let up = swarm::up(&c.docker, manifest, settings, stages);
        let clean = async {
            let removed = swarm::remove_by_label(&c.docker, &manifest.name).await?;
            swarm::leave_if_created(&c.docker).await?;
            Ok(format!("removed {} services", removed.services))
        };
        c.runtime.block_on(unless_interrupted(up, clean))
    }

    fn down(
        &self,
        _base: &Path,
        name: &str,
        _grace: Duration,
    ) -> Result<DownSummary, BackendError> {
        let c = &self.containers;
        let (removed, left) = c.runtime.block_on(async {
            let removed = swarm::remove_by_label(&c.docker, name).await?;
            let left = swarm::leave_if_created(&c.docker).await?;
            Ok::<_, BackendError>((removed, left))
        })?;
        Ok(format!(
            "devnet {name:?}: removed {} services, {} secrets, {} configs, {} networks and {} volumes{}",
            removed.services,
            removed.secrets,
            removed.configs,
            removed.networks,
            removed.volumes,
            if left { "; left the swarm the harness had created" } else { "" }
        ))
    }

    fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        let c = &self.containers;
        match step.action {
            Action::Isolate => Err(ScenarioError::Action {
                action: "isolate".into(),
                node: "-".into(),
                reason: "Swarm task containers cannot leave the overlay network; use a \
                         partition (network.proxy = true) on the Swarm backend"
                    .into(),
            }),
            Action::Kill => each(self, state, nodes, "kill", |this, state, i| {
                c.kill(&this.task(state, i)?)
            }),
            Action::Stop => each(self, state, nodes, "stop", |this, state, i| {
                c.stop(&this.task(state, i)?)
            }),
            Action::Pause => each(self, state, nodes, "pause", |this, state, i| {
                c.pause(&this.task(state, i)?)
            }),
            Action::Restart => each(self, state, nodes, "restart", |this, state, i| {
                c.kill(&this.task(state, i)?)?;
                this.restart_task(state, i)
            }),
            Action::Heal
            | Action::Resume
            | Action::Cut
            | Action::Toxic
            | Action::OneWay
            | Action::InNode => Ok(()),
            Action::Upgrade
            | Action::Join
            | Action::DiskFull
            | Action::DiskSlow(_)
            | Action::PowerLoss => Err(ScenarioError::Action {
                action: "upgrade, join or disk".into(),
                node: "-".into(),
                reason: "needs the process backend".into(),
            }),
        }
    }

    fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Kill | Action::Stop => each(self, state, nodes, "start", |this, state, i| {
                this.restart_task(state, i)
            }),
            Action::Pause => each(self, state, nodes, "unpause", |this, state, i| {
                this.containers.unpause(&this.task(state, i)?)
            }),
            _ => Ok(()),
        }
    }

    fn memory(&self, state: &DevnetState) -> Vec<Option<u64>> {
        self.containers.memory_by_name(state)
    }

    /// The state of each service's running task container, asked once (no wait).
    fn running(&self, state: &DevnetState) -> Vec<String> {
        let c = &self.containers;
        (0..state.nodes.len())
            .map(|index| {
                let Ok(service) = container_of(state, index) else {
                    return "no service".to_string();
                };
                match c
                    .runtime
                    .block_on(swarm::task_container(&c.docker, &service, Duration::ZERO))
                {
                    Ok(task) => c.state_of(&task),
                    Err(_) => "no task".to_string(),
                }
            })
            .collect()
    }

    /// The service's log (every task's lines).
    fn logs(
        &self,
        state: &DevnetState,
        index: usize,
        options: LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        let service = container_of(state, index).map_err(|e| logs_error(state, index, e))?;
        let c = &self.containers;
        c.runtime
            .block_on(stream_logs(&c.docker, &service, true, options, out))
            .map_err(|e| logs_error(state, index, e))
    }
}
