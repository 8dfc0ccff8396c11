//! The HTTP API: `/health`, `/status`, `/metrics` and `POST /checkpoints`.
//!
//! Every error is a 4xx or 5xx with a JSON body `{"error": "...", "detail": "..."}`, and every
//! request body is limited to `api.max_body_bytes`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::block::Hash;
use crate::metrics::{HttpLabels, Metrics};
use crate::storage::{Storage, StorageError};

/// What the API serves from.
pub struct ApiState {
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    pub moniker: String,
    pub chain_id: String,
    pub checkpoints_dir: PathBuf,
    pub max_body_bytes: usize,
}

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
        (self.status, Json(body)).into_response()
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
    pub app_hash: Hash,
    pub version: String,
}

/// Builds the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/checkpoints", post(checkpoint))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Counts the request and enforces the body limit before a handler sees it.
async fn guard(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = match limit_body(request, state.max_body_bytes).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    };
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
    let tip = state.storage.tip();
    let app_hash = match state.storage.block(tip.height)? {
        Some(block) => block.header.app_hash,
        None => Hash::ZERO,
    };
    state.metrics.latest_height.set(tip.height as i64);
    Ok(Json(Status {
        node_id: state.node_id.clone(),
        moniker: state.moniker.clone(),
        chain_id: state.chain_id.clone(),
        latest_height: tip.height,
        latest_block_hash: tip.hash,
        app_hash,
        version: crate::VERSION.to_string(),
    }))
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    state
        .metrics
        .latest_height
        .set(state.storage.tip().height as i64);
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
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
