//! Open-loop load for Blyan devnets.
//!
//! Transactions are pre-signed from genesis-funded accounts (each account's nonces in order,
//! each account bound to one node so its nonces arrive in order), then sent **on schedule**:
//! transaction `i` is due at `start + i / rate`, every `tick` the due ones go out as one
//! `POST /txs/batch` per node, whether or not earlier requests have answered. Latencies are
//! measured from the time a transaction was *due*, not from when it was sent, so a stalled
//! node shows up as growing latency, never as a lower request rate (no coordinated omission).
//!
//! Commit latency is due time to the moment the load generator sees the transaction in a
//! committed block (it follows `/blocks/{h}?txs=false` on one node). Everything is bounded:
//! at most `max_txs`, for at most `duration`, then at most `drain` waiting for commits.

pub mod infer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blyan_node::app::Tx;
use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{url}: {reason}")]
    Node { url: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A funded account the load signs with.
#[derive(Clone)]
pub struct Account {
    pub key: SigningKey,
}

#[derive(Deserialize)]
struct AccountFile {
    secret_key: String,
}

/// Reads a devnet's `accounts.json` (`[{"address", "secret_key", "balance"}]`).
pub fn read_accounts(path: &Path) -> Result<Vec<Account>, LoadError> {
    let file_error = |reason: String| LoadError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    let entries: Vec<AccountFile> =
        serde_json::from_str(&text).map_err(|error| file_error(error.to_string()))?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let bytes: [u8; 32] = hex::decode(&entry.secret_key)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| file_error(format!("[{index}].secret_key: not 32 bytes of hex")))?;
            Ok(Account {
                key: SigningKey::from_bytes(&bytes),
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct DevnetFile {
    chain_id: String,
    nodes: Vec<DevnetNode>,
}

#[derive(Deserialize)]
struct DevnetNode {
    api: String,
}

/// A devnet directory (`devnet.json` and `accounts.json`, as `devnet up` writes them): the
/// chain id, the node API URLs and the accounts.
pub fn read_devnet(dir: &Path) -> Result<(String, Vec<String>, Vec<Account>), LoadError> {
    let path = dir.join("devnet.json");
    let file_error = |reason: String| LoadError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|error| file_error(error.to_string()))?;
    let devnet: DevnetFile =
        serde_json::from_str(&text).map_err(|error| file_error(error.to_string()))?;
    let accounts = read_accounts(&dir.join("accounts.json"))?;
    Ok((
        devnet.chain_id,
        devnet.nodes.into_iter().map(|node| node.api).collect(),
        accounts,
    ))
}

/// What to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub chain_id: String,
    /// Node API base URLs (`http://host:port`); accounts are spread over them.
    pub targets: Vec<String>,
    /// Transactions per second.
    pub rate: f64,
    /// Sending stops after this long...
    pub duration: Duration,
    /// ... or after this many transactions.
    pub max_txs: u64,
    /// Due transactions go out every tick, one batch per node.
    pub tick: Duration,
    /// Transactions whose request would exceed this many requests in flight are not sent and
    /// counted as `overload` (the schedule never waits).
    pub max_in_flight: usize,
    /// After sending, wait at most this long for the sent transactions to commit.
    pub drain: Duration,
    /// The node whose blocks are followed (index into `targets`).
    pub follow: usize,
    pub fee: u64,
    /// Keep every latency sample (microseconds), not only the histograms.
    pub keep_samples: bool,
}

impl LoadConfig {
    pub fn new(chain_id: &str, targets: Vec<String>, rate: f64, duration: Duration) -> LoadConfig {
        LoadConfig {
            chain_id: chain_id.into(),
            targets,
            rate,
            duration,
            max_txs: 1_000_000,
            tick: Duration::from_millis(10),
            max_in_flight: 256,
            drain: Duration::from_secs(15),
            follow: 0,
            fee: 1,
            keep_samples: false,
        }
    }

    pub fn validate(&self) -> Result<(), LoadError> {
        if self.targets.is_empty() {
            return Err(invalid("targets", "no node to send to"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0) {
            return Err(invalid(
                "rate",
                format!("{} tx/s; must be in (0, 1000000]", self.rate),
            ));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err(invalid("duration", "must be in (0 s, 3600 s]"));
        }
        if self.max_txs == 0 || self.max_txs > 10_000_000 {
            return Err(invalid("max_txs", "must be in [1, 10000000]"));
        }
        if self.tick < Duration::from_millis(1) || self.tick > Duration::from_secs(1) {
            return Err(invalid("tick", "must be in [1 ms, 1 s]"));
        }
        if self.follow >= self.targets.len() {
            return Err(invalid("follow", "not one of the targets"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be > 0"));
        }
        Ok(())
    }

    /// Transactions the schedule holds.
    pub fn planned(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()).ceil() as u64).clamp(1, self.max_txs)
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// What a load run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub target_rate: f64,
    pub planned: u64,
    /// Transactions handed to a node (its answer may still be a refusal).
    pub sent: u64,
    /// Accepted into a mempool.
    pub accepted: u64,
    /// Seen in a committed block.
    pub committed: u64,
    /// Refusals and failures by kind (`mempool_full`, `rejected`, `http`, `overload`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the first due time to the last one sent.
    pub send_seconds: f64,
    /// `sent / send_seconds`.
    pub achieved_rate: f64,
    /// Committed transactions per second: all committed, over the time from the first due
    /// transaction to the last commit seen (at least the sending time).
    pub committed_tps: f64,
    /// Due time to the node's answer.
    pub submit: Percentiles,
    /// Due time to seen in a committed block.
    pub commit: Percentiles,
    /// Blocks that held this run's transactions, and the mean interval between them.
    pub blocks: u64,
    pub block_interval_ms: f64,
    /// Raw samples in microseconds (with `keep_samples`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submit_samples_us: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_samples_us: Vec<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Signs the schedule: transaction `i` comes from account `i % accounts`, with that account's
/// next nonce; accounts are bound to nodes round-robin. Uses every core.
pub fn sign_schedule(
    config: &LoadConfig,
    accounts: &[Account],
    first_nonces: &[u64],
) -> Vec<(usize, Tx)> {
    let count = config.planned() as usize;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let recipient = accounts[0].key.verifying_key().to_bytes();
    let mut out: Vec<(usize, Tx)> = Vec::with_capacity(count);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(count);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| {
                            let account = i % accounts.len();
                            let nonce = first_nonces[account] + (i / accounts.len()) as u64;
                            let node = account % config.targets.len();
                            let tx = Tx::transfer(
                                &config.chain_id,
                                &accounts[account].key,
                                recipient,
                                1,
                                config.fee,
                                nonce,
                            );
                            (node, tx)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            out.extend(worker.join().expect("signing does not panic"));
        }
    });
    out
}

/// Each account's next nonce, asked of the node it is bound to.
pub async fn next_nonces(
    client: &reqwest::Client,
    targets: &[String],
    accounts: &[Account],
) -> Result<Vec<u64>, LoadError> {
    let mut nonces = Vec::with_capacity(accounts.len());
    for (index, account) in accounts.iter().enumerate() {
        let url = format!(
            "{}/accounts/{}",
            targets[index % targets.len()],
            hex::encode(account.key.verifying_key().to_bytes())
        );
        let body = get_json(client, &url).await?;
        nonces.push(body["next_nonce"].as_u64().ok_or_else(|| LoadError::Node {
            url: url.clone(),
            reason: format!("no next_nonce in {body}"),
        })?);
    }
    Ok(nonces)
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub committed: AtomicU64,
    pub height: AtomicU64,
}

struct Shared {
    /// Due time of every sent transaction not yet seen committed, by hash.
    pending: Mutex<HashMap<[u8; 32], Instant>>,
    submit: Mutex<Histogram<u64>>,
    commit: Mutex<Histogram<u64>>,
    submit_samples: Mutex<Vec<u64>>,
    commit_samples: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// (seen time, transactions of this run) of every block that held some.
    blocks: Mutex<Vec<(Instant, u64)>>,
    in_flight: AtomicU64,
    progress: Arc<Progress>,
    keep_samples: bool,
    /// Accounts with a transaction that was not sent or was refused: their later nonces could
    /// only fill mempools with transactions that never come due, so they are not sent.
    broken: Vec<AtomicBool>,
}

impl Shared {
    fn error(&self, kind: &str, count: u64) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(kind.to_string())
            .or_default() += count;
    }

    fn record(&self, which: &Mutex<Histogram<u64>>, samples: &Mutex<Vec<u64>>, us: u64) {
        let _ = which.lock().expect("histogram lock").record(us.max(1));
        if self.keep_samples {
            samples.lock().expect("samples lock").push(us);
        }
    }
}

/// Runs the load: signs the schedule, sends it on time, follows commits, reports.
pub async fn run(
    config: &LoadConfig,
    accounts: &[Account],
    progress: Arc<Progress>,
) -> Result<Report, LoadError> {
    config.validate()?;
    if accounts.is_empty() {
        return Err(invalid("accounts", "no funded account to sign with"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(config.max_in_flight)
        .build()
        .map_err(|error| invalid("client", error.to_string()))?;
    let nonces = next_nonces(&client, &config.targets, accounts).await?;
    let schedule = sign_schedule(config, accounts, &nonces);
    let shared = Arc::new(Shared {
        pending: Mutex::new(HashMap::with_capacity(schedule.len())),
        submit: Mutex::new(histogram()),
        commit: Mutex::new(histogram()),
        submit_samples: Mutex::new(Vec::new()),
        commit_samples: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
        blocks: Mutex::new(Vec::new()),
        in_flight: AtomicU64::new(0),
        progress: progress.clone(),
        keep_samples: config.keep_samples,
        broken: (0..accounts.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
    });

    // Follow committed blocks from the current tip on.
    let follow_url = config.targets[config.follow].clone();
    let start_height = tip(&client, &follow_url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn(follow(
        client.clone(),
        follow_url,
        start_height + 1,
        shared.clone(),
        stop.clone(),
    ));

    let start = Instant::now();
    let mut requests = send_schedule(config, &client, &schedule, &shared, start).await;
    let send_seconds = start.elapsed().as_secs_f64();
    // Drain: answers, then commits, each bounded.
    let drain_deadline = Instant::now() + config.drain;
    while !requests.is_empty() && Instant::now() < drain_deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), requests.join_next()).await;
    }
    requests.abort_all();
    while Instant::now() < drain_deadline {
        let accepted = progress.accepted.load(Ordering::Relaxed);
        let committed = progress.committed.load(Ordering::Relaxed);
        if committed >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = follower.await;
    Ok(report(config, schedule.len(), &shared, start, send_seconds))
}

/// Sends the schedule on time, each tick's due transactions in one batch per target node;
/// returns the requests still running.
async fn send_schedule(
    config: &LoadConfig,
    client: &reqwest::Client,
    schedule: &[(usize, Tx)],
    shared: &Arc<Shared>,
    start: Instant,
) -> tokio::task::JoinSet<()> {
    let interval = 1.0 / config.rate;
    let accounts = shared.broken.len();
    let mut next = 0usize;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now(), config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    while next < schedule.len() {
        tick.tick().await;
        let now = start.elapsed().as_secs_f64();
        let mut batches: Vec<Vec<(Instant, usize, &Tx)>> = vec![Vec::new(); config.targets.len()];
        while next < schedule.len() && next as f64 * interval <= now {
            let due = start + Duration::from_secs_f64(next as f64 * interval);
            let (node, tx) = &schedule[next];
            let account = next % accounts;
            if shared.broken[account].load(Ordering::Relaxed) {
                shared.error("skipped_after_gap", 1);
            } else {
                batches[*node].push((due, account, tx));
            }
            next += 1;
        }
        for (node, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let url = format!("{}/txs/batch", config.targets[node]);
            if let Some(send) = batch_request(config, client, url, &batch, shared) {
                requests.spawn(send);
            }
        }
        // Reap finished requests without waiting for the others.
        while requests.try_join_next().is_some() {}
    }
    requests
}

/// The request that sends `batch`, its transactions noted as pending; `None` (each counted as
/// `overload`, its accounts marked broken) when `max_in_flight` requests are already waiting.
fn batch_request(
    config: &LoadConfig,
    client: &reqwest::Client,
    url: String,
    batch: &[(Instant, usize, &Tx)],
    shared: &Arc<Shared>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let count = batch.len() as u64;
    if shared.in_flight.load(Ordering::Relaxed) >= config.max_in_flight as u64 {
        shared.error("overload", count);
        for (_, account, _) in batch {
            shared.broken[*account].store(true, Ordering::Relaxed);
        }
        return None;
    }
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    shared.progress.sent.fetch_add(count, Ordering::Relaxed);
    let body = serde_json::json!({
        "txs": batch.iter().map(|(_, _, tx)| hex::encode(tx.encode())).collect::<Vec<_>>()
    });
    {
        let mut pending = shared.pending.lock().expect("pending lock");
        for (due, _, tx) in batch {
            pending.insert(tx.hash().0, *due);
        }
    }
    let dues: Vec<Due> = batch
        .iter()
        .map(|(due, account, tx)| Due {
            hash: tx.hash().0,
            due: *due,
            account: *account,
        })
        .collect();
    let client = client.clone();
    let shared = shared.clone();
    Some(async move {
        send_batch(&client, &url, body, dues, &shared).await;
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    })
}

/// The run's figures, from what the senders and the block follower recorded.
fn report(
    config: &LoadConfig,
    planned: usize,
    shared: &Shared,
    start: Instant,
    send_seconds: f64,
) -> Report {
    let progress = &shared.progress;
    let sent = progress.sent.load(Ordering::Relaxed);
    let blocks = shared.blocks.lock().expect("blocks lock").clone();
    // Sustained throughput: everything committed, over the time from the first due
    // transaction to the last commit seen (at least the sending time), so a backlog that
    // commits after the sending stopped does not count as a burst of speed.
    let committed_total = progress.committed.load(Ordering::Relaxed);
    let committed_tps = match blocks.last() {
        Some((last, _)) => {
            let span = last.duration_since(start).as_secs_f64().max(send_seconds);
            committed_total as f64 / span.max(1e-9)
        }
        None => 0.0,
    };
    let block_interval_ms = match (blocks.first(), blocks.last()) {
        (Some(first), Some(last)) if blocks.len() >= 2 => {
            last.0.duration_since(first.0).as_secs_f64() * 1000.0 / (blocks.len() - 1) as f64
        }
        _ => 0.0,
    };
    let accepted = progress.accepted.load(Ordering::Relaxed);
    let committed = progress.committed.load(Ordering::Relaxed);
    if accepted > committed {
        shared.error("not_committed_in_time", accepted - committed);
    }
    Report {
        target_rate: config.rate,
        planned: planned as u64,
        sent,
        accepted,
        committed,
        errors: shared.errors.lock().expect("errors lock").clone(),
        send_seconds,
        achieved_rate: sent as f64 / send_seconds.max(1e-9),
        committed_tps,
        submit: Percentiles::of(&shared.submit.lock().expect("histogram lock")),
        commit: Percentiles::of(&shared.commit.lock().expect("histogram lock")),
        blocks: blocks.len() as u64,
        block_interval_ms,
        submit_samples_us: std::mem::take(&mut *shared.submit_samples.lock().expect("lock")),
        commit_samples_us: std::mem::take(&mut *shared.commit_samples.lock().expect("lock")),
    }
}

/// `GET url` as JSON; any failure names the URL.
async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, LoadError> {
    let node_error = |reason: String| LoadError::Node {
        url: url.to_string(),
        reason,
    };
    client
        .get(url)
        .send()
        .await
        .map_err(|error| node_error(error.to_string()))?
        .error_for_status()
        .map_err(|error| node_error(error.to_string()))?
        .json()
        .await
        .map_err(|error| node_error(error.to_string()))
}

async fn tip(client: &reqwest::Client, api: &str) -> Result<u64, LoadError> {
    let url = format!("{api}/status");
    let status = get_json(client, &url).await?;
    status["latest_height"]
        .as_u64()
        .ok_or_else(|| LoadError::Node {
            url,
            reason: format!("no latest_height in {status}"),
        })
}

/// A sent transaction: its hash, when it was due, whose it is.
struct Due {
    hash: [u8; 32],
    due: Instant,
    account: usize,
}

async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    dues: Vec<Due>,
    shared: &Shared,
) {
    let forget = |dues: &[Due]| {
        let mut pending = shared.pending.lock().expect("pending lock");
        for due in dues {
            pending.remove(&due.hash);
            shared.broken[due.account].store(true, Ordering::Relaxed);
        }
    };
    let answer = match client.post(url).json(&body).send().await {
        Ok(response) if response.status().is_success() => {
            response.json::<serde_json::Value>().await
        }
        Ok(response) => {
            shared.error(
                &format!("http_{}", response.status().as_u16()),
                dues.len() as u64,
            );
            forget(&dues);
            return;
        }
        Err(error) => {
            let kind = if error.is_timeout() {
                "timeout"
            } else {
                "connect"
            };
            shared.error(kind, dues.len() as u64);
            forget(&dues);
            return;
        }
    };
    let answered = Instant::now();
    let Ok(answer) = answer else {
        shared.error("bad_answer", dues.len() as u64);
        forget(&dues);
        return;
    };
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    for (index, Due { hash, due, account }) in dues.iter().enumerate() {
        shared.record(
            &shared.submit,
            &shared.submit_samples,
            answered.duration_since(*due).as_micros() as u64,
        );
        match results.get(index) {
            Some(result) if result.get("hash").is_some() => {
                shared.progress.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Some(result) => {
                let detail = result["detail"].as_str().unwrap_or("");
                let kind = match result["error"].as_str().unwrap_or("refused") {
                    "rejected" if detail.contains("too far ahead") => "rejected_nonce_gap",
                    "rejected" if detail.contains("already used") => "rejected_stale_nonce",
                    "rejected" if detail.contains("balance") => "rejected_funds",
                    other => other,
                }
                .to_string();
                shared.error(&kind, 1);
                shared.pending.lock().expect("pending lock").remove(hash);
                shared.broken[*account].store(true, Ordering::Relaxed);
            }
            None => {
                shared.error("bad_answer", 1);
                shared.pending.lock().expect("pending lock").remove(hash);
                shared.broken[*account].store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Follows committed blocks from `height` on until `stop`, matching their transactions.
async fn follow(
    client: reqwest::Client,
    api: String,
    mut height: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{api}/blocks/{height}?txs=false");
        let response = match client.get(&url).send().await {
            Ok(response) => response,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if !response.status().is_success() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let Ok(block) = response.json::<serde_json::Value>().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let seen = Instant::now();
        let mut ours = 0;
        if let Some(hashes) = block["tx_hashes"].as_array() {
            let mut pending = shared.pending.lock().expect("pending lock");
            for hash in hashes {
                let Some(bytes) = hash
                    .as_str()
                    .and_then(|text| hex::decode(text).ok())
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                else {
                    continue;
                };
                if let Some(due) = pending.remove(&bytes) {
                    ours += 1;
                    shared.record(
                        &shared.commit,
                        &shared.commit_samples,
                        seen.duration_since(due).as_micros() as u64,
                    );
                }
            }
        }
        if ours > 0 {
            shared
                .blocks
                .lock()
                .expect("blocks lock")
                .push((seen, ours));
            shared.progress.committed.fetch_add(ours, Ordering::Relaxed);
        }
        shared.progress.height.store(height, Ordering::Relaxed);
        height += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(count: u8) -> Vec<Account> {
        (0..count)
            .map(|i| Account {
                key: SigningKey::from_bytes(&[i + 1; 32]),
            })
            .collect()
    }

    #[test]
    fn the_schedule_spreads_accounts_over_nodes_with_consecutive_nonces() {
        let mut config = LoadConfig::new(
            "c",
            vec!["http://a".into(), "http://b".into()],
            100.0,
            Duration::from_secs(1),
        );
        config.max_txs = 10;
        let accounts = accounts(4);
        let schedule = sign_schedule(&config, &accounts, &[5, 0, 0, 7]);
        assert_eq!(schedule.len(), 10);
        for (i, (node, tx)) in schedule.iter().enumerate() {
            let account = i % 4;
            assert_eq!(*node, account % 2);
            assert_eq!(tx.from, accounts[account].key.verifying_key().to_bytes());
            let first = [5, 0, 0, 7][account];
            assert_eq!(tx.nonce, first + (i / 4) as u64, "tx {i}");
            tx.verify("c").unwrap();
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let base = LoadConfig::new("c", vec!["http://a".into()], 10.0, Duration::from_secs(1));
        let cases: Vec<(LoadConfig, &str)> = vec![
            (
                LoadConfig {
                    targets: vec![],
                    ..base.clone()
                },
                "targets",
            ),
            (
                LoadConfig {
                    rate: 0.0,
                    ..base.clone()
                },
                "rate",
            ),
            (
                LoadConfig {
                    rate: f64::NAN,
                    ..base.clone()
                },
                "rate",
            ),
            (
                LoadConfig {
                    duration: Duration::ZERO,
                    ..base.clone()
                },
                "duration",
            ),
            (
                LoadConfig {
                    follow: 3,
                    ..base.clone()
                },
                "follow",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.starts_with(&format!("{field}: ")), "{error}");
        }
        assert_eq!(base.planned(), 10);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 2.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
    }
}
