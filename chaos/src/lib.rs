//! Fault injection for Blyan devnets: it will hold the fault model, seeded fault schedules and
//! the injectors (a Toxiproxy-compatible proxy per link, Docker process faults, Byzantine
//! switches). Nothing is built yet; the harness depends on this crate for its types.

/// The kinds of fault the model will cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Latency,
    Partition,
    Kill,
    Byzantine,
}
