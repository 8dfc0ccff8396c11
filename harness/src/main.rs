//! `devnet`: the harness's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use blyan_harness::process::{self, UpOptions};
use blyan_harness::sim::{run_batch, Summary};
use blyan_node::consensus::sim::{ByzantineKind, SimConfig};
use clap::{Args, Parser, Subcommand};

/// Start, perturb and check Blyan devnets.
#[derive(Parser)]
#[command(name = "devnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run seeded consensus scenarios in the deterministic simulator (partitions, loss,
    /// crashes, Byzantine validators) and check safety, liveness and evidence.
    Sim(SimArgs),
    /// Start a local devnet and wait until every node has committed blocks.
    ///
    /// Backend `process` (the default until the Docker backend lands): N blyan-node processes
    /// on 127.0.0.1, homes under BASE/NAME/, logs in BASE/NAME/nodeI.log. They keep running
    /// after this command returns; stop them with `devnet down`.
    Up(UpArgs),
    /// Stop a devnet's nodes (SIGTERM, then SIGKILL after the grace period); data is kept.
    Down(DownArgs),
    /// Show every node of a devnet: pid, height, peers, memory.
    Status(NameArgs),
}

#[derive(Args)]
struct NameArgs {
    /// Devnet name.
    #[arg(long, default_value = "default")]
    name: String,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
}

#[derive(Args)]
struct DownArgs {
    #[command(flatten)]
    target: NameArgs,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Also delete the devnet's directory (homes, data, logs).
    #[arg(long)]
    purge: bool,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    target: NameArgs,
    /// Where the nodes run: process (local processes on 127.0.0.1). Docker arrives with the
    /// Docker harness issue.
    #[arg(long, default_value = "process")]
    backend: String,
    /// Validators to start.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Chain id.
    #[arg(long, default_value = "blyan-devnet")]
    chain_id: String,
    /// API port of node 0; node i uses base + i.
    #[arg(long, default_value_t = 27000)]
    api_port_base: u16,
    /// P2P port of node 0; node i uses base + i.
    #[arg(long, default_value_t = 28000)]
    p2p_port_base: u16,
    /// Seed of every key (same seed, same devnet identities).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Genesis accounts to fund (keys in BASE/NAME/accounts.json).
    #[arg(long, default_value_t = 16)]
    accounts: usize,
    /// Pause after each block, ms (0: blocks as fast as consensus goes).
    #[arg(long, default_value_t = 100)]
    timeout_commit_ms: u64,
    /// Height every node must reach before `up` returns.
    #[arg(long, default_value_t = 2)]
    wait_height: u64,
    /// Seconds to wait for that height.
    #[arg(long, default_value_t = 120)]
    wait_timeout: u64,
    /// Node log level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim(args),
        Command::Up(args) => up(args),
        Command::Down(args) => down(args),
        Command::Status(args) => status(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn up(args: UpArgs) -> Result<bool> {
    if args.backend != "process" {
        bail!(
            "--backend: {:?} is not available yet; use --backend process (Docker arrives with the Docker harness issue)",
            args.backend
        );
    }
    let node_bin = args.node_bin.unwrap_or_else(process::default_node_bin);
    let mut options = UpOptions::new(&args.target.name, &args.target.base, args.nodes, node_bin);
    options.chain_id = args.chain_id;
    options.api_port_base = args.api_port_base;
    options.p2p_port_base = args.p2p_port_base;
    options.seed = args.seed;
    options.accounts = args.accounts;
    options.timeout_commit_ms = args.timeout_commit_ms;
    options.wait_height = args.wait_height;
    options.wait_timeout = Duration::from_secs(args.wait_timeout);
    options.log_level = args.log_level;
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message(format!("starting {} nodes", options.nodes));
    let wait_height = options.wait_height;
    let state = process::up(&options, |heights| {
        let ready = heights
            .iter()
            .filter(|h| h.is_some_and(|h| h >= wait_height))
            .count();
        let answering = heights.iter().filter(|h| h.is_some()).count();
        bar.set_message(format!(
            "{answering}/{} nodes answering, {ready} at height >= {wait_height}",
            heights.len()
        ));
    })?;
    let reached = started.elapsed();
    bar.set_message(format!(
        "checking block and app hashes at heights 1..={wait_height}"
    ));
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    process::check_agreement(&state, &all, wait_height)?;
    bar.finish_and_clear();
    println!(
        "devnet {:?} is up: {} validators on chain {}, every node at height >= {} after {:.1} s, \
         identical block and app hashes at heights 1..={}",
        state.name,
        state.nodes.len(),
        state.chain_id,
        wait_height,
        reached.as_secs_f64(),
        wait_height
    );
    print_nodes(&state);
    println!(
        "\nlogs:    {}/<node>.log",
        process::devnet_dir(&args.target.base, &state.name).display()
    );
    println!("status:  devnet status --name {}", state.name);
    println!("stop:    devnet down --name {}", state.name);
    Ok(true)
}

fn print_nodes(state: &process::DevnetState) {
    let client = process::http_client();
    println!(
        "{:<8} {:>8} {:<24} {:>8} {:>6} {:>10}  P2P",
        "NODE", "PID", "API", "HEIGHT", "PEERS", "RSS"
    );
    for node in &state.nodes {
        let status = process::node_status(&client, node);
        let field = |name: &str| {
            status
                .as_ref()
                .and_then(|s| s[name].as_u64())
                .map_or("-".to_string(), |v| v.to_string())
        };
        let running = node.pid.filter(|pid| process::is_node_process(*pid));
        let rss = running
            .and_then(process::rss_bytes)
            .map_or("-".to_string(), |bytes| {
                format!("{:.1} MiB", bytes as f64 / 1048576.0)
            });
        println!(
            "{:<8} {:>8} {:<24} {:>8} {:>6} {:>10}  {}",
            node.moniker,
            running.map_or("stopped".to_string(), |pid| pid.to_string()),
            node.api,
            field("latest_height"),
            field("peers"),
            rss,
            node.p2p
        );
    }
}

fn down(args: DownArgs) -> Result<bool> {
    let report = process::down(
        &args.target.base,
        &args.target.name,
        Duration::from_secs(args.grace),
    )?;
    println!(
        "devnet {:?}: {} stopped cleanly, {} killed after {} s, {} were not running",
        args.target.name, report.stopped, report.killed, args.grace, report.not_running
    );
    if args.purge {
        let dir = process::devnet_dir(&args.target.base, &args.target.name);
        std::fs::remove_dir_all(&dir)
            .map_err(|error| anyhow::anyhow!("cannot delete {}: {error}", dir.display()))?;
        println!("deleted {}", dir.display());
    }
    Ok(true)
}

fn status(args: NameArgs) -> Result<bool> {
    let state = process::load_state(&args.base, &args.name)?;
    println!(
        "devnet {:?} ({} backend, chain {})",
        state.name, state.backend, state.chain_id
    );
    print_nodes(&state);
    Ok(true)
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
