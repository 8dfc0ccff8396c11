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
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub latest_height: Gauge,
    pub checkpoints_created: Counter,
    pub blocks_committed: Counter,
    pub blocks_synced: Counter,
    pub commit_latency_seconds: Histogram,
    pub consensus_round: Gauge,
    pub peers: Gauge,
    pub mempool_txs: Gauge,
    pub gossip_rejected: Counter,
    pub txs_rejected: Counter,
    pub evidence: Counter,
}

impl Metrics {
    pub fn new(version: &str, commit: &str) -> Metrics {
        let mut registry = Registry::with_prefix("blyan");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP API requests by route, method and status",
            http_requests.clone(),
        );
        let latest_height = Gauge::default();
        registry.register(
            "latest_height",
            "Height of the latest committed block",
            latest_height.clone(),
        );
        let checkpoints_created = Counter::default();
        registry.register(
            "checkpoints_created",
            "Storage checkpoints created since start",
            checkpoints_created.clone(),
        );
        let blocks_committed = Counter::default();
        registry.register(
            "blocks_committed",
            "Blocks this node decided through consensus",
            blocks_committed.clone(),
        );
        let blocks_synced = Counter::default();
        registry.register(
            "blocks_synced",
            "Blocks this node fetched through block sync, commits verified",
            blocks_synced.clone(),
        );
        let commit_latency_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "commit_latency_seconds",
            "From the deciding round's proposal (received or made) to the decision",
            commit_latency_seconds.clone(),
        );
        let consensus_round = Gauge::default();
        registry.register(
            "consensus_round",
            "Round of the current height",
            consensus_round.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Connected peers", peers.clone());
        let mempool_txs = Gauge::default();
        registry.register("mempool_txs", "Pending transactions", mempool_txs.clone());
        let gossip_rejected = Counter::default();
        registry.register(
            "gossip_rejected",
            "Gossip messages rejected (malformed, bad signature, invalid block); senders penalised",
            gossip_rejected.clone(),
        );
        let txs_rejected = Counter::default();
        registry.register(
            "txs_rejected",
            "Transactions refused by the mempool",
            txs_rejected.clone(),
        );
        let evidence = Counter::default();
        registry.register(
            "evidence",
            "Equivocations observed (two different votes of one validator for one step)",
            evidence.clone(),
        );
        registry.register(
            "build",
            "Version and git commit of this binary",
            Info::new(vec![
                ("version".to_string(), version.to_string()),
                ("commit".to_string(), commit.to_string()),
            ]),
        );
        Metrics {
            registry,
            http_requests,
            latest_height,
            checkpoints_created,
            blocks_committed,
            blocks_synced,
            commit_latency_seconds,
            consensus_round,
            peers,
            mempool_txs,
            gossip_rejected,
            txs_rejected,
            evidence,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
