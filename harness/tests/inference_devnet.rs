//! Mixture-of-experts inference on a devnet of node processes: node0 generates a model
//! (`blyan-node experts generate`) while the devnet runs; it registers the experts on chain;
//! the other nodes fetch the base and the experts their requests route to from peers, tile by
//! tile, verified; 100 seeded random requests give bit-identical answers on all 4 nodes.

mod common;

use std::path::Path;
use std::time::Duration;

use blyan_harness::process;
use common::{get_json, log_tails, loopback_options, Cleanup};

fn metric(client: &reqwest::blocking::Client, api: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{api}/metrics"))
        .send()
        .and_then(|response| response.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = rest
                .strip_prefix("_total ")
                .or_else(|| rest.strip_prefix(' '))?;
            value.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

#[test]
fn four_nodes_fetch_experts_from_peers_and_answer_identically() {
    let dir = tempfile::tempdir().unwrap();
    let base: &Path = dir.path();
    let mut options = loopback_options("infer", base, 4, 7);
    options.wait_height = 2;
    options.wait_timeout = Duration::from_secs(120);
    options.log_level = "info".into();
    let state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "infer".into());
    let client = process::http_client();

    // A small model (dim 64, 4 experts of 2 layers, 48 KiB tiles so each expert has several),
    // generated into node0's home as `[inference]` does; node0 registers it on chain.
    let spec = blyan_harness::manifest::InferenceSpec {
        seed: Some(5),
        dim: Some(64),
        hidden: Some(96),
        layers: Some(2),
        experts: Some(4),
        vocab: Some(128),
        max_seq: Some(64),
        tile_bytes: Some(49152),
        ..Default::default()
    };
    assert_eq!(spec.files(), 9);
    let took = blyan_harness::inference::install_model(
        &state,
        &spec,
        &options.node_bin,
        Duration::from_secs(60),
        &mut |_| {},
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tails(&state)));
    eprintln!(
        "model generated and registered on 4 nodes in {:.1} s",
        took.as_secs_f64()
    );
    for node in &state.nodes {
        let listed = get_json(&client, &format!("{}/experts", node.api));
        assert_eq!(listed["registered"], 9, "{}: {listed}", node.moniker);
    }

    // A request node3 cannot serve from its own disk: it fetches what it needs.
    let request = serde_json::json!({ "tokens": [1, 2, 3, 4], "max_new_tokens": 4 });
    let answer: serde_json::Value = client
        .post(format!("{}/infer", state.nodes[3].api))
        .json(&request)
        .send()
        .and_then(|response| response.json())
        .expect("POST /infer on node3");
    assert_eq!(
        answer["tokens"].as_array().map(Vec::len),
        Some(4),
        "{answer}"
    );
    assert!(answer["expert_loads"].as_u64().unwrap() > 0, "{answer}");
    assert!(
        metric(&client, &state.nodes[3].api, "blyan_tiles_fetched") > 0.0,
        "node3 fetched no tiles"
    );
    // Requests beyond the limits are refused with 400 naming the field.
    let refused = client
        .post(format!("{}/infer", state.nodes[1].api))
        .json(&serde_json::json!({ "tokens": [1, 999], "max_new_tokens": 4 }))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: serde_json::Value = refused.json().unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("tokens[1]: 999"),
        "{body}"
    );

    // 100 seeded random requests, each answered by all 4 nodes: identical bits.
    let config = blyan_loadgen::infer::InferConfig {
        targets: state.nodes.iter().map(|node| node.api.clone()).collect(),
        requests: 100,
        concurrency: 4,
        prompt_tokens: 8,
        new_tokens: 4,
        vocab: 128,
        seed: 11,
        model: None,
        compare: true,
        timeout: Duration::from_secs(120),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(blyan_loadgen::infer::run_infer(&config))
        .unwrap();
    eprintln!(
        "100 requests x 4 nodes: ok {}, compared {}, mismatches {}, p50 {:.1} ms, p99 {:.1} ms",
        report.ok,
        report.compared,
        report.mismatches.len(),
        report.latency.p50_ms,
        report.latency.p99_ms
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.ok, 100);
    assert_eq!(report.compared, 100);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert!(
        report.latency.p50_ms > 0.0 && report.latency.p99_ms >= report.latency.p50_ms,
        "{:?}",
        report.latency
    );
    // The other nodes fetched what their requests routed to; node0 fetched nothing.
    for node in &state.nodes[1..] {
        let fetched = metric(&client, &node.api, "blyan_tiles_fetched");
        assert!(fetched > 0.0, "{} fetched nothing", node.moniker);
        let listed = get_json(&client, &format!("{}/experts", node.api));
        let stored = listed["experts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|expert| expert["stored"] == true)
            .count();
        assert!(stored >= 2, "{}: {listed}", node.moniker);
    }
    assert_eq!(
        metric(&client, &state.nodes[0].api, "blyan_tiles_fetched"),
        0.0
    );
}
