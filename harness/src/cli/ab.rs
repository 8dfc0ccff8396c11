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

/// The suite both `ab` and `bisect` run in pairs, and how they judge it.
#[derive(Args)]
pub struct PairedSuite {
    /// A suite under bench/suites/ or a manifest file.
    #[arg(long, default_value = "throughput-4")]
    pub suite: String,
    /// Seconds per load step (overrides the suite's duration_s).
    #[arg(long)]
    pub duration: Option<f64>,
    /// A change smaller than this (a fraction) counts as the same.
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// auto, docker or process; overrides the suite.
    #[arg(long)]
    pub backend: Option<String>,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    pub devnets: PathBuf,
}

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
    #[command(flatten)]
    paired: PairedSuite,
    /// Pairs of runs (each a fresh devnet per build), in the order A B, B A, A B, ...
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Directory for ab.json (default: bench-results/ab-<suite>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
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

/// The blyan-node binary of git ref `reference`: built once, then kept as
/// `target/ab/<commit>/blyan-node` and reused. Every ref is built in one git worktree
/// (`target/ab/worktree`, checked out at the commit) with one target directory
/// (`target/ab/target`), so a second ref recompiles only what differs (RocksDB and the
/// dependencies are compiled once). One `devnet ab` or `bisect` at a time per repository.
pub(super) fn build_ref(reference: &str) -> Result<PathBuf> {
    let repo = repository_root()
        .context("building a ref needs the repository this harness was built from")?;
    let commit = git(
        &repo,
        &["rev-parse", "--verify", &format!("{reference}^{{commit}}")],
    )
    .with_context(|| format!("{reference:?} is not a commit of {}", repo.display()))?;
    let ab = repo.join("target/ab");
    let binary = ab.join(&commit[..12]).join("blyan-node");
    if binary.is_file() {
        eprintln!(
            "{reference} ({}): {} (built before)",
            &commit[..12],
            binary.display()
        );
        return Ok(binary);
    }
    let source = ab.join("worktree");
    if !source.join("Cargo.toml").is_file() {
        let path = source.display().to_string();
        git(&repo, &["worktree", "add", "--detach", &path, &commit])?;
    }
    git(&source, &["checkout", "--quiet", "--detach", &commit])?;
    eprintln!(
        "{reference} ({}): building blyan-node (release) in {}",
        &commit[..12],
        source.display()
    );
    // The devnet-only behaviours (`commit_delay_ms`, Byzantine switches) are a cargo feature
    // from the commit that made them one; older commits always had them.
    let manifest = std::fs::read_to_string(source.join("node/Cargo.toml")).unwrap_or_default();
    let features: &[&str] = if manifest.contains("\ndevnet = [") {
        &["--features", "blyan-node/devnet"]
    } else {
        &[]
    };
    let target = ab.join("target");
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "blyan-node"])
        .args(features)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&source)
        .status()
        .context("cannot run cargo")?;
    let built = target.join("release/blyan-node");
    if !status.success() || !built.is_file() {
        bail!("building {reference} ({commit}) failed");
    }
    std::fs::create_dir_all(binary.parent().expect("under target/ab"))?;
    std::fs::copy(&built, &binary)
        .with_context(|| format!("cannot copy {} to {}", built.display(), binary.display()))?;
    Ok(binary)
}

/// `git -C dir args`, its output trimmed.
pub(super) fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    if !output.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
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

/// Both sides' runs so far (run `i` of each side form pair `i`) and who ran first in each pair.
#[derive(Default)]
pub(super) struct Pairs {
    pub base: Vec<Run>,
    pub head: Vec<Run>,
    pub base_first: Vec<bool>,
}

/// What each run of a pair runs: the suite (per side: the head's may carry a slowdown), the
/// node binaries, the load steps.
pub(super) struct PairPlan<'a> {
    pub base: &'a blyan_harness::manifest::Manifest,
    pub head: &'a blyan_harness::manifest::Manifest,
    pub base_bin: &'a Path,
    pub head_bin: &'a Path,
    pub devnets: &'a Path,
    pub rates: &'a [f64],
    pub seconds: f64,
}

impl Pairs {
    /// Runs `count` more pairs, in the order A B, B A, A B, ... continuing the count so far;
    /// `total` is for the labels.
    pub(super) fn run(&mut self, plan: &PairPlan, count: usize, total: usize) -> Result<()> {
        for _ in 0..count {
            let pair = self.base_first.len();
            let first_base = pair.is_multiple_of(2);
            self.base_first.push(first_base);
            for is_base in [first_base, !first_base] {
                let (name, bin, side) = if is_base {
                    ("base", plan.base_bin, plan.base)
                } else {
                    ("head", plan.head_bin, plan.head)
                };
                let label = format!("pair {}/{total} {name}", pair + 1);
                let spec = (pair + 1, label.as_str(), plan.rates, plan.seconds);
                let run = one_run(side, plan.devnets, bin, spec)?;
                if is_base {
                    self.base.push(run)
                } else {
                    self.head.push(run)
                }
            }
        }
        Ok(())
    }

    /// Both sides as results of `suite`, and each figure judged pair by pair.
    pub(super) fn judge(
        &self,
        suite: &str,
        manifest: &blyan_harness::manifest::Manifest,
        threshold: f64,
    ) -> (Results, Results, Vec<Comparison>) {
        let side = |runs: &[Run]| Results {
            suite: suite.to_string(),
            nodes: manifest.resolve().len(),
            fingerprint: Fingerprint::here(manifest.backend.name(), repository_root().as_deref()),
            runs: runs.to_vec(),
        };
        let (base, head) = (side(&self.base), side(&self.head));
        let comparisons = bench::compare_paired(&base, &head, threshold);
        (base, head, comparisons)
    }
}

/// `--pairs` and `--threshold`, checked.
pub(super) fn check_pairs(pairs: usize, threshold: f64) -> Result<()> {
    anyhow::ensure!(
        (1..=100).contains(&pairs),
        "--pairs: {pairs}; must be between 1 and 100"
    );
    anyhow::ensure!(
        threshold.is_finite() && (0.0..1.0).contains(&threshold),
        "--threshold: {threshold}; must be in [0, 1)"
    );
    Ok(())
}

/// `bench-results/<prefix>-<suite>-<unix time>` unless `out` is given, created.
pub(super) fn out_dir(out: &Option<PathBuf>, prefix: &str, suite: &str) -> Result<PathBuf> {
    let out = out.clone().unwrap_or_else(|| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        PathBuf::from("bench-results").join(format!("{prefix}-{suite}-{time}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(out)
}

pub fn ab(args: AbArgs) -> Result<bool> {
    check_pairs(args.pairs, args.paired.threshold)?;
    let (manifest, suite, rates, seconds) = load_suite(
        &args.paired.suite,
        args.paired.backend.as_deref(),
        None,
        args.paired.duration,
    )?;
    let mut slowed = manifest.clone();
    if let Some(ms) = args.head_commit_delay_ms {
        slowed.consensus.commit_delay_ms = i64::try_from(ms).unwrap_or(i64::MAX);
        slowed
            .validate("--head-commit-delay-ms")
            .context("--head-commit-delay-ms")?;
    }
    let base_bin = binary(&args.base, &args.base_bin)?;
    let head_bin = binary(&args.head, &args.head_bin)?;
    let out = out_dir(&args.out, "ab", &suite)?;
    let plan = PairPlan {
        base: &manifest,
        head: &slowed,
        base_bin: &base_bin,
        head_bin: &head_bin,
        devnets: &args.paired.devnets,
        rates: &rates,
        seconds,
    };
    let mut pairs = Pairs::default();
    pairs.run(&plan, args.pairs, args.pairs)?;
    let (base, head, comparisons) = pairs.judge(&suite, &manifest, args.paired.threshold);
    print_table(&comparisons, args.pairs, args.paired.threshold);
    let worse = comparisons.iter().any(|c| c.verdict == Verdict::Worse);
    let results = AbResults {
        base,
        head,
        base_first: pairs.base_first,
        threshold: args.paired.threshold,
        comparisons,
    };
    let file = out.join("ab.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("results: {}", file.display());
    Ok(!(args.fail_on_regression && worse))
}
