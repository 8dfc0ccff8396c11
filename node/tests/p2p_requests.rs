//! The swarm's request paths between in-process nodes on loopback: block sync requests and
//! their answers, expert tile requests (answered by whoever took the tile queue, "unavailable"
//! at once where nobody did), requests to a peer that is not there, and connection probes
//! (`P2pCommand::Probe`, what `devnet probe` and the NAT tests use).

use std::time::Duration;

use blyan_node::config::P2pConfig;
use blyan_node::p2p::{
    self, P2pCommand, P2pEvent, P2pHandle, ProbeOutcome, SyncRequest, SyncResponse, TileRequest,
    TileResponse,
};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc::Receiver, oneshot};

struct Node {
    id: PeerId,
    handle: P2pHandle,
    events: Receiver<P2pEvent>,
    address: Multiaddr,
}

/// A static-mode swarm on a free loopback port that dials `dial`.
async fn start(dial: &[&Node]) -> Node {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: dial.iter().map(|node| node.address.to_string()).collect(),
        static_mode: true,
        ..P2pConfig::default()
    };
    let (handle, events, bound) = p2p::spawn(key, &config, "requests-test")
        .await
        .expect("swarm starts");
    let address = format!("{}/p2p/{id}", bound[0]).parse().expect("multiaddr");
    Node {
        id,
        handle,
        events,
        address,
    }
}

/// The first event of `node` that `pick` takes, within `within`.
async fn next<T>(
    node: &mut Node,
    within: Duration,
    mut pick: impl FnMut(P2pEvent) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            if let Some(found) = pick(node.events.recv().await?) {
                return Some(found);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Two connected nodes: the second dialled the first.
async fn pair() -> (Node, Node) {
    let mut a = start(&[]).await;
    let b = start(&[&a]).await;
    let b_id = b.id;
    let seen = next(&mut a, Duration::from_secs(20), |event| {
        matches!(event, P2pEvent::Connected(peer) if peer == b_id).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the two nodes connect within 20 s");
    (a, b)
}

fn send(node: &Node, command: P2pCommand) {
    node.handle.commands.send(command).expect("command queued");
}

/// Asks `peer` through `node` for `request`; the receiver gets the answer.
fn fetch_tile(
    node: &Node,
    peer: PeerId,
    request: TileRequest,
) -> oneshot::Receiver<Result<TileResponse, String>> {
    let (reply, answer) = oneshot::channel();
    send(
        node,
        P2pCommand::FetchTile {
            peer,
            request,
            reply,
        },
    );
    answer
}

/// The answer to a tile request, within 10 s.
async fn tile_answer(
    answer: oneshot::Receiver<Result<TileResponse, String>>,
) -> Result<TileResponse, String> {
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("a tile request is answered within 10 s")
        .expect("the swarm answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_reaches_the_peer_and_its_answer_comes_back() {
    let (mut a, mut b) = pair().await;
    let request = SyncRequest {
        from_height: 5,
        max_blocks: 3,
        snapshot: None,
    };
    send(
        &a,
        P2pCommand::Sync {
            peer: b.id,
            request: request.clone(),
        },
    );
    let (from, asked, channel) = next(&mut b, Duration::from_secs(10), |event| match event {
        P2pEvent::SyncRequest {
            peer,
            request,
            channel,
        } => Some((peer, request, channel)),
        _ => None,
    })
    .await
    .expect("the peer gets the sync request");
    assert_eq!(from, a.id, "the request names its sender");
    assert_eq!(asked, request);
    let response = SyncResponse {
        tip_height: 9,
        blocks: Vec::new(),
        snapshot: None,
    };
    send(&b, P2pCommand::Respond { channel, response });
    let (peer, answer) = next(&mut a, Duration::from_secs(10), |event| match event {
        P2pEvent::SyncResponse { peer, response } => Some((peer, response)),
        _ => None,
    })
    .await
    .expect("the answer comes back");
    assert_eq!(peer, b.id);
    assert_eq!(answer.tip_height, 9);
    assert!(answer.blocks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_peer_that_is_not_there_fails_with_a_reason() {
    let mut a = start(&[]).await;
    let nobody = Keypair::generate_ed25519().public().to_peer_id();
    let request = SyncRequest {
        from_height: 1,
        max_blocks: 1,
        snapshot: None,
    };
    send(
        &a,
        P2pCommand::Sync {
            peer: nobody,
            request,
        },
    );
    let (peer, reason) = next(&mut a, Duration::from_secs(10), |event| match event {
        P2pEvent::SyncFailed { peer, reason } => Some((peer, reason)),
        _ => None,
    })
    .await
    .expect("a sync request to an unknown peer fails, not hangs");
    assert_eq!(peer, nobody);
    assert!(!reason.is_empty());
    let manifest = TileRequest::Manifest {
        content_hash: vec![1; 32],
    };
    let answer = tile_answer(fetch_tile(&a, nobody, manifest)).await;
    assert!(
        answer.as_ref().is_err_and(|reason| !reason.is_empty()),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tile_request_is_answered_by_the_service_that_took_the_queue() {
    let (a, b) = pair().await;
    let mut requests = b
        .handle
        .tile_requests
        .lock()
        .expect("tile queue lock")
        .take()
        .expect("nobody took the tile queue yet");
    let request = TileRequest::Tile {
        content_hash: vec![2; 32],
        index: 3,
    };
    let answer = fetch_tile(&a, b.id, request.clone());
    let inbound = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("the service gets the request within 10 s")
        .expect("the queue is open");
    assert_eq!(inbound.peer, a.id);
    assert_eq!(inbound.request, request);
    send(
        &b,
        P2pCommand::RespondTile {
            channel: inbound.channel,
            response: TileResponse::Tile {
                index: 3,
                bytes: vec![9; 100],
            },
        },
    );
    let answer = tile_answer(answer).await;
    assert_eq!(
        answer,
        Ok(TileResponse::Tile {
            index: 3,
            bytes: vec![9; 100]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_serves_no_tiles_answers_unavailable_at_once() {
    // Nobody takes b's tile queue (a node without the inference service): a request must not
    // wait there until the requester's 30 s timeout.
    let (a, b) = pair().await;
    let manifest = TileRequest::Manifest {
        content_hash: vec![1; 32],
    };
    let answer = tile_answer(fetch_tile(&a, b.id, manifest)).await;
    assert!(
        matches!(answer, Ok(TileResponse::Unavailable { .. })),
        "{answer:?}"
    );
}

async fn probe(node: &Node, addresses: Vec<Multiaddr>, timeout: Duration) -> ProbeOutcome {
    let (reply, outcome) = oneshot::channel();
    send(
        node,
        P2pCommand::Probe {
            addresses,
            upgrade_wait: Duration::from_secs(1),
            timeout,
            reply,
        },
    );
    tokio::time::timeout(timeout + Duration::from_secs(10), outcome)
        .await
        .expect("the probe answers within its timeout")
        .expect("the swarm answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_redials_a_connected_peer_and_reports_a_direct_connection() {
    let (a, b) = pair().await;
    let outcome = probe(&a, vec![b.address.clone()], Duration::from_secs(15)).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.peer_id, b.id.to_string());
    assert!(outcome.connected);
    assert_eq!(outcome.relayed, Some(false), "a loopback dial is direct");
    let (connect, direct) = (
        outcome.connect_ms.expect("time to connect"),
        outcome.direct_ms.expect("time to a direct link"),
    );
    assert!(connect > 0.0 && connect <= direct, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_takes_addresses_of_one_peer_and_one_probe_of_a_peer_at_a_time() {
    let (a, b) = pair().await;
    let c = start(&[]).await;
    let two_peers = probe(
        &a,
        vec![b.address.clone(), c.address.clone()],
        Duration::from_secs(1),
    )
    .await;
    assert!(
        two_peers
            .error
            .as_deref()
            .is_some_and(|e| e.contains("one peer")),
        "{two_peers:?}"
    );
    let no_peer_id = probe(
        &a,
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("multiaddr")],
        Duration::from_secs(1),
    )
    .await;
    assert!(no_peer_id.error.is_some(), "{no_peer_id:?}");
    // Nobody listens on port 1: the first probe keeps dialling until its timeout, and a
    // second probe of the same peer meanwhile is refused.
    let gone = Keypair::generate_ed25519().public().to_peer_id();
    let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{gone}")
        .parse()
        .expect("multiaddr");
    let (reply, first) = oneshot::channel();
    send(
        &a,
        P2pCommand::Probe {
            addresses: vec![dead.clone()],
            upgrade_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            reply,
        },
    );
    let second = probe(&a, vec![dead], Duration::from_secs(1)).await;
    assert!(
        second
            .error
            .as_deref()
            .is_some_and(|e| e.contains("running")),
        "{second:?}"
    );
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first probe ends by its timeout")
        .expect("the swarm answers");
    assert!(!first.connected);
    let error = first.error.expect("a probe that never connected says so");
    assert!(error.contains("no connection within"), "{error}");
}
