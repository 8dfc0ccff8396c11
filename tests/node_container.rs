//! One node in one container, through testcontainers (`GenericImage` on the locally built
//! `blyan-node:dev`, never pulled): it commits blocks, serves its API and metrics on a published
//! port, and keeps its chain when the container is stopped and started again.
//!
//! Needs a Docker daemon. On a laptop without one the test skips with a loud message; with
//! `CI=true` a missing daemon is a failure.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use blyan_devnet::{daemon, runtime};
use blyan_harness::docker::{self, HOME_INSIDE, LABEL_DEVNET};
use blyan_harness::process;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// `GET url` as JSON, or `None` while the node is not answering.
fn get_json(url: &str) -> Option<serde_json::Value> {
    process::http_client()
        .get(url)
        .send()
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .ok()
}

/// Waits until the node behind `api` reports a height of at least `height`; returns it.
fn wait_height(api: &str, height: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = get_json(&format!("{api}/status")).and_then(|s| s["latest_height"].as_u64());
        if last.is_some_and(|h| h >= height) {
            return last.unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{api}: not at height {height} within {timeout:?} (last: {last:?})");
}

fn block_hash(api: &str, height: u64) -> String {
    let block = get_json(&format!("{api}/blocks/{height}"))
        .unwrap_or_else(|| panic!("{api}/blocks/{height} does not answer"));
    block["hash"]
        .as_str()
        .expect("a block has a hash")
        .to_string()
}

async fn api_url(container: &ContainerAsync<GenericImage>) -> String {
    let port = container
        .get_host_port_ipv4(docker::API_PORT.tcp())
        .await
        .expect("the API port is published");
    format!("http://127.0.0.1:{port}")
}

fn init_home(home: &Path) {
    let output = Command::new(process::default_node_bin())
        .args([
            "init",
            "--moniker",
            "solo",
            "--chain-id",
            "solo-1",
            "--home",
        ])
        .arg(home)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "init: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn single_node_container_commits_serves_and_survives_a_restart() {
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let node_bin = process::default_node_bin();
    assert!(node_bin.is_file(), "{} missing", node_bin.display());
    let image = rt
        .block_on(docker::build_image(&docker, &node_bin, false))
        .unwrap();
    let (name, tag) = image.tag.split_once(':').expect("name:tag");

    let home = tempfile::tempdir().unwrap();
    init_home(home.path());
    let request = GenericImage::new(name, tag)
        .with_exposed_port(docker::API_PORT.tcp())
        .with_wait_for(WaitFor::message_on_either_std("node started"))
        .with_mount(Mount::bind_mount(
            home.path().display().to_string(),
            HOME_INSIDE,
        ))
        .with_env_var("BLYAN_API_LISTEN", format!("0.0.0.0:{}", docker::API_PORT))
        .with_label(LABEL_DEVNET, format!("tc-{}", std::process::id()))
        .with_cmd(["start", "--home", HOME_INSIDE]);
    let container = rt.block_on(request.start()).expect("the container starts");

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let api = rt.block_on(api_url(&container));
        let reached = wait_height(&api, 3, Duration::from_secs(60));
        let hash = block_hash(&api, 3);
        let metrics = process::http_client()
            .get(format!("{api}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            metrics.contains("blyan_latest_height"),
            "/metrics serves the node's metrics: {}",
            &metrics[..metrics.len().min(200)]
        );

        // Stop (SIGTERM) and start the same container: the chain is still there and grows.
        rt.block_on(container.stop_with_timeout(Some(10))).unwrap();
        rt.block_on(container.start()).unwrap();
        let api = rt.block_on(api_url(&container));
        wait_height(&api, reached + 2, Duration::from_secs(60));
        assert_eq!(
            block_hash(&api, 3),
            hash,
            "block 3 changed across a restart"
        );
    }));
    rt.block_on(container.rm()).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
