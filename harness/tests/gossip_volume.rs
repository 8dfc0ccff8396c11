//! The cost of a height in gossip messages, from each node's own counters (gossipsub's, in
//! `/metrics`): on a 16-validator process devnet, the vote messages a node takes as new, and
//! all it receives duplicates included, stay within bounds derived from the validator count.
//! A message path whose cost explodes with the devnet (copies coming back as new messages and
//! going round again, a message id that changes on the way, publishing to every peer on every
//! hop) fails here at a size a debug build runs in CI.
//!
//! Needs the workspace binaries: `cargo test --workspace` builds them.

mod common;

use std::time::{Duration, Instant};

use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use common::{loopback_options, Cleanup};

const VALIDATORS: usize = 16;

/// gossipsub's mesh degree D (`p2p.gossip_mesh_n`, the node's default) and its upper bound, 2D.
const MESH_N: usize = 6;

struct Sample {
    height: u64,
    /// Vote messages taken as new (after gossipsub's duplicate filter).
    new_votes: f64,
    /// Vote messages received, duplicates included.
    all_votes: f64,
}

fn sample(client: &reqwest::blocking::Client, state: &DevnetState, index: usize) -> Sample {
    let node = &state.nodes[index];
    let status: serde_json::Value = client
        .get(format!("{}/status", node.api))
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|error| panic!("{}: /status: {error}", node.moniker));
    let text = client
        .get(format!("{}/metrics", node.api))
        .send()
        .and_then(|response| response.text())
        .unwrap_or_else(|error| panic!("{}: /metrics: {error}", node.moniker));
    let series = |name: &str| -> f64 {
        let prefix = format!("{name}{{hash=\"/blyan/{}/votes/2\"}} ", state.chain_id);
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no {prefix:?} in /metrics", node.moniker))
    };
    Sample {
        height: status["latest_height"].as_u64().unwrap_or(0),
        new_votes: series("blyan_gossipsub_topic_msg_recv_counts_total"),
        all_votes: series("blyan_gossipsub_topic_msg_recv_counts_unfiltered_total"),
    }
}

#[test]
fn vote_messages_per_height_stay_within_bounds_derived_from_the_validator_count() {
    let base = tempfile::tempdir().unwrap();
    let mut options = loopback_options("gossip-volume", base.path(), VALIDATORS, 11);
    options.wait_height = 3;
    options.wait_timeout = Duration::from_secs(240);
    let state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(options.base.clone(), options.name.clone());
    let client = process::http_client();
    let nodes: Vec<usize> = (0..VALIDATORS).collect();

    let before: Vec<Sample> = nodes.iter().map(|&i| sample(&client, &state, i)).collect();
    let started = Instant::now();
    // At least 8 heights on every node, for at most 90 s.
    let after = loop {
        std::thread::sleep(Duration::from_secs(2));
        let now: Vec<Sample> = nodes.iter().map(|&i| sample(&client, &state, i)).collect();
        if now
            .iter()
            .zip(&before)
            .all(|(a, b)| a.height >= b.height + 8)
        {
            break now;
        }
        let heights: Vec<u64> = now.iter().map(|s| s.height).collect();
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "fewer than 8 heights in 90 s: {heights:?}"
        );
    };

    // A height costs each validator's prevote and precommit once (a round more now and then,
    // and a re-send after 4 s without progress): a node takes at most 2 (n - 1) new vote
    // messages a round from the others; the bound allows 3 rounds' worth on average. Each new
    // message comes at most once from each peer: from its author (flood publishing), and from
    // each mesh peer that forwards it (at most min(n - 2, 2D) of them).
    let n = VALIDATORS;
    let new_bound = 3.0 * 2.0 * (n - 1) as f64;
    let copies_bound = 1.0 + (n - 2).min(2 * MESH_N) as f64;
    let mut rows = Vec::new();
    for (index, (b, a)) in before.iter().zip(&after).enumerate() {
        let heights = (a.height - b.height) as f64;
        let new = (a.new_votes - b.new_votes) / heights;
        let all = (a.all_votes - b.all_votes) / heights;
        rows.push(format!(
            "node{index}: {heights} heights, {new:.1} new and {all:.1} received vote messages a height"
        ));
        assert!(
            new <= new_bound,
            "node{index} took {new:.1} new vote messages a height (bound {new_bound} for {n} validators): {rows:#?}"
        );
        assert!(
            all <= new * copies_bound,
            "node{index} received {all:.1} vote messages a height for {new:.1} new ones (at most {copies_bound} copies each): {rows:#?}"
        );
    }
    eprintln!("{rows:#?}");
}
