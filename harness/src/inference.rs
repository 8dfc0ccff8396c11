//! `[inference]`: a mixture-of-experts model generated into one node's home of a running
//! devnet (`blyan-node experts generate`; Docker homes are bind mounts, so this works on both
//! backends); that node registers the files on chain, and the devnet is ready for `POST
//! /infer` once every node lists them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::manifest::InferenceSpec;
use crate::process::{http_client, DevnetState, ProcessError};

/// Generates the model and waits (at most `timeout`) until every node sees all its files
/// registered on chain; returns how long that took. `progress` hears what is happening.
pub fn install_model(
    state: &DevnetState,
    spec: &InferenceSpec,
    node_bin: &Path,
    timeout: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<Duration, ProcessError> {
    let started = Instant::now();
    let on = spec.node();
    let node = state
        .nodes
        .iter()
        .find(|node| node.moniker == on)
        .ok_or_else(|| ProcessError::Invalid(format!("inference.on: no node named {on:?}")))?;
    progress(format!(
        "generating model {:?} into {}",
        spec.model(),
        node.moniker
    ));
    let output = std::process::Command::new(node_bin)
        .args(["experts", "generate", "--home"])
        .arg(&node.home)
        .args(spec.generate_args())
        .output()
        .map_err(|source| ProcessError::Io {
            path: node_bin.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(ProcessError::Invalid(format!(
            "blyan-node experts generate failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let files = spec.files() as u64;
    let client = http_client();
    let deadline = Instant::now() + timeout;
    loop {
        let registered: Vec<u64> = state
            .nodes
            .iter()
            .map(|node| {
                client
                    .get(format!("{}/experts", node.api))
                    .send()
                    .and_then(|response| response.json::<serde_json::Value>())
                    .ok()
                    .and_then(|body| body["registered"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        let ready = registered.iter().filter(|count| **count >= files).count();
        progress(format!(
            "{ready}/{} nodes see the {files} model files registered on chain",
            state.nodes.len()
        ));
        if ready == state.nodes.len() {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(ProcessError::Timeout(format!(
                "model files registered per node after {} s: {registered:?} of {files}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
