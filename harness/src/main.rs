//! `devnet`: the harness's command line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::ab::AbArgs;
use cli::bench::{BenchArgs, CompareArgs, TrendArgs};
use cli::bisect::BisectArgs;
use cli::devnet::{DownArgs, ImageArgs, LogsArgs, NatProbeArgs, UpArgs};
use cli::files::{ComposeArgs, ManifestArgs, PlanArgs, RenderArgs};
use cli::run::{CheckArgs, RunArgs};
use cli::sim::SimArgs;
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
    /// Run two node builds (git refs, or binaries) in interleaved pairs on this machine, a fresh
    /// devnet per run, and judge each figure by the median of the pairs' ratios (head / base)
    /// with a bootstrap 95% interval over pairs: worse / better only beyond the threshold,
    /// same only within it, inconclusive otherwise. Writes ab.json with every raw sample.
    Ab(AbArgs),
    /// Find the commit that first made a figure worse: bisect GOOD..BAD (first-parent
    /// history), each tested commit built once and run in interleaved pairs against GOOD as
    /// `ab` does; an inconclusive step is measured again with more pairs (--retries). Prints
    /// each step and writes bisect.json.
    Bisect(BisectArgs),
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

fn main() -> ExitCode {
    // Behave like a Unix tool when the reader goes away (`devnet status | head`): exit, do not
    // panic on a broken pipe.
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => cli::sim::sim(args),
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
        Command::Ab(args) => cli::ab::ab(args),
        Command::Bisect(args) => cli::bisect::bisect_cmd(args),
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
