//! `blyan-loadgen`: open-loop transaction load against a running devnet.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use blyan_loadgen::{read_devnet, run, LoadConfig, Progress, Report};
use clap::Parser;

/// Send signed transfers to a devnet at a fixed rate, open loop (on schedule, whatever the
/// answers), and report submit and commit latency percentiles, committed TPS and errors.
///
/// Latencies count from when each transaction was due, so a slow node shows as latency, not as
/// a lower rate. Accounts come from the devnet's accounts.json (genesis-funded).
#[derive(Parser)]
#[command(name = "blyan-loadgen", version)]
struct Cli {
    /// The devnet directory (devnet.json, accounts.json), as `devnet up` writes it.
    #[arg(long, default_value = ".devnet/default", value_name = "DIR")]
    devnet: PathBuf,
    /// Transactions per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// At most this many transactions.
    #[arg(long, default_value_t = 1_000_000)]
    max_txs: u64,
    /// Milliseconds between batches (one batch per node per tick).
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Requests in flight at most; transactions beyond are counted as `overload`, not delayed.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Seconds to wait for commits after sending.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Follow committed blocks on this node (index).
    #[arg(long, default_value_t = 0)]
    follow: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Include every latency sample (microseconds) in the JSON.
    #[arg(long)]
    samples: bool,
    /// Inference load instead of transfers: `POST /infer` with seeded random prompts, a fixed
    /// number in flight, spread over the nodes; reports end-to-end latency and tokens/s.
    #[arg(long)]
    infer: bool,
    /// --infer: requests to send.
    #[arg(long, default_value_t = 100)]
    requests: u32,
    /// --infer: requests in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// --infer: prompt length in tokens.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// --infer: tokens to generate per request.
    #[arg(long, default_value_t = 8)]
    new_tokens: u32,
    /// --infer: prompt token ids are drawn below this (the model's vocabulary size).
    #[arg(long, default_value_t = 1024)]
    vocab: u32,
    /// --infer: the seed of the prompts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// --infer: the model (default: each node's inference.model).
    #[arg(long)]
    model: Option<String>,
    /// --infer: also send every request to every other node; their answers must be identical.
    #[arg(long)]
    compare: bool,
}

fn infer(cli: &Cli, targets: Vec<String>) -> Result<()> {
    let config = blyan_loadgen::infer::InferConfig {
        targets,
        requests: cli.requests,
        concurrency: cli.concurrency,
        prompt_tokens: cli.prompt_tokens,
        new_tokens: cli.new_tokens,
        vocab: cli.vocab,
        seed: cli.seed,
        model: cli.model.clone(),
        compare: cli.compare,
        timeout: Duration::from_secs(120),
    };
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if !cli.json {
        eprintln!(
            "{} inference requests ({} prompt tokens, {} new), {} in flight, over {} nodes{}",
            config.requests,
            config.prompt_tokens,
            config.new_tokens,
            config.concurrency,
            config.targets.len(),
            if config.compare {
                ", each compared on every node"
            } else {
                ""
            }
        );
    }
    let report = runtime.block_on(blyan_loadgen::infer::run_infer(&config))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} of {} ok in {:.1} s: {:.1} requests/s, {:.1} tokens/s",
            report.ok, report.requests, report.seconds, report.requests_per_s, report.tokens_per_s
        );
        let p = &report.latency;
        println!(
            "latency ms  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        );
        if config.compare {
            println!(
                "compared on every node: {}, mismatches: {}",
                report.compared,
                report.mismatches.len()
            );
        }
        for line in report.errors.iter().chain(&report.mismatches) {
            println!("  {line}");
        }
    }
    anyhow::ensure!(
        report.ok == report.requests && report.mismatches.is_empty(),
        "{} errors, {} mismatches",
        report.requests - report.ok,
        report.mismatches.len()
    );
    Ok(())
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && value > 0.0 && value <= 3600.0,
        "{flag}: {value} s; must be in (0, 3600]"
    );
    Ok(Duration::from_secs_f64(value))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (chain_id, targets, accounts) = read_devnet(&cli.devnet)?;
    if cli.infer {
        return infer(&cli, targets);
    }
    let mut config = LoadConfig::new(
        &chain_id,
        targets,
        cli.rate,
        seconds("--duration", cli.duration)?,
    );
    config.max_txs = cli.max_txs;
    config.tick = Duration::from_millis(cli.tick_ms);
    config.max_in_flight = cli.max_in_flight;
    config.drain = seconds("--drain", cli.drain)?;
    config.follow = cli.follow;
    config.keep_samples = cli.samples;
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let progress = Arc::new(Progress::default());
    let bar = indicatif::ProgressBar::new(config.planned());
    if cli.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} sent {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let watcher = {
        let progress = progress.clone();
        let bar = bar.clone();
        std::thread::spawn(move || loop {
            bar.set_position(progress.sent.load(Ordering::Relaxed));
            bar.set_message(format!(
                "accepted {} committed {} height {}",
                progress.accepted.load(Ordering::Relaxed),
                progress.committed.load(Ordering::Relaxed),
                progress.height.load(Ordering::Relaxed)
            ));
            if bar.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        })
    };
    let report = runtime.block_on(run(&config, &accounts, progress));
    bar.finish_and_clear();
    let _ = watcher.join();
    let report = report?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "target {:.0} tx/s, achieved {:.0} tx/s over {:.1} s; sent {}, accepted {}, committed {}",
        report.target_rate,
        report.achieved_rate,
        report.send_seconds,
        report.sent,
        report.accepted,
        report.committed
    );
    println!(
        "committed {:.0} tx/s over {} blocks (interval {:.1} ms)",
        report.committed_tps, report.blocks, report.block_interval_ms
    );
    println!("latency ms     p50      p90      p99      max");
    for (name, p) in [("submit", &report.submit), ("commit", &report.commit)] {
        println!(
            "{name:<10} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        );
    }
    if report.errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = report
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!("errors: {}", list.join(", "));
    }
}
