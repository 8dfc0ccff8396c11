//! Byzantine validators on real node processes, each behaviour's observable effect asserted on
//! a 4-validator devnet (one Byzantine validator of four is within f): invalid blocks are
//! refused and a later round commits; an equivocating proposer's two blocks are both seen and
//! the honest nodes still agree; a validator that drops every proposal never precommits
//! another's block; junk transactions never enter a mempool or a block while real ones commit.
//! (Amnesia, `ignore_locks`, runs under partitions in `chaos.rs`.)
//!
//! Needs the workspace binaries: `cargo test --workspace` builds them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blyan_harness::process::{self, UpOptions};
use blyan_harness::testnet::record::DevnetState;
use blyan_node::app::{Tx, TxBody};
use blyan_node::config::DevnetConfig;
use common::{get_json, log_lines, log_tails, loopback_options, Cleanup};
use ed25519_dalek::SigningKey;

/// Heights every test waits for: enough that node3 proposes at round 0 several times.
const HEIGHTS: u64 = 14;

/// These devnets run one at a time: each keeps both cores of a small machine busy.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Four validators; node3 behaves as `byzantine` says (devnet mode).
fn options(name: &str, base: &Path, salt: u16, byzantine: DevnetConfig) -> UpOptions {
    let mut options = loopback_options(name, base, 4, salt);
    options.timeout_commit_ms = 30;
    options.timeout_propose_ms = 400;
    options.wait_height = 1;
    options.wait_timeout = Duration::from_secs(120);
    options.byzantine = vec![("node3".into(), byzantine)];
    options
}

fn up(options: &UpOptions) -> (DevnetState, Cleanup) {
    let state = process::up(options, |_| {}).expect("devnet up");
    let cleanup = Cleanup(options.base.clone(), options.name.clone());
    (state, cleanup)
}

fn api(state: &DevnetState, index: usize, path: &str) -> serde_json::Value {
    get_json(
        &process::http_client(),
        &format!("{}{path}", state.nodes[index].api),
    )
}

/// The value of one sample of node `index`'s `/metrics` (0 when the series does not exist yet).
fn metric(state: &DevnetState, index: usize, series: &str) -> f64 {
    let url = format!("{}/metrics", state.nodes[index].api);
    let text = process::http_client()
        .get(&url)
        .send()
        .and_then(|response| response.text())
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap_or(0.0))
}

fn refused_p2p(state: &DevnetState, index: usize, reason: &str) -> f64 {
    metric(
        state,
        index,
        &format!("blyan_refused_inputs_total{{source=\"p2p\",reason=\"{reason}\"}}"),
    )
}

/// node3's index in the validator set (the set is ordered by key, not by name).
fn index_of_node3(state: &DevnetState) -> u64 {
    api(state, 3, "/status")["validator_index"]
        .as_u64()
        .expect("node3 is a validator")
}

/// Waits until nodes 0-2 have committed `height`; panics with the logs if they stall.
fn honest_reach(state: &DevnetState, height: u64) {
    process::wait_for_height(state, &[0, 1, 2], height, Duration::from_secs(180), |_| {})
        .unwrap_or_else(|error| {
            panic!(
                "the honest nodes stalled: {error}\n{}\n{}",
                log_tails(state),
                log_lines(state, &["WARN", "ERROR"])
            )
        });
}

/// Blocks 1..=`top` as node0 serves them, after checking nodes 1 and 2 hold the same hashes.
fn agreed_blocks(state: &DevnetState, top: u64) -> Vec<serde_json::Value> {
    (1..=top)
        .map(|height| {
            let block = api(state, 0, &format!("/blocks/{height}"));
            for other in [1, 2] {
                let theirs = api(state, other, &format!("/blocks/{height}"));
                assert_eq!(
                    theirs["hash"], block["hash"],
                    "node0 and node{other} disagree at height {height}"
                );
            }
            block
        })
        .collect()
}

fn commit_signers(block: &serde_json::Value) -> Vec<u64> {
    block["commit"]["signatures"]
        .as_array()
        .map(|signatures| {
            signatures
                .iter()
                .filter_map(|s| s["validator_index"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// node3 proposes only blocks the others must refuse (`byzantine`): none of them is committed,
/// every honest node counts refusals, and the heights node3 led at round 0 are decided in a
/// later round by another proposer. Returns the agreed blocks.
fn refused_blocks_never_commit(
    name: &str,
    salt: u16,
    byzantine: DevnetConfig,
) -> Vec<serde_json::Value> {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (state, _cleanup) = up(&options(name, dir.path(), salt, byzantine));
    let node3 = index_of_node3(&state);
    honest_reach(&state, HEIGHTS);
    let blocks = agreed_blocks(&state, HEIGHTS);
    for block in &blocks {
        assert_ne!(
            block["proposer"].as_u64(),
            Some(node3),
            "a block node3 built was committed: {block}"
        );
    }
    for index in 0..3 {
        let refused = refused_p2p(&state, index, "invalid_block");
        assert!(
            refused >= 1.0,
            "node{index} refused {refused} invalid blocks\n{}",
            log_lines(&state, &["invalid proposed block"])
        );
    }
    let later_rounds = blocks
        .iter()
        .filter(|block| block["commit"]["round"].as_u64().unwrap_or(0) >= 1)
        .count();
    assert!(
        later_rounds >= 2,
        "of {HEIGHTS} heights (node3 leads about a quarter at round 0), {later_rounds} were decided after round 0"
    );
    blocks
}

#[test]
fn invalid_blocks_are_refused_by_every_honest_node_and_a_later_round_commits() {
    let byzantine = DevnetConfig {
        invalid_blocks: true,
        ..DevnetConfig::default()
    };
    refused_blocks_never_commit("invalid", 1, byzantine);
}

/// A proposer that dates its blocks an hour ahead (`mutate-block`, field `time`) cannot push
/// block time into the future: its blocks are refused (a proposal may run at most
/// `MAX_BLOCK_TIME_AHEAD_MS` ahead of a validator's clock), and every committed block's time
/// is behind the clock of the machine that asks.
#[test]
fn a_proposer_dating_blocks_ahead_cannot_push_block_time_into_the_future() {
    let byzantine = DevnetConfig {
        mutate_block: "time".into(),
        ..DevnetConfig::default()
    };
    let blocks = refused_blocks_never_commit("mutate-time", 6, byzantine);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for block in &blocks {
        let time_ms = block["time_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("block without time_ms: {block}"));
        assert!(
            time_ms <= now_ms,
            "a committed block is dated {} ms in the future: {block}",
            time_ms - now_ms
        );
    }
}

/// `METHOD PATH` with a JSON body on node `index`'s API (an admin call: loopback, no TLS).
fn admin(
    state: &DevnetState,
    index: usize,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> serde_json::Value {
    let url = format!("{}{path}", state.nodes[index].api);
    let response = process::http_client()
        .request(method, &url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    assert_eq!(response.status(), 200, "{url}");
    response.json().expect("a JSON answer")
}

/// A validator whose clock runs 30 s ahead (a clock fault, `POST /admin/devnet/clock`) dates its
/// blocks past the bound: the others refuse every one of them, and no committed block is dated
/// in the future; once its clock is back, its blocks commit again.
#[test]
fn a_validator_whose_clock_runs_ahead_has_its_blocks_refused_until_it_is_back() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let devnet_mode = DevnetConfig {
        enabled: true,
        ..DevnetConfig::default()
    };
    let (state, _cleanup) = up(&options("clock-ahead", dir.path(), 7, devnet_mode));
    let node3 = index_of_node3(&state);
    let set = admin(
        &state,
        3,
        reqwest::Method::POST,
        "/admin/devnet/clock",
        r#"{"skew_ms": 30000}"#,
    );
    assert_eq!(set["offset_ms"], 30_000, "{set}");
    // The height after the one in progress: no block node3 dated before the fault.
    let from = api(&state, 0, "/status")["latest_height"].as_u64().unwrap() + 2;
    honest_reach(&state, from + HEIGHTS);
    let ahead = agreed_blocks(&state, from + HEIGHTS);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for block in &ahead[(from - 1) as usize..] {
        assert_ne!(
            block["proposer"].as_u64(),
            Some(node3),
            "node3's block, dated ahead, was committed: {block}"
        );
        assert!(
            block["time_ms"].as_u64().unwrap() <= now_ms,
            "a block dated in the future: {block}"
        );
    }
    admin(
        &state,
        3,
        reqwest::Method::DELETE,
        "/admin/devnet/clock",
        "",
    );
    let back = from + 2 * HEIGHTS;
    honest_reach(&state, back + HEIGHTS);
    let blocks = agreed_blocks(&state, back + HEIGHTS);
    let by_node3 = blocks[(back - 1) as usize..]
        .iter()
        .filter(|block| block["proposer"].as_u64() == Some(node3))
        .count();
    assert!(
        by_node3 >= 1,
        "node3's clock is back, yet none of its blocks was committed"
    );
}

#[test]
fn an_equivocating_proposer_is_seen_by_every_honest_node_and_they_still_agree() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let byzantine = DevnetConfig {
        equivocate_proposals: true,
        ..DevnetConfig::default()
    };
    let (state, _cleanup) = up(&options("equivocate-proposals", dir.path(), 2, byzantine));
    let node3 = index_of_node3(&state);
    honest_reach(&state, HEIGHTS);
    // Every honest node saw two different blocks signed by node3 for one height and round.
    for index in 0..3 {
        let seen = metric(&state, index, "blyan_conflicting_proposals_total");
        assert!(
            seen >= 1.0,
            "node{index} saw {seen} conflicting proposals\n{}",
            log_lines(&state, &["conflicting proposals", "devnet"])
        );
    }
    // Yet they agree on every height, and node3's blocks (either variant is valid) commit.
    let blocks = agreed_blocks(&state, HEIGHTS);
    let by_node3 = blocks
        .iter()
        .filter(|block| block["proposer"].as_u64() == Some(node3))
        .count();
    assert!(
        by_node3 >= 1,
        "none of {HEIGHTS} blocks was node3's: its proposals were not taken at all"
    );
}

#[test]
fn a_validator_that_drops_proposals_never_precommits_another_proposers_block() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let byzantine = DevnetConfig {
        drop_proposals: true,
        ..DevnetConfig::default()
    };
    let (state, _cleanup) = up(&options("drop-proposals", dir.path(), 3, byzantine));
    let node3 = index_of_node3(&state);
    honest_reach(&state, HEIGHTS);
    let blocks = agreed_blocks(&state, HEIGHTS);
    // Without the proposal it cannot precommit the block: no certificate of another
    // proposer's block (as node0 collected it, or as the next block carries it) holds it.
    let mut own = 0;
    for (block, next) in blocks.iter().zip(blocks.iter().skip(1)) {
        let height = block["height"].as_u64().unwrap();
        let carried: Vec<u64> = next["last_commit_signers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|signer| signer.as_u64())
            .collect();
        if block["proposer"].as_u64() == Some(node3) {
            own += 1;
            continue;
        }
        assert!(
            !commit_signers(block).contains(&node3) && !carried.contains(&node3),
            "node3 precommitted block {height} of proposer {} it never looked at: {block}",
            block["proposer"]
        );
    }
    // It still proposes (its own blocks commit) and follows the chain.
    assert!(own >= 1, "node3 proposed none of {HEIGHTS} blocks");
    process::wait_for_height(&state, &[3], HEIGHTS, Duration::from_secs(60), |_| {})
        .unwrap_or_else(|error| panic!("node3 does not follow the chain: {error}"));
}

#[test]
fn spammed_junk_never_enters_a_mempool_or_a_block_while_real_transfers_commit() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let byzantine = DevnetConfig {
        spam_txs_per_s: 2_000,
        ..DevnetConfig::default()
    };
    let started = Instant::now();
    let (state, _cleanup) = up(&options("spam", dir.path(), 4, byzantine));
    let accounts: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("spam/accounts.json")).unwrap(),
    )
    .unwrap();
    let secret: [u8; 32] = hex::decode(accounts[0]["secret_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sender = SigningKey::from_bytes(&secret);
    const TRANSFERS: u64 = 10;
    let mut hashes = Vec::new();
    for nonce in 0..TRANSFERS {
        let tx = Tx::signed(
            &state.chain_id,
            &sender,
            TxBody::Transfer {
                to: [7; 32],
                amount: 1,
            },
            1,
            nonce,
        );
        let url = format!("{}/txs", state.nodes[nonce as usize % 3].api);
        let response: serde_json::Value = process::http_client()
            .post(&url)
            .json(&serde_json::json!({ "tx": hex::encode(tx.encode()) }))
            .send()
            .and_then(|response| response.json())
            .unwrap_or_else(|error| panic!("POST {url}: {error}"));
        hashes.push(
            response["hash"]
                .as_str()
                .unwrap_or_else(|| panic!("transfer refused: {response}"))
                .to_string(),
        );
    }
    // While the spam goes on: no honest mempool ever holds more than the real transfers.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending = hashes.clone();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "transfers {pending:?} never committed under spam\n{}",
            log_tails(&state)
        );
        for index in 0..3 {
            let held = api(&state, index, "/status")["mempool_txs"]
                .as_u64()
                .unwrap();
            assert!(
                held <= TRANSFERS,
                "node{index}'s mempool holds {held} transactions; only {TRANSFERS} are real"
            );
        }
        pending.retain(|hash| api(&state, 0, &format!("/txs/{hash}"))["status"] != "committed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The junk arrived and was refused, and the sender was scored down at once: each honest
    // node validated only a few of the thousands sent (gossipsub ignores a graylisted peer).
    let sent = 2_000.0 * started.elapsed().as_secs_f64();
    for index in 0..3 {
        let refused = refused_p2p(&state, index, "malformed_tx")
            + refused_p2p(&state, index, "bad_signature");
        assert!(
            refused >= 1.0 && refused * 10.0 < sent,
            "node{index} refused {refused} junk transactions of about {sent:.0} node3 sent"
        );
    }
    let top = api(&state, 0, "/status")["latest_height"].as_u64().unwrap();
    let mut committed = 0;
    for block in agreed_blocks(&state, top) {
        for tx in block["txs"].as_array().unwrap() {
            let bytes = hex::decode(tx.as_str().unwrap()).unwrap();
            Tx::decode(&bytes).unwrap_or_else(|error| {
                panic!(
                    "a junk transaction was committed at {}: {error}",
                    block["height"]
                )
            });
            committed += 1;
        }
    }
    assert_eq!(committed, TRANSFERS, "only the real transfers committed");
}
