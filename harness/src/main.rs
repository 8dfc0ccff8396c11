//! `devnet`: the harness's command line.

mod cli;

use std::process::ExitCode;

use anyhow::{bail, Result};
use blyan_harness::sim::{run_batch, Summary};
use blyan_node::consensus::sim::{ByzantineKind, SimConfig};
use clap::{Args, Parser, Subcommand};

use cli::bench::{BenchArgs, CompareArgs, TrendArgs};
use cli::devnet::{DownArgs, ImageArgs, LogsArgs, NatProbeArgs, UpArgs};
use cli::files::{ComposeArgs, ManifestArgs, PlanArgs, RenderArgs};
use cli::run::{CheckArgs, RunArgs};
use cli::NameArgs;

/// Start, perturb and check Blyan devnets.
#[derive(Parser)]
#[command(name = "devnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a devnet and wait until every node has committed blocks.
    ///
    /// Backend `auto` (the default) uses Docker when a daemon answers and local processes
    /// otherwise. The devnet comes from `--manifest FILE` or the built-in default (4
    /// validators). Homes, keys and logs are under BASE/NAME/. The nodes keep running after this
    /// command returns; stop them with `devnet down`.
    Up(UpArgs),
    /// Stop a devnet and remove its containers and network (Docker) or processes (data kept).
    Down(DownArgs),
    /// Show every node of a devnet: height, peers, memory, API URL.
    Status(NameArgs),
    /// Print a node's log.
    Logs(LogsArgs),
    /// Measure NAT traversal in a devnet with `[network.topology]`: every pair of nodes behind
    /// NAT or a firewall connects afresh through a relay ROUNDS times (POST /admin/dial with the devnet's
    /// admin certificate); prints the success rate, the share upgraded to direct by hole
    /// punching, and the time to connect and to go direct (p50/p99).
    NatProbe(NatProbeArgs),
    /// Build the node image `blyan-node:dev` FROM scratch (no registry needed).
    Image(ImageArgs),
    /// Print the commented example manifest, or check a manifest file.
    Manifest(ManifestArgs),
    /// Estimate memory and CPU for a devnet on this host and say whether it fits.
    Plan(PlanArgs),
    /// Render a devnet as a docker-compose file (v1 syntax) plus the homes it mounts.
    ///
    /// The same manifest and seed always give the same files; `compose/` holds the default
    /// 4-node rendering. Start it with `docker-compose -f DIR/docker-compose.yml up` once
    /// `devnet image build` has built blyan-node:dev.
    Compose(ComposeArgs),
    /// Render a devnet for another engine: `render k8s` writes typed Kubernetes objects
    /// (per-node StatefulSets, a headless Service, ConfigMaps and Secrets for config, genesis
    /// and keys, resource requests from the capacity planner) for `kubectl apply -f`.
    Render(RenderArgs),
    /// Run a benchmark suite (bench/suites/): a fresh devnet per run, time to first block, then
    /// open-loop load steps; writes results.json with every raw sample and the environment.
    Bench(BenchArgs),
    /// Compare bench results with a baseline, figure by figure: medians over runs, their ratio,
    /// a bootstrap 95% interval and a verdict (better / same / worse).
    Compare(CompareArgs),
    /// Change points and plots over past bench results: every results.json under a directory,
    /// one series per suite and figure in time order, E-Divisive means change points (as Apache
    /// Otava / Hunter), and with --plot an SVG of each figure's history.
    Trend(TrendArgs),
    /// Run a scenario: start the manifest's devnet, record every node's blocks and heights
    /// while its [[faults]] and [load] run, stop it, then check safety, agreement, validity,
    /// liveness, accountability and the fault bound and write results.json, junit.xml, report.html
    /// and timeline.json (every fault with its measured effect; docs/CHAOS.md).
    Run(RunArgs),
    /// Check a recorded run directory offline (same checks as `devnet run`) and rewrite its
    /// report.
    Check(CheckArgs),
    /// Run seeded consensus scenarios in the deterministic simulator (partitions, loss,
    /// crashes, Byzantine validators) and check safety, liveness and evidence.
    Sim(SimArgs),
}

#[derive(Args)]
struct SimArgs {
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

fn main() -> ExitCode {
    // Behave like a Unix tool when the reader goes away (`devnet status | head`): exit, do not
    // panic on a broken pipe.
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim(args),
        Command::Up(args) => cli::devnet::up(args),
        Command::Down(args) => cli::devnet::down(args),
        Command::Status(args) => cli::devnet::status(args),
        Command::NatProbe(args) => cli::devnet::nat_probe(args),
        Command::Logs(args) => cli::devnet::logs(args),
        Command::Image(args) => cli::devnet::image(args),
        Command::Manifest(args) => cli::files::manifest(args),
        Command::Plan(args) => cli::files::plan(args),
        Command::Compose(args) => cli::files::compose(args),
        Command::Render(args) => cli::files::render(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Compare(args) => cli::bench::compare(args),
        Command::Trend(args) => cli::bench::trend(args),
        Command::Run(args) => cli::run::run(args),
        Command::Check(args) => cli::run::check(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {}", blyan_node::error_line(error.as_ref()));
            ExitCode::from(2)
        }
    }
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

fn sim(args: SimArgs) -> Result<bool> {
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
