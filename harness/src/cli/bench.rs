//! `devnet bench | compare | trend`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::devnet::{start_checked, UpArgs};
use super::{parse_backend, repository_root, runtime};
use anyhow::{bail, Context, Result};
use blyan_harness::backend::Backend;
use blyan_harness::manifest::Manifest;
use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// A suite under bench/suites/ (throughput-4, latency-10, startup-50, startup-100,
    /// validators-100) or a manifest file.
    #[arg(long, default_value = "throughput-4")]
    suite: String,
    /// Directory for results.json (default: bench-results/<suite>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Runs, each on a fresh devnet (compare medians over runs).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// auto, docker or process; overrides the suite.
    #[arg(long)]
    backend: Option<String>,
    /// Seconds per load step (overrides the suite's duration_s).
    #[arg(long)]
    duration: Option<f64>,
    /// Devnet-only slowdown: every node sleeps this many milliseconds in each commit (to check
    /// that `devnet compare` catches a regression; 0: none).
    #[arg(long, value_name = "MS")]
    commit_delay_ms: Option<u64>,
    /// Also write the results, without raw samples, to baselines/<suite>.json in the repository
    /// (the file `devnet compare` judges later runs against).
    #[arg(long)]
    save_baseline: bool,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
}

fn suite_path(suite: &str) -> Result<PathBuf> {
    let file = Path::new(suite);
    if file.is_file() {
        return Ok(file.to_path_buf());
    }
    let dir = repository_root()
        .map(|root| root.join("bench").join("suites"))
        .context("--suite: not a file, and the repository's bench/suites/ is not here")?;
    let path = dir.join(format!("{suite}.toml"));
    if !path.is_file() {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| {
                        entry
                            .file_name()
                            .to_string_lossy()
                            .strip_suffix(".toml")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        bail!(
            "--suite: no suite {suite:?}; the suites are {}",
            names.join(", ")
        );
    }
    Ok(path)
}

/// CPU ticks of every node process of a process devnet (none for containers).
fn process_ticks(state: &DevnetState) -> Vec<u64> {
    state
        .nodes
        .iter()
        .filter_map(|node| node.pid)
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name (which may hold spaces): utime is the 12th.
                    let rest = stat.rsplit_once(')')?.1;
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some(
                        fields.get(11)?.parse::<u64>().ok()?
                            + fields.get(12)?.parse::<u64>().ok()?,
                    )
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Waits (at most `limit`) until no node holds pending transactions, so that a load step does
/// not start behind the previous one's backlog.
fn wait_for_empty_mempools(state: &DevnetState, limit: Duration) {
    let client = process::http_client();
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let pending: u64 = process::node_statuses(&client, state, &all)
            .into_iter()
            .map(|status| status.and_then(|s| s["mempool_txs"].as_u64()).unwrap_or(0))
            .sum();
        if pending == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("note: mempools still hold transactions after {limit:?}; starting the step anyway");
}

/// The suite's manifest with the flags applied, its name, its load steps (tx/s) and the
/// seconds of each step.
pub(crate) fn load_suite(
    suite: &str,
    backend: Option<&str>,
    commit_delay_ms: Option<u64>,
    duration: Option<f64>,
) -> Result<(Manifest, String, Vec<f64>, f64)> {
    let path = suite_path(suite)?;
    let mut manifest = Manifest::load(&path)?;
    let suite = manifest.name.clone();
    manifest.name = format!("bench-{suite}");
    if let Some(backend) = backend {
        manifest.backend = parse_backend(backend)?;
    }
    if let Some(ms) = commit_delay_ms {
        manifest.consensus.commit_delay_ms = i64::try_from(ms).unwrap_or(i64::MAX);
    }
    manifest
        .validate(&path.display().to_string())
        .context("--commit-delay-ms or the suite")?;
    let rates: Vec<f64> = if !manifest.load.ramp.is_empty() {
        manifest.load.ramp.iter().map(|rate| *rate as f64).collect()
    } else if manifest.load.rate > 0 {
        vec![manifest.load.rate as f64]
    } else {
        Vec::new()
    };
    let step_seconds = duration.unwrap_or(manifest.duration_s as f64);
    if !rates.is_empty() {
        anyhow::ensure!(
            step_seconds.is_finite() && step_seconds > 0.0 && step_seconds <= 600.0,
            "duration: {step_seconds} s per step; must be in (0, 600] (the suite's duration_s or --duration)"
        );
    }
    Ok((manifest, suite, rates, step_seconds))
}

/// One load step on a running devnet: `rate` tx/s for `seconds`, with the nodes' memory and
/// CPU over the step.
fn load_step(
    backend: &dyn Backend,
    state: &DevnetState,
    accounts: &[blyan_loadgen::Account],
    (rate, seconds): (f64, f64),
    rt: &tokio::runtime::Runtime,
) -> Result<blyan_harness::bench::Step> {
    let targets: Vec<String> = state.nodes.iter().map(|node| node.api.clone()).collect();
    let mut config = blyan_loadgen::LoadConfig::new(
        &state.chain_id,
        targets.clone(),
        rate,
        Duration::from_secs_f64(seconds),
    );
    config.keep_samples = true;
    // About five transactions per request: one-transaction requests to many nodes cost more
    // HTTP than the nodes have CPU. The wait for the tick counts in the latency (from the due
    // time), so never more than 50 ms.
    let tick_ms = (5.0 * targets.len() as f64 * 1000.0 / rate).clamp(10.0, 50.0);
    config.tick = Duration::from_millis(tick_ms as u64);
    let before = process_ticks(state);
    let started = Instant::now();
    let progress = std::sync::Arc::new(blyan_loadgen::Progress::default());
    let report = rt.block_on(blyan_loadgen::run(&config, accounts, progress))?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = process_ticks(state);
    let ticks_per_second = 100.0;
    let memory_mib: Vec<f64> = backend
        .memory(state)
        .into_iter()
        .flatten()
        .map(|bytes| bytes as f64 / 1048576.0)
        .collect();
    let cpu_cores: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (b.saturating_sub(*a)) as f64 / ticks_per_second / elapsed)
        .collect();
    Ok(blyan_harness::bench::Step {
        rate,
        report,
        memory_mib,
        cpu_cores,
    })
}

/// Every load step of one run, each after the mempools have drained.
pub(crate) fn run_steps(
    backend: &dyn Backend,
    state: &DevnetState,
    base: &Path,
    (run, rates, seconds): (usize, &[f64], f64),
) -> Result<Vec<blyan_harness::bench::Step>> {
    let accounts = blyan_loadgen::read_accounts(
        &blyan_harness::testnet::record::devnet_dir(base, &state.name).join("accounts.json"),
    )?;
    let rt = runtime()?;
    let mut steps = Vec::new();
    for &rate in rates {
        wait_for_empty_mempools(state, Duration::from_secs(70));
        eprintln!("run {run}: {rate:.0} tx/s for {seconds:.0} s");
        let step = load_step(backend, state, &accounts, (rate, seconds), &rt)?;
        let report = &step.report;
        eprintln!(
            "run {run}: {rate:.0} tx/s -> committed {:.0} tx/s, commit p50 {:.1} ms, p99 {:.1} ms",
            report.committed_tps, report.commit.p50_ms, report.commit.p99_ms
        );
        steps.push(step);
    }
    Ok(steps)
}

/// `baselines/<suite>.json`: the results without their raw samples.
fn save_baseline(results: &blyan_harness::bench::Results, suite: &str) -> Result<()> {
    let dir = repository_root()
        .map(|root| root.join("baselines"))
        .context("--save-baseline: the repository's root is not here")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut stripped = results.clone();
    for run in &mut stripped.runs {
        for step in &mut run.steps {
            step.report.submit_samples_us.clear();
            step.report.commit_samples_us.clear();
        }
    }
    let baseline = dir.join(format!("{suite}.json"));
    std::fs::write(&baseline, serde_json::to_string_pretty(&stripped)? + "\n")
        .with_context(|| format!("cannot write {}", baseline.display()))?;
    println!("baseline: {}", baseline.display());
    Ok(())
}

pub fn bench(args: BenchArgs) -> Result<bool> {
    use blyan_harness::bench::{self, Fingerprint, Results, Run};
    anyhow::ensure!(
        (1..=100).contains(&args.runs),
        "--runs: {}; must be between 1 and 100",
        args.runs
    );
    let (manifest, suite, rates, step_seconds) = load_suite(
        &args.suite,
        args.backend.as_deref(),
        args.commit_delay_ms,
        args.duration,
    )?;
    let up_args = UpArgs::for_manifest(&manifest.name, &args.base, args.node_bin.clone(), "warn");
    let out = args.out.clone().unwrap_or_else(|| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        PathBuf::from("bench-results").join(format!("{suite}-{time}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut runs = Vec::with_capacity(args.runs);
    let mut backend = String::new();
    for run in 1..=args.runs {
        let nodes = manifest.resolve().len();
        eprintln!("run {run}/{}: starting {nodes} nodes", args.runs);
        let (devnet_backend, state, first_block) = start_checked(&up_args, &manifest)?;
        backend = state.backend.to_string();
        let steps = run_steps(
            devnet_backend.as_ref(),
            &state,
            &args.base,
            (run, &rates, step_seconds),
        );
        devnet_backend.down(&args.base, &state.name, Duration::from_secs(10))?;
        runs.push(Run {
            time_to_first_block_s: first_block.as_secs_f64(),
            steps: steps?,
        });
    }
    let results = Results {
        suite: suite.clone(),
        nodes: manifest.resolve().len(),
        fingerprint: Fingerprint::here(&backend, repository_root().as_deref()),
        runs,
    };
    let file = out.join("results.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{:<32} PER RUN", "FIGURE");
    for (name, values) in bench::figures(&results) {
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        println!("{name:<32} {}", shown.join("  "));
    }
    println!("results: {}", file.display());
    if args.save_baseline {
        save_baseline(&results, &suite)?;
    }
    Ok(true)
}

#[derive(Args)]
pub struct CompareArgs {
    /// The baseline: a results.json (or a directory holding one), e.g. baselines/<suite>.json.
    baseline: PathBuf,
    /// The results to judge: a results.json or a directory holding one.
    results: PathBuf,
    /// Moves smaller than this share are never a verdict (0.05: 5%).
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// Exit with status 1 when any figure is worse (only when both ran on the same CPU model
    /// and core count, unless --across-machines).
    #[arg(long)]
    fail_on_regression: bool,
    /// Hold verdicts against results from a different machine too (ratios then mix code and
    /// hardware).
    #[arg(long)]
    across_machines: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn read_results(path: &Path) -> Result<blyan_harness::bench::Results> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a bench results file", file.display()))
}

pub fn compare(args: CompareArgs) -> Result<bool> {
    use blyan_harness::bench::{self, Verdict};
    anyhow::ensure!(
        args.threshold.is_finite() && (0.0..1.0).contains(&args.threshold),
        "--threshold: {}; must be in [0, 1)",
        args.threshold
    );
    let baseline = read_results(&args.baseline)?;
    let now = read_results(&args.results)?;
    if baseline.suite != now.suite {
        eprintln!(
            "note: comparing suite {:?} with suite {:?}",
            baseline.suite, now.suite
        );
    }
    let other_machine = baseline.fingerprint.cpu_model != now.fingerprint.cpu_model
        || baseline.fingerprint.cores != now.fingerprint.cores;
    if other_machine {
        eprintln!(
            "note: different machines ({} x{} vs {} x{}); ratios mix code and hardware",
            baseline.fingerprint.cpu_model,
            baseline.fingerprint.cores,
            now.fingerprint.cpu_model,
            now.fingerprint.cores
        );
    }
    let list = bench::compare(&baseline, &now, args.threshold);
    let worse = list.iter().filter(|c| c.verdict == Verdict::Worse).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<32} {:>12} {:>12} {:>7} {:>17}  VERDICT",
            "FIGURE", "BASELINE", "NOW", "RATIO", "95% CI"
        );
        for c in &list {
            println!(
                "{:<32} {:>12.2} {:>12.2} {:>7.3} {:>8.3}..{:<7.3}  {:?}",
                c.figure, c.baseline, c.now, c.ratio, c.low, c.high, c.verdict
            );
        }
        let count = |verdict: Verdict| list.iter().filter(|c| c.verdict == verdict).count();
        println!(
            "{} runs against {} baseline runs; {worse} worse, {} better, {} same, {} inconclusive, threshold {:.0}%",
            now.runs.len(),
            baseline.runs.len(),
            count(Verdict::Better),
            count(Verdict::Same),
            count(Verdict::Inconclusive),
            args.threshold * 100.0
        );
    }
    if other_machine && !args.across_machines && worse > 0 {
        eprintln!(
            "note: {worse} worse, not held against this run: the baseline is from another machine (--across-machines to judge anyway)"
        );
        return Ok(true);
    }
    Ok(!(args.fail_on_regression && worse > 0))
}

#[derive(Args)]
pub struct TrendArgs {
    /// A directory of past results: every results.json (or other bench JSON) up to four levels
    /// down, e.g. the nightly artifacts unpacked side by side, or bench-results/.
    dir: PathBuf,
    /// Only figures whose name contains this (e.g. commit_p50).
    #[arg(long)]
    figure: Option<String>,
    /// Significance level of the permutation test for a change point.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Write an SVG plot of each figure's history into this directory.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn trend(args: TrendArgs) -> Result<bool> {
    use blyan_harness::trend;
    anyhow::ensure!(
        args.alpha.is_finite() && args.alpha > 0.0 && args.alpha < 1.0,
        "--alpha: {}; must be in (0, 1)",
        args.alpha
    );
    let trend::Loaded { found, skipped } = trend::load_dir(&args.dir)?;
    for reason in &skipped {
        eprintln!("skipped (not bench results): {reason}");
    }
    let mut all = trend::series(&found, args.alpha);
    if let Some(filter) = &args.figure {
        all.retain(|series| series.figure.contains(filter.as_str()));
        anyhow::ensure!(!all.is_empty(), "--figure: no figure contains {filter:?}");
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for series in &all {
            trend::plot(series, &dir.join(trend::plot_file_name(series)))?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(true);
    }
    println!(
        "{:<14} {:<32} {:>6} {:>12}  CHANGE POINTS",
        "SUITE", "FIGURE", "POINTS", "LATEST"
    );
    for series in &all {
        let latest = series.points.last().map_or(f64::NAN, |point| point.value);
        let changes: Vec<String> = series
            .changes
            .iter()
            .map(|change| {
                let commit = &series.points[change.index].git_commit;
                let short = commit.get(..8).unwrap_or(commit);
                format!(
                    "at #{} ({short}): {:.2} -> {:.2} ({:+.1}%, p={:.3})",
                    change.index,
                    change.before,
                    change.after,
                    (change.after / change.before - 1.0) * 100.0,
                    change.p_value
                )
            })
            .collect();
        println!(
            "{:<14} {:<32} {:>6} {:>12.2}  {}",
            series.suite,
            series.figure,
            series.points.len(),
            latest,
            if changes.is_empty() {
                "none".to_string()
            } else {
                changes.join("; ")
            }
        );
    }
    let changed = all
        .iter()
        .filter(|series| !series.changes.is_empty())
        .count();
    println!(
        "{} results, {} series, {changed} with change points (alpha {})",
        found.len(),
        all.len(),
        args.alpha
    );
    if let Some(dir) = &args.plot {
        println!("plots: {}", dir.display());
    }
    Ok(true)
}
