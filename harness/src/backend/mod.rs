//! The backends that run a devnet, behind one trait: local processes, Docker containers and
//! Docker Swarm services. [`open`] is the one place that picks an implementation by its
//! [`BackendKind`]; everything else asks a backend what it can do ([`Capabilities`]) and tells it
//! what to do (`up`, `down`, `begin` and `end` of a node fault, the nodes' memory).
//!
//! [`check`] refuses what the backend or this host cannot do before anything is made; [`start`]
//! is then `devnet up` as a library call (the devnet started, the inference model installed);
//! `devnet up`, `run`, `bench` and `ab` all start their devnets this way.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::docker::DockerError;
use crate::manifest::Manifest;
use crate::process::ProcessError;
use crate::scenario::{Planned, ScenarioError};
use crate::testnet::record::DevnetState;

pub mod docker;
pub mod kind;
pub mod process;
pub mod settings;
pub mod swarm;

pub use kind::{BackendKind, Capabilities};
pub use settings::UpSettings;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The manifest asks for something this backend or host cannot do; nothing was started.
    #[error("{field}: {reason}")]
    Refused { field: String, reason: String },
    #[error("interrupted; {0}")]
    Interrupted(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
    #[error("logs of {node}: {reason}")]
    Logs { node: String, reason: String },
}

/// One line of what `down` did, for the user.
pub type DownSummary = String;

/// A way of running devnet nodes.
pub trait Backend {
    fn kind(&self) -> BackendKind;
    /// What it can do: its kind's [`BackendKind::capabilities`], which are known without a
    /// daemon so that `devnet manifest --check --backend B` works anywhere.
    fn capabilities(&self) -> Capabilities {
        self.kind()
            .capabilities()
            .expect("an opened backend has a concrete kind, not auto")
    }
    /// Starts the manifest's devnet and waits for `wait_height` on every node; on failure
    /// removes what it made. `progress` gets one line per stage.
    fn up(
        &self,
        manifest: &Manifest,
        settings: &UpSettings,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<DevnetState, BackendError>;
    /// Stops devnet `name` and removes what it made (its directory stays).
    fn down(&self, base: &Path, name: &str, grace: Duration) -> Result<DownSummary, BackendError>;
    /// Starts a node fault (kill, stop, pause, restart, isolate) on `step.nodes`.
    fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError>;
    /// Undoes it (start, unpause, reconnect).
    fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError>;
    /// Each node's resident memory, when it can be read.
    fn memory(&self, state: &DevnetState) -> Vec<Option<u64>>;
    /// Each node as the backend sees it: a process's pid or `stopped`, a container's state
    /// (`running`, `paused`, `exited`, ...), a service's running task's state or `no task`.
    fn running(&self, state: &DevnetState) -> Vec<String>;
    /// Writes node `index`'s log to `out`: its last `tail` lines (0: all), then, with `follow`,
    /// what it writes next until the user interrupts.
    fn logs(
        &self,
        state: &DevnetState,
        index: usize,
        options: LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError>;
}

/// What `logs` shows: the last `tail` lines (0: all), then more as they come with `follow`.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    pub tail: usize,
    pub follow: bool,
}

/// A `Logs` error for node `index`.
fn logs_error(state: &DevnetState, index: usize, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Logs {
        node: state.nodes[index].moniker.clone(),
        reason: reason.to_string(),
    }
}

/// The backend that runs `kind` for the devnets under `base`, with its daemon connection where
/// it needs one. `Auto` is Docker when a daemon answers and processes otherwise; the second
/// value then says why processes.
pub fn open(
    kind: BackendKind,
    base: &Path,
) -> Result<(Box<dyn Backend>, Option<String>), BackendError> {
    let processes = || process::Processes {
        base: base.to_path_buf(),
    };
    Ok(match kind {
        BackendKind::Process => (Box::new(processes()), None),
        BackendKind::Docker => (Box::new(docker::Containers::connect()?), None),
        BackendKind::Swarm => (Box::new(swarm::Services::connect()?), None),
        BackendKind::Auto => match docker::Containers::connect() {
            Ok(docker) => (Box::new(docker), None),
            Err(error) => (
                Box::new(processes()),
                Some(format!("{error}; using the process backend")),
            ),
        },
    })
}

/// Streams a container's (or a Swarm service's) log into `out`.
async fn stream_logs(
    docker: &bollard::Docker,
    id: &str,
    service: bool,
    options: LogOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    use futures::StreamExt;
    let tail = match options.tail {
        0 => "all".to_string(),
        n => n.to_string(),
    };
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(options.follow)
        .tail(&tail)
        .build();
    let mut stream = if service {
        docker.service_logs(id, Some(options)).boxed()
    } else {
        docker.logs(id, Some(options)).boxed()
    };
    while let Some(item) = stream.next().await {
        let item = item.map_err(|error| error.to_string())?;
        write!(out, "{item}").map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// The runtime a backend drives its daemon calls from.
fn runtime() -> Result<tokio::runtime::Runtime, BackendError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| BackendError::Runtime(error.to_string()))
}

/// Checks the manifest against what backend `kind` can do and (unless `force`) against this
/// host; nothing starts. `Auto` is checked against this host only.
pub fn check(kind: BackendKind, manifest: &Manifest, force: bool) -> Result<(), BackendError> {
    let Some(can) = kind.capabilities() else {
        return Ok(());
    };
    let refused = |field: &str, reason: String| BackendError::Refused {
        field: field.into(),
        reason,
    };
    let nodes = manifest.resolve().len();
    if can.on_this_host && !force {
        let estimate = crate::plan::estimate(nodes, manifest.resources.memory_mb as u64);
        if !estimate.fits {
            return Err(refused(
                "nodes",
                format!(
                    "{nodes} nodes do not fit this host: {} (use --force to start anyway)",
                    estimate.reason
                ),
            ));
        }
    }
    if can.shared_bridge && !force {
        if let Err(reason) = crate::plan::check_neighbours(nodes, crate::plan::neighbour_limit()) {
            return Err(refused(
                "nodes",
                format!("{reason} (or use --force to start anyway)"),
            ));
        }
    }
    if manifest.network.topology.is_some() && !can.nat {
        return Err(refused(
            "network.topology",
            format!(
                "NAT routers and home networks are Docker networks; use the docker backend \
                 (this run would use the {} backend)",
                kind
            ),
        ));
    }
    if manifest.inference.is_some() && !can.inference {
        return Err(refused(
            "inference",
            format!(
                "the {} backend keeps node homes in volumes on the members; generate models \
                 with `blyan-node experts generate` inside a node instead (or use the docker or \
                 process backend)",
                kind
            ),
        ));
    }
    Ok(())
}

/// A devnet [`start`] started.
#[derive(Debug)]
pub struct Started {
    pub state: DevnetState,
    /// From the start to `wait_height` on every node.
    pub reached: Duration,
    /// How long generating and registering the manifest's inference model took, if it has one.
    pub model_installed: Option<Duration>,
}

/// `devnet up` as a library call, once [`check`] has passed: starts the devnet and installs the
/// manifest's inference model.
pub fn start(
    backend: &dyn Backend,
    manifest: &Manifest,
    settings: &UpSettings,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Started, BackendError> {
    let started = Instant::now();
    let state = backend.up(manifest, settings, progress)?;
    let reached = started.elapsed();
    let model_installed = match &manifest.inference {
        Some(spec) => Some(crate::inference::install_model(
            &state,
            spec,
            &settings.node_bin,
            Duration::from_secs(120),
            &mut |line| progress(line.to_string()),
        )?),
        None => None,
    };
    Ok(Started {
        state,
        reached,
        model_installed,
    })
}

/// Runs `act` on each of `nodes`, naming the node and the action in the first error.
fn each<B: ?Sized>(
    backend: &B,
    state: &mut DevnetState,
    nodes: &[usize],
    name: &str,
    mut act: impl FnMut(&B, &mut DevnetState, usize) -> Result<(), String>,
) -> Result<(), ScenarioError> {
    for &index in nodes {
        act(backend, state, index).map_err(|reason| ScenarioError::Action {
            action: name.into(),
            node: state.nodes[index].moniker.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Runs `up` to its end, unless SIGINT or SIGTERM comes first: then `clean` removes what the
/// devnet made so far and says what it removed.
async fn unless_interrupted<T>(
    up: impl std::future::Future<Output = Result<T, DockerError>>,
    clean: impl std::future::Future<Output = Result<String, DockerError>>,
) -> Result<T, BackendError> {
    tokio::select! {
        result = up => Ok(result?),
        _ = interrupted() => Err(BackendError::Interrupted(clean.await?)),
    }
}

/// Completes on SIGINT or SIGTERM (Ctrl-C, `kill`, a CI job's timeout): an interrupted `up`
/// then removes what it created instead of dying half-way with containers still coming up.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(terminate) => {
                terminate.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}
