//! The process backend: a devnet of `blyan-node` processes on 127.0.0.1, for machines without
//! Docker (and for fast local loops).
//!
//! `up` writes one home per node under `BASE/NAME/` (keys, `config.toml`, a shared
//! `genesis.json`), starts the processes detached (they outlive the `devnet` command), waits
//! until every node reports the wanted height and records the devnet in `BASE/NAME/devnet.json`;
//! `down` stops the processes it recorded (SIGTERM, then SIGKILL after a grace period).
//!
//! Keys are derived from a seed (recorded in `devnet.json`), so a devnet can be rebuilt
//! identically; the funded accounts' secret keys are written to `accounts.json` for load
//! generators (devnet keys, never for real funds).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::testnet::homes::write_devnet;
use crate::testnet::record::{devnet_dir, load_state, save_state, DevnetState, NodeEntry};
use crate::testnet::{DevnetPlan, NodePlan};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("devnet {name:?} is already up ({running} of its nodes run); stop it first: devnet down --name {name}")]
    AlreadyUp { name: String, running: usize },
    #[error("no devnet {name:?} under {base} (start one with `devnet up`)")]
    NotFound { name: String, base: PathBuf },
    #[error(
        "port {port} ({what}) is in use; pick other ports with --api-port-base / --p2p-port-base"
    )]
    PortInUse { port: u16, what: String },
    #[error("blyan-node binary not found at {0} (build it: cargo build --release -p blyan-node, or set BLYAN_NODE_BIN)")]
    NodeBinary(PathBuf),
    #[error("{0}")]
    Timeout(String),
    /// Node processes exited while the harness waited for them.
    #[error("{0}")]
    Exited(String),
    #[error("key: {0}")]
    Key(String),
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `devnet up --backend process` starts.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub name: String,
    pub base: PathBuf,
    pub nodes: usize,
    pub node_bin: PathBuf,
    /// Nodes started from another binary than `node_bin` (name, binary).
    pub node_bins: Vec<(String, PathBuf)>,
    /// Nodes not started with the devnet (late joiners; a `join` fault starts them).
    pub late: Vec<String>,
    /// Nodes whose data directory goes on a tmpfs of this many MiB (disk faults).
    pub tmpfs: Vec<(String, u64)>,
    /// Nodes whose data directory goes on `blyan-lazyfs` (slow and power-loss disks).
    pub lazyfs: Vec<String>,
    pub chain_id: String,
    pub api_port_base: u16,
    pub p2p_port_base: u16,
    pub seed: u64,
    pub accounts: usize,
    pub account_balance: u64,
    pub timeout_commit_ms: u64,
    pub timeout_propose_ms: u64,
    pub wait_height: u64,
    pub wait_timeout: Duration,
    pub log_level: String,
    /// Node names and stakes (0: a full node); default `nodeI` with stake 10.
    pub stakes: Vec<(String, u64)>,
    pub timeout_prevote_ms: u64,
    pub timeout_precommit_ms: u64,
    /// Devnet-only slowdown added to every commit (0: none); see `[devnet]` in the node config.
    pub commit_delay_ms: u64,
    /// Monikers of validators that equivocate on purpose (devnet Byzantine mode).
    pub equivocators: Vec<String>,
    /// Staking, epoch and slashing parameters written into genesis.
    pub staking: blyan_node::state::StakingParams,
    /// Put every directed P2P link through its own proxy: the proxy API listens on this port
    /// and link `i -> j` on `proxy_port + 1 + i * nodes + j` (all on 127.0.0.1).
    pub proxy_port: Option<u16>,
    /// Devnet Byzantine settings per node moniker.
    pub byzantine: Vec<(String, blyan_node::config::DevnetConfig)>,
    /// Twins: (twin moniker, moniker of the validator whose key it runs).
    pub twins: Vec<(String, String)>,
}

/// Node `i` serves HTTPS on `api_port_base + HTTPS_PORT_OFFSET + i`.
pub const HTTPS_PORT_OFFSET: u16 = 500;

impl UpOptions {
    /// The HTTPS API port of node `index`.
    pub fn https_port(&self, index: usize) -> u16 {
        self.api_port_base + HTTPS_PORT_OFFSET + index as u16
    }

    pub fn new(name: &str, base: &Path, nodes: usize, node_bin: PathBuf) -> UpOptions {
        UpOptions {
            name: name.to_string(),
            base: base.to_path_buf(),
            nodes,
            node_bin,
            chain_id: "blyan-devnet".into(),
            api_port_base: 27000,
            p2p_port_base: 28000,
            seed: 1,
            accounts: 16,
            account_balance: 1_000_000_000,
            timeout_commit_ms: 100,
            timeout_propose_ms: 1000,
            wait_height: 2,
            wait_timeout: Duration::from_secs(60),
            log_level: "info".into(),
            stakes: (0..nodes)
                .map(|index| (format!("node{index}"), 10))
                .collect(),
            timeout_prevote_ms: 500,
            timeout_precommit_ms: 500,
            commit_delay_ms: 0,
            equivocators: Vec::new(),
            staking: Default::default(),
            proxy_port: None,
            byzantine: Vec::new(),
            node_bins: Vec::new(),
            late: Vec::new(),
            tmpfs: Vec::new(),
            lazyfs: Vec::new(),
            twins: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), ProcessError> {
        blyan_node::config::check_name(&self.name)
            .map_err(|reason| ProcessError::Invalid(format!("--name: {reason}")))?;
        blyan_node::config::check_name(&self.chain_id)
            .map_err(|reason| ProcessError::Invalid(format!("--chain-id: {reason}")))?;
        if self.stakes.len() != self.nodes {
            return Err(ProcessError::Invalid(format!(
                "{} node stakes for {} nodes",
                self.stakes.len(),
                self.nodes
            )));
        }
        if !(1..=200).contains(&self.nodes) {
            return Err(ProcessError::Invalid(format!(
                "--nodes: must be between 1 and 200, got {}",
                self.nodes
            )));
        }
        for (flag, base) in [
            ("--api-port-base", self.api_port_base),
            ("--p2p-port-base", self.p2p_port_base),
        ] {
            if base < 1024 || u32::from(base) + self.nodes as u32 > 65535 {
                return Err(ProcessError::Invalid(format!(
                    "{flag}: {base} + {} nodes must stay within 1024..65535",
                    self.nodes
                )));
            }
        }
        if let Some(port) = self.proxy_port {
            let end = u32::from(port) + 1 + (self.nodes * self.nodes) as u32;
            let range = u32::from(port)..end;
            if port < 1024 || end > 65535 {
                return Err(ProcessError::Invalid(format!(
                    "proxy port {port} + {} link ports must stay within 1024..65535",
                    self.nodes * self.nodes
                )));
            }
            for (flag, base) in [
                ("--api-port-base", self.api_port_base),
                ("--p2p-port-base", self.p2p_port_base),
                (
                    "HTTPS API (--api-port-base + 500)",
                    self.api_port_base.saturating_add(HTTPS_PORT_OFFSET),
                ),
            ] {
                let other = u32::from(base)..u32::from(base) + self.nodes as u32;
                if other.start < range.end && range.start < other.end {
                    return Err(ProcessError::Invalid(format!(
                        "the link proxies' ports {}..{} overlap {flag} {base}",
                        range.start, range.end
                    )));
                }
            }
        }
        let api = u32::from(self.api_port_base)..u32::from(self.api_port_base) + self.nodes as u32;
        let p2p = u32::from(self.p2p_port_base)..u32::from(self.p2p_port_base) + self.nodes as u32;
        if api.start < p2p.end && p2p.start < api.end {
            return Err(ProcessError::Invalid(
                "--api-port-base and --p2p-port-base ranges overlap".into(),
            ));
        }
        let https_start = u32::from(self.api_port_base) + u32::from(HTTPS_PORT_OFFSET);
        let https = https_start..https_start + self.nodes as u32;
        if https.end > 65535 {
            return Err(ProcessError::Invalid(format!(
                "--api-port-base: the HTTPS ports {}..{} (API + {HTTPS_PORT_OFFSET}) pass 65535",
                https.start, https.end
            )));
        }
        if https.start < p2p.end && p2p.start < https.end {
            return Err(ProcessError::Invalid(format!(
                "the HTTPS API ports {}..{} (--api-port-base + {HTTPS_PORT_OFFSET}) overlap --p2p-port-base",
                https.start, https.end
            )));
        }
        Ok(())
    }
}

/// Whether process `pid` is gone or a zombie (whatever its command line: a node binary may be
/// a wrapper script).
pub fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether `pid` is a live node process (not a recycled pid of something else).
pub fn is_node_process(pid: u32) -> bool {
    let Ok(command) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    !has_exited(pid) && is_node_command(&command)
}

/// Whether a NUL-separated command line is a node's: the harness starts every node as
/// `PROGRAM start --home HOME` ([`start_node_with`]), whatever the program is called (`--node-bin`,
/// an older release in an upgrade test).
fn is_node_command(command: &[u8]) -> bool {
    let mut args = command.split(|byte| *byte == 0).skip(1);
    args.next() == Some(b"start".as_slice()) && args.next() == Some(b"--home".as_slice())
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn check_port_free(port: u16, what: &str) -> Result<(), ProcessError> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .map(drop)
        .map_err(|_| ProcessError::PortInUse {
            port,
            what: what.to_string(),
        })
}

/// Whether devnet `options.name` can start here: the options hold, the binary is there, no
/// node of an earlier devnet of that name runs (a proxy it left is stopped), every port is free.
fn check_startable(options: &UpOptions) -> Result<(), ProcessError> {
    options.validate()?;
    if !options.node_bin.is_file() {
        return Err(ProcessError::NodeBinary(options.node_bin.clone()));
    }
    if let Ok(previous) = load_state(&options.base, &options.name) {
        let running = previous
            .nodes
            .iter()
            .filter(|node| node.pid.is_some_and(is_node_process))
            .count();
        if running > 0 {
            return Err(ProcessError::AlreadyUp {
                name: options.name.clone(),
                running,
            });
        }
        // A proxy left by a harness killed half way (its nodes are gone): the devnet about to
        // replace this one would lose track of it, so stop it now.
        if let Some(pid) = previous.proxy.as_ref().and_then(|proxy| proxy.pid) {
            crate::links::stop_process(pid);
        }
    }
    for index in 0..options.nodes {
        check_port_free(
            options.api_port_base + index as u16,
            &format!("node{index} API"),
        )?;
        check_port_free(options.https_port(index), &format!("node{index} HTTPS API"))?;
        check_port_free(
            options.p2p_port_base + index as u16,
            &format!("node{index} P2P"),
        )?;
    }
    Ok(())
}

/// Node `index` on loopback at the options' ports: API, HTTPS API beside it, P2P.
pub fn loopback_node(options: &UpOptions, index: usize) -> NodePlan {
    let api = SocketAddr::from(([127, 0, 0, 1], options.api_port_base + index as u16));
    let https = SocketAddr::from(([127, 0, 0, 1], options.https_port(index)));
    let p2p = format!(
        "/ip4/127.0.0.1/tcp/{}",
        options.p2p_port_base + index as u16
    );
    let (moniker, stake) = options
        .stakes
        .get(index)
        .cloned()
        .unwrap_or_else(|| (format!("node{index}"), 10));
    NodePlan {
        moniker,
        stake,
        api_listen: api.to_string(),
        api_url: format!("http://{api}"),
        p2p_listen: p2p.clone(),
        p2p_address: p2p,
        api_https: Some((https.to_string(), format!("https://{https}"))),
    }
}

/// The link proxy process on loopback (API on `proxy_port`, links right above), when asked for.
pub fn loopback_proxy(options: &UpOptions) -> Option<crate::links::ProxyPlan> {
    options.proxy_port.map(|port| crate::links::ProxyPlan {
        dial_host: "127.0.0.1".into(),
        listen_host: "127.0.0.1".into(),
        port_base: port + 1,
        api: format!("127.0.0.1:{port}"),
    })
}

/// The testnet `options` describe (the programmatic form the process tests use; a manifest's
/// testnet comes from `testnet::resolve`).
fn options_plan(options: &UpOptions) -> DevnetPlan {
    DevnetPlan {
        name: options.name.clone(),
        backend: crate::backend::kind::BackendKind::Process,
        chain_id: options.chain_id.clone(),
        seed: options.seed,
        accounts: options.accounts,
        account_balance: options.account_balance,
        timeout_commit_ms: options.timeout_commit_ms,
        timeout_propose_ms: options.timeout_propose_ms,
        timeout_prevote_ms: options.timeout_prevote_ms,
        timeout_precommit_ms: options.timeout_precommit_ms,
        commit_delay_ms: options.commit_delay_ms,
        equivocators: options.equivocators.clone(),
        snapshot_interval: None,
        log_level: options.log_level.clone(),
        node_bin: options.node_bin.clone(),
        nodes: (0..options.nodes)
            .map(|index| loopback_node(options, index))
            .collect(),
        genesis_time_ms: None,
        staking: options.staking.clone(),
        proxy: loopback_proxy(options),
        byzantine: options.byzantine.clone(),
        twins: options.twins.clone(),
        nat: None,
    }
}

/// Writes homes, keys, configs and genesis for every node of a process devnet; returns the
/// devnet's description (no process started yet).
pub fn prepare(options: &UpOptions) -> Result<DevnetState, ProcessError> {
    prepare_plan(options, &options_plan(options))
}

/// Writes the homes of `plan` once `options` say the devnet can start here.
fn prepare_plan(options: &UpOptions, plan: &DevnetPlan) -> Result<DevnetState, ProcessError> {
    check_startable(options)?;
    // A disk left mounted by a run that did not end cleanly would stop the homes' rewrite.
    crate::disk::unmount_under(&devnet_dir(&options.base, &options.name));
    Ok(write_devnet(&options.base, plan)?)
}

/// Starts node `index` of `state` (detached, in its own process group) and records its pid.
pub fn start_node(base: &Path, state: &mut DevnetState, index: usize) -> Result<u32, ProcessError> {
    start_node_with(base, state, index, &[])
}

/// [`start_node`] with extra arguments to `blyan-node start` (e.g. `--state-sync`).
pub fn start_node_with(
    base: &Path,
    state: &mut DevnetState,
    index: usize,
    extra: &[&str],
) -> Result<u32, ProcessError> {
    let node = state.nodes.get(index).ok_or_else(|| {
        ProcessError::Invalid(format!("no node {index} in devnet {:?}", state.name))
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(io(&node.log))?;
    let log_err = log.try_clone().map_err(io(&node.log))?;
    use std::os::unix::process::CommandExt;
    let bin = node.bin.as_ref().unwrap_or(&state.node_bin);
    let child = Command::new(bin)
        .arg("start")
        .arg("--home")
        .arg(&node.home)
        .args(extra)
        .env_remove("BLYAN_HOME")
        // The harness's own variable; the node refuses BLYAN_* names it does not know.
        .env_remove("BLYAN_NODE_BIN")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(io(bin))?;
    let pid = child.id();
    // The child is reaped by init once this process exits; while we live, a background
    // thread waits on it so that a killed node does not linger as a zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    state.nodes[index].pid = Some(pid);
    save_state(base, state)?;
    Ok(pid)
}

/// Sends `signal` to node `index`; true if it was running.
pub fn signal_node(state: &DevnetState, index: usize, signal: i32) -> bool {
    match state.nodes.get(index).and_then(|node| node.pid) {
        Some(pid) if is_node_process(pid) => {
            // SAFETY: kill(2) with a pid we started and just checked is a blyan-node process.
            unsafe { libc::kill(pid as i32, signal) == 0 }
        }
        _ => false,
    }
}

/// The `/status` of a node, if it answers.
pub fn node_status(
    client: &reqwest::blocking::Client,
    node: &NodeEntry,
) -> Option<serde_json::Value> {
    client
        .get(format!("{}/status", node.api))
        .send()
        .ok()?
        .json()
        .ok()
}

/// How long one request of a poll may take: a paused, stopped or isolated node must not hold
/// up the poll (and with it the fault schedule) for long.
pub const POLL_TIMEOUT_MS: u64 = 800;

/// A client whose requests give up after [`POLL_TIMEOUT_MS`], for polls of every node.
pub fn poll_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(POLL_TIMEOUT_MS))
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// `/status` of each node in `indices`, asked all at once (one slow node must not hold up the
/// others' answers); `None` for a node that does not answer.
pub fn node_statuses(
    client: &reqwest::blocking::Client,
    state: &DevnetState,
    indices: &[usize],
) -> Vec<Option<serde_json::Value>> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = indices
            .iter()
            .map(|index| {
                let node = &state.nodes[*index];
                scope.spawn(move || node_status(client, node))
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().unwrap_or(None))
            .collect()
    })
}

/// The nodes among `indices` started as local processes whose process has exited and which
/// do not answer: nothing will bring them to a height.
fn exited(state: &DevnetState, indices: &[usize], heights: &[Option<u64>]) -> Vec<usize> {
    indices
        .iter()
        .zip(heights)
        .filter(|(index, height)| {
            height.is_none() && state.nodes[**index].pid.is_some_and(has_exited)
        })
        .map(|(index, _)| *index)
        .collect()
}

/// Waits until each node in `indices` reports `latest_height >= height`; the error names the
/// nodes that did not get there and their last heights. A node process that has exited (a bad
/// setting, a crash at start) ends the wait at once, naming the node and its log.
pub fn wait_for_height(
    state: &DevnetState,
    indices: &[usize],
    height: u64,
    timeout: Duration,
    mut progress: impl FnMut(&[Option<u64>]),
) -> Result<Vec<u64>, ProcessError> {
    let client = http_client();
    let deadline = Instant::now() + timeout;
    // Ask every node at once: one slow node must not hold up the others' answers.
    let interval = Duration::from_millis(if indices.len() > 20 { 1000 } else { 200 });
    loop {
        let heights: Vec<Option<u64>> = node_statuses(&client, state, indices)
            .into_iter()
            .map(|status| status.and_then(|status| status["latest_height"].as_u64()))
            .collect();
        progress(&heights);
        if heights.iter().all(|h| h.is_some_and(|h| h >= height)) {
            return Ok(heights.into_iter().map(|h| h.unwrap_or(0)).collect());
        }
        let gone = exited(state, indices, &heights);
        if let Some(first) = gone.first() {
            let node = &state.nodes[*first];
            return Err(ProcessError::Exited(format!(
                "{} of {} node processes exited before reaching height {height} ({}{}); \
                 {} ({}) last log lines:\n{}",
                gone.len(),
                indices.len(),
                gone.iter()
                    .take(10)
                    .map(|index| format!("node{index}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if gone.len() > 10 { ", ..." } else { "" },
                node.moniker,
                node.log.display(),
                log_tail(node, 5)
            )));
        }
        if Instant::now() >= deadline {
            let behind: Vec<String> = indices
                .iter()
                .zip(&heights)
                .filter(|(_, h)| !h.is_some_and(|h| h >= height))
                .map(|(index, h)| match h {
                    Some(h) => format!("node{index} at height {h}"),
                    None => format!("node{index} not answering"),
                })
                .collect();
            let shown = behind.len().min(10);
            return Err(ProcessError::Timeout(format!(
                "{} of {} nodes did not reach height {height} within {:.0} s: {}{}",
                behind.len(),
                indices.len(),
                timeout.as_secs_f64(),
                behind[..shown].join(", "),
                if behind.len() > shown { ", ..." } else { "" }
            )));
        }
        std::thread::sleep(interval);
    }
}

/// Checks that the nodes in `indices` hold the same block hash and app hash after execution at
/// every height in `1..=top`; the error names the height, the nodes and both hashes.
pub fn check_agreement(
    state: &DevnetState,
    indices: &[usize],
    top: u64,
) -> Result<(), ProcessError> {
    let client = http_client();
    let fetch = |index: usize, height: u64| -> Result<(String, String), ProcessError> {
        let url = format!("{}/blocks/{height}", state.nodes[index].api);
        let block: serde_json::Value = client
            .get(&url)
            .send()
            .and_then(|response| response.json())
            .map_err(|error| ProcessError::Timeout(format!("GET {url}: {error}")))?;
        let hash = block["hash"].as_str().unwrap_or_default().to_string();
        let app = block["result_app_hash"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if hash.is_empty() {
            return Err(ProcessError::Timeout(format!(
                "node{index} has no block {height}: {block}"
            )));
        }
        Ok((hash, app))
    };
    for height in 1..=top {
        let Some((&first, rest)) = indices.split_first() else {
            return Ok(());
        };
        let reference = fetch(first, height)?;
        let others: Vec<Result<(String, String), ProcessError>> = std::thread::scope(|scope| {
            let asks: Vec<_> = rest
                .iter()
                .map(|&index| {
                    let fetch = &fetch;
                    scope.spawn(move || fetch(index, height))
                })
                .collect();
            asks.into_iter()
                .map(|ask| {
                    ask.join().unwrap_or_else(|_| {
                        Err(ProcessError::Invalid(
                            "agreement check thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        for (&index, other) in rest.iter().zip(others) {
            let other = other?;
            if other.0 != reference.0 {
                return Err(ProcessError::Invalid(format!(
                    "SAFETY: height {height}: node{first} committed {} but node{index} committed {}",
                    reference.0, other.0
                )));
            }
            if other.1 != reference.1 {
                return Err(ProcessError::Invalid(format!(
                    "AGREEMENT: height {height}: app hash {} on node{first} but {} on node{index}",
                    reference.1, other.1
                )));
            }
        }
    }
    Ok(())
}

/// The last lines of a node's log, for error reports.
pub fn log_tail(node: &NodeEntry, lines: usize) -> String {
    let text = std::fs::read_to_string(&node.log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Prepares and starts a devnet and waits for `wait_height` on every node. On failure the
/// started processes are stopped again.
pub fn up(
    options: &UpOptions,
    progress: impl FnMut(&[Option<u64>]),
) -> Result<DevnetState, ProcessError> {
    up_plan(options, &options_plan(options), progress)
}

/// [`up`] of a resolved testnet (`testnet::resolve`); `options` give where it lives, its
/// ports (checked free) and how long to wait.
pub fn up_plan(
    options: &UpOptions,
    plan: &DevnetPlan,
    progress: impl FnMut(&[Option<u64>]),
) -> Result<DevnetState, ProcessError> {
    let mut state = prepare_plan(options, plan)?;
    let dir = devnet_dir(&options.base, &options.name);
    let (tmpfs, lazyfs) = (&options.tmpfs, &options.lazyfs);
    crate::disk::prepare(&mut state, &dir, &options.node_bin, tmpfs, lazyfs)
        .map_err(ProcessError::Invalid)?;
    save_state(&options.base, &state)?;
    for node in state.nodes.iter_mut() {
        if let Some((_, bin)) = options
            .node_bins
            .iter()
            .find(|(name, _)| *name == node.moniker)
        {
            node.bin = Some(bin.clone());
        }
    }
    if let Some(proxy) = state.proxy.clone() {
        let dir = devnet_dir(&options.base, &options.name);
        let pid = crate::links::start_process(&options.node_bin, &dir, &proxy)
            .map_err(|reason| ProcessError::Invalid(format!("link proxy: {reason}")))?;
        if let Some(proxy) = &mut state.proxy {
            proxy.pid = Some(pid);
        }
        save_state(&options.base, &state)?;
    }
    let all: Vec<usize> = (0..state.nodes.len())
        .filter(|&index| !options.late.contains(&state.nodes[index].moniker))
        .collect();
    for &index in &all {
        if let Err(error) = start_node(&options.base, &mut state, index) {
            let _ = down(&options.base, &options.name, Duration::from_secs(5));
            return Err(error);
        }
    }
    if let Err(error) = wait_for_height(
        &state,
        &all,
        options.wait_height,
        options.wait_timeout,
        progress,
    ) {
        if let ProcessError::Exited(_) = error {
            // It names the exited nodes and the first one's log already.
            let _ = down(&options.base, &options.name, Duration::from_secs(5));
            return Err(error);
        }
        let mut report = error.to_string();
        for node in state.nodes.iter().take(3) {
            report.push_str(&format!(
                "\n--- {} ({}) last log lines:\n{}",
                node.moniker,
                node.log.display(),
                log_tail(node, 5)
            ));
        }
        let _ = down(&options.base, &options.name, Duration::from_secs(5));
        return Err(ProcessError::Timeout(report));
    }
    Ok(state)
}

/// What `down` did.
#[derive(Debug, Default)]
pub struct DownReport {
    pub stopped: usize,
    pub killed: usize,
    pub not_running: usize,
}

/// Stops every recorded node: SIGTERM, then SIGKILL for those still running after `grace`.
pub fn down(base: &Path, name: &str, grace: Duration) -> Result<DownReport, ProcessError> {
    let mut state = load_state(base, name)?;
    let mut report = DownReport::default();
    let mut running = Vec::new();
    for index in 0..state.nodes.len() {
        if signal_node(&state, index, libc::SIGTERM) {
            running.push(index);
        } else {
            report.not_running += 1;
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && running
            .iter()
            .any(|index| state.nodes[*index].pid.is_some_and(is_node_process))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for index in running {
        if state.nodes[index].pid.is_some_and(is_node_process) {
            signal_node(&state, index, libc::SIGKILL);
            report.killed += 1;
        } else {
            report.stopped += 1;
        }
    }
    for node in &mut state.nodes {
        node.pid = None;
    }
    if let Some(proxy) = &mut state.proxy {
        if let Some(pid) = proxy.pid.take() {
            crate::links::stop_process(pid);
        }
    }
    // The nodes are down: their FUSE layers write back what they hold and unmount.
    crate::disk::release(&mut state, &devnet_dir(base, name));
    save_state(base, &state)?;
    Ok(report)
}

/// Where the `blyan-node` binary is: `BLYAN_NODE_BIN`, else next to the running executable
/// (cargo puts every binary of the workspace in one directory).
pub fn default_node_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BLYAN_NODE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live one level deeper, in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("blyan-node")
}

/// One HTTPS request to `url` + `path` trusting the devnet's CA (`pki/ca.crt`), presenting the
/// devnet's admin client certificate when `admin`; the HTTP status, or why none came.
pub fn https_status(
    pki: &std::path::Path,
    admin: bool,
    url: &str,
    method: &str,
    path: &str,
) -> Result<u16, String> {
    https_request(pki, admin, url, method, path, "").map(|(status, _)| status)
}

/// An HTTPS request to a devnet node (TLS 1.3, the devnet's CA; with `admin`, the devnet's
/// admin client certificate): the status and the body.
pub fn https_request(
    pki: &std::path::Path,
    admin: bool,
    url: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca.crt")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = if admin {
        let chain =
            vec![CertificateDer::from_pem_file(pki.join("admin.crt")).map_err(|e| e.to_string())?];
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key")).map_err(|e| e.to_string())?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?
    } else {
        builder.with_no_client_auth()
    };
    let address = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url} is not https"))?;
    let host = address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address);
    let mut tcp = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(70)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let mut session = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::Stream::new(&mut session, &mut tcp);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(error.to_string());
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "no HTTP status".to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
