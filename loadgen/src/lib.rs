//! Open-loop load for Blyan devnets: it will send transactions and inference requests at a
//! target rate and record latencies in HDR histograms. Nothing is built yet.

/// A target rate of requests per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);
