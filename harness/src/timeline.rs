//! `timeline.json`: every fault a run applied, with when it was planned, when it really started
//! and ended, what it targeted, and its measured effect on the chain (heights at its start and
//! end; for a latency fault, the nodes' own ping RTT over the link before and during it).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::process;
use crate::scenario::{Action, Planned};
use crate::testnet::record::DevnetState;

/// One applied fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The kind as planned: `kill`, `partition-halves`, `latency`, ...
    pub kind: String,
    pub label: String,
    /// Node names it acts on (link faults: the nodes at either end of its links).
    pub targets: Vec<String>,
    /// Directed links it acts on (link faults and proxy partitions).
    pub links: usize,
    /// From the schedule (the same for the same manifest and seed).
    pub planned_at_s: f64,
    pub planned_duration_s: Option<f64>,
    /// Measured on this run's clock.
    pub started_s: f64,
    pub ended_s: Option<f64>,
    pub effect: Effect,
}

/// What the fault did, measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Each node's height when the fault started and when it ended (`None`: no answer).
    pub heights_at_start: Vec<Option<u64>>,
    pub heights_at_end: Vec<Option<u64>>,
    /// Blocks the highest node committed while the fault was in force.
    pub committed_during: Option<u64>,
    /// For a latency fault on one link: the first node's ping RTT to the second (its own
    /// libp2p ping, `/net_info`) before the fault and at its end.
    pub rtt_before_ms: Option<f64>,
    pub rtt_during_ms: Option<f64>,
    /// Seconds from the fault's end until the highest node committed a block beyond the
    /// height it had then (`None`: not within the run).
    pub resumed_after_s: Option<f64>,
    /// For faults on nodes (kill, stop, pause, restart, isolate): seconds from the fault's end
    /// until every target reached the highest height any node had at that end.
    pub caught_up_after_s: Option<f64>,
    /// For a power loss: per target, its `/status` height just before the fault (what it had
    /// acknowledged; `None`: it did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<Option<u64>>,
    /// For a power loss: per target, the height its database held when it started again
    /// (`started_at_height` in its `/status`; `None`: no answer within 15 s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored_after: Vec<Option<u64>>,
    /// Indices of the target nodes (for the catch-up measure).
    #[serde(default, skip_serializing)]
    pub target_nodes: Vec<usize>,
    pub summary: String,
}

/// Notes, for every ended entry still waiting, whether blocks resumed (`heights` just polled,
/// `now_s` on the run's clock).
pub fn watch_resume(entries: &mut [Entry], heights: &[Option<u64>], now_s: f64) {
    let top = heights.iter().flatten().max().copied();
    for entry in entries.iter_mut() {
        let Some(ended) = entry.ended_s else {
            continue;
        };
        let since = ((now_s - ended) * 1000.0).round() / 1000.0;
        let at_end = entry.effect.heights_at_end.iter().flatten().max().copied();
        if entry.effect.resumed_after_s.is_none() {
            if let (Some(top), Some(at_end)) = (top, at_end) {
                if top > at_end {
                    entry.effect.resumed_after_s = Some(since);
                }
            }
        }
        if entry.effect.caught_up_after_s.is_none() && !entry.effect.target_nodes.is_empty() {
            let caught_up = entry.effect.target_nodes.iter().all(|&i| {
                matches!((heights.get(i).copied().flatten(), at_end), (Some(h), Some(end)) if h >= end)
            });
            if caught_up {
                entry.effect.caught_up_after_s = Some(since);
            }
        }
    }
}

/// The planned part of an entry (what a replay with the same seed must reproduce).
pub fn planned_key(entry: &Entry) -> (String, Vec<String>, usize, String, String) {
    (
        entry.kind.clone(),
        entry.targets.clone(),
        entry.links,
        format!("{:.3}", entry.planned_at_s),
        format!("{:.3}", entry.planned_duration_s.unwrap_or(0.0)),
    )
}

/// Every node's height now.
pub fn heights(state: &DevnetState) -> Vec<Option<u64>> {
    // Every node at once, each for a poll's short timeout: a paused node's 5 s wait here once
    // held up the fault schedule (a 3 s pause lasted 8.4 s).
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    process::node_statuses(&process::poll_client(), state, &all)
        .into_iter()
        .map(|status| status.and_then(|status| status.get("latest_height")?.as_u64()))
        .collect()
}

/// Node `from`'s ping RTT to node `to`, from its `/net_info`.
pub fn rtt_ms(state: &DevnetState, from: usize, to: usize) -> Option<f64> {
    let client = process::http_client();
    let info: serde_json::Value = client
        .get(format!("{}/net_info", state.nodes[from].api))
        .send()
        .ok()?
        .json()
        .ok()?;
    let peer = &state.nodes[to].peer_id;
    info.get("peers")?
        .as_array()?
        .iter()
        .find(|p| p.get("peer_id").and_then(|id| id.as_str()) == Some(peer.as_str()))?
        .get("rtt_ms")?
        .as_f64()
}

/// The ping RTT of the link between `a` and `b`: the lower of the two ends' latest pings
/// (each end pings the other every 5 s), so that one ping slowed by a loaded host does not
/// stand for the link (a 67 ms sample before a 100 ms toxic was seen in CI).
fn link_rtt_ms(state: &DevnetState, (a, b): (usize, usize)) -> Option<f64> {
    match (rtt_ms(state, a, b), rtt_ms(state, b, a)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The link a latency fault targets, when it is one link.
fn one_link(step: &Planned) -> Option<(usize, usize)> {
    let mut ends: Vec<usize> = step.links.iter().flat_map(|(a, b)| [*a, *b]).collect();
    ends.sort_unstable();
    ends.dedup();
    (step.action == Action::Toxic && ends.len() == 2).then(|| (ends[0], ends[1]))
}

/// Starts an entry for `step`, measuring what it needs before the fault is applied.
pub fn begin(state: &DevnetState, step: &Planned, started_s: f64) -> Entry {
    let mut targets: Vec<usize> = step.nodes.clone();
    targets.extend(step.links.iter().flat_map(|(a, b)| [*a, *b]));
    targets.sort_unstable();
    targets.dedup();
    let rtt_before_ms = one_link(step).and_then(|link| link_rtt_ms(state, link));
    Entry {
        kind: step.kind.clone(),
        label: step.label.clone(),
        targets: targets
            .iter()
            .map(|&i| state.nodes[i].moniker.clone())
            .collect(),
        links: step.links.len(),
        planned_at_s: step.at.as_secs_f64(),
        planned_duration_s: step.duration.map(|d| d.as_secs_f64()),
        started_s,
        ended_s: None,
        effect: Effect {
            heights_at_start: heights(state),
            rtt_before_ms,
            target_nodes: if step.links.is_empty() {
                step.nodes.clone()
            } else {
                Vec::new()
            },
            ..Effect::default()
        },
    }
}

/// Measures the fault's effect just before it is undone: the RTT of its link, and the heights
/// reached while it was in force (`polled`: the run's latest poll of every node, taken while
/// the fault was in force). Measured after the undo, the heights counted blocks committed
/// once a healed partition's first links were back (restoring 200 links and asking 20 nodes
/// one by one take seconds): a 10/10 partition then seemed to let 2 blocks through.
pub fn measure_end(state: &DevnetState, step: &Planned, entry: &mut Entry, polled: &[Option<u64>]) {
    entry.effect.rtt_during_ms = one_link(step).and_then(|link| link_rtt_ms(state, link));
    entry.effect.heights_at_end = polled.to_vec();
}

/// Closes an entry after the fault was undone; the heights at its end are those
/// `measure_end` saw while it was still in force (a restart, over when it returns, is measured
/// here).
pub fn end(state: &DevnetState, entry: &mut Entry, ended_s: f64) {
    entry.ended_s = Some(ended_s);
    if entry.effect.heights_at_end.is_empty() {
        entry.effect.heights_at_end = heights(state);
    }
    let top = |heights: &[Option<u64>]| heights.iter().flatten().max().copied();
    entry.effect.committed_during = match (
        top(&entry.effect.heights_at_start),
        top(&entry.effect.heights_at_end),
    ) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let mut summary = format!(
        "{} blocks committed in {:.1} s",
        entry
            .effect
            .committed_during
            .map_or("?".to_string(), |n| n.to_string()),
        ended_s - entry.started_s
    );
    if !entry.effect.stored_after.is_empty() {
        let said: Vec<String> = entry
            .effect
            .target_nodes
            .iter()
            .zip(&entry.effect.stored_after)
            .zip(&entry.effect.acknowledged)
            .map(|((&node, stored), acknowledged)| {
                format!(
                    "{} acknowledged {} and restarted from {}",
                    state.nodes[node].moniker,
                    acknowledged.map_or("?".into(), |h| h.to_string()),
                    stored.map_or("?".into(), |h| h.to_string())
                )
            })
            .collect();
        summary.push_str(&format!("; {}", said.join(", ")));
    }
    if let (Some(before), Some(during)) = (entry.effect.rtt_before_ms, entry.effect.rtt_during_ms) {
        summary.push_str(&format!(
            "; ping RTT {before:.1} ms before, {during:.1} ms during"
        ));
    }
    entry.effect.summary = summary;
}

/// The height node `index`'s database held when its process started (`started_at_height` in
/// its `/status`), asked until it answers, at most 15 s. Ask only once the process that was
/// killed is gone: any answer is then the new process's.
pub fn started_height(state: &DevnetState, index: usize) -> Option<u64> {
    let client = process::http_client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status = process::node_status(&client, &state.nodes[index]);
        if let Some(height) = status.and_then(|s| s.get("started_at_height")?.as_u64()) {
            return Some(height);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Adds the resume time to each summary and writes `DIR/timeline.json`.
pub fn write(dir: &Path, entries: &mut [Entry]) -> std::io::Result<()> {
    for entry in entries.iter_mut() {
        if let Some(resumed) = entry.effect.resumed_after_s {
            if !entry.effect.summary.contains("resumed") {
                entry
                    .effect
                    .summary
                    .push_str(&format!("; blocks resumed {resumed:.1} s after it ended"));
            }
        }
        if let Some(caught_up) = entry.effect.caught_up_after_s {
            if !entry.effect.summary.contains("caught up") {
                entry.effect.summary.push_str(&format!(
                    "; {} caught up {caught_up:.1} s after it ended",
                    entry.targets.join(",")
                ));
            }
        }
    }
    let text = serde_json::to_string_pretty(entries).expect("the timeline serialises");
    std::fs::write(dir.join("timeline.json"), text + "\n")
}

pub fn read(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(dir.join("timeline.json"))?;
    serde_json::from_str(&text)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A devnet record whose nodes answer nothing (no node runs at these addresses), so any
    /// height asked of them comes back `None`.
    fn silent_devnet(nodes: usize) -> DevnetState {
        let mut state: DevnetState = serde_json::from_value(serde_json::json!({
            "name": "t", "backend": "process", "chain_id": "c", "seed": 1,
            "node_bin": PathBuf::from("/nonexistent"), "nodes": [], "started_ms": 0,
        }))
        .unwrap();
        let node = |i: usize| {
            serde_json::from_value(serde_json::json!({
                "index": i, "moniker": format!("node{i}"), "home": "/nonexistent",
                "api": "http://127.0.0.1:9", "p2p": "", "peer_id": "", "validator_key": "",
                "pid": null, "log": "/nonexistent",
            }))
        };
        state.nodes = (0..nodes).map(|i| node(i).unwrap()).collect();
        state
    }

    fn partition() -> Planned {
        Planned {
            at: std::time::Duration::from_secs(1),
            action: Action::Cut,
            kind: "partition-halves".into(),
            nodes: Vec::new(),
            links: vec![(0, 1), (1, 0)],
            toxic: None,
            duration: Some(std::time::Duration::from_secs(5)),
            label: "partition-halves".into(),
            tag: "t1".into(),
            in_node: None,
            binary: None,
        }
    }

    #[test]
    fn a_fault_counts_the_blocks_committed_while_it_was_in_force_not_after_its_undo() {
        let state = silent_devnet(2);
        let step = partition();
        let mut entry = Entry {
            planned_at_s: 1.0,
            started_s: 1.2,
            ended_s: None,
            effect: Effect {
                heights_at_start: vec![Some(7), Some(7)],
                ..Effect::default()
            },
            ..entry_template(&step)
        };
        // While the cut held, one node finished the height in flight; after the heal the chain
        // moved on, but that is not the partition's doing.
        measure_end(&state, &step, &mut entry, &[Some(8), Some(7)]);
        end(&state, &mut entry, 6.5);
        assert_eq!(entry.effect.heights_at_end, vec![Some(8), Some(7)]);
        assert_eq!(entry.effect.committed_during, Some(1), "{entry:#?}");
        assert_eq!(entry.ended_s, Some(6.5));
    }

    #[test]
    fn a_restart_is_measured_when_it_returns() {
        let state = silent_devnet(1);
        let step = partition();
        let mut entry = Entry {
            effect: Effect {
                heights_at_start: vec![Some(3)],
                ..Effect::default()
            },
            ..entry_template(&step)
        };
        end(&state, &mut entry, 2.0);
        assert_eq!(
            entry.effect.heights_at_end,
            vec![None],
            "asked the node itself"
        );
        assert_eq!(entry.effect.committed_during, None);
    }

    fn entry_template(step: &Planned) -> Entry {
        Entry {
            kind: step.kind.clone(),
            label: step.label.clone(),
            targets: Vec::new(),
            links: step.links.len(),
            planned_at_s: 0.0,
            planned_duration_s: None,
            started_s: 0.0,
            ended_s: None,
            effect: Effect::default(),
        }
    }
}
