//! The HTTP API: `/health`, `/status`, `/metrics`, `POST /checkpoints`, blocks
//! (`/blocks/latest`, `/blocks/{height}`), transactions (`POST /txs`, `/txs/{hash}`),
//! staking (`/accounts/{address}`, `/validators`, `/evidence`, `/epochs/current`), `/net_info` and
//! `/consensus` (latency figures).
//!
//! Every error is a 4xx or 5xx with a JSON body `{"error": "...", "detail": "..."}`, every
//! request body is limited to `api.max_body_bytes`, each client IP address to
//! `api.rate_limit_per_s`, and every refused request is counted in `blyan_refused_inputs`.
//!
//! Admin endpoints (`POST /checkpoints`, `POST /admin/reload`, `GET /admin/devnet`) need a
//! verified, unrevoked client certificate over HTTPS (`[api.tls]` with `client_ca_file`), or,
//! without TLS, a loopback client. `GET /admin/devnet`, `/admin/devnet/messages` and
//! `/admin/devnet/clock` (GET, POST, DELETE: message and clock faults, `docs/CHAOS.md`) exist
//! only on devnet nodes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use tokio::sync::{mpsc, oneshot};

use crate::app::TxError;
use crate::block::{Block, Hash};
use crate::metrics::{HttpLabels, Metrics};
use crate::node::{Shared, Submission};
use crate::p2p::NetInfo;
use crate::storage::keys::{app_hash_key, commit_key, tx_key, TxLocation};
use crate::storage::{Storage, StorageError};
use crate::wire::Commit;

/// What the API serves from.
pub struct ApiState {
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    pub moniker: String,
    pub chain_id: String,
    pub checkpoints_dir: PathBuf,
    pub max_body_bytes: usize,
    pub node: Arc<Shared>,
    pub net: Arc<std::sync::Mutex<NetInfo>>,
    pub submissions: mpsc::Sender<Submission>,
    /// Mixture-of-experts inference (`None` when `inference.enabled = false`).
    pub inference: Option<Arc<crate::inference::Inference>>,
    /// HTTPS material, for the admin check and `/admin/reload` (`None`: plain HTTP).
    pub tls: Option<Arc<crate::api_tls::ApiTls>>,
    /// The swarm's commands (`/admin/reload` re-reads the peer lists).
    pub p2p_commands: Option<crate::p2p::P2pCommands>,
    /// The devnet switches when the node runs in devnet mode (`devnet.enabled`).
    pub devnet: Option<crate::config::DevnetConfig>,
    /// Requests per second per client IP (`None`: no limit).
    pub limiter: Option<Arc<RateLimiter>>,
    /// The validator key (hex) and the keys directory (for the last node key rotation).
    pub validator_public_key: String,
    pub keys_dir: PathBuf,
}

/// Per-client-IP token buckets.
pub type RateLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// A keyed limiter of `per_s` requests per second with `burst`; `None` when `per_s` is 0.
pub fn rate_limiter(per_s: u32, burst: u32) -> Option<Arc<RateLimiter>> {
    let per_s = std::num::NonZeroU32::new(per_s)?;
    let burst = std::num::NonZeroU32::new(burst.max(per_s.get())).unwrap_or(per_s);
    Some(Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(per_s).allow_burst(burst),
    )))
}

/// The error code of a refused request, for the refused-inputs metric.
#[derive(Clone, Copy, Debug)]
struct Refused(&'static str);

/// An error answer: status plus the JSON body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            detail: &self.detail,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(Refused(self.error));
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        let (status, code) = match error {
            StorageError::CheckpointExists { .. } => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError {
            status,
            error: code,
            detail: error.to_string(),
        }
    }
}

/// The `/status` answer.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Status {
    pub node_id: String,
    pub moniker: String,
    pub chain_id: String,
    pub latest_height: u64,
    pub latest_block_hash: Hash,
    /// App hash after the latest block.
    pub app_hash: Hash,
    pub latest_block_time_ms: u64,
    pub version: String,
    pub genesis_hash: Hash,
    pub peers: usize,
    pub validator: bool,
    pub validator_index: Option<u32>,
    pub catching_up: bool,
    pub best_known_height: u64,
    pub consensus_height: u64,
    pub round: u32,
    pub step: String,
    /// Transactions waiting in this node's mempool.
    pub mempool_txs: usize,
    /// Equivocations (two conflicting signed votes of one validator) this node has seen.
    pub evidence: u64,
    /// The epoch of the height being decided, and the size of its validator set.
    pub epoch: u64,
    pub validators: usize,
    /// The height this node state-synced to at start (`--state-sync`), if it did.
    pub state_synced_at: Option<u64>,
    /// The height its database held when this process opened it (what survived a crash or a
    /// power loss; the harness's `durability` check compares it with what the node had
    /// acknowledged before).
    pub started_at_height: u64,
}

/// Builds the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/blocks/latest", get(latest_block))
        .route("/blocks/{height}", get(block_at))
        .route("/txs", post(submit_tx))
        .route("/infer", post(infer))
        .route("/experts", get(experts))
        .route("/txs/batch", post(submit_batch))
        .route("/txs/{hash}", get(tx_status))
        .route("/accounts/{address}", get(account))
        .route("/validators", get(validators))
        .route("/evidence", get(evidence))
        .route("/epochs/current", get(current_epoch))
        .route("/net_info", get(net_info))
        .route("/identity", get(identity))
        .route("/consensus", get(consensus))
        .merge(
            Router::new()
                .route("/checkpoints", post(checkpoint))
                .route("/admin/reload", post(admin_reload))
                .route("/admin/dial", post(admin_dial))
                .route("/admin/devnet", get(admin_devnet))
                .route(
                    "/admin/devnet/messages",
                    get(messages_status).post(set_messages).delete(end_messages),
                )
                .route(
                    "/admin/devnet/clock",
                    get(clock_status).post(set_clock).delete(end_clock),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    admin_guard,
                )),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Counts the request, and enforces the rate and body limits before a handler sees it.
async fn guard(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let client = request
        .extensions()
        .get::<crate::api_tls::Client>()
        .map(|client| client.address.ip());
    let limited = match (&state.limiter, client) {
        (Some(limiter), Some(ip)) => limiter.check_key(&ip).is_err(),
        _ => false,
    };
    let response = if limited {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "rate_limited",
            detail: "too many requests from this address (api.rate_limit_per_s); retry later"
                .into(),
        }
        .into_response()
    } else {
        match limit_body(request, state.max_body_bytes).await {
            Ok(request) => next.run(request).await,
            Err(error) => error.into_response(),
        }
    };
    let status = response.status();
    if status.is_client_error() && status != StatusCode::NOT_FOUND && status != StatusCode::CONFLICT
    {
        let reason = response
            .extensions()
            .get::<Refused>()
            .map(|refused| refused.0)
            .unwrap_or("malformed");
        crate::metrics::refuse(&state.metrics.refused_inputs, "api", reason);
    }
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn limit_body(request: Request, limit: usize) -> Result<Request, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: "payload_too_large",
        detail: format!("request body exceeds the limit of {limit} bytes (api.max_body_bytes)"),
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        detail: format!("no route for {method} {}", uri.path()),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "method_not_allowed",
        detail: format!("{method} is not allowed on {}", uri.path()),
    }
}

async fn health(State(state): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    state.storage.check()?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

async fn status(State(state): State<Arc<ApiState>>) -> Result<Json<Status>, ApiError> {
    let view = state.node.view.read().expect("view lock poisoned").clone();
    Ok(Json(Status {
        node_id: state.node_id.clone(),
        moniker: state.moniker.clone(),
        chain_id: state.chain_id.clone(),
        latest_height: view.height,
        latest_block_hash: view.hash,
        app_hash: view.app_hash,
        latest_block_time_ms: view.time_ms,
        version: crate::VERSION.to_string(),
        genesis_hash: state.node.genesis.hash(),
        peers: view.peers,
        validator: view.validator_index.is_some(),
        validator_index: view.validator_index,
        catching_up: view.catching_up,
        best_known_height: view.best_known_height,
        consensus_height: view.consensus_height,
        round: view.round,
        step: view.step,
        mempool_txs: state
            .node
            .mempool
            .lock()
            .expect("mempool lock poisoned")
            .len(),
        evidence: view.evidence,
        epoch: view.epoch,
        validators: view.validators,
        state_synced_at: view.state_synced_at,
        started_at_height: view.started_at_height,
    }))
}

fn bad_request(detail: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        error: "bad_request",
        detail,
    }
}

fn not_found_detail(detail: String) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        detail,
    }
}

/// A block as the API shows it.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct BlockView {
    pub height: u64,
    pub hash: Hash,
    pub chain_id: String,
    pub time_ms: u64,
    pub prev_hash: Hash,
    pub data_hash: Hash,
    /// App hash before this block (in its header).
    pub app_hash: Hash,
    /// App hash after executing this block.
    pub result_app_hash: Option<Hash>,
    pub txs: Vec<String>,
    pub tx_hashes: Vec<Hash>,
    pub commit: Option<CommitView>,
    /// Index of the proposer in the height's validator set.
    #[serde(default)]
    pub proposer: u32,
    /// Public key of the proposer (empty once the height's set is no longer kept).
    #[serde(default)]
    pub proposer_key: String,
    #[serde(default)]
    pub validators_hash: Hash,
    #[serde(default)]
    pub next_validators_hash: Hash,
    /// Validators whose precommit for the previous block this block carries.
    #[serde(default)]
    pub last_commit_signers: Vec<u32>,
    /// Equivocation evidence items carried.
    #[serde(default)]
    pub evidence: usize,
}

#[derive(Serialize, serde::Deserialize, Debug)]
pub struct CommitView {
    pub round: u32,
    pub signatures: Vec<CommitSignature>,
    /// The voting power of the set that decided this height.
    #[serde(default)]
    pub total_power: u64,
}

#[derive(Serialize, serde::Deserialize, Debug)]
pub struct CommitSignature {
    pub validator_index: u32,
    /// The signer's public key (hex) in the set of that height.
    pub validator: String,
    /// Its voting power at that height.
    #[serde(default)]
    pub power: u64,
    pub signature: String,
}

fn block_view(state: &ApiState, height: u64) -> Result<BlockView, ApiError> {
    let block: Block = state.storage.block(height)?.ok_or_else(|| {
        not_found_detail(format!(
            "no block at height {height} (latest is {})",
            state.storage.tip().height
        ))
    })?;
    let commit = match state.storage.consensus_get(&commit_key(height))? {
        Some(bytes) => Some(Commit::decode(&bytes).map_err(|error| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "storage",
            detail: format!("commit of height {height}: {error}"),
        })?),
        None => None,
    };
    let result_app_hash = state
        .storage
        .consensus_get(&app_hash_key(height))?
        .and_then(|bytes| bytes.try_into().ok().map(Hash));
    let set = state
        .node
        .state
        .read()
        .expect("state lock poisoned")
        .validators_at(height)
        .unwrap_or_default();
    let validators: Vec<String> = set
        .iter()
        .map(|validator| hex::encode(validator.public_key.as_bytes()))
        .collect();
    let total_power: u64 = set.iter().map(|validator| validator.power).sum();
    let last_commit_signers = Commit::decode(&block.last_commit)
        .map(|commit| commit.signatures.iter().map(|(index, _)| *index).collect())
        .unwrap_or_default();
    Ok(BlockView {
        proposer: block.header.proposer,
        proposer_key: validators
            .get(block.header.proposer as usize)
            .cloned()
            .unwrap_or_default(),
        validators_hash: block.header.validators_hash,
        next_validators_hash: block.header.next_validators_hash,
        last_commit_signers,
        evidence: block.evidence.len(),
        height,
        hash: block.hash(),
        chain_id: block.header.chain_id.clone(),
        time_ms: block.header.time_ms,
        prev_hash: block.header.prev_hash,
        data_hash: block.header.data_hash,
        app_hash: block.header.app_hash,
        result_app_hash,
        tx_hashes: block.txs.iter().map(|tx| Hash::digest(tx)).collect(),
        txs: block.txs.iter().map(hex::encode).collect(),
        commit: commit.map(|commit| CommitView {
            round: commit.round,
            total_power,
            signatures: commit
                .signatures
                .iter()
                .map(|(index, signature)| CommitSignature {
                    validator_index: *index,
                    validator: validators.get(*index as usize).cloned().unwrap_or_default(),
                    power: set.get(*index as usize).map_or(0, |v| v.power),
                    signature: hex::encode(signature.to_bytes()),
                })
                .collect(),
        }),
    })
}

async fn latest_block(State(state): State<Arc<ApiState>>) -> Result<Json<BlockView>, ApiError> {
    let height = state.storage.tip().height;
    if height == 0 {
        return Err(not_found_detail("no block committed yet".into()));
    }
    Ok(Json(block_view(&state, height)?))
}

#[derive(serde::Deserialize)]
struct BlockQuery {
    /// `false` leaves the transactions' bytes out (their hashes stay).
    txs: Option<bool>,
}

async fn block_at(
    State(state): State<Arc<ApiState>>,
    Path(height): Path<String>,
    Query(query): Query<BlockQuery>,
) -> Result<Json<BlockView>, ApiError> {
    let height: u64 = height
        .parse()
        .map_err(|_| bad_request(format!("height {height:?} is not a number")))?;
    let mut view = block_view(&state, height)?;
    if query.txs == Some(false) {
        view.txs.clear();
    }
    Ok(Json(view))
}

#[derive(serde::Deserialize)]
struct SubmitTx {
    /// The encoded transaction, hex.
    tx: String,
}

fn unavailable() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "unavailable",
        detail: "the node is shutting down".into(),
    }
}

/// Hands one encoded transaction to the node loop; the verdict comes back on the receiver.
async fn hand_over(
    state: &ApiState,
    bytes: Vec<u8>,
) -> Result<oneshot::Receiver<Result<Hash, TxError>>, ApiError> {
    let (reply, verdict) = oneshot::channel();
    state
        .submissions
        .send((bytes, reply))
        .await
        .map_err(|_| unavailable())?;
    Ok(verdict)
}

/// The answer to a refused transaction.
fn refused(error: TxError) -> ApiError {
    let (status, code) = match &error {
        TxError::Duplicate => (StatusCode::CONFLICT, "duplicate"),
        TxError::MempoolFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "mempool_full"),
        TxError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
        TxError::BadSignature => (StatusCode::BAD_REQUEST, "bad_signature"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
    };
    ApiError {
        status,
        error: code,
        detail: error.to_string(),
    }
}

async fn submit_tx(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: SubmitTx = serde_json::from_slice(&body)
        .map_err(|error| bad_request(format!("body must be {{\"tx\": \"<hex>\"}}: {error}")))?;
    let bytes = hex::decode(request.tx.trim())
        .map_err(|error| bad_request(format!("tx: not hex: {error}")))?;
    let verdict = hand_over(&state, bytes).await?;
    match verdict.await.map_err(|_| unavailable())? {
        Ok(hash) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "hash": hash })),
        )
            .into_response()),
        Err(error) => Err(refused(error)),
    }
}

/// `POST /infer {"tokens": [..], "max_new_tokens": n, "model"?}`: greedy generation with the
/// mixture-of-experts model; answers the tokens, the experts used per layer and an output
/// hash. A request beyond the limits is 400, an unknown model 404, weights that cannot be had
/// now 503.
async fn infer(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::inference::InferenceError;
    let Some(service) = state.inference.clone() else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "unavailable",
            detail: "inference is off on this node (inference.enabled = false)".into(),
        });
    };
    let request: crate::inference::InferRequest =
        serde_json::from_slice(&body).map_err(|error| {
            bad_request(format!(
            "body must be {{\"tokens\": [ids], \"max_new_tokens\": n, \"model\": name}}: {error}"
        ))
        })?;
    match service.infer(request).await {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(error) => {
            let detail = error.to_string();
            Err(match error {
                InferenceError::Request(_) => bad_request(detail),
                InferenceError::UnknownModel(_) => not_found_detail(detail),
                InferenceError::Unavailable(_) => ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: "unavailable",
                    detail,
                },
                _ => ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "inference",
                    detail,
                },
            })
        }
    }
}

#[derive(serde::Deserialize)]
struct SubmitBatch {
    /// Encoded transactions, hex, in the order they should enter the mempool.
    txs: Vec<String>,
}

/// Most transactions in one batch request.
pub const MAX_BATCH_TXS: usize = 10_000;

/// `POST /txs/batch {"txs": [hex, ...]}`: each transaction is checked as by `POST /txs`, in
/// order; the answer is 200 with one result per transaction (`{"hash"}` or `{"error",
/// "detail"}`) and the count accepted. A malformed body is refused whole (400).
async fn submit_batch(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: SubmitBatch = serde_json::from_slice(&body).map_err(|error| {
        bad_request(format!(
            "body must be {{\"txs\": [\"<hex>\", ...]}}: {error}"
        ))
    })?;
    if request.txs.len() > MAX_BATCH_TXS {
        return Err(bad_request(format!(
            "txs: {} transactions; at most {MAX_BATCH_TXS} per batch",
            request.txs.len()
        )));
    }
    let decoded: Vec<Vec<u8>> = request
        .txs
        .iter()
        .enumerate()
        .map(|(index, tx)| {
            hex::decode(tx.trim())
                .map_err(|error| bad_request(format!("txs[{index}]: not hex: {error}")))
        })
        .collect::<Result<_, _>>()?;
    // Hand all over first (in order), then collect the verdicts.
    let mut verdicts = Vec::with_capacity(decoded.len());
    for bytes in decoded {
        verdicts.push(hand_over(&state, bytes).await?);
    }
    let mut accepted = 0;
    let mut results = Vec::with_capacity(verdicts.len());
    for verdict in verdicts {
        match verdict.await.map_err(|_| unavailable())? {
            Ok(hash) => {
                accepted += 1;
                results.push(serde_json::json!({ "hash": hash }));
            }
            Err(error) => {
                let refusal = refused(error);
                results.push(serde_json::json!({
                    "error": refusal.error,
                    "detail": refusal.detail,
                }));
            }
        }
    }
    Ok(Json(
        serde_json::json!({ "accepted": accepted, "results": results }),
    ))
}

/// `GET /accounts/{address}`: committed balance and nonce, and the next nonce to use counting
/// this node's pending transactions.
async fn account(
    State(state): State<Arc<ApiState>>,
    Path(address): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes: [u8; 32] = hex::decode(address.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| bad_request(format!("address {address:?} is not 32 bytes of hex")))?;
    let chain = state.node.state.read().expect("state lock poisoned");
    let committed = chain.account(&bytes);
    let delegations: Vec<serde_json::Value> = chain
        .validators()
        .iter()
        .filter_map(|(validator, _)| {
            chain
                .delegations(validator)
                .into_iter()
                .find(|(delegator, _)| *delegator == bytes)
                .map(|(_, amount)| {
                    serde_json::json!({ "validator": hex::encode(validator), "amount": amount })
                })
        })
        .collect();
    let unbonding: Vec<serde_json::Value> = chain
        .unbondings()
        .into_iter()
        .filter(|(_, delegator, _, _)| *delegator == bytes)
        .map(|(matures, _, validator, amount)| {
            serde_json::json!({
                "validator": hex::encode(validator),
                "amount": amount,
                "matures_at": matures,
            })
        })
        .collect();
    drop(chain);
    let pending = state
        .node
        .mempool
        .lock()
        .expect("mempool lock poisoned")
        .pending_from(&bytes);
    Ok(Json(serde_json::json!({
        "address": hex::encode(bytes),
        "balance": committed.balance,
        "nonce": committed.nonce,
        "pending": pending,
        "next_nonce": committed.nonce + pending,
        "delegations": delegations,
        "unbonding": unbonding,
    })))
}

async fn tx_status(
    State(state): State<Arc<ApiState>>,
    Path(hash): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hash = Hash::from_hex(&hash).map_err(|error| bad_request(error.to_string()))?;
    if let Some(bytes) = state.storage.consensus_get(&tx_key(&hash))? {
        let location = TxLocation::decode(&bytes).ok_or_else(|| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "storage",
            detail: format!("transaction index entry of {hash} is malformed"),
        })?;
        return Ok(Json(serde_json::json!({
            "hash": hash,
            "status": "committed",
            "height": location.height,
            "index": location.index,
            "applied": location.applied,
        })));
    }
    let pending = state
        .node
        .mempool
        .lock()
        .expect("mempool lock poisoned")
        .contains(&hash);
    if pending {
        return Ok(Json(
            serde_json::json!({ "hash": hash, "status": "pending" }),
        ));
    }
    Err(not_found_detail(format!(
        "transaction {hash} is neither committed nor pending"
    )))
}

/// `GET /validators`: every validator with its stake, voting power in the current set (0 when
/// not in it), jail state and missed blocks in the downtime window.
async fn validators(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let height = state.storage.tip().height + 1;
    let chain = state.node.state.read().expect("state lock poisoned");
    let params = chain.params.clone();
    let epoch = params.epoch_of(height);
    let active = chain.members(epoch).unwrap_or_default();
    let names: std::collections::HashMap<String, String> = state
        .node
        .genesis
        .validators
        .iter()
        .map(|v| (v.public_key.to_ascii_lowercase(), v.name.clone()))
        .collect();
    let list: Vec<serde_json::Value> = chain
        .validators()
        .iter()
        .map(|(key, record)| {
            let public_key = hex::encode(key);
            let index = active.iter().position(|member| member.key == *key);
            serde_json::json!({
                "public_key": public_key,
                "name": names.get(&public_key).cloned().unwrap_or_default(),
                "index": index,
                "power": index.map_or(0, |i| active[i].power),
                "tokens": record.tokens,
                "delegators": chain.delegations(key).len(),
                "commission_bps": record.commission_bps,
                "jailed": record.jailed,
                "jailed_until": (record.jailed && !record.tombstoned).then_some(record.jailed_until),
                "tombstoned": record.tombstoned,
                "missed_blocks": record.missed,
                "slashed": record.slashed,
            })
        })
        .collect();
    let total_power: u64 = active.iter().map(|member| member.power).sum();
    Json(serde_json::json!({
        "height": height,
        "epoch": epoch,
        "total_power": total_power,
        "active": active.len(),
        "validators": list,
    }))
}

/// `GET /evidence`: equivocations punished on chain, and those this node saw.
async fn evidence(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let punished = state
        .node
        .state
        .read()
        .expect("state lock poisoned")
        .evidence();
    let observed = state.node.view.read().expect("view lock poisoned").evidence;
    Json(serde_json::json!({ "punished": punished, "observed_by_this_node": observed }))
}

/// `GET /epochs/current`: the epoch of the next height, its bounds, the set's hash and size,
/// the parameters, and the supply.
async fn current_epoch(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let height = state.storage.tip().height + 1;
    let chain = state.node.state.read().expect("state lock poisoned");
    let params = chain.params.clone();
    let epoch = params.epoch_of(height);
    let validators = chain.validators_at(height).unwrap_or_default();
    let next_known = chain.members(epoch + 1).is_some();
    Json(serde_json::json!({
        "epoch": epoch,
        "height": height,
        "start_height": params.epoch_start(epoch),
        "end_height": params.epoch_start(epoch + 1) - 1,
        "epoch_length": params.epoch_length,
        "validators": validators.len(),
        "total_power": validators.iter().map(|v| v.power).sum::<u64>(),
        "validators_hash": crate::state::set_hash(&validators),
        "next_set_fixed": next_known,
        "params": params,
        "supply": chain.supply(),
        "experts": chain.experts().len(),
    }))
}

/// `GET /experts`: the experts registered on chain, each with whether this node holds its
/// weights on disk.
async fn experts(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let records = state
        .node
        .state
        .read()
        .expect("state lock poisoned")
        .experts();
    let list: Vec<serde_json::Value> = records
        .into_iter()
        .map(|record| {
            let stored = state
                .inference
                .as_ref()
                .is_some_and(|service| service.store().data_path(&record.content_hash).is_file());
            serde_json::json!({
                "name": record.name,
                "layer": record.layer,
                "content_hash": record.content_hash,
                "tiles_root": record.tiles_root,
                "tiles": record.tiles,
                "bytes": record.bytes,
                "owner": record.owner,
                "height": record.height,
                "stored": stored,
            })
        })
        .collect();
    Json(serde_json::json!({ "registered": list.len(), "experts": list }))
}

async fn net_info(State(state): State<Arc<ApiState>>) -> Json<NetInfo> {
    Json(state.net.lock().expect("net info lock poisoned").clone())
}

fn percentiles(histogram: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let ms = |value: u64| value as f64 / 1000.0;
    serde_json::json!({
        "count": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.5)),
        "p90_ms": ms(histogram.value_at_quantile(0.9)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "max_ms": ms(histogram.max()),
        "mean_ms": histogram.mean() / 1000.0,
    })
}

/// Consensus figures since start: commit latency (proposal to decision), block interval and
/// blocks per second.
#[derive(serde::Deserialize)]
struct ConsensusQuery {
    /// Only decisions above this height in `recent`.
    since: Option<u64>,
}

async fn consensus(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ConsensusQuery>,
) -> Json<serde_json::Value> {
    let stats = state.node.stats.lock().expect("stats lock poisoned");
    let since = query.since.unwrap_or(0);
    let recent: Vec<serde_json::Value> = stats
        .recent
        .iter()
        .filter(|(height, _)| *height > since)
        .map(|(height, micros)| {
            serde_json::json!({ "height": height, "commit_latency_ms": *micros as f64 / 1000.0 })
        })
        .collect();
    let blocks_per_second = match (stats.first_decided, stats.last_decided) {
        (Some((first, first_height)), Some((last, last_height))) if last > first => {
            (last_height - first_height) as f64 / (last - first).as_secs_f64()
        }
        _ => 0.0,
    };
    Json(serde_json::json!({
        "commit_latency": percentiles(&stats.commit_latency_us),
        "block_interval": percentiles(&stats.block_interval_us),
        "blocks_per_second": blocks_per_second,
        "uptime_s": stats.started.elapsed().as_secs_f64(),
        "recent": recent,
    }))
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn forbidden(error: &'static str, detail: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        error,
        detail,
    }
}

/// Admin endpoints: a verified client certificate that is not revoked (over HTTPS), or a
/// loopback client (plain HTTP).
async fn admin_guard(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let Some(client) = request
        .extensions()
        .get::<crate::api_tls::Client>()
        .cloned()
    else {
        return forbidden(
            "admin_refused",
            "the client of this request is unknown".into(),
        )
        .into_response();
    };
    let tls = state.tls.as_ref().filter(|_| client.tls);
    let refusal = match (tls, &client.certificate) {
        (Some(_), None) => Some(forbidden(
            "client_certificate_required",
            "admin endpoints need a client certificate issued by api.tls.client_ca_file".into(),
        )),
        (Some(tls), Some(certificate)) if tls.is_revoked(&certificate.serial) => {
            Some(forbidden(
                "client_certificate_revoked",
                format!(
                    "client certificate {} ({}) is revoked",
                    certificate.serial, certificate.common_name
                ),
            ))
        }
        (Some(_), Some(certificate)) if !certificate.client => Some(forbidden(
            "client_certificate_required",
            format!(
                "certificate {} is not a client certificate",
                certificate.common_name
            ),
        )),
        (Some(_), Some(_)) => None,
        // Plain HTTP (no TLS on this listener): loopback clients only.
        (None, _) if client.address.ip().is_loopback() => None,
        (None, _) => Some(forbidden(
            "admin_refused",
            "over plain HTTP, admin endpoints answer loopback clients only; use HTTPS with a client certificate ([api.tls])".into(),
        )),
    };
    match refusal {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DialRequest {
    /// One address, or several of one peer tried in turn.
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default = "default_upgrade_wait_ms")]
    upgrade_wait_ms: u64,
    #[serde(default = "default_dial_timeout_ms")]
    timeout_ms: u64,
}

fn default_upgrade_wait_ms() -> u64 {
    5_000
}

fn default_dial_timeout_ms() -> u64 {
    15_000
}

/// `POST /admin/dial {"address": "/ip4/../p2p/<id>[/p2p-circuit/p2p/<id>]"}` (or
/// `"addresses": [..]` of one peer, tried in turn): drop the connections to that peer, dial it
/// afresh and report the time to connect, whether the link
/// was relayed and when it became direct (hole punching). For measuring NAT traversal.
async fn admin_dial(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Json<crate::p2p::ProbeOutcome>, ApiError> {
    let request: DialRequest = serde_json::from_slice(&body).map_err(|error| {
        bad_request(format!(
            "body must be {{\"address\": \"<multiaddr>\", \"upgrade_wait_ms\": 5000, \"timeout_ms\": 15000}}: {error}"
        ))
    })?;
    let texts: Vec<&String> = request.address.iter().chain(&request.addresses).collect();
    if texts.is_empty() || texts.len() > 8 {
        return Err(bad_request(
            "give \"address\" or 1 to 8 \"addresses\"".into(),
        ));
    }
    let mut addresses = Vec::new();
    for text in texts {
        addresses.push(
            text.parse::<libp2p::Multiaddr>()
                .map_err(|error| bad_request(format!("address {text:?}: {error}")))?,
        );
    }
    if !(1..=60_000).contains(&request.timeout_ms) || request.upgrade_wait_ms > request.timeout_ms {
        return Err(bad_request(
            "timeout_ms must be 1 to 60000 and upgrade_wait_ms at most timeout_ms".into(),
        ));
    }
    let commands = state.p2p_commands.as_ref().ok_or_else(unavailable)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    commands
        .send(crate::p2p::P2pCommand::Probe {
            addresses,
            upgrade_wait: std::time::Duration::from_millis(request.upgrade_wait_ms),
            timeout: std::time::Duration::from_millis(request.timeout_ms),
            reply,
        })
        .map_err(|_| unavailable())?;
    let outcome = answer.await.map_err(|_| unavailable())?;
    Ok(Json(outcome))
}

/// `POST /admin/reload`: re-read the TLS material and the peer allowlist and revocation list.
async fn admin_reload(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut answer = serde_json::Map::new();
    if let Some(tls) = state.tls.clone() {
        tokio::task::spawn_blocking(move || tls.reload())
            .await
            .map_err(|error| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "internal",
                detail: error.to_string(),
            })?
            .map_err(|error| ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: "tls_reload_failed",
                detail: format!("{error}; the material in force stays"),
            })?;
        let certificate = state.tls.as_ref().map(|tls| tls.certificate());
        answer.insert(
            "tls".into(),
            serde_json::json!({
                "serial": certificate.as_ref().map(|c| c.serial.clone()),
                "not_after_unix": certificate.as_ref().map(|c| c.not_after_unix),
            }),
        );
    }
    if let Some(commands) = &state.p2p_commands {
        let sent = commands.send(crate::p2p::P2pCommand::ReloadAccess).is_ok();
        answer.insert("peer_lists".into(), serde_json::json!(sent));
    }
    Ok(Json(serde_json::Value::Object(answer)))
}

/// `GET /identity`: this node's peer id, validator key and its last node key rotation (signed
/// by the validator key), so that peers and operators learn a new peer id.
async fn identity(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let rotation = crate::keys::last_rotation(&state.keys_dir)
        .filter(|rotation| rotation.new_peer_id == state.node_id);
    Json(serde_json::json!({
        "peer_id": state.node_id,
        "validator_public_key": state.validator_public_key,
        "rotation": rotation,
        "rotation_verified": rotation.as_ref().map(|r| r.verify()),
    }))
}

/// `GET /admin/devnet`: the devnet switches in force (devnet nodes only).
async fn admin_devnet(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<crate::config::DevnetConfig>, ApiError> {
    match &state.devnet {
        Some(devnet) => Ok(Json(devnet.clone())),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            detail: "devnet controls are off: this node does not run in devnet mode".into(),
        }),
    }
}

/// Message faults need devnet mode (`devnet.enabled`) and a build with the `devnet` feature.
fn devnet_only(state: &ApiState) -> Result<(), ApiError> {
    if state.devnet.is_some() && cfg!(feature = "devnet") {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        detail: "devnet controls are off: this node does not run in devnet mode".into(),
    })
}

/// A JSON body of `T`, checked by `check`; a 400 `error` naming the field otherwise.
fn checked_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    error: &'static str,
    check: impl Fn(&T) -> Result<(), (&'static str, String)>,
) -> Result<T, ApiError> {
    let bad = |detail: String| ApiError {
        status: StatusCode::BAD_REQUEST,
        error,
        detail,
    };
    let value: T = serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))?;
    check(&value).map_err(|(field, reason)| bad(format!("{field}: {reason}")))?;
    Ok(value)
}

/// The fault in force (on what the node sends, or on what it receives from `peers`) and what
/// each way's faults did.
fn messages_answer(state: &ApiState) -> Json<serde_json::Value> {
    let (outgoing, counts) = state.node.messages.status();
    let (incoming, inbound_counts) = state.node.inbound.status();
    Json(serde_json::json!({
        "faults": outgoing.or(incoming),
        "counts": counts,
        "inbound_counts": inbound_counts,
    }))
}

/// `GET /admin/devnet/messages`: the message fault in force and what the faults did.
async fn messages_status(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    Ok(messages_answer(&state))
}

/// `POST /admin/devnet/messages`: puts a message fault in force (`config::MessageFaults`).
async fn set_messages(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    let faults: crate::config::MessageFaults = checked_body(
        &body,
        "bad_message_faults",
        |f: &crate::config::MessageFaults| f.check(),
    )?;
    // One fault at a time: naming peers makes it act on what they send to this node.
    if faults.peers.is_empty() {
        state.node.inbound.set(None);
        state.node.messages.set(Some(faults));
    } else {
        state.node.messages.set(None);
        state.node.inbound.set(Some(faults));
    }
    Ok(messages_answer(&state))
}

/// `DELETE /admin/devnet/messages`: ends the message fault in force.
async fn end_messages(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    state.node.messages.set(None);
    state.node.inbound.set(None);
    Ok(messages_answer(&state))
}

fn clock_answer(state: &ApiState) -> Json<serde_json::Value> {
    let clock = &state.node.clock;
    Json(serde_json::json!({
        "fault": clock.fault(),
        "offset_ms": clock.offset_ms(),
        "now_ms": clock.now_ms(),
    }))
}

/// `GET /admin/devnet/clock`: the clock fault in force and the consensus clock's offset.
async fn clock_status(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    Ok(clock_answer(&state))
}

/// `POST /admin/devnet/clock`: moves the clock consensus reads (`node::clock::ClockFault`).
async fn set_clock(
    State(state): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    let fault: crate::node::clock::ClockFault = checked_body(
        &body,
        "bad_clock_fault",
        |f: &crate::node::clock::ClockFault| f.check(),
    )?;
    state.node.clock.set(Some(fault));
    Ok(clock_answer(&state))
}

/// `DELETE /admin/devnet/clock`: the clock follows the system's again.
async fn end_clock(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    devnet_only(&state)?;
    state.node.clock.set(None);
    Ok(clock_answer(&state))
}

async fn checkpoint(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let storage = state.storage.clone();
    let dir = state.checkpoints_dir.clone();
    let info = tokio::task::spawn_blocking(move || storage.create_checkpoint(&dir))
        .await
        .map_err(|error| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal",
            detail: error.to_string(),
        })??;
    state.metrics.checkpoints_created.inc();
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[cfg(test)]
mod docs_tests {
    /// Every route the router serves, as `METHOD /path`, read from this file's `router()`.
    fn routes() -> Vec<String> {
        let source = include_str!("api.rs");
        let body = &source[source.find("pub fn router(").expect("router() is here")..];
        let body = &body[..body.find("\n}\n").expect("router() ends")];
        body.lines()
            .filter_map(|line| {
                let rest = line.trim().strip_prefix(".route(\"")?;
                let (path, rest) = rest.split_once('"')?;
                let method = rest.trim_start_matches(", ").split('(').next()?;
                Some(format!("{} {path}", method.to_uppercase()))
            })
            .collect()
    }

    /// docs/P2P.md's API table names every route the router serves, with its method.
    #[test]
    fn every_route_of_the_router_is_in_the_api_table_of_p2p_md() {
        let docs = include_str!("../../docs/P2P.md");
        let table = &docs[docs
            .find("| route | what |")
            .expect("docs/P2P.md has the table")..];
        let routes = routes();
        assert!(routes.len() >= 21, "the parser found {routes:?}");
        let missing: Vec<&String> = routes
            .iter()
            .filter(|route| !table.contains(&format!("`{route}")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/P2P.md's API table lacks {missing:?}"
        );
    }
}
