//! `devnet run | check`.

use std::path::{Path, PathBuf};

use super::parse_backend;
use anyhow::{Context, Result};
use blyan_harness::backend::UpSettings;
use blyan_harness::process;
use clap::Args;

#[derive(Args)]
pub struct RunArgs {
    /// The scenario: a manifest with nodes, [[faults]], optional [load] and [checks].
    #[arg(value_name = "MANIFEST", required_unless_present_any = ["manifest", "replay"])]
    manifest_path: Option<PathBuf>,
    /// The manifest, as an option (same as the positional MANIFEST).
    #[arg(long, value_name = "FILE", conflicts_with = "manifest_path")]
    manifest: Option<PathBuf>,
    /// Replay a recorded run: its manifest, seeds and backend (run.json), every fault at the
    /// time it came into force there (timeline.json), for its planned duration. Real nodes are not
    /// deterministic: the faults repeat, the blocks need not.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["manifest_path", "manifest", "seed", "old_build", "old_bin"])]
    replay: Option<PathBuf>,
    /// Seed of every `kind = "random"` fault (replaces the manifest's): the same seed replays
    /// the same schedule (kinds, targets and times in timeline.json).
    #[arg(long)]
    seed: Option<u64>,
    /// Process backend: first API port (node i on BASE + i).
    #[arg(long, default_value_t = 27000)]
    api_port_base: u16,
    /// Process backend: first P2P port (node i on BASE + i; link proxies from BASE + 200).
    #[arg(long, default_value_t = 28000)]
    p2p_port_base: u16,
    /// The run directory (default: runs/<name>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seconds to record (overrides the manifest's duration_s; at most 3600).
    #[arg(long)]
    duration: Option<u64>,
    /// Milliseconds between polls of every node.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// auto, docker, process or swarm; overrides the manifest.
    #[arg(long)]
    backend: Option<String>,
    /// Leave the devnet running afterwards.
    #[arg(long)]
    keep: bool,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// A rolling upgrade under the manifest's faults and load (process or Docker backend): half the
    /// validators start from the build of this git ref (built once, as `devnet ab` does, into
    /// target/ab/<commit>/), and each is upgraded in turn to the node binary, its home kept,
    /// over the middle half of the run. E.g. `--old-build $(git merge-base HEAD main)`.
    #[arg(long, value_name = "REF", conflicts_with = "old_bin")]
    old_build: Option<String>,
    /// As --old-build, from a binary already built.
    #[arg(long, value_name = "PATH")]
    old_bin: Option<PathBuf>,
}

/// Starts the manifest's devnet, records it while the faults and the load run, stops it, and
/// checks and reports the recorded history (`blyan_harness::run`).
pub fn run(args: RunArgs) -> Result<bool> {
    use blyan_harness::run::{self, RunOptions};
    let replay = match &args.replay {
        Some(dir) => Some(Replay::read(dir, args.out.clone())?),
        None => None,
    };
    let manifest_path = match &replay {
        Some(replay) => replay.manifest_path.clone(),
        None => args
            .manifest_path
            .clone()
            .or(args.manifest.clone())
            .context("give the manifest: devnet run MANIFEST")?,
    };
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(process::default_node_bin);
    let mut settings = UpSettings::new(&args.base, node_bin);
    settings.api_port_base = args.api_port_base;
    settings.p2p_port_base = args.p2p_port_base;
    let old_build = match (&args.old_build, &args.old_bin) {
        (Some(reference), _) => Some(super::ab::build_ref(reference)?),
        (None, old_bin) => old_bin.clone(),
    };
    let backend = match (&args.backend, &replay) {
        (Some(text), _) => Some(parse_backend(text)?),
        (None, Some(replay)) => Some(parse_backend(&replay.info.backend)?),
        (None, None) => None,
    };
    let options = RunOptions {
        old_build,
        manifest_path,
        seed: replay.as_ref().map_or(args.seed, |r| r.info.fault_seed),
        out: replay
            .as_ref()
            .map_or(args.out.clone(), |r| Some(r.out.clone())),
        duration_s: args.duration,
        poll_ms: args.poll_ms,
        backend,
        keep: args.keep,
        settings,
        replay: replay.map(|r| r.timeline),
    };
    let outcome = run::run(&options, &|line| eprintln!("{line}"))?;
    print_results(&outcome.dir, &outcome.results);
    Ok(outcome.results.passed)
}

/// What `--replay RUN_DIR` takes from a recorded run; its manifest is written into the new
/// run's directory, which `devnet run` reads as any manifest.
struct Replay {
    info: blyan_harness::history::RunInfo,
    timeline: Vec<blyan_harness::timeline::Entry>,
    manifest_path: PathBuf,
    out: PathBuf,
}

impl Replay {
    fn read(dir: &Path, out: Option<PathBuf>) -> Result<Replay> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--replay: {} is not a recorded run", path.display()))?;
        let info: blyan_harness::history::RunInfo =
            serde_json::from_str(&text).with_context(|| format!("--replay: {}", path.display()))?;
        let timeline = blyan_harness::timeline::read(dir)
            .with_context(|| format!("--replay: {}/timeline.json", dir.display()))?;
        let out = out.unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from("runs").join(format!("{}-replay-{now}", info.name))
        });
        if out.join("run.json").exists() {
            anyhow::bail!(
                "{} already holds a run; choose another --out",
                out.display()
            );
        }
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let manifest_path = out.join("replayed-manifest.toml");
        std::fs::write(&manifest_path, &info.manifest)
            .with_context(|| format!("cannot write {}", manifest_path.display()))?;
        eprintln!(
            "replaying {} ({} faults, recorded on {} at commit {})",
            dir.display(),
            timeline.len(),
            info.backend,
            info.git_commit
        );
        Ok(Replay {
            info,
            timeline,
            manifest_path,
            out,
        })
    }
}

#[derive(Args)]
pub struct CheckArgs {
    /// A run directory recorded by `devnet run` (run.json, nodes/*.jsonl, timeline.jsonl).
    dir: PathBuf,
}

/// Checks a recorded run again, offline, and rewrites its report.
pub fn check(args: CheckArgs) -> Result<bool> {
    let history = blyan_harness::history::History::load(&args.dir)?;
    let results = blyan_harness::report::write(&args.dir, &history)?;
    print_results(&args.dir, &results);
    Ok(results.passed)
}

fn print_results(dir: &Path, results: &blyan_harness::report::RunResults) {
    use blyan_harness::checks::Verdict;
    println!("{:<22} {:<8} DETAIL", "CHECK", "VERDICT");
    for check in &results.checks {
        let verdict = match check.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skipped",
        };
        println!("{:<22} {:<8} {}", check.name, verdict, check.detail);
    }
    for warning in &results.warnings {
        println!("warning: {warning}");
    }
    println!(
        "{}: highest height {}, block interval p50 {:.1} ms",
        if results.passed { "passed" } else { "FAILED" },
        results.figures.max_height,
        results.figures.block_interval_p50_ms
    );
    println!("report: {}", dir.join("report.html").display());
}
