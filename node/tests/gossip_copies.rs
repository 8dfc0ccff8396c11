//! Gossip copies: a payload a node has taken is not taken again when the same bytes come back
//! from another peer seconds later (gossipsub's duplicate window, `p2p::DUPLICATE_CACHE`, is
//! far longer than any delay through a busy devnet), while a re-send (`P2pCommand::Republish`,
//! what a stalled validator sends) is a new copy that the node takes again.
//!
//! With the old 3 s window a copy that came back after 4 s was taken as new, validated and
//! forwarded again: on a loaded host every late copy went round once more, and a 20-node
//! devnet on 2 cores stalled.

use std::time::Duration;

use blyan_node::config::P2pConfig;
use blyan_node::p2p::{self, P2pCommand, P2pEvent, P2pHandle, Topic};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use tokio::sync::mpsc::Receiver;

struct Peer {
    handle: P2pHandle,
    events: Receiver<P2pEvent>,
    address: Multiaddr,
}

async fn start(dial: &[String]) -> Peer {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: dial.to_vec(),
        static_mode: true,
        ..P2pConfig::default()
    };
    let (handle, events, bound) = p2p::spawn(key, &config, "copies-test")
        .await
        .expect("swarm starts");
    let address = format!("{}/p2p/{id}", bound[0]).parse().expect("multiaddr");
    Peer {
        handle,
        events,
        address,
    }
}

/// The next gossip payload `events` delivers on the votes topic, within `within`.
async fn next_vote(events: &mut Receiver<P2pEvent>, within: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await? {
                P2pEvent::Gossip {
                    topic: Topic::Votes,
                    data,
                    ..
                } => return Some(data),
                _ => continue,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// `from` publishes unique warm-up payloads until `to` delivers one: the link is up and both
/// know each other's subscriptions.
async fn linked(from: &P2pHandle, to: &mut Receiver<P2pEvent>, tag: &str) {
    for attempt in 0..100u32 {
        let warm = format!("warm-up {tag} {attempt}").into_bytes();
        from.commands
            .send(P2pCommand::Publish(Topic::Votes, warm.clone()))
            .expect("swarm runs");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(data)) =
            tokio::time::timeout_at(deadline, next_vote(to, Duration::from_secs(1))).await
        {
            if data.starts_with(format!("warm-up {tag}").as_bytes()) {
                return;
            }
        }
    }
    panic!("{tag}: no gossip got through in 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_taken_once_is_not_taken_again_from_a_late_peer_but_a_resend_is() {
    let mut a = start(&[]).await;
    let b = start(&[a.address.to_string()]).await;
    linked(&b.handle, &mut a.events, "b").await;

    let payload = b"a vote".to_vec();
    b.handle
        .commands
        .send(P2pCommand::Publish(Topic::Votes, payload.clone()))
        .unwrap();
    assert_eq!(
        next_vote(&mut a.events, Duration::from_secs(10)).await,
        Some(payload.clone()),
        "a takes the first copy"
    );

    // Longer than the old 3 s window; then the same bytes come from a peer a has not heard.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let c = start(&[a.address.to_string()]).await;
    linked(&c.handle, &mut a.events, "c").await;
    c.handle
        .commands
        .send(P2pCommand::Publish(Topic::Votes, payload.clone()))
        .unwrap();
    c.handle
        .commands
        .send(P2pCommand::Publish(Topic::Votes, b"after".to_vec()))
        .unwrap();
    // One connection delivers in order: the late copy, had a taken it, would come first.
    assert_eq!(
        next_vote(&mut a.events, Duration::from_secs(10)).await,
        Some(b"after".to_vec()),
        "the late copy of a payload a already took is dropped as a duplicate"
    );

    b.handle
        .commands
        .send(P2pCommand::Republish(Topic::Votes, payload.clone()))
        .unwrap();
    assert_eq!(
        next_vote(&mut a.events, Duration::from_secs(10)).await,
        Some(payload),
        "a re-send is a new copy, taken again"
    );
    drop((b, c));
}
