//! The Blyan devnet harness: it turns a manifest into a running devnet (Docker, Docker Swarm or
//! local processes; Kubernetes objects by rendering), drives load and faults, records histories, checks them and compares baselines.
//!
//! The manifest, the Docker, process and Swarm backends (`devnet up/down/status/logs`),
//! `devnet render k8s`, the offline node image, capacity planning, docker-compose rendering,
//! `devnet sim` (seeded scenarios in the deterministic consensus simulator), `devnet run` (faults
//! through Docker, signals and link proxies, with a recorded history), the checkers and reports
//! over that history, NAT topologies, and benchmarks with baselines, comparison and change
//! points over past results. `ARCHITECTURE.md` describes how the parts fit.

pub mod backend;
pub mod bench;
pub mod bisect;
pub mod changepoint;
pub mod checks;
pub mod disk;
pub mod docker;
pub mod faults;
pub mod history;
pub mod inference;
pub mod links;
pub mod manifest;
pub mod plan;
pub mod process;
pub mod progress;
pub mod recorder;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod swarm;
pub mod testnet;
pub mod timeline;
pub mod trend;
