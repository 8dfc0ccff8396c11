//! Real node processes agree on blocks: four validators on loopback commit identical blocks and
//! app hashes; with one killed the other three go on; the killed one, restarted more than 100
//! heights behind, catches up through block sync and matches again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blyan_harness::backend::{self, BackendKind};
use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;
use common::{log_tails, loopback_options, wait_down, Cleanup};

fn status(
    client: &reqwest::blocking::Client,
    state: &DevnetState,
    index: usize,
) -> Option<serde_json::Value> {
    process::node_status(client, &state.nodes[index])
}

fn block(
    client: &reqwest::blocking::Client,
    state: &DevnetState,
    index: usize,
    height: u64,
) -> serde_json::Value {
    let url = format!("{}/blocks/{height}", state.nodes[index].api);
    client
        .get(&url)
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// Every node in `nodes` holds the same block hash and result app hash at heights 1..=top.
fn assert_identical(
    client: &reqwest::blocking::Client,
    state: &DevnetState,
    nodes: &[usize],
    top: u64,
) {
    for height in 1..=top {
        let reference = block(client, state, nodes[0], height);
        assert!(
            reference["hash"].is_string(),
            "node{} has no block {height}: {reference}",
            nodes[0]
        );
        assert!(
            reference["commit"]["signatures"]
                .as_array()
                .is_some_and(|s| s.len() >= 3),
            "block {height} commit: {reference}"
        );
        for index in &nodes[1..] {
            let other = block(client, state, *index, height);
            assert_eq!(
                other["hash"], reference["hash"],
                "block hash at height {height}: node{} vs node{index}",
                nodes[0]
            );
            assert_eq!(
                other["result_app_hash"], reference["result_app_hash"],
                "app hash at height {height}"
            );
            assert_eq!(
                other["app_hash"], reference["app_hash"],
                "header app hash at height {height}"
            );
        }
    }
}

#[test]
fn four_node_processes_agree_survive_a_kill_and_a_restarted_node_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let base: &Path = dir.path();
    let mut options = loopback_options("four", base, 4, 0);
    options.timeout_commit_ms = 0;
    // With node 3 down, every fourth height waits out its propose timeout.
    options.timeout_propose_ms = 300;
    options.wait_height = 3;
    options.wait_timeout = Duration::from_secs(120);
    options.log_level = "info".into();
    // Node 3 misses more than 100 heights while it is down: with the default downtime window
    // it would be jailed and rightly stop signing; here it must come back as a validator.
    options.staking.downtime_window = 1_000;
    options.staking.downtime_max_missed = 999;
    let mut state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "four".into());
    let client = process::http_client();

    let all = [0, 1, 2, 3];
    let heights = process::wait_for_height(&state, &all, 10, Duration::from_secs(120), |_| {})
        .unwrap_or_else(|error| panic!("{error}\n{}", log_tails(&state)));
    let top = *heights.iter().min().unwrap();
    assert_identical(&client, &state, &all, top);
    for index in all {
        let status = status(&client, &state, index).unwrap();
        assert_eq!(status["validator"], true);
        assert_eq!(status["peers"], 3, "node{index}: {status}");
    }

    // Every node also serves HTTPS with a certificate from the devnet's CA; admin endpoints
    // there need the devnet's admin client certificate.
    let pki = state.nodes[0].home.parent().unwrap().join("pki");
    for node in &state.nodes {
        let https = node.api_https.as_deref().expect("an HTTPS URL");
        assert_eq!(
            process::https_status(&pki, false, https, "GET", "/status"),
            Ok(200),
            "{https}"
        );
        assert_eq!(
            process::https_status(&pki, false, https, "POST", "/admin/reload"),
            Ok(403),
            "{https}: admin without a client certificate"
        );
        assert_eq!(
            process::https_status(&pki, true, https, "POST", "/admin/reload"),
            Ok(200),
            "{https}: admin with the devnet's client certificate"
        );
    }

    // Kill node 3 with SIGKILL; the other three keep committing.
    assert!(process::signal_node(&state, 3, libc::SIGKILL));
    wait_down(&state, 3);
    let killed_at = block_height_of(&state, 3);
    let survivors = [0, 1, 2];
    let target = killed_at + 110;
    process::wait_for_height(&state, &survivors, target, Duration::from_secs(180), |_| {})
        .unwrap_or_else(|error| panic!("three validators stalled: {error}\n{}", log_tails(&state)));
    assert!(status(&client, &state, 3).is_none(), "node3 should be down");

    // Restart node 3: it is more than 100 heights behind and must catch up through block sync.
    let network_height =
        process::wait_for_height(&state, &survivors, target, Duration::from_secs(5), |_| {})
            .unwrap()
            .into_iter()
            .min()
            .unwrap();
    assert!(network_height >= killed_at + 100);
    process::start_node(base, &mut state, 3).expect("restart node3");
    let started = Instant::now();
    process::wait_for_height(
        &state,
        &[3],
        network_height + 5,
        Duration::from_secs(180),
        |_| {},
    )
    .unwrap_or_else(|error| panic!("node3 did not catch up: {error}\n{}", log_tails(&state)));
    eprintln!(
        "node3 caught up from {killed_at} past {network_height} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let synced = reqwest::blocking::get(format!("{}/metrics", state.nodes[3].api))
        .unwrap()
        .text()
        .unwrap();
    let synced_blocks: f64 = synced
        .lines()
        .find(|line| line.starts_with("blyan_blocks_synced_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("blocks_synced metric");
    assert!(
        synced_blocks >= 100.0,
        "node3 synced only {synced_blocks} blocks"
    );

    // All four again agree on every height, and node 3 is back in consensus (not only syncing).
    let heights = process::wait_for_height(
        &state,
        &all,
        network_height + 10,
        Duration::from_secs(60),
        |_| {},
    )
    .unwrap();
    assert_identical(&client, &state, &all, *heights.iter().min().unwrap());
    // Back in consensus, not only following: node 3's precommit is in a commit certificate of a
    // block decided after it caught up (node 0 collected it).
    let key = state.nodes[3].validator_key.clone();
    let caught_up = network_height + 5;
    let deadline = Instant::now() + Duration::from_secs(30);
    let signed = loop {
        let latest = status(&client, &state, 0).unwrap()["latest_height"]
            .as_u64()
            .unwrap();
        let found = (caught_up..=latest).find(|height| {
            block(&client, &state, 0, *height)["commit"]["signatures"]
                .as_array()
                .is_some_and(|signatures| signatures.iter().any(|s| s["validator"] == key))
        });
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        signed.is_some(),
        "node3's signature is in no commit after height {caught_up}\n{}",
        log_tails(&state)
    );
    let status3 = status(&client, &state, 3).unwrap();
    assert_eq!(status3["catching_up"], false, "{status3}");
}

fn block_height_of(state: &DevnetState, index: usize) -> u64 {
    // The killed node's last height, read from its log's last commit is not needed: the API is
    // gone, so ask a survivor for the current height; node 3 can only be at or below it.
    let client = process::http_client();
    let survivor = (index + 1) % state.nodes.len();
    status(&client, state, survivor)
        .and_then(|status| status["latest_height"].as_u64())
        .expect("a survivor answers")
}

/// `down` stops the nodes of a devnet started from a node binary of another name (`--node-bin`,
/// e.g. an older release kept for an upgrade test): it used to know a node by its program's
/// name ending in `blyan-node`, took these for "not running" and left them running.
#[test]
fn down_stops_nodes_started_from_a_binary_of_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let base: &Path = dir.path();
    let mut options = loopback_options("renamed", base, 1, 7);
    let renamed = base.join("node-v1");
    std::os::unix::fs::symlink(&options.node_bin, &renamed).unwrap();
    options.node_bin = renamed;
    options.wait_height = 1;
    options.wait_timeout = Duration::from_secs(60);
    let state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "renamed".into());
    let pid = state.nodes[0].pid.expect("started");
    assert!(process::is_node_process(pid), "node0 (pid {pid}) is a node");
    let report = process::down(base, "renamed", Duration::from_secs(10)).unwrap();
    assert_eq!((report.stopped, report.not_running), (1, 0), "{report:?}");
    // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 } && !is_zombie(pid);
    assert!(!exists, "node0 (pid {pid}) still runs after down");
}

#[test]
fn up_fails_at_once_naming_the_nodes_whose_process_exited_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let base: &Path = dir.path();
    let mut options = loopback_options("exits", base, 2, 8);
    // The real binary for everything but `start`, which fails as a bad setting would.
    let broken = base.join("node-broken");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\nif [ \"$1\" = start ]; then echo 'error: bad setting p2p.example' >&2; exit 1; fi\nexec {} \"$@\"\n",
            options.node_bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    options.node_bin = broken;
    options.wait_height = 1;
    options.wait_timeout = Duration::from_secs(120);
    let _cleanup = Cleanup(base.to_path_buf(), "exits".into());
    let started = Instant::now();
    let error = process::up(&options, |_| {}).expect_err("no node can start");
    let text = error.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "up waited {:?} for processes that had exited: {text}",
        started.elapsed()
    );
    assert!(text.contains("2 of 2 node processes exited"), "{text}");
    assert!(text.contains("node0, node1"), "{text}");
    assert!(
        text.contains("bad setting p2p.example"),
        "the log tail: {text}"
    );
}

#[test]
fn the_backend_says_whether_each_node_runs_and_shows_the_tail_of_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let base: &Path = dir.path();
    let mut options = loopback_options("seen", base, 2, 9);
    options.wait_height = 1;
    options.wait_timeout = Duration::from_secs(60);
    let state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "seen".into());
    let (backend, _) = backend::open(BackendKind::Process, base).unwrap();
    let pids: Vec<String> = state
        .nodes
        .iter()
        .map(|node| node.pid.expect("started").to_string())
        .collect();
    assert_eq!(
        backend.running(&state),
        pids,
        "a running node shows its pid"
    );
    // SAFETY: kill(2) on the pid this test's devnet started.
    assert_eq!(
        unsafe { libc::kill(state.nodes[1].pid.unwrap() as i32, libc::SIGKILL) },
        0
    );
    wait_down(&state, 1);
    assert_eq!(
        backend.running(&state),
        vec![pids[0].clone(), "stopped".into()]
    );
    // The stopped node's log no longer changes: its tail is the file's last lines exactly.
    let file = std::fs::read_to_string(&state.nodes[1].log).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    assert!(lines.len() > 1, "node1 logged {} lines", lines.len());
    let logs = |tail: usize| {
        let mut out = Vec::new();
        let options = backend::LogOptions {
            tail,
            follow: false,
        };
        backend
            .logs(&state, 1, options, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
    };
    let tail = logs(1).unwrap();
    assert_eq!(tail.lines().collect::<Vec<_>>(), lines[lines.len() - 1..]);
    assert_eq!(
        logs(0).unwrap().lines().collect::<Vec<_>>(),
        lines,
        "tail 0 is all"
    );
    std::fs::remove_file(&state.nodes[1].log).unwrap();
    let error = logs(3).expect_err("no log file").to_string();
    assert!(error.starts_with("logs of node1: cannot read "), "{error}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(false)
}
