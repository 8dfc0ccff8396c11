//! The Toxiproxy HTTP API (same paths, JSON and status codes as Toxiproxy 2.x) over the
//! `noxious` crate's proxy runner and toxics, so that existing Toxiproxy clients work unchanged.
//!
//! The API's records (proxies and their toxics as the client wrote them) live here; each
//! enabled proxy is a running `noxious` proxy (a listener plus two links per client) that gets
//! every toxic change as an event. Disabling a proxy stops it: the listener closes and every
//! connection through it is dropped, which is how a link is cut. Enabling starts it again with
//! the toxics it had.
//!
//! Toxics: `latency` (latency, jitter), `bandwidth` (rate, KB/s), `slow_close` (delay),
//! `timeout` (timeout), `slicer` (average_size, size_variation, delay), `limit_data` (bytes),
//! `noop`, and `reset_peer` (timeout), which noxious lacks: here it stops the data and closes
//! the connection after `timeout` ms (at least 1 ms), a FIN rather than Toxiproxy's RST.
//!
//! noxious is used as vendored in `vendor/noxious` (its latency and bandwidth toxics fixed; see
//! `vendor/noxious/BLYAN.md`).

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use noxious::proxy::{ProxyConfig, ProxyRunner, Runner, Toxics};
use noxious::signal::{Close, Stop, Stopper};
use noxious::socket::TcpListener;
use noxious::toxic::{
    StreamDirection, Toxic, ToxicEvent, ToxicEventKind, ToxicEventResult, ToxicKind,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

/// What `GET /version` reports: the Toxiproxy API version this server follows.
pub const TOXIPROXY_API_VERSION: &str = "2.12.0";

/// An API error, answered as Toxiproxy does: `{"error": "...", "status": N}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn proxy_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "proxy not found")
    }
    fn toxic_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "toxic not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "status": self.status.as_u16() });
        (self.status, Json(body)).into_response()
    }
}

/// A toxic as the API shows and takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToxicSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub toxicity: f32,
    pub attributes: Map<String, Value>,
}

/// The attributes each toxic type takes (missing ones are 0, as in Toxiproxy).
fn attribute_names(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "noop" => &[],
        "latency" => &["latency", "jitter"],
        "bandwidth" => &["rate"],
        "slow_close" => &["delay"],
        "timeout" | "reset_peer" => &["timeout"],
        "slicer" => &["average_size", "size_variation", "delay"],
        "limit_data" => &["bytes"],
        _ => return None,
    })
}

impl ToxicSpec {
    /// Reads a toxic from a request body, filling Toxiproxy's defaults (stream `downstream`,
    /// toxicity 1, name `TYPE_STREAM`, attributes 0) and refusing what noxious cannot run.
    pub fn from_request(body: &Value) -> Result<ToxicSpec, ApiError> {
        let object = body
            .as_object()
            .ok_or_else(|| ApiError::bad("bad request body: expected a JSON object"))?;
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(ApiError::bad("type: must be a string")),
            None => return Err(ApiError::bad("missing required field: type")),
        };
        let names = attribute_names(&kind)
            .ok_or_else(|| ApiError::bad(format!("Bad toxic type: {kind}")))?;
        let stream = match object.get("stream") {
            None | Some(Value::Null) => "downstream".to_string(),
            Some(Value::String(stream)) if stream == "upstream" || stream == "downstream" => {
                stream.clone()
            }
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "stream: must be \"upstream\" or \"downstream\", got {other}"
                )))
            }
        };
        let toxicity = match object.get("toxicity") {
            None | Some(Value::Null) => 1.0,
            Some(value) => match value.as_f64() {
                Some(toxicity) if (0.0..=1.0).contains(&toxicity) => toxicity as f32,
                _ => {
                    return Err(ApiError::bad(format!(
                        "toxicity: must be a number between 0 and 1, got {value}"
                    )))
                }
            },
        };
        let name = match object.get("name") {
            None | Some(Value::Null) => format!("{kind}_{stream}"),
            Some(Value::String(name)) if name.is_empty() => format!("{kind}_{stream}"),
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(ApiError::bad("name: must be a string")),
        };
        let given = match object.get("attributes") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(given)) => given.clone(),
            Some(_) => return Err(ApiError::bad("attributes: must be an object")),
        };
        let mut attributes = Map::new();
        for (key, value) in &given {
            if !names.contains(&key.as_str()) {
                return Err(ApiError::bad(format!(
                    "attributes.{key}: {kind} takes {}",
                    if names.is_empty() {
                        "no attributes".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            if value.as_u64().is_none() {
                return Err(ApiError::bad(format!(
                    "attributes.{key}: must be a non-negative integer, got {value}"
                )));
            }
        }
        for name in names {
            let value = given.get(*name).and_then(Value::as_u64).unwrap_or(0);
            attributes.insert((*name).to_string(), Value::from(value));
        }
        let spec = ToxicSpec {
            name,
            kind,
            stream,
            toxicity,
            attributes,
        };
        spec.to_noxious()?;
        Ok(spec)
    }

    fn attribute(&self, name: &str) -> u64 {
        self.attributes
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    fn direction(&self) -> StreamDirection {
        if self.stream == "upstream" {
            StreamDirection::Upstream
        } else {
            StreamDirection::Downstream
        }
    }

    fn runtime(&self, name: String, kind: ToxicKind) -> Toxic {
        Toxic {
            kind,
            name,
            toxicity: self.toxicity,
            direction: self.direction(),
        }
    }

    /// The toxics noxious runs for this one (one; a list so that a toxic could map to a chain).
    pub fn to_noxious(&self) -> Result<Vec<Toxic>, ApiError> {
        let a = |name| self.attribute(name);
        let kind = match self.kind.as_str() {
            "noop" => ToxicKind::Noop,
            "latency" => {
                if a("jitter") > a("latency") {
                    return Err(ApiError::bad(format!(
                        "attributes.jitter: must be at most the latency ({} ms), got {}",
                        a("latency"),
                        a("jitter")
                    )));
                }
                ToxicKind::Latency {
                    latency: a("latency"),
                    jitter: a("jitter"),
                }
            }
            "bandwidth" => ToxicKind::Bandwidth { rate: a("rate") },
            "slow_close" => ToxicKind::SlowClose { delay: a("delay") },
            "timeout" => ToxicKind::Timeout {
                timeout: a("timeout"),
            },
            "reset_peer" => ToxicKind::Timeout {
                timeout: a("timeout").max(1),
            },
            "slicer" => {
                if a("average_size") == 0 || a("size_variation") >= a("average_size") {
                    return Err(ApiError::bad(
                        "attributes: slicer needs average_size > 0 and size_variation < average_size",
                    ));
                }
                ToxicKind::Slicer {
                    average_size: a("average_size"),
                    size_variation: a("size_variation"),
                    delay: a("delay"),
                }
            }
            "limit_data" => ToxicKind::LimitData { bytes: a("bytes") },
            other => return Err(ApiError::bad(format!("Bad toxic type: {other}"))),
        };
        Ok(vec![self.runtime(self.name.clone(), kind)])
    }
}

/// A proxy as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<ToxicSpec>,
}

/// A running noxious proxy.
struct Running {
    stopper: Stopper,
    close: Close,
    /// The proxy's connections (to wait until a stop has closed them all).
    state: Arc<noxious::state::ProxyState>,
    events: bmrng::RequestSender<ToxicEvent, ToxicEventResult>,
}

struct Entry {
    listen: String,
    upstream: String,
    enabled: bool,
    toxics: Vec<ToxicSpec>,
    running: Option<Running>,
}

impl Entry {
    fn view(&self, name: &str) -> ProxyView {
        ProxyView {
            name: name.to_string(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.enabled,
            toxics: self.toxics.clone(),
        }
    }

    async fn start(&mut self, name: &str) -> Result<(), ApiError> {
        if self.running.is_some() {
            return Ok(());
        }
        let mut toxics = Toxics::empty();
        for spec in &self.toxics {
            for toxic in spec.to_noxious()? {
                match toxic.direction {
                    StreamDirection::Upstream => toxics.upstream.push(toxic),
                    StreamDirection::Downstream => toxics.downstream.push(toxic),
                }
            }
        }
        let config = ProxyConfig {
            name: name.to_string(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: true,
            rand_seed: None,
        };
        let (listener, info) = ProxyRunner::initialize_proxy::<TcpListener>(config, toxics)
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("listen tcp {}: {error}", self.listen),
                )
            })?;
        let state = info.state.clone();
        let (stop, stopper) = Stop::new();
        let (close, closer) = Close::new();
        let (events, receiver) = bmrng::channel(16);
        let proxy = name.to_string();
        tokio::spawn(async move {
            if let Err(error) = ProxyRunner::run_proxy(listener, info, receiver, stop, closer).await
            {
                tracing::warn!(proxy, %error, "proxy stopped with an error");
            }
        });
        self.running = Some(Running {
            stopper,
            close,
            state,
            events,
        });
        Ok(())
    }

    /// Stops the proxy and waits until its listener is closed (so the port can be bound again)
    /// and its connections are gone (at most 2 s), as Toxiproxy's disable does before answering.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stopper.stop();
            let _ = running.close.recv().await;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while !running.state.lock().clients.is_empty() && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    async fn send(&mut self, kind: ToxicEventKind) -> Result<(), ApiError> {
        let Some(running) = &self.running else {
            return Ok(());
        };
        let event = ToxicEvent::new(String::new(), kind);
        match running.events.send_receive(event).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("toxic update failed: {error}"),
            )),
            Err(error) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("proxy task gone: {error}"),
            )),
        }
    }
}

/// Every proxy the server runs, by name.
#[derive(Clone, Default)]
pub struct Store {
    proxies: Arc<Mutex<BTreeMap<String, Entry>>>,
}

/// A proxy as created by `POST /proxies` and `POST /populate`.
#[derive(Clone, Debug, Deserialize)]
pub struct NewProxy {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub listen: String,
    #[serde(default)]
    pub upstream: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `HOST:0` gets a free port, as Toxiproxy does, so that the API reports the real address.
fn resolve_listen(listen: &str) -> Result<String, ApiError> {
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(ApiError::bad(format!(
            "listen: {listen:?} is not HOST:PORT"
        )));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad(format!("listen: bad port in {listen:?}")))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if port != 0 {
        return Ok(format!("{host}:{port}"));
    }
    let probe = StdListener::bind((host, 0)).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listen tcp {listen}: {error}"),
        )
    })?;
    let port = probe
        .local_addr()
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
        .port();
    Ok(format!("{host}:{port}"))
}

impl Store {
    pub async fn list(&self) -> BTreeMap<String, ProxyView> {
        let proxies = self.proxies.lock().await;
        proxies
            .iter()
            .map(|(name, entry)| (name.clone(), entry.view(name)))
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<ProxyView, ApiError> {
        let proxies = self.proxies.lock().await;
        let entry = proxies.get(name).ok_or_else(ApiError::proxy_not_found)?;
        Ok(entry.view(name))
    }

    pub async fn create(&self, new: NewProxy) -> Result<ProxyView, ApiError> {
        let mut proxies = self.proxies.lock().await;
        Self::create_locked(&mut proxies, new).await
    }

    async fn create_locked(
        proxies: &mut BTreeMap<String, Entry>,
        new: NewProxy,
    ) -> Result<ProxyView, ApiError> {
        for (field, value) in [("name", &new.name), ("upstream", &new.upstream)] {
            if value.is_empty() {
                return Err(ApiError::bad(format!("missing required field: {field}")));
            }
        }
        if proxies.contains_key(&new.name) {
            return Err(ApiError::new(StatusCode::CONFLICT, "proxy already exists"));
        }
        let listen = resolve_listen(if new.listen.is_empty() {
            "127.0.0.1:0"
        } else {
            &new.listen
        })?;
        let mut entry = Entry {
            listen,
            upstream: new.upstream,
            enabled: new.enabled,
            toxics: Vec::new(),
            running: None,
        };
        if entry.enabled {
            entry.start(&new.name).await?;
        }
        let view = entry.view(&new.name);
        proxies.insert(new.name, entry);
        Ok(view)
    }

    /// `POST /populate`: creates the proxies given, replacing any of the same name whose
    /// listen or upstream address differs; the others are kept as they are.
    pub async fn populate(&self, list: Vec<NewProxy>) -> Result<Vec<ProxyView>, ApiError> {
        let mut proxies = self.proxies.lock().await;
        let mut out = Vec::with_capacity(list.len());
        for new in list {
            if let Some(entry) = proxies.get_mut(&new.name) {
                let same = (new.listen.is_empty() || entry.listen == new.listen)
                    && entry.upstream == new.upstream;
                if same {
                    out.push(entry.view(&new.name));
                    continue;
                }
                entry.stop().await;
                proxies.remove(&new.name);
            }
            out.push(Self::create_locked(&mut proxies, new).await?);
        }
        Ok(out)
    }

    /// `POST /proxies/{name}`: changes `enabled`, `listen` or `upstream`.
    pub async fn update(&self, name: &str, body: &Value) -> Result<ProxyView, ApiError> {
        let object = body
            .as_object()
            .ok_or_else(|| ApiError::bad("bad request body: expected a JSON object"))?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies
            .get_mut(name)
            .ok_or_else(ApiError::proxy_not_found)?;
        let mut restart = false;
        for field in ["listen", "upstream"] {
            match object.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(value)) if !value.is_empty() => {
                    let value = if field == "listen" {
                        resolve_listen(value)?
                    } else {
                        value.clone()
                    };
                    let slot = if field == "listen" {
                        &mut entry.listen
                    } else {
                        &mut entry.upstream
                    };
                    if *slot != value {
                        *slot = value;
                        restart = true;
                    }
                }
                Some(other) => {
                    return Err(ApiError::bad(format!(
                        "{field}: must be a non-empty string, got {other}"
                    )))
                }
            }
        }
        match object.get("enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(enabled)) => entry.enabled = *enabled,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "enabled: must be true or false, got {other}"
                )))
            }
        }
        if restart || !entry.enabled {
            entry.stop().await;
        }
        if entry.enabled {
            entry.start(name).await?;
        }
        Ok(entry.view(name))
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        let mut entry = proxies.remove(name).ok_or_else(ApiError::proxy_not_found)?;
        entry.stop().await;
        Ok(())
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub async fn reset(&self) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        for (name, entry) in proxies.iter_mut() {
            if !entry.toxics.is_empty() {
                entry.toxics.clear();
                entry.send(ToxicEventKind::RemoveAllToxics).await?;
            }
            entry.enabled = true;
            entry.start(name).await?;
        }
        Ok(())
    }

    pub async fn toxics(&self, proxy: &str) -> Result<Vec<ToxicSpec>, ApiError> {
        Ok(self.get(proxy).await?.toxics)
    }

    pub async fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicSpec, ApiError> {
        self.toxics(proxy)
            .await?
            .into_iter()
            .find(|spec| spec.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)
    }

    pub async fn add_toxic(&self, proxy: &str, body: &Value) -> Result<ToxicSpec, ApiError> {
        let spec = ToxicSpec::from_request(body)?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(ApiError::proxy_not_found)?;
        if entry.toxics.iter().any(|toxic| toxic.name == spec.name) {
            return Err(ApiError::new(StatusCode::CONFLICT, "toxic already exists"));
        }
        for toxic in spec.to_noxious()? {
            entry.send(ToxicEventKind::AddToxic(toxic)).await?;
        }
        entry.toxics.push(spec.clone());
        Ok(spec)
    }

    /// `POST /proxies/{p}/toxics/{t}`: new attributes and/or toxicity (type and stream stay).
    pub async fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        body: &Value,
    ) -> Result<ToxicSpec, ApiError> {
        let object = body
            .as_object()
            .ok_or_else(|| ApiError::bad("bad request body: expected a JSON object"))?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(ApiError::proxy_not_found)?;
        let index = entry
            .toxics
            .iter()
            .position(|spec| spec.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)?;
        let old = &entry.toxics[index];
        let mut merged = serde_json::to_value(old).expect("a toxic serialises");
        if let Some(Value::Object(attributes)) = object.get("attributes") {
            for (key, value) in attributes {
                merged["attributes"][key] = value.clone();
            }
        }
        if let Some(toxicity) = object.get("toxicity") {
            merged["toxicity"] = toxicity.clone();
        }
        let spec = ToxicSpec::from_request(&merged)?;
        for toxic in spec.to_noxious()? {
            entry.send(ToxicEventKind::UpdateToxic(toxic)).await?;
        }
        entry.toxics[index] = spec.clone();
        Ok(spec)
    }

    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(ApiError::proxy_not_found)?;
        let index = entry
            .toxics
            .iter()
            .position(|spec| spec.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)?;
        for runtime in entry.toxics[index].to_noxious()? {
            entry
                .send(ToxicEventKind::RemoveToxic(runtime.name))
                .await?;
        }
        entry.toxics.remove(index);
        Ok(())
    }

    /// Stops every proxy (server shutdown).
    pub async fn shutdown(&self) {
        let mut proxies = self.proxies.lock().await;
        for entry in proxies.values_mut() {
            entry.stop().await;
        }
    }
}

type Body = Result<Json<Value>, JsonRejection>;

fn body(body: Body) -> Result<Value, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|rejection| ApiError::bad(format!("bad request body: {rejection}")))
}

async fn version() -> Json<Value> {
    Json(json!({ "version": TOXIPROXY_API_VERSION }))
}

async fn list(State(store): State<Store>) -> Json<BTreeMap<String, ProxyView>> {
    Json(store.list().await)
}

async fn create(State(store): State<Store>, raw: Body) -> Result<Response, ApiError> {
    let new: NewProxy = serde_json::from_value(body(raw)?)
        .map_err(|error| ApiError::bad(format!("bad request body: {error}")))?;
    let view = store.create(new).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn populate(State(store): State<Store>, raw: Body) -> Result<Response, ApiError> {
    let value = body(raw)?;
    // Toxiproxy takes a bare list; some clients wrap it as {"proxies": [...]}.
    let list = match value {
        Value::Object(mut object) if object.contains_key("proxies") => {
            object.remove("proxies").unwrap_or(Value::Null)
        }
        other => other,
    };
    let list: Vec<NewProxy> = serde_json::from_value(list)
        .map_err(|error| ApiError::bad(format!("bad request body: {error}")))?;
    let proxies = store.populate(list).await?;
    Ok((StatusCode::CREATED, Json(json!({ "proxies": proxies }))).into_response())
}

async fn show(
    State(store): State<Store>,
    Path(name): Path<String>,
) -> Result<Json<ProxyView>, ApiError> {
    store.get(&name).await.map(Json)
}

async fn update(
    State(store): State<Store>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Json<ProxyView>, ApiError> {
    store.update(&name, &body(raw)?).await.map(Json)
}

async fn delete(
    State(store): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    store.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(store): State<Store>) -> Result<StatusCode, ApiError> {
    store.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxics(
    State(store): State<Store>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ToxicSpec>>, ApiError> {
    store.toxics(&name).await.map(Json)
}

async fn add_toxic(
    State(store): State<Store>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Json<ToxicSpec>, ApiError> {
    store.add_toxic(&name, &body(raw)?).await.map(Json)
}

async fn show_toxic(
    State(store): State<Store>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<Json<ToxicSpec>, ApiError> {
    store.toxic(&name, &toxic).await.map(Json)
}

async fn update_toxic(
    State(store): State<Store>,
    Path((name, toxic)): Path<(String, String)>,
    raw: Body,
) -> Result<Json<ToxicSpec>, ApiError> {
    store
        .update_toxic(&name, &toxic, &body(raw)?)
        .await
        .map(Json)
}

async fn remove_toxic(
    State(store): State<Store>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    store.remove_toxic(&name, &toxic).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// The Toxiproxy API over `store`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list).post(create))
        .route(
            "/proxies/{name}",
            get(show).post(update).patch(update).delete(delete),
        )
        .route("/proxies/{name}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{name}/toxics/{toxic}",
            get(show_toxic)
                .post(update_toxic)
                .patch(update_toxic)
                .delete(remove_toxic),
        )
        .fallback(fallback)
        .with_state(store)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops every proxy.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    store.shutdown().await;
    Ok(())
}
