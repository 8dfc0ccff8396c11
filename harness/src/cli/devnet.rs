//! `devnet up | down | status | logs | image | nat-probe`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{load_manifest, parse_backend, repository_root, runtime, NameArgs};
use anyhow::{bail, Context, Result};
use blyan_harness::backend::{self, Backend, BackendKind, UpSettings};
use blyan_harness::docker;
use blyan_harness::manifest::Manifest;
use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use clap::Args;

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    target: NameArgs,
    /// Every devnet: all containers and networks labelled blyan.devnet, all process devnets
    /// under BASE.
    #[arg(long)]
    all: bool,
    /// Seconds to wait after SIGTERM before SIGKILL (process backend).
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Also delete the devnet's directory (homes, data, logs).
    #[arg(long)]
    purge: bool,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    target: NameArgs,
    /// A manifest file (see `devnet manifest --example`); default: 4 validators.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// auto (Docker when a daemon answers, else processes), docker, process or swarm (Docker
    /// Swarm services; `docs/SCALING.md`); overrides the manifest.
    #[arg(long)]
    backend: Option<String>,
    /// Validators (overrides the manifest's count).
    #[arg(long)]
    nodes: Option<usize>,
    /// Full nodes besides the validators (overrides the manifest's count). A 100-node devnet on
    /// 2 cores: `--nodes 20 --full-nodes 80`.
    #[arg(long)]
    full_nodes: Option<usize>,
    /// Seed of every key (overrides the manifest).
    #[arg(long)]
    seed: Option<u64>,
    /// Pause after each block, ms (overrides the manifest; 0: as fast as consensus goes).
    #[arg(long)]
    timeout_commit_ms: Option<u64>,
    /// Process backend: API port of node 0; node i uses base + i. Swarm backend: the host port
    /// node i's API is published on (base + i; the link proxy's API on base - 10).
    #[arg(long, default_value_t = 27000)]
    api_port_base: u16,
    /// Process backend: P2P port of node 0; node i uses base + i.
    #[arg(long, default_value_t = 28000)]
    p2p_port_base: u16,
    /// Height every node must reach before `up` returns.
    #[arg(long, default_value_t = 2)]
    wait_height: u64,
    /// Seconds to wait for that height.
    #[arg(long, default_value_t = 180)]
    wait_timeout: u64,
    /// Node log level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// Start even if the capacity plan says the devnet does not fit this host.
    #[arg(long)]
    force: bool,
    /// Also generate the default MoE model into node0 once the devnet is up and wait until
    /// every node lists it on chain, ready for `POST /infer` (as `[inference]` in a manifest).
    #[arg(long)]
    inference: bool,
    /// Swarm backend: push the node image to this registry (`HOST:PORT[/PATH]`) instead of
    /// loading it into every member's daemon.
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    /// Swarm backend: fail when this daemon is in no swarm instead of creating a single-node
    /// swarm (one created here is left again by `devnet down`).
    #[arg(long)]
    no_swarm_init: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Node name, e.g. node0.
    node: String,
    #[command(flatten)]
    target: NameArgs,
    /// Keep printing new lines (until Ctrl-C).
    #[arg(long)]
    follow: bool,
    /// Last lines only (0: all).
    #[arg(long, default_value_t = 0)]
    tail: usize,
}

#[derive(Args)]
pub struct ImageArgs {
    /// `build`: compile blyan-node (release) and build the image.
    action: String,
    /// Rebuild even if the image holds this binary already.
    #[arg(long)]
    force: bool,
    /// Do not run cargo; use the binary as it is.
    #[arg(long)]
    no_compile: bool,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
}

pub fn up(args: UpArgs) -> Result<bool> {
    let mut manifest = load_manifest(args.manifest.as_deref(), args.target.name.as_deref())?;
    let origin = args
        .manifest
        .as_ref()
        .map_or("built-in manifest".to_string(), |p| p.display().to_string());
    if let Some(nodes) = args.nodes {
        if !manifest.nodes.is_empty() {
            bail!("--nodes: the manifest {origin} lists its nodes explicitly");
        }
        manifest.validators = Some(nodes as i64);
    }
    if let Some(full) = args.full_nodes {
        if !manifest.nodes.is_empty() {
            bail!("--full-nodes: the manifest {origin} lists its nodes explicitly");
        }
        manifest.full_nodes = Some(full as i64);
    }
    if let Some(seed) = args.seed {
        manifest.seed = seed;
    }
    if let Some(ms) = args.timeout_commit_ms {
        manifest.consensus.timeout_commit_ms = ms as i64;
    }
    if let Some(backend) = &args.backend {
        manifest.backend = parse_backend(backend)?;
    }
    if args.inference && manifest.inference.is_none() {
        manifest.inference = Some(Default::default());
    }
    manifest.validate(&format!("{origin} with the command-line flags"))?;
    let (_, state, reached) = start_checked(&args, &manifest)?;
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    process::check_agreement(&state, &all, args.wait_height)?;
    println!(
        "devnet {:?} is up ({} backend): {} nodes on chain {}, every node at height >= {} after {:.1} s, \
         identical block and app hashes at heights 1..={}",
        state.name,
        state.backend,
        state.nodes.len(),
        state.chain_id,
        args.wait_height,
        reached.as_secs_f64(),
        args.wait_height
    );
    print_nodes(&state, &args.target.base)?;
    println!(
        "\nlogs:    devnet logs node0 --name {}   ({}/<node>.log for processes)",
        state.name,
        blyan_harness::testnet::record::devnet_dir(&args.target.base, &state.name).display()
    );
    println!("status:  devnet status --name {}", state.name);
    println!("stop:    devnet down --name {}", state.name);
    Ok(true)
}

impl UpArgs {
    /// `up` as the harness's own commands call it: the whole setup from the manifest, wait for
    /// height 1 on every node (at most 300 s), default ports.
    pub(crate) fn for_manifest(
        name: &str,
        base: &Path,
        node_bin: Option<PathBuf>,
        log_level: &str,
    ) -> UpArgs {
        UpArgs {
            target: NameArgs {
                name: Some(name.to_string()),
                base: base.to_path_buf(),
                json: false,
            },
            manifest: None,
            backend: None,
            nodes: None,
            full_nodes: None,
            seed: None,
            timeout_commit_ms: None,
            api_port_base: 27000,
            p2p_port_base: 28000,
            wait_height: 1,
            wait_timeout: 300,
            log_level: log_level.into(),
            node_bin,
            force: false,
            inference: false,
            registry: None,
            no_swarm_init: false,
        }
    }
}

impl UpArgs {
    /// What the backend needs from the command line.
    fn settings(&self, node_bin: PathBuf) -> UpSettings {
        UpSettings {
            base: self.target.base.clone(),
            node_bin,
            api_port_base: self.api_port_base,
            p2p_port_base: self.p2p_port_base,
            wait_height: self.wait_height,
            wait_timeout: Duration::from_secs(self.wait_timeout),
            log_level: self.log_level.clone(),
            force: self.force,
            registry: self.registry.clone(),
            swarm_init: !self.no_swarm_init,
            node_bins: Vec::new(),
        }
    }
}

/// The backend for `kind` (auto: Docker when a daemon answers, said on stderr otherwise).
fn open_backend(kind: BackendKind, base: &Path) -> Result<Box<dyn Backend>> {
    let (backend, note) = backend::open(kind, base)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(backend)
}

/// Checks the manifest against the backend and this host, starts the devnet and installs its
/// model, with a spinner; returns the backend, the devnet and the time to `wait_height`.
pub(crate) fn start_checked(
    args: &UpArgs,
    manifest: &Manifest,
) -> Result<(Box<dyn Backend>, DevnetState, Duration)> {
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(process::default_node_bin);
    let backend = open_backend(manifest.backend, &args.target.base)?;
    backend::check(backend.kind(), manifest, args.force)?;
    let bar = blyan_harness::progress::Progress::spinner();
    let started = backend::start(
        backend.as_ref(),
        manifest,
        &args.settings(node_bin),
        &|line| bar.set_message(line),
    );
    bar.finish_and_clear();
    let started = started?;
    if started
        .state
        .swarm
        .as_ref()
        .is_some_and(|swarm| swarm.created)
    {
        println!("note: created a single-node swarm; `devnet down` leaves it again");
    }
    if let (Some(spec), Some(took)) = (&manifest.inference, started.model_installed) {
        println!(
            "model {:?} ({} files) generated on {} and registered on every node in {:.1} s: POST /infer is ready",
            spec.model(),
            spec.files(),
            spec.node(),
            took.as_secs_f64()
        );
    }
    Ok((backend, started.state, started.reached))
}

fn print_nodes(state: &DevnetState, base: &Path) -> Result<()> {
    let client = process::http_client();
    // Without the backend's daemon the table still shows what the nodes answer.
    let (memory, running) = match backend::open(state.backend, base) {
        Ok((backend, _)) => (backend.memory(state), Some(backend.running(state))),
        Err(_) => (vec![None; state.nodes.len()], None),
    };
    println!(
        "{:<8} {:>9} {:<26} {:>8} {:>6} {:>10}  P2P",
        "NODE", "RUNNING", "API", "HEIGHT", "PEERS", "MEMORY"
    );
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let statuses = process::node_statuses(&client, state, &all);
    for (index, ((node, status), memory)) in
        state.nodes.iter().zip(statuses).zip(memory).enumerate()
    {
        let field = |name: &str| {
            status
                .as_ref()
                .and_then(|s| s[name].as_u64())
                .map_or("-".to_string(), |v| v.to_string())
        };
        // As the backend sees it (a pid, a container's state); without its daemon, whether
        // the node answers.
        let running = match &running {
            Some(running) => running[index].clone(),
            None if status.is_some() => "answers".to_string(),
            None => "-".to_string(),
        };
        println!(
            "{:<8} {:>9} {:<26} {:>8} {:>6} {:>10}  {}",
            node.moniker,
            running,
            node.api,
            field("latest_height"),
            field("peers"),
            memory.map_or("-".to_string(), |bytes| format!(
                "{:.1} MiB",
                bytes as f64 / 1048576.0
            )),
            node.p2p
        );
    }
    if let Some((node, https)) = state
        .nodes
        .first()
        .and_then(|node| Some((node, node.api_https.as_ref()?)))
    {
        let pki = node.home.parent().unwrap_or(&node.home).join("pki");
        println!(
            "HTTPS beside each API ({https} for {}, ...); admin endpoints need the devnet's client certificate:\n  curl --cacert {pki}/ca.crt --cert {pki}/admin.crt --key {pki}/admin.key -X POST {https}/admin/reload",
            node.moniker,
            pki = pki.display()
        );
    }
    Ok(())
}

pub fn down(args: DownArgs) -> Result<bool> {
    let base = &args.target.base;
    let grace = Duration::from_secs(args.grace);
    if args.all {
        return down_all(base, grace, args.purge);
    }
    let name = args.target.name();
    match blyan_harness::testnet::record::load_state(base, name) {
        Ok(state) => {
            let backend = open_backend(state.backend, base).with_context(|| {
                format!("devnet {name:?} runs on the {} backend", state.backend)
            })?;
            println!("{}", backend.down(base, name, grace)?);
        }
        // No record: what Docker holds under the devnet's label (a `devnet up` that died).
        Err(error) => {
            let rt = runtime()?;
            let removed = match rt.block_on(docker::connect()) {
                Ok(client) => rt.block_on(docker::remove_by_label(&client, Some(name)))?,
                Err(_) => Default::default(),
            };
            if removed.containers + removed.networks == 0 && !args.purge {
                bail!("{error}");
            }
            println!(
                "devnet {name:?}: removed {} containers and {} networks",
                removed.containers, removed.networks
            );
        }
    }
    if args.purge {
        purge(&blyan_harness::testnet::record::devnet_dir(base, name))?;
    }
    Ok(true)
}

fn purge(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|error| anyhow::anyhow!("cannot delete {}: {error}", dir.display()))?;
        println!("deleted {}", dir.display());
    }
    Ok(())
}

/// `devnet down --all`: everything labelled as a devnet's in Docker, then every recorded
/// devnet under `base` through its backend.
fn down_all(base: &Path, grace: Duration, purge_dirs: bool) -> Result<bool> {
    let rt = runtime()?;
    match rt.block_on(docker::connect()) {
        Ok(client) => {
            let removed = rt.block_on(docker::remove_by_label(&client, None))?;
            println!(
                "docker: removed {} containers and {} networks labelled {}",
                removed.containers,
                removed.networks,
                docker::LABEL_DEVNET
            );
        }
        Err(error) => println!("docker: {error}; nothing to remove there"),
    }
    if let Ok(entries) = std::fs::read_dir(base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Ok(state) = blyan_harness::testnet::record::load_state(base, &name) {
                match backend::open(state.backend, base) {
                    Ok((backend, _)) => println!("{}", backend.down(base, &name, grace)?),
                    Err(error) => println!("devnet {name:?}: {error}; skipped"),
                }
            }
            if purge_dirs {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(true)
}

#[derive(Args)]
pub struct NatProbeArgs {
    #[command(flatten)]
    target: NameArgs,
    /// Times every pair is measured (each round alternates direction and relay).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// How long a relayed link may take to become direct, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    upgrade_wait_ms: u64,
    /// Also write the report, every attempt included, to this JSON file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn nat_probe(args: NatProbeArgs) -> Result<bool> {
    if args.rounds == 0 || args.rounds > 100 {
        bail!("--rounds must be between 1 and 100");
    }
    let state = blyan_harness::testnet::record::load_state(&args.target.base, args.target.name())?;
    let Some(nat) = state.nat.clone() else {
        bail!(
            "devnet {:?} has no [network.topology]: nothing sits behind NAT (scenarios/nat.toml has one)",
            state.name
        );
    };
    let pki =
        blyan_harness::testnet::record::devnet_dir(&args.target.base, &state.name).join("pki");
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} connection attempts")
            .expect("a valid template"),
    );
    let report = blyan_harness::docker::nat::probe_pairs(
        &state,
        &pki,
        &nat.behind,
        &nat.relays,
        args.rounds,
        args.upgrade_wait_ms,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    println!(
        "{} attempts between {} nodes behind NAT: {} connected ({:.1}%), {} upgraded to direct by hole punching ({:.1}% of those connected)",
        report.attempts,
        nat.behind.len(),
        report.connected,
        report.success_rate * 100.0,
        report.hole_punched,
        report.hole_punched_share * 100.0
    );
    println!(
        "time to connect: p50 {:.0} ms, p99 {:.0} ms; to direct: p50 {}, p99 {}",
        report.connect_ms_p50,
        report.connect_ms_p99,
        ms(report.direct_ms_p50),
        ms(report.direct_ms_p99)
    );
    let failures: Vec<_> = report.samples.iter().filter(|a| !a.connected).collect();
    for failed in failures.iter().take(10) {
        println!(
            "  failed: {} -> {} via {}: {}",
            failed.from,
            failed.to,
            failed.relay,
            failed.error.as_deref().unwrap_or("no connection")
        );
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("report: {}", out.display());
    }
    Ok(failures.is_empty())
}

pub fn status(args: NameArgs) -> Result<bool> {
    let state = blyan_harness::testnet::record::load_state(&args.base, args.name())?;
    if args.json {
        let client = process::http_client();
        let nodes: Vec<serde_json::Value> = state
            .nodes
            .iter()
            .map(|node| {
                serde_json::json!({
                    "node": node,
                    "status": process::node_status(&client, node),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "name": state.name,
                "backend": state.backend,
                "chain_id": state.chain_id,
                "nodes": nodes,
            }))?
        );
        return Ok(true);
    }
    println!(
        "devnet {:?} ({} backend, chain {})",
        state.name, state.backend, state.chain_id
    );
    print_nodes(&state, &args.base)?;
    Ok(true)
}

pub fn logs(args: LogsArgs) -> Result<bool> {
    let state = blyan_harness::testnet::record::load_state(&args.target.base, args.target.name())?;
    let node = state
        .nodes
        .iter()
        .find(|node| node.moniker == args.node)
        .with_context(|| {
            format!(
                "no node {:?} in devnet {:?} (nodes: {})",
                args.node,
                state.name,
                state
                    .nodes
                    .iter()
                    .map(|n| n.moniker.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let index = node.index;
    let (backend, _) = backend::open(state.backend, &args.target.base)?;
    let options = backend::LogOptions {
        tail: args.tail,
        follow: args.follow,
    };
    backend.logs(&state, index, options, &mut std::io::stdout().lock())?;
    Ok(true)
}

pub fn image(args: ImageArgs) -> Result<bool> {
    if args.action != "build" {
        bail!(
            "image: unknown action {:?} (use `devnet image build`)",
            args.action
        );
    }
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(process::default_node_bin);
    if !args.no_compile {
        if let Some(root) = repository_root() {
            eprintln!(
                "compiling blyan-node (release, devnet feature) in {}",
                root.display()
            );
            let status = std::process::Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "-p",
                    "blyan-node",
                    "--features",
                    "devnet",
                ])
                .current_dir(&root)
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("cargo build --release -p blyan-node --features devnet failed");
            }
        }
    }
    let rt = runtime()?;
    let release = repository_root()
        .map(|root| root.join("target/release/blyan-node"))
        .filter(|path| args.node_bin.is_none() && path.is_file());
    let binary = release.unwrap_or(node_bin);
    let info = rt.block_on(async {
        let client = docker::connect().await?;
        docker::build_image(&client, &binary, args.force).await
    })?;
    println!(
        "{} {} and {} from {} (sha256 {}), with {} shared libraries: {}",
        if info.rebuilt { "built" } else { "up to date:" },
        info.tag,
        info.commit_tag,
        binary.display(),
        &info.binary_sha256[..16],
        info.libraries.len(),
        info.libraries
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(true)
}
