//! Mixture-of-experts inference: experts as verified tiles ([`tiles`]), the model and its
//! candle forward pass ([`model`]), a plain-loop reference of the same pass ([`reference`]),
//! and the node's service ([`Inference`]): it resolves a model's files through the chain's
//! expert registry, loads only the experts the router picks (memory-mapped, every tile
//! verified, an LRU cache within a memory budget), fetches what it lacks from peers over
//! `/blyan/tiles/1`, answers peers' tile requests, and registers its own experts on chain.
//! `docs/INFERENCE.md` describes it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::block::Hash;
use crate::metrics::InferenceMetrics;
use crate::p2p::{P2pCommand, P2pHandle, TileInbound, TileRequest, TileResponse};
use crate::state::ExpertRecord;

/// The registered experts (the chain's registry in a node; a fixed list in tests).
pub type Registry = Arc<dyn Fn() -> Vec<ExpertRecord> + Send + Sync>;

/// The registry of a node's committed chain state.
pub fn chain_registry(state: Arc<std::sync::RwLock<crate::state::ChainState>>) -> Registry {
    Arc::new(move || state.read().expect("chain state lock poisoned").experts())
}

pub mod bench;
pub mod model;
pub mod reference;
pub mod tiles;

use model::{ExpertWeights, Model};
use tiles::{ExpertManifest, ExpertStore, TileError};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("forward pass: {0}")]
    Compute(String),
    /// The request is wrong (answered 400).
    #[error("{0}")]
    Request(String),
    /// No such model here or on chain (answered 404).
    #[error("{0}")]
    UnknownModel(String),
    /// The weights exist but could not be had now (answered 503).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Tiles(#[from] TileError),
}

/// What `POST /infer` takes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// The model (default: the node's `inference.model`).
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Tokens to generate (default 8).
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: u32,
}

fn default_new_tokens() -> u32 {
    8
}

/// What `POST /infer` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub model: String,
    /// The generated tokens.
    pub tokens: Vec<u32>,
    /// Per layer, the experts any step routed a token to.
    pub experts: Vec<Vec<u32>>,
    /// BLAKE3 of the generated tokens and the last step's logits (f32, little endian): equal
    /// on two nodes only if their outputs are bit-identical.
    pub output_hash: Hash,
    pub elapsed_ms: f64,
    /// Routed experts found in memory / loaded (from disk or peers) by this request.
    pub expert_hits: u64,
    pub expert_loads: u64,
}

/// A loaded expert, with when it was last used.
struct Cached {
    weights: Arc<ExpertWeights>,
    used: u64,
}

/// Loaded experts within a byte budget; the least recently used leave first.
struct ExpertCache {
    budget: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<Hash, Cached>,
}

impl ExpertCache {
    fn get(&mut self, content: &Hash) -> Option<Arc<ExpertWeights>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(content).map(|entry| {
            entry.used = clock;
            entry.weights.clone()
        })
    }

    fn insert(&mut self, content: Hash, weights: Arc<ExpertWeights>) {
        self.clock += 1;
        self.bytes += weights.bytes as u64;
        if let Some(old) = self.entries.insert(
            content,
            Cached {
                weights,
                used: self.clock,
            },
        ) {
            self.bytes -= old.weights.bytes as u64;
        }
        while self.bytes > self.budget && self.entries.len() > 1 {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(hash, _)| *hash)
                .expect("not empty");
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.weights.bytes as u64;
            }
        }
    }
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct InferenceSettings {
    pub cache_bytes: u64,
    pub max_new_tokens: u32,
    pub default_model: String,
}

/// The node's inference service.
pub struct Inference {
    store: ExpertStore,
    metrics: InferenceMetrics,
    p2p: Option<P2pHandle>,
    registry: Option<Registry>,
    settings: InferenceSettings,
    device: Device,
    models: Mutex<HashMap<String, Arc<Model>>>,
    /// Expert file names resolved to their content hash.
    names: Mutex<HashMap<String, Hash>>,
    cache: Mutex<ExpertCache>,
    /// One forward pass at a time: the node's consensus shares these cores.
    running: tokio::sync::Semaphore,
}

/// How often a node looks for local experts to register.
const REGISTER_EVERY: Duration = Duration::from_secs(3);

/// How long one peer may take to answer a tile request.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

impl Inference {
    pub fn new(
        store: ExpertStore,
        metrics: InferenceMetrics,
        p2p: Option<P2pHandle>,
        registry: Option<Registry>,
        settings: InferenceSettings,
    ) -> Inference {
        Inference {
            store,
            metrics,
            p2p,
            registry,
            cache: Mutex::new(ExpertCache {
                budget: settings.cache_bytes,
                bytes: 0,
                clock: 0,
                entries: HashMap::new(),
            }),
            settings,
            device: default_device(),
            models: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn store(&self) -> &ExpertStore {
        &self.store
    }

    pub fn settings(&self) -> &InferenceSettings {
        &self.settings
    }

    /// The manifest of the file `name`: the chain's record is the authority (content hash and
    /// tiles root); without one, the local store's file of that name.
    fn resolve(&self, name: &str) -> Result<ExpertManifest, InferenceError> {
        let record = self
            .registry
            .as_ref()
            .and_then(|registry| registry().into_iter().find(|record| record.name == name));
        match record {
            Some(record) => {
                if let Some(local) = self.store.manifest(&record.content_hash)? {
                    if local.tiles_root == record.tiles_root {
                        return Ok(local);
                    }
                }
                self.fetch_expert(&record)
            }
            None => self
                .store
                .list()?
                .into_iter()
                .find(|manifest| manifest.name == name)
                .ok_or_else(|| {
                    InferenceError::UnknownModel(format!(
                        "{name}: not registered on chain and not in the local store"
                    ))
                }),
        }
    }

    /// Loads `name`, verified, repairing a corrupt tile from peers once.
    fn load_verified(&self, name: &str) -> Result<tiles::MappedExpert, InferenceError> {
        let manifest = self.resolve(name)?;
        match self.store.load(&manifest) {
            Ok(mapped) => Ok(mapped),
            Err(TileError::Mismatch { index, .. }) => {
                self.metrics.tiles_refused.inc();
                tracing::warn!(
                    expert = name,
                    tile = index,
                    "tile on disk does not match its hash; fetching it from peers"
                );
                for index in 0..manifest.tiles.len() as u32 {
                    if self.store.read_tile(&manifest, index).is_err() {
                        let bytes = self.fetch_tile(&manifest, index)?;
                        self.store.repair_tile(&manifest, index, &bytes)?;
                    }
                }
                Ok(self.store.load(&manifest)?)
            }
            Err(TileError::Missing(_)) => {
                let record = self.chain_record(&manifest.content_hash).ok_or_else(|| {
                    InferenceError::Unavailable(format!("{name}: its weights file is gone"))
                })?;
                self.fetch_expert(&record)?;
                Ok(self.store.load(&manifest)?)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn chain_record(&self, content: &Hash) -> Option<ExpertRecord> {
        let registry = self.registry.as_ref()?;
        registry()
            .into_iter()
            .find(|record| record.content_hash == *content)
    }

    /// The base weights of `model`, loaded once.
    pub fn model(&self, name: &str) -> Result<Arc<Model>, InferenceError> {
        if let Some(model) = self.models.lock().expect("models lock poisoned").get(name) {
            return Ok(model.clone());
        }
        let mapped = self.load_verified(&model::base_name(name))?;
        let model = Arc::new(Model::load(&mapped.map, &self.device)?);
        self.models
            .lock()
            .expect("models lock poisoned")
            .insert(name.to_string(), model.clone());
        Ok(model)
    }

    /// A routed expert: from the cache, else loaded from disk (or peers) and cached.
    pub fn expert(
        &self,
        model: &Model,
        name: &str,
        layer: usize,
        index: u32,
        counts: &mut (u64, u64),
    ) -> Result<Arc<ExpertWeights>, InferenceError> {
        let file = model::expert_name(name, layer, index as usize);
        // The cache is keyed by content; a name is resolved (chain, manifest) once.
        let known = self.names.lock().expect("names lock").get(&file).copied();
        let manifest_hash = match known {
            Some(hash) => hash,
            None => {
                let hash = self.resolve(&file)?.content_hash;
                self.names
                    .lock()
                    .expect("names lock")
                    .insert(file.clone(), hash);
                hash
            }
        };
        if let Some(weights) = self.cache.lock().expect("cache lock").get(&manifest_hash) {
            self.metrics.expert_cache_hits.inc();
            counts.0 += 1;
            return Ok(weights);
        }
        let started = Instant::now();
        let mapped = self.load_verified(&file)?;
        let weights = Arc::new(ExpertWeights::load(
            &model.config,
            &mapped.map,
            &self.device,
        )?);
        self.metrics
            .expert_load_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.expert_cache_misses.inc();
        counts.1 += 1;
        let mut cache = self.cache.lock().expect("cache lock");
        cache.insert(manifest_hash, weights.clone());
        self.metrics.cached_expert_bytes.set(cache.bytes as i64);
        Ok(weights)
    }

    /// Checks a request against the limits (before any work).
    pub fn check(&self, request: &InferRequest) -> Result<String, InferenceError> {
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| self.settings.default_model.clone());
        crate::config::check_name(&model)
            .map_err(|reason| InferenceError::Request(format!("model: {reason}")))?;
        if request.max_new_tokens == 0 || request.max_new_tokens > self.settings.max_new_tokens {
            return Err(InferenceError::Request(format!(
                "max_new_tokens: {} is not between 1 and {}",
                request.max_new_tokens, self.settings.max_new_tokens
            )));
        }
        if request.tokens.is_empty() {
            return Err(InferenceError::Request("tokens: empty".into()));
        }
        Ok(model)
    }

    /// Runs a request to the end (blocking: call from a blocking thread).
    pub fn infer_blocking(&self, request: &InferRequest) -> Result<InferResponse, InferenceError> {
        let started = Instant::now();
        let name = self.check(request)?;
        let model = self.model(&name)?;
        let total = request.tokens.len() + request.max_new_tokens as usize;
        if total > model.config.max_seq {
            return Err(InferenceError::Request(format!(
                "tokens + max_new_tokens: {total} is over the model's max_seq {}",
                model.config.max_seq
            )));
        }
        model.check_tokens(&request.tokens)?;
        let mut sequence = request.tokens.clone();
        let mut used: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); model.config.layers];
        let mut counts = (0u64, 0u64);
        let mut last_logits = Vec::new();
        for _ in 0..request.max_new_tokens {
            let output = model.forward(&sequence, &mut |layer, index| {
                self.expert(&model, &name, layer, index, &mut counts)
            })?;
            for (all, step) in used.iter_mut().zip(output.experts) {
                all.extend(step);
            }
            sequence.push(model::argmax(&output.last_logits));
            last_logits = output.last_logits;
        }
        let generated = sequence[request.tokens.len()..].to_vec();
        let mut hasher = blake3::Hasher::new();
        for token in &generated {
            hasher.update(&token.to_le_bytes());
        }
        for logit in &last_logits {
            hasher.update(&logit.to_le_bytes());
        }
        self.metrics.requests.inc();
        self.metrics.tokens_generated.inc_by(generated.len() as u64);
        Ok(InferResponse {
            model: name,
            tokens: generated,
            experts: used
                .into_iter()
                .map(|set| set.into_iter().collect())
                .collect(),
            output_hash: Hash(*hasher.finalize().as_bytes()),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            expert_hits: counts.0,
            expert_loads: counts.1,
        })
    }

    /// Runs a request on a blocking thread, one at a time.
    pub async fn infer(
        self: &Arc<Self>,
        request: InferRequest,
    ) -> Result<InferResponse, InferenceError> {
        self.check(&request)?;
        let _permit = tokio::time::timeout(Duration::from_secs(60), self.running.acquire())
            .await
            .map_err(|_| InferenceError::Unavailable("busy: waited 60 s for a free slot".into()))?
            .map_err(|_| InferenceError::Unavailable("shutting down".into()))?;
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.infer_blocking(&request))
            .await
            .map_err(|error| InferenceError::Compute(format!("inference task: {error}")))?
    }

    /// Asks connected peers, in turn, until one answers `request` with something `accept`
    /// takes; runs on a blocking thread (waits on the P2P task).
    fn ask_peers<T>(
        &self,
        request: TileRequest,
        what: &str,
        mut accept: impl FnMut(TileResponse) -> Result<T, String>,
    ) -> Result<T, InferenceError> {
        let p2p = self.p2p.as_ref().ok_or_else(|| {
            InferenceError::Unavailable(format!("{what}: not here, and no peers to ask"))
        })?;
        let peers = p2p.connected_peers();
        if peers.is_empty() {
            return Err(InferenceError::Unavailable(format!(
                "{what}: not here, and no peer is connected"
            )));
        }
        let mut refusals = Vec::new();
        for peer in peers {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if p2p
                .commands
                .send(P2pCommand::FetchTile {
                    peer,
                    request: request.clone(),
                    reply,
                })
                .is_err()
            {
                return Err(InferenceError::Unavailable("p2p stopped".into()));
            }
            let outcome = wait_blocking(answer, PEER_TIMEOUT);
            match outcome.and_then(&mut accept) {
                Ok(value) => return Ok(value),
                Err(reason) => {
                    tracing::debug!(%peer, what, %reason, "peer could not give it");
                    refusals.push(format!("{peer}: {reason}"));
                }
            }
        }
        Err(InferenceError::Unavailable(format!(
            "{what}: no peer gave it ({})",
            refusals.join("; ")
        )))
    }

    /// One tile of a known expert from peers, verified against its hash.
    fn fetch_tile(&self, manifest: &ExpertManifest, index: u32) -> Result<Vec<u8>, InferenceError> {
        let expected = manifest.tiles[index as usize];
        let range = manifest.range(index);
        let metrics = &self.metrics;
        let bytes = self.ask_peers(
            TileRequest::Tile {
                content_hash: manifest.content_hash.0.to_vec(),
                index,
            },
            &format!("{} tile {index}", manifest.name),
            |response| match response {
                TileResponse::Tile { index: got, bytes } if got == index => {
                    if bytes.len() == range.len() && tiles::hash_bytes(&bytes) == expected {
                        Ok(bytes)
                    } else {
                        metrics.tiles_refused.inc();
                        Err("tile does not match its hash: refused".into())
                    }
                }
                TileResponse::Unavailable { reason } => Err(reason),
                other => Err(format!("unexpected answer {:?}", kind_of(&other))),
            },
        )?;
        self.metrics.tiles_fetched.inc();
        Ok(bytes)
    }

    /// A whole expert from peers: its manifest (checked against the chain's record), then every
    /// tile (each checked against its hash), assembled and moved into the store.
    fn fetch_expert(&self, record: &ExpertRecord) -> Result<ExpertManifest, InferenceError> {
        let started = Instant::now();
        let manifest = self.ask_peers(
            TileRequest::Manifest {
                content_hash: record.content_hash.0.to_vec(),
            },
            &format!("{} manifest", record.name),
            |response| match response {
                TileResponse::Manifest { json } => {
                    let manifest: ExpertManifest = serde_json::from_slice(&json)
                        .map_err(|error| format!("manifest: {error}"))?;
                    manifest.check().map_err(|error| error.to_string())?;
                    if manifest.content_hash != record.content_hash
                        || manifest.tiles_root != record.tiles_root
                        || manifest.bytes != record.bytes
                        || manifest.tiles.len() as u64 != u64::from(record.tiles)
                        || manifest.name != record.name
                    {
                        return Err("manifest differs from the on-chain record: refused".into());
                    }
                    Ok(manifest)
                }
                TileResponse::Unavailable { reason } => Err(reason),
                other => Err(format!("unexpected answer {:?}", kind_of(&other))),
            },
        )?;
        let mut partial = self.store.begin_partial(&manifest)?;
        for index in partial.missing() {
            let bytes = self.fetch_tile(&manifest, index)?;
            partial.put_tile(index, &bytes)?;
        }
        self.store.finish_partial(partial)?;
        tracing::info!(
            expert = %manifest.name,
            tiles = manifest.tiles.len(),
            bytes = manifest.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "expert fetched from peers"
        );
        Ok(manifest)
    }

    /// The answer to a peer's tile request (reads and verifies; blocking).
    pub fn serve(&self, request: &TileRequest) -> TileResponse {
        let unavailable = |reason: String| TileResponse::Unavailable { reason };
        let content = match request {
            TileRequest::Manifest { content_hash } | TileRequest::Tile { content_hash, .. } => {
                match <[u8; 32]>::try_from(content_hash.as_slice()) {
                    Ok(bytes) => Hash(bytes),
                    Err(_) => return unavailable("content_hash must be 32 bytes".into()),
                }
            }
        };
        let manifest = match self.store.manifest(&content) {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return unavailable(format!("expert {content} is not here")),
            Err(error) => return unavailable(error.to_string()),
        };
        match request {
            TileRequest::Manifest { .. } => TileResponse::Manifest {
                json: serde_json::to_vec(&manifest).expect("a manifest serialises"),
            },
            TileRequest::Tile { index, .. } => match self.store.read_tile(&manifest, *index) {
                Ok(bytes) => TileResponse::Tile {
                    index: *index,
                    bytes,
                },
                Err(error) => unavailable(error.to_string()),
            },
        }
    }

    /// Answers peers' tile requests (from the swarm whose command sender is `commands`) until
    /// the P2P task stops.
    pub async fn serve_peers(
        self: Arc<Self>,
        mut requests: tokio::sync::mpsc::Receiver<TileInbound>,
        commands: crate::p2p::P2pCommands,
    ) {
        while let Some(inbound) = requests.recv().await {
            let service = self.clone();
            let commands = commands.clone();
            tokio::task::spawn_blocking(move || {
                let response = service.serve(&inbound.request);
                let _ = commands.send(P2pCommand::RespondTile {
                    channel: inbound.channel,
                    response,
                });
            });
        }
    }

    /// Registers local experts the chain does not list yet (`register_expert`, signed with the
    /// node's validator key, fee 0), checking every few seconds for new ones (written by
    /// `blyan-node experts generate` while the node runs). Runs until the node stops.
    pub async fn register_local(
        self: Arc<Self>,
        key: ed25519_dalek::SigningKey,
        chain_id: String,
        state: Arc<std::sync::RwLock<crate::state::ChainState>>,
        submissions: tokio::sync::mpsc::Sender<crate::node::Submission>,
    ) {
        let address = key.verifying_key().to_bytes();
        let mut tick = tokio::time::interval(REGISTER_EVERY);
        loop {
            tick.tick().await;
            let service = self.clone();
            let pending = match tokio::task::spawn_blocking(move || service.unregistered()).await {
                Ok(Ok(pending)) => pending,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot list local experts");
                    continue;
                }
                Err(_) => return,
            };
            if pending.is_empty() {
                continue;
            }
            let nonce = state
                .read()
                .expect("chain state lock poisoned")
                .account(&address)
                .nonce;
            let mut accepted = 0;
            for (offset, manifest) in pending
                .iter()
                .take(crate::state::MAX_NONCE_GAP as usize)
                .enumerate()
            {
                let tx = crate::state::tx::Tx::signed(
                    &chain_id,
                    &key,
                    register_body(manifest),
                    0,
                    nonce + offset as u64,
                );
                let (reply, verdict) = tokio::sync::oneshot::channel();
                if submissions.send((tx.encode(), reply)).await.is_err() {
                    return;
                }
                match verdict.await {
                    Ok(Ok(_)) => accepted += 1,
                    Ok(Err(crate::state::tx::TxError::Duplicate)) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(expert = %manifest.name, %error, "register_expert refused")
                    }
                    Err(_) => return,
                }
            }
            if accepted > 0 {
                tracing::info!(
                    submitted = accepted,
                    pending = pending.len(),
                    "register_expert submitted for local experts"
                );
            }
        }
    }

    /// Local experts the chain does not list yet.
    pub fn unregistered(&self) -> Result<Vec<ExpertManifest>, InferenceError> {
        let registered: BTreeSet<Hash> = match &self.registry {
            Some(registry) => registry()
                .into_iter()
                .map(|record| record.content_hash)
                .collect(),
            None => BTreeSet::new(),
        };
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|manifest| !registered.contains(&manifest.content_hash))
            .collect())
    }
}

fn kind_of(response: &TileResponse) -> &'static str {
    match response {
        TileResponse::Manifest { .. } => "manifest",
        TileResponse::Tile { .. } => "tile",
        TileResponse::Unavailable { .. } => "unavailable",
    }
}

/// Waits for a P2P answer from a blocking thread.
fn wait_blocking(
    answer: tokio::sync::oneshot::Receiver<Result<TileResponse, String>>,
    timeout: Duration,
) -> Result<TileResponse, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(async {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err("p2p dropped the request".into()),
                Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
            }
        }),
        Err(_) => Err("no async runtime to wait on".into()),
    }
}

/// The device forward passes run on: CUDA when built with the `cuda` feature and a GPU
/// answers, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(device) = Device::new_cuda(0) {
            return device;
        }
        tracing::warn!("built with cuda but no CUDA device answered: running on the CPU");
    }
    Device::Cpu
}

#[cfg(test)]
mod tests;

/// Generates a model from `config.seed` into `store`: the base file and every expert, cut into
/// tiles of `tile_bytes`. `progress` hears (files written, files in all).
pub fn generate_model(
    store: &ExpertStore,
    model: &str,
    config: &model::MoeConfig,
    tile_bytes: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ExpertManifest>, InferenceError> {
    config.check()?;
    crate::config::check_name(model)
        .map_err(|reason| InferenceError::Config(format!("model: {reason}")))?;
    if !(1..=tiles::MAX_TILE_BYTES).contains(&tile_bytes) {
        return Err(InferenceError::Config(format!(
            "tile_bytes: {tile_bytes} is not between 1 and {}",
            tiles::MAX_TILE_BYTES
        )));
    }
    let total = 1 + config.layers * config.experts;
    let mut written = Vec::with_capacity(total);
    written.push(store.put(
        &model::base_name(model),
        0,
        &model::generate_base(config),
        tile_bytes,
    )?);
    progress(1, total);
    for layer in 0..config.layers {
        for index in 0..config.experts {
            let bytes = model::generate_expert(config, layer, index);
            written.push(store.put(
                &model::expert_name(model, layer, index),
                layer as u32,
                &bytes,
                tile_bytes,
            )?);
            progress(written.len(), total);
        }
    }
    Ok(written)
}

/// The `register_expert` transaction body for a stored expert.
pub fn register_body(manifest: &ExpertManifest) -> crate::state::tx::TxBody {
    crate::state::tx::TxBody::RegisterExpert {
        content_hash: manifest.content_hash,
        tiles_root: manifest.tiles_root,
        name: manifest.name.clone(),
        layer: manifest.layer,
        tiles: manifest.tiles.len() as u32,
        bytes: manifest.bytes,
    }
}

/// What the chain records for a stored expert (as `register_expert` would), for tests and
/// tools that have no chain.
pub fn record_of(manifest: &ExpertManifest) -> ExpertRecord {
    ExpertRecord {
        owner: String::new(),
        content_hash: manifest.content_hash,
        tiles_root: manifest.tiles_root,
        name: manifest.name.clone(),
        layer: manifest.layer,
        tiles: manifest.tiles.len() as u32,
        bytes: manifest.bytes,
        height: 0,
    }
}
