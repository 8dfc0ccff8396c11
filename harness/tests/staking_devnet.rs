//! Staking on real node processes: a validator that double-signs is slashed, tombstoned and out
//! of the set at the next epoch while the chain keeps committing; a validator stopped for longer
//! than the downtime window is jailed and, after `unjail`, back at the next epoch; a delegation
//! changes voting power at the next epoch boundary and not before.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blyan_harness::process::{self, UpOptions};
use blyan_harness::testnet::record::DevnetState;
use blyan_node::app::{Tx, TxBody};
use blyan_node::state::StakingParams;
use common::{get_json, log_lines, log_tails, loopback_options, wait_down, Cleanup};
use ed25519_dalek::SigningKey;

const EPOCH: u64 = 20;
const STAKE: u64 = 1_000;

fn options(name: &str, base: &Path, salt: u16) -> UpOptions {
    let mut options = loopback_options(name, base, 4, salt);
    options.timeout_commit_ms = 30;
    options.timeout_propose_ms = 400;
    options.wait_height = 2;
    options.wait_timeout = Duration::from_secs(120);
    options.stakes = (0..4).map(|i| (format!("node{i}"), STAKE)).collect();
    options.staking = StakingParams {
        epoch_length: EPOCH,
        downtime_window: 10,
        downtime_max_missed: 6,
        downtime_jail_blocks: 10,
        ..StakingParams::devnet()
    };
    options
}

fn api(state: &DevnetState, index: usize, path: &str) -> serde_json::Value {
    get_json(
        &process::http_client(),
        &format!("{}{path}", state.nodes[index].api),
    )
}

fn validator(state: &DevnetState, asker: usize, key: &str) -> serde_json::Value {
    let all = api(state, asker, "/validators");
    all["validators"]
        .as_array()
        .and_then(|list| list.iter().find(|v| v["public_key"] == key).cloned())
        .unwrap_or_else(|| panic!("{key} not in /validators: {all}"))
}

/// Polls until `check` returns `Some`, or panics with `what` and the logs.
fn wait_until<T>(
    state: &DevnetState,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}\n{}",
            log_tails(state),
            log_lines(state, &["slashed", "jailed", "new epoch"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn height(state: &DevnetState, index: usize) -> u64 {
    process::node_status(&process::http_client(), &state.nodes[index])
        .and_then(|status| status["latest_height"].as_u64())
        .unwrap_or(0)
}

fn submit(state: &DevnetState, index: usize, tx: &Tx) -> String {
    let url = format!("{}/txs", state.nodes[index].api);
    let response: serde_json::Value = process::http_client()
        .post(&url)
        .json(&serde_json::json!({ "tx": hex::encode(tx.encode()) }))
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|error| panic!("POST {url}: {error}"));
    response["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("transaction refused: {response}"))
        .to_string()
}

/// Waits for a transaction to commit; returns its height and whether it applied.
fn committed(state: &DevnetState, index: usize, hash: &str) -> (u64, bool) {
    wait_until(state, Duration::from_secs(60), "the transaction", || {
        let body = api(state, index, &format!("/txs/{hash}"));
        (body["status"] == "committed").then(|| {
            (
                body["height"].as_u64().unwrap(),
                body["applied"].as_bool().unwrap(),
            )
        })
    })
}

fn validator_key(state: &DevnetState, index: usize) -> SigningKey {
    let home = blyan_node::home::Home::new(state.nodes[index].home.clone());
    blyan_node::keys::ValidatorKey::read(&home.validator_key())
        .expect("validator key")
        .signing
}

fn epoch_of(height: u64) -> u64 {
    (height - 1) / EPOCH
}

#[test]
fn a_double_signer_is_slashed_tombstoned_and_out_at_the_next_epoch_while_blocks_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options("dsign", dir.path(), 1);
    options.equivocators = vec!["node3".into()];
    let state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(dir.path().to_path_buf(), "dsign".into());
    let key3 = state.nodes[3].validator_key.clone();

    let record = wait_until(&state, Duration::from_secs(120), "node3 tombstoned", || {
        let record = validator(&state, 0, &key3);
        (record["tombstoned"] == true).then_some(record)
    });
    let punished_at = height(&state, 0);
    assert_eq!(record["jailed"], true);
    assert_eq!(
        record["tokens"].as_u64(),
        Some(STAKE - STAKE * 500 / 10_000),
        "5% burned: {record}"
    );
    let evidence = api(&state, 0, "/evidence");
    let punished = evidence["punished"].as_array().unwrap();
    assert_eq!(punished.len(), 1, "punished once: {evidence}");
    assert_eq!(punished[0]["validator"], key3.as_str());

    // The next epoch's set leaves it out; the three others go on committing in it.
    let next_epoch_start = (epoch_of(punished_at) + 2) * EPOCH + 1;
    process::wait_for_height(
        &state,
        &[0, 1, 2],
        next_epoch_start + 10,
        Duration::from_secs(180),
        |_| {},
    )
    .unwrap_or_else(|error| panic!("chain stalled: {error}\n{}", log_tails(&state)));
    let epoch = api(&state, 0, "/epochs/current");
    assert_eq!(epoch["validators"], 3, "{epoch}");
    let record = validator(&state, 1, &key3);
    assert_eq!(record["power"], 0, "{record}");
    assert!(record["index"].is_null());
    // Still tombstoned, and never slashed twice although it goes on equivocating.
    assert_eq!(
        api(&state, 2, "/evidence")["punished"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let block = api(&state, 0, &format!("/blocks/{}", next_epoch_start + 5));
    assert_eq!(
        block["last_commit_signers"].as_array().unwrap().len(),
        3,
        "{block}"
    );
    let supply = &epoch["supply"];
    assert_eq!(
        supply["burned"].as_u64(),
        Some(STAKE * 500 / 10_000),
        "{epoch}"
    );
}

#[test]
fn downtime_jails_unjail_returns_next_epoch_and_delegation_moves_power_at_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let options = options("downtime", dir.path(), 2);
    let mut state = process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(dir.path().to_path_buf(), "downtime".into());
    let key3 = state.nodes[3].validator_key.clone();
    let chain = state.chain_id.clone();

    // --- Delegation: power changes at the next epoch boundary, not before.
    let accounts: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("downtime/accounts.json")).unwrap(),
    )
    .unwrap();
    let secret: [u8; 32] = hex::decode(accounts[0]["secret_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let delegator = SigningKey::from_bytes(&secret);
    let key1: [u8; 32] = hex::decode(&state.nodes[1].validator_key)
        .unwrap()
        .try_into()
        .unwrap();
    let delegate = Tx::signed(
        &chain,
        &delegator,
        TxBody::Delegate {
            validator: key1,
            amount: 3_000,
        },
        1,
        0,
    );
    let hash = submit(&state, 0, &delegate);
    let (at, applied) = committed(&state, 0, &hash);
    assert!(applied, "delegation applied");
    // The first set fixed at or after `at` (end of a block c with (c+1) % EPOCH == 0) takes
    // effect at c + 2.
    let fixed = (at..).find(|c| (c + 1) % EPOCH == 0).unwrap();
    let effective = fixed + 2;
    process::wait_for_height(
        &state,
        &[0],
        effective + 1,
        Duration::from_secs(120),
        |_| {},
    )
    .unwrap();
    let before = api(&state, 0, &format!("/blocks/{at}"))["validators_hash"].clone();
    for h in at..effective {
        let block = api(&state, 0, &format!("/blocks/{h}"));
        assert_eq!(
            block["validators_hash"], before,
            "height {h} (delegated at {at}) already uses another set"
        );
    }
    let after = api(&state, 0, &format!("/blocks/{effective}"));
    assert_ne!(
        after["validators_hash"], before,
        "the boundary changes the set"
    );
    let record = validator(&state, 0, &state.nodes[1].validator_key);
    assert_eq!(record["tokens"].as_u64(), Some(STAKE + 3_000));
    assert_eq!(record["power"].as_u64(), Some(STAKE + 3_000), "{record}");

    // --- Downtime: stop node3 for longer than the window; it is jailed and leaves the set.
    assert!(process::signal_node(&state, 3, libc::SIGKILL));
    wait_down(&state, 3);
    let record = wait_until(&state, Duration::from_secs(120), "node3 jailed", || {
        let record = validator(&state, 0, &key3);
        (record["jailed"] == true).then_some(record)
    });
    assert_eq!(record["tombstoned"], false);
    assert_eq!(
        record["tokens"].as_u64(),
        Some(STAKE - STAKE / 100),
        "1% burned"
    );
    let jailed_until = record["jailed_until"].as_u64().unwrap();
    let out_from = wait_until(
        &state,
        Duration::from_secs(120),
        "a set without node3",
        || {
            let epoch = api(&state, 0, "/epochs/current");
            (epoch["validators"] == 3).then(|| epoch["start_height"].as_u64().unwrap())
        },
    );
    process::wait_for_height(
        &state,
        &[0, 1, 2],
        out_from + 5,
        Duration::from_secs(60),
        |_| {},
    )
    .unwrap_or_else(|error| panic!("three validators stalled: {error}\n{}", log_tails(&state)));

    // --- Restart it, wait out the jail, unjail: back in the set at the next epoch.
    process::start_node(dir.path(), &mut state, 3).expect("restart node3");
    process::wait_for_height(
        &state,
        &[0, 3],
        jailed_until.max(out_from) + 1,
        Duration::from_secs(120),
        |_| {},
    )
    .unwrap_or_else(|error| panic!("node3 did not catch up: {error}\n{}", log_tails(&state)));
    let signing3 = validator_key(&state, 3);
    let nonce = api(&state, 0, &format!("/accounts/{key3}"))["next_nonce"]
        .as_u64()
        .unwrap();
    let unjail = Tx::signed(&chain, &signing3, TxBody::Unjail, 0, nonce);
    let hash = submit(&state, 0, &unjail);
    let (unjailed_at, applied) = committed(&state, 0, &hash);
    assert!(applied, "unjail applied");
    assert_eq!(validator(&state, 0, &key3)["jailed"], false);
    let fixed = (unjailed_at..).find(|c| (c + 1) % EPOCH == 0).unwrap();
    process::wait_for_height(&state, &[0, 3], fixed + 4, Duration::from_secs(120), |_| {})
        .unwrap_or_else(|error| panic!("{error}\n{}", log_tails(&state)));
    let epoch = api(&state, 0, "/epochs/current");
    assert_eq!(epoch["validators"], 4, "back in the set: {epoch}");
    let record = validator(&state, 0, &key3);
    assert!(record["index"].is_u64(), "{record}");
    let status3 = process::node_status(&process::http_client(), &state.nodes[3]).unwrap();
    assert!(status3["validator_index"].is_u64(), "{status3}");
    // It signs again: a later block carries its precommit.
    let index3 = record["index"].as_u64().unwrap();
    let signed = wait_until(&state, Duration::from_secs(60), "node3's signature", || {
        let top = height(&state, 0);
        let block = api(&state, 0, &format!("/blocks/{top}"));
        block["last_commit_signers"]
            .as_array()
            .is_some_and(|signers| signers.iter().any(|s| s.as_u64() == Some(index3)))
            .then_some(top)
    });
    assert!(signed > fixed + 1);
}
