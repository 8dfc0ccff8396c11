//! Helpers shared by the process-devnet tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;

/// Stops the devnet when the test ends, pass or fail.
pub struct Cleanup(pub PathBuf, pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = process::down(&self.0, &self.1, Duration::from_secs(5));
    }
}

/// A base port with `count` free ports above it, for API and P2P each (and the link proxy's
/// API and links above the P2P ports); `salt` keeps tests of one process apart. Everything
/// stays below the kernel's ephemeral range (32768 and up on Linux): a port there can be taken
/// at any moment by an outgoing connection, which once failed a link proxy's listen.
pub fn free_port_bases(count: u16, salt: u16) -> (u16, u16) {
    let start = 10_000 + (std::process::id() % 100) as u16 * 100 + salt * 10;
    let proxy = blyan_harness::manifest::MAX_NODES as u16;
    let mut base = start;
    let free = |from: u16, count: u16| {
        (from..from + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
    };
    loop {
        // The HTTPS API ports sit at the API base + 500; the proxy's API at the P2P base +
        // MAX_NODES, its links right above.
        if free(base, count)
            && free(base + 5000, count)
            && free(base + process::HTTPS_PORT_OFFSET, count)
            && free(base + 5000 + proxy, 1 + count * count)
        {
            return (base, base + 5000);
        }
        base += 50;
        assert!(base < start + 4000, "no free ports found");
    }
}

pub fn log_tails(state: &DevnetState) -> String {
    state
        .nodes
        .iter()
        .map(|node| format!("--- {}\n{}", node.moniker, process::log_tail(node, 15)))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn wait_down(state: &DevnetState, index: usize) {
    let pid = state.nodes[index].pid.expect("started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while process::is_node_process(pid) {
        assert!(Instant::now() < deadline, "node{index} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET url` as JSON, panicking with the URL on failure.
pub fn get_json(client: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// Lines of every node's log that contain one of `needles` (at most 40 a node).
pub fn log_lines(state: &DevnetState, needles: &[&str]) -> String {
    state
        .nodes
        .iter()
        .map(|node| {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| needles.iter().any(|needle| line.contains(needle)))
                .take(40)
                .collect();
            format!("--- {}\n{}", node.moniker, lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Options for a process devnet of `nodes` on free loopback ports (`salt` keeps the tests of
/// one binary apart), with the node binary cargo built for these tests.
pub fn loopback_options(
    name: &str,
    base: &std::path::Path,
    nodes: usize,
    salt: u16,
) -> blyan_harness::process::UpOptions {
    let node_bin = process::default_node_bin();
    assert!(
        node_bin.is_file(),
        "{} is missing: run the workspace tests (cargo test --workspace) so that cargo builds it",
        node_bin.display()
    );
    let (api, p2p) = free_port_bases(nodes as u16, salt);
    let mut options = blyan_harness::process::UpOptions::new(name, base, nodes, node_bin);
    options.api_port_base = api;
    options.p2p_port_base = p2p;
    options
}
