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

/// The committed rate of the highest step that held (0 when none did).
pub fn saturation_tps(run: &Run) -> f64 {
    run.steps
        .iter()
        .filter(|step| step.held())
        .map(|step| step.report.committed_tps.min(step.rate * 1.05))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

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
