//! The swarm's pure pieces: address handling, topic names, message ids, the AutoNAT and relay
//! bookkeeping. The swarm itself is exercised end to end by node/tests/p2p_*.rs and nat.rs.

use super::behaviour::message_id;
use super::*;
use libp2p::gossipsub;
use libp2p::swarm::ConnectionId;

fn peer() -> PeerId {
    identity::Keypair::generate_ed25519().public().to_peer_id()
}

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("a valid multiaddr in the test")
}

#[test]
fn a_relayed_address_leads_to_the_peer_behind_the_relay() {
    let (relay, target) = (peer(), peer());
    let direct = addr(&format!("/ip4/10.0.0.1/tcp/26656/p2p/{target}"));
    let relayed = addr(&format!(
        "/ip4/10.0.0.2/tcp/26656/p2p/{relay}/p2p-circuit/p2p/{target}"
    ));
    assert_eq!(peer_of(&direct), Some(target));
    assert_eq!(
        peer_of(&relayed),
        Some(target),
        "the last /p2p, not the relay"
    );
    assert_eq!(peer_of(&addr("/ip4/10.0.0.1/tcp/26656")), None);
    assert!(is_relayed(&relayed));
    assert!(!is_relayed(&direct));
}

#[test]
fn interface_addresses_leave_out_loopback_and_unspecified() {
    let ips: Vec<_> = [
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/0.0.0.0/tcp/1",
        "/ip4/10.210.0.5/tcp/1",
    ]
    .iter()
    .flat_map(|text| interface_ipv4(&addr(text)).collect::<Vec<_>>())
    .collect();
    assert_eq!(ips, vec![std::net::Ipv4Addr::new(10, 210, 0, 5)]);
}

#[test]
fn a_bad_address_is_refused_naming_its_field_and_index() {
    let good = "/ip4/127.0.0.1/tcp/26656".to_string();
    let parsed = parse_addresses("p2p.bootstrap", std::slice::from_ref(&good)).unwrap();
    assert_eq!(parsed, vec![addr(&good)]);
    let error = parse_addresses("p2p.bootstrap", &[good, "not-an-address".into()]).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("p2p.bootstrap[1]"), "{text}");
    assert!(text.contains("not-an-address"), "{text}");
}

#[test]
fn every_topic_has_its_own_name_on_its_chain() {
    let names: HashSet<String> = Topic::ALL.iter().map(|t| t.name("c1")).collect();
    assert_eq!(names.len(), Topic::ALL.len());
    assert_eq!(Topic::Votes.name("c1"), "/blyan/c1/votes/2");
    assert_ne!(
        Topic::Votes.name("c1"),
        Topic::Votes.name("c2"),
        "chains do not mix"
    );
}

#[test]
fn a_message_id_depends_on_the_payload_only() {
    let message = |data: &[u8], source: Option<PeerId>, seq: u64| gossipsub::Message {
        source,
        data: data.to_vec(),
        sequence_number: Some(seq),
        topic: TopicHash::from_raw("t"),
    };
    let a = message_id(&message(b"vote", Some(peer()), 1));
    let b = message_id(&message(b"vote", Some(peer()), 2));
    let c = message_id(&message(b"other", None, 1));
    assert_eq!(a, b, "the same payload from two publishers is one message");
    assert_ne!(a, c);
}

#[test]
fn autonat_tells_our_own_addresses_and_lan_neighbours_apart() {
    let state = AutonatState {
        local_ips: [std::net::Ipv4Addr::new(192, 168, 7, 20)]
            .into_iter()
            .collect(),
        ..AutonatState::default()
    };
    assert!(state.is_ours(&addr("/ip4/192.168.7.20/tcp/1")));
    assert!(state.is_ours(&addr("/ip4/127.0.0.1/tcp/1")));
    assert!(state.is_ours(&addr("/ip6/::1/tcp/1")));
    assert!(!state.is_ours(&addr("/ip4/192.168.7.21/tcp/1")));
    // A neighbour on our /24 (behind the same NAT) proves nothing about the outside.
    assert!(state.on_our_lan(&addr("/ip4/192.168.7.99/tcp/1")));
    assert!(!state.on_our_lan(&addr("/ip4/192.168.8.99/tcp/1")));
    assert!(
        !state.on_our_lan(&addr("/ip4/127.0.0.1/tcp/1")),
        "loopback is nobody's LAN"
    );
}

#[test]
fn a_peer_reports_its_direct_connection_once_hole_punched() {
    let relayed = Link {
        address: addr("/p2p-circuit"),
        direction: "outbound",
        relayed: true,
        since: Instant::now(),
    };
    let mut peer = PeerConnections {
        since: Instant::now(),
        first_relayed: true,
        connections: [(ConnectionId::new_unchecked(1), relayed)]
            .into_iter()
            .collect(),
    };
    assert!(!peer.is_direct());
    assert!(peer.best().is_some_and(|link| link.relayed));
    assert_eq!(peer.direct_addresses().count(), 0);
    peer.connections.insert(
        ConnectionId::new_unchecked(2),
        Link {
            address: addr("/ip4/10.0.0.3/tcp/26656"),
            direction: "inbound",
            relayed: false,
            since: Instant::now(),
        },
    );
    assert!(peer.is_direct());
    assert!(peer.best().is_some_and(|link| !link.relayed), "direct wins");
    assert_eq!(peer.direct_addresses().count(), 1);
}

#[test]
fn relay_candidates_are_the_configured_ones_then_new_discoveries() {
    let (configured, discovered) = (peer(), peer());
    let configured_addr = addr("/ip4/10.0.0.1/tcp/26656");
    let mut relays = Relays {
        configured: vec![(configured, configured_addr.clone())],
        ..Relays::default()
    };
    relays
        .discovered
        .insert(configured, addr("/ip4/10.9.9.9/tcp/1"));
    relays
        .discovered
        .insert(discovered, addr("/ip4/10.0.0.2/tcp/26656"));
    let candidates = relays.candidates();
    assert_eq!(
        candidates.len(),
        2,
        "a configured relay is not listed twice"
    );
    assert_eq!(
        candidates[0],
        (configured, configured_addr),
        "configured first"
    );
    assert_eq!(candidates[1].0, discovered);
}

#[test]
fn a_full_command_queue_refuses_at_once_and_counts_what_it_refused() {
    let (commands, mut receiver) = P2pCommands::bounded(4);
    for _ in 0..4 {
        commands.send(P2pCommand::ReloadAccess).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(
            commands.send(P2pCommand::ReloadAccess),
            Err(CommandRefused::Full(4))
        );
    }
    assert_eq!(commands.refused(), 3);
    // Room again once the swarm task takes one.
    assert!(receiver.try_recv().is_ok());
    commands.send(P2pCommand::ReloadAccess).unwrap();
    drop(receiver);
    assert_eq!(
        commands.send(P2pCommand::ReloadAccess),
        Err(CommandRefused::Stopped)
    );
    assert_eq!(commands.refused(), 3, "a stopped task is not a full queue");
}
