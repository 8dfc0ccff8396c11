//! Shared helpers for the workspace-level integration tests in `tests/`.

use std::path::PathBuf;

use blyan_harness::docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use bollard::Docker;

/// The repository root (where the workspace `Cargo.toml` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A workspace binary built next to the node (`blyan-node`, `devnet`, ...).
pub fn target_bin(name: &str) -> PathBuf {
    let bin = blyan_harness::process::default_node_bin().with_file_name(name);
    assert!(
        bin.is_file(),
        "{} missing: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The Docker tests of one test binary run one at a time: each devnet keeps both cores of a
/// small CI machine busy, and the checks measure round trips and block rates (run beside the
/// 10-node devnet, a 100 ms latency toxic once read as +205 ms and a partition as none).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A two-worker runtime for the Docker calls of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// The Docker daemon, or `None` (the caller skips) when none answers outside CI; with
/// `CI=true` a missing daemon is a failure.
pub fn daemon(rt: &tokio::runtime::Runtime) -> Option<Docker> {
    match rt.block_on(docker::connect()) {
        Ok(docker) => Some(docker),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but {error}: the Docker tests must run in CI")
        }
        Err(error) => {
            skipped(&format!("no Docker daemon answers ({error})"));
            None
        }
    }
}

/// Says that the running test skips, on a line of its own that reaches the terminal or the
/// CI log even while the test harness captures output (written to the stderr handle, not
/// through `eprintln!`, which libtest captures), in the form `.ci/summary` counts:
/// `SKIPPED <test>: <reason>`.
pub fn skipped(reason: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// Containers, networks and volumes labelled `blyan.devnet=<devnet>`.
pub async fn leftovers(docker: &Docker, devnet: &str) -> (usize, usize, usize) {
    let filters = docker::label_filter(Some(devnet));
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("containers list")
        .len();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("networks list")
        .len();
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("volumes list")
        .volumes
        .map_or(0, |v| v.len());
    (containers, networks, volumes)
}

/// Swarm objects labelled `blyan.devnet=<devnet>`: (services, secrets, configs, networks,
/// volumes). Services, secrets and configs exist only on a swarm manager; elsewhere 0.
pub async fn swarm_leftovers(docker: &Docker, devnet: &str) -> (usize, usize, usize, usize, usize) {
    use bollard::query_parameters::{
        ListConfigsOptionsBuilder, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    };
    let filters = docker::label_filter(Some(devnet));
    let manager = blyan_harness::swarm::swarm_state(docker)
        .await
        .expect("docker info")
        == blyan_harness::swarm::SwarmState::Manager;
    let (services, secrets, configs) = if manager {
        (
            docker
                .list_services(Some(
                    ListServicesOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .expect("services list")
                .len(),
            docker
                .list_secrets(Some(
                    ListSecretsOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .expect("secrets list")
                .len(),
            docker
                .list_configs(Some(
                    ListConfigsOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .expect("configs list")
                .len(),
        )
    } else {
        (0, 0, 0)
    };
    let (_, networks, volumes) = leftovers(docker, devnet).await;
    (services, secrets, configs, networks, volumes)
}
