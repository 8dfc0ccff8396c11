//! `blyan-node`: initialise a node home, run the node, make checkpoints, import legacy chains
//! and measure storage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use blyan_node::bench;
use blyan_node::block::Block;
use blyan_node::config::{check_name, Config, LogFormat};
use blyan_node::genesis::{Genesis, GenesisValidator};
use blyan_node::home::Home;
use blyan_node::keys::{NodeKey, ValidatorKey};
use blyan_node::storage::{legacy, Durability, Storage, StorageConfig};

use blyan_node::LONG_VERSION;

/// The Blyan node.
///
/// Start with `blyan-node init --home DIR`, then `blyan-node start --home DIR`.
#[derive(Parser)]
#[command(name = "blyan-node", version = LONG_VERSION, long_version = LONG_VERSION)]
struct Cli {
    /// Log format: human (default) or json. For `start` this overrides log.format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct HomeArg {
    /// Node home directory (config.toml, keys/, data/, checkpoints/).
    #[arg(long, env = "BLYAN_HOME", value_name = "DIR")]
    home: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node home: identity key, validator key and a documented config.toml.
    Init {
        #[command(flatten)]
        home: HomeArg,
        /// Human-readable node name.
        #[arg(long, default_value = "node0")]
        moniker: String,
        /// Chain id written to config.toml.
        #[arg(long, default_value = "blyan-devnet")]
        chain_id: String,
        /// Replace existing keys and config (the old keys are lost).
        #[arg(long)]
        force: bool,
    },
    /// Run the node until SIGINT or SIGTERM (config: file, then BLYAN_* variables, then flags).
    Start(StartArgs),
    /// Create a RocksDB checkpoint under HOME/checkpoints/<height> (node must be stopped;
    /// for a running node use `POST /checkpoints`).
    Checkpoint {
        #[command(flatten)]
        home: HomeArg,
    },
    /// Import a legacy file-based chain (docs/STORAGE_ARCHITECTURE.md) into an initialised home.
    Migrate {
        /// The legacy directory (blocks/<index>.json, experts/).
        #[arg(long, value_name = "LEGACY_DIR")]
        from: PathBuf,
        #[command(flatten)]
        home: HomeArg,
    },
    /// Run a DNS seeder: crawl the network from the bootstrap nodes (identify and Kademlia),
    /// check every node found with a P2P handshake (TLS 1.3, its peer id verified), and answer
    /// A/AAAA <domain> and TXT _dnsaddr.<domain> with the healthy ones only. Nodes use it
    /// with p2p.bootstrap_dns = ["<domain>"] (docs/NETWORKING.md).
    Seeder {
        /// The domain to answer for, e.g. seed.example.org (delegate it to this host with NS
        /// records).
        #[arg(long)]
        domain: String,
        /// UDP and TCP address of the DNS server.
        #[arg(long, default_value = "0.0.0.0:53")]
        listen: std::net::SocketAddr,
        /// A node to start the crawl from: /ip4/<ip>/tcp/<port>/p2p/<peer id> (repeat for
        /// more).
        #[arg(long = "bootstrap", required = true)]
        bootstrap: Vec<String>,
        /// Seconds between health checks of every node; a node that stops answering leaves
        /// the answers within this time.
        #[arg(long, default_value_t = 10)]
        health_interval_s: u64,
        /// Seconds between Kademlia walks.
        #[arg(long, default_value_t = 30)]
        crawl_interval_s: u64,
        /// Time to live of the answers, in seconds.
        #[arg(long, default_value_t = 30)]
        ttl: u32,
        /// Most nodes per answer.
        #[arg(long, default_value_t = 16)]
        max_answers: usize,
    },
    /// Ask a DNS server (a seeder) for a name's A or TXT records COUNT times and print the
    /// answer and the answer times (p50/p99).
    SeederQuery {
        /// The DNS server, ip:port.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// The name, e.g. seed.example.org or _dnsaddr.seed.example.org.
        #[arg(long)]
        name: String,
        /// Record type: a, aaaa or txt.
        #[arg(long, default_value = "txt")]
        kind: String,
        /// Queries to send (one at a time).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Ask over TCP (what a resolver does after a UDP answer with TC set: one too long for
        /// a datagram, such as a long _dnsaddr list).
        #[arg(long)]
        tcp: bool,
    },
    /// Exit 0 if the node's API answers `GET /health` with 200 within 2 s (for container
    /// health checks, where no curl exists).
    Health {
        /// The API address, e.g. 127.0.0.1:26657.
        #[arg(long, default_value = "127.0.0.1:26657")]
        api: String,
    },
    /// Measure P2P on loopback: connection establishment and TLS 1.3 handshake times against
    /// a real listener, one link's throughput with TLS 1.3 against plaintext TCP, and gossip
    /// latency of signed votes to every node of an N-node mesh.
    BenchP2p {
        /// Connections to time.
        #[arg(long, default_value_t = 200)]
        connections: u32,
        /// Nodes in the gossip mesh (0 skips the gossip part).
        #[arg(long, default_value_t = 20)]
        gossip_nodes: usize,
        /// Votes to gossip.
        #[arg(long, default_value_t = 300)]
        gossip_messages: usize,
        /// MiB streamed per run over one link, plaintext and TLS 1.3 (5 runs each).
        #[arg(long, default_value_t = 256)]
        link_mib: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure synced block-commit latency (p50, p99, max) for several block sizes.
    BenchStorage {
        /// Directory for the temporary databases (default: the system temp dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Timed commits per size (after a short warm-up).
        #[arg(long, default_value_t = 500)]
        blocks: u64,
        /// Block sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1KiB,64KiB,1MiB")]
        sizes: Vec<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mixture-of-experts weights in a node home: generate a model, list what is stored.
    Experts {
        #[command(subcommand)]
        action: ExpertsCommand,
    },
    /// Measure inference on this machine: expert load time (cold from disk, warm from the
    /// page cache), the forward pass over 32 tokens, and generation tokens/s, on a model
    /// generated into DIR (the default model unless told otherwise).
    BenchInfer {
        /// Where to generate the model (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        shape: ModelShape,
        /// Timed repetitions (expert loads and forward passes).
        #[arg(long, default_value_t = 8)]
        runs: usize,
        /// Tokens generated per timed generation.
        #[arg(long, default_value_t = 16)]
        new_tokens: u32,
        /// Print one JSON object (with the logits, for bench/moe_torch.py).
        #[arg(long)]
        json: bool,
    },
    /// Certificates for the API's HTTPS and admin client certificates: a small CA.
    Certs {
        #[command(subcommand)]
        action: CertsCommand,
    },
    /// Replace this node's identity key (its peer id) and keep its validator key: the old key
    /// is kept as keys/node_key.<old id>.retired.json and a statement signed by the validator
    /// key (served at GET /identity) links the two ids. Stop the node first; add the new id
    /// to peers' allowlists before restarting it (docs/SECURITY.md).
    RotateNodeKey {
        #[command(flatten)]
        home: HomeArg,
    },
    /// Test aid for the crash-safety test: commit blocks forever (up to --max-blocks), printing
    /// `ack <height> <hash>` after each commit returns.
    #[command(hide = true)]
    StressWrite {
        #[command(flatten)]
        home: HomeArg,
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 100_000)]
        max_blocks: u64,
        /// Disable the WAL, to show that the crash test catches lost commits.
        #[arg(long, conflicts_with = "unsafe_unsynced_wal")]
        unsafe_no_wal: bool,
        /// Write the WAL without fsync, to show that the power-loss test catches lost commits
        /// (a SIGKILL alone does not: the kernel keeps the writes).
        #[arg(long)]
        unsafe_unsynced_wal: bool,
    },
}

// The flags of `start` (the variant's doc comment above is its help).
#[derive(clap::Args)]
struct StartArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Overrides api.listen, e.g. 127.0.0.1:26657.
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<String>,
    /// Overrides moniker.
    #[arg(long)]
    moniker: Option<String>,
    /// Overrides log.level, e.g. debug or "info,blyan_node=debug".
    #[arg(long)]
    log_level: Option<String>,
    /// Initialise the home first (as `init` with defaults) if it has no config.toml yet.
    #[arg(long)]
    init: bool,
    /// With an empty database: start from a peer's state snapshot, verified against the
    /// app hash of its height (following the validator set from genesis, one commit per
    /// epoch), instead of replaying every block. Ignored when the database holds a chain.
    #[arg(long)]
    state_sync: bool,
    /// How long state sync waits for a peer's snapshot offer before it gives up.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    state_sync_wait_s: u64,
}

/// The shape of a generated model (defaults: the default model, 4 MiB experts).
#[derive(Args, Clone)]
struct ModelShape {
    /// Weights are a pure function of this seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Experts per layer.
    #[arg(long, default_value_t = 8)]
    experts: usize,
    /// Model width.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Each expert's hidden width (3 x dim x hidden x 4 bytes per expert).
    #[arg(long, default_value_t = 1365)]
    hidden: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 1024)]
    vocab: usize,
    /// Experts each token is routed to.
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Longest sequence (prompt plus generated tokens).
    #[arg(long, default_value_t = 128)]
    max_seq: usize,
}

impl ModelShape {
    fn config(&self) -> blyan_node::inference::model::MoeConfig {
        blyan_node::inference::model::MoeConfig {
            vocab: self.vocab,
            dim: self.dim,
            hidden: self.hidden,
            layers: self.layers,
            experts: self.experts,
            top_k: self.top_k,
            max_seq: self.max_seq,
            seed: self.seed,
        }
    }
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a certificate authority in DIR: ca.crt, ca.key (0600), an empty ca.crl, index.json.
    InitCa {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Blyan devnet CA")]
        name: String,
        /// Lifetime: 90s, 15m, 12h or 30d (a bare number is days).
        #[arg(long, default_value = "3650d")]
        valid_for: String,
        /// Replace an existing CA (everything it issued stops verifying).
        #[arg(long)]
        force: bool,
    },
    /// Issue a server certificate (for a node's API) or a client certificate (for the admin
    /// endpoints), signed by the CA in DIR: NAME.crt and NAME.key.
    Issue {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Certificate name (its common name and file names).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "server")]
        kind: blyan_node::pki::CertKind,
        /// Subject alternative names of a server certificate (DNS names or IP addresses;
        /// default: localhost and 127.0.0.1). Repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
        /// Lifetime: 90s, 15m, 12h or 30d (a bare number is days).
        #[arg(long, default_value = "90d")]
        valid_for: String,
        /// Where NAME.crt and NAME.key go (default: DIR).
        #[arg(long, value_name = "OUT_DIR")]
        out: Option<PathBuf>,
    },
    /// Revoke the certificates issued as NAME (or with serial NAME) and re-sign ca.crl; nodes
    /// reload it within a second and refuse those client certificates.
    Revoke {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Certificate name or hex serial.
        #[arg(long)]
        name: String,
    },
    /// List the certificates the CA in DIR issued.
    List {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExpertsCommand {
    /// Generate a model's weights from a seed (no download) into HOME/experts: the base file
    /// and one safetensors file per expert, cut into verified tiles. A running node registers
    /// them on chain (`register_expert`) within seconds and serves their tiles to peers.
    Generate {
        #[command(flatten)]
        home: HomeArg,
        /// The model's name (its files are MODEL/base and MODEL/l<layer>/e<index>).
        #[arg(long, default_value = "moe")]
        model: String,
        #[command(flatten)]
        shape: ModelShape,
        /// Tile size in bytes (at most 4 MiB).
        #[arg(long, default_value_t = blyan_node::inference::tiles::DEFAULT_TILE_BYTES)]
        tile_bytes: u64,
    },
    /// List the experts stored in HOME/experts (name, layer, size, tiles, content hash).
    List {
        #[command(flatten)]
        home: HomeArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", blyan_node::error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Init {
            home,
            moniker,
            chain_id,
            force,
        } => {
            let home = Home::new(home.home);
            init(&home, &moniker, &chain_id, force)?;
            println!(
                "start it with:   blyan-node start --home {}",
                home.root().display()
            );
            Ok(())
        }
        Command::Start(args) => start(args, log_format),
        Command::Checkpoint { home } => {
            init_logging(log_format.unwrap_or(LogFormat::Human), "warn");
            checkpoint(&Home::new(home.home))
        }
        Command::Migrate { from, home } => {
            init_logging(log_format.unwrap_or(LogFormat::Human), "warn");
            migrate(&from, &Home::new(home.home))
        }
        Command::BenchStorage {
            dir,
            blocks,
            sizes,
            json,
        } => bench_storage(dir, blocks, &sizes, json),
        Command::Health { api } => health(&api),
        Command::Seeder {
            domain,
            listen,
            bootstrap,
            health_interval_s,
            crawl_interval_s,
            ttl,
            max_answers,
        } => run_seeder(
            domain,
            listen,
            &bootstrap,
            health_interval_s,
            crawl_interval_s,
            ttl,
            max_answers,
        ),
        Command::SeederQuery {
            server,
            name,
            kind,
            count,
            tcp,
        } => seeder_query(server, &name, &kind, count, tcp),
        Command::BenchP2p {
            connections,
            gossip_nodes,
            gossip_messages,
            link_mib,
            json,
        } => bench_p2p(connections, gossip_nodes, gossip_messages, link_mib, json),
        Command::StressWrite {
            home,
            size,
            max_blocks,
            unsafe_no_wal,
            unsafe_unsynced_wal,
        } => {
            let durability = match (unsafe_no_wal, unsafe_unsynced_wal) {
                (true, _) => Durability::UnsafeNoWal,
                (false, true) => Durability::UnsafeUnsyncedWal,
                (false, false) => Durability::Synced,
            };
            stress_write(&home.home, size, max_blocks, durability)
        }
        Command::Experts { action } => experts(action),
        Command::Certs { action } => certs(action),
        Command::RotateNodeKey { home } => rotate_node_key(home),
        Command::BenchInfer {
            dir,
            shape,
            runs,
            new_tokens,
            json,
        } => bench_infer(dir, &shape, runs, new_tokens, json),
    }
}

/// `blyan-node start`: the config with the command line's overrides, then the service.
fn start(args: StartArgs, log_format: Option<LogFormat>) -> Result<()> {
    let StartArgs {
        home,
        api_listen,
        moniker,
        log_level,
        init: init_first,
        state_sync,
        state_sync_wait_s,
    } = args;
    let home = Home::new(home.home);
    if init_first && !home.config().exists() {
        init(
            &home,
            moniker.as_deref().unwrap_or("node0"),
            "blyan-devnet",
            false,
        )?;
    }
    let mut config = load_config(&home)?;
    let mut overridden = false;
    if let Some(listen) = api_listen {
        config.api.listen = listen;
        overridden = true;
    }
    if let Some(moniker) = moniker {
        config.moniker = moniker;
        overridden = true;
    }
    if let Some(level) = log_level {
        config.log.level = level;
        overridden = true;
    }
    if let Some(format) = log_format {
        config.log.format = format;
    }
    if overridden {
        config.validate("command line")?;
    }
    init_logging(config.log.format, &config.log.level);
    let state_sync = state_sync.then(|| std::time::Duration::from_secs(state_sync_wait_s));
    Ok(blyan_node::service::start(&home, config, state_sync)?)
}

/// `blyan-node rotate-node-key`: a new node key, vouched for by the validator key.
fn rotate_node_key(home: HomeArg) -> Result<()> {
    let home = Home::new(home.home);
    require_home(&home)?;
    let validator = ValidatorKey::read(&home.validator_key())?;
    let rotation = blyan_node::keys::rotate_node_key(&home.keys_dir(), &validator)?;
    println!("node key rotated; the validator key is unchanged");
    println!("  old peer id: {}", rotation.old_peer_id);
    println!("  new peer id: {}", rotation.new_peer_id);
    println!(
        "  statement:   {} (signed by validator {})",
        home.keys_dir().join("node_key_rotation.json").display(),
        rotation.validator_public_key
    );
    println!(
        "next: add {} to the peers' p2p.allowlist_file (if they use one), restart this node, then bootstrap peers with the new id",
        rotation.new_peer_id
    );
    Ok(())
}

fn certs(action: CertsCommand) -> Result<()> {
    use blyan_node::pki;
    let lifetime = |text: &str| {
        pki::parse_lifetime(text).map_err(|reason| anyhow::anyhow!("--valid-for {reason}"))
    };
    match action {
        CertsCommand::InitCa {
            dir,
            name,
            valid_for,
            force,
        } => {
            let created = pki::init_ca(&dir, &name, lifetime(&valid_for)?, force)?;
            println!("CA {name:?} created:");
            println!("  certificate: {}", created.cert.display());
            println!("  key:         {} (keep it secret)", created.key.display());
            println!("  CRL:         {}", created.crl.display());
            println!(
                "next: blyan-node certs issue --dir {} --name node0 --san 127.0.0.1",
                dir.display()
            );
        }
        CertsCommand::Issue {
            dir,
            name,
            kind,
            san,
            valid_for,
            out,
        } => {
            if kind == pki::CertKind::Client && !san.is_empty() {
                bail!("--san is for server certificates; a client certificate is named by --name");
            }
            let issued = pki::issue(
                &dir,
                &pki::IssueRequest {
                    name: name.clone(),
                    kind,
                    sans: san,
                    lifetime: lifetime(&valid_for)?,
                    out_dir: out,
                },
            )?;
            println!(
                "issued {kind:?} certificate {name:?} serial {} (expires at unix {}):",
                issued.serial, issued.not_after_unix
            );
            println!("  certificate: {}", issued.cert.display());
            println!("  key:         {}", issued.key.display());
        }
        CertsCommand::Revoke { dir, name } => {
            let serials = pki::revoke(&dir, &name)?;
            println!(
                "revoked {} certificate(s) {}; {} re-signed (nodes reload it within a second)",
                serials.len(),
                serials.join(", "),
                pki::CaDir::new(&dir).crl().display()
            );
        }
        CertsCommand::List { dir } => {
            let index = pki::CaDir::new(&dir).read_index()?;
            println!(
                "CA {:?}: {} certificate(s)",
                index.ca_name,
                index.issued.len()
            );
            let now = pki::unix_now();
            for issued in index.issued {
                let state = if issued.revoked {
                    "revoked".to_string()
                } else if (issued.not_after_unix as i64) < now {
                    "expired".to_string()
                } else {
                    format!("valid {}s more", issued.not_after_unix as i64 - now)
                };
                println!(
                    "  {:<20} {:<6} {}  {}",
                    issued.name,
                    format!("{:?}", issued.kind).to_lowercase(),
                    issued.serial,
                    state
                );
            }
        }
    }
    Ok(())
}

fn experts(action: ExpertsCommand) -> Result<()> {
    use blyan_node::inference::tiles::ExpertStore;
    match action {
        ExpertsCommand::Generate {
            home,
            model,
            shape,
            tile_bytes,
        } => {
            let home = Home::new(home.home);
            require_home(&home)?;
            let config = shape.config();
            let store = ExpertStore::open(home.experts())?;
            let started = std::time::Instant::now();
            let bar = indicatif::ProgressBar::new((1 + config.layers * config.experts) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {msg}")
                    .expect("valid template"),
            );
            let written = blyan_node::inference::generate_model(
                &store,
                &model,
                &config,
                tile_bytes,
                &mut |done, _| bar.set_position(done as u64),
            )?;
            bar.finish_and_clear();
            let bytes: u64 = written.iter().map(|manifest| manifest.bytes).sum();
            let tiles: usize = written.iter().map(|manifest| manifest.tiles.len()).sum();
            println!(
                "generated model {model:?} (seed {}): {} files, {} tiles, {:.1} MiB in {:.1} s into {}",
                config.seed,
                written.len(),
                tiles,
                bytes as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64(),
                store.dir().display()
            );
            println!(
                "a running node registers them on chain and serves them; try:\n  curl -s -X POST http://API/infer -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"tokens\":[1,2,3],\"max_new_tokens\":8}}'"
            );
            Ok(())
        }
        ExpertsCommand::List { home } => {
            let home = Home::new(home.home);
            require_home(&home)?;
            let store = ExpertStore::open(home.experts())?;
            let listed = store.list()?;
            if listed.is_empty() {
                println!("no experts in {}", store.dir().display());
            }
            for manifest in listed {
                println!(
                    "{:<24} layer {:>2}  {:>9} bytes  {:>3} tiles  {}",
                    manifest.name,
                    manifest.layer,
                    manifest.bytes,
                    manifest.tiles.len(),
                    manifest.content_hash
                );
            }
            Ok(())
        }
    }
}

fn bench_infer(
    dir: Option<PathBuf>,
    shape: &ModelShape,
    runs: usize,
    new_tokens: u32,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        (1..=1000).contains(&runs),
        "--runs: {runs} is not between 1 and 1000"
    );
    let config = shape.config();
    config.check()?;
    anyhow::ensure!(
        16 + new_tokens as usize <= config.max_seq && config.max_seq >= 32,
        "--new-tokens: 16 prompt tokens + {new_tokens} must fit --max-seq {} (at least 32)",
        config.max_seq
    );
    let temporary = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = dir.unwrap_or_else(|| temporary.path().to_path_buf());
    let report = blyan_node::inference::bench::run(&dir, &config, runs, new_tokens, &mut |line| {
        if !json {
            eprintln!("{line}");
        }
    })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "model: {} layers x {} experts (top {}), dim {}, hidden {}, vocab {}; expert {} bytes in {} tiles; {} threads",
        config.layers, config.experts, config.top_k, config.dim, config.hidden, config.vocab,
        report.expert_bytes, report.tiles_per_expert, report.threads
    );
    println!(
        "expert load (map + verify tiles + tensors), median of {}: cold {:.2} ms, warm {:.2} ms (verify {:.2} ms)",
        report.load_warm_ms.len(),
        report.load_cold_median_ms,
        report.load_warm_median_ms,
        report.verify_warm_median_ms
    );
    println!(
        "forward pass over {} tokens, median of {}: {:.2} ms",
        report.sequence.len(),
        report.forward_ms.len(),
        report.forward_median_ms
    );
    println!(
        "generation: {} tokens from a 16-token prompt, median {:.1} ms: {:.1} tokens/s",
        report.new_tokens,
        blyan_node::inference::bench::median(&report.generate_ms),
        report.tokens_per_s
    );
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn require_home(home: &Home) -> Result<()> {
    if !home.root().is_dir() {
        bail!(
            "home directory {} does not exist (create it with `blyan-node init --home {}`)",
            home.root().display(),
            home.root().display()
        );
    }
    Ok(())
}

fn load_config(home: &Home) -> Result<Config> {
    require_home(home)?;
    Ok(Config::load(&home.config(), std::env::vars())?)
}

fn init(home: &Home, moniker: &str, chain_id: &str, force: bool) -> Result<()> {
    check_name(moniker).map_err(|reason| anyhow::anyhow!("--moniker: {reason}"))?;
    check_name(chain_id).map_err(|reason| anyhow::anyhow!("--chain-id: {reason}"))?;
    if !force {
        for path in [
            home.node_key(),
            home.validator_key(),
            home.config(),
            home.genesis(),
        ] {
            if path.exists() {
                bail!("{} already exists; refusing to overwrite (use --force to replace keys and config)", path.display());
            }
        }
    }
    std::fs::create_dir_all(home.root())
        .with_context(|| format!("cannot create home {}", home.root().display()))?;
    let node_key = NodeKey::generate();
    node_key.write(&home.node_key(), force)?;
    let validator_key = ValidatorKey::generate();
    validator_key.write(&home.validator_key(), force)?;
    let config = Config::new(moniker, chain_id);
    std::fs::write(home.config(), config.template())
        .with_context(|| format!("cannot write {}", home.config().display()))?;
    // A chain of one: this node is its only validator. `devnet up` writes a shared genesis.
    let genesis = Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0),
        validators: vec![GenesisValidator {
            name: moniker.to_string(),
            public_key: validator_key.public_hex(),
            power: 10,
        }],
        accounts: Vec::new(),

        staking: Default::default(),
    };
    genesis
        .save(&home.genesis())
        .with_context(|| format!("cannot write {}", home.genesis().display()))?;
    println!("initialised node home {}", home.root().display());
    println!("  node id:       {}", node_key.peer_id());
    println!("  validator key: {}", validator_key.public_hex());
    println!("  config:        {}", home.config().display());
    println!(
        "  genesis:       {} (this node as the only validator)",
        home.genesis().display()
    );
    println!(
        "start it with:   blyan-node start --home {}",
        home.root().display()
    );
    Ok(())
}

fn checkpoint(home: &Home) -> Result<()> {
    let config = load_config(home)?;
    let storage = Storage::open(&home.data(), &config.storage)?;
    let info = storage.create_checkpoint(&home.checkpoints())?;
    println!(
        "checkpoint of height {} at {}",
        info.height,
        info.path.display()
    );
    for path in info.pruned {
        println!("pruned {}", path.display());
    }
    Ok(())
}

fn migrate(from: &Path, home: &Home) -> Result<()> {
    let config = load_config(home)?;
    if !from.is_dir() {
        bail!("--from {}: not a directory", from.display());
    }
    let (count, _) = legacy::verify(from)?;
    eprintln!("verified {count} legacy blocks in {}", from.display());
    let genesis = blyan_node::service::load_genesis(home, &config)?;
    let storage = Storage::open(&home.data(), &config.storage)?;
    let report = blyan_node::migrate::import(from, &storage, &genesis)?;
    println!(
        "imported {} blocks ({} already present), {} expert files; latest height {}",
        report.blocks_imported,
        report.blocks_already_present,
        report.experts_imported,
        report.latest_height
    );
    Ok(())
}

fn bench_storage(dir: Option<PathBuf>, blocks: u64, sizes: &[String], json: bool) -> Result<()> {
    if blocks == 0 || blocks > 1_000_000 {
        bail!("--blocks: must be between 1 and 1000000");
    }
    let sizes = sizes
        .iter()
        .map(|text| bench::parse_size(text).map_err(|reason| anyhow::anyhow!("--sizes: {reason}")))
        .collect::<Result<Vec<u64>>>()?;
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    let config = StorageConfig::default();
    let mut reports = Vec::new();
    // On a terminal the progress line is rewritten in place; elsewhere (a log, CI) each
    // update is a line of its own.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for size in sizes {
        let report = bench::run_size(&dir, &config, size, blocks, |done| {
            if done % 50 == 0 || done == blocks {
                let line = format!("{size:>8} B blocks: {done}/{blocks} committed");
                if terminal {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        })?;
        if terminal {
            eprintln!();
        }
        reports.push(report);
    }
    if json {
        let output = serde_json::json!({
            "version": LONG_VERSION,
            "dir": dir,
            "storage": config,
            "results": reports,
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(());
    }
    println!(
        "{:>9} {:>6} | {:>17} | {:>17} | {:>17} | {:>14}",
        "block",
        "blocks",
        "ours p50/p99 ms",
        "naive p50/p99 ms",
        "floor p50/p99 ms",
        "p99 ours/naive"
    );
    for report in reports {
        let pair = |latency: &bench::Latency| {
            format!(
                "{:>7.3} / {:>7.3}",
                latency.p50_us as f64 / 1e3,
                latency.p99_us as f64 / 1e3
            )
        };
        println!(
            "{:>9} {:>6} | {} | {} | {} | {:>14.2}",
            report.block_bytes,
            report.blocks,
            pair(&report.ours),
            pair(&report.naive_rocksdb),
            pair(&report.fdatasync_floor),
            report.ours.p99_us as f64 / report.naive_rocksdb.p99_us.max(1) as f64
        );
    }
    Ok(())
}

fn run_seeder(
    domain: String,
    listen: std::net::SocketAddr,
    bootstrap: &[String],
    health_interval_s: u64,
    crawl_interval_s: u64,
    ttl: u32,
    max_answers: usize,
) -> Result<()> {
    use blyan_node::seeder;
    use std::time::Duration;
    if health_interval_s == 0 || crawl_interval_s == 0 {
        bail!("--health-interval-s and --crawl-interval-s must be at least 1");
    }
    let mut addresses = Vec::new();
    for (index, text) in bootstrap.iter().enumerate() {
        let address: libp2p::Multiaddr = text
            .parse()
            .map_err(|error| anyhow::anyhow!("--bootstrap[{index}] {text:?}: {error}"))?;
        addresses.push(address);
    }
    // One line per query from hickory would drown the seeder's own log.
    init_logging(LogFormat::Human, "info,hickory_server=warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let seeder = seeder::start(seeder::SeederConfig {
            domain,
            listen,
            bootstrap: addresses,
            health_interval: Duration::from_secs(health_interval_s),
            crawl_interval: Duration::from_secs(crawl_interval_s),
            ttl,
            max_answers,
        })
        .await?;
        println!("seeder answering on {} (udp and tcp)", seeder.dns_address);
        let table = seeder.table.clone();
        let report = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(health_interval_s.max(10)));
            loop {
                every.tick().await;
                let table = table.read().expect("seed table lock poisoned");
                tracing::info!(
                    known = table.known(),
                    healthy = table.healthy().len(),
                    "seeder"
                );
            }
        });
        tokio::select! {
            _ = seeder.wait() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        report.abort();
        Ok(())
    })
}

fn seeder_query(
    server: std::net::SocketAddr,
    name: &str,
    kind: &str,
    count: u32,
    tcp: bool,
) -> Result<()> {
    use blyan_node::seeder;
    use std::time::Duration;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "a" => seeder::RecordType::A,
        "aaaa" => seeder::RecordType::AAAA,
        "txt" => seeder::RecordType::TXT,
        other => bail!("--kind {other:?}: use a, aaaa or txt"),
    };
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let transport = if tcp {
        seeder::Transport::Tcp
    } else {
        seeder::Transport::Udp
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = Vec::with_capacity(count as usize);
    let mut last = None;
    for _ in 0..count {
        let answer = runtime
            .block_on(seeder::query(
                server,
                name,
                kind,
                transport,
                Duration::from_secs(2),
            ))
            .with_context(|| format!("query {name} at {server}"))?;
        times.push(answer.elapsed.as_secs_f64() * 1000.0);
        last = Some(answer);
    }
    let answer = last.expect("count >= 1");
    println!(
        "{name} {kind}: {} ({} records)",
        answer.code,
        answer.values.len()
    );
    for value in &answer.values {
        println!("  {value}");
    }
    if answer.truncated {
        println!(
            "  (truncated: the whole answer does not fit a UDP datagram; resolvers ask again over TCP: --tcp)"
        );
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "answer time over {count} queries: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

fn health(api: &str) -> Result<()> {
    use std::io::{Read, Write};
    let address: std::net::SocketAddr = api
        .parse()
        .map_err(|_| anyhow::anyhow!("--api: {api:?} is not an IP:port address"))?;
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("cannot connect to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /health HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .context("no HTTP answer from /health")?;
    if &head[9..12] != b"200" {
        bail!("/health answered {}", String::from_utf8_lossy(&head[9..12]));
    }
    Ok(())
}

fn bench_p2p(
    connections: u32,
    gossip_nodes: usize,
    messages: usize,
    link_mib: u64,
    json: bool,
) -> Result<()> {
    use blyan_node::p2p::bench;
    if !(1..=16_384).contains(&link_mib) {
        bail!("--link-mib: must be between 1 and 16384");
    }
    if !(1..=100_000).contains(&connections) {
        bail!("--connections: must be between 1 and 100000");
    }
    if gossip_nodes == 1 || gossip_nodes > 200 {
        bail!("--gossip-nodes: must be 0 (skip) or between 2 and 200");
    }
    if !(1..=100_000).contains(&messages) {
        bail!("--gossip-messages: must be between 1 and 100000");
    }
    init_logging(LogFormat::Human, "error");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handshake = runtime.block_on(bench::handshake(connections))?;
    let link = runtime.block_on(bench::link(link_mib << 20, 5, connections))?;
    let gossip = if gossip_nodes > 0 {
        Some(runtime.block_on(bench::gossip(gossip_nodes, messages))?)
    } else {
        None
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "handshake": handshake,
                "link": link,
                "gossip": gossip,
            }))?
        );
        return Ok(());
    }
    let line = |name: &str, s: &bench::Summary| {
        println!(
            "  {name:<28} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        )
    };
    println!(
        "{} connections to one listener on 127.0.0.1 ({}):",
        handshake.iterations, handshake.tls_version
    );
    line("TCP connect", &handshake.tcp_connect);
    line("TLS 1.3 handshake", &handshake.tls_handshake);
    line("yamux negotiation", &handshake.muxer);
    line("connection (all of it)", &handshake.connection);
    line("TLS 1.3 handshake (HTTPS)", &link.https_handshake);
    println!(
        "one loopback link, {} MiB x {} runs each, alternating ({}):",
        link.bytes_per_run >> 20,
        link.runs,
        link.cipher_suite
    );
    println!(
        "  plaintext TCP  median {:>8.1} MiB/s\n  TLS 1.3        median {:>8.1} MiB/s  ({:.2} of plaintext)",
        link.plaintext_median_mib_s, link.tls_median_mib_s, link.tls_over_plaintext
    );
    if let Some(gossip) = gossip {
        println!(
            "{} signed votes gossiped in a {}-node mesh ({} deliveries lost):",
            gossip.messages, gossip.nodes, gossip.lost_deliveries
        );
        line("publish to one node", &gossip.delivery);
        line("publish to all other nodes", &gossip.all_nodes);
    }
    Ok(())
}

fn stress_write(dir: &Path, size: usize, max_blocks: u64, durability: Durability) -> Result<()> {
    let storage =
        Storage::open_with_durability(&dir.join("data"), &StorageConfig::default(), durability)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready {}", storage.tip().height)?;
    out.flush()?;
    while storage.tip().height < max_blocks {
        let tip = storage.tip();
        let height = tip.height + 1;
        let mut body = vec![(height % 251) as u8; size];
        body[..8.min(size)].copy_from_slice(&height.to_be_bytes()[..8.min(size)]);
        let block = Block::new("stress", height, height, tip.hash, tip.hash, vec![body]);
        storage.commit_block(&block, &[])?;
        writeln!(out, "ack {height} {}", block.hash())?;
        out.flush()?;
    }
    Ok(())
}
