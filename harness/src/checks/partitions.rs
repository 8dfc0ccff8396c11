//! `partitions_hold`: a partition, cut or isolation really separated the nodes while it was in
//! force. Two facts from the history: no node's `/net_info` listed a connection across the cut
//! just before its undo (`cut_crossing` events), and, when no side of the cut held a quorum,
//! no block was both proposed (block time) and decided (seen committed) inside its window.

use std::collections::{BTreeSet, HashMap};

use super::{check, Check, Verdict};
use crate::history::{Event, History, NodeRecord};

/// One cut as the timeline recorded it.
struct Window<'a> {
    label: &'a str,
    from_ms: u64,
    until_ms: u64,
    links: &'a [[String; 2]],
    crossing: Vec<(&'a str, &'a str)>,
}

/// Pairs each `cut_in_force` with the next `cut_undo` of the same label; a cut still in force
/// when the run ended is left out (its connections were never asked).
fn windows(timeline: &[Event]) -> Vec<Window<'_>> {
    let mut open: Vec<Window<'_>> = Vec::new();
    let mut closed = Vec::new();
    for event in timeline {
        let position = open.iter().position(|w| w.label == event.label);
        match (event.kind.as_str(), position) {
            ("cut_in_force", _) => open.push(Window {
                label: &event.label,
                from_ms: event.at_ms,
                until_ms: event.at_ms,
                links: &event.links,
                crossing: Vec::new(),
            }),
            ("cut_crossing", Some(index)) => {
                if let [from, to] = event.nodes.as_slice() {
                    open[index].crossing.push((from.as_str(), to.as_str()));
                }
            }
            ("cut_undo", Some(index)) => {
                let mut window = open.remove(index);
                window.until_ms = event.at_ms;
                closed.push(window);
            }
            _ => {}
        }
    }
    closed
}

/// Whether some group of nodes still linked to each other (a pair is apart only when both of
/// its directed links are cut) holds more than two thirds of the power.
fn quorum_side(links: &[[String; 2]], power: &[(&str, u64)]) -> bool {
    let index: HashMap<&str, usize> = power
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    let cut: BTreeSet<(usize, usize)> = links
        .iter()
        .filter_map(|[a, b]| Some((*index.get(a.as_str())?, *index.get(b.as_str())?)))
        .collect();
    let mut group: Vec<usize> = (0..power.len()).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for a in 0..power.len() {
        for b in a + 1..power.len() {
            if !(cut.contains(&(a, b)) && cut.contains(&(b, a))) {
                let (ra, rb) = (root(&mut group, a), root(&mut group, b));
                group[ra] = rb;
            }
        }
    }
    let total: u64 = power.iter().map(|(_, p)| p).sum();
    let mut sides: HashMap<usize, u64> = HashMap::new();
    for (i, (_, p)) in power.iter().enumerate() {
        *sides.entry(root(&mut group, i)).or_default() += p;
    }
    sides.values().any(|side| 3 * side > 2 * total)
}

pub fn partitions_hold(history: &History) -> Check {
    const NAME: &str = "partitions_hold";
    let Some(run) = &history.run else {
        return check(NAME, Verdict::Fail, "no run.json".into());
    };
    let windows = windows(&history.timeline);
    if windows.is_empty() {
        return check(
            NAME,
            Verdict::Skipped,
            "no partition, cut or isolation".into(),
        );
    }
    let power: Vec<(&str, u64)> = run
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.power))
        .collect();
    let blocks: BTreeSet<(u64, u64, u64)> = history
        .nodes
        .iter()
        .flat_map(|(_, records)| records)
        .filter_map(|record| match record {
            NodeRecord::Block {
                height,
                time_ms,
                at_ms,
                ..
            } => Some((*height, *time_ms, *at_ms)),
            _ => None,
        })
        .collect();
    let since = |at: u64| (at as f64 - run.started_ms as f64) / 1000.0;
    let mut failures = Vec::new();
    let mut without_quorum = 0;
    for window in &windows {
        for (from, to) in &window.crossing {
            failures.push(format!(
                "{from} held a connection to {to} across '{}'",
                window.label
            ));
        }
        if quorum_side(window.links, &power) {
            continue;
        }
        without_quorum += 1;
        let inside: BTreeSet<u64> = blocks
            .iter()
            .filter(|(_, time, seen)| *time >= window.from_ms && *seen <= window.until_ms)
            .map(|(height, _, _)| *height)
            .collect();
        if !inside.is_empty() {
            failures.push(format!(
                "height(s) {inside:?} proposed and decided inside '{}' (t={:.1}-{:.1} s), which left no side a quorum",
                window.label,
                since(window.from_ms),
                since(window.until_ms)
            ));
        }
    }
    if failures.is_empty() {
        check(
            NAME,
            Verdict::Pass,
            format!(
                "{} cut(s): no connection across any; {without_quorum} left no side a quorum and no block was decided inside them",
                windows.len()
            ),
        )
    } else {
        check(NAME, Verdict::Fail, failures.join("; "))
    }
}
