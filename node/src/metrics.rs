//! Prometheus metrics of the node, served in the OpenMetrics text format at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
