//! `devnet sim`: seeded consensus scenarios in the deterministic simulator.

use anyhow::{bail, Result};
use blyan_harness::sim::{run_batch, Summary};
use blyan_node::consensus::sim::{ByzantineKind, SimConfig};
use clap::Args;

#[derive(Args)]
pub struct SimArgs {
    /// Validators per scenario (equal stake).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Byzantine validators among them.
    #[arg(long, default_value_t = 1)]
    byzantine: usize,
    /// Scenarios to run (seeds seed-start .. seed-start + seeds).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed_start: u64,
    /// Heights every honest validator must decide.
    #[arg(long, default_value_t = 20)]
    heights: u64,
    /// Byzantine behaviours to draw from: silent, equivocate, amnesia (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "silent,equivocate,amnesia"
    )]
    byzantine_kinds: Vec<String>,
    /// No network or process faults (delays only).
    #[arg(long)]
    no_faults: bool,
    /// Honest validators do not relay (gossip off); safety must still hold.
    #[arg(long)]
    no_relay: bool,
    /// Equivocators always mirror, never split precommits.
    #[arg(long)]
    no_split: bool,
    /// Deliberately break the locking rule in every validator, to see the checker catch it.
    #[arg(long)]
    broken_lock: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn sim_config(args: &SimArgs) -> Result<(SimConfig, String)> {
    if !(1..=1000).contains(&args.validators) {
        bail!(
            "--validators: must be between 1 and 1000, got {}",
            args.validators
        );
    }
    if args.byzantine > args.validators {
        bail!(
            "--byzantine: {} is more than --validators {}",
            args.byzantine,
            args.validators
        );
    }
    if !(1..=10_000_000).contains(&args.seeds) {
        bail!(
            "--seeds: must be between 1 and 10000000, got {}",
            args.seeds
        );
    }
    if !(1..=100_000).contains(&args.heights) {
        bail!(
            "--heights: must be between 1 and 100000, got {}",
            args.heights
        );
    }
    let kinds = args
        .byzantine_kinds
        .iter()
        .map(|text| {
            ByzantineKind::parse(text.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--byzantine-kinds: unknown kind {text:?} (use silent, equivocate, amnesia)"
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut config = SimConfig::new(args.validators, args.byzantine, args.heights);
    config.byzantine_kinds = kinds;
    config.faults = !args.no_faults;
    config.relay = !args.no_relay;
    config.split_precommits = !args.no_split;
    config.broken_lock = args.broken_lock;
    let mut flags = format!(" --byzantine-kinds {}", args.byzantine_kinds.join(","));
    for (on, flag) in [
        (args.no_faults, " --no-faults"),
        (args.no_relay, " --no-relay"),
        (args.no_split, " --no-split"),
        (args.broken_lock, " --broken-lock"),
    ] {
        if on {
            flags.push_str(flag);
        }
    }
    Ok((config, flags))
}

pub fn sim(args: SimArgs) -> Result<bool> {
    let (config, flags) = sim_config(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = indicatif::ProgressBar::new(args.seeds);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} scenarios ({per_sec})",
        )
        .expect("valid template"),
    );
    let summary = run_batch(
        &config,
        args.seed_start,
        args.seeds,
        threads,
        &flags,
        &|_| bar.inc(1),
    );
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    Ok(summary.is_ok())
}

fn print_table(summary: &Summary) {
    println!(
        "{} validators, {} Byzantine, {} heights, {} scenarios in {:.1} s ({:.0}/s)",
        summary.validators,
        summary.byzantine,
        summary.heights,
        summary.scenarios,
        summary.wall_seconds,
        summary.scenarios_per_second
    );
    println!("  safety violations    {}", summary.safety_violations);
    println!("  liveness failures    {}", summary.liveness_failures);
    println!(
        "  evidence missed      {} (of {} equivocations)",
        summary.evidence_missed, summary.equivocations
    );
    println!(
        "  rounds per height    p50 {}  p99 {}  max {}",
        summary.p50_rounds_per_height, summary.p99_rounds_per_height, summary.max_rounds_per_height
    );
    for failure in summary.failures.iter().take(20) {
        println!(
            "FAIL seed {} ({}): {}",
            failure.seed, failure.kind, failure.detail
        );
        println!("  replay: {}", failure.replay);
    }
    if summary.failures.len() > 20 {
        println!("... and {} more failures", summary.failures.len() - 20);
    }
}
