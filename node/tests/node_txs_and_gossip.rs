//! A running node as clients and peers meet it: signed transfers through `POST /txs` are
//! committed and indexed, bad ones are refused with the reason; a peer gossiping malformed or
//! badly signed votes is rejected and penalised while the node keeps committing.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blyan_node::app::{Tx, TxBody};
use blyan_node::config::P2pConfig;
use blyan_node::genesis::{Genesis, GenesisAccount};
use blyan_node::p2p::{self, P2pCommand, P2pEvent, Topic};
use common::{http, init_home, wait_for_ok, BIN};
use ed25519_dalek::SigningKey;
use libp2p::identity::Keypair;

struct Node {
    child: Child,
    api: SocketAddr,
    p2p_port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &std::path::Path) -> Node {
    start_with(home, &[])
}

fn start_with(home: &std::path::Path, env: &[(&str, &str)]) -> Node {
    let api: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let p2p_port = common::free_port();
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("BLYAN_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["start", "--home", home.to_str().unwrap()])
        .env("BLYAN_API_LISTEN", api.to_string())
        .env("BLYAN_P2P_LISTEN", format!("/ip4/127.0.0.1/tcp/{p2p_port}"))
        .env("BLYAN_CONSENSUS_TIMEOUT_COMMIT_MS", "20")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_ok(api, "/health", Duration::from_secs(30), "node /health");
    Node {
        child,
        api,
        p2p_port,
    }
}

fn json(api: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = http(api, method, path, body.as_bytes()).unwrap();
    let value = serde_json::from_str(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, value)
}

fn submit(api: SocketAddr, tx: &[u8]) -> (u16, serde_json::Value) {
    json(
        api,
        "POST",
        "/txs",
        &format!("{{\"tx\": \"{}\"}}", hex::encode(tx)),
    )
}

fn wait_committed(api: SocketAddr, hash: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = json(api, "GET", &format!("/txs/{hash}"), "");
        if status == 200 && body["status"] == "committed" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "tx {hash} not committed: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn transfers_commit_and_bad_transactions_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let alice = SigningKey::from_bytes(&[11; 32]);
    let bob = SigningKey::from_bytes(&[12; 32]).verifying_key().to_bytes();
    let genesis_path = home.join("genesis.json");
    let mut genesis = Genesis::load(&genesis_path).unwrap();
    genesis.accounts.push(GenesisAccount {
        address: hex::encode(alice.verifying_key().to_bytes()),
        balance: 1_000,
    });
    genesis.save(&genesis_path).unwrap();
    let chain = genesis.chain_id.clone();
    let node = start(&home);

    let first = Tx::transfer(&chain, &alice, bob, 100, 1, 0);
    let (status, body) = submit(node.api, &first.encode());
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["hash"], first.hash().to_hex());
    let second = Tx::transfer(&chain, &alice, bob, 50, 1, 1);
    let (status, _) = submit(node.api, &second.encode());
    assert_eq!(status, 202);

    let committed = wait_committed(node.api, &first.hash().to_hex());
    assert_eq!(committed["applied"], true, "{committed}");
    let committed = wait_committed(node.api, &second.hash().to_hex());
    assert_eq!(committed["applied"], true, "{committed}");
    let height = committed["height"].as_u64().unwrap();
    let (_, block) = json(node.api, "GET", &format!("/blocks/{height}"), "");
    assert!(
        block["tx_hashes"]
            .as_array()
            .unwrap()
            .contains(&serde_json::Value::String(second.hash().to_hex())),
        "{block}"
    );

    // Replay: the nonce is used.
    let (status, body) = submit(node.api, &first.encode());
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("nonce 0 already used"),
        "{body}"
    );
    // Overdraft: 1000 - 152 left.
    let (status, body) = submit(
        node.api,
        &Tx::transfer(&chain, &alice, bob, 5_000, 1, 2).encode(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("balance 848"),
        "{body}"
    );
    // Tampered amount: the signature no longer matches.
    let mut tampered = Tx::transfer(&chain, &alice, bob, 1, 1, 2);
    tampered.body = TxBody::Transfer { to: bob, amount: 2 };
    let (status, body) = submit(node.api, &tampered.encode());
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_signature")),
        "{body}"
    );
    // Another chain's transaction.
    let (status, _) = submit(
        node.api,
        &Tx::transfer("other-chain", &alice, bob, 1, 1, 2).encode(),
    );
    assert_eq!(status, 400);
    // Malformed: wrong length, not hex, not JSON.
    let (status, body) = submit(node.api, &[1, 2, 3]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed")),
        "{body}"
    );
    let (status, body) = json(node.api, "POST", "/txs", "{\"tx\": \"zz\"}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = json(node.api, "POST", "/txs", "[1,2");
    assert_eq!(status, 400, "{body}");
    let (status, _) = json(node.api, "GET", &format!("/txs/{}", "ab".repeat(32)), "");
    assert_eq!(status, 404);
    let (status, _) = json(node.api, "GET", "/txs/nothex", "");
    assert_eq!(status, 400);

    // Accounts: the committed nonce and balance, and the next nonce to use.
    let alice_hex = hex::encode(alice.verifying_key().to_bytes());
    let (status, account) = json(node.api, "GET", &format!("/accounts/{alice_hex}"), "");
    assert_eq!(status, 200, "{account}");
    assert_eq!(
        (account["nonce"].as_u64(), account["balance"].as_u64()),
        (Some(2), Some(848)),
        "{account}"
    );
    assert_eq!(account["next_nonce"].as_u64(), Some(2), "{account}");
    let (status, _) = json(node.api, "GET", "/accounts/xyz", "");
    assert_eq!(status, 400);

    // A batch: each transaction judged on its own, in order; the good ones commit.
    let batch = [
        Tx::transfer(&chain, &alice, bob, 10, 1, 2).encode(),
        Tx::transfer(&chain, &alice, bob, 10, 1, 3).encode(),
        Tx::transfer(&chain, &alice, bob, 10, 1, 0).encode(), // stale nonce
        vec![9, 9, 9],                                        // malformed
    ];
    let body = format!(
        "{{\"txs\": [{}]}}",
        batch
            .iter()
            .map(|tx| format!("\"{}\"", hex::encode(tx)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, answer) = json(node.api, "POST", "/txs/batch", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[2]["error"], "rejected", "{answer}");
    assert_eq!(results[3]["error"], "malformed", "{answer}");
    let last = results[1]["hash"].as_str().unwrap().to_string();
    wait_committed(node.api, &last);
    let (_, account) = json(node.api, "GET", &format!("/accounts/{alice_hex}"), "");
    assert_eq!(account["nonce"].as_u64(), Some(4), "{account}");
    let (status, body) = json(node.api, "POST", "/txs/batch", "{\"txs\": [\"zz\"]}");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("txs[0]"),
        "{body}"
    );

    let (status, validators) = json(node.api, "GET", "/validators", "");
    assert_eq!(status, 200);
    assert_eq!(
        validators["validators"].as_array().unwrap().len(),
        1,
        "{validators}"
    );
}

/// Connects a fresh attacker peer to a node started with `env`, publishes `messages(round)`
/// every 200 ms until the node shows the attacker's gossip score below zero (and, when
/// `rejected` is set, at least that many messages rejected by validation); then checks that the
/// node kept committing. Returns the node's refusals from the P2P side by reason.
async fn attack(
    env: &[(&str, &str)],
    rejected: u64,
    messages: impl Fn(u32) -> Vec<(Topic, Vec<u8>)>,
) -> std::collections::BTreeMap<String, f64> {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let node = start_with(&home, env);
    let (_, status) = json(node.api, "GET", "/status", "");
    let node_id = status["node_id"].as_str().unwrap().to_string();
    let chain = status["chain_id"].as_str().unwrap().to_string();

    let attacker = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: vec![format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{node_id}",
            node.p2p_port
        )],
        static_mode: true,
        max_message_bytes: 1 << 20,
        ..P2pConfig::default()
    };
    let (handle, mut events, _) = p2p::spawn(Keypair::generate_ed25519(), &attacker, &chain)
        .await
        .unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if matches!(event, P2pEvent::Connected(_)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "the attacker could not connect");
    // Keep draining the attacker's events so its swarm never blocks.
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    let api = node.api;
    let get = move |path: &'static str| async move {
        tokio::task::spawn_blocking(move || json(api, "GET", path, "").1)
            .await
            .unwrap()
    };
    let start_height = get("/status").await["latest_height"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0u32;
    loop {
        for (topic, data) in messages(round) {
            let _ = handle.commands.send(P2pCommand::Publish(topic, data));
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info = get("/net_info").await;
        let score = info["peers"]
            .as_array()
            .and_then(|peers| peers.first())
            .and_then(|peer| peer["gossip_score"].as_f64())
            .unwrap_or(0.0);
        if info["invalid_messages"].as_u64().unwrap_or(0) >= rejected && score < 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not penalised after {round} rounds: {info}"
        );
    }
    // The node survived and kept committing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let height = get("/status").await["latest_height"].as_u64().unwrap();
        if height >= start_height + 3 {
            break;
        }
        assert!(Instant::now() < deadline, "node stalled at {height}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = tokio::task::spawn_blocking(move || common::http(api, "GET", "/metrics", b""))
        .await
        .unwrap()
        .unwrap()
        .body;
    let prefix = "blyan_refused_inputs_total{source=\"p2p\",reason=\"";
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_malformed_votes_is_rejected_and_penalised() {
    let refused = attack(&[], 2, |round| {
        let mut garbage = b"not a vote ".to_vec();
        garbage.extend_from_slice(&round.to_be_bytes());
        vec![(Topic::Votes, garbage)]
    })
    .await;
    assert!(
        refused.get("malformed_vote").copied().unwrap_or(0.0) >= 2.0,
        "{refused:?}"
    );
    assert_eq!(refused.get("bad_signature"), None, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_forged_votes_is_rejected_for_the_signature_and_penalised() {
    let refused = attack(&[], 2, |round| {
        // Well-formed (it decodes), but the signature is zeros.
        let mut forged = vec![1u8];
        forged.extend_from_slice(&u64::from(round).to_be_bytes());
        forged.extend_from_slice(&[0; 4 + 1 + 4 + 64]);
        vec![(Topic::Votes, forged)]
    })
    .await;
    assert!(
        refused.get("bad_signature").copied().unwrap_or(0.0) >= 2.0,
        "forged votes decode and fail the signature check: {refused:?}"
    );
    assert_eq!(refused.get("malformed_vote"), None, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_oversized_messages_is_penalised() {
    // Over the 64 KiB limit of the node's proposal topic (the attacker allows itself 1 MiB).
    // The score falling below zero is the penalty; gossipsub drops the messages as over the
    // topic's limit before the node sees them, so its own validation refuses none.
    let refused = attack(&[("BLYAN_P2P_MAX_MESSAGE_BYTES", "65536")], 0, |round| {
        let mut proposal = vec![0u8; 100 << 10];
        proposal[..4].copy_from_slice(&round.to_be_bytes());
        vec![(Topic::Proposals, proposal)]
    })
    .await;
    assert_eq!(refused.get("malformed_proposal"), None, "{refused:?}");
}
