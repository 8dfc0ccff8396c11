//! `devnet bisect GOOD BAD --figure F`: the commit that first made a figure worse, found by
//! A/B runs of each tested commit against GOOD (`devnet ab`'s interleaved pairs and verdicts;
//! the search itself is `blyan_harness::bisect`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use blyan_harness::bench::{self, Comparison, Verdict};
use blyan_harness::bisect::{bisect, Outcome};
use clap::Args;
use serde::Serialize;

use super::ab::{build_ref, check_pairs, git, out_dir, PairPlan, PairedSuite, Pairs};
use super::bench::load_suite;
use super::repository_root;

#[derive(Args)]
pub struct BisectArgs {
    /// The last commit known to be good.
    #[arg(value_name = "GOOD")]
    good: String,
    /// A commit known to be worse than GOOD (often HEAD); GOOD must be one of its ancestors.
    #[arg(value_name = "BAD")]
    bad: String,
    /// The figure that got worse, as ab.json names it (e.g. rate_1000.commit_p50_ms); the
    /// rate_N. prefix may be left out when the suite has one load step.
    #[arg(long)]
    figure: String,
    #[command(flatten)]
    paired: PairedSuite,
    /// Pairs of runs per tested commit (GOOD against it, interleaved).
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Times an undecided step (inconclusive) is measured again, with --pairs more pairs each.
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// Directory for bisect.json (default: bench-results/bisect-<suite>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// A commit of the range: its hash and subject line.
#[derive(Clone, Serialize)]
struct Commit {
    hash: String,
    subject: String,
}

/// One measurement: a commit against GOOD after `pairs` pairs.
#[derive(Serialize)]
struct Measured {
    commit: String,
    pairs: usize,
    comparison: Comparison,
}

#[derive(Serialize)]
struct BisectResults {
    suite: String,
    figure: String,
    threshold: f64,
    /// GOOD first, then every first-parent commit after it up to BAD.
    commits: Vec<Commit>,
    measurements: Vec<Measured>,
    #[serde(flatten)]
    outcome: Outcome,
}

/// GOOD, then the first-parent commits after it up to BAD, oldest first.
fn range(good: &str, bad: &str) -> Result<Vec<Commit>> {
    let repo =
        repository_root().context("bisecting needs the repository the harness was built from")?;
    let resolve = |reference: &str| {
        git(
            &repo,
            &["rev-parse", "--verify", &format!("{reference}^{{commit}}")],
        )
        .with_context(|| format!("{reference:?} is not a commit of {}", repo.display()))
    };
    let (good, bad) = (resolve(good)?, resolve(bad)?);
    if git(&repo, &["merge-base", "--is-ancestor", &good, &bad]).is_err() || good == bad {
        bail!("GOOD {good} is not an ancestor of BAD {bad}: nothing to bisect");
    }
    let listed = git(
        &repo,
        &[
            "log",
            "--first-parent",
            "--reverse",
            "--format=%H %s",
            &format!("{good}..{bad}"),
        ],
    )?;
    let subject = git(&repo, &["log", "-1", "--format=%s", &good])?;
    let mut commits = vec![Commit {
        hash: good,
        subject,
    }];
    for line in listed.lines() {
        let (hash, subject) = line.split_once(' ').unwrap_or((line, ""));
        commits.push(Commit {
            hash: hash.to_string(),
            subject: subject.to_string(),
        });
    }
    Ok(commits)
}

/// `figure` as ab.json names it for a suite of these load rates.
fn figure_name(figure: &str, rates: &[f64]) -> Result<String> {
    let names = bench::figure_names(rates);
    if names.iter().any(|name| name == figure) {
        return Ok(figure.to_string());
    }
    let matching: Vec<&String> = names
        .iter()
        .filter(|name| {
            name.split_once('.')
                .is_some_and(|(_, short)| short == figure)
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!(
            "--figure {figure:?}: not one of this suite's figures: {}",
            names.join(", ")
        ),
    }
}

pub fn bisect_cmd(args: BisectArgs) -> Result<bool> {
    check_pairs(args.pairs, args.paired.threshold)?;
    anyhow::ensure!(
        args.retries <= 10,
        "--retries: {}; at most 10",
        args.retries
    );
    let (manifest, suite, rates, seconds) = load_suite(
        &args.paired.suite,
        args.paired.backend.as_deref(),
        None,
        args.paired.duration,
    )?;
    let figure = figure_name(&args.figure, &rates)?;
    let commits = range(&args.good, &args.bad)?;
    let out = out_dir(&args.out, "bisect", &suite)?;
    println!(
        "bisecting {} commits after {} on {figure} ({suite}, {} pairs a try, {:.0}% threshold)",
        commits.len() - 1,
        &commits[0].hash[..12],
        args.pairs,
        args.paired.threshold * 100.0
    );
    let good_bin = build_ref(&commits[0].hash)?;
    let mut measurements = Vec::new();
    // The commit being measured: its binary and its pairs so far (a retry adds pairs).
    let mut current: Option<(usize, PathBuf, Pairs)> = None;
    let (outcome, _) = bisect(commits.len(), args.retries, |index, attempt| {
        let commit = &commits[index];
        if current.as_ref().is_none_or(|(at, _, _)| *at != index) {
            current = Some((index, build_ref(&commit.hash)?, Pairs::default()));
        }
        let (_, head_bin, pairs) = current.as_mut().expect("set above");
        let plan = PairPlan {
            base: &manifest,
            head: &manifest,
            base_bin: &good_bin,
            head_bin: head_bin.as_path(),
            devnets: &args.paired.devnets,
            rates: &rates,
            seconds,
        };
        let total = args.pairs * (attempt + 1);
        pairs.run(&plan, args.pairs, total)?;
        let (_, _, comparisons) = pairs.judge(&suite, &manifest, args.paired.threshold);
        let comparison = comparisons
            .into_iter()
            .find(|c| c.figure == figure)
            .with_context(|| format!("the runs report no {figure}"))?;
        println!(
            "{} {}: {figure} x{:.3} (95% CI {:.3}..{:.3}) after {total} pairs: {:?}",
            &commit.hash[..12],
            commit.subject,
            comparison.ratio,
            comparison.low,
            comparison.high,
            comparison.verdict
        );
        let verdict = comparison.verdict;
        measurements.push(Measured {
            commit: commit.hash.clone(),
            pairs: total,
            comparison,
        });
        Ok::<Verdict, anyhow::Error>(verdict)
    })?;
    let found = print_outcome(&outcome, &commits);
    let results = BisectResults {
        suite,
        figure,
        threshold: args.paired.threshold,
        commits,
        measurements,
        outcome,
    };
    let file = out.join("bisect.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("results: {}", file.display());
    Ok(found)
}

/// Prints how the bisection ended; true when it found the first worse commit.
fn print_outcome(outcome: &Outcome, commits: &[Commit]) -> bool {
    let named = |index: usize| format!("{} {}", commits[index].hash, commits[index].subject);
    match outcome {
        Outcome::Found { first_bad } => {
            println!("first worse commit: {}", named(*first_bad));
            true
        }
        Outcome::BadNotWorse { verdict } => {
            println!("BAD is not worse than GOOD ({verdict:?}): nothing to bisect");
            false
        }
        Outcome::Undecided {
            good,
            bad,
            undecided,
        } => {
            println!(
                "undecided at {}: the first worse commit is after {} and at or before {}",
                named(*undecided),
                &commits[*good].hash[..12],
                &commits[*bad].hash[..12]
            );
            false
        }
    }
}
