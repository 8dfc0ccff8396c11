//! `devnet up | down | status | logs | image | manifest | plan | compose`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blyan_harness::backend::{self, Backend, BackendKind, UpSettings};
use blyan_harness::docker;
use blyan_harness::manifest::{Manifest, Role, EXAMPLE};
use blyan_harness::plan;
use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use clap::Args;
use futures::StreamExt;

#[derive(Args)]
pub struct NameArgs {
    /// Devnet name (default: the manifest's name, or "default").
    #[arg(long)]
    name: Option<String>,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
    /// Print JSON instead of a table (status).
    #[arg(long)]
    json: bool,
}

impl NameArgs {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }
}

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

#[derive(Args)]
pub struct ManifestArgs {
    /// Print the commented example manifest.
    #[arg(long)]
    example: bool,
    /// Check a manifest file and show what it resolves to.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Check it for this backend (auto, docker, process, swarm) instead of the manifest's:
    /// faults the backend cannot do are refused, naming the field.
    #[arg(long, requires = "check")]
    backend: Option<String>,
}

#[derive(Args)]
pub struct ComposeArgs {
    /// A manifest file (see `devnet manifest --example`); default: 4 validators.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Validators (overrides the manifest's count).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of every key (overrides the manifest).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for docker-compose.yml and the homes it mounts.
    #[arg(long, default_value = "compose", value_name = "DIR")]
    out: PathBuf,
    /// The devnet's network, a /24; node i gets address .10+i.
    #[arg(long, default_value = blyan_harness::compose::DEFAULT_SUBNET)]
    subnet: String,
    /// Host port (127.0.0.1) of node 0's API; node i uses base + i.
    #[arg(long, default_value_t = blyan_harness::compose::DEFAULT_API_PORT_BASE)]
    api_port_base: u16,
    /// The node image.
    #[arg(long, default_value = "blyan-node:dev")]
    image: String,
    /// Wipe homes that hold a chain from an earlier run.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    /// Nodes to plan for.
    #[arg(long)]
    nodes: Option<usize>,
    /// A manifest to plan for.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Plan for the Swarm backend: split the nodes across this daemon's swarm members (by
    /// zone) and say whether they fit the cluster.
    #[arg(long)]
    swarm: bool,
    /// Plan for a cluster of N identical members instead of a live swarm (with
    /// --member-cores and --member-memory-mib), e.g. to size a 500-node nightly suite.
    #[arg(long, value_name = "N")]
    members: Option<usize>,
    /// Cores of each member (with --members).
    #[arg(long, default_value_t = 16.0)]
    member_cores: f64,
    /// Memory of each member, MiB (with --members).
    #[arg(long, default_value_t = 65536.0)]
    member_memory_mib: f64,
}

#[derive(Args)]
pub struct RenderArgs {
    /// What to render: `k8s` (Kubernetes objects for `kubectl apply -f`).
    target: String,
    /// A manifest file (see `devnet manifest --example`); default: 4 validators.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Validators (overrides the manifest's count).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of every key (overrides the manifest).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for devnet.yaml.
    #[arg(long, default_value = "k8s", value_name = "DIR")]
    out: PathBuf,
    /// Print the YAML instead of writing DIR/devnet.yaml.
    #[arg(long)]
    stdout: bool,
    /// The namespace of every object.
    #[arg(long, default_value = "blyan-devnet")]
    namespace: String,
    /// The node image (pushed to a registry the cluster pulls from).
    #[arg(long, default_value = "blyan-node:dev")]
    image: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Size of each node's volume claim.
    #[arg(long, default_value = "1Gi")]
    storage: String,
    /// Storage class of the claims (default: the cluster's default class).
    #[arg(long)]
    storage_class: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_manifest(path: Option<&Path>, name: Option<&str>) -> Result<Manifest> {
    let mut manifest = match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default_named(name.unwrap_or("default")),
    };
    if let Some(name) = name {
        manifest.name = name.to_string();
    }
    Ok(manifest)
}

fn parse_backend(text: &str) -> Result<BackendKind> {
    BackendKind::parse(text).map_err(|reason| anyhow::anyhow!("--backend: {reason}"))
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

/// Checks the plan (memory, cores, neighbour table), picks the backend and starts the devnet;
/// returns it with the time from the start to `wait_height` on every node.
impl UpArgs {
    /// `up` as the harness's own commands call it: the whole setup from the manifest, wait for
    /// height 1 on every node (at most 300 s), default ports.
    fn for_manifest(name: &str, base: &Path, node_bin: Option<PathBuf>, log_level: &str) -> UpArgs {
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
fn start_checked(
    args: &UpArgs,
    manifest: &Manifest,
) -> Result<(Box<dyn Backend>, DevnetState, Duration)> {
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(process::default_node_bin);
    let backend = open_backend(manifest.backend, &args.target.base)?;
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
    let memory = backend::open(state.backend, base)
        .map(|(backend, _)| backend.memory(state))
        .unwrap_or_else(|_| vec![None; state.nodes.len()]);
    println!(
        "{:<8} {:>9} {:<26} {:>8} {:>6} {:>10}  P2P",
        "NODE", "RUNNING", "API", "HEIGHT", "PEERS", "MEMORY"
    );
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let statuses = process::node_statuses(&client, state, &all);
    for ((node, status), memory) in state.nodes.iter().zip(statuses).zip(memory) {
        let field = |name: &str| {
            status
                .as_ref()
                .and_then(|s| s[name].as_u64())
                .map_or("-".to_string(), |v| v.to_string())
        };
        // A process node shows its pid; a container or task, that it answers.
        let running = match node.pid {
            Some(pid) if process::is_node_process(pid) => pid.to_string(),
            Some(_) => "stopped".to_string(),
            None if status.is_some() => "yes".to_string(),
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
    if let Some(container) = &node.container {
        let rt = runtime()?;
        // A Swarm node's `container` is its service.
        let swarm = state.swarm.is_some();
        return rt.block_on(async {
            let client = docker::connect().await?;
            let options = bollard::query_parameters::LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .follow(args.follow)
                .tail(&if args.tail == 0 {
                    "all".to_string()
                } else {
                    args.tail.to_string()
                })
                .build();
            let mut stream = if swarm {
                client.service_logs(container, Some(options)).boxed()
            } else {
                client.logs(container, Some(options)).boxed()
            };
            while let Some(item) = stream.next().await {
                print!("{}", item?);
            }
            Ok(true)
        });
    }
    let mut offset = 0usize;
    loop {
        let text = std::fs::read_to_string(&node.log)
            .with_context(|| format!("cannot read {}", node.log.display()))?;
        let lines: Vec<&str> = text[offset.min(text.len())..].lines().collect();
        let skip = if offset == 0 && args.tail > 0 {
            lines.len().saturating_sub(args.tail)
        } else {
            0
        };
        for line in &lines[skip..] {
            println!("{line}");
        }
        offset = text.len();
        if !args.follow {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The repository the harness was built from, when it is still there (to run cargo in).
fn repository_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("Cargo.toml").is_file().then_some(root)
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
            eprintln!("compiling blyan-node (release) in {}", root.display());
            let status = std::process::Command::new("cargo")
                .args(["build", "--release", "-p", "blyan-node"])
                .current_dir(&root)
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("cargo build --release -p blyan-node failed");
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

pub fn manifest(args: ManifestArgs) -> Result<bool> {
    if args.example {
        print!("{EXAMPLE}");
        return Ok(true);
    }
    let Some(path) = args.check else {
        bail!("manifest: use --example or --check FILE");
    };
    let mut manifest = Manifest::load(&path)?;
    if let Some(backend) = &args.backend {
        manifest.backend = parse_backend(backend)?;
        manifest.validate(&path.display().to_string())?;
        // What the backend cannot do (NAT, inference, isolate); the host's fit is `devnet plan`.
        backend::check(manifest.backend, &manifest, true)
            .with_context(|| format!("{}: backend {}", path.display(), manifest.backend))?;
    }
    let nodes = manifest.resolve();
    let validators = nodes.iter().filter(|n| n.role == Role::Validator).count();
    println!(
        "{}: valid. devnet {:?}, {} nodes ({} validators, {} full), backend {:?}, seed {}",
        path.display(),
        manifest.name,
        nodes.len(),
        validators,
        nodes.len() - validators,
        manifest.backend,
        manifest.seed
    );
    Ok(true)
}

pub fn plan(args: PlanArgs) -> Result<bool> {
    let (zones, memory_mb) = match (&args.manifest, args.nodes) {
        (Some(path), _) => {
            let manifest = Manifest::load(path)?;
            (
                manifest
                    .resolve()
                    .into_iter()
                    .map(|node| node.zone)
                    .collect::<Vec<_>>(),
                manifest.resources.memory_mb as u64,
            )
        }
        (None, Some(nodes)) => (vec!["default".to_string(); nodes], 256),
        (None, None) => bail!("plan: give --nodes N or --manifest FILE"),
    };
    let nodes = zones.len();
    if args.swarm || args.members.is_some() {
        let members = match args.members {
            Some(0) => bail!("--members: 0; a cluster needs at least one member"),
            Some(count) => (0..count)
                .map(|index| plan::Member {
                    id: format!("member{index}"),
                    hostname: format!("member{index}"),
                    address: String::new(),
                    cores: args.member_cores,
                    memory_mib: args.member_memory_mib,
                    zone: None,
                    docker: None,
                    local: index == 0,
                })
                .collect(),
            None => {
                let rt = runtime()?;
                rt.block_on(async {
                    let client = docker::connect().await?;
                    match blyan_harness::swarm::swarm_state(&client).await? {
                        blyan_harness::swarm::SwarmState::Manager => {}
                        blyan_harness::swarm::SwarmState::Inactive => bail!(
                            "--swarm: this Docker daemon is in no swarm (`devnet up --backend \
                             swarm` creates a single-node one; or plan with --members N)"
                        ),
                        blyan_harness::swarm::SwarmState::Unusable(reason) => {
                            bail!("--swarm: {reason}")
                        }
                    }
                    Ok(blyan_harness::swarm::members(&client).await?)
                })?
            }
        };
        return match plan::place(&zones, memory_mb, &members) {
            Ok(placement) => {
                println!(
                    "{nodes} nodes over {} swarm member(s): fits ({:.0} MiB per node, {} cores per node).",
                    members.len(),
                    plan::NODE_RSS_MIB,
                    plan::NODE_CPU_CORES
                );
                println!(
                    "{:<24} {:>6} {:>8} {:>12}  ZONE",
                    "MEMBER", "NODES", "CORES", "MEMORY MIB"
                );
                for (index, member) in members.iter().enumerate() {
                    let count = placement.iter().filter(|p| **p == index).count();
                    println!(
                        "{:<24} {:>6} {:>8.1} {:>12.0}  {}",
                        member.hostname,
                        count,
                        member.cores,
                        member.memory_mib,
                        member.zone.as_deref().unwrap_or("-")
                    );
                }
                Ok(true)
            }
            Err(reason) => {
                println!("Does not fit the cluster: {reason}.");
                Ok(false)
            }
        };
    }
    let estimate = plan::estimate(nodes, memory_mb);
    println!("{}", estimate.describe());
    let neighbours = plan::check_neighbours(nodes, plan::neighbour_limit());
    match &neighbours {
        Ok(()) => println!(
            "Docker backend: about {} neighbour (ARP) entries, within this kernel's limit ({}).",
            plan::neighbour_entries(nodes),
            plan::neighbour_limit().map_or("unknown".to_string(), |limit| limit.to_string())
        ),
        Err(reason) => println!("Docker backend: {reason}."),
    }
    Ok(estimate.fits && neighbours.is_ok())
}

pub fn render(args: RenderArgs) -> Result<bool> {
    if args.target != "k8s" {
        bail!("render: {:?} is not a target (k8s)", args.target);
    }
    let mut manifest = load_manifest(args.manifest.as_deref(), None)?;
    if let Some(nodes) = args.nodes {
        if !manifest.nodes.is_empty() {
            bail!("--nodes: the manifest lists its nodes explicitly");
        }
        manifest.validators = Some(nodes as i64);
    }
    if let Some(seed) = args.seed {
        manifest.seed = seed;
    }
    let options = blyan_harness::k8s::K8sOptions {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        cluster_domain: args.cluster_domain.clone(),
        storage: args.storage.clone(),
        storage_class: args.storage_class.clone(),
    };
    let objects = blyan_harness::k8s::render(&manifest, &options)?;
    if args.stdout {
        print!("{}", blyan_harness::k8s::to_yaml(&objects)?);
        return Ok(true);
    }
    let file = blyan_harness::k8s::write(&args.out, &objects)?;
    println!(
        "wrote {} ({} objects: {} nodes as one-replica StatefulSets, a headless Service, \
         ConfigMaps and Secrets) in namespace {}",
        file.display(),
        objects.len(),
        manifest.resolve().len(),
        args.namespace
    );
    println!(
        "apply: kubectl apply -f {}   (image {} must be pullable by the cluster)",
        file.display(),
        args.image
    );
    Ok(true)
}

pub fn compose(args: ComposeArgs) -> Result<bool> {
    use blyan_harness::compose::{self, ComposeOptions};
    let mut manifest = load_manifest(args.manifest.as_deref(), None)?;
    if let Some(nodes) = args.nodes {
        if !manifest.nodes.is_empty() {
            bail!("--nodes: the manifest lists its nodes explicitly");
        }
        manifest.validators = Some(nodes as i64);
    }
    if let Some(seed) = args.seed {
        manifest.seed = seed;
    }
    let options = ComposeOptions {
        subnet: compose::parse_subnet(&args.subnet)?,
        api_port_base: args.api_port_base,
        image: args.image.clone(),
        force: args.force,
    };
    let file = compose::write(&args.out, &manifest, &options)?.file;
    let nodes = manifest.resolve().len();
    println!(
        "wrote {} ({nodes} nodes) and their homes under {}",
        file.display(),
        args.out.join("homes").display()
    );
    println!(
        "start: devnet image build && docker-compose -f {} up",
        file.display()
    );
    println!(
        "APIs:  http://127.0.0.1:{}/status .. http://127.0.0.1:{}/status",
        args.api_port_base,
        usize::from(args.api_port_base) + nodes - 1
    );
    Ok(true)
}

#[derive(Args)]
pub struct BenchArgs {
    /// A suite under bench/suites/ (throughput-4, latency-10, startup-50, startup-100,
    /// validators-100) or a manifest file.
    #[arg(long, default_value = "throughput-4")]
    suite: String,
    /// Directory for results.json (default: bench-results/<suite>-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Runs, each on a fresh devnet (compare medians over runs).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// auto, docker or process; overrides the suite.
    #[arg(long)]
    backend: Option<String>,
    /// Seconds per load step (overrides the suite's duration_s).
    #[arg(long)]
    duration: Option<f64>,
    /// Devnet-only slowdown: every node sleeps this many milliseconds in each commit (to check
    /// that `devnet compare` catches a regression; 0: none).
    #[arg(long, value_name = "MS")]
    commit_delay_ms: Option<u64>,
    /// Also write the results, without raw samples, to baselines/<suite>.json in the repository
    /// (the file `devnet compare` judges later runs against).
    #[arg(long)]
    save_baseline: bool,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
    /// The blyan-node binary (default: next to this executable, or $BLYAN_NODE_BIN).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
}

fn suite_path(suite: &str) -> Result<PathBuf> {
    let file = Path::new(suite);
    if file.is_file() {
        return Ok(file.to_path_buf());
    }
    let dir = repository_root()
        .map(|root| root.join("bench").join("suites"))
        .context("--suite: not a file, and the repository's bench/suites/ is not here")?;
    let path = dir.join(format!("{suite}.toml"));
    if !path.is_file() {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| {
                        entry
                            .file_name()
                            .to_string_lossy()
                            .strip_suffix(".toml")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        bail!(
            "--suite: no suite {suite:?}; the suites are {}",
            names.join(", ")
        );
    }
    Ok(path)
}

/// CPU ticks of every node process of a process devnet (none for containers).
fn process_ticks(state: &DevnetState) -> Vec<u64> {
    state
        .nodes
        .iter()
        .filter_map(|node| node.pid)
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name (which may hold spaces): utime is the 12th.
                    let rest = stat.rsplit_once(')')?.1;
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some(
                        fields.get(11)?.parse::<u64>().ok()?
                            + fields.get(12)?.parse::<u64>().ok()?,
                    )
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Waits (at most `limit`) until no node holds pending transactions, so that a load step does
/// not start behind the previous one's backlog.
fn wait_for_empty_mempools(state: &DevnetState, limit: Duration) {
    let client = process::http_client();
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let pending: u64 = process::node_statuses(&client, state, &all)
            .into_iter()
            .map(|status| status.and_then(|s| s["mempool_txs"].as_u64()).unwrap_or(0))
            .sum();
        if pending == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("note: mempools still hold transactions after {limit:?}; starting the step anyway");
}

pub fn bench(args: BenchArgs) -> Result<bool> {
    use blyan_harness::bench::{self, Fingerprint, Results, Run, Step};
    anyhow::ensure!(
        (1..=100).contains(&args.runs),
        "--runs: {}; must be between 1 and 100",
        args.runs
    );
    let path = suite_path(&args.suite)?;
    let mut manifest = Manifest::load(&path)?;
    let suite = manifest.name.clone();
    manifest.name = format!("bench-{suite}");
    if let Some(backend) = &args.backend {
        manifest.backend = parse_backend(backend)?;
    }
    if let Some(ms) = args.commit_delay_ms {
        manifest.consensus.commit_delay_ms = i64::try_from(ms).unwrap_or(i64::MAX);
    }
    manifest
        .validate(&path.display().to_string())
        .context("--commit-delay-ms or the suite")?;
    let rates: Vec<f64> = if !manifest.load.ramp.is_empty() {
        manifest.load.ramp.iter().map(|rate| *rate as f64).collect()
    } else if manifest.load.rate > 0 {
        vec![manifest.load.rate as f64]
    } else {
        Vec::new()
    };
    let step_seconds = args.duration.unwrap_or(manifest.duration_s as f64);
    if !rates.is_empty() {
        anyhow::ensure!(
            step_seconds.is_finite() && step_seconds > 0.0 && step_seconds <= 600.0,
            "duration: {step_seconds} s per step; must be in (0, 600] (the suite's duration_s or --duration)"
        );
    }
    let up_args = UpArgs::for_manifest(&manifest.name, &args.base, args.node_bin.clone(), "warn");
    let out = args.out.clone().unwrap_or_else(|| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        PathBuf::from("bench-results").join(format!("{suite}-{time}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut runs = Vec::with_capacity(args.runs);
    let mut backend = String::new();
    for run in 1..=args.runs {
        eprintln!(
            "run {run}/{}: starting {} nodes",
            args.runs,
            manifest.resolve().len()
        );
        let (devnet_backend, state, first_block) = start_checked(&up_args, &manifest)?;
        backend = state.backend.to_string();
        let result = (|| -> Result<Vec<Step>> {
            let accounts = blyan_loadgen::read_accounts(
                &blyan_harness::testnet::record::devnet_dir(&args.base, &state.name)
                    .join("accounts.json"),
            )?;
            let targets: Vec<String> = state.nodes.iter().map(|node| node.api.clone()).collect();
            let rt = runtime()?;
            let mut steps = Vec::new();
            for rate in &rates {
                wait_for_empty_mempools(&state, Duration::from_secs(70));
                eprintln!("run {run}: {rate:.0} tx/s for {step_seconds:.0} s");
                let mut config = blyan_loadgen::LoadConfig::new(
                    &state.chain_id,
                    targets.clone(),
                    *rate,
                    Duration::from_secs_f64(step_seconds),
                );
                config.keep_samples = true;
                // About five transactions per request: one-transaction requests to many nodes
                // cost more HTTP than the nodes have CPU. The wait for the tick counts in the
                // latency (from the due time), so never more than 50 ms.
                let tick_ms = (5.0 * targets.len() as f64 * 1000.0 / rate).clamp(10.0, 50.0);
                config.tick = Duration::from_millis(tick_ms as u64);
                let before = process_ticks(&state);
                let started = Instant::now();
                let report = rt.block_on(blyan_loadgen::run(
                    &config,
                    &accounts,
                    std::sync::Arc::new(blyan_loadgen::Progress::default()),
                ))?;
                let seconds = started.elapsed().as_secs_f64();
                let after = process_ticks(&state);
                let ticks_per_second = 100.0;
                let memory_mib: Vec<f64> = devnet_backend
                    .memory(&state)
                    .into_iter()
                    .flatten()
                    .map(|bytes| bytes as f64 / 1048576.0)
                    .collect();
                let cpu_cores: Vec<f64> = before
                    .iter()
                    .zip(&after)
                    .map(|(a, b)| (b.saturating_sub(*a)) as f64 / ticks_per_second / seconds)
                    .collect();
                eprintln!(
                    "run {run}: {rate:.0} tx/s -> committed {:.0} tx/s, commit p50 {:.1} ms, p99 {:.1} ms",
                    report.committed_tps, report.commit.p50_ms, report.commit.p99_ms
                );
                steps.push(Step {
                    rate: *rate,
                    report,
                    memory_mib,
                    cpu_cores,
                });
            }
            Ok(steps)
        })();
        devnet_backend.down(&args.base, &state.name, Duration::from_secs(10))?;
        runs.push(Run {
            time_to_first_block_s: first_block.as_secs_f64(),
            steps: result?,
        });
    }
    let results = Results {
        suite: suite.clone(),
        nodes: manifest.resolve().len(),
        fingerprint: Fingerprint::here(&backend, repository_root().as_deref()),
        runs,
    };
    let file = out.join("results.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{:<32} PER RUN", "FIGURE");
    for (name, values) in bench::figures(&results) {
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        println!("{name:<32} {}", shown.join("  "));
    }
    println!("results: {}", file.display());
    if args.save_baseline {
        let dir = repository_root()
            .map(|root| root.join("baselines"))
            .context("--save-baseline: the repository's root is not here")?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut stripped = results.clone();
        for run in &mut stripped.runs {
            for step in &mut run.steps {
                step.report.submit_samples_us.clear();
                step.report.commit_samples_us.clear();
            }
        }
        let baseline = dir.join(format!("{suite}.json"));
        std::fs::write(&baseline, serde_json::to_string_pretty(&stripped)? + "\n")
            .with_context(|| format!("cannot write {}", baseline.display()))?;
        println!("baseline: {}", baseline.display());
    }
    Ok(true)
}

#[derive(Args)]
pub struct CompareArgs {
    /// The baseline: a results.json (or a directory holding one), e.g. baselines/<suite>.json.
    baseline: PathBuf,
    /// The results to judge: a results.json or a directory holding one.
    results: PathBuf,
    /// Moves smaller than this share are never a verdict (0.05: 5%).
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// Exit with status 1 when any figure is worse (only when both ran on the same CPU model
    /// and core count, unless --across-machines).
    #[arg(long)]
    fail_on_regression: bool,
    /// Hold verdicts against results from a different machine too (ratios then mix code and
    /// hardware).
    #[arg(long)]
    across_machines: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn read_results(path: &Path) -> Result<blyan_harness::bench::Results> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a bench results file", file.display()))
}

pub fn compare(args: CompareArgs) -> Result<bool> {
    use blyan_harness::bench::{self, Verdict};
    anyhow::ensure!(
        args.threshold.is_finite() && (0.0..1.0).contains(&args.threshold),
        "--threshold: {}; must be in [0, 1)",
        args.threshold
    );
    let baseline = read_results(&args.baseline)?;
    let now = read_results(&args.results)?;
    if baseline.suite != now.suite {
        eprintln!(
            "note: comparing suite {:?} with suite {:?}",
            baseline.suite, now.suite
        );
    }
    let other_machine = baseline.fingerprint.cpu_model != now.fingerprint.cpu_model
        || baseline.fingerprint.cores != now.fingerprint.cores;
    if other_machine {
        eprintln!(
            "note: different machines ({} x{} vs {} x{}); ratios mix code and hardware",
            baseline.fingerprint.cpu_model,
            baseline.fingerprint.cores,
            now.fingerprint.cpu_model,
            now.fingerprint.cores
        );
    }
    let list = bench::compare(&baseline, &now, args.threshold);
    let worse = list.iter().filter(|c| c.verdict == Verdict::Worse).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<32} {:>12} {:>12} {:>7} {:>17}  VERDICT",
            "FIGURE", "BASELINE", "NOW", "RATIO", "95% CI"
        );
        for c in &list {
            println!(
                "{:<32} {:>12.2} {:>12.2} {:>7.3} {:>8.3}..{:<7.3}  {:?}",
                c.figure, c.baseline, c.now, c.ratio, c.low, c.high, c.verdict
            );
        }
        println!(
            "{} runs against {} baseline runs; {worse} worse, threshold {:.0}%",
            now.runs.len(),
            baseline.runs.len(),
            args.threshold * 100.0
        );
    }
    if other_machine && !args.across_machines && worse > 0 {
        eprintln!(
            "note: {worse} worse, not held against this run: the baseline is from another machine (--across-machines to judge anyway)"
        );
        return Ok(true);
    }
    Ok(!(args.fail_on_regression && worse > 0))
}

#[derive(Args)]
pub struct TrendArgs {
    /// A directory of past results: every results.json (or other bench JSON) up to four levels
    /// down, e.g. the nightly artifacts unpacked side by side, or bench-results/.
    dir: PathBuf,
    /// Only figures whose name contains this (e.g. commit_p50).
    #[arg(long)]
    figure: Option<String>,
    /// Significance level of the permutation test for a change point.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Write an SVG plot of each figure's history into this directory.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn trend(args: TrendArgs) -> Result<bool> {
    use blyan_harness::trend;
    anyhow::ensure!(
        args.alpha.is_finite() && args.alpha > 0.0 && args.alpha < 1.0,
        "--alpha: {}; must be in (0, 1)",
        args.alpha
    );
    let trend::Loaded { found, skipped } = trend::load_dir(&args.dir)?;
    for reason in &skipped {
        eprintln!("skipped (not bench results): {reason}");
    }
    let mut all = trend::series(&found, args.alpha);
    if let Some(filter) = &args.figure {
        all.retain(|series| series.figure.contains(filter.as_str()));
        anyhow::ensure!(!all.is_empty(), "--figure: no figure contains {filter:?}");
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for series in &all {
            trend::plot(series, &dir.join(trend::plot_file_name(series)))?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(true);
    }
    println!(
        "{:<14} {:<32} {:>6} {:>12}  CHANGE POINTS",
        "SUITE", "FIGURE", "POINTS", "LATEST"
    );
    for series in &all {
        let latest = series.points.last().map_or(f64::NAN, |point| point.value);
        let changes: Vec<String> = series
            .changes
            .iter()
            .map(|change| {
                let commit = &series.points[change.index].git_commit;
                let short = commit.get(..8).unwrap_or(commit);
                format!(
                    "at #{} ({short}): {:.2} -> {:.2} ({:+.1}%, p={:.3})",
                    change.index,
                    change.before,
                    change.after,
                    (change.after / change.before - 1.0) * 100.0,
                    change.p_value
                )
            })
            .collect();
        println!(
            "{:<14} {:<32} {:>6} {:>12.2}  {}",
            series.suite,
            series.figure,
            series.points.len(),
            latest,
            if changes.is_empty() {
                "none".to_string()
            } else {
                changes.join("; ")
            }
        );
    }
    let changed = all
        .iter()
        .filter(|series| !series.changes.is_empty())
        .count();
    println!(
        "{} results, {} series, {changed} with change points (alpha {})",
        found.len(),
        all.len(),
        args.alpha
    );
    if let Some(dir) = &args.plot {
        println!("plots: {}", dir.display());
    }
    Ok(true)
}

#[derive(Args)]
pub struct RunArgs {
    /// The scenario: a manifest with nodes, [[faults]], optional [load] and [checks].
    #[arg(value_name = "MANIFEST", required_unless_present = "manifest")]
    manifest_path: Option<PathBuf>,
    /// The manifest, as an option (same as the positional MANIFEST).
    #[arg(long, value_name = "FILE", conflicts_with = "manifest_path")]
    manifest: Option<PathBuf>,
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
}

/// Starts the manifest's devnet, records it while the faults and the load run, stops it, and
/// checks and reports the recorded history (`blyan_harness::run`).
pub fn run(args: RunArgs) -> Result<bool> {
    use blyan_harness::run::{self, RunOptions};
    let manifest_path = args
        .manifest_path
        .clone()
        .or(args.manifest.clone())
        .context("give the manifest: devnet run MANIFEST")?;
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(process::default_node_bin);
    let mut settings = UpSettings::new(&args.base, node_bin);
    settings.api_port_base = args.api_port_base;
    settings.p2p_port_base = args.p2p_port_base;
    let options = RunOptions {
        manifest_path,
        seed: args.seed,
        out: args.out.clone(),
        duration_s: args.duration,
        poll_ms: args.poll_ms,
        backend: args.backend.as_deref().map(parse_backend).transpose()?,
        keep: args.keep,
        settings,
    };
    let outcome = run::run(&options, &|line| eprintln!("{line}"))?;
    print_results(&outcome.dir, &outcome.results);
    Ok(outcome.results.passed)
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
