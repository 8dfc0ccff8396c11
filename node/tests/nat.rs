//! NAT traversal on loopback, with real swarms: a node known only by its relayed address is
//! reached through a circuit relay and the link is upgraded to a direct one by hole punching
//! (DCUtR); a node that loses its relay moves its reservation to another and stays reachable;
//! AutoNAT v2 finds a reachable node public. (Nodes behind real NAT routers: the Docker
//! topologies of the harness, docs/NETWORKING.md.)

use std::time::{Duration, Instant};

use blyan_node::config::{P2pConfig, ReserveRelays};
use blyan_node::p2p::{NetInfo, Reachability};
use libp2p::PeerId;

mod common;

use common::Swarm as Node;

async fn start(config: P2pConfig) -> Node {
    common::swarm(config, "nat-test").await
}

/// A relay server announcing its public address, as an operator configures one (a relay
/// offers circuits only on an address it knows to be reachable: configured, or confirmed by
/// AutoNAT).
fn relay_server() -> P2pConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("/ip4/127.0.0.1/tcp/{port}");
    P2pConfig {
        listen: vec![address.clone()],
        external_addresses: vec![address],
        relay_server: true,
        ..P2pConfig::default()
    }
}

fn info(node: &Node) -> NetInfo {
    node.handle.info.lock().expect("net info").clone()
}

/// Polls `node`'s net info every 100 ms until `wanted` holds; the time it took, or None.
async fn until(
    node: &Node,
    within: Duration,
    wanted: impl Fn(&NetInfo) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if wanted(&info(node)) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn relayed_address(relay: &Node, target: PeerId) -> String {
    format!("{}/p2p-circuit/p2p/{target}", relay.address)
}

fn peer_path(info: &NetInfo, peer: PeerId) -> Option<(&'static str, bool)> {
    info.peers
        .iter()
        .find(|p| p.peer_id == peer.to_string())
        .map(|p| (p.path, p.hole_punched))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_known_only_by_its_relayed_address_is_reached_then_hole_punched() {
    let relay = start(relay_server()).await;
    let behind = start(P2pConfig {
        relays: vec![relay.address.to_string()],
        reserve_relays: ReserveRelays::Always,
        ..P2pConfig::default()
    })
    .await;
    let reserved = until(&behind, Duration::from_secs(20), |i| {
        i.nat.relays_reserved.contains(&relay.id.to_string()) && !i.nat.relayed_addresses.is_empty()
    })
    .await;
    assert!(
        reserved.is_some(),
        "no reservation on the relay: {:#?}",
        info(&behind).nat
    );
    assert!(
        info(&behind)
            .nat
            .relayed_addresses
            .iter()
            .any(|a| a.contains("p2p-circuit")),
        "{:#?}",
        info(&behind).nat
    );

    // The dialer knows only the relayed address.
    let dialer = start(P2pConfig {
        bootstrap: vec![relayed_address(&relay, behind.id)],
        ..P2pConfig::default()
    })
    .await;
    let connected = until(&dialer, Duration::from_secs(20), |i| {
        peer_path(i, behind.id).is_some()
    })
    .await;
    assert!(
        connected.is_some(),
        "not connected through the relay: {:#?}",
        info(&dialer)
    );
    // DCUtR: the node behind the relay sends its observed addresses and both dial at once.
    let upgraded = until(&dialer, Duration::from_secs(20), |i| {
        peer_path(i, behind.id) == Some(("direct", true))
    })
    .await;
    let (dialer_info, behind_info) = (info(&dialer), info(&behind));
    assert!(
        upgraded.is_some(),
        "the relayed link was not upgraded: dialer {:#?}\nbehind {:#?}",
        dialer_info.peers,
        behind_info.nat
    );
    assert!(
        dialer_info.nat.hole_punch_successes + behind_info.nat.hole_punch_successes >= 1,
        "no hole punch counted: {:#?} {:#?}",
        dialer_info.nat,
        behind_info.nat
    );
    assert!(info(&relay).nat.relay_server);
    eprintln!(
        "reserved in {:?}, connected through the relay in {:?}, direct {:?} later",
        reserved.unwrap(),
        connected.unwrap(),
        upgraded.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_relay_reserves_on_the_other_and_stays_reachable() {
    let first = start(relay_server()).await;
    let second = start(relay_server()).await;
    let behind = start(P2pConfig {
        relays: vec![first.address.to_string(), second.address.to_string()],
        reserve_relays: ReserveRelays::Always,
        relay_reservations: 1,
        ..P2pConfig::default()
    })
    .await;
    assert!(
        until(&behind, Duration::from_secs(20), |i| i
            .nat
            .relays_reserved
            .contains(&first.id.to_string()))
        .await
        .is_some(),
        "no reservation on the first relay: {:#?}",
        info(&behind).nat
    );
    let first_id = first.id;
    // The first relay goes away (its swarm stops when its handle is dropped).
    drop(first);
    let moved = until(&behind, Duration::from_secs(30), |i| {
        i.nat.relays_reserved == vec![second.id.to_string()]
    })
    .await;
    assert!(
        moved.is_some(),
        "the reservation did not move to the second relay: {:#?}",
        info(&behind).nat
    );
    assert!(!info(&behind)
        .nat
        .relays_reserved
        .contains(&first_id.to_string()));
    // A newcomer given both relayed addresses (the first is dead) still reaches the node.
    let newcomer = start(P2pConfig {
        bootstrap: vec![
            format!(
                "{}/p2p-circuit/p2p/{}",
                first_address_of(first_id, &behind),
                behind.id
            ),
            relayed_address(&second, behind.id),
        ],
        ..P2pConfig::default()
    })
    .await;
    assert!(
        until(&newcomer, Duration::from_secs(30), |i| peer_path(
            i, behind.id
        )
        .is_some())
        .await
        .is_some(),
        "not reachable through the remaining relay: {:#?}",
        info(&newcomer)
    );
    eprintln!("reservation moved in {:?}", moved.unwrap());
}

/// The dead relay's address as the node knew it.
fn first_address_of(relay: PeerId, behind: &Node) -> String {
    info(behind)
        .nat
        .relays_known
        .iter()
        .find(|a| a.ends_with(&relay.to_string()))
        .cloned()
        .expect("the dead relay is still a known relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonat_finds_a_reachable_node_public() {
    let server = start(P2pConfig::default()).await;
    let client = start(P2pConfig {
        bootstrap: vec![server.address.to_string()],
        ..P2pConfig::default()
    })
    .await;
    let public = until(&client, Duration::from_secs(30), |i| {
        i.nat.reachability == Reachability::Public
    })
    .await;
    assert!(public.is_some(), "{:#?}", info(&client).nat);
    let nat = info(&client).nat;
    assert!(nat.autonat_tests >= 1);
    assert!(
        !nat.observed_addresses.is_empty(),
        "identify reported no observed address"
    );
    // A public node in "auto" mode holds no relay reservation.
    assert!(nat.relays_reserved.is_empty());
    eprintln!(
        "public after {:?} ({} tests)",
        public.unwrap(),
        nat.autonat_tests
    );
}
