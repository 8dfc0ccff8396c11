//! Helpers shared by the process-devnet tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blyan_harness::process::{self, DevnetState};

/// Stops the devnet when the test ends, pass or fail.
pub struct Cleanup(pub PathBuf, pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = process::down(&self.0, &self.1, Duration::from_secs(5));
    }
}

/// A base port with `count` free ports above it, for API and P2P each; `salt` keeps tests of
/// one process apart.
pub fn free_port_bases(count: u16, salt: u16) -> (u16, u16) {
    let start = 20000 + (std::process::id() % 200) as u16 * 100 + salt * 10;
    let mut base = start;
    let free =
        |base: u16| (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
    loop {
        // The HTTPS API ports sit at the API base + 500.
        if free(base) && free(base + 5000) && free(base + process::HTTPS_PORT_OFFSET) {
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

/// One HTTPS request to `url` + `path` trusting the devnet's CA (`pki/ca.crt`), presenting the
/// devnet's admin client certificate when `admin`; the HTTP status, or why none came.
pub fn https_status(
    pki: &std::path::Path,
    admin: bool,
    url: &str,
    method: &str,
    path: &str,
) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca.crt")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = if admin {
        let chain =
            vec![CertificateDer::from_pem_file(pki.join("admin.crt")).map_err(|e| e.to_string())?];
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key")).map_err(|e| e.to_string())?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?
    } else {
        builder.with_no_client_auth()
    };
    let address = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url} is not https"))?;
    let host = address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address);
    let mut tcp = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let mut session = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::Stream::new(&mut session, &mut tcp);
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(error.to_string());
        }
    }
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "no HTTP status".to_string())
}
