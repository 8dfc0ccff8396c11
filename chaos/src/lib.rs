//! Fault injection for Blyan devnets (`docs/CHAOS.md`):
//!
//! - [`server`]: `blyan-chaos-proxy`, a Toxiproxy-compatible HTTP API (port 8474) over the
//!   `noxious` crate's TCP proxy and toxics. The harness puts one proxy on every directed P2P
//!   link and drives it with a Toxiproxy client.
//! - [`lazyfs`]: `blyan-lazyfs`, a FUSE layer that holds unsynced writes in memory and drops them
//!   on a simulated power loss, with an fsync delay for a slow disk (`disk` faults).
//! - [`model`]: partition shapes as the directed links they cut, and the seeded random nemesis.

pub mod lazyfs;
pub mod model;
pub mod server;

pub use model::{random_schedule, Drawn, RandomSpec, Shape, ShapeError, RANDOM_KINDS};
pub use server::{router, serve, ApiError, ProxyView, Store, ToxicSpec};
