//! `blyan-node start` as a library call: opens the home (keys, genesis, storage, upgrading a
//! database of the first block encoding), starts the P2P swarm, state-syncs when asked, then
//! runs the consensus loop, the inference service and the HTTP(S) API until SIGTERM or SIGINT,
//! and flushes storage. The binary's `main.rs` only parses the command line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::api::{self, ApiState};
use crate::api_tls::{ApiTls, TlsError};
use crate::config::Config;
use crate::genesis::{Genesis, GenesisError};
use crate::home::Home;
use crate::inference::tiles::{ExpertStore, TileError};
use crate::inference::Inference;
use crate::keys::{KeyError, NodeKey, ValidatorKey};
use crate::metrics::Metrics;
use crate::node::{Node, NodeError, NodeSettings, Submission};
use crate::p2p::{P2pCommand, P2pCommands, P2pError, P2pEvent, P2pHandle};
use crate::statesync::StateSyncError;
use crate::storage::{Storage, StorageError};

/// Why the node did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("api.tls: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the node needs {path} (written by `blyan-node init` or `devnet up`): {source}")]
    Genesis { path: String, source: GenesisError },
    #[error("{config}: chain_id {configured:?} differs from {genesis}: chain_id {found:?}")]
    ChainId {
        config: String,
        configured: String,
        genesis: String,
        found: String,
    },
    #[error(transparent)]
    Upgrade(#[from] crate::migrate::v1::V1Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    P2p(#[from] P2pError),
    #[error("state sync failed (start without --state-sync to replay blocks): {0}")]
    StateSync(#[from] StateSyncError),
    #[error("inference: {0}")]
    Experts(#[from] TileError),
    #[error("{field}: cannot listen on {address}: {source}")]
    Listen {
        field: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("consensus loop stopped: {0}")]
    Node(#[from] NodeError),
    #[error(
        "no space left on device: {path} has {free_bytes} bytes free; the database stopped \
         writing ({detail}). Nothing committed is lost: free space and start the node again"
    )]
    NoSpace {
        path: String,
        free_bytes: u64,
        /// The storage error as RocksDB reported it.
        detail: String,
    },
}

/// Bytes free to an unprivileged writer on the filesystem holding `path` (`None`: unknown).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills in.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A storage error on a full disk, said as such: RocksDB reports the first failed write
/// (ENOSPC) once and then only "Writer has previous error".
fn diagnose(error: ServiceError, data: &std::path::Path) -> ServiceError {
    /// Less than this free is "full" (RocksDB needs room for a WAL block or a flush).
    const FULL_BELOW: u64 = 1 << 20;
    let storage = matches!(
        error,
        ServiceError::Storage(_) | ServiceError::Node(NodeError::Storage(_))
    );
    match free_bytes(data) {
        Some(free) if storage && free < FULL_BELOW => ServiceError::NoSpace {
            path: data.display().to_string(),
            free_bytes: free,
            detail: error.to_string(),
        },
        _ => error,
    }
}

/// The home's genesis, checked to be for the configured chain.
pub fn load_genesis(home: &Home, config: &Config) -> Result<Genesis, ServiceError> {
    let genesis = Genesis::load(&home.genesis()).map_err(|source| ServiceError::Genesis {
        path: home.genesis().display().to_string(),
        source,
    })?;
    if genesis.chain_id != config.chain_id {
        return Err(ServiceError::ChainId {
            config: home.config().display().to_string(),
            configured: config.chain_id.clone(),
            genesis: home.genesis().display().to_string(),
            found: genesis.chain_id,
        });
    }
    Ok(genesis)
}

/// A configured file path: relative ones are under the node home; "" stays "" (not set).
fn under_home(home: &Home, path: &str) -> String {
    if path.is_empty() || std::path::Path::new(path).is_absolute() {
        path.to_string()
    } else {
        home.root().join(path).display().to_string()
    }
}

/// The configured file paths, resolved under the home.
fn resolve_paths(home: &Home, config: &mut Config) {
    config.p2p.allowlist_file = under_home(home, &config.p2p.allowlist_file);
    config.p2p.revoked_file = under_home(home, &config.p2p.revoked_file);
    let tls = &mut config.api.tls;
    for path in [
        &mut tls.cert_file,
        &mut tls.key_file,
        &mut tls.client_ca_file,
        &mut tls.crl_file,
        &mut tls.ca_key_file,
    ] {
        *path = under_home(home, path);
    }
}

/// What `start` opens before the async runtime: keys, genesis, storage, certificates.
struct Opened {
    home: Home,
    config: Config,
    api_tls: Option<Arc<ApiTls>>,
    node_key: NodeKey,
    validator_key: ValidatorKey,
    genesis: Genesis,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
}

/// Runs the node until SIGTERM or SIGINT (`state_sync`: fetch a verified state snapshot first,
/// waiting this long for offers, when the database is empty); storage is flushed either way.
pub fn start(
    home: &Home,
    mut config: Config,
    state_sync: Option<Duration>,
) -> Result<(), ServiceError> {
    resolve_paths(home, &mut config);
    let api_tls = match config.api.tls.enabled {
        true => Some(ApiTls::new(config.api.tls.clone())?),
        false => None,
    };
    let node_key = NodeKey::read(&home.node_key())?;
    let validator_key = ValidatorKey::read(&home.validator_key())?;
    let genesis = load_genesis(home, &config)?;
    // A database of the first block encoding is upgraded in place first (migrate/v1.rs).
    if let Some(report) = crate::migrate::v1::upgrade(&home.data(), &config.storage, &genesis)? {
        tracing::info!(
            blocks = report.blocks,
            written = report.imported,
            kept = %report.kept.display(),
            "upgraded a database of the first block encoding: its blocks are imported blocks now"
        );
    }
    let storage = Arc::new(Storage::open(&home.data(), &config.storage)?);
    let metrics = Arc::new(Metrics::new(crate::VERSION, crate::GIT_COMMIT));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    let opened = Opened {
        home: home.clone(),
        config,
        api_tls,
        node_key,
        validator_key,
        genesis,
        storage: storage.clone(),
        metrics,
    };
    let result = runtime.block_on(run(opened, state_sync));
    // The loop's error, when there is one, is the cause; a flush failing after it says less.
    match (result, storage.flush()) {
        (Err(error), flushed) => {
            if let Err(flush) = flushed {
                tracing::error!(%flush, "storage not flushed");
            }
            return Err(diagnose(error, &home.data()));
        }
        (Ok(()), Err(flush)) => return Err(diagnose(flush.into(), &home.data())),
        (Ok(()), Ok(())) => {}
    }
    tracing::info!(
        height = storage.tip().height,
        "storage flushed; node stopped cleanly"
    );
    Ok(())
}

async fn run(opened: Opened, state_sync: Option<Duration>) -> Result<(), ServiceError> {
    let Opened {
        home,
        config,
        api_tls,
        node_key,
        validator_key,
        genesis,
        storage,
        metrics,
    } = opened;
    let peer_id = node_key.peer_id();
    let opened_at = storage.tip().height;
    let (p2p, mut events, bound) = crate::p2p::spawn_counted(
        node_key.keypair.clone(),
        &config.p2p,
        &config.chain_id,
        metrics.refused_inputs.clone(),
    )
    .await?;
    metrics.attach_p2p(p2p.gossip_metrics.clone());
    tokio::spawn(reload_on_sighup(p2p.commands.clone()));
    let synced_at = match state_sync {
        Some(wait) => run_state_sync(&p2p, &mut events, &genesis, &storage, wait).await?,
        None => None,
    };
    let settings = NodeSettings {
        genesis,
        consensus: config.consensus.clone(),
        mempool: config.mempool.clone(),
        validator_key: validator_key.signing.clone(),
        devnet: config.devnet.clone(),
    };
    let mut node = Node::new(settings, storage.clone(), p2p.clone(), metrics.clone())?;
    {
        let shared = node.shared();
        let mut view = shared.view.write().expect("view lock poisoned");
        view.started_at_height = opened_at;
        view.state_synced_at = synced_at.as_ref().map(|(height, _)| *height);
    }
    if let Some((_, peers)) = synced_at {
        node.connected(peers);
    }
    let (submit_tx, submit_rx) = mpsc::channel(4096);
    let inference = start_inference(&home, &config, &p2p, &node, &validator_key, &submit_tx)?;
    let state = Arc::new(ApiState {
        storage: storage.clone(),
        metrics: metrics.clone(),
        node_id: peer_id.to_string(),
        moniker: config.moniker.clone(),
        chain_id: config.chain_id.clone(),
        checkpoints_dir: home.checkpoints(),
        max_body_bytes: config.api.max_body_bytes as usize,
        node: node.shared(),
        net: p2p.info.clone(),
        submissions: submit_tx,
        inference,
        tls: api_tls.clone(),
        p2p_commands: Some(p2p.commands.clone()),
        devnet: config.devnet.enabled.then(|| config.devnet.clone()),
        limiter: api::rate_limiter(config.api.rate_limit_per_s, config.api.rate_limit_burst),
        validator_public_key: validator_key.public_hex(),
        keys_dir: home.keys_dir(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (bound_api, api) = serve_api(&config, state, api_tls.clone(), &metrics, &stop_rx).await?;
    let validator = node
        .shared()
        .view
        .read()
        .expect("view lock poisoned")
        .validator_index;
    tracing::info!(
        node_id = %peer_id,
        moniker = %config.moniker,
        api = %bound_api,
        https = api_tls.is_some(),
        p2p = ?bound.iter().map(|a| format!("{a}/p2p/{peer_id}")).collect::<Vec<_>>(),
        height = storage.tip().height,
        validator = ?validator,
        version = crate::LONG_VERSION,
        "node started"
    );
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    if let Some(tls) = api_tls {
        tokio::spawn(tls.maintain());
    }
    let outcome = run_node(node, events, submit_rx, stop_rx).await;
    // The API stops before storage is flushed, whether the loop ended on a signal or an error.
    for server in api {
        server.abort();
    }
    drop(p2p);
    outcome
}

/// State sync before the consensus loop, when the database is empty: the height reached and
/// the peers it met (their `Connected` events went to state sync).
async fn run_state_sync(
    p2p: &P2pHandle,
    events: &mut mpsc::Receiver<P2pEvent>,
    genesis: &Genesis,
    storage: &Storage,
    wait: Duration,
) -> Result<Option<(u64, Vec<libp2p::PeerId>)>, ServiceError> {
    if storage.tip().height != 0 {
        tracing::info!(
            height = storage.tip().height,
            "--state-sync ignored: the database already holds a chain"
        );
        return Ok(None);
    }
    tracing::info!(?wait, "state sync: waiting for snapshot offers");
    let synced = crate::statesync::run(p2p, events, genesis, storage, wait, &|line| {
        tracing::info!("state sync: {line}")
    })
    .await?;
    tracing::info!(
        height = synced.height,
        keys = synced.keys,
        epochs_verified = synced.epochs_verified,
        elapsed_ms = synced.elapsed.as_millis() as u64,
        "state sync done; block sync continues from the next height"
    );
    Ok(Some((synced.height, synced.peers)))
}

/// The inference service when `[inference]` is on (it answers peers' tile requests and
/// registers local models on chain); without it, peers' tile requests are refused at once.
fn start_inference(
    home: &Home,
    config: &Config,
    p2p: &P2pHandle,
    node: &Node,
    validator_key: &ValidatorKey,
    submissions: &mpsc::Sender<Submission>,
) -> Result<Option<Arc<Inference>>, ServiceError> {
    let requests = p2p
        .tile_requests
        .lock()
        .expect("tile request lock poisoned")
        .take();
    if !config.inference.enabled {
        // Nobody takes tile requests: peers are told at once.
        drop(requests);
        return Ok(None);
    }
    let service = Arc::new(Inference::new(
        ExpertStore::open(home.experts())?,
        node.shared().metrics.inference.clone(),
        Some(p2p.clone()),
        Some(crate::inference::chain_registry(
            node.shared().state.clone(),
        )),
        crate::inference::InferenceSettings {
            cache_bytes: config.inference.cache_mib << 20,
            max_new_tokens: config.inference.max_new_tokens,
            default_model: config.inference.model.clone(),
        },
    ));
    if let Some(requests) = requests {
        tokio::spawn(service.clone().serve_peers(requests, p2p.commands.clone()));
    }
    tokio::spawn(service.clone().register_local(
        validator_key.signing.clone(),
        config.chain_id.clone(),
        node.shared().state.clone(),
        submissions.clone(),
    ));
    Ok(Some(service))
}

/// Binds `api.listen` (and `api.tls.listen`, where HTTPS has its own port and `api.listen`
/// stays plain HTTP) and serves the API until `stop`; returns the bound plain address and the
/// server tasks.
async fn serve_api(
    config: &Config,
    state: Arc<ApiState>,
    api_tls: Option<Arc<ApiTls>>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> Result<(SocketAddr, Vec<tokio::task::JoinHandle<()>>), ServiceError> {
    let listen = config.api_listen();
    let listener = bind("api.listen", &listen.to_string()).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServiceError::Listen {
            field: "api.listen",
            address: listen.to_string(),
            source,
        })?;
    let tls_listen = config.api.tls.listen.as_str();
    let (plain_tls, https) = match api_tls {
        Some(tls) if !tls_listen.is_empty() => {
            (None, Some((bind("api.tls.listen", tls_listen).await?, tls)))
        }
        tls => (tls, None),
    };
    let refused = metrics.refused_inputs.clone();
    let router = api::router(state);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let mut servers = Vec::new();
    if let Some((tls_listener, tls)) = https {
        let serve = crate::api_tls::serve(
            tls_listener,
            router.clone(),
            Some(tls),
            refused.clone(),
            stopped(stop.clone()),
        );
        servers.push(tokio::spawn(serve));
    }
    let serve = crate::api_tls::serve(listener, router, plain_tls, refused, stopped(stop.clone()));
    servers.push(tokio::spawn(serve));
    Ok((bound, servers))
}

async fn bind(field: &'static str, address: &str) -> Result<tokio::net::TcpListener, ServiceError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServiceError::Listen {
            field,
            address: address.to_string(),
            source,
        })
}

/// The consensus loop until `stop` turns true.
async fn run_node(
    node: Node,
    events: mpsc::Receiver<P2pEvent>,
    submissions: mpsc::Receiver<Submission>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    node.run(events, submissions, async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await?;
    Ok(())
}

/// SIGHUP: re-read the allowlist and revocation files now (they are also re-read within a
/// second of changing).
async fn reload_on_sighup(commands: P2pCommands) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: lists reload only when their files change");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the peer allowlist and revocation list");
        if commands.send(P2pCommand::ReloadAccess).is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs once");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler installs once");
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}
