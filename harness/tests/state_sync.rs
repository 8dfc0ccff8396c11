//! State sync on real node processes: a fresh node started with `--state-sync` next to a chain
//! of more than 5,000 blocks restores a verified snapshot and reaches the tip, fetching only the
//! blocks after the snapshot; a fresh node without it replays every block. Both end with the
//! validator's app hash. What is asserted is the work: the state-synced node fetches less than a
//! tenth of the blocks the replaying one executes. The times of both are printed, not asserted
//! (speed belongs in benchmarks; shared machines are noisy).

mod common;

use std::time::{Duration, Instant};

use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use common::{get_json, log_tails, loopback_options, wait_down, Cleanup};

const CHAIN_BLOCKS: u64 = 5_100;

fn status(state: &DevnetState, index: usize) -> Option<serde_json::Value> {
    process::node_status(&process::http_client(), &state.nodes[index])
}

fn synced_blocks(state: &DevnetState, index: usize) -> f64 {
    let metrics = process::http_client()
        .get(format!("{}/metrics", state.nodes[index].api))
        .send()
        .and_then(|response| response.text())
        .unwrap();
    metrics
        .lines()
        .find(|line| line.starts_with("blyan_blocks_synced_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("blocks_synced metric")
}

/// Starts node `index` fresh and times it to `target`.
fn join(
    state: &mut DevnetState,
    base: &std::path::Path,
    index: usize,
    args: &[&str],
    target: u64,
) -> Duration {
    let started = Instant::now();
    process::start_node_with(base, state, index, args).expect("start");
    process::wait_for_height(state, &[index], target, Duration::from_secs(300), |_| {})
        .unwrap_or_else(|error| {
            panic!(
                "node{index} did not reach {target}: {error}\n{}",
                log_tails(state)
            )
        });
    started.elapsed()
}

#[test]
fn a_fresh_node_state_syncs_past_5000_blocks_and_reaches_the_tip_fetching_a_tenth_of_what_replay_executes(
) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    // One validator makes blocks fast; two full nodes are started later, fresh.
    let mut options = loopback_options("ssync", base, 3, 3);
    options.timeout_commit_ms = 0;
    options.accounts = 500;
    options.wait_height = 2;
    options.stakes = vec![
        ("node0".into(), 10),
        ("node1".into(), 0),
        ("node2".into(), 0),
    ];
    let mut state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "ssync".into());
    for index in [1, 2] {
        assert!(process::signal_node(&state, index, libc::SIGKILL));
        wait_down(&state, index);
        std::fs::remove_dir_all(state.nodes[index].home.join("data")).unwrap();
    }
    let started = Instant::now();
    process::wait_for_height(&state, &[0], CHAIN_BLOCKS, Duration::from_secs(900), |_| {})
        .unwrap_or_else(|error| panic!("{error}\n{}", log_tails(&state)));
    eprintln!(
        "the validator made {CHAIN_BLOCKS} blocks in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let tip = status(&state, 0).unwrap()["latest_height"]
        .as_u64()
        .unwrap();
    let sync_time = join(
        &mut state,
        base,
        1,
        &["--state-sync", "--state-sync-wait-s", "30"],
        tip,
    );
    let synced = status(&state, 1).unwrap();
    let from = synced["state_synced_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("node1 did not state-sync: {synced}"));
    assert!(from >= 5_000, "snapshot height {from}");
    let fetched = synced_blocks(&state, 1);
    assert!(
        fetched < 1_000.0,
        "node1 block-synced {fetched} blocks after the snapshot at {from}"
    );

    let replay_time = join(&mut state, base, 2, &[], tip);
    let replayed = synced_blocks(&state, 2);
    assert!(
        replayed >= tip as f64 - 5.0,
        "node2 replayed {replayed} blocks"
    );
    assert!(
        fetched * 10.0 < replayed,
        "state sync fetched {fetched} blocks, replay executed {replayed}: not a tenth"
    );
    eprintln!(
        "state sync: snapshot at {from}, tip {tip} reached in {:.2} s ({fetched} blocks fetched); \
         full replay of {replayed} blocks: {:.2} s ({:.1}x)",
        sync_time.as_secs_f64(),
        replay_time.as_secs_f64(),
        replay_time.as_secs_f64() / sync_time.as_secs_f64()
    );

    // All three hold the same state at a common height.
    let common_height =
        process::wait_for_height(&state, &[0, 1, 2], tip + 5, Duration::from_secs(60), |_| {})
            .unwrap()
            .into_iter()
            .min()
            .unwrap();
    let hashes: Vec<serde_json::Value> = (0..3)
        .map(|index| {
            get_json(
                &process::http_client(),
                &format!("{}/blocks/{common_height}", state.nodes[index].api),
            )["result_app_hash"]
                .clone()
        })
        .collect();
    assert!(hashes[0].is_string());
    assert_eq!(
        hashes[0], hashes[1],
        "state-synced node agrees at {common_height}"
    );
    assert_eq!(
        hashes[0], hashes[2],
        "replayed node agrees at {common_height}"
    );
    let below = get_json(
        &process::http_client(),
        &format!("{}/epochs/current", state.nodes[1].api),
    );
    assert_eq!(below["validators"], 1, "{below}");
}
