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
//! | `partition` with `shape = "oneway"` | the data from `to` to `from` dropped on both proxies of each pair (a `timeout` toxic on one stream); connections stay up | same |
//! | `heal` | ends every active fault | same |
//! | `resume` | ends the listed nodes' active pauses | same |
//! | `messages` | the nodes' outgoing messages dropped, duplicated, delayed, reordered, replayed inside the node (admin API) | same |
//! | `clock` | the clock the node dates and bounds block times by moved (skew, drift, jump; admin API) | same |
//! | `disk` (`full`) | a size-limited tmpfs under the data directory (on the host, in the home the container binds) filled; freed, the container started again | same, the node started again |
//! | `disk` (`slow`, `power_loss`) | the data directory on `blyan-lazyfs` on the host: every fsync held `fsync_ms`; or SIGKILL and every unsynced write dropped, the container started again at the end | same, for the process |
//! | `join` | created with the devnet with `--state-sync` in its command, started at its time | started (not with the devnet) with `--state-sync` |
//! | `upgrade` | SIGTERM (10 s), the container replaced by one of an image built from `binary` (same home, address, memory) | SIGTERM, then started again from `binary` with its home kept |
//! | `random` | a seeded schedule of the kinds above ([`blyan_chaos::random_schedule`]) | same |

use std::collections::BTreeSet;
use std::time::Duration;

use crate::backend::kind::BackendKind;
use crate::faults::{self, Fault, LinkTargets};
use crate::links::LinkToxic;
use blyan_chaos::{RandomSpec, Shape, RANDOM_KINDS};

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
    /// Drop the data of each directed pair `(from, to)` of `links` (a one-way partition): the
    /// connections stay up, and what `to` sends to `from` still arrives.
    OneWay,
    /// Put `in_node` in force on `nodes` (the node carries it out; set through its admin API).
    InNode,
    /// Instant: stop `nodes` and start them again from `binary`, homes kept.
    Upgrade,
    /// Instant: start `nodes`, which the devnet did not start, with `--state-sync`.
    Join,
    /// Fill the tmpfs under `nodes`' data directories; the end frees it and starts a stopped
    /// node again.
    DiskFull,
    /// Hold every fsync of `nodes` this many ms (their data directories on `blyan-lazyfs`);
    /// the end sets it back to 0.
    DiskSlow(u64),
    /// SIGKILL `nodes` and drop every write they had not synced (`blyan-lazyfs`), mounted
    /// again from what was synced; the end starts them.
    PowerLoss,
}

/// A fault the node carries out itself (devnet mode), put in force through its admin API.
#[derive(Clone, Debug, PartialEq)]
pub enum InNode {
    Messages(blyan_node::config::MessageFaults),
    Clock(blyan_node::node::clock::ClockFault),
}

impl InNode {
    /// The admin endpoint: `POST` puts the fault in force, `DELETE` ends it.
    pub fn path(&self) -> &'static str {
        match self {
            InNode::Messages(_) => "/admin/devnet/messages",
            InNode::Clock(_) => "/admin/devnet/clock",
        }
    }

    /// The `POST` body.
    pub fn body(&self) -> String {
        match self {
            InNode::Messages(faults) => serde_json::to_string(faults),
            InNode::Clock(fault) => serde_json::to_string(fault),
        }
        .expect("node faults serialise")
    }
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
    /// The fault the node carries out (`Action::InNode`).
    pub in_node: Option<InNode>,
    /// The binary an upgrade starts the nodes from (`Action::Upgrade`).
    pub binary: Option<std::path::PathBuf>,
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
    (nodes, groups, link): LinkTargets,
    kind: &str,
    index: usize,
    target: &Target,
) -> Result<Vec<(usize, usize)>, ScenarioError> {
    let n = target.names.len();
    let mut links = BTreeSet::new();
    if !link.is_empty() {
        let ends = indices(index, "link", link, target)?;
        if ends.len() != 2 || ends[0] == ends[1] {
            return Err(field(index, "link", "names two different nodes"));
        }
        links.insert((ends[0], ends[1]));
        links.insert((ends[1], ends[0]));
    } else if !groups.is_empty() {
        let groups: Vec<Vec<usize>> = groups
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
    } else if !nodes.is_empty() {
        for a in indices(index, "nodes", nodes, target)? {
            for b in (0..n).filter(|&b| b != a) {
                links.insert((a, b));
                links.insert((b, a));
            }
        }
    } else {
        return Err(field(
            index,
            "kind",
            format!("{kind} needs link, groups or nodes"),
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
    (kind, fault): (&str, &faults::Partition),
    index: usize,
    target: &Target,
    nodes: &[usize],
) -> Result<(String, Action, Links), ScenarioError> {
    if fault.shape.as_deref() == Some("oneway") {
        return oneway(fault, index, target);
    }
    if !fault.from.is_empty() || !fault.to.is_empty() {
        let name = if fault.from.is_empty() { "to" } else { "from" };
        return Err(field(
            index,
            name,
            "only a partition with shape = \"oneway\" takes from and to",
        ));
    }
    let shape_name = match (&fault.shape, kind) {
        (Some(shape), "partition") => shape.clone(),
        (Some(_), _) => return Err(field(index, "shape", "only partition takes a shape")),
        (None, "isolate") => "isolate".into(),
        (None, _) if !fault.groups.is_empty() => "groups".into(),
        (None, _) if !nodes.is_empty() => "isolate".into(),
        (None, _) => return Err(field(
            index,
            "shape",
            "partition needs a shape: isolate, halves, majority, ring, bridge, groups or oneway",
        )),
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
                format!(
                "{other:?} is not one of isolate, halves, majority, ring, bridge, groups, oneway"
            ),
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

/// A one-way partition: the messages of `from` still reach `to`, those of `to` no longer
/// reach `from`. Returns the directions whose data is dropped, `(a node of to, a node of from)`.
fn oneway(
    fault: &faults::Partition,
    index: usize,
    target: &Target,
) -> Result<(String, Action, Links), ScenarioError> {
    needs_proxy(index, "a oneway partition", target)?;
    if !fault.nodes.is_empty() || !fault.groups.is_empty() {
        let name = if fault.nodes.is_empty() {
            "groups"
        } else {
            "nodes"
        };
        return Err(field(
            index,
            name,
            "a oneway partition takes from and to instead",
        ));
    }
    let from = indices(index, "from", &fault.from, target)?;
    let to = indices(index, "to", &fault.to, target)?;
    for (name, side) in [("from", &from), ("to", &to)] {
        if side.is_empty() {
            return Err(field(
                index,
                name,
                "a oneway partition names the nodes on both sides",
            ));
        }
    }
    if let Some(&both) = from.iter().find(|node| to.contains(node)) {
        return Err(field(
            index,
            "to",
            format!("{} is on both sides", target.names[both]),
        ));
    }
    let dropped = to
        .iter()
        .flat_map(|&sender| from.iter().map(move |&receiver| (sender, receiver)))
        .collect();
    Ok(("partition-oneway".into(), Action::OneWay, dropped))
}

/// The toxic a link fault puts on its proxies (`None` for `cut`).
fn toxic(fault: &Fault, index: usize) -> Result<Option<LinkToxic>, ScenarioError> {
    let both = vec!["upstream", "downstream"];
    let timeout = |ms| bounded(index, "timeout_ms", ms, 0..=3_600_000);
    let (kind, streams, attributes) = match fault {
        Fault::Latency(f) => {
            let latency = bounded(index, "latency_ms", f.latency_ms, 1..=60_000)?
                .ok_or_else(|| field(index, "latency_ms", "latency needs latency_ms"))?;
            let jitter = bounded(index, "jitter_ms", f.jitter_ms, 0..=latency as i64)?.unwrap_or(0);
            let attributes = vec![("latency", latency), ("jitter", jitter)];
            ("latency", vec!["downstream"], attributes)
        }
        Fault::Bandwidth(f) => {
            let rate = bounded(index, "rate_kbps", f.rate_kbps, 1..=10_000_000)?
                .ok_or_else(|| field(index, "rate_kbps", "bandwidth needs rate_kbps"))?;
            ("bandwidth", both, vec![("rate", rate)])
        }
        Fault::Timeout(f) => (
            "timeout",
            both,
            vec![("timeout", timeout(f.timeout_ms)?.unwrap_or(0))],
        ),
        Fault::Reset(f) => (
            "reset_peer",
            vec!["upstream"],
            vec![("timeout", timeout(f.timeout_ms)?.unwrap_or(0))],
        ),
        _ => return Ok(None),
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
    if let Fault::Partition(f) = fault {
        if !f.from.is_empty() {
            // The direction that still carries messages.
            label.push_str(&format!(" {} -> {} only", f.from.join(","), f.to.join(",")));
        }
    }
    let (link, groups): (&[String], &[Vec<String>]) = match fault {
        Fault::Isolate(f) | Fault::Partition(f) => (&[], &f.groups),
        _ => fault
            .link_targets()
            .map_or((&[], &[]), |(_, groups, link)| (link, groups)),
    };
    if !link.is_empty() {
        label.push_str(&format!(" {}", link.join("<->")));
    } else if !groups.is_empty() {
        let groups: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
        label.push_str(&format!(" {}", groups.join(" | ")));
    } else if !nodes.is_empty() {
        let shown: Vec<&str> = nodes.iter().map(|&i| target.names[i].as_str()).collect();
        label.push_str(&format!(" {}", shown.join(",")));
    }
    if let Fault::Messages(f) = fault {
        let set: Vec<String> = [
            ("drop", f.drop),
            ("duplicate", f.duplicate),
            ("reorder", f.reorder),
            ("replay_old", f.replay_old),
            ("delay_ms", f.delay_ms as f64),
        ]
        .iter()
        .filter(|(_, value)| *value > 0.0)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
        let types = if f.types.is_empty() {
            "all".to_string()
        } else {
            f.types.join(",")
        };
        let from = if f.peers.is_empty() {
            String::new()
        } else {
            format!("; from {}", f.peers.join(","))
        };
        label.push_str(&format!(" ({}; {types}{from})", set.join(" ")));
    }
    if let Fault::Clock(f) = fault {
        let set: Vec<String> = [
            ("skew_ms", f.skew_ms),
            ("jump_ms", f.jump_ms),
            ("drift_ppm", f.drift_ppm),
        ]
        .iter()
        .filter(|(_, value)| *value != 0)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
        label.push_str(&format!(" ({})", set.join(" ")));
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

fn one(
    fault: &Fault,
    index: usize,
    target: &Target,
    seed: Option<u64>,
) -> Result<Planned, ScenarioError> {
    let nodes = indices(index, "nodes", fault.nodes(), target)?;
    let (at_s, duration_s) = fault.when();
    let mut links = Vec::new();
    let mut toxic_of = None;
    let mut in_node = None;
    let mut binary = None;
    let mut kind = fault.kind().to_string();
    let action = match fault {
        Fault::Kill(_) => Action::Kill,
        Fault::Stop(_) => Action::Stop,
        Fault::Pause(_) => Action::Pause,
        Fault::Restart(_) => Action::Restart,
        Fault::Heal(_) => Action::Heal,
        Fault::Resume(_) => Action::Resume,
        Fault::Isolate(f) | Fault::Partition(f) => {
            let action;
            (kind, action, links) = partition((fault.kind(), f), index, target, &nodes)?;
            action
        }
        Fault::Cut(_)
        | Fault::Latency(_)
        | Fault::Bandwidth(_)
        | Fault::Timeout(_)
        | Fault::Reset(_) => {
            needs_proxy(index, fault.kind(), target)?;
            let targets = fault.link_targets().expect("a link fault has link targets");
            links = link_targets(targets, fault.kind(), index, target)?;
            toxic_of = toxic(fault, index)?;
            if toxic_of.is_some() {
                Action::Toxic
            } else {
                Action::Cut
            }
        }
        Fault::Messages(f) => {
            in_node = Some(InNode::Messages(message_faults(f, index, seed, target)?));
            Action::InNode
        }
        Fault::Clock(f) => {
            in_node = Some(InNode::Clock(clock_fault(f, index)?));
            Action::InNode
        }
        Fault::Join(_) => {
            needs(
                index,
                target,
                |can| can.late_start,
                |backend| {
                    format!(
                        "a late joiner (a node left unstarted until its time) is not built for \
                     the {backend} backend; use the process or docker backend"
                    )
                },
            )?;
            Action::Join
        }
        Fault::Disk(f) => {
            let action = disk(f, index, target)?;
            kind = format!("disk-{}", f.mode.replace('_', "-"));
            action
        }
        Fault::Upgrade(f) => {
            binary = Some(upgrade_binary(f, index, target)?);
            Action::Upgrade
        }
        Fault::Random(_) => unreachable!("random is expanded by plan"),
    };
    check_targets_and_times(fault, index, action, &nodes)?;
    let label = label(fault, &kind, &nodes, target, toxic_of.as_ref(), links.len());
    Ok(Planned {
        at: Duration::from_secs_f64(at_s),
        action,
        kind,
        nodes,
        links,
        toxic: toxic_of,
        duration: duration_s.map(Duration::from_secs_f64),
        label,
        tag: format!("fault{index}"),
        in_node,
        binary,
    })
}

/// A step on nodes names some; its times are finite, `at_s` >= 0 and a duration > 0.
fn check_targets_and_times(
    fault: &Fault,
    index: usize,
    action: Action,
    nodes: &[usize],
) -> Result<(), ScenarioError> {
    let on_nodes = matches!(
        action,
        Action::Kill
            | Action::Stop
            | Action::Pause
            | Action::Restart
            | Action::Resume
            | Action::InNode
            | Action::Upgrade
            | Action::Join
            | Action::DiskFull
            | Action::DiskSlow(_)
            | Action::PowerLoss
    );
    if nodes.is_empty() && on_nodes {
        return Err(field(
            index,
            "nodes",
            format!("{} names no node", fault.kind()),
        ));
    }
    let (at_s, duration_s) = fault.when();
    if let Some(duration) = duration_s {
        if !(duration > 0.0 && duration.is_finite()) {
            return Err(field(index, "duration_s", "must be > 0"));
        }
    }
    if !(at_s >= 0.0 && at_s.is_finite()) {
        return Err(field(index, "at_s", "must be >= 0"));
    }
    Ok(())
}

/// A `clock` fault as the node takes it, checked by the node's own rules.
fn clock_fault(
    f: &faults::ClockFault,
    index: usize,
) -> Result<blyan_node::node::clock::ClockFault, ScenarioError> {
    let fault = blyan_node::node::clock::ClockFault {
        skew_ms: f.skew_ms,
        drift_ppm: f.drift_ppm,
        jump_ms: f.jump_ms,
    };
    fault
        .check()
        .map_err(|(name, reason)| field(index, name, reason))?;
    if fault == Default::default() {
        return Err(field(
            index,
            "kind",
            "clock sets none of skew_ms, drift_ppm, jump_ms",
        ));
    }
    Ok(fault)
}

/// A `disk` fault: on a backend whose data directories are on this host; `full` with a sane
/// tmpfs size, `slow` with a sane fsync delay, `power_loss`; each field only where its mode
/// uses it.
fn disk(f: &faults::Disk, index: usize, target: &Target) -> Result<Action, ScenarioError> {
    needs(
        index,
        target,
        |can| can.host_disks,
        |backend| {
            format!(
                "a disk fault mounts a layer under the node's data directory on this host, \
             which the {backend} backend does not keep there (its homes are volumes on the \
             members); use the process or docker backend"
            )
        },
    )?;
    let action = match f.mode.as_str() {
        "full" => Action::DiskFull,
        "slow" => match f.fsync_ms {
            Some(ms) if (1..=10_000).contains(&ms) => Action::DiskSlow(ms),
            Some(_) => return Err(field(index, "fsync_ms", "must be between 1 and 10000")),
            None => return Err(field(index, "fsync_ms", "a slow disk needs fsync_ms")),
        },
        "power_loss" => Action::PowerLoss,
        other => {
            return Err(field(
                index,
                "mode",
                format!("{other:?} is not one of full, slow, power_loss"),
            ))
        }
    };
    if f.size_mb.is_some() && action != Action::DiskFull {
        return Err(field(index, "size_mb", "only a full disk has a size"));
    }
    if f.fsync_ms.is_some() && !matches!(action, Action::DiskSlow(_)) {
        return Err(field(
            index,
            "fsync_ms",
            "only a slow disk has an fsync delay",
        ));
    }
    if f.size_mb.is_some_and(|mb| !(16..=4096).contains(&mb)) {
        return Err(field(index, "size_mb", "must be between 16 and 4096"));
    }
    Ok(action)
}

/// Refuses fault `index` (its `kind`, `why` naming the backend) on a backend that lacks the
/// capability `has` asks for; `Auto` is not a backend yet and passes.
fn needs(
    index: usize,
    target: &Target,
    has: impl Fn(&crate::backend::kind::Capabilities) -> bool,
    why: impl FnOnce(BackendKind) -> String,
) -> Result<(), ScenarioError> {
    match target.backend.capabilities() {
        Some(can) if !has(&can) => Err(field(index, "kind", why(target.backend))),
        _ => Ok(()),
    }
}

/// The binary an `upgrade` starts its nodes from: named, a file, on a backend that runs
/// binaries from this host.
fn upgrade_binary(
    f: &faults::Upgrade,
    index: usize,
    target: &Target,
) -> Result<std::path::PathBuf, ScenarioError> {
    needs(
        index,
        target,
        |can| can.host_binaries,
        |backend| {
            format!(
                "an upgrade (another binary for a node) needs nodes started from binaries of this \
             host, which the {backend} backend does not do (its images are loaded into the \
             members); use the process or docker backend"
            )
        },
    )?;
    let binary = f
        .binary
        .as_ref()
        .ok_or_else(|| field(index, "binary", "upgrade needs the binary to run"))?;
    let path = std::path::PathBuf::from(binary);
    if !path.is_file() {
        return Err(field(index, "binary", format!("{binary}: no such file")));
    }
    Ok(path)
}

/// A `messages` fault as the node takes it, checked by the node's own rules.
/// Its `peers` are node names here; the run turns them into peer ids when it sets the fault
/// (`run::inject`), once the devnet has them.
fn message_faults(
    f: &faults::Messages,
    index: usize,
    seed: Option<u64>,
    target: &Target,
) -> Result<blyan_node::config::MessageFaults, ScenarioError> {
    let faults = blyan_node::config::MessageFaults {
        drop: f.drop,
        duplicate: f.duplicate,
        delay_ms: f.delay_ms,
        reorder: f.reorder,
        replay_old: f.replay_old,
        types: f.types.clone(),
        seed: seed.or(f.seed).unwrap_or(1),
        peers: Vec::new(),
    };
    faults
        .check()
        .map_err(|(name, reason)| field(index, name, reason))?;
    let peers = indices(index, "peers", &f.peers, target)?;
    if let Some(both) = peers
        .iter()
        .find(|peer| f.nodes.contains(&target.names[**peer]))
    {
        return Err(field(
            index,
            "peers",
            format!(
                "{} is among the nodes the fault acts on; name other peers",
                target.names[*both]
            ),
        ));
    }
    if faults
        == (blyan_node::config::MessageFaults {
            seed: faults.seed,
            types: faults.types.clone(),
            ..Default::default()
        })
    {
        return Err(field(
            index,
            "kind",
            "messages sets none of drop, duplicate, delay_ms, reorder, replay_old",
        ));
    }
    Ok(blyan_node::config::MessageFaults {
        peers: f.peers.clone(),
        ..faults
    })
}

/// One fault the random nemesis drew, as the manifest would write it.
fn drawn_fault(drawn: &blyan_chaos::Drawn, names: Vec<String>) -> Fault {
    let at_s = drawn.at_s;
    let duration_s = Some(drawn.duration_s);
    let on_nodes = |nodes: Vec<String>| faults::OnNodes {
        at_s,
        nodes,
        duration_s,
    };
    match drawn.kind.as_str() {
        "kill" => Fault::Kill(on_nodes(names)),
        "pause" => Fault::Pause(on_nodes(names)),
        "stop" => Fault::Stop(on_nodes(names)),
        "restart" => Fault::Restart(faults::OnNodes {
            duration_s: None,
            ..on_nodes(names)
        }),
        "isolate" => Fault::Isolate(faults::Partition {
            at_s,
            nodes: names,
            duration_s,
            ..Default::default()
        }),
        "latency" => Fault::Latency(faults::Latency {
            at_s,
            link: names,
            duration_s,
            latency_ms: (drawn.latency_ms > 0).then_some(drawn.latency_ms as i64),
            jitter_ms: (drawn.latency_ms > 0).then_some(drawn.jitter_ms as i64),
            ..Default::default()
        }),
        "bandwidth" => Fault::Bandwidth(faults::Bandwidth {
            at_s,
            link: names,
            duration_s,
            rate_kbps: Some(drawn.rate_kbps as i64),
            ..Default::default()
        }),
        "cut" => Fault::Cut(faults::Links {
            at_s,
            link: names,
            duration_s,
            ..Default::default()
        }),
        partition => Fault::Partition(faults::Partition {
            at_s,
            shape: partition.strip_prefix("partition-").map(str::to_string),
            nodes: names,
            duration_s,
            ..Default::default()
        }),
    }
}

/// The faults the random nemesis of `faults[index]` draws, as manifest faults.
fn expand_random(
    fault: &faults::Random,
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
            drawn_fault(&drawn, names)
        })
        .collect())
}

/// A node's data directory is either a tmpfs (`full`) or on `blyan-lazyfs` (`slow`,
/// `power_loss`), not both: `disks` holds each node's layer so far.
fn one_disk_layer(
    step: &Planned,
    index: usize,
    disks: &mut Vec<(usize, bool)>,
    target: &Target,
) -> Result<(), ScenarioError> {
    let fuse = match step.action {
        Action::DiskFull => false,
        Action::DiskSlow(_) | Action::PowerLoss => true,
        _ => return Ok(()),
    };
    for &node in &step.nodes {
        match disks.iter().find(|(known, _)| *known == node) {
            Some((_, layer)) if *layer != fuse => {
                return Err(field(
                    index,
                    "nodes",
                    format!(
                        "{}'s data directory cannot be both a tmpfs (mode full) and on the \
                         FUSE layer (modes slow, power_loss)",
                        target.names[node]
                    ),
                ))
            }
            Some(_) => {}
            None => disks.push((node, fuse)),
        }
    }
    Ok(())
}

/// Turns the manifest's faults into a schedule, refusing what cannot be done before anything
/// starts. `seed` (from `devnet run --seed`) replaces every random nemesis' seed.
pub fn plan(
    faults: &[Fault],
    target: &Target,
    seed: Option<u64>,
) -> Result<Vec<Planned>, ScenarioError> {
    let mut out = Vec::new();
    let mut disks = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        if let Fault::Random(random) = fault {
            for (k, drawn) in expand_random(random, index, target, seed)?
                .iter()
                .enumerate()
            {
                let mut step = one(drawn, index, target, seed)?;
                step.tag = format!("fault{index}_{k}");
                step.label = format!("random: {}", step.label);
                out.push(step);
            }
            continue;
        }
        let step = one(fault, index, target, seed)?;
        one_disk_layer(&step, index, &mut disks, target)?;
        let lasting = matches!(
            step.action,
            Action::Isolate
                | Action::Kill
                | Action::Stop
                | Action::Pause
                | Action::Cut
                | Action::Toxic
                | Action::OneWay
                | Action::InNode
                | Action::DiskFull
                | Action::DiskSlow(_)
                | Action::PowerLoss
        );
        if lasting && fault.when().1.is_none() {
            let healed_later = faults[index + 1..]
                .iter()
                .any(|later| matches!(later, Fault::Heal(_) | Fault::Resume(_)));
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
