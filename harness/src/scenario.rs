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
use std::time::Duration;

use blyan_chaos::{RandomSpec, Shape, RANDOM_KINDS};
use serde::{Deserialize, Serialize};

use crate::backend::kind::BackendKind;
use crate::links::LinkToxic;

/// One entry of `[[faults]]` (`docs/CHAOS.md` lists every kind and its fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Seconds after the devnet is up.
    pub at_s: f64,
    /// Process: kill, stop, pause, restart, resume. Links (need `network.proxy`): latency,
    /// bandwidth, timeout, reset, cut. Partitions: partition (with `shape`), isolate, heal.
    /// A seeded random nemesis: random.
    pub kind: String,
    /// The nodes it acts on (for link faults: every link of these nodes).
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Partition shape: isolate, halves, majority, ring, bridge, groups.
    #[serde(default)]
    pub shape: Option<String>,
    /// Explicit groups (partition shape `groups`; link faults: the links between groups).
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// One link, as its two nodes (both directions).
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub latency_ms: Option<i64>,
    #[serde(default)]
    pub jitter_ms: Option<i64>,
    /// Bandwidth limit, KB/s.
    #[serde(default)]
    pub rate_kbps: Option<i64>,
    /// timeout / reset: milliseconds before the connection is closed (0: data stops, never
    /// closed, for timeout).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// random: the nemesis' seed (`devnet run --seed` overrides it).
    #[serde(default)]
    pub seed: Option<u64>,
    /// random: mean seconds between faults.
    #[serde(default)]
    pub mean_interval_s: Option<f64>,
    /// random: mean seconds a fault lasts.
    #[serde(default)]
    pub mean_duration_s: Option<f64>,
    /// random: the kinds it may draw (default: all that the devnet supports).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// random: most nodes a crash fault hits at once (default f = (validators - 1) / 3).
    #[serde(default)]
    pub max_faulty: Option<i64>,
}

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
/// Directed links `(from, to)`.
type Links = Vec<(usize, usize)>;

/// `isolate` and `partition`: the shape, and either the links it cuts (with link proxies) or
/// the nodes taken off the network (without). Returns the kind label, the action and the links.
fn partition(
    fault: &Fault,
    index: usize,
    target: &Target,
    nodes: &[usize],
) -> Result<(String, Action, Links), ScenarioError> {
    let shape_name = match (&fault.shape, fault.kind.as_str()) {
        (Some(shape), "partition") => shape.clone(),
        (Some(_), _) => return Err(field(index, "shape", "only partition takes a shape")),
        (None, "isolate") => "isolate".into(),
        (None, _) if !fault.groups.is_empty() => "groups".into(),
        (None, _) if !nodes.is_empty() => "isolate".into(),
        (None, _) => {
            return Err(field(
                index,
                "shape",
                "partition needs a shape: isolate, halves, majority, ring, bridge or groups",
            ))
        }
    };
    let shape = match shape_name.as_str() {
        "isolate" if nodes.is_empty() => {
            return Err(field(index, "nodes", "isolate names the nodes to isolate"))
        }
        "isolate" => Shape::Isolate(nodes.to_vec()),
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
                format!("{other:?} is not one of isolate, halves, majority, ring, bridge, groups"),
            ))
        }
    };
    let kind = format!("partition-{shape_name}");
    if target.proxy {
        let links = shape
            .cut_links(target.names.len())
            .map_err(|error| field(index, "shape", error.to_string()))?;
        return Ok((kind, Action::Cut, links.into_iter().collect()));
    }
    if shape_name != "isolate" {
        return Err(field(
            index,
            "shape",
            format!("a {shape_name} partition cuts single links and needs network.proxy = true"),
        ));
    }
    let isolates = target.backend.capabilities().is_none_or(|can| can.isolate);
    if !isolates {
        return Err(field(
            index,
            "kind",
            format!(
                "isolate without network.proxy takes a node off the devnet's network, which \
                 the {} backend cannot do; set network.proxy = true (link proxies cut its \
                 links) or use the docker backend",
                target.backend
            ),
        ));
    }
    Ok((kind, Action::Isolate, Vec::new()))
}

/// The toxic a link fault puts on its proxies (`None` for `cut`).
fn toxic(fault: &Fault, index: usize) -> Result<Option<LinkToxic>, ScenarioError> {
    let both = vec!["upstream", "downstream"];
    let timeout = || bounded(index, "timeout_ms", fault.timeout_ms, 0..=3_600_000);
    let (kind, streams, attributes) = match fault.kind.as_str() {
        "cut" => return Ok(None),
        "latency" => {
            let latency = bounded(index, "latency_ms", fault.latency_ms, 1..=60_000)?
                .ok_or_else(|| field(index, "latency_ms", "latency needs latency_ms"))?;
            let jitter =
                bounded(index, "jitter_ms", fault.jitter_ms, 0..=latency as i64)?.unwrap_or(0);
            let attributes = vec![("latency", latency), ("jitter", jitter)];
            ("latency", vec!["downstream"], attributes)
        }
        "bandwidth" => {
            let rate = bounded(index, "rate_kbps", fault.rate_kbps, 1..=10_000_000)?
                .ok_or_else(|| field(index, "rate_kbps", "bandwidth needs rate_kbps"))?;
            ("bandwidth", both, vec![("rate", rate)])
        }
        "timeout" => ("timeout", both, vec![("timeout", timeout()?.unwrap_or(0))]),
        _ => (
            "reset_peer",
            vec!["upstream"],
            vec![("timeout", timeout()?.unwrap_or(0))],
        ),
    };
    Ok(Some(LinkToxic {
        kind: kind.into(),
        streams,
        attributes,
    }))
}

/// How the timeline and the report name a step: its kind, its targets, its toxic's settings
/// and how many links it touches.
fn label(
    fault: &Fault,
    kind: &str,
    nodes: &[usize],
    target: &Target,
    toxic: Option<&LinkToxic>,
    links: usize,
) -> String {
    let mut label = kind.to_string();
    if !fault.link.is_empty() {
        label.push_str(&format!(" {}", fault.link.join("<->")));
    } else if !fault.groups.is_empty() {
        let groups: Vec<String> = fault.groups.iter().map(|g| g.join(",")).collect();
        label.push_str(&format!(" {}", groups.join(" | ")));
    } else if !nodes.is_empty() {
        let shown: Vec<&str> = nodes.iter().map(|&i| target.names[i].as_str()).collect();
        label.push_str(&format!(" {}", shown.join(",")));
    }
    if let Some(toxic) = toxic {
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
    if links > 0 {
        label.push_str(&format!(" [{links} links]"));
    }
    label
}

fn one(fault: &Fault, index: usize, target: &Target) -> Result<Planned, ScenarioError> {
    let nodes = indices(index, "nodes", &fault.nodes, target)?;
    let mut links = Vec::new();
    let mut toxic_of = None;
    let mut kind = fault.kind.clone();
    let action = match fault.kind.as_str() {
        "kill" => Action::Kill,
        "stop" => Action::Stop,
        "pause" => Action::Pause,
        "restart" => Action::Restart,
        "heal" => Action::Heal,
        "resume" => Action::Resume,
        "isolate" | "partition" => {
            let action;
            (kind, action, links) = partition(fault, index, target, &nodes)?;
            action
        }
        "cut" | "latency" | "bandwidth" | "timeout" | "reset" => {
            needs_proxy(index, &fault.kind, target)?;
            links = link_targets(fault, index, target)?;
            toxic_of = toxic(fault, index)?;
            if toxic_of.is_some() {
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
    let on_nodes = matches!(
        action,
        Action::Kill | Action::Stop | Action::Pause | Action::Restart | Action::Resume
    );
    if nodes.is_empty() && on_nodes {
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
    let label = label(fault, &kind, &nodes, target, toxic_of.as_ref(), links.len());
    Ok(Planned {
        at: Duration::from_secs_f64(fault.at_s),
        action,
        kind,
        nodes,
        links,
        toxic: toxic_of,
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
