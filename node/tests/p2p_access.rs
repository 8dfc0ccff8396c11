//! Who may connect: a peer not on a node's allowlist cannot connect (in either direction), and
//! a peer revoked while the node runs is cut off within seconds and cannot come back.

use std::path::Path;
use std::time::Duration;

use blyan_node::config::P2pConfig;
use blyan_node::p2p::{self, P2pEvent, P2pHandle};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc::Receiver;

struct Peer {
    handle: P2pHandle,
    events: Receiver<P2pEvent>,
    address: Multiaddr,
}

async fn start(
    key: Keypair,
    allowlist: Option<&Path>,
    revoked: Option<&Path>,
    dial: &[String],
) -> Peer {
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: dial.to_vec(),
        static_mode: true,
        allowlist_file: allowlist
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        revoked_file: revoked.map(|p| p.display().to_string()).unwrap_or_default(),
        ..P2pConfig::default()
    };
    let peer_id = key.public().to_peer_id();
    let (handle, events, bound) = p2p::spawn(key, &config, "access-test")
        .await
        .expect("swarm starts");
    let address = format!("{}/p2p/{peer_id}", bound[0])
        .parse()
        .expect("multiaddr");
    Peer {
        handle,
        events,
        address,
    }
}

fn key() -> (Keypair, PeerId) {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    (key, id)
}

/// Waits for an event that `wanted` accepts (true), or gives up after `within`.
async fn saw(
    events: &mut Receiver<P2pEvent>,
    within: Duration,
    wanted: impl Fn(&P2pEvent) -> bool,
) -> bool {
    tokio::time::timeout(within, async {
        while let Some(event) = events.recv().await {
            if wanted(&event) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

async fn connected(events: &mut Receiver<P2pEvent>, peer: PeerId, within: Duration) -> bool {
    saw(
        events,
        within,
        |event| matches!(event, P2pEvent::Connected(p) if *p == peer),
    )
    .await
}

async fn disconnected(events: &mut Receiver<P2pEvent>, peer: PeerId, within: Duration) -> bool {
    saw(
        events,
        within,
        |event| matches!(event, P2pEvent::Disconnected(p) if *p == peer),
    )
    .await
}

#[tokio::test]
async fn a_peer_not_on_the_allowlist_cannot_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let allowlist = dir.path().join("allowlist.txt");
    let (guard_key, guard_id) = key();
    let (friend_key, friend_id) = key();
    let (stranger_key, stranger_id) = key();
    std::fs::write(&allowlist, format!("# the only peers\n{friend_id}\n")).expect("write");
    let mut guard = start(guard_key, Some(&allowlist), None, &[]).await;
    assert_eq!(guard.handle.info.lock().unwrap().allowlist, Some(1));
    let dial = vec![guard.address.to_string()];
    let mut friend = start(friend_key, None, None, &dial).await;
    let stranger = start(stranger_key, None, None, &dial).await;
    assert!(
        connected(&mut friend.events, guard_id, Duration::from_secs(20)).await,
        "the listed peer connects"
    );
    assert!(
        connected(&mut guard.events, friend_id, Duration::from_secs(5)).await,
        "the guard registers the listed peer"
    );
    // The stranger redials every second; none of its tries may get through: the guard closes
    // each connection as soon as the handshake names the peer (the stranger may see it open
    // for an instant, never long enough to speak a protocol).
    assert!(
        !connected(&mut guard.events, stranger_id, Duration::from_secs(4)).await,
        "a peer not on the allowlist connected"
    );
    assert!(
        !stranger.handle.connected_peers().contains(&guard_id),
        "the stranger holds a connection to the guard"
    );
    let info = guard.handle.info.lock().unwrap().clone();
    assert!(
        info.peers
            .iter()
            .all(|p| p.peer_id != stranger_id.to_string()),
        "the stranger is among the guard's peers: {:?}",
        info.peers
    );
    assert!(
        info.refused_connections >= 2,
        "the stranger's dials were not counted as refused: {}",
        info.refused_connections
    );

    // Listing the stranger lets it in without a restart.
    std::fs::write(&allowlist, format!("{friend_id}\n{stranger_id}\n")).expect("write");
    assert!(
        connected(&mut guard.events, stranger_id, Duration::from_secs(20)).await,
        "a peer added to the allowlist at runtime connects"
    );
    drop(stranger);
}

#[tokio::test]
async fn a_peer_revoked_at_runtime_is_cut_off_and_stays_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "# nobody yet\n").expect("write");
    let (guard_key, guard_id) = key();
    let (peer_key, peer_id) = key();
    let mut guard = start(guard_key, None, Some(&revoked), &[]).await;
    let mut peer = start(peer_key, None, None, &[guard.address.to_string()]).await;
    assert!(
        connected(&mut guard.events, peer_id, Duration::from_secs(20)).await,
        "the peer connects before it is revoked"
    );
    let revoked_at = std::time::Instant::now();
    std::fs::write(&revoked, format!("{peer_id} # key leaked\n")).expect("write");
    assert!(
        disconnected(&mut guard.events, peer_id, Duration::from_secs(5)).await,
        "the revoked peer was not cut off within 5 s"
    );
    let cut_off = revoked_at.elapsed();
    assert!(
        disconnected(&mut peer.events, guard_id, Duration::from_secs(5)).await
            || !peer.handle.connected_peers().contains(&guard_id),
        "the revoked peer still sees the link"
    );
    // It keeps redialling (bootstrap); it must stay out.
    assert!(
        !connected(&mut guard.events, peer_id, Duration::from_secs(4)).await,
        "a revoked peer reconnected"
    );
    assert_eq!(guard.handle.info.lock().unwrap().revoked, 1);
    eprintln!("revoked peer cut off after {cut_off:?}");
}

#[tokio::test]
async fn a_list_that_does_not_parse_stops_the_start_and_names_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let allowlist = dir.path().join("allowlist.txt");
    std::fs::write(&allowlist, "12D3KooWnotapeer\n").expect("write");
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        allowlist_file: allowlist.display().to_string(),
        ..P2pConfig::default()
    };
    let error = match p2p::spawn(Keypair::generate_ed25519(), &config, "access-test").await {
        Ok(_) => panic!("a broken allowlist must stop the start"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("p2p.allowlist_file") && error.contains("allowlist.txt:1"),
        "{error}"
    );
}
