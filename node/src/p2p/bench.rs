//! `blyan-node bench-p2p`: connection establishment and TLS 1.3 handshake times against a
//! real listener, and gossip latency of signed votes to every node of an N-node swarm mesh,
//! all on loopback in one process (one clock, so delivery times need no clock sync); and the
//! cost of TLS 1.3 on one link: throughput against plaintext TCP, and the handshake alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use hdrhistogram::Histogram;
use libp2p::gossipsub::MessageAcceptance;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{probe, spawn, P2pCommand, P2pError, P2pEvent, P2pHandle, Topic};
use crate::block::Hash;
use crate::config::P2pConfig;
use crate::consensus::types::{SignedVote, Vote, VoteKind};
use crate::inference::bench::median;
use crate::wire;

/// Percentiles of one measured quantity, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn summary(histogram: &Histogram<u64>) -> Summary {
    let ms = |micros: u64| micros as f64 / 1000.0;
    Summary {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

fn record(histogram: &mut Histogram<u64>, duration: Duration) {
    // Values are microseconds; the histogram auto-resizes.
    let _ = histogram.record(duration.as_micros().max(1) as u64);
}

/// Handshake figures.
#[derive(Clone, Debug, Serialize)]
pub struct HandshakeReport {
    pub iterations: u32,
    pub tls_version: String,
    /// TCP connect.
    pub tcp_connect: Summary,
    /// multistream-select of TLS plus the TLS 1.3 handshake with mutual authentication.
    pub tls_handshake: Summary,
    /// multistream-select of yamux over the TLS session.
    pub muxer: Summary,
    /// All of it: TCP connect to a secured, multiplexed connection.
    pub connection: Summary,
}

/// The IPv4 socket address of a `/ip4/../tcp/..` multiaddr.
pub fn socket_of(address: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for part in address.iter() {
        match part {
            Protocol::Ip4(address) => ip = Some(address),
            Protocol::Tcp(number) => port = Some(number),
            _ => {}
        }
    }
    Some(SocketAddr::from((ip?, port?)))
}

fn loopback_config() -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..P2pConfig::default()
    }
}

/// Measures `iterations` fresh connections to one listener.
pub async fn handshake(iterations: u32) -> Result<HandshakeReport, P2pError> {
    let (handle, _events, bound) =
        spawn(Keypair::generate_ed25519(), &loopback_config(), "bench").await?;
    let address =
        socket_of(&bound[0]).ok_or_else(|| P2pError::Config("no TCP listen address".into()))?;
    let client = Keypair::generate_ed25519();
    let mut tcp = histogram();
    let mut tls = histogram();
    let mut muxer = histogram();
    let mut total = histogram();
    let mut version = String::new();
    for _ in 0..iterations {
        // Certificate generation is the client's one-off cost, outside the timed part.
        let config = probe::client_config(&client, Some(handle.local_peer_id));
        let (stream, _, timings) = probe::dial_tls(address, config)
            .await
            .map_err(|error| P2pError::Transport(error.to_string()))?;
        version = format!("{:?}", probe::protocol_version(&stream));
        let yamux = probe::negotiate_yamux(stream)
            .await
            .map_err(|error| P2pError::Transport(error.to_string()))?;
        record(&mut tcp, timings.tcp);
        record(&mut tls, timings.tls);
        record(&mut muxer, yamux);
        record(&mut total, timings.tcp + timings.tls + yamux);
    }
    Ok(HandshakeReport {
        iterations,
        tls_version: version,
        tcp_connect: summary(&tcp),
        tls_handshake: summary(&tls),
        muxer: summary(&muxer),
        connection: summary(&total),
    })
}

/// Gossip figures.
#[derive(Clone, Debug, Serialize)]
pub struct GossipReport {
    pub nodes: usize,
    pub messages: usize,
    /// From publish to receipt, every (message, receiving node) pair.
    pub delivery: Summary,
    /// From publish to receipt by the last of the other nodes, per message.
    pub all_nodes: Summary,
    pub lost_deliveries: u64,
}

/// Starts `nodes` swarms that each dial every other (as a static devnet does), publishes
/// `messages` signed votes from rotating nodes, and times their arrival at every other node.
pub async fn gossip(nodes: usize, messages: usize) -> Result<GossipReport, P2pError> {
    assert!(nodes >= 2, "the caller checks --gossip-nodes");
    let (handles, streams) = start_mesh(nodes).await?;
    let validator = SigningKey::from_bytes(&[7; 32]);
    // Bounded by what can arrive: each message once at each node; each node's connections.
    let (arrivals_tx, mut arrivals) = mpsc::channel(messages.max(1) * nodes);
    let (ready_tx, mut ready) = mpsc::channel(nodes * nodes);
    for (index, events) in streams.into_iter().enumerate() {
        let receiver = Receiver {
            index,
            handle: handles[index].clone(),
            public: validator.verifying_key(),
            arrivals: arrivals_tx.clone(),
            ready: ready_tx.clone(),
        };
        tokio::spawn(receiver.run(events));
    }
    wait_for_mesh(&mut ready, nodes).await?;
    // Then for gossipsub meshes to form (a few heartbeats).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut tally = Tally::default();
    for number in 0..messages {
        let data = signed_vote(&validator, number);
        tally.sent.insert(Hash::digest(&data), Instant::now());
        let _ = handles[number % nodes]
            .commands
            .send(P2pCommand::Publish(Topic::Votes, data));
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok((hash, at)) = arrivals.try_recv() {
            tally.note(hash, at);
        }
    }
    let drain = Instant::now() + Duration::from_secs(5);
    let expected = messages * (nodes - 1);
    while tally
        .received
        .values()
        .map(|(count, _)| *count)
        .sum::<usize>()
        < expected
        && Instant::now() < drain
    {
        if let Ok(Some((hash, at))) =
            tokio::time::timeout(Duration::from_millis(100), arrivals.recv()).await
        {
            tally.note(hash, at);
        }
    }
    drop(handles);
    Ok(tally.report(nodes, messages))
}

/// `nodes` swarms on loopback, each bootstrapped with every other's address.
async fn start_mesh(
    nodes: usize,
) -> Result<(Vec<P2pHandle>, Vec<mpsc::Receiver<P2pEvent>>), P2pError> {
    let keys: Vec<Keypair> = (0..nodes).map(|_| Keypair::generate_ed25519()).collect();
    // Ports are known only after binding: pick them by binding and releasing.
    let ports: Vec<u16> = (0..nodes)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|address| address.port())
                .map_err(|error| P2pError::Transport(error.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let addresses: Vec<String> = keys
        .iter()
        .zip(&ports)
        .map(|(key, port)| {
            format!(
                "/ip4/127.0.0.1/tcp/{port}/p2p/{}",
                key.public().to_peer_id()
            )
        })
        .collect();
    let mut handles = Vec::with_capacity(nodes);
    let mut streams = Vec::with_capacity(nodes);
    for (index, key) in keys.iter().enumerate() {
        let config = P2pConfig {
            listen: vec![format!("/ip4/127.0.0.1/tcp/{}", ports[index])],
            bootstrap: addresses
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, address)| address.clone())
                .collect(),
            static_mode: true,
            ..P2pConfig::default()
        };
        let (handle, events, _) = spawn(key.clone(), &config, "bench").await?;
        handles.push(handle);
        streams.push(events);
    }
    Ok((handles, streams))
}

/// One node's event reader: accepts every vote signed by the bench validator, reporting
/// (message id, time) of each, and reports each new connection.
struct Receiver {
    index: usize,
    handle: P2pHandle,
    public: ed25519_dalek::VerifyingKey,
    arrivals: mpsc::Sender<(Hash, Instant)>,
    ready: mpsc::Sender<usize>,
}

impl Receiver {
    async fn run(self, mut events: mpsc::Receiver<P2pEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                P2pEvent::Gossip {
                    id, source, data, ..
                } => {
                    let acceptance = match wire::decode_vote(&data) {
                        Ok(vote) if vote.verify("bench", &self.public) => {
                            let _ = self
                                .arrivals
                                .send((Hash::digest(&data), Instant::now()))
                                .await;
                            MessageAcceptance::Accept
                        }
                        _ => MessageAcceptance::Reject,
                    };
                    let _ = self.handle.commands.send(P2pCommand::Validate {
                        id,
                        source,
                        acceptance,
                    });
                }
                P2pEvent::Connected(_) => {
                    let _ = self.ready.send(self.index).await;
                }
                _ => {}
            }
        }
    }
}

/// Waits up to 60 s until every node reports `nodes - 1` connections (a full mesh).
async fn wait_for_mesh(ready: &mut mpsc::Receiver<usize>, nodes: usize) -> Result<(), P2pError> {
    let mut connected = vec![0usize; nodes];
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.iter().any(|count| *count < nodes - 1) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, ready.recv()).await {
            Ok(Some(index)) => connected[index] += 1,
            _ => {
                return Err(P2pError::Transport(format!(
                    "mesh incomplete after 60 s: connections per node {connected:?}"
                )))
            }
        }
    }
    Ok(())
}

/// Bench vote number `number` (its height is `number + 1`), signed and encoded.
fn signed_vote(validator: &SigningKey, number: usize) -> Vec<u8> {
    let vote = Vote {
        kind: VoteKind::Prevote,
        height: number as u64 + 1,
        round: 0,
        value: Some(Hash::digest(&number.to_be_bytes())),
        validator: 0,
    };
    let signed = SignedVote {
        vote,
        signature: validator.sign(&vote.sign_bytes("bench")),
    };
    wire::encode_vote(&signed)
}

/// Publish times, arrivals per message (count, last) and every delivery's latency.
struct Tally {
    sent: HashMap<Hash, Instant>,
    received: HashMap<Hash, (usize, Instant)>,
    delivery: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: HashMap::new(),
            received: HashMap::new(),
            delivery: histogram(),
        }
    }
}

impl Tally {
    fn note(&mut self, hash: Hash, at: Instant) {
        if let Some(published) = self.sent.get(&hash) {
            record(&mut self.delivery, at - *published);
            let entry = self.received.entry(hash).or_insert((0, at));
            entry.0 += 1;
            entry.1 = entry.1.max(at);
        }
    }

    fn report(&self, nodes: usize, messages: usize) -> GossipReport {
        let mut all_nodes = histogram();
        let mut lost = 0u64;
        for (hash, published) in &self.sent {
            match self.received.get(hash) {
                Some((count, last)) if *count >= nodes - 1 => {
                    record(&mut all_nodes, *last - *published)
                }
                Some((count, _)) => lost += (nodes - 1 - count) as u64,
                None => lost += (nodes - 1) as u64,
            }
        }
        GossipReport {
            nodes,
            messages,
            delivery: summary(&self.delivery),
            all_nodes: summary(&all_nodes),
            lost_deliveries: lost,
        }
    }
}

/// One link's throughput, plaintext TCP against TLS 1.3 (rustls, the provider the node uses),
/// measured in the same run, alternating, on loopback.
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    pub bytes_per_run: u64,
    pub runs: usize,
    pub cipher_suite: String,
    pub plaintext_mib_s: Vec<f64>,
    pub tls_mib_s: Vec<f64>,
    pub plaintext_median_mib_s: f64,
    pub tls_median_mib_s: f64,
    /// TLS throughput over plaintext throughput (medians).
    pub tls_over_plaintext: f64,
    /// TLS 1.3 handshakes with server authentication (HTTPS API style), on loopback.
    pub https_handshake: Summary,
}

async fn pump<W: tokio::io::AsyncWrite + Unpin>(mut writer: W, bytes: u64) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        writer.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    writer.shutdown().await
}

async fn drain<R: tokio::io::AsyncRead + Unpin>(mut reader: R) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            // A TLS peer closing without close_notify after everything arrived.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(total),
            Err(error) => return Err(error),
        }
    }
}

fn tls_pair() -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), P2pError> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| P2pError::Transport(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    // No session tickets: the sending side never reads, and unread tickets turn its close
    // into a reset that can cut the stream short.
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(generated.cert.der().clone())
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| P2pError::Transport(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// Streams `bytes` over one loopback TCP connection, plain and under TLS 1.3, `runs` times
/// each (alternating), and times `handshakes` TLS 1.3 handshakes.
pub async fn link(bytes: u64, runs: usize, handshakes: u32) -> Result<LinkReport, P2pError> {
    let io = |error: std::io::Error| P2pError::Transport(error.to_string());
    let (server_config, client_config) = tls_pair()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io)?;
    let address = listener.local_addr().map_err(io)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    let mut plain = Vec::with_capacity(runs);
    let mut secured = Vec::with_capacity(runs);
    let mut suite = String::new();
    for _ in 0..runs {
        for tls in [false, true] {
            let started = Instant::now();
            let client = tokio::net::TcpStream::connect(address).await.map_err(io)?;
            let (server, _) = listener.accept().await.map_err(io)?;
            let _ = client.set_nodelay(true);
            let received = if tls {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
                let connector = tokio_rustls::TlsConnector::from(client_config.clone());
                let (server, client) = tokio::join!(
                    acceptor.accept(server),
                    connector.connect(name.clone(), client)
                );
                let (server, client) = (server.map_err(io)?, client.map_err(io)?);
                suite = format!(
                    "{:?}",
                    client
                        .get_ref()
                        .1
                        .negotiated_cipher_suite()
                        .map(|s| s.suite())
                );
                let (sent, received) = tokio::join!(pump(client, bytes), drain(server));
                sent.map_err(io)?;
                received.map_err(io)?
            } else {
                let (sent, received) = tokio::join!(pump(client, bytes), drain(server));
                sent.map_err(io)?;
                received.map_err(io)?
            };
            if received != bytes {
                return Err(P2pError::Transport(format!(
                    "received {received} of {bytes} bytes"
                )));
            }
            let mib_s = bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
            if tls {
                secured.push(mib_s);
            } else {
                plain.push(mib_s);
            }
        }
    }
    let mut handshake_times = histogram();
    for _ in 0..handshakes {
        let client = tokio::net::TcpStream::connect(address).await.map_err(io)?;
        let (server, _) = listener.accept().await.map_err(io)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
        let connector = tokio_rustls::TlsConnector::from(client_config.clone());
        let started = Instant::now();
        let (server, client) = tokio::join!(
            acceptor.accept(server),
            connector.connect(name.clone(), client)
        );
        record(&mut handshake_times, started.elapsed());
        server.map_err(io)?;
        client.map_err(io)?;
    }
    let plaintext_median_mib_s = median(&plain);
    let tls_median_mib_s = median(&secured);
    Ok(LinkReport {
        bytes_per_run: bytes,
        runs,
        cipher_suite: suite,
        plaintext_mib_s: plain,
        tls_mib_s: secured,
        plaintext_median_mib_s,
        tls_median_mib_s,
        tls_over_plaintext: tls_median_mib_s / plaintext_median_mib_s,
        https_handshake: summary(&handshake_times),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn handshakes_are_tls_1_3_and_each_phase_is_timed() {
        let report = runtime().block_on(handshake(3)).unwrap();
        assert_eq!(report.iterations, 3);
        assert!(
            report.tls_version.contains("TLSv1_3"),
            "{}",
            report.tls_version
        );
        for phase in [&report.tcp_connect, &report.tls_handshake, &report.muxer] {
            assert_eq!(phase.count, 3);
            assert!(phase.p50_ms <= phase.max_ms);
        }
        // The whole connection is no faster than its TLS handshake alone.
        assert!(report.connection.max_ms >= report.tls_handshake.p50_ms);
    }

    #[test]
    fn every_vote_reaches_every_other_node_of_a_small_mesh() {
        let report = runtime().block_on(gossip(3, 4)).unwrap();
        assert_eq!((report.nodes, report.messages), (3, 4));
        assert_eq!(report.lost_deliveries, 0, "{report:?}");
        // Each message is received by the 2 other nodes.
        assert_eq!(report.delivery.count, 4 * 2);
        assert_eq!(report.all_nodes.count, 4);
    }

    #[test]
    fn a_link_moves_every_byte_in_plaintext_and_over_tls() {
        let report = runtime().block_on(link(1 << 20, 2, 2)).unwrap();
        assert_eq!(
            (
                report.runs,
                report.plaintext_mib_s.len(),
                report.tls_mib_s.len()
            ),
            (2, 2, 2)
        );
        assert!(report.plaintext_median_mib_s > 0.0 && report.tls_median_mib_s > 0.0);
        assert!(
            report.cipher_suite.contains("TLS13"),
            "{}",
            report.cipher_suite
        );
        assert_eq!(report.https_handshake.count, 2);
        let ratio = report.tls_median_mib_s / report.plaintext_median_mib_s;
        assert!((report.tls_over_plaintext - ratio).abs() < 1e-9);
    }

    #[test]
    fn a_socket_address_comes_from_an_ip4_tcp_multiaddr_only() {
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(socket_of(&address), Some("127.0.0.1:4001".parse().unwrap()));
        let no_port: Multiaddr = "/ip4/127.0.0.1".parse().unwrap();
        assert_eq!(socket_of(&no_port), None);
    }
}
