//! The DNS seeder (`blyan-node seeder`): crawls the network over libp2p (identify and Kademlia
//! from the bootstrap peers outwards), health-checks every node it found with a real P2P
//! handshake (TCP, TLS 1.3 with the node's certificate checked against its peer id, yamux), and
//! answers DNS for its domain with the healthy nodes only:
//!
//! - `A` / `AAAA <domain>`: their IP addresses;
//! - `TXT _dnsaddr.<domain>`: `dnsaddr=/ip4/<ip>/tcp/<port>/p2p/<peer id>` per node, which is
//!   what a node's `/dnsaddr/<domain>` bootstrap entry (`p2p.bootstrap_dns`) resolves.
//!
//! A node that stops answering is left out of the answers from the next health round (one
//! `health_interval`). Names outside the domain are refused; other names in it do not exist.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::Metadata;
pub use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, TXT};
pub use hickory_server::proto::rr::RecordType;
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, kad, tcp, tls, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::Semaphore;

use crate::p2p::probe;

/// The Kademlia and identify protocols the node speaks (see `p2p`).
const KAD_PROTOCOL: &str = "/blyan/kad/1.0.0";
/// Most nodes the seeder remembers.
const MAX_KNOWN: usize = 10_000;
/// Addresses kept per node.
const MAX_ADDRESSES: usize = 4;
/// Health checks in flight at once.
const CONCURRENT_CHECKS: usize = 32;
/// A node that failed this many rounds in a row is forgotten (until the crawl finds it again).
const FORGET_AFTER_FAILURES: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum SeederError {
    #[error("seeder --domain {0:?}: not a domain name")]
    Domain(String),
    #[error("seeder --listen {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("seeder --bootstrap: {0}")]
    Bootstrap(String),
    #[error("seeder p2p: {0}")]
    P2p(String),
}

#[derive(Clone, Debug)]
pub struct SeederConfig {
    /// The domain answered for, e.g. `seed.example.org`.
    pub domain: String,
    /// UDP and TCP address of the DNS server.
    pub listen: SocketAddr,
    /// Where the crawl starts: `/ip4/../tcp/../p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Every node found is checked this often; answers hold the nodes whose last check passed.
    pub health_interval: Duration,
    /// A new Kademlia walk this often.
    pub crawl_interval: Duration,
    /// Time to live of the answers, in seconds (short: the set changes).
    pub ttl: u32,
    /// Most nodes per answer.
    pub max_answers: usize,
}

impl Default for SeederConfig {
    fn default() -> Self {
        SeederConfig {
            domain: "seed.blyan.local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 5353)),
            bootstrap: Vec::new(),
            health_interval: Duration::from_secs(10),
            crawl_interval: Duration::from_secs(30),
            ttl: 30,
            max_answers: 16,
        }
    }
}

/// What the seeder knows about one node.
#[derive(Clone, Debug)]
struct Known {
    addresses: Vec<SocketAddr>,
    /// The address its last health check passed on.
    healthy: Option<SocketAddr>,
    failures: u32,
    last_ok: Option<Instant>,
}

/// The nodes found and their health; shared by the crawler, the checker and the DNS handler.
#[derive(Default)]
pub struct SeedTable {
    known: HashMap<PeerId, Known>,
}

/// A healthy node as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthy {
    pub peer: PeerId,
    pub address: SocketAddr,
}

impl SeedTable {
    /// Adds addresses found for `peer` (TCP over IPv4/IPv6 only; relayed, unspecified and port
    /// 0 addresses are skipped).
    fn record(&mut self, peer: PeerId, addresses: impl IntoIterator<Item = Multiaddr>) {
        let found: Vec<SocketAddr> = addresses
            .into_iter()
            .filter_map(|a| tcp_socket(&a))
            .collect();
        if found.is_empty() || (self.known.len() >= MAX_KNOWN && !self.known.contains_key(&peer)) {
            return;
        }
        let entry = self.known.entry(peer).or_insert_with(|| Known {
            addresses: Vec::new(),
            healthy: None,
            failures: 0,
            last_ok: None,
        });
        for address in found {
            if !entry.addresses.contains(&address) {
                entry.addresses.insert(0, address);
            }
        }
        entry.addresses.truncate(MAX_ADDRESSES);
    }

    /// The nodes whose last health check passed, the most recently confirmed first.
    pub fn healthy(&self) -> Vec<Healthy> {
        let mut nodes: Vec<(Instant, Healthy)> = self
            .known
            .iter()
            .filter_map(|(peer, known)| {
                Some((
                    known.last_ok?,
                    Healthy {
                        peer: *peer,
                        address: known.healthy?,
                    },
                ))
            })
            .collect();
        nodes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.peer.cmp(&b.1.peer)));
        nodes.into_iter().map(|(_, node)| node).collect()
    }

    pub fn known(&self) -> usize {
        self.known.len()
    }
}

/// `/ip4/<ip>/tcp/<port>` (with or without `/p2p/..`) as a socket address.
fn tcp_socket(address: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = address.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let port = match parts.next()? {
        Protocol::Tcp(port) => port,
        _ => return None,
    };
    for rest in parts {
        match rest {
            Protocol::P2p(_) => {}
            _ => return None,
        }
    }
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// The `dnsaddr=` value of a healthy node.
pub fn dnsaddr_value(node: &Healthy) -> String {
    let ip = match node.address.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    format!("dnsaddr={ip}/tcp/{}/p2p/{}", node.address.port(), node.peer)
}

/// Answers DNS queries from the table.
struct Handler {
    origin: LowerName,
    dnsaddr: LowerName,
    origin_name: Name,
    dnsaddr_name: Name,
    table: Arc<RwLock<SeedTable>>,
    ttl: u32,
    max_answers: usize,
}

impl Handler {
    fn records(&self, name: &LowerName, kind: RecordType) -> Result<Vec<Record>, ResponseCode> {
        if !self.origin.zone_of(name) {
            return Err(ResponseCode::Refused);
        }
        let healthy = self
            .table
            .read()
            .expect("seed table lock poisoned")
            .healthy();
        let healthy = healthy.iter().take(self.max_answers);
        if *name == self.origin {
            let mut seen = std::collections::HashSet::new();
            let records = healthy
                // Several nodes may share an IP (one host): one record per address.
                .filter(|node| seen.insert(node.address.ip()))
                .filter_map(|node| {
                    let rdata = match (node.address.ip(), kind) {
                        (IpAddr::V4(ip), RecordType::A | RecordType::ANY) => RData::A(A(ip)),
                        (IpAddr::V6(ip), RecordType::AAAA | RecordType::ANY) => {
                            RData::AAAA(AAAA(ip))
                        }
                        _ => return None,
                    };
                    Some(Record::from_rdata(
                        self.origin_name.clone(),
                        self.ttl,
                        rdata,
                    ))
                })
                .collect();
            return Ok(records);
        }
        if *name == self.dnsaddr {
            if !matches!(kind, RecordType::TXT | RecordType::ANY) {
                return Ok(Vec::new());
            }
            return Ok(healthy
                .map(|node| {
                    Record::from_rdata(
                        self.dnsaddr_name.clone(),
                        self.ttl,
                        RData::TXT(TXT::new(vec![dnsaddr_value(node)])),
                    )
                })
                .collect());
        }
        Err(ResponseCode::NXDomain)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let outcome = match request.request_info() {
            Ok(info) => self.records(info.query.name(), info.query.query_type()),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let sent = match outcome {
            Ok(records) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                response
                    .send_response(builder.build(metadata, records.iter(), [], [], []))
                    .await
            }
            Err(code) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = code == ResponseCode::NXDomain;
                metadata.response_code = code;
                response
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "seeder: answer not sent");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header {
                    metadata,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// A running seeder.
pub struct Seeder {
    pub table: Arc<RwLock<SeedTable>>,
    /// The DNS address actually bound (UDP and TCP).
    pub dns_address: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: hickory_server::Server<Handler>,
}

impl Seeder {
    /// Stops crawling, checking and answering.
    pub async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.server.shutdown_gracefully().await;
    }

    /// Runs until the server's sockets fail (normally: until the process is stopped).
    pub async fn wait(mut self) {
        let _ = self.server.block_until_done().await;
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the DNS server, the crawler and the health checker.
pub async fn start(config: SeederConfig) -> Result<Seeder, SeederError> {
    if config.bootstrap.is_empty() {
        return Err(SeederError::Bootstrap(
            "at least one node to start the crawl from".into(),
        ));
    }
    let table = Arc::new(RwLock::new(SeedTable::default()));
    let handler = Handler::new(
        &config.domain,
        table.clone(),
        config.ttl,
        config.max_answers,
    )?;
    let (server, dns_address) = serve(handler, config.listen).await?;
    let crawler = crawl(config.clone(), table.clone())?;
    let checker = tokio::spawn(check_health(config.health_interval, table.clone()));
    tracing::info!(
        domain = %config.domain,
        dns = %dns_address,
        bootstrap = config.bootstrap.len(),
        "seeder started"
    );
    Ok(Seeder {
        table,
        dns_address,
        tasks: vec![crawler, checker],
        server,
    })
}

impl Handler {
    fn new(
        domain: &str,
        table: Arc<RwLock<SeedTable>>,
        ttl: u32,
        max_answers: usize,
    ) -> Result<Handler, SeederError> {
        let mut origin_name = Name::from_str(domain)
            .ok()
            .filter(|name| name.num_labels() >= 1)
            .ok_or_else(|| SeederError::Domain(domain.to_string()))?;
        origin_name.set_fqdn(true);
        let dnsaddr_name = Name::from_str("_dnsaddr")
            .and_then(|label| label.append_domain(&origin_name))
            .map_err(|_| SeederError::Domain(domain.to_string()))?;
        Ok(Handler {
            origin: LowerName::from(origin_name.clone()),
            dnsaddr: LowerName::from(dnsaddr_name.clone()),
            origin_name,
            dnsaddr_name,
            table,
            ttl,
            max_answers: max_answers.max(1),
        })
    }
}

/// Answers DNS on `listen`, UDP and TCP on the same port: an answer too long for a UDP
/// datagram (512 bytes without EDNS) goes out truncated with TC set, and resolvers ask again
/// over TCP for the whole of it.
async fn serve(
    handler: Handler,
    listen: SocketAddr,
) -> Result<(hickory_server::Server<Handler>, SocketAddr), SeederError> {
    let listen_error = |reason: std::io::Error| SeederError::Listen {
        address: listen,
        reason: reason.to_string(),
    };
    let udp = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(listen_error)?;
    let dns_address = udp.local_addr().map_err(listen_error)?;
    let tcp = tokio::net::TcpListener::bind(dns_address)
        .await
        .map_err(listen_error)?;
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    Ok((server, dns_address))
}

#[derive(NetworkBehaviour)]
struct CrawlBehaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Walks the network: dials the bootstrap peers, then asks Kademlia for the peers closest to a
/// random id every `crawl_interval`, recording every node and address it hears of.
fn crawl(
    config: SeederConfig,
    table: Arc<RwLock<SeedTable>>,
) -> Result<tokio::task::JoinHandle<()>, SeederError> {
    let key = identity::Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            tls::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SeederError::P2p(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            kad_config.set_query_timeout(Duration::from_secs(20));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            // A crawler answers nobody's queries.
            kad.set_mode(Some(kad::Mode::Client));
            CrawlBehaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new("/blyan/1.0.0".into(), key.public())
                        .with_agent_version(format!("blyan-seeder/{}", crate::VERSION)),
                ),
                kad,
            }
        })
        .map_err(|e| SeederError::P2p(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut bootstrap = Vec::new();
    for address in &config.bootstrap {
        let peer = crate::p2p::peer_of(address).ok_or_else(|| {
            SeederError::Bootstrap(format!("{address} ends without /p2p/<peer id>"))
        })?;
        swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, address.clone());
        table
            .write()
            .expect("seed table lock poisoned")
            .record(peer, [address.clone()]);
        bootstrap.push((peer, address.clone()));
    }
    let interval = config.crawl_interval;
    Ok(tokio::spawn(async move {
        let mut walk = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = walk.tick() => {
                    for (peer, address) in &bootstrap {
                        if !swarm.is_connected(peer) {
                            let _ = swarm.dial(address.clone());
                        }
                    }
                    swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(CrawlBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                        if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) {
                            for address in &info.listen_addrs {
                                swarm.behaviour_mut().kad.add_address(&peer_id, address.clone());
                            }
                        }
                        table.write().expect("seed table lock poisoned").record(peer_id, info.listen_addrs);
                    }
                    SwarmEvent::Behaviour(CrawlBehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, addresses, .. })) => {
                        table.write().expect("seed table lock poisoned").record(peer, addresses.into_vec());
                    }
                    SwarmEvent::Behaviour(CrawlBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                        result: kad::QueryResult::GetClosestPeers(Ok(found)), ..
                    })) => {
                        let mut table = table.write().expect("seed table lock poisoned");
                        for peer in found.peers {
                            table.record(peer.peer_id, peer.addrs);
                        }
                    }
                    _ => {}
                }
            }
        }
    }))
}

/// Every `interval`, checks each known node: a TLS 1.3 handshake whose certificate must carry
/// the node's peer id, then yamux (the node accepted us). Its first address that passes is the
/// one answered; a node that passes on none is left out until it passes again.
async fn check_health(interval: Duration, table: Arc<RwLock<SeedTable>>) {
    let key = identity::Keypair::generate_ed25519();
    let limit = Arc::new(Semaphore::new(CONCURRENT_CHECKS));
    // A check gets `timeout`, and the next one starts `period` after this one did: a node that
    // dies right after a passing check fails the next one at most `period + timeout` =
    // `interval` later (a vanished host does not refuse, it times out).
    let timeout = (interval / 2).min(Duration::from_secs(3));
    let period = interval
        .saturating_sub(timeout)
        .max(Duration::from_millis(50));
    let mut round = tokio::time::interval(period);
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        round.tick().await;
        let nodes: Vec<(PeerId, Vec<SocketAddr>)> = table
            .read()
            .expect("seed table lock poisoned")
            .known
            .iter()
            .map(|(peer, known)| (*peer, known.addresses.clone()))
            .collect();
        let mut checks: futures::stream::FuturesUnordered<_> = nodes
            .into_iter()
            .map(|(peer, addresses)| {
                let key = key.clone();
                let limit = limit.clone();
                async move {
                    let _permit = limit.acquire().await;
                    // Every address at once; the first handshake to pass makes it healthy.
                    let attempts: Vec<_> = addresses
                        .into_iter()
                        .map(|address| {
                            let config = probe::client_config(&key, Some(peer));
                            Box::pin(async move {
                                let (stream, seen, _) =
                                    probe::dial_tls(address, config).await.map_err(|_| ())?;
                                if seen != peer {
                                    return Err(());
                                }
                                probe::negotiate_yamux(stream).await.map_err(|_| ())?;
                                Ok::<_, ()>(address)
                            })
                        })
                        .collect();
                    if attempts.is_empty() {
                        return (peer, None);
                    }
                    let healthy =
                        tokio::time::timeout(timeout, futures::future::select_ok(attempts))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|(address, _)| address);
                    (peer, healthy)
                }
            })
            .collect();
        // Each verdict is applied as it comes: a dead node leaves the answers without
        // waiting for the slowest check of the round.
        while let Some((peer, healthy)) = checks.next().await {
            let mut table = table.write().expect("seed table lock poisoned");
            if let Some(known) = table.known.get_mut(&peer) {
                known.healthy = healthy;
                if healthy.is_some() {
                    known.failures = 0;
                    known.last_ok = Some(Instant::now());
                } else {
                    known.failures += 1;
                }
            }
        }
        let mut table = table.write().expect("seed table lock poisoned");
        table
            .known
            .retain(|_, known| known.failures < FORGET_AFTER_FAILURES);
        tracing::debug!(
            known = table.known.len(),
            healthy = table.healthy().len(),
            "seeder health round"
        );
    }
}

/// One DNS answer as [`query`] reads it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub code: ResponseCode,
    /// A/AAAA addresses, or TXT strings.
    pub values: Vec<String>,
    /// TC: the answer did not fit a UDP datagram; `values` holds what did (ask over TCP).
    pub truncated: bool,
    pub elapsed: Duration,
}

/// How [`query`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Asks `server` for `name`'s `kind` records over `transport`: a plain DNS client for tests
/// and `blyan-node seeder-query`, no cache in between, no retry over TCP (TC is reported).
pub async fn query(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    transport: Transport,
    timeout: Duration,
) -> std::io::Result<Answer> {
    use hickory_server::proto::op::{Message, Query};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let name = Name::from_str(name).map_err(|e| invalid(e.to_string()))?;
    let mut message = Message::query();
    message.metadata.id = rand::random();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name, kind));
    let bytes = message.to_vec().map_err(|e| invalid(e.to_string()))?;
    let start = Instant::now();
    let exchange = async {
        match transport {
            Transport::Udp => {
                let bind: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = tokio::net::UdpSocket::bind(bind).await?;
                socket.send_to(&bytes, server).await?;
                let mut buffer = vec![0u8; 4096];
                let received = socket.recv(&mut buffer).await?;
                buffer.truncate(received);
                Ok::<_, std::io::Error>(buffer)
            }
            Transport::Tcp => {
                // RFC 1035 4.2.2: each message preceded by its length, two bytes.
                let mut stream = tokio::net::TcpStream::connect(server).await?;
                stream.set_nodelay(true)?;
                let length =
                    u16::try_from(bytes.len()).map_err(|_| invalid("query too long".into()))?;
                let mut framed = length.to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                stream.write_all(&framed).await?;
                let length = stream.read_u16().await?;
                let mut buffer = vec![0u8; usize::from(length)];
                stream.read_exact(&mut buffer).await?;
                Ok(buffer)
            }
        }
    };
    let buffer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS answer"))??;
    let elapsed = start.elapsed();
    let answer = Message::from_vec(&buffer).map_err(|e| invalid(e.to_string()))?;
    if answer.metadata.id != message.metadata.id {
        return Err(invalid("answer to another query".into()));
    }
    let values = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    Ok(Answer {
        code: answer.metadata.response_code,
        values,
        truncated: answer.metadata.truncation,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_addresses_with_a_real_ip_and_port_are_kept() {
        let ok: Multiaddr = "/ip4/10.0.0.2/tcp/26656".parse().unwrap();
        assert_eq!(tcp_socket(&ok), Some("10.0.0.2:26656".parse().unwrap()));
        let relayed = format!(
            "/ip4/10.0.0.3/tcp/26656/p2p/{}/p2p-circuit",
            PeerId::random()
        );
        for skipped in [
            "/ip4/0.0.0.0/tcp/26656",
            "/ip4/10.0.0.2/tcp/0",
            "/ip4/10.0.0.2/udp/26656/quic-v1",
            "/dns4/example.org/tcp/26656",
            relayed.as_str(),
        ] {
            let address: Multiaddr = skipped.parse().unwrap();
            assert_eq!(tcp_socket(&address), None, "{skipped}");
        }
    }

    #[test]
    fn answers_hold_only_nodes_whose_last_check_passed() {
        let mut table = SeedTable::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        table.record(a, ["/ip4/10.0.0.2/tcp/26656".parse().unwrap()]);
        table.record(b, ["/ip4/10.0.0.3/tcp/26656".parse().unwrap()]);
        assert!(
            table.healthy().is_empty(),
            "unchecked nodes are not answered"
        );
        let known = table.known.get_mut(&a).unwrap();
        known.healthy = Some("10.0.0.2:26656".parse().unwrap());
        known.last_ok = Some(Instant::now());
        assert_eq!(
            table.healthy(),
            vec![Healthy {
                peer: a,
                address: "10.0.0.2:26656".parse().unwrap()
            }]
        );
        let value = dnsaddr_value(&table.healthy()[0]);
        assert_eq!(value, format!("dnsaddr=/ip4/10.0.0.2/tcp/26656/p2p/{a}"));
    }

    #[tokio::test]
    async fn a_txt_answer_too_long_for_udp_is_truncated_there_and_whole_over_tcp() {
        let table = Arc::new(RwLock::new(SeedTable::default()));
        let mut peers = Vec::new();
        {
            let mut table = table.write().unwrap();
            for host in 2..14u8 {
                let peer = PeerId::random();
                let address: SocketAddr = ([10, 0, 0, host], 26656).into();
                table.record(
                    peer,
                    [format!("/ip4/10.0.0.{host}/tcp/26656").parse().unwrap()],
                );
                let known = table.known.get_mut(&peer).unwrap();
                known.healthy = Some(address);
                known.last_ok = Some(Instant::now());
                peers.push(peer);
            }
        }
        let handler = Handler::new("seed.example.org", table, 30, 16).unwrap();
        let (server, address) = serve(handler, ([127, 0, 0, 1], 0).into()).await.unwrap();
        let name = "_dnsaddr.seed.example.org";
        let timeout = Duration::from_secs(5);
        let udp = query(address, name, RecordType::TXT, Transport::Udp, timeout)
            .await
            .unwrap();
        let tcp = query(address, name, RecordType::TXT, Transport::Tcp, timeout)
            .await
            .unwrap();
        // 12 records of ~100 bytes do not fit 512 bytes.
        assert!(udp.truncated, "{} records over UDP", udp.values.len());
        assert!(
            udp.values.len() < 12,
            "{} records over UDP",
            udp.values.len()
        );
        assert!(!tcp.truncated);
        assert_eq!(tcp.code, ResponseCode::NoError);
        let mut got: Vec<String> = tcp.values.clone();
        got.sort();
        let mut want: Vec<String> = table_values(&peers);
        want.sort();
        assert_eq!(got, want, "every healthy node over TCP");
        // A records are short: all twelve fit a datagram.
        let a = query(
            address,
            "seed.example.org",
            RecordType::A,
            Transport::Udp,
            timeout,
        )
        .await
        .unwrap();
        assert!(!a.truncated);
        assert_eq!(a.values.len(), 12);
        let mut server = server;
        let _ = server.shutdown_gracefully().await;
    }

    fn table_values(peers: &[PeerId]) -> Vec<String> {
        peers
            .iter()
            .enumerate()
            .map(|(k, peer)| format!("dnsaddr=/ip4/10.0.0.{}/tcp/26656/p2p/{peer}", k + 2))
            .collect()
    }
}
