//! The manifest's `[[faults]]` as data: one variant a kind, each carrying exactly the fields
//! its kind takes (`docs/CHAOS.md`), so that a field a kind does not use (`shape` on a kill,
//! `latency_ms` on a cut) is refused by name when the manifest is read. `scenario::plan` turns
//! them into a schedule.

use serde::{Deserialize, Serialize};

/// One entry of `[[faults]]`, by its `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    Kill(OnNodes),
    Stop(OnNodes),
    Pause(OnNodes),
    /// Instant: the node is killed and started again.
    Restart(OnNodes),
    /// Ends the listed nodes' pauses.
    Resume(OnNodes),
    /// Ends every fault in force.
    Heal(At),
    /// Takes nodes off the network (with `network.proxy`: cuts all their links).
    Isolate(Partition),
    Partition(Partition),
    Cut(Links),
    Latency(Latency),
    Bandwidth(Bandwidth),
    /// Data stops; the connection closes after `timeout_ms` (0: never).
    Timeout(Timeout),
    /// Connections are reset after `timeout_ms`.
    Reset(Timeout),
    /// A seeded random nemesis drawing faults of `kinds`.
    Random(Random),
    /// The listed nodes' outgoing messages dropped, duplicated, delayed, reordered or answered
    /// by old ones, inside the node (devnet mode; `POST /admin/devnet/messages`).
    Messages(Messages),
    /// The clock the listed nodes date and bound block times by, moved (devnet mode;
    /// `POST /admin/devnet/clock`).
    Clock(ClockFault),
    /// Instant: each listed node is stopped (SIGTERM) and started again from `binary`, its home
    /// kept (a rolling upgrade, one fault a node).
    Upgrade(Upgrade),
    /// Instant: each listed node, not started with the devnet, starts now with `--state-sync`
    /// (a late joiner; process backend).
    Join(Join),
    /// The listed nodes' disks (process backend): `mode = "full"` fills the size-limited tmpfs
    /// their data directory is on (the end frees it and starts a node that stopped); `slow`
    /// holds every fsync `fsync_ms`; `power_loss` kills the node and drops its unsynced writes
    /// (the end starts it).
    Disk(Disk),
}

/// A fault on processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnNodes {
    /// Seconds after the devnet is up.
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct At {
    pub at_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub at_s: f64,
    /// isolate, halves, majority, ring, bridge, groups or oneway (`partition` only).
    #[serde(default)]
    pub shape: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// `oneway`: the nodes whose messages still reach `to` ...
    #[serde(default)]
    pub from: Vec<String>,
    /// ... while the messages of `to` no longer reach `from`.
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

/// The links a link fault acts on: one `link` (both directions), the links between `groups`,
/// or every link of `nodes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub latency_ms: Option<i64>,
    #[serde(default)]
    pub jitter_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// KB/s.
    #[serde(default)]
    pub rate_kbps: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub timeout_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Random {
    pub at_s: f64,
    /// The window it acts in.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// The nemesis' seed (`devnet run --seed` overrides it).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Mean seconds between faults.
    #[serde(default)]
    pub mean_interval_s: Option<f64>,
    /// Mean seconds a fault lasts.
    #[serde(default)]
    pub mean_duration_s: Option<f64>,
    /// The kinds it may draw (default: all that the devnet supports).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Most nodes a crash fault hits at once (default f = (validators - 1) / 3).
    #[serde(default)]
    pub max_faulty: Option<i64>,
}

/// A message fault: the node's `MessageFaults` (`blyan_node::config`) on `nodes` for a while.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Probabilities per message.
    #[serde(default)]
    pub drop: f64,
    #[serde(default)]
    pub duplicate: f64,
    #[serde(default)]
    pub reorder: f64,
    #[serde(default)]
    pub replay_old: f64,
    #[serde(default)]
    pub delay_ms: u64,
    /// vote, proposal, tx, sync (default: all).
    #[serde(default)]
    pub types: Vec<String>,
    /// The draws' seed (default: the manifest's `devnet run --seed`, else 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Node names: when set, the fault acts on what `nodes` receive from these peers instead
    /// of on what `nodes` send.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// A clock fault: the node's consensus clock off by `skew_ms + jump_ms`, drifting `drift_ppm`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFault {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub skew_ms: i64,
    #[serde(default)]
    pub drift_ppm: i64,
    #[serde(default)]
    pub jump_ms: i64,
}

/// A disk fault (process backend): `full` (a tmpfs filled), `slow` (fsyncs held) or
/// `power_loss` (unsynced writes dropped); `docs/CHAOS.md`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    pub mode: String,
    /// `full`: the tmpfs each target's data directory is on, in MiB (default 64).
    #[serde(default)]
    pub size_mb: Option<u64>,
    /// `slow`: how long every fsync is held, in ms (1-10000).
    #[serde(default)]
    pub fsync_ms: Option<u64>,
}

/// A late joiner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// An upgrade: the nodes' binary replaced by `binary` (process backend).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    pub at_s: f64,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The `blyan-node` binary to run from now on (`devnet run --old-build` fills it in).
    #[serde(default)]
    pub binary: Option<String>,
}

/// What a link fault targets: (nodes, groups, link).
pub type LinkTargets<'a> = (&'a [String], &'a [Vec<String>], &'a [String]);

impl Fault {
    /// The kind, as the manifest writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Stop(_) => "stop",
            Fault::Pause(_) => "pause",
            Fault::Restart(_) => "restart",
            Fault::Resume(_) => "resume",
            Fault::Heal(_) => "heal",
            Fault::Isolate(_) => "isolate",
            Fault::Partition(_) => "partition",
            Fault::Cut(_) => "cut",
            Fault::Latency(_) => "latency",
            Fault::Bandwidth(_) => "bandwidth",
            Fault::Timeout(_) => "timeout",
            Fault::Reset(_) => "reset",
            Fault::Random(_) => "random",
            Fault::Messages(_) => "messages",
            Fault::Clock(_) => "clock",
            Fault::Upgrade(_) => "upgrade",
            Fault::Join(_) => "join",
            Fault::Disk(_) => "disk",
        }
    }

    /// (seconds after the devnet is up, how long it lasts).
    pub fn when(&self) -> (f64, Option<f64>) {
        match self {
            Fault::Kill(f) | Fault::Stop(f) | Fault::Pause(f) | Fault::Restart(f) => {
                (f.at_s, f.duration_s)
            }
            Fault::Resume(f) => (f.at_s, f.duration_s),
            Fault::Heal(f) => (f.at_s, None),
            Fault::Isolate(f) | Fault::Partition(f) => (f.at_s, f.duration_s),
            Fault::Cut(f) => (f.at_s, f.duration_s),
            Fault::Latency(f) => (f.at_s, f.duration_s),
            Fault::Bandwidth(f) => (f.at_s, f.duration_s),
            Fault::Timeout(f) | Fault::Reset(f) => (f.at_s, f.duration_s),
            Fault::Random(f) => (f.at_s, f.duration_s),
            Fault::Messages(f) => (f.at_s, f.duration_s),
            Fault::Clock(f) => (f.at_s, f.duration_s),
            Fault::Upgrade(f) => (f.at_s, None),
            Fault::Join(f) => (f.at_s, None),
            Fault::Disk(f) => (f.at_s, f.duration_s),
        }
    }

    /// The links a link fault acts on; `None` for the other kinds.
    pub fn link_targets(&self) -> Option<LinkTargets<'_>> {
        match self {
            Fault::Cut(f) => Some((&f.nodes, &f.groups, &f.link)),
            Fault::Latency(f) => Some((&f.nodes, &f.groups, &f.link)),
            Fault::Bandwidth(f) => Some((&f.nodes, &f.groups, &f.link)),
            Fault::Timeout(f) | Fault::Reset(f) => Some((&f.nodes, &f.groups, &f.link)),
            _ => None,
        }
    }

    /// The nodes it names (a link fault's `nodes`, a partition's); none for heal and random.
    pub fn nodes(&self) -> &[String] {
        match self {
            Fault::Kill(f) | Fault::Stop(f) | Fault::Pause(f) | Fault::Restart(f) => &f.nodes,
            Fault::Resume(f) => &f.nodes,
            Fault::Isolate(f) | Fault::Partition(f) => &f.nodes,
            Fault::Messages(f) => &f.nodes,
            Fault::Clock(f) => &f.nodes,
            Fault::Upgrade(f) => &f.nodes,
            Fault::Join(f) => &f.nodes,
            Fault::Disk(f) => &f.nodes,
            Fault::Heal(_) | Fault::Random(_) => &[],
            _ => self.link_targets().map_or(&[], |(nodes, _, _)| nodes),
        }
    }
}
