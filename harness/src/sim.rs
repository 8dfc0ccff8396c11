//! `devnet sim`: runs many seeded consensus scenarios in the deterministic simulator and
//! summarises safety, liveness and evidence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use blyan_node::consensus::sim::{self, Outcome, SimConfig};
use serde::Serialize;

/// One failing scenario and how to replay it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    pub kind: &'static str,
    pub detail: String,
    pub replay: String,
}

/// What a batch found.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub validators: usize,
    pub byzantine: usize,
    pub heights: u64,
    pub scenarios: u64,
    pub safety_violations: u64,
    pub liveness_failures: u64,
    pub evidence_missed: u64,
    pub equivocations: u64,
    pub refused_signatures: u64,
    pub p50_rounds_per_height: u32,
    pub p99_rounds_per_height: u32,
    pub max_rounds_per_height: u32,
    pub wall_seconds: f64,
    pub scenarios_per_second: f64,
    pub failures: Vec<Failure>,
}

impl Summary {
    pub fn is_ok(&self) -> bool {
        self.safety_violations == 0 && self.liveness_failures == 0 && self.evidence_missed == 0
    }
}

/// Runs seeds `first_seed .. first_seed + scenarios` on `threads` threads; `progress` is called
/// with the number of finished scenarios.
pub fn run_batch(
    config: &SimConfig,
    first_seed: u64,
    scenarios: u64,
    threads: usize,
    replay_flags: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(scenarios as usize));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= scenarios {
                    return;
                }
                let outcome = sim::run(config, first_seed + index);
                outcomes
                    .lock()
                    .expect("no panics while holding")
                    .push(outcome);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("threads joined");
    outcomes.sort_by_key(|outcome| outcome.seed);
    summarise(
        config,
        &outcomes,
        started.elapsed().as_secs_f64(),
        replay_flags,
    )
}

fn percentile(sorted: &[u32], quantile: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index]
}

fn summarise(
    config: &SimConfig,
    outcomes: &[Outcome],
    wall_seconds: f64,
    replay_flags: &str,
) -> Summary {
    let mut rounds: Vec<u32> = outcomes
        .iter()
        .flat_map(|outcome| outcome.rounds_per_height.iter().copied())
        .collect();
    rounds.sort_unstable();
    let replay = |seed: u64| {
        format!(
            "devnet sim --validators {} --byzantine {} --heights {} --seeds 1 --seed-start {seed}{replay_flags}",
            config.validators, config.byzantine, config.heights
        )
    };
    let mut failures = Vec::new();
    for outcome in outcomes {
        let mut push = |kind: &'static str, detail: String| {
            failures.push(Failure {
                seed: outcome.seed,
                kind,
                detail,
                replay: replay(outcome.seed),
            })
        };
        if let Some(detail) = &outcome.safety_violation {
            push("safety", detail.clone());
        }
        if let Some(detail) = &outcome.liveness_failure {
            push("liveness", detail.clone());
        }
        if outcome.evidence_missed > 0 {
            push(
                "evidence",
                format!(
                    "{} of {} equivocations not reported",
                    outcome.evidence_missed, outcome.equivocations
                ),
            );
        }
    }
    let count = |predicate: &dyn Fn(&Outcome) -> bool| {
        outcomes.iter().filter(|o| predicate(o)).count() as u64
    };
    Summary {
        validators: config.validators,
        byzantine: config.byzantine,
        heights: config.heights,
        scenarios: outcomes.len() as u64,
        safety_violations: count(&|o| o.safety_violation.is_some()),
        liveness_failures: count(&|o| o.liveness_failure.is_some()),
        evidence_missed: outcomes.iter().map(|o| o.evidence_missed as u64).sum(),
        equivocations: outcomes.iter().map(|o| o.equivocations as u64).sum(),
        refused_signatures: outcomes.iter().map(|o| o.refused_signatures).sum(),
        p50_rounds_per_height: percentile(&rounds, 0.50),
        p99_rounds_per_height: percentile(&rounds, 0.99),
        max_rounds_per_height: rounds.last().copied().unwrap_or(0),
        wall_seconds,
        scenarios_per_second: outcomes.len() as f64 / wall_seconds.max(1e-9),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counts_violations_and_names_replayable_seeds() {
        let mut config = SimConfig::new(4, 2, 10);
        config.byzantine_kinds = vec![blyan_node::consensus::sim::ByzantineKind::Equivocate];
        config.split_precommits = false;
        let summary = run_batch(&config, 0, 20, 2, "", &|_| {});
        assert_eq!(summary.scenarios, 20);
        assert!(
            summary.safety_violations > 0,
            "two equivocators of four break safety"
        );
        let failure = summary
            .failures
            .iter()
            .find(|f| f.kind == "safety")
            .unwrap();
        assert!(failure
            .replay
            .contains(&format!("--seed-start {}", failure.seed)));
        assert!(!summary.is_ok());
        let again = run_batch(&config, failure.seed, 1, 1, "", &|_| {});
        assert_eq!(
            again.safety_violations, 1,
            "the replay command reproduces the violation"
        );
    }

    #[test]
    fn honest_batch_is_clean() {
        let config = SimConfig::new(4, 1, 10);
        let summary = run_batch(&config, 0, 20, 2, "", &|_| {});
        assert!(summary.is_ok(), "{summary:?}");
        assert!(summary.p50_rounds_per_height >= 1);
    }
}
