//! Helpers shared by the node's integration tests: run the binary, speak minimal HTTP.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_blyan-node");

/// Runs `blyan-node ARGS` to completion with no BLYAN_* variables from the outer environment.
pub fn node(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BLYAN_") {
            command.env_remove(name);
        }
    }
    command.output().expect("run blyan-node")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `blyan-node init --home DIR`, asserting success.
pub fn init_home(home: &Path) {
    let output = node(&["init", "--home", home.to_str().unwrap()]);
    assert!(output.status.success(), "init failed: {}", stderr(&output));
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A parsed HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) before reading the body and close; that is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

/// Splits a raw HTTP/1.1 answer into status (0 when there is none), headers and body.
pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// Polls `GET path` until it answers 200, or panics with `what` after `deadline`.
pub fn wait_for_ok(addr: SocketAddr, path: &str, deadline: Duration, what: &str) -> Response {
    let started = Instant::now();
    loop {
        if let Ok(response) = http(addr, "GET", path, b"") {
            if response.status == 200 {
                return response;
            }
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir` with the SHA-256 of its contents, for "nothing was changed" assertions.
pub fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                let digest = blyan_node::block::Hash::digest(&std::fs::read(&path).unwrap());
                files.push((relative, digest.to_hex()));
            }
        }
    }
    files.sort();
    files
}

/// A swarm started in-process on loopback (`p2p::spawn`), its events drained in the background
/// so that it never waits on a full queue.
pub struct Swarm {
    pub id: libp2p::PeerId,
    pub handle: blyan_node::p2p::P2pHandle,
    pub address: libp2p::Multiaddr,
    _events: tokio::task::JoinHandle<()>,
}

/// Starts a swarm with `config`; the default listen address becomes 127.0.0.1 on a free port.
pub async fn swarm(config: blyan_node::config::P2pConfig, chain_id: &str) -> Swarm {
    use blyan_node::config::P2pConfig;
    // RUST_LOG=blyan_node=debug shows what the swarms do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listen = if config.listen == P2pConfig::default().listen {
        vec!["/ip4/127.0.0.1/tcp/0".into()]
    } else {
        config.listen.clone()
    };
    let key = libp2p::identity::Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let config = P2pConfig { listen, ..config };
    let (handle, mut events, bound) = blyan_node::p2p::spawn(key, &config, chain_id)
        .await
        .expect("swarm starts");
    let address = format!("{}/p2p/{id}", bound[0]).parse().expect("multiaddr");
    Swarm {
        id,
        handle,
        address,
        _events: tokio::spawn(async move { while events.recv().await.is_some() {} }),
    }
}
