//! Benchmark results: what `devnet bench` records for a suite run, with the environment it ran
//! in, so that runs can be compared later.

use std::path::Path;

use blyan_loadgen::Report;
use serde::{Deserialize, Serialize};

/// Where a result came from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Fingerprint {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub git_commit: String,
    pub backend: String,
    pub time_ms: u64,
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

fn command_output(program: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut command = std::process::Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| first_line(&String::from_utf8_lossy(&output.stdout)))
        .unwrap_or_else(|| "unknown".into())
}

impl Fingerprint {
    /// This host, the toolchain and the repository at `repo` (when known).
    pub fn here(backend: &str, repo: Option<&Path>) -> Fingerprint {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Fingerprint {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| first_line(&text))
                .unwrap_or_else(|_| "unknown".into()),
            rustc: command_output("rustc", &["--version"], None),
            git_commit: match repo {
                Some(repo) => command_output("git", &["rev-parse", "HEAD"], Some(repo)),
                None => "unknown".into(),
            },
            backend: backend.into(),
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64),
        }
    }
}

/// One load step of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub report: Report,
    /// Resident memory per node at the end of the step, MiB.
    pub memory_mib: Vec<f64>,
    /// CPU per node during the step, in cores (process backend; empty for Docker).
    pub cpu_cores: Vec<f64>,
}

impl Step {
    /// Held: nearly all sent transactions committed, no refusals beyond 1%, and the committed
    /// rate kept up with the offered one (at least 90%).
    pub fn held(&self) -> bool {
        let report = &self.report;
        let refused: u64 = report.errors.values().sum();
        report.sent > 0
            && report.committed as f64 >= 0.99 * report.sent as f64
            && (refused as f64) <= 0.01 * report.sent as f64
            && report.committed_tps >= 0.9 * self.rate
    }
}

/// One run of a suite: a fresh devnet, its startup, then the load steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// From `devnet up` to height 1 on every node.
    pub time_to_first_block_s: f64,
    pub steps: Vec<Step>,
}

/// Everything `devnet bench` writes to `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub suite: String,
    pub nodes: usize,
    pub fingerprint: Fingerprint,
    pub runs: Vec<Run>,
}

/// The figures of a result, each with one value per run (medians over runs are compared).
pub fn figures(results: &Results) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = vec![(
        "time_to_first_block_s".into(),
        results
            .runs
            .iter()
            .map(|run| run.time_to_first_block_s)
            .collect(),
    )];
    let steps = results.runs.first().map_or(0, |run| run.steps.len());
    for index in 0..steps {
        let rate = results.runs[0].steps[index].rate;
        let per_run = |value: &dyn Fn(&Step) -> f64| -> Vec<f64> {
            results
                .runs
                .iter()
                .filter_map(|run| run.steps.get(index))
                .map(value)
                .collect()
        };
        let prefix = format!("rate_{rate:.0}");
        out.push((
            format!("{prefix}.committed_tps"),
            per_run(&|step| step.report.committed_tps),
        ));
        out.push((
            format!("{prefix}.commit_p50_ms"),
            per_run(&|step| step.report.commit.p50_ms),
        ));
        out.push((
            format!("{prefix}.commit_p90_ms"),
            per_run(&|step| step.report.commit.p90_ms),
        ));
        out.push((
            format!("{prefix}.commit_p99_ms"),
            per_run(&|step| step.report.commit.p99_ms),
        ));
        out.push((
            format!("{prefix}.block_interval_ms"),
            per_run(&|step| step.report.block_interval_ms),
        ));
    }
    out.push((
        "saturation_tps".into(),
        results.runs.iter().map(saturation_tps).collect(),
    ));
    out
}

/// The names [`figures`] gives a suite with these load rates, in its order.
pub fn figure_names(rates: &[f64]) -> Vec<String> {
    let per_step = [
        "committed_tps",
        "commit_p50_ms",
        "commit_p90_ms",
        "commit_p99_ms",
        "block_interval_ms",
    ];
    let mut names = vec!["time_to_first_block_s".to_string()];
    for rate in rates {
        names.extend(
            per_step
                .iter()
                .map(|figure| format!("rate_{rate:.0}.{figure}")),
        );
    }
    names.push("saturation_tps".into());
    names
}

/// The rates of the steps that held in more than half of the runs.
pub fn held_rates(results: &Results) -> Vec<f64> {
    let steps = results.runs.first().map_or(0, |run| run.steps.len());
    (0..steps)
        .filter_map(|index| {
            let rate = results.runs[0].steps[index].rate;
            let held = results
                .runs
                .iter()
                .filter(|run| run.steps.get(index).is_some_and(Step::held))
                .count();
            (2 * held > results.runs.len()).then_some(rate)
        })
        .collect()
}

/// The committed rate of the highest step that held (0 when none did).
pub fn saturation_tps(run: &Run) -> f64 {
    run.steps
        .iter()
        .filter(|step| step.held())
        .map(|step| step.report.committed_tps.min(step.rate * 1.05))
        .fold(0.0, f64::max)
}

/// Which way a figure should move.
fn lower_is_better(name: &str) -> bool {
    !name.ends_with("tps")
}

/// The verdict on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Better,
    Same,
    Worse,
    /// Fewer than [`MIN_RUNS`] runs on a side (a bootstrap over one or two runs says nothing),
    /// or an interval that reaches past the threshold without lying beyond it.
    Inconclusive,
    /// A load step the baseline did not hold in most of its runs: past saturation, latency is
    /// the length of a growing queue and says nothing about the code; `saturation_tps` judges
    /// the throughput instead.
    Saturated,
}

/// Runs needed on each side for a verdict.
pub const MIN_RUNS: usize = 3;

/// One figure compared: medians over runs, their ratio (now / baseline) and a bootstrap 95%
/// confidence interval of that ratio.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub figure: String,
    pub baseline: f64,
    pub now: f64,
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    pub verdict: Verdict,
}

/// The median (sorts `values` in place); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The verdict on a ratio (new / old) whose confidence interval is `low..high`: *worse* or
/// *better* only when the whole interval lies beyond `1 +- threshold` on that side, *same* only
/// when it lies wholly within, *inconclusive* when it reaches past the threshold without lying
/// beyond it (the runs cannot tell a change of that size from noise).
pub fn judge(figure: &str, (low, high): (f64, f64), threshold: f64) -> Verdict {
    let (worse, better) = if lower_is_better(figure) {
        (low > 1.0 + threshold, high < 1.0 - threshold)
    } else {
        (high < 1.0 - threshold, low > 1.0 + threshold)
    };
    if worse {
        Verdict::Worse
    } else if better {
        Verdict::Better
    } else if low >= 1.0 - threshold && high <= 1.0 + threshold {
        Verdict::Same
    } else {
        Verdict::Inconclusive
    }
}

/// `new / old`, 1 for 0 / 0.
fn ratio_of(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        if new == 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        new / old
    }
}

/// Compares two builds run in pairs on the same machine (`devnet ab`): run `i` of `base` and
/// run `i` of `head` ran back to back. Each figure's statistic is the median over pairs of the
/// pair's ratio (head / base), its 95% interval a percentile bootstrap over pairs (resampled
/// with replacement, 2,000 times, fixed seed); verdicts as [`judge`], *inconclusive* with fewer
/// than [`MIN_RUNS`] pairs. Pairing cancels what drifts on a shared machine between pairs
/// (other jobs, thermal state): a pair's two runs share it. A pair whose base measured 0 and
/// head did not has no finite ratio and is left out (a 2 s run on a loaded machine can measure
/// 0; an infinite ratio would be `null` in ab.json); a figure with no pair left is not judged.
pub fn compare_paired(base: &Results, head: &Results, threshold: f64) -> Vec<Comparison> {
    use rand::{Rng, SeedableRng};
    let before: std::collections::HashMap<String, Vec<f64>> = figures(base).into_iter().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut out = Vec::new();
    for (name, after) in figures(head) {
        let Some(before) = before.get(&name) else {
            continue;
        };
        let ratios: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(old, new)| ratio_of(*old, *new))
            .filter(|ratio| ratio.is_finite())
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let mut medians: Vec<f64> = (0..2000)
            .map(|_| {
                let mut pick: Vec<f64> = (0..ratios.len())
                    .map(|_| ratios[rng.gen_range(0..ratios.len())])
                    .collect();
                median(&mut pick)
            })
            .collect();
        medians.sort_by(f64::total_cmp);
        let low = medians[(medians.len() as f64 * 0.025) as usize];
        let high = medians[((medians.len() as f64 * 0.975) as usize).min(medians.len() - 1)];
        let verdict = if ratios.len() < MIN_RUNS {
            Verdict::Inconclusive
        } else {
            judge(&name, (low, high), threshold)
        };
        out.push(Comparison {
            baseline: median(&mut before.clone()),
            now: median(&mut after.clone()),
            ratio: median(&mut ratios.clone()),
            low,
            high,
            verdict,
            figure: name,
        });
    }
    out
}

/// Compares two result sets figure by figure.
///
/// The method, for a noisy shared machine: each figure has one value per run; the statistic is
/// the ratio of the medians (now / baseline); its 95% confidence interval comes from a
/// percentile bootstrap (runs resampled with replacement on both sides, 2,000 times, fixed
/// seed). A figure is *worse* only when the whole interval lies beyond `1 + threshold` in the
/// bad direction (above for latencies and times, below `1 - threshold` for rates), *better*
/// when it lies beyond in the good direction, *same* only when it lies wholly within
/// `1 +- threshold`, and *inconclusive* otherwise (the runs cannot tell a change of that size
/// from noise) and with fewer than [`MIN_RUNS`] runs on a side. Figures of a load step that the
/// baseline did not hold in most runs are *saturated*, not judged (see [`Verdict::Saturated`]).
pub fn compare(baseline: &Results, now: &Results, threshold: f64) -> Vec<Comparison> {
    use rand::{Rng, SeedableRng};
    let before: std::collections::HashMap<String, Vec<f64>> =
        figures(baseline).into_iter().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let held = held_rates(baseline);
    let saturated = |name: &str| {
        name.strip_prefix("rate_")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(rate, _)| rate.parse::<f64>().ok())
            .is_some_and(|rate| !held.iter().any(|h| (h - rate).abs() < 0.5))
    };
    let mut out = Vec::new();
    for (name, values) in figures(now) {
        let Some(base) = before.get(&name) else {
            continue;
        };
        if base.is_empty() || values.is_empty() {
            continue;
        }
        let b = median(&mut base.clone());
        let n = median(&mut values.clone());
        let mut ratios: Vec<f64> = (0..2000)
            .map(|_| {
                let mut resample = |from: &[f64]| -> f64 {
                    let mut pick: Vec<f64> = (0..from.len())
                        .map(|_| from[rng.gen_range(0..from.len())])
                        .collect();
                    median(&mut pick)
                };
                let rb = resample(base);
                let rn = resample(&values);
                ratio_of(rb, rn)
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let low = ratios[(ratios.len() as f64 * 0.025) as usize];
        let high = ratios[((ratios.len() as f64 * 0.975) as usize).min(ratios.len() - 1)];
        let saturated = saturated(&name);
        let enough = base.len() >= MIN_RUNS && values.len() >= MIN_RUNS;
        out.push(Comparison {
            figure: name.clone(),
            baseline: b,
            now: n,
            ratio: ratio_of(b, n),
            low,
            high,
            verdict: if saturated {
                Verdict::Saturated
            } else if !enough {
                Verdict::Inconclusive
            } else {
                judge(&name, (low, high), threshold)
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_names_are_the_names_figures_gives() {
        let results = results_with(&[(1.0, 10.0), (1.0, 11.0)]);
        let names: Vec<String> = figures(&results)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(figure_names(&[100.0]), names);
    }

    /// Results whose runs have these times to first block and commit p50s (one step at 100).
    fn results_with(values: &[(f64, f64)]) -> Results {
        Results {
            suite: "t".into(),
            nodes: 4,
            fingerprint: Fingerprint::default(),
            runs: values
                .iter()
                .map(|(first, p50)| {
                    let mut s = step(100.0, 1_000, 1_000, 0);
                    s.report.commit.p50_ms = *p50;
                    s.report.committed_tps = 100.0;
                    Run {
                        time_to_first_block_s: *first,
                        steps: vec![s],
                    }
                })
                .collect(),
        }
    }

    fn verdict(list: &[Comparison], figure: &str) -> Verdict {
        list.iter()
            .find(|c| c.figure == figure)
            .unwrap_or_else(|| panic!("no {figure}"))
            .verdict
    }

    /// `values` times `factor`, one run each (commit p50 at 100 tx/s; start-up 3 s).
    fn scaled(values: &[f64], factor: f64) -> Results {
        let runs: Vec<(f64, f64)> = values.iter().map(|v| (3.0, v * factor)).collect();
        results_with(&runs)
    }

    #[test]
    fn an_interval_wider_than_the_threshold_is_inconclusive_not_same() {
        // baselines/throughput-4.json's commit p50 at 1,000 tx/s (three runs), and a copy made
        // 50 % slower: the interval (about 1.0..2.2) neither excludes nor rules out a 5 %
        // change, so the figure is not "same".
        let base = [68.4, 88.8, 101.4];
        let judged = compare(&scaled(&base, 1.0), &scaled(&base, 1.5), 0.05);
        let c = judged
            .iter()
            .find(|c| c.figure == "rate_100.commit_p50_ms")
            .unwrap();
        assert!(c.low < 1.05 && c.high > 1.05, "{c:?}");
        assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
    }

    #[test]
    fn a_fifty_percent_slowdown_is_worse_and_an_exact_copy_is_the_same() {
        // Five quiet runs: +-1.5 % around 100 ms.
        let base = [100.0, 101.5, 98.5, 100.8, 99.2];
        let slower = compare(&scaled(&base, 1.0), &scaled(&base, 1.5), 0.05);
        assert_eq!(
            verdict(&slower, "rate_100.commit_p50_ms"),
            Verdict::Worse,
            "{slower:?}"
        );
        let copy = compare(&scaled(&base, 1.0), &scaled(&base, 1.0), 0.05);
        let c = copy
            .iter()
            .find(|c| c.figure == "rate_100.commit_p50_ms")
            .unwrap();
        assert!(c.low >= 0.95 && c.high <= 1.05, "{c:?}");
        assert_eq!(c.verdict, Verdict::Same, "{c:?}");
    }

    #[test]
    fn a_pair_whose_base_measured_zero_is_left_out_so_every_ratio_is_finite() {
        let base = results_with(&[(3.0, 0.0), (3.0, 100.0)]);
        let head = results_with(&[(3.0, 50.0), (3.0, 110.0)]);
        let judged = compare_paired(&base, &head, 0.05);
        let c = judged
            .iter()
            .find(|c| c.figure == "rate_100.commit_p50_ms")
            .unwrap();
        assert!((c.ratio - 1.1).abs() < 1e-9, "{c:?}");
        assert!(judged.iter().all(|c| c.ratio.is_finite()), "{judged:?}");
    }

    #[test]
    fn pairs_see_a_ten_percent_slowdown_through_noise_that_hides_it_from_unpaired_runs() {
        // The machine drifts +-20 % from pair to pair; within a pair the head is 10 % slower
        // (+-1 %), as when both builds run back to back.
        let drift = [100.0, 120.0, 90.0, 130.0, 110.0];
        let wobble = [1.0, 1.01, 0.99, 1.005, 0.995];
        let head: Vec<f64> = drift.iter().zip(wobble).map(|(d, w)| d * 1.1 * w).collect();
        let base = scaled(&drift, 1.0);
        let slower = results_with(&head.iter().map(|v| (3.0, *v)).collect::<Vec<_>>());
        let figure = "rate_100.commit_p50_ms";
        assert_eq!(
            verdict(&compare(&base, &slower, 0.05), figure),
            Verdict::Inconclusive
        );
        let paired = compare_paired(&base, &slower, 0.05);
        assert_eq!(verdict(&paired, figure), Verdict::Worse, "{paired:?}");
        // The same build in pairs: the same.
        let same = compare_paired(&base, &scaled(&drift, 1.0), 0.05);
        assert_eq!(verdict(&same, figure), Verdict::Same, "{same:?}");
        // Two pairs say nothing.
        let two = compare_paired(&scaled(&drift[..2], 1.0), &scaled(&drift[..2], 1.5), 0.05);
        assert_eq!(verdict(&two, figure), Verdict::Inconclusive);
    }

    #[test]
    fn a_clear_slowdown_is_worse_and_noise_is_never_worse() {
        let base = results_with(&[
            (3.0, 20.0),
            (3.2, 21.0),
            (2.9, 19.5),
            (3.1, 20.5),
            (3.0, 20.2),
        ]);
        // Same build, other noise.
        let again = results_with(&[
            (3.1, 20.4),
            (2.8, 19.8),
            (3.3, 21.2),
            (3.0, 20.1),
            (2.9, 20.6),
        ]);
        // Five runs of up to 7 % noise: nothing is worse or better at 5 % (the intervals reach
        // past it: inconclusive); at 15 % every figure is the same.
        let noise = compare(&base, &again, 0.05);
        let moved = |c: &Comparison| matches!(c.verdict, Verdict::Worse | Verdict::Better);
        assert!(!noise.iter().any(moved), "{noise:?}");
        let same = compare(&base, &again, 0.15);
        assert!(same.iter().all(|c| c.verdict == Verdict::Same), "{same:?}");
        // Commit latency 30% up, start-up unchanged.
        let slow = results_with(&[
            (3.0, 26.0),
            (3.1, 27.1),
            (2.9, 25.8),
            (3.2, 26.9),
            (3.0, 26.3),
        ]);
        let judged = compare(&base, &slow, 0.05);
        assert_eq!(
            verdict(&judged, "rate_100.commit_p50_ms"),
            Verdict::Worse,
            "{judged:?}"
        );
        assert_ne!(verdict(&judged, "time_to_first_block_s"), Verdict::Worse);
        // And back: faster is better.
        let judged = compare(&slow, &base, 0.05);
        assert_eq!(verdict(&judged, "rate_100.commit_p50_ms"), Verdict::Better);
        // One run a side: no verdict, however large the move.
        let judged = compare(
            &results_with(&[(3.0, 20.0)]),
            &results_with(&[(3.0, 40.0)]),
            0.05,
        );
        assert_eq!(
            verdict(&judged, "rate_100.commit_p50_ms"),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn steps_past_the_baselines_saturation_are_not_judged() {
        let mut base = results_with(&[(3.0, 20.0), (3.1, 21.0), (2.9, 19.0)]);
        let mut now = results_with(&[(3.0, 20.0), (3.1, 21.0), (2.9, 19.0)]);
        for run in base.runs.iter_mut().chain(now.runs.iter_mut()) {
            // A second step at 1000 tx/s that committed only half: saturated.
            let mut over = step(1000.0, 10_000, 5_000, 0);
            over.report.commit.p50_ms = 900.0;
            run.steps.push(over);
        }
        for run in now.runs.iter_mut() {
            run.steps[1].report.commit.p50_ms = 3000.0;
        }
        assert_eq!(held_rates(&base), vec![100.0]);
        let list = compare(&base, &now, 0.05);
        assert_eq!(
            verdict(&list, "rate_1000.commit_p50_ms"),
            Verdict::Saturated
        );
        // Three runs of +-5 % noise cannot rule out a 5 % change: judged, but not "same".
        assert_eq!(
            verdict(&list, "rate_100.commit_p50_ms"),
            Verdict::Inconclusive
        );
        // Where the baseline held and now does not, the latency is judged (and is worse).
        for run in now.runs.iter_mut() {
            run.steps[0].report.commit.p50_ms = 200.0;
        }
        let list = compare(&base, &now, 0.05);
        assert_eq!(verdict(&list, "rate_100.commit_p50_ms"), Verdict::Worse);
    }

    #[test]
    fn lower_rates_are_worse_for_throughput() {
        assert!(!lower_is_better("saturation_tps"));
        assert!(lower_is_better("rate_100.commit_p99_ms"));
    }

    fn step(rate: f64, sent: u64, committed: u64, refused: u64) -> Step {
        let mut report = Report {
            sent,
            committed,
            committed_tps: committed as f64 / 10.0,
            ..Report::default()
        };
        if refused > 0 {
            report.errors.insert("mempool_full".into(), refused);
        }
        Step {
            rate,
            report,
            memory_mib: vec![],
            cpu_cores: vec![],
        }
    }

    #[test]
    fn saturation_is_the_highest_step_that_held() {
        let run = Run {
            time_to_first_block_s: 1.0,
            steps: vec![
                step(100.0, 1_000, 1_000, 0),
                step(200.0, 2_000, 1_990, 0),
                step(400.0, 4_000, 3_000, 500),
                // Everything committed, but at half the offered rate: a backlog, not held.
                step(800.0, 4_000, 4_000, 0),
            ],
        };
        assert!(run.steps[1].held() && !run.steps[2].held() && !run.steps[3].held());
        assert_eq!(saturation_tps(&run), 199.0);
        let results = Results {
            suite: "t".into(),
            nodes: 4,
            fingerprint: Fingerprint::default(),
            runs: vec![run.clone(), run],
        };
        let figures = figures(&results);
        let names: Vec<&str> = figures.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.contains(&"rate_200.commit_p99_ms"), "{names:?}");
        assert!(figures.iter().all(|(_, values)| values.len() == 2));
    }

    #[test]
    fn the_fingerprint_names_this_host() {
        let here = Fingerprint::here("process", None);
        assert!(here.cores >= 1);
        assert_ne!(here.kernel, "");
        assert_eq!(here.git_commit, "unknown");
    }
}
