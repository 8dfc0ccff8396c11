//! The fault model as data: partition shapes (which directed links they cut) and the seeded
//! random nemesis (a schedule that is a pure function of its seed and the devnet's size).

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A partition over the nodes `0..n`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Each listed node alone; the others together.
    Isolate(Vec<usize>),
    /// The first `n/2` nodes and the rest.
    Halves,
    /// The largest group that still holds more than 2/3 (`n - f` nodes with `f = (n-1)/3`)
    /// and the other `f`.
    Majority,
    /// Every node keeps only its two ring neighbours.
    Ring,
    /// Two sides that both reach one bridge node (the middle one) but not each other.
    Bridge,
    /// Explicit groups; nodes in none form one more group.
    Groups(Vec<Vec<usize>>),
}

/// Why a shape does not fit the devnet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("{shape} needs at least {need} nodes, the devnet has {have}")]
    TooFew {
        shape: &'static str,
        need: usize,
        have: usize,
    },
    #[error("node index {0} is not in the devnet")]
    Unknown(usize),
    #[error("node index {0} is in two groups")]
    Twice(usize),
}

impl Shape {
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Isolate(_) => "isolate",
            Shape::Halves => "halves",
            Shape::Majority => "majority",
            Shape::Ring => "ring",
            Shape::Bridge => "bridge",
            Shape::Groups(_) => "groups",
        }
    }

    /// Which group each node is in (`None` for the ring, which is not made of groups).
    fn groups(&self, n: usize) -> Result<Option<Vec<usize>>, ShapeError> {
        let need = |shape, need| {
            if n < need {
                Err(ShapeError::TooFew {
                    shape,
                    need,
                    have: n,
                })
            } else {
                Ok(())
            }
        };
        let mut group = vec![0usize; n];
        match self {
            Shape::Isolate(nodes) => {
                for (k, &node) in nodes.iter().enumerate() {
                    *group.get_mut(node).ok_or(ShapeError::Unknown(node))? = k + 1;
                }
            }
            Shape::Halves => {
                need("halves", 2)?;
                for (node, slot) in group.iter_mut().enumerate() {
                    *slot = usize::from(node >= n / 2);
                }
            }
            Shape::Majority => {
                need("majority", 2)?;
                let minority = ((n - 1) / 3).max(1);
                for (node, slot) in group.iter_mut().enumerate() {
                    *slot = usize::from(node >= n - minority);
                }
            }
            Shape::Ring => {
                need("ring", 4)?;
                return Ok(None);
            }
            Shape::Bridge => {
                need("bridge", 3)?;
                return Ok(None);
            }
            Shape::Groups(groups) => {
                let mut seen = BTreeSet::new();
                for (k, members) in groups.iter().enumerate() {
                    for &node in members {
                        if !seen.insert(node) {
                            return Err(ShapeError::Twice(node));
                        }
                        *group.get_mut(node).ok_or(ShapeError::Unknown(node))? = k + 1;
                    }
                }
            }
        }
        Ok(Some(group))
    }

    /// Whether nodes `a` and `b` can still talk under this partition.
    pub fn connected(&self, n: usize, a: usize, b: usize) -> Result<bool, ShapeError> {
        if a >= n {
            return Err(ShapeError::Unknown(a));
        }
        if b >= n {
            return Err(ShapeError::Unknown(b));
        }
        if a == b {
            return Ok(true);
        }
        Ok(match self.groups(n)? {
            Some(group) => group[a] == group[b],
            None => match self {
                Shape::Ring => (a + 1) % n == b || (b + 1) % n == a,
                Shape::Bridge => {
                    let bridge = n / 2;
                    a == bridge || b == bridge || (a < bridge) == (b < bridge)
                }
                _ => unreachable!("only the ring and the bridge have no groups"),
            },
        })
    }

    /// The directed links `(from, to)` among `0..n` that this partition cuts.
    pub fn cut_links(&self, n: usize) -> Result<BTreeSet<(usize, usize)>, ShapeError> {
        let mut cut = BTreeSet::new();
        for a in 0..n {
            for b in 0..n {
                if a != b && !self.connected(n, a, b)? {
                    cut.insert((a, b));
                }
            }
        }
        Ok(cut)
    }
}

/// What the random nemesis may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomSpec {
    pub seed: u64,
    /// The window it acts in, seconds after the devnet is up.
    pub start_s: f64,
    pub end_s: f64,
    /// Mean gap between the end of one fault and the start of the next (exponential).
    pub mean_interval_s: f64,
    /// Mean fault duration (exponential, at least 1 s, cut at the window's end).
    pub mean_duration_s: f64,
    /// Kinds to draw from: latency, bandwidth, cut, partition-halves, partition-majority,
    /// partition-ring, partition-bridge, isolate, kill, pause, stop, restart.
    pub kinds: Vec<String>,
    /// The most nodes a crash-type fault (kill, pause, stop, isolate) hits at once; the
    /// default is f = (validators - 1) / 3.
    pub max_faulty: usize,
}

/// The kinds the random nemesis knows.
pub const RANDOM_KINDS: &[&str] = &[
    "latency",
    "bandwidth",
    "cut",
    "partition-halves",
    "partition-majority",
    "partition-ring",
    "partition-bridge",
    "isolate",
    "kill",
    "pause",
    "stop",
    "restart",
];

/// One fault the nemesis drew.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drawn {
    pub at_s: f64,
    pub duration_s: f64,
    pub kind: String,
    /// Node indices the fault targets (for `cut` and `latency`, the two ends of one link).
    pub targets: Vec<usize>,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub rate_kbps: u64,
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -u.ln() * mean
}

/// Rounds to milliseconds, so that a schedule prints and compares exactly.
fn ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The schedule of a seeded random nemesis over `n` nodes: one fault at a time, a function of
/// `spec` and `n` only (the same seed gives the same kinds, targets and times).
pub fn random_schedule(spec: &RandomSpec, n: usize) -> Vec<Drawn> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut out = Vec::new();
    if n == 0 || spec.kinds.is_empty() {
        return out;
    }
    let mut now = spec.start_s + exponential(&mut rng, spec.mean_interval_s);
    while now < spec.end_s - 1.0 {
        let duration = exponential(&mut rng, spec.mean_duration_s)
            .max(1.0)
            .min(spec.end_s - now);
        let kind = spec.kinds[rng.gen_range(0..spec.kinds.len())].clone();
        let mut nodes: Vec<usize> = (0..n).collect();
        nodes.shuffle(&mut rng);
        let faulty = rng.gen_range(1..=spec.max_faulty.max(1)).min(n);
        let targets = match kind.as_str() {
            "latency" | "bandwidth" | "cut" if n >= 2 => {
                let mut link = nodes[..2].to_vec();
                link.sort_unstable();
                link
            }
            "kill" | "pause" | "stop" | "restart" | "isolate" => {
                let mut hit = nodes[..faulty].to_vec();
                hit.sort_unstable();
                hit
            }
            _ => Vec::new(),
        };
        let latency_ms = if kind == "latency" {
            rng.gen_range(50..=500)
        } else {
            0
        };
        out.push(Drawn {
            at_s: ms(now),
            duration_s: ms(duration),
            kind,
            targets,
            latency_ms,
            jitter_ms: latency_ms / 10,
            rate_kbps: if out.len() % 2 == 0 { 64 } else { 256 },
        });
        now += duration + exponential(&mut rng, spec.mean_interval_s).max(1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn groups_of(shape: &Shape, n: usize) -> Vec<Vec<usize>> {
        // Connected components under the shape's links, for shapes made of groups.
        let mut seen = vec![false; n];
        let mut out = Vec::new();
        for start in 0..n {
            if seen[start] {
                continue;
            }
            let members: Vec<usize> = (0..n)
                .filter(|&b| shape.connected(n, start, b).unwrap())
                .collect();
            for &m in &members {
                seen[m] = true;
            }
            out.push(members);
        }
        out
    }

    #[test]
    fn shapes_cut_what_they_say() {
        assert_eq!(
            groups_of(&Shape::Halves, 4),
            vec![vec![0, 1], vec![2, 3]],
            "halves of 4 are 2+2"
        );
        assert_eq!(
            groups_of(&Shape::Majority, 4),
            vec![vec![0, 1, 2], vec![3]],
            "majority of 4 keeps 3 (> 2/3)"
        );
        assert_eq!(
            groups_of(&Shape::Majority, 10),
            vec![(0..7).collect::<Vec<_>>(), vec![7, 8, 9]],
            "majority of 10 keeps 7 (f = 3)"
        );
        assert_eq!(
            groups_of(&Shape::Isolate(vec![2]), 4),
            vec![vec![0, 1, 3], vec![2]]
        );
        assert_eq!(
            groups_of(&Shape::Groups(vec![vec![0, 3], vec![1]]), 5),
            vec![vec![0, 3], vec![1], vec![2, 4]],
            "unlisted nodes form one more group"
        );
        let ring = Shape::Ring.cut_links(4).unwrap();
        assert_eq!(
            ring,
            BTreeSet::from([(0, 2), (2, 0), (1, 3), (3, 1)]),
            "a ring of 4 cuts only the diagonals"
        );
        let bridge = Shape::Bridge;
        assert!(bridge.connected(5, 0, 2).unwrap() && bridge.connected(5, 2, 4).unwrap());
        assert!(!bridge.connected(5, 0, 4).unwrap() && !bridge.connected(5, 1, 3).unwrap());
        assert_eq!(
            Shape::Ring.cut_links(3),
            Err(ShapeError::TooFew {
                shape: "ring",
                need: 4,
                have: 3
            })
        );
        assert_eq!(
            Shape::Groups(vec![vec![0], vec![0]]).cut_links(3),
            Err(ShapeError::Twice(0))
        );
        assert_eq!(
            Shape::Isolate(vec![7]).cut_links(4),
            Err(ShapeError::Unknown(7))
        );
    }

    proptest! {
        #[test]
        fn cuts_are_symmetric_and_never_self(n in 2usize..12, pick in 0usize..5) {
            let shape = [Shape::Halves, Shape::Majority, Shape::Isolate(vec![0]), Shape::Ring, Shape::Bridge][pick].clone();
            if let Ok(cut) = shape.cut_links(n) {
                for &(a, b) in &cut {
                    prop_assert!(a != b);
                    prop_assert!(cut.contains(&(b, a)), "{:?} cuts {}->{} but not back", shape, a, b);
                }
            }
        }

        #[test]
        fn majority_side_keeps_a_quorum(n in 4usize..40) {
            let cut = Shape::Majority.cut_links(n).unwrap();
            let majority: Vec<usize> = (0..n).filter(|&a| !cut.contains(&(0, a))).collect();
            prop_assert!(3 * majority.len() > 2 * n, "{} of {} is not > 2/3", majority.len(), n);
        }
    }

    fn spec(seed: u64) -> RandomSpec {
        RandomSpec {
            seed,
            start_s: 5.0,
            end_s: 120.0,
            mean_interval_s: 6.0,
            mean_duration_s: 4.0,
            kinds: RANDOM_KINDS.iter().map(|k| k.to_string()).collect(),
            max_faulty: 1,
        }
    }

    #[test]
    fn random_schedule_is_a_function_of_its_seed() {
        let a = random_schedule(&spec(7), 4);
        let b = random_schedule(&spec(7), 4);
        let c = random_schedule(&spec(8), 4);
        assert!(
            a.len() >= 5,
            "120 s with 6 s gaps draws several faults: {a:?}"
        );
        assert_eq!(a, b, "same seed, same schedule");
        assert_ne!(a, c, "another seed, another schedule");
        let mut end = 0.0;
        for fault in &a {
            assert!(fault.at_s >= end, "faults do not overlap: {a:?}");
            assert!(fault.at_s >= 5.0 && fault.at_s + fault.duration_s <= 120.0 + 1e-9);
            if ["kill", "pause", "stop", "restart", "isolate"].contains(&fault.kind.as_str()) {
                assert_eq!(fault.targets.len(), 1, "at most f = 1 node of 4: {fault:?}");
            }
            end = fault.at_s + fault.duration_s;
        }
    }
}
