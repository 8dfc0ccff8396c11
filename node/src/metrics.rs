//! Prometheus metrics of the node, served in the OpenMetrics text format at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request counter: the route pattern (never the raw path, to bound the
/// number of series), the method and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// All metrics of one node.
/// Why an input from the network or a client was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `api` (HTTP requests), `p2p` (gossip messages) or `connection` (peers and TLS clients).
    pub source: &'static str,
    /// A short code: `bad_signature`, `malformed`, `payload_too_large`, `rate_limited`,
    /// `not_allowed`, `revoked`, ...
    pub reason: &'static str,
}

/// The consensus step a height reached: `prevote`, `precommit` or `commit`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

/// Seconds from a height's start to each step; one histogram per step.
pub type StepSeconds = Family<StepLabels, Histogram, fn() -> Histogram>;

fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Refused inputs by source and reason; cheap to clone (one shared family).
pub type RefusedInputs = Family<RefusedLabels, Counter>;

/// Counts one refused input.
pub fn refuse(family: &RefusedInputs, source: &'static str, reason: &'static str) {
    family
        .get_or_create(&RefusedLabels { source, reason })
        .inc();
}

pub struct Metrics {
    registry: Registry,
    /// gossipsub's registry, set once the swarm is built.
    p2p: std::sync::OnceLock<std::sync::Arc<Registry>>,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Inputs refused at the boundary (never a panic): by source and reason.
    pub refused_inputs: RefusedInputs,
    pub latest_height: Gauge,
    pub checkpoints_created: Counter,
    pub blocks_committed: Counter,
    pub blocks_synced: Counter,
    pub commit_latency_seconds: Histogram,
    /// From the start of a height (this node's, after its commit pause) to its first entry of
    /// each step in any round: where a height's time goes.
    pub consensus_step_seconds: StepSeconds,
    pub consensus_round: Gauge,
    pub peers: Gauge,
    pub mempool_txs: Gauge,
    pub gossip_rejected: Counter,
    pub txs_rejected: Counter,
    pub evidence: Counter,
    pub conflicting_proposals: Counter,
    pub inference: InferenceMetrics,
}

/// Expert loading and inference (`crate::inference`).
#[derive(Clone)]
pub struct InferenceMetrics {
    pub expert_cache_hits: Counter,
    pub expert_cache_misses: Counter,
    pub expert_load_seconds: Histogram,
    pub tiles_fetched: Counter,
    pub tiles_refused: Counter,
    pub requests: Counter,
    pub tokens_generated: Counter,
    pub cached_expert_bytes: Gauge,
}

impl Default for InferenceMetrics {
    /// Unregistered metrics (tools and tests that serve no `/metrics`).
    fn default() -> InferenceMetrics {
        InferenceMetrics {
            expert_cache_hits: Counter::default(),
            expert_cache_misses: Counter::default(),
            expert_load_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            tiles_fetched: Counter::default(),
            tiles_refused: Counter::default(),
            requests: Counter::default(),
            tokens_generated: Counter::default(),
            cached_expert_bytes: Gauge::default(),
        }
    }
}

impl InferenceMetrics {
    fn register(registry: &mut Registry) -> InferenceMetrics {
        let metrics = InferenceMetrics::default();
        registry.register(
            "expert_cache_hits",
            "Routed experts found in the memory cache",
            metrics.expert_cache_hits.clone(),
        );
        registry.register(
            "expert_cache_misses",
            "Routed experts loaded from disk or peers",
            metrics.expert_cache_misses.clone(),
        );
        registry.register(
            "expert_load_seconds",
            "Time to load a routed expert (disk or peers, tiles verified) into memory",
            metrics.expert_load_seconds.clone(),
        );
        registry.register(
            "tiles_fetched",
            "Expert tiles fetched from peers and verified",
            metrics.tiles_fetched.clone(),
        );
        registry.register(
            "tiles_refused",
            "Expert tiles refused for a hash mismatch (on disk or from a peer)",
            metrics.tiles_refused.clone(),
        );
        registry.register(
            "inference_requests",
            "Inference requests answered",
            metrics.requests.clone(),
        );
        registry.register(
            "inference_tokens",
            "Tokens generated by inference",
            metrics.tokens_generated.clone(),
        );
        registry.register(
            "expert_cache_bytes",
            "Bytes of expert weights held in the memory cache",
            metrics.cached_expert_bytes.clone(),
        );
        metrics
    }
}

impl Metrics {
    pub fn new(version: &str, commit: &str) -> Metrics {
        let mut registry = Registry::with_prefix("blyan");
        let mut metrics = Metrics {
            inference: InferenceMetrics::default(),
            registry: Registry::default(),
            p2p: std::sync::OnceLock::new(),
            http_requests: Family::default(),
            refused_inputs: RefusedInputs::default(),
            latest_height: Gauge::default(),
            checkpoints_created: Counter::default(),
            blocks_committed: Counter::default(),
            blocks_synced: Counter::default(),
            commit_latency_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            consensus_step_seconds: Family::new_with_constructor(step_histogram),
            consensus_round: Gauge::default(),
            peers: Gauge::default(),
            mempool_txs: Gauge::default(),
            gossip_rejected: Counter::default(),
            txs_rejected: Counter::default(),
            evidence: Counter::default(),
            conflicting_proposals: Counter::default(),
        };
        metrics.register_api(&mut registry);
        metrics.register_chain(&mut registry);
        registry.register(
            "build",
            "Version and git commit of this binary",
            Info::new(vec![
                ("version".to_string(), version.to_string()),
                ("commit".to_string(), commit.to_string()),
            ]),
        );
        metrics.inference = InferenceMetrics::register(&mut registry);
        metrics.registry = registry;
        metrics
    }

    /// The API's requests and every input refused at the boundary.
    fn register_api(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP API requests by route, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "refused_inputs",
            "Inputs refused at the boundary (malformed, bad signature, oversized, rate limited, peer not allowed or revoked, client certificate refused) by source and reason",
            self.refused_inputs.clone(),
        );
    }

    /// Consensus, blocks, peers, mempool and evidence.
    fn register_chain(&self, registry: &mut Registry) {
        registry.register(
            "latest_height",
            "Height of the latest committed block",
            self.latest_height.clone(),
        );
        registry.register(
            "checkpoints_created",
            "Storage checkpoints created since start",
            self.checkpoints_created.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks this node decided through consensus",
            self.blocks_committed.clone(),
        );
        registry.register(
            "blocks_synced",
            "Blocks this node fetched through block sync, commits verified",
            self.blocks_synced.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "From the deciding round's proposal (received or made) to the decision",
            self.commit_latency_seconds.clone(),
        );
        registry.register(
            "consensus_step_seconds",
            "From the start of a height to this node's first entry of each step (prevote: \
             the proposal came or its timeout fired; precommit: two thirds prevoted; commit: \
             decided)",
            self.consensus_step_seconds.clone(),
        );
        registry.register(
            "consensus_round",
            "Round of the current height",
            self.consensus_round.clone(),
        );
        registry.register("peers", "Connected peers", self.peers.clone());
        registry.register(
            "mempool_txs",
            "Pending transactions",
            self.mempool_txs.clone(),
        );
        registry.register(
            "gossip_rejected",
            "Gossip messages rejected (malformed, bad signature, invalid block); senders penalised",
            self.gossip_rejected.clone(),
        );
        registry.register(
            "txs_rejected",
            "Transactions refused by the mempool",
            self.txs_rejected.clone(),
        );
        registry.register(
            "evidence",
            "Equivocations observed (two different votes of one validator for one step)",
            self.evidence.clone(),
        );
        registry.register(
            "conflicting_proposals",
            "Second, different proposals one proposer signed for one height and round (an equivocating proposer; seen, not slashed)",
            self.conflicting_proposals.clone(),
        );
    }

    /// The OpenMetrics text exposition, with the P2P layer's registry after ours when the
    /// swarm runs.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        if let Some(p2p) = self.p2p.get() {
            text::encode_registry(&mut out, p2p).expect("writing to a String cannot fail");
        }
        text::encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }

    /// Adds the P2P layer's registry (gossipsub's counters) to what [`Metrics::encode`]
    /// writes; a second call changes nothing.
    pub fn attach_p2p(&self, registry: std::sync::Arc<Registry>) {
        let _ = self.p2p.set(registry);
    }
}
