//! `devnet ab`: two node builds run in interleaved pairs on this machine and judged pair by
//! pair (`bench::compare_paired`), the comparison a shared machine can make.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blyan_harness::bench::{self, Comparison, Fingerprint, Results, Run, Verdict};
use clap::Args;
use serde::Serialize;

use super::bench::{load_suite, run_steps};
use super::devnet::{start_checked, UpArgs};
use super::repository_root;

#[derive(Args)]
pub struct AbArgs {
    /// The base build: a git ref of this repository, built once into target/ab/<commit>/.
    #[arg(long, value_name = "REF", required_unless_present = "base_bin")]
    base: Option<String>,
    /// The head build: a git ref, like --base.
    #[arg(long, value_name = "REF", required_unless_present = "head_bin")]
    head: Option<String>,
    /// The base's blyan-node binary, instead of building --base.
    #[arg(long, value_name = "PATH", conflicts_with = "base")]
    base_bin: Option<PathBuf>,
    /// The head's blyan-node binary, instead of building --head.
    #[arg(long, value_name = "PATH", conflicts_with = "head")]
    head_bin: Option<PathBuf>,
    /// A suite under bench/suites/ or a manifest file.
    #[arg(long, default_value = "throughput-4")]
    suite: String,
    /// Pairs of runs (each a fresh devnet per build), in the order A B, B A, A B, ...
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Seconds per load step (overrides the suite's duration_s).
    #[arg(long)]
    duration: Option<f64>,
    /// A change smaller than this (a fraction) counts as the same.
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// auto, docker or process; overrides the suite.
    #[arg(long)]
    backend: Option<String>,
    /// Directory for ab.json (default: bench-results/ab-<suite>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    devnets: PathBuf,
    /// Devnet-only slowdown of the head side: its nodes sleep this long in every commit (to
    /// measure what the comparison detects; 0: none).
    #[arg(long, value_name = "MS")]
    head_commit_delay_ms: Option<u64>,
    /// Exit 1 when any figure is worse.
    #[arg(long)]
    fail_on_regression: bool,
}

/// `ab.json`: both sides' runs (run `i` of each side form pair `i`), who ran first in each
/// pair, and the verdicts.
#[derive(Serialize)]
struct AbResults {
    base: Results,
    head: Results,
    base_first: Vec<bool>,
    threshold: f64,
    comparisons: Vec<Comparison>,
}

/// The blyan-node binary of git ref `reference`: built once with its own target directory
/// under `target/ab/<commit>/` (a git worktree beside it), then reused.
fn build_ref(reference: &str) -> Result<PathBuf> {
    let repo = repository_root()
        .context("building a ref needs the repository this harness was built from")?;
    let git = |args: &[&str]| -> Result<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--verify", &format!("{reference}^{{commit}}")])
        .with_context(|| format!("{reference:?} is not a commit of {}", repo.display()))?;
    let dir = repo.join("target/ab").join(&commit[..12]);
    let binary = dir.join("target/release/blyan-node");
    if binary.is_file() {
        eprintln!(
            "{reference} ({}): {} (built before)",
            &commit[..12],
            binary.display()
        );
        return Ok(binary);
    }
    let source = dir.join("src");
    if !source.join("Cargo.toml").is_file() {
        git(&[
            "worktree",
            "add",
            "--detach",
            &source.display().to_string(),
            &commit,
        ])?;
    }
    eprintln!(
        "{reference} ({}): building blyan-node (release) in {}",
        &commit[..12],
        dir.display()
    );
    // The devnet-only behaviours (`commit_delay_ms`, Byzantine switches) are a cargo feature
    // from the commit that made them one; older commits always had them.
    let manifest = std::fs::read_to_string(source.join("node/Cargo.toml")).unwrap_or_default();
    let features: &[&str] = if manifest.contains("\ndevnet = [") {
        &["--features", "blyan-node/devnet"]
    } else {
        &[]
    };
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "blyan-node"])
        .args(features)
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(&source)
        .status()
        .context("cannot run cargo")?;
    if !status.success() || !binary.is_file() {
        bail!("building {reference} ({commit}) failed");
    }
    Ok(binary)
}

fn binary(reference: &Option<String>, given: &Option<PathBuf>) -> Result<PathBuf> {
    match (reference, given) {
        (_, Some(path)) if path.is_file() => Ok(path.clone()),
        (_, Some(path)) => bail!("{}: no such binary", path.display()),
        (Some(reference), None) => build_ref(reference),
        (None, None) => bail!("give --base/--head refs or --base-bin/--head-bin binaries"),
    }
}

/// One run of the suite on `node_bin`: a fresh devnet, its load steps, down again.
fn one_run(
    manifest: &blyan_harness::manifest::Manifest,
    devnets: &Path,
    node_bin: &Path,
    (pair, label, rates, seconds): (usize, &str, &[f64], f64),
) -> Result<Run> {
    let up = UpArgs::for_manifest(
        &manifest.name,
        devnets,
        Some(node_bin.to_path_buf()),
        "warn",
    );
    let (backend, state, first_block) = start_checked(&up, manifest)?;
    eprintln!("{label}: up in {:.1} s", first_block.as_secs_f64());
    let steps = run_steps(backend.as_ref(), &state, devnets, (pair, rates, seconds));
    backend.down(devnets, &state.name, Duration::from_secs(10))?;
    Ok(Run {
        time_to_first_block_s: first_block.as_secs_f64(),
        steps: steps?,
    })
}

fn print_table(list: &[Comparison], pairs: usize, threshold: f64) {
    println!(
        "{:<32} {:>12} {:>12} {:>7} {:>17}  VERDICT",
        "FIGURE", "BASE", "HEAD", "RATIO", "95% CI"
    );
    for c in list {
        println!(
            "{:<32} {:>12.2} {:>12.2} {:>7.3} {:>8.3}..{:<7.3}  {:?}",
            c.figure, c.baseline, c.now, c.ratio, c.low, c.high, c.verdict
        );
    }
    let count = |verdict: Verdict| list.iter().filter(|c| c.verdict == verdict).count();
    println!(
        "{pairs} pairs; {} worse, {} better, {} same, {} inconclusive at {:.0}%",
        count(Verdict::Worse),
        count(Verdict::Better),
        count(Verdict::Same),
        count(Verdict::Inconclusive),
        threshold * 100.0
    );
}

pub fn ab(args: AbArgs) -> Result<bool> {
    anyhow::ensure!(
        (1..=100).contains(&args.pairs),
        "--pairs: {}; must be between 1 and 100",
        args.pairs
    );
    anyhow::ensure!(
        args.threshold.is_finite() && (0.0..1.0).contains(&args.threshold),
        "--threshold: {}; must be in [0, 1)",
        args.threshold
    );
    let (manifest, suite, rates, seconds) =
        load_suite(&args.suite, args.backend.as_deref(), None, args.duration)?;
    let mut slowed = manifest.clone();
    if let Some(ms) = args.head_commit_delay_ms {
        slowed.consensus.commit_delay_ms = i64::try_from(ms).unwrap_or(i64::MAX);
        slowed
            .validate("--head-commit-delay-ms")
            .context("--head-commit-delay-ms")?;
    }
    let base_bin = binary(&args.base, &args.base_bin)?;
    let head_bin = binary(&args.head, &args.head_bin)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        PathBuf::from("bench-results").join(format!("ab-{suite}-{time}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (mut base_runs, mut head_runs, mut base_first) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..args.pairs {
        let first_base = pair % 2 == 0;
        base_first.push(first_base);
        for is_base in [first_base, !first_base] {
            let (name, bin, side) = if is_base {
                ("base", &base_bin, &manifest)
            } else {
                ("head", &head_bin, &slowed)
            };
            let label = format!("pair {}/{} {name}", pair + 1, args.pairs);
            let spec = (pair + 1, label.as_str(), rates.as_slice(), seconds);
            let run = one_run(side, &args.devnets, bin, spec)?;
            if is_base {
                base_runs.push(run)
            } else {
                head_runs.push(run)
            }
        }
    }
    let side = |runs: Vec<Run>| Results {
        suite: suite.clone(),
        nodes: manifest.resolve().len(),
        fingerprint: Fingerprint::here(manifest.backend.name(), repository_root().as_deref()),
        runs,
    };
    let (base, head) = (side(base_runs), side(head_runs));
    let comparisons = bench::compare_paired(&base, &head, args.threshold);
    print_table(&comparisons, args.pairs, args.threshold);
    let worse = comparisons.iter().any(|c| c.verdict == Verdict::Worse);
    let results = AbResults {
        base,
        head,
        base_first,
        threshold: args.threshold,
        comparisons,
    };
    let file = out.join("ab.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("results: {}", file.display());
    Ok(!(args.fail_on_regression && worse))
}
