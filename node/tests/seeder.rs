//! The DNS seeder against real swarms on loopback: it crawls from one bootstrap node to every
//! node (Kademlia), answers `_dnsaddr` TXT and A records with the healthy ones, drops a node
//! that stops within its health interval, and a node whose only bootstrap is the seed domain
//! joins through it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blyan_node::config::P2pConfig;
use blyan_node::seeder::{self, RecordType, ResponseCode, SeederConfig, Transport};
use libp2p::PeerId;

const DOMAIN: &str = "seed.devnet.test";

mod common;

use common::Swarm as Node;

async fn start(config: P2pConfig) -> Node {
    common::swarm(config, "seed-test").await
}

fn dialing(peers: &[&Node]) -> P2pConfig {
    P2pConfig {
        bootstrap: peers.iter().map(|p| p.address.to_string()).collect(),
        ..P2pConfig::default()
    }
}

/// The peer ids in the seeder's `_dnsaddr` answer.
async fn answered(server: SocketAddr) -> Vec<String> {
    let answer = seeder::query(
        server,
        &format!("_dnsaddr.{DOMAIN}"),
        RecordType::TXT,
        Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .expect("the seeder answers");
    let mut peers: Vec<String> = answer
        .values
        .iter()
        .map(|v| {
            assert!(v.starts_with("dnsaddr=/ip4/127.0.0.1/tcp/"), "{v}");
            v.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    peers.sort();
    peers
}

async fn until_answer(server: SocketAddr, within: Duration, wanted: &[PeerId]) -> Option<Duration> {
    let mut wanted: Vec<String> = wanted.iter().map(ToString::to_string).collect();
    wanted.sort();
    let start = Instant::now();
    while start.elapsed() < within {
        if answered(server).await == wanted {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeder_answers_healthy_nodes_only_and_a_node_joins_through_it() {
    // A chain: the seeder knows only the first node; the third is two Kademlia hops away.
    let first = start(P2pConfig::default()).await;
    let second = start(dialing(&[&first])).await;
    let third = start(dialing(&[&second])).await;
    let seeder = seeder::start(SeederConfig {
        domain: DOMAIN.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        bootstrap: vec![first.address.clone()],
        health_interval: Duration::from_secs(1),
        crawl_interval: Duration::from_secs(1),
        ttl: 5,
        max_answers: 16,
    })
    .await
    .expect("seeder starts");
    let server = seeder.dns_address;
    let found = until_answer(
        server,
        Duration::from_secs(30),
        &[first.id, second.id, third.id],
    )
    .await;
    assert!(
        found.is_some(),
        "the crawl did not find all three nodes healthy: {:?}",
        answered(server).await
    );

    // A and the refusals.
    let a = seeder::query(
        server,
        DOMAIN,
        RecordType::A,
        Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(
        a.values,
        vec!["127.0.0.1".to_string()],
        "one A record per address"
    );
    let elsewhere = seeder::query(
        server,
        "example.org",
        RecordType::A,
        Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(
        elsewhere.code,
        ResponseCode::Refused,
        "names outside the domain are refused"
    );
    let missing = seeder::query(
        server,
        &format!("nope.{DOMAIN}"),
        RecordType::A,
        Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(missing.code, ResponseCode::NXDomain);

    // The third node stops: it leaves the answers within its health interval (1 s) plus one
    // check's timeout.
    let third_id = third.id;
    drop(third);
    let stopped = Instant::now();
    let gone = until_answer(server, Duration::from_secs(5), &[first.id, second.id]).await;
    assert!(
        gone.is_some(),
        "a stopped node is still answered: {:?}",
        answered(server).await
    );
    assert!(!answered(server).await.contains(&third_id.to_string()));
    eprintln!(
        "all three found in {:?}; the stopped node left the answers after {:?}",
        found.unwrap(),
        stopped.elapsed()
    );

    // A node whose only bootstrap is the seed domain, resolved through the seeder.
    let newcomer = start(P2pConfig {
        bootstrap_dns: vec![DOMAIN.into()],
        dns_server: server.to_string(),
        ..P2pConfig::default()
    })
    .await;
    let start_wait = Instant::now();
    let mut joined = false;
    while start_wait.elapsed() < Duration::from_secs(20) {
        let peers = newcomer.handle.connected_peers();
        if peers.contains(&first.id) || peers.contains(&second.id) {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        joined,
        "the newcomer did not join through the DNS seed: {:#?}",
        newcomer.handle.info.lock().unwrap()
    );
    seeder.stop().await;
}
