//! Carrying out a manifest's `[[faults]]` on a running devnet (`docs/CHAOS.md`):
//!
//! | kind | Docker | processes |
//! |---|---|---|
//! | `kill` | SIGKILL; started again when the fault ends | same |
//! | `stop` | `docker stop` (SIGTERM, then SIGKILL); started when it ends | SIGTERM; started when it ends |
//! | `pause` | `docker pause` (cgroup freezer); unpaused when it ends | SIGSTOP; SIGCONT |
//! | `restart` | `docker restart` (instant) | SIGKILL and start again (instant) |
//! | `latency`, `bandwidth`, `timeout`, `reset` | a toxic on every proxy of the targeted links | same |
//! | `cut`, `partition`, `isolate` with `network.proxy` | the links' proxies disabled | same |
//! | `isolate` without a proxy | the container disconnected from the network | refused |
//! | `heal` | ends every active fault | same |
//! | `resume` | ends the listed nodes' active pauses | same |
//! | `random` | a seeded schedule of the kinds above ([`blyan_chaos::random_schedule`]) | same |

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blyan_chaos::{RandomSpec, Shape, RANDOM_KINDS};
use bollard::Docker;

use crate::links::LinkControl;
use crate::manifest::{BackendKind, Fault};
use crate::process::{self, DevnetState};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("{action} {node}: {reason}")]
    Action {
        action: String,
        node: String,
        reason: String,
    },
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Disconnect containers from the devnet network (Docker, no proxy).
    Isolate,
    Kill,
    Stop,
    Pause,
    Restart,
    Heal,
    Resume,
    /// Disable the proxies of `links`.
    Cut,
    /// Put `toxic` on the proxies of `links`.
    Toxic,
}

/// A toxic a link fault puts on each of its proxies.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkToxic {
    /// The Toxiproxy toxic type: latency, bandwidth, timeout, reset_peer.
    pub kind: String,
    /// Streams it goes on: latency goes downstream only (each round trip crosses it once),
    /// the others both ways.
    pub streams: Vec<&'static str>,
    pub attributes: Vec<(&'static str, u64)>,
}

/// One step of the schedule: when, what, to which nodes and links, for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub action: Action,
    /// The manifest's kind (or the random nemesis' draw), e.g. `partition-halves`.
    pub kind: String,
    pub nodes: Vec<usize>,
    /// Directed links `(from, to)` (link faults and proxy partitions).
    pub links: Vec<(usize, usize)>,
    pub toxic: Option<LinkToxic>,
    pub duration: Option<Duration>,
    pub label: String,
    /// A name for the toxics this fault adds (unique in the run).
    pub tag: String,
}

impl Planned {
    /// The directed links a partition, cut or isolation takes away (an isolated node loses
    /// every link to and from the others); `None` for other faults.
    pub fn cut_links(&self, nodes: usize) -> Option<Vec<(usize, usize)>> {
        match self.action {
            Action::Cut => Some(self.links.clone()),
            Action::Isolate => Some(
                (0..nodes)
                    .flat_map(|a| (0..nodes).map(move |b| (a, b)))
                    .filter(|&(a, b)| {
                        a != b && (self.nodes.contains(&a) != self.nodes.contains(&b))
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// A fault in force, to be ended at `until` (or by a heal).
#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    pub step: Planned,
    pub until: Option<Duration>,
    /// Index of its entry in the timeline.
    pub entry: usize,
}

/// What the faults act on.
pub struct Target<'a> {
    pub names: &'a [String],
    pub validators: usize,
    /// Every directed P2P link runs through its own proxy.
    pub proxy: bool,
    /// The backend; `Auto` while not known (before `devnet run` asks whether a Docker daemon
    /// answers).
    pub backend: BackendKind,
}

fn field(index: usize, name: &str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Field {
        field: format!("faults[{index}].{name}"),
        reason: reason.into(),
    }
}

fn indices(
    index: usize,
    name: &str,
    wanted: &[String],
    target: &Target,
) -> Result<Vec<usize>, ScenarioError> {
    wanted
        .iter()
        .map(|node| {
            target
                .names
                .iter()
                .position(|known| known == node)
                .ok_or_else(|| field(index, name, format!("no node named {node:?}")))
        })
        .collect()
}

/// Both directions of every link a link fault names: one `link`, the links between `groups`,
/// or every link of `nodes`.
fn link_targets(
    fault: &Fault,
    index: usize,
    target: &Target,
) -> Result<Vec<(usize, usize)>, ScenarioError> {
    let n = target.names.len();
    let mut links = BTreeSet::new();
    if !fault.link.is_empty() {
        let ends = indices(index, "link", &fault.link, target)?;
        if ends.len() != 2 || ends[0] == ends[1] {
            return Err(field(index, "link", "names two different nodes"));
        }
        links.insert((ends[0], ends[1]));
        links.insert((ends[1], ends[0]));
    } else if !fault.groups.is_empty() {
        let groups: Vec<Vec<usize>> = fault
            .groups
            .iter()
            .map(|group| indices(index, "groups", group, target))
            .collect::<Result<_, _>>()?;
        if groups.len() < 2 {
            return Err(field(
                index,
                "groups",
                "a link fault between groups needs two or more",
            ));
        }
        for (k, a_group) in groups.iter().enumerate() {
            for b_group in &groups[k + 1..] {
                for &a in a_group {
                    for &b in b_group {
                        links.insert((a, b));
                        links.insert((b, a));
                    }
                }
            }
        }
    } else if !fault.nodes.is_empty() {
        for a in indices(index, "nodes", &fault.nodes, target)? {
            for b in (0..n).filter(|&b| b != a) {
                links.insert((a, b));
                links.insert((b, a));
            }
        }
    } else {
        return Err(field(
            index,
            "kind",
            format!("{} needs link, groups or nodes", fault.kind),
        ));
    }
    Ok(links.into_iter().collect())
}

fn needs_proxy(index: usize, kind: &str, target: &Target) -> Result<(), ScenarioError> {
    if target.proxy {
        Ok(())
    } else {
        Err(field(
            index,
            "kind",
            format!("{kind} acts on links and needs network.proxy = true"),
        ))
    }
}

fn bounded(
    index: usize,
    name: &str,
    value: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<u64>, ScenarioError> {
    match value {
        None => Ok(None),
        Some(value) if range.contains(&value) => Ok(Some(value as u64)),
        Some(value) => Err(field(
            index,
            name,
            format!(
                "{value} is not between {} and {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// One manifest fault (or one the random nemesis drew) as a step.
fn one(fault: &Fault, index: usize, target: &Target) -> Result<Planned, ScenarioError> {
    let n = target.names.len();
    let nodes = indices(index, "nodes", &fault.nodes, target)?;
    let mut links = Vec::new();
    let mut toxic = None;
    let mut kind = fault.kind.clone();
    let action = match fault.kind.as_str() {
        "kill" => Action::Kill,
        "stop" => Action::Stop,
        "pause" => Action::Pause,
        "restart" => Action::Restart,
        "heal" => Action::Heal,
        "resume" => Action::Resume,
        "isolate" | "partition" => {
            let shape_name = match (&fault.shape, fault.kind.as_str()) {
                (Some(shape), "partition") => shape.clone(),
                (Some(_), _) => return Err(field(index, "shape", "only partition takes a shape")),
                (None, "isolate") => "isolate".into(),
                (None, _) if !fault.groups.is_empty() => "groups".into(),
                (None, _) if !nodes.is_empty() => "isolate".into(),
                (None, _) => return Err(field(
                    index,
                    "shape",
                    "partition needs a shape: isolate, halves, majority, ring, bridge or groups",
                )),
            };
            let shape = match shape_name.as_str() {
                "isolate" => {
                    if nodes.is_empty() {
                        return Err(field(index, "nodes", "isolate names the nodes to isolate"));
                    }
                    Shape::Isolate(nodes.clone())
                }
                "halves" => Shape::Halves,
                "majority" => Shape::Majority,
                "ring" => Shape::Ring,
                "bridge" => Shape::Bridge,
                "groups" => Shape::Groups(
                    fault
                        .groups
                        .iter()
                        .map(|group| indices(index, "groups", group, target))
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(field(
                        index,
                        "shape",
                        format!(
                        "{other:?} is not one of isolate, halves, majority, ring, bridge, groups"
                    ),
                    ))
                }
            };
            kind = format!("partition-{shape_name}");
            if !target.proxy {
                if shape_name != "isolate" {
                    return Err(field(
                        index,
                        "shape",
                        format!("a {shape_name} partition cuts single links and needs network.proxy = true"),
                    ));
                }
                if target.backend == BackendKind::Process {
                    return Err(field(
                        index,
                        "kind",
                        "isolating a node without network.proxy needs the Docker backend (processes share loopback); set network.proxy = true",
                    ));
                }
                if target.backend == BackendKind::Swarm {
                    return Err(field(
                        index,
                        "kind",
                        "isolate disconnects a container from its network, which Swarm task containers cannot do; use a partition (network.proxy = true) on the Swarm backend",
                    ));
                }
                Action::Isolate
            } else {
                links = shape
                    .cut_links(n)
                    .map_err(|error| field(index, "shape", error.to_string()))?
                    .into_iter()
                    .collect();
                Action::Cut
            }
        }
        "cut" | "latency" | "bandwidth" | "timeout" | "reset" => {
            needs_proxy(index, &fault.kind, target)?;
            links = link_targets(fault, index, target)?;
            let both = vec!["upstream", "downstream"];
            toxic = match fault.kind.as_str() {
                "cut" => None,
                "latency" => {
                    let latency = bounded(index, "latency_ms", fault.latency_ms, 1..=60_000)?
                        .ok_or_else(|| field(index, "latency_ms", "latency needs latency_ms"))?;
                    let jitter = bounded(index, "jitter_ms", fault.jitter_ms, 0..=latency as i64)?
                        .unwrap_or(0);
                    Some(LinkToxic {
                        kind: "latency".into(),
                        streams: vec!["downstream"],
                        attributes: vec![("latency", latency), ("jitter", jitter)],
                    })
                }
                "bandwidth" => {
                    let rate = bounded(index, "rate_kbps", fault.rate_kbps, 1..=10_000_000)?
                        .ok_or_else(|| field(index, "rate_kbps", "bandwidth needs rate_kbps"))?;
                    Some(LinkToxic {
                        kind: "bandwidth".into(),
                        streams: both,
                        attributes: vec![("rate", rate)],
                    })
                }
                "timeout" => Some(LinkToxic {
                    kind: "timeout".into(),
                    streams: both,
                    attributes: vec![(
                        "timeout",
                        bounded(index, "timeout_ms", fault.timeout_ms, 0..=3_600_000)?.unwrap_or(0),
                    )],
                }),
                _ => Some(LinkToxic {
                    kind: "reset_peer".into(),
                    streams: vec!["upstream"],
                    attributes: vec![(
                        "timeout",
                        bounded(index, "timeout_ms", fault.timeout_ms, 0..=3_600_000)?.unwrap_or(0),
                    )],
                }),
            };
            if toxic.is_some() {
                Action::Toxic
            } else {
                Action::Cut
            }
        }
        "random" => unreachable!("random is expanded by plan"),
        other => {
            return Err(field(
                index,
                "kind",
                format!(
                    "{other:?} is not one of kill, stop, pause, restart, resume, heal, isolate, \
                     partition, latency, bandwidth, timeout, reset, cut, random"
                ),
            ))
        }
    };
    if nodes.is_empty()
        && matches!(
            action,
            Action::Kill | Action::Stop | Action::Pause | Action::Restart | Action::Resume
        )
    {
        return Err(field(
            index,
            "nodes",
            format!("{} names no node", fault.kind),
        ));
    }
    if let Some(duration) = fault.duration_s {
        if !(duration > 0.0 && duration.is_finite()) {
            return Err(field(index, "duration_s", "must be > 0"));
        }
    }
    if !(fault.at_s >= 0.0 && fault.at_s.is_finite()) {
        return Err(field(index, "at_s", "must be >= 0"));
    }
    let mut label = kind.clone();
    if !fault.link.is_empty() {
        label.push_str(&format!(" {}", fault.link.join("<->")));
    } else if !fault.groups.is_empty() {
        let groups: Vec<String> = fault.groups.iter().map(|g| g.join(",")).collect();
        label.push_str(&format!(" {}", groups.join(" | ")));
    } else if !nodes.is_empty() {
        let shown: Vec<&str> = nodes.iter().map(|&i| target.names[i].as_str()).collect();
        label.push_str(&format!(" {}", shown.join(",")));
    }
    if let Some(toxic) = &toxic {
        let attributes: Vec<String> = toxic
            .attributes
            .iter()
            .filter(|(_, value)| *value > 0)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if !attributes.is_empty() {
            label.push_str(&format!(" ({})", attributes.join(" ")));
        }
    }
    if !links.is_empty() {
        label.push_str(&format!(" [{} links]", links.len()));
    }
    Ok(Planned {
        at: Duration::from_secs_f64(fault.at_s),
        action,
        kind,
        nodes,
        links,
        toxic,
        duration: fault.duration_s.map(Duration::from_secs_f64),
        label,
        tag: format!("fault{index}"),
    })
}

/// The faults the random nemesis of `faults[index]` draws, as manifest faults.
fn expand_random(
    fault: &Fault,
    index: usize,
    target: &Target,
    seed: Option<u64>,
) -> Result<Vec<Fault>, ScenarioError> {
    let window = fault
        .duration_s
        .ok_or_else(|| field(index, "duration_s", "random needs the window it acts in"))?;
    let f = target.validators.saturating_sub(1) / 3;
    let kinds: Vec<String> = if fault.kinds.is_empty() {
        RANDOM_KINDS
            .iter()
            .filter(|kind| target.proxy || ["kill", "pause", "stop", "restart"].contains(kind))
            .map(|kind| kind.to_string())
            .collect()
    } else {
        fault.kinds.clone()
    };
    for kind in &kinds {
        if !RANDOM_KINDS.contains(&kind.as_str()) {
            return Err(field(
                index,
                "kinds",
                format!("{kind:?} is not one of {}", RANDOM_KINDS.join(", ")),
            ));
        }
        if !target.proxy && !["kill", "pause", "stop", "restart"].contains(&kind.as_str()) {
            return Err(field(
                index,
                "kinds",
                format!("{kind} acts on links and needs network.proxy = true"),
            ));
        }
    }
    let max_faulty = match fault.max_faulty {
        None => f.max(1),
        Some(m) if m >= 1 && (m as usize) <= target.names.len() => m as usize,
        Some(m) => {
            return Err(field(
                index,
                "max_faulty",
                format!("{m} is not between 1 and the node count"),
            ))
        }
    };
    let spec = RandomSpec {
        seed: seed.or(fault.seed).unwrap_or(1),
        start_s: fault.at_s,
        end_s: fault.at_s + window,
        mean_interval_s: fault.mean_interval_s.unwrap_or(10.0).max(1.0),
        mean_duration_s: fault.mean_duration_s.unwrap_or(5.0).max(1.0),
        kinds,
        max_faulty,
    };
    Ok(blyan_chaos::random_schedule(&spec, target.names.len())
        .into_iter()
        .map(|drawn| {
            let names: Vec<String> = drawn
                .targets
                .iter()
                .map(|&i| target.names[i].clone())
                .collect();
            let (kind, shape) = match drawn.kind.strip_prefix("partition-") {
                Some(shape) => ("partition".to_string(), Some(shape.to_string())),
                None => (drawn.kind.clone(), None),
            };
            let link_kind = ["latency", "bandwidth", "cut"].contains(&kind.as_str());
            Fault {
                at_s: drawn.at_s,
                kind,
                nodes: if link_kind { Vec::new() } else { names.clone() },
                duration_s: if drawn.kind == "restart" {
                    None
                } else {
                    Some(drawn.duration_s)
                },
                shape,
                link: if link_kind { names } else { Vec::new() },
                latency_ms: (drawn.latency_ms > 0).then_some(drawn.latency_ms as i64),
                jitter_ms: (drawn.latency_ms > 0).then_some(drawn.jitter_ms as i64),
                rate_kbps: Some(drawn.rate_kbps as i64),
                ..Fault::default()
            }
        })
        .collect())
}

/// Turns the manifest's faults into a schedule, refusing what cannot be done before anything
/// starts. `seed` (from `devnet run --seed`) replaces every random nemesis' seed.
pub fn plan(
    faults: &[Fault],
    target: &Target,
    seed: Option<u64>,
) -> Result<Vec<Planned>, ScenarioError> {
    let mut out = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        if fault.kind == "random" {
            for (k, drawn) in expand_random(fault, index, target, seed)?
                .iter()
                .enumerate()
            {
                let mut step = one(drawn, index, target)?;
                step.tag = format!("fault{index}_{k}");
                step.label = format!("random: {}", step.label);
                out.push(step);
            }
            continue;
        }
        let step = one(fault, index, target)?;
        let lasting = matches!(
            step.action,
            Action::Isolate
                | Action::Kill
                | Action::Stop
                | Action::Pause
                | Action::Cut
                | Action::Toxic
        );
        if lasting && fault.duration_s.is_none() {
            let healed_later = faults[index + 1..]
                .iter()
                .any(|later| later.kind == "heal" || later.kind == "resume");
            if !healed_later {
                return Err(field(
                    index,
                    "duration_s",
                    "missing, and no later heal: the fault would last to the end of the run",
                ));
            }
        }
        out.push(step);
    }
    out.sort_by_key(|planned| planned.at);
    Ok(out)
}

/// Carries faults out on one devnet.
pub struct Injector {
    base: PathBuf,
    docker: Option<Docker>,
    /// Swarm backend: node `container` fields are service ids; process faults act on the
    /// service's current task container, and a killed or stopped node comes back as a new task.
    swarm: bool,
    links: Option<LinkControl>,
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
        let swarm = state.backend == "swarm";
        let docker = if state.backend == "docker" || swarm {
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
            swarm,
            links: state.proxy.as_ref().map(LinkControl::new),
            runtime,
        })
    }

    /// The container a process fault acts on: node `index`'s own (Docker) or its service's
    /// running task's (Swarm).
    fn container(&self, state: &DevnetState, index: usize) -> Result<String, String> {
        let id = container_of(state, index)?;
        match (&self.docker, self.swarm) {
            (Some(docker), true) => self
                .runtime
                .block_on(crate::swarm::task_container(
                    docker,
                    &id,
                    Duration::from_secs(30),
                ))
                .map_err(|error| error.to_string()),
            _ => Ok(id),
        }
    }

    /// Swarm: a new task of node `index`'s service (its task was killed or stopped).
    fn restart_task(&self, state: &DevnetState, index: usize) -> Result<(), String> {
        let service = container_of(state, index)?;
        let docker = self.docker.as_ref().ok_or("no Docker client")?;
        self.runtime
            .block_on(crate::swarm::restart_service(docker, &service))
            .map_err(|error| error.to_string())
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

    fn link_control(&self) -> Result<&LinkControl, ScenarioError> {
        self.links.as_ref().ok_or_else(|| ScenarioError::Action {
            action: "link fault".into(),
            node: "-".into(),
            reason: "this devnet has no link proxy (network.proxy = false)".into(),
        })
    }

    fn link_error(action: &str) -> impl FnOnce(String) -> ScenarioError + '_ {
        move |reason| ScenarioError::Action {
            action: action.into(),
            node: "proxy".into(),
            reason,
        }
    }

    /// Starts `step` on its nodes or links.
    pub fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        use bollard::models::NetworkDisconnectRequest;
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Cut => {
                return self
                    .link_control()?
                    .cut(&step.links)
                    .map_err(Self::link_error("cut"))
            }
            Action::Toxic => {
                let toxic = step.toxic.as_ref().expect("a toxic step carries its toxic");
                return self
                    .link_control()?
                    .add_toxic(&step.links, &step.tag, toxic)
                    .map_err(Self::link_error("toxic"));
            }
            _ => {}
        }
        if self.swarm && step.action == Action::Isolate {
            return Err(ScenarioError::Action {
                action: "isolate".into(),
                node: "-".into(),
                reason: "Swarm task containers cannot leave the overlay network; use a \
                         partition (network.proxy = true) on the Swarm backend"
                    .into(),
            });
        }
        match (step.action, &self.docker) {
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
                let container = this.container(state, i)?;
                let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                this.runtime
                    .block_on(docker.kill_container(&container, Some(options)))
                    .map_err(|e| e.to_string())
            }),
            (Action::Stop, Some(docker)) => self.each(state, nodes, "stop", |this, state, i| {
                let container = this.container(state, i)?;
                let options = bollard::query_parameters::StopContainerOptionsBuilder::default()
                    .t(5)
                    .build();
                this.runtime
                    .block_on(docker.stop_container(&container, Some(options)))
                    .map_err(|e| e.to_string())
            }),
            (Action::Pause, Some(docker)) => self.each(state, nodes, "pause", |this, state, i| {
                let container = this.container(state, i)?;
                this.runtime
                    .block_on(docker.pause_container(&container))
                    .map_err(|e| e.to_string())
            }),
            (Action::Restart, Some(_)) if self.swarm => {
                self.each(state, nodes, "restart", |this, state, i| {
                    let container = this.container(state, i)?;
                    let docker = this.docker.as_ref().ok_or("no Docker client")?;
                    let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build();
                    this.runtime
                        .block_on(docker.kill_container(&container, Some(options)))
                        .map_err(|e| e.to_string())?;
                    this.restart_task(state, i)
                })
            }
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
            (Action::Stop, None) => self.each(state, nodes, "stop", |_, state, i| {
                Self::signal(state, i, libc::SIGTERM)?;
                let pid = state.nodes[i].pid.unwrap_or(0);
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while process::is_node_process(pid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if process::is_node_process(pid) {
                    Self::signal(state, i, libc::SIGKILL)?;
                }
                Ok(())
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
            (Action::Heal | Action::Resume | Action::Cut | Action::Toxic, _) => Ok(()),
        }
    }

    /// Undoes `step` (reconnect, start, unpause, re-enable links, remove toxics).
    pub fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkConnectRequest};
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Cut => {
                return self
                    .link_control()?
                    .restore(&step.links)
                    .map_err(Self::link_error("restore"))
            }
            Action::Toxic => {
                return self
                    .link_control()?
                    .remove_toxic(
                        &step.links,
                        &step.tag,
                        step.toxic.as_ref().expect("a toxic step carries its toxic"),
                    )
                    .map_err(Self::link_error("remove toxic"))
            }
            _ => {}
        }
        match (step.action, &self.docker) {
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
            (Action::Kill | Action::Stop, Some(_)) if self.swarm => {
                self.each(state, nodes, "start", |this, state, i| {
                    this.restart_task(state, i)
                })
            }
            (Action::Kill | Action::Stop, Some(docker)) => {
                self.each(state, nodes, "start", |this, state, i| {
                    let container = container_of(state, i)?;
                    this.runtime
                        .block_on(docker.start_container(
                            &container,
                            None::<bollard::query_parameters::StartContainerOptions>,
                        ))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Pause, Some(docker)) => {
                self.each(state, nodes, "unpause", |this, state, i| {
                    let container = this.container(state, i)?;
                    this.runtime
                        .block_on(docker.unpause_container(&container))
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Kill | Action::Stop, None) => {
                self.each(state, nodes, "start", |this, state, i| {
                    process::start_node(&this.base, state, i)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            }
            (Action::Pause, None) => self.each(state, nodes, "continue", |_, state, i| {
                Self::signal(state, i, libc::SIGCONT)
            }),
            _ => Ok(()),
        }
    }
}
