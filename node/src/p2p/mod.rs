//! The libp2p swarm: TCP + TLS 1.3 (Noise only when asked) + yamux, QUIC behind a switch;
//! gossipsub for transactions, proposals and votes (the node validates every message and a
//! rejected one penalises its sender's score), request-response for block sync, identify,
//! Kademlia discovery (off in static mode), ping and connection limits.
//!
//! The swarm runs in its own task; the node talks to it through [`P2pHandle`] (commands) and a
//! stream of [`P2pEvent`]s.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use blyan_wire::sync::*;
use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers, BlockedPeers};
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, connection_limits, dcutr, identify, identity, kad, noise, ping, relay, tcp, tls, upnp,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use serde::Serialize;
use tokio::sync::mpsc;

pub mod access;
pub mod bench;
pub mod probe;

use crate::config::{P2pConfig, ReserveRelays};
use crate::metrics::{refuse, RefusedInputs};
use access::WatchedList;

/// Gossip topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Txs,
    Proposals,
    Votes,
}

/// How long gossipsub remembers a message id: a copy that comes back later than this is taken
/// for a new message, validated and forwarded again. It must be far longer than a message can
/// take to cross a loaded devnet: at 3 s (when re-sends needed the same bytes to be forgotten),
/// copies queued for more than 3 s on a busy host came back as new and were sent round again,
/// which loaded the host more: 20 debug-build nodes on 2 cores stalled at height 2 for 45 s.
/// A re-send is a new copy with its own id instead ([`P2pCommand::Republish`]).
pub const DUPLICATE_CACHE: Duration = Duration::from_secs(30);

/// How long gossipsub keeps a message for forwarding while the node validates it: a verdict
/// that comes later finds it gone ("Message not in cache. Ignoring forwarding") and the valid
/// message is never forwarded. gossipsub's default is 5 heartbeats (2.5 s at 500 ms).
pub const FORWARD_WINDOW: Duration = Duration::from_secs(8);

/// Every gossip payload ends with this many bytes: a copy tag, 0 for a message's first copy
/// (so the same payload published by two nodes is one message) and random for a re-send, so
/// that a re-send has a new message id (ids hash the whole payload).
pub const COPY_TAG_BYTES: usize = 8;

/// `data` as published: the payload, then its copy tag.
pub fn tagged(mut data: Vec<u8>, copy: u64) -> Vec<u8> {
    data.extend_from_slice(&copy.to_le_bytes());
    data
}

/// The payload of a gossip message, without its copy tag; `None` when it is too short to
/// carry one.
pub fn untagged(mut data: Vec<u8>) -> Option<Vec<u8>> {
    let len = data.len().checked_sub(COPY_TAG_BYTES)?;
    data.truncate(len);
    Some(data)
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Txs, Topic::Proposals, Topic::Votes];

    /// Version 2: payloads end with a copy tag ([`COPY_TAG_BYTES`]).
    fn name(self, chain_id: &str) -> String {
        let suffix = match self {
            Topic::Txs => "txs",
            Topic::Proposals => "proposals",
            Topic::Votes => "votes",
        };
        format!("/blyan/{chain_id}/{suffix}/2")
    }
}

/// A tile request from a peer, for the inference service to answer with
/// [`P2pCommand::RespondTile`].
#[derive(Debug)]
pub struct TileInbound {
    pub peer: PeerId,
    pub request: TileRequest,
    pub channel: ResponseChannel<TileResponse>,
}

/// Largest vote or transaction gossip message (a vote is 114 bytes, a transfer 154).
pub const MAX_VOTE_OR_TX_BYTES: usize = 1024;

/// Commands queued for the swarm task at most (votes, transactions and validation verdicts
/// come several per peer per height; at 100 validators a height's votes are a few hundred).
pub const COMMAND_QUEUE: usize = 8192;

/// The bounded queue of commands to the swarm task. A full queue refuses a command at once
/// instead of waiting: the node's event loop sends from synchronous code, and the swarm task
/// waits on the node's (bounded) event queue, so a sender that waited could deadlock the two.
/// What a refusal loses is re-sent by its owner (a vote on the next timeout, a sync request on
/// the next tick, a tile request by the requester's retry); refusals are counted in
/// `/net_info`'s `commands_refused`.
#[derive(Clone, Debug)]
pub struct P2pCommands {
    queue: mpsc::Sender<P2pCommand>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

/// Why [`P2pCommands::send`] did not queue a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandRefused {
    #[error("the P2P command queue is full ({0} commands waiting)")]
    Full(usize),
    #[error("the P2P task has stopped")]
    Stopped,
}

impl P2pCommands {
    /// A queue of `capacity` commands and the receiving end for the swarm task.
    pub fn bounded(capacity: usize) -> (P2pCommands, mpsc::Receiver<P2pCommand>) {
        let (queue, receiver) = mpsc::channel(capacity);
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        (P2pCommands { queue, refused }, receiver)
    }

    /// Queues `command` now, or refuses it (and counts the refusal) when the queue is full.
    pub fn send(&self, command: P2pCommand) -> Result<(), CommandRefused> {
        match self.queue.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let before = self
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if before.is_power_of_two() || before == 0 {
                    tracing::warn!(
                        refused = before + 1,
                        "P2P command queue full: command dropped"
                    );
                }
                Err(CommandRefused::Full(self.queue.max_capacity()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CommandRefused::Stopped),
        }
    }

    /// Commands refused because the queue was full, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("p2p transport: {0}")]
    Transport(String),
    #[error("p2p.listen {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("p2p: {0}")]
    Config(String),
}

/// What the swarm reports to the node.
#[derive(Debug)]
pub enum P2pEvent {
    Gossip {
        topic: Topic,
        source: PeerId,
        id: MessageId,
        data: Vec<u8>,
    },
    SyncRequest {
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    },
    SyncResponse {
        peer: PeerId,
        response: SyncResponse,
    },
    SyncFailed {
        peer: PeerId,
        reason: String,
    },
    Connected(PeerId),
    Disconnected(PeerId),
}

/// What the node asks the swarm to do.
#[derive(Debug)]
pub enum P2pCommand {
    /// Measure a fresh connection: drop any connection to the address's peer, dial the
    /// address, and report how long it took and whether it was (or became) direct.
    Probe {
        /// Addresses of one peer, tried in turn (e.g. through each of its relays).
        addresses: Vec<Multiaddr>,
        /// How long to wait for a relayed connection to be upgraded by hole punching.
        upgrade_wait: Duration,
        /// Give up on the whole probe after this.
        timeout: Duration,
        reply: tokio::sync::oneshot::Sender<ProbeOutcome>,
    },
    /// A message's first copy (copy tag 0).
    Publish(Topic, Vec<u8>),
    /// A new copy of a message already published (a random copy tag): a stalled validator's
    /// re-send, which peers that saw the first copy must still take.
    Republish(Topic, Vec<u8>),
    Validate {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Sync {
        peer: PeerId,
        request: SyncRequest,
    },
    Respond {
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    /// Ask `peer` for a manifest or tile; the answer (or why none came) goes to `reply`.
    FetchTile {
        peer: PeerId,
        request: TileRequest,
        reply: tokio::sync::oneshot::Sender<Result<TileResponse, String>>,
    },
    RespondTile {
        channel: ResponseChannel<TileResponse>,
        response: TileResponse,
    },
    /// Re-read the allowlist and revocation files now (SIGHUP), changed or not.
    ReloadAccess,
}

/// A connected peer, for `/net_info`.
#[derive(Clone, Debug, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// The remote address of the connection in use (a direct one when there is one).
    pub address: String,
    pub direction: &'static str,
    /// "direct", or "relayed" (through a circuit relay; hole punching may upgrade it).
    pub path: &'static str,
    /// The first connection was relayed and a direct one was made by hole punching.
    pub hole_punched: bool,
    pub connected_ms: u64,
    pub gossip_score: f64,
    pub rtt_ms: Option<f64>,
}

/// What [`P2pCommand::Probe`] found.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ProbeOutcome {
    pub peer_id: String,
    pub connected: bool,
    /// From the dial to the first connection (relayed or direct).
    pub connect_ms: Option<f64>,
    /// The first connection went through a relay.
    pub relayed: Option<bool>,
    /// From the dial to a direct connection (at once, or after hole punching).
    pub direct_ms: Option<f64>,
    pub error: Option<String>,
}

/// A probe in progress.
struct Probe {
    peer: PeerId,
    addresses: Vec<Multiaddr>,
    /// When the dial went out (`None`: waiting for the old connections to close).
    dialled: Option<Instant>,
    /// A dial is in flight (cleared when it fails; the probe dials again until its timeout).
    pending: bool,
    dials: u32,
    last_dial: Option<Instant>,
    started: Instant,
    upgrade_wait: Duration,
    timeout: Duration,
    outcome: ProbeOutcome,
    reply: tokio::sync::oneshot::Sender<ProbeOutcome>,
}

/// Whether this node can be dialled from outside, as AutoNAT v2 found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Not tested yet (or AutoNAT is off, as in static mode).
    #[default]
    Unknown,
    /// A peer dialled one of our addresses back.
    Public,
    /// Every dial-back failed: we are behind a NAT or firewall.
    Private,
}

/// NAT traversal as `/net_info` reports it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NatInfo {
    pub reachability: Reachability,
    /// AutoNAT dial-back tests run, and how many failed.
    pub autonat_tests: u64,
    pub autonat_failures: u64,
    /// Our addresses as peers see them (identify), most recent first.
    pub observed_addresses: Vec<String>,
    /// Addresses through relays that hold a reservation for us.
    pub relayed_addresses: Vec<String>,
    /// Relays known (configured or found among peers) and those holding our reservation.
    pub relays_known: Vec<String>,
    pub relays_reserved: Vec<String>,
    /// This node serves circuit relay v2; circuits it relays now.
    pub relay_server: bool,
    pub relay_circuits: u64,
    /// Hole punches (DCUtR) that upgraded a relayed connection, and those that failed.
    pub hole_punch_successes: u64,
    pub hole_punch_failures: u64,
    /// UPnP: off, or what the gateway said.
    pub upnp: String,
    pub upnp_addresses: Vec<String>,
}

/// What the swarm knows about the network, refreshed as it changes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NetInfo {
    pub peer_id: String,
    pub listen_addresses: Vec<String>,
    pub external_addresses: Vec<String>,
    pub static_mode: bool,
    pub security: &'static str,
    pub peers: Vec<PeerInfo>,
    pub invalid_messages: u64,
    /// Peers allowed to connect (`None`: anyone not revoked).
    pub allowlist: Option<usize>,
    /// Peers refused and cut off.
    pub revoked: usize,
    /// Connections refused because the peer is not on the allowlist or is revoked.
    pub refused_connections: u64,
    /// Commands to the swarm task dropped because its queue was full ([`COMMAND_QUEUE`]).
    pub commands_refused: u64,
    pub nat: NatInfo,
}

/// The node's side of the swarm.
#[derive(Clone)]
pub struct P2pHandle {
    pub commands: P2pCommands,
    pub info: Arc<Mutex<NetInfo>>,
    pub local_peer_id: PeerId,
    /// Tile requests from peers; taken once by the inference service (requests arriving while
    /// nobody took it are answered "unavailable").
    pub tile_requests: Arc<Mutex<Option<mpsc::Receiver<TileInbound>>>>,
    /// gossipsub's metrics (`blyan_gossipsub_*`), for the node's /metrics.
    pub gossip_metrics: Arc<prometheus_client::registry::Registry>,
}

impl P2pHandle {
    /// The peers connected now.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        let info = self.info.lock().expect("net info lock poisoned");
        info.peers
            .iter()
            .filter_map(|peer| peer.peer_id.parse().ok())
            .collect()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Only listed peers (when an allowlist is configured).
    allowed: Toggle<allow_block_list::Behaviour<AllowedPeers>>,
    /// Revoked peers: refused, and cut off when added.
    revoked: allow_block_list::Behaviour<BlockedPeers>,
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    tiles: request_response::cbor::Behaviour<TileRequest, TileResponse>,
    identify: identify::Behaviour,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    ping: ping::Behaviour,
    /// Circuit relay v2 client: reservations on relays, and dialling peers through them.
    relay_client: relay::client::Behaviour,
    /// Circuit relay v2 server (`p2p.relay_server`), with its limits.
    relay: Toggle<relay::Behaviour>,
    /// Hole punching: upgrades a relayed connection to a direct one.
    dcutr: dcutr::Behaviour,
    /// AutoNAT v2: peers dial our candidate addresses back (client), and we do it for them
    /// (server).
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// UPnP IGD port mapping on the gateway (`p2p.upnp`).
    upnp: Toggle<upnp::tokio::Behaviour>,
}

fn message_id(message: &gossipsub::Message) -> MessageId {
    // Content-addressed: the same payload re-published by another node is one message.
    let digest = crate::block::Hash::digest(&message.data);
    MessageId::from(&digest.0[..20])
}

fn behaviour(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    config: &P2pConfig,
    chain_id: &str,
    gossip_metrics: &mut prometheus_client::registry::Registry,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let max = config.max_message_bytes as usize;
    let topic_hash = |topic: Topic| IdentTopic::new(topic.name(chain_id)).hash();
    let mesh_n = config.gossip_mesh_n as usize;
    let heartbeat = Duration::from_millis(config.gossip_heartbeat_ms);
    // At least gossipsub's default of 5, and never under history_gossip (3).
    let forward_heartbeats =
        (FORWARD_WINDOW.as_millis() / heartbeat.as_millis().max(1)).clamp(5, 1000) as usize;
    let gossip_config = gossipsub::ConfigBuilder::default()
        // Votes, proposals and transactions carry their own signatures (validator or account
        // keys), checked by the node before a message is forwarded; a second libp2p signature
        // per message would cost a sign per publish and a verify per copy received.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        // Frames up to twice the limit are decoded so that a message over its topic's limit is
        // an invalid message (scored against the sender), not just a dropped frame.
        .max_transmit_size(max * 2)
        .max_transmit_size_for_topic(max + COPY_TAG_BYTES, topic_hash(Topic::Proposals))
        .max_transmit_size_for_topic(
            MAX_VOTE_OR_TX_BYTES + COPY_TAG_BYTES,
            topic_hash(Topic::Votes),
        )
        .max_transmit_size_for_topic(
            MAX_VOTE_OR_TX_BYTES + COPY_TAG_BYTES,
            topic_hash(Topic::Txs),
        )
        .heartbeat_interval(heartbeat)
        .duplicate_cache_time(DUPLICATE_CACHE)
        .history_length(forward_heartbeats)
        .mesh_n_low((mesh_n * 2 / 3).max(1))
        .mesh_n(mesh_n)
        .mesh_n_high(mesh_n * 2)
        .mesh_outbound_min((mesh_n / 3).clamp(1, 2))
        .gossip_lazy(mesh_n)
        .flood_publish(true)
        .build()
        .map_err(|error| format!("gossipsub config: {error}"))?;
    // gossipsub's own counters (messages received per topic with and without duplicates, mesh
    // sizes, IWANT/IDONTWANT, queues) go into the node's /metrics as `blyan_gossipsub_*`.
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)?
            .with_metrics(gossip_metrics, Default::default());
    // No penalty for many peers behind one IP: devnets run tens of nodes on one address, and
    // the default (-5 per peer beyond 10, squared) drives every peer negative, which keeps them
    // all out of the mesh and stops forwarding.
    let mut score = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    for topic in Topic::ALL {
        // An invalid message (bad signature, malformed, oversized) costs the sender dearly.
        let params = gossipsub::TopicScoreParams {
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.9,
            first_message_deliveries_weight: 0.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            time_in_mesh_weight: 0.0,
            ..Default::default()
        };
        score
            .topics
            .insert(IdentTopic::new(topic.name(chain_id)).hash(), params);
    }
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -100.0,
        publish_threshold: -500.0,
        graylist_threshold: -1000.0,
        ..Default::default()
    };
    gossipsub.with_peer_score(score, thresholds)?;
    for topic in Topic::ALL {
        gossipsub.subscribe(&IdentTopic::new(topic.name(chain_id)))?;
    }
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(max as u64 * MAX_SYNC_BLOCKS as u64);
    let sync = request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
    );
    let tiles = request_response::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(MAX_REQUEST_BYTES)
            .set_response_size_maximum(MAX_TILE_RESPONSE_BYTES),
        [(StreamProtocol::new(TILES_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
    );
    let identify = identify::Behaviour::new(
        identify::Config::new("/blyan/1.0.0".into(), key.public())
            .with_agent_version(format!("blyan-node/{}", crate::VERSION))
            .with_hide_listen_addrs(config.static_mode)
            // Static mode dials only the configured addresses (a devnet routes links through
            // its fault proxy): no cache of peers' advertised addresses for dials by peer id
            // (a sync request to a peer not connected), which went around a partition.
            .with_cache_size(if config.static_mode { 0 } else { 100 }),
    );
    let kad = (!config.static_mode).then(|| {
        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(StreamProtocol::new("/blyan/kad/1.0.0"));
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Answer peers' (and seeders') queries from the start; a node that learns it is
        // private turns to client mode (see `update_reachability`).
        kad.set_mode(Some(kad::Mode::Server));
        kad
    });
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(config.max_connections));
    let peer_id = key.public().to_peer_id();
    let relay = config.relay_server.then(|| {
        let per_minute =
            std::num::NonZeroU32::new(config.relay_circuits_per_minute.max(1)).expect("at least 1");
        let per_ip =
            std::num::NonZeroU32::new(config.relay_circuits_per_minute.max(1).saturating_mul(2))
                .expect("at least 2");
        let mut relay_config = relay::Config {
            max_reservations: config.relay_max_reservations as usize,
            max_circuits: config.relay_max_circuits as usize,
            max_circuits_per_peer: (config.relay_max_circuits as usize).min(16),
            max_circuit_duration: Duration::from_secs(config.relay_max_circuit_duration_s),
            max_circuit_bytes: config.relay_max_circuit_bytes,
            // libp2p's default reservation limits stay; the circuit limits are ours.
            circuit_src_rate_limiters: Vec::new(),
            ..Default::default()
        };
        relay_config = relay_config
            .circuit_src_per_peer(per_minute, Duration::from_secs(60))
            .circuit_src_per_ip(per_ip, Duration::from_secs(60));
        relay::Behaviour::new(peer_id, relay_config)
    });
    let autonat = config.autonat && !config.static_mode;
    Ok(Behaviour {
        relay_client,
        relay: Toggle::from(relay),
        dcutr: dcutr::Behaviour::new(peer_id),
        // A probe every 5 s until a candidate address is confirmed or refused.
        autonat_client: Toggle::from(autonat.then(autonat::v2::client::Behaviour::default)),
        autonat_server: Toggle::from(autonat.then(autonat::v2::server::Behaviour::default)),
        upnp: Toggle::from(config.upnp.then(upnp::tokio::Behaviour::default)),
        allowed: Toggle::from(
            (!config.allowlist_file.is_empty()).then(allow_block_list::Behaviour::default),
        ),
        revoked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        gossipsub,
        sync,
        tiles,
        identify,
        kad: Toggle::from(kad),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
    })
}

fn transport_error(error: impl std::fmt::Display) -> P2pError {
    P2pError::Transport(error.to_string())
}

/// The system's resolver settings with caching capped: under a container engine a peer's name
/// does not resolve until its task is running and healthy, and resolves to a new address after
/// the task is replaced (Docker's DNS answers with a 600 s TTL).
fn dns_config(
    server: &str,
) -> Result<(libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts), P2pError> {
    let (config, mut options) = if server.is_empty() {
        hickory_resolver::system_conf::read_system_conf().map_err(transport_error)?
    } else {
        // `p2p.dns_server`: one server (a seeder) over UDP, then TCP for long answers.
        let address: std::net::SocketAddr = server
            .parse()
            .map_err(|_| P2pError::Config(format!("p2p.dns_server {server:?} is not ip:port")))?;
        let mut name_server = hickory_resolver::config::NameServerConfig::udp_and_tcp(address.ip());
        for connection in &mut name_server.connections {
            connection.port = address.port();
        }
        let config = libp2p::dns::ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
        (config, libp2p::dns::ResolverOpts::default())
    };
    options.negative_max_ttl = Some(Duration::from_secs(1));
    options.positive_max_ttl = Some(Duration::from_secs(5));
    Ok((config, options))
}

fn build_swarm(
    keypair: identity::Keypair,
    config: &P2pConfig,
    chain_id: &str,
    gossip_metrics: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, P2pError> {
    let tcp_config = || tcp::Config::default().nodelay(true);
    let make = |key: &identity::Keypair, relay_client: relay::client::Behaviour| {
        behaviour(key, relay_client, config, chain_id, gossip_metrics)
    };
    let swarm_config =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let (dns, dns_options) = dns_config(&config.dns_server)?;
    // The builder's types differ per transport choice, so each arm spells its own prefix and
    // shares the rest.
    macro_rules! finish {
        ($stage:expr, $security:expr) => {
            $stage
                .with_dns_config(dns.clone(), dns_options.clone())
                .with_relay_client($security, yamux::Config::default)
                .map_err(transport_error)?
                .with_behaviour(make)
                .map_err(transport_error)?
                .with_swarm_config(swarm_config)
                .build()
        };
    }
    let tcp = tcp_config();
    let swarm = match (config.noise, config.quic) {
        (false, false) => finish!(
            builder
                .with_tcp(tcp, tls::Config::new, yamux::Config::default)
                .map_err(transport_error)?,
            tls::Config::new
        ),
        (false, true) => finish!(
            builder
                .with_tcp(tcp, tls::Config::new, yamux::Config::default)
                .map_err(transport_error)?
                .with_quic(),
            tls::Config::new
        ),
        (true, false) => finish!(
            builder
                .with_tcp(tcp, noise::Config::new, yamux::Config::default)
                .map_err(transport_error)?,
            noise::Config::new
        ),
        (true, true) => finish!(
            builder
                .with_tcp(tcp, noise::Config::new, yamux::Config::default)
                .map_err(transport_error)?
                .with_quic(),
            noise::Config::new
        ),
    };
    Ok(swarm)
}

/// The peer an address leads to: its last `/p2p/<id>` (a relayed address names the relay
/// first, then the peer behind it).
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address
        .iter()
        .filter_map(|part| match part {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .last()
}

/// The IPv4 addresses of our own interfaces in a listen address (not loopback or unspecified).
fn interface_ipv4(address: &Multiaddr) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
    address.iter().filter_map(|part| match part {
        Protocol::Ip4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    })
}

fn is_relayed(address: &Multiaddr) -> bool {
    address
        .iter()
        .any(|part| matches!(part, Protocol::P2pCircuit))
}

fn parse_addresses(field: &str, items: &[String]) -> Result<Vec<Multiaddr>, P2pError> {
    items
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse()
                .map_err(|error| P2pError::Config(format!("{field}[{index}] {text:?}: {error}")))
        })
        .collect()
}

/// Starts the swarm: listens, dials the bootstrap peers and runs until the handle's command
/// channel closes. Returns the handle, the event stream and the addresses actually bound.
pub async fn spawn(
    keypair: identity::Keypair,
    config: &P2pConfig,
    chain_id: &str,
) -> Result<(P2pHandle, mpsc::Receiver<P2pEvent>, Vec<Multiaddr>), P2pError> {
    spawn_counted(keypair, config, chain_id, RefusedInputs::default()).await
}

/// [`spawn`], counting refused connections in `refused` (the node's metrics).
pub async fn spawn_counted(
    keypair: identity::Keypair,
    config: &P2pConfig,
    chain_id: &str,
    refused: RefusedInputs,
) -> Result<(P2pHandle, mpsc::Receiver<P2pEvent>, Vec<Multiaddr>), P2pError> {
    let local_peer_id = keypair.public().to_peer_id();
    let mut gossip_metrics = prometheus_client::registry::Registry::with_prefix("blyan_gossipsub");
    let mut swarm = build_swarm(keypair, config, chain_id, &mut gossip_metrics)?;
    // The lists are in force before the first listener or dial: a file that does not load
    // stops the start.
    let mut allowlist = (!config.allowlist_file.is_empty())
        .then(|| WatchedList::new(config.allowlist_file.clone().into()));
    let mut revoked = (!config.revoked_file.is_empty())
        .then(|| WatchedList::new(config.revoked_file.clone().into()));
    for (field, list) in [
        ("p2p.allowlist_file", &mut allowlist),
        ("p2p.revoked_file", &mut revoked),
    ] {
        if let Some(list) = list {
            let peers = list
                .poll(true)
                .unwrap_or_else(|| Ok(Default::default()))
                .map_err(|error| P2pError::Config(format!("{field}: {error}")))?;
            let behaviour = swarm.behaviour_mut();
            for peer in peers {
                if field == "p2p.allowlist_file" {
                    if let Some(allowed) = behaviour.allowed.as_mut() {
                        allowed.allow_peer(peer);
                    }
                } else {
                    behaviour.revoked.block_peer(peer);
                }
            }
        }
    }
    let listen = parse_addresses("p2p.listen", &config.listen)?;
    let external = parse_addresses("p2p.external_addresses", &config.external_addresses)?;
    let mut bootstrap = parse_addresses("p2p.bootstrap", &config.bootstrap)?;
    for domain in &config.bootstrap_dns {
        let seed: Multiaddr = format!("/dnsaddr/{domain}")
            .parse()
            .map_err(|error| P2pError::Config(format!("p2p.bootstrap_dns {domain:?}: {error}")))?;
        bootstrap.push(seed);
    }
    let mut relays = Vec::new();
    for (index, address) in parse_addresses("p2p.relays", &config.relays)?
        .into_iter()
        .enumerate()
    {
        let peer = peer_of(&address).ok_or_else(|| {
            P2pError::Config(format!(
                "p2p.relays[{index}] {address}: ends without /p2p/<relay peer id>"
            ))
        })?;
        relays.push((peer, address));
    }
    for address in &listen {
        swarm
            .listen_on(address.clone())
            .map_err(|error| P2pError::Listen {
                address: address.to_string(),
                reason: error.to_string(),
            })?;
    }
    // Wait until every listener is bound (or fails), so callers see real ports.
    let mut bound = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bound.len() < listen.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => bound.push(address),
            Ok(SwarmEvent::ListenerError { error, .. })
            | Ok(SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            }) => {
                return Err(P2pError::Listen {
                    address: format!("{listen:?}"),
                    reason: error.to_string(),
                })
            }
            Ok(_) => {}
            Err(_) => {
                return Err(P2pError::Listen {
                    address: format!("{listen:?}"),
                    reason: "not bound within 10 s".into(),
                })
            }
        }
    }
    for address in &external {
        swarm.add_external_address(address.clone());
    }
    let topics: HashMap<TopicHash, Topic> = Topic::ALL
        .iter()
        .map(|topic| (IdentTopic::new(topic.name(chain_id)).hash(), *topic))
        .collect();
    let info = Arc::new(Mutex::new(NetInfo {
        peer_id: local_peer_id.to_string(),
        listen_addresses: bound.iter().map(ToString::to_string).collect(),
        external_addresses: external.iter().map(ToString::to_string).collect(),
        static_mode: config.static_mode,
        security: if config.noise { "noise" } else { "tls1.3" },
        allowlist: swarm
            .behaviour()
            .allowed
            .as_ref()
            .map(|allowed| allowed.allowed_peers().len()),
        revoked: swarm.behaviour().revoked.blocked_peers().len(),
        nat: NatInfo {
            relay_server: config.relay_server,
            upnp: if config.upnp { "searching" } else { "off" }.into(),
            ..Default::default()
        },
        ..Default::default()
    }));
    let (command_tx, command_rx) = P2pCommands::bounded(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(4096);
    let (tile_tx, tile_rx) = mpsc::channel(256);
    let tile_queue = Arc::new(Mutex::new(Some(tile_rx)));
    let runner = Runner {
        swarm,
        chain_id: chain_id.to_string(),
        topics,
        bootstrap,
        static_mode: config.static_mode,
        events: event_tx,
        info: info.clone(),
        connected: HashMap::new(),
        rtt: HashMap::new(),
        dialing: HashSet::new(),
        tile_requests: tile_tx,
        tile_queue: tile_queue.clone(),
        tile_replies: HashMap::new(),
        allowlist,
        revoked,
        refused,
        relays: Relays {
            mode: config.reserve_relays,
            wanted: config.relay_reservations as usize,
            configured: relays,
            ..Default::default()
        },
        autonat: AutonatState {
            declared: !config.static_mode && !config.external_addresses.is_empty(),
            reachability: if !config.static_mode && !config.external_addresses.is_empty() {
                Reachability::Public
            } else {
                Reachability::Unknown
            },
            local_ips: bound.iter().flat_map(interface_ipv4).collect(),
            ..Default::default()
        },
        failed_dials: HashMap::new(),
        dial_address: HashMap::new(),
        observed: Vec::new(),
        relay_circuits: 0,
        probes: Vec::new(),
        commands_refused: command_tx.refused.clone(),
    };
    tokio::spawn(runner.run(command_rx));
    Ok((
        P2pHandle {
            commands: command_tx,
            info,
            local_peer_id,
            tile_requests: tile_queue,
            gossip_metrics: Arc::new(gossip_metrics),
        },
        event_rx,
        bound,
    ))
}

struct Runner {
    swarm: Swarm<Behaviour>,
    chain_id: String,
    topics: HashMap<TopicHash, Topic>,
    bootstrap: Vec<Multiaddr>,
    static_mode: bool,
    events: mpsc::Sender<P2pEvent>,
    info: Arc<Mutex<NetInfo>>,
    connected: HashMap<PeerId, PeerConnections>,
    rtt: HashMap<PeerId, Duration>,
    dialing: HashSet<PeerId>,
    tile_requests: mpsc::Sender<TileInbound>,
    /// The receiving end of `tile_requests` until the inference service takes it.
    tile_queue: Arc<Mutex<Option<mpsc::Receiver<TileInbound>>>>,
    tile_replies: HashMap<
        request_response::OutboundRequestId,
        tokio::sync::oneshot::Sender<Result<TileResponse, String>>,
    >,
    allowlist: Option<WatchedList>,
    revoked: Option<WatchedList>,
    refused: RefusedInputs,
    relays: Relays,
    autonat: AutonatState,
    /// Bootstrap addresses whose last dial failed, and when (skipped for [`DIAL_BACKOFF`] while
    /// the peer has other addresses, e.g. through another relay).
    failed_dials: HashMap<Multiaddr, Instant>,
    /// The address each pending bootstrap dial went to.
    dial_address: HashMap<PeerId, Multiaddr>,
    /// Our addresses as peers reported them (identify), most recent first.
    observed: Vec<Multiaddr>,
    /// Circuits this node relays now (as a relay server).
    relay_circuits: u64,
    probes: Vec<Probe>,
    /// [`P2pCommands`]' refusals (the runner holds no sender: the queue closes when the node's
    /// senders are gone, which ends the task).
    commands_refused: Arc<std::sync::atomic::AtomicU64>,
}

/// How long a probe waits for the old connections to its peer to close before it dials beside
/// them (a peer that redials at once would otherwise keep the probe from ever dialling).
const PROBE_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a bootstrap address that failed is passed over for the peer's other addresses.
const DIAL_BACKOFF: Duration = Duration::from_secs(10);
/// AutoNAT dial-back failures (with no address confirmed) before a node counts as private.
/// AutoNAT v2 tests each candidate address once, so one failure is already a verdict on an
/// address peers saw; a later success makes the node public again.
const PRIVATE_AFTER_FAILURES: u64 = 1;

/// One connection to a peer: its remote address, direction, and whether it runs through a
/// relay (the endpoint says so; an inbound relayed connection's remote address is only
/// `/p2p/<peer>`).
struct Link {
    address: Multiaddr,
    direction: &'static str,
    relayed: bool,
    /// When it was established (a probe counts only the links made after its dial).
    since: Instant,
}

/// A connected peer's connections (a relayed one and, after hole punching, a direct one).
struct PeerConnections {
    since: Instant,
    first_relayed: bool,
    connections: HashMap<ConnectionId, Link>,
}

impl PeerConnections {
    /// The connection to report: a direct one if there is one.
    fn best(&self) -> Option<&Link> {
        self.connections
            .values()
            .find(|link| !link.relayed)
            .or_else(|| self.connections.values().next())
    }

    fn is_direct(&self) -> bool {
        self.connections.values().any(|link| !link.relayed)
    }

    fn direct_addresses(&self) -> impl Iterator<Item = &Link> {
        self.connections.values().filter(|link| !link.relayed)
    }
}

#[derive(Default)]
struct AutonatState {
    successes: u64,
    failures: u64,
    /// Dial-backs from peers on our own subnet: they say nothing about the outside.
    lan_successes: u64,
    /// Successful tests: the address tested and whether the server was on our subnet
    /// (re-judged when we learn later that we are behind NAT).
    passed: Vec<(Multiaddr, bool)>,
    /// `p2p.external_addresses` is set: the operator declares the node reachable.
    declared: bool,
    reachability: Reachability,
    /// Our interface addresses (not loopback), from the listeners.
    local_ips: HashSet<std::net::Ipv4Addr>,
}

impl AutonatState {
    /// Whether `address` is on one of our own interfaces (or loopback).
    fn is_ours(&self, address: &Multiaddr) -> bool {
        address.iter().any(|part| match part {
            Protocol::Ip4(ip) => ip.is_loopback() || self.local_ips.contains(&ip),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    }

    /// Whether `address` is on the /24 of one of our interfaces (a LAN neighbour, e.g. another
    /// node behind the same NAT). Loopback devnets are their own world, so 127/8 never is.
    fn on_our_lan(&self, address: &Multiaddr) -> bool {
        address.iter().any(|part| match part {
            Protocol::Ip4(ip) => {
                !ip.is_loopback()
                    && self
                        .local_ips
                        .iter()
                        .any(|own| own.octets()[..3] == ip.octets()[..3])
            }
            _ => false,
        })
    }
}

/// Relay reservations this node holds (as a client).
#[derive(Default)]
struct Relays {
    mode: ReserveRelays,
    wanted: usize,
    /// `p2p.relays`.
    configured: Vec<(PeerId, Multiaddr)>,
    /// Connected peers that serve as relays (identify lists the hop protocol).
    discovered: HashMap<PeerId, Multiaddr>,
    /// Circuit listeners: the relay each is on and when it started.
    listeners: HashMap<ListenerId, (PeerId, Instant)>,
    /// Relays that accepted our reservation.
    reserved: HashSet<PeerId>,
    /// Relays to leave alone until then (a reservation failed or the relay went away).
    retry_after: HashMap<PeerId, Instant>,
    relayed_addresses: Vec<Multiaddr>,
}

impl Relays {
    fn candidates(&self) -> Vec<(PeerId, Multiaddr)> {
        let mut all = self.configured.clone();
        for (peer, address) in &self.discovered {
            if !all.iter().any(|(known, _)| known == peer) {
                all.push((*peer, address.clone()));
            }
        }
        all
    }
}

impl Runner {
    async fn run(mut self, mut commands: mpsc::Receiver<P2pCommand>) {
        self.dial_missing();
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        let mut probe_tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => {
                    let connection_event = matches!(
                        event,
                        SwarmEvent::ConnectionEstablished { .. }
                            | SwarmEvent::ConnectionClosed { .. }
                            | SwarmEvent::OutgoingConnectionError { .. }
                    );
                    self.on_event(event).await;
                    if connection_event && !self.probes.is_empty() {
                        self.advance_probes();
                    }
                }
                _ = redial.tick() => self.dial_missing(),
                _ = refresh.tick() => {
                    self.reload_access(false);
                    self.maintain_relays();
                    self.refresh_info();
                }
                _ = probe_tick.tick(), if !self.probes.is_empty() => self.advance_probes(),
            }
        }
        tracing::debug!("p2p stopped");
    }

    fn dial_missing(&mut self) {
        let now = Instant::now();
        self.failed_dials
            .retain(|_, at| now.duration_since(*at) < DIAL_BACKOFF);
        for address in self.bootstrap.clone() {
            match peer_of(&address) {
                Some(peer) => {
                    if peer == *self.swarm.local_peer_id()
                        || self.connected.contains_key(&peer)
                        || self.dialing.contains(&peer)
                    {
                        continue;
                    }
                    // A peer reachable several ways (e.g. through two relays): pass over the
                    // addresses that just failed while another one is left.
                    let others = self.bootstrap.iter().any(|a| {
                        a != &address
                            && peer_of(a) == Some(peer)
                            && !self.failed_dials.contains_key(a)
                    });
                    if self.failed_dials.contains_key(&address) && others {
                        continue;
                    }
                    self.dialing.insert(peer);
                    self.dial_address.insert(peer, address.clone());
                    if let Err(error) = self.swarm.dial(address.clone()) {
                        self.dialing.remove(&peer);
                        self.failed_dials.insert(address.clone(), now);
                        tracing::debug!(%address, %error, "dial failed");
                    }
                }
                None => {
                    // A DNS seed: dial it while we have no peers at all.
                    if self.connected.is_empty() {
                        if let Err(error) = self.swarm.dial(address.clone()) {
                            tracing::debug!(%address, %error, "seed dial failed");
                        }
                    }
                }
            }
        }
    }

    /// Moves every probe on: dial once the old connections are gone (or, when the peer keeps
    /// a connection up, e.g. by redialling us at once, after [`PROBE_CLOSE_WAIT`]), record the
    /// first connection made after the dial and its upgrade, answer when done or out of time.
    fn advance_probes(&mut self) {
        let now = Instant::now();
        let mut index = 0;
        while index < self.probes.len() {
            let probe = &mut self.probes[index];
            let connections = self.connected.get(&probe.peer);
            // The links made since our dial, earliest first: old ones (or ones left from before
            // the probe) say nothing about a fresh connection.
            let mut fresh: Vec<&Link> = match (probe.dialled, connections) {
                (Some(dialled), Some(c)) => c
                    .connections
                    .values()
                    .filter(|link| link.since >= dialled)
                    .collect(),
                _ => Vec::new(),
            };
            fresh.sort_by_key(|link| link.since);
            // Dial once the old connections are gone, and again after a failed try (a
            // connection still closing, a relay's circuit refused) until the timeout.
            let spaced = probe
                .last_dial
                .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(250));
            let closed = connections.is_none() || now >= probe.started + PROBE_CLOSE_WAIT;
            if fresh.is_empty() && closed && !probe.pending && spaced {
                if connections.is_some() {
                    // Still (or again) connected: close those links, dial beside them.
                    let _ = self.swarm.disconnect_peer_id(probe.peer);
                }
                probe.dialled.get_or_insert(now);
                probe.last_dial = Some(now);
                probe.pending = true;
                probe.dials += 1;
                self.dialing.insert(probe.peer);
                let address =
                    probe.addresses[(probe.dials as usize - 1) % probe.addresses.len()].clone();
                if let Err(error) = self.swarm.dial(address) {
                    probe.pending = false;
                    tracing::debug!(peer = %probe.peer, %error, "probe dial refused");
                }
            } else if let (Some(dialled), Some(first)) = (probe.dialled, fresh.first()) {
                let since = |at: Instant| (at - dialled).as_secs_f64() * 1000.0;
                if !probe.outcome.connected {
                    probe.outcome.connected = true;
                    probe.outcome.connect_ms = Some(since(first.since));
                    probe.outcome.relayed = Some(first.relayed);
                }
                if probe.outcome.direct_ms.is_none() {
                    if let Some(direct) = fresh.iter().find(|link| !link.relayed) {
                        probe.outcome.direct_ms = Some(since(direct.since));
                    }
                }
            }
            let connected_at = probe
                .dialled
                .zip(probe.outcome.connect_ms)
                .map(|(d, ms)| d + Duration::from_secs_f64(ms / 1000.0));
            let done = probe.outcome.direct_ms.is_some()
                || connected_at.is_some_and(|at| now >= at + probe.upgrade_wait)
                || now >= probe.started + probe.timeout;
            if done {
                let mut probe = self.probes.swap_remove(index);
                if !probe.outcome.connected {
                    probe.outcome.error = Some(format!(
                        "no connection within {:?} ({} dials)",
                        probe.timeout, probe.dials
                    ));
                }
                self.dialing.remove(&probe.peer);
                let _ = probe.reply.send(probe.outcome);
            } else {
                index += 1;
            }
        }
    }

    /// Whether this node should hold relay reservations now.
    fn wants_relays(&self) -> bool {
        match self.relays.mode {
            ReserveRelays::Always => true,
            ReserveRelays::Never => false,
            ReserveRelays::Auto => self.autonat.reachability == Reachability::Private,
        }
    }

    /// Keeps `relay_reservations` circuit listeners on live relays (or none when not wanted).
    fn maintain_relays(&mut self) {
        let now = Instant::now();
        if !self.wants_relays() {
            for (id, _) in std::mem::take(&mut self.relays.listeners) {
                self.swarm.remove_listener(id);
            }
            self.relays.reserved.clear();
            return;
        }
        // A listener whose relay has been gone for a while is dropped, so another takes over.
        let stale: Vec<ListenerId> = self
            .relays
            .listeners
            .iter()
            .filter(|(_, (relay, started))| {
                !self.connected.contains_key(relay)
                    && now.duration_since(*started) > Duration::from_secs(5)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((relay, _)) = self.relays.listeners.remove(&id) {
                tracing::info!(%relay, "relay gone: dropping its reservation");
                self.relays.reserved.remove(&relay);
                self.relays
                    .retry_after
                    .insert(relay, now + Duration::from_secs(5));
            }
            self.swarm.remove_listener(id);
        }
        for (relay, address) in self.relays.candidates() {
            if self.relays.listeners.len() >= self.relays.wanted {
                break;
            }
            if relay == *self.swarm.local_peer_id()
                || self.relays.listeners.values().any(|(r, _)| *r == relay)
                || self
                    .relays
                    .retry_after
                    .get(&relay)
                    .is_some_and(|until| *until > now)
            {
                continue;
            }
            match self
                .swarm
                .listen_on(address.clone().with(Protocol::P2pCircuit))
            {
                Ok(id) => {
                    tracing::info!(%relay, "reserving a relay slot");
                    self.relays.listeners.insert(id, (relay, now));
                }
                Err(error) => {
                    tracing::debug!(%relay, %error, "relay listen failed");
                    self.relays
                        .retry_after
                        .insert(relay, now + Duration::from_secs(5));
                }
            }
        }
    }

    /// A connected peer serves as a relay: remember an address to reserve on.
    fn discover_relay(&mut self, peer: PeerId, listen: &[Multiaddr]) {
        let dialled = self.connected.get(&peer).and_then(|c| {
            c.direct_addresses()
                .find(|link| link.direction == "outbound")
                .map(|link| link.address.clone())
        });
        let address = dialled.or_else(|| {
            listen
                .iter()
                .find(|a| {
                    !is_relayed(a)
                        && !a
                            .iter()
                            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
                })
                .cloned()
        });
        if let Some(mut address) = address {
            if peer_of(&address) != Some(peer) {
                address.push(Protocol::P2p(peer));
            }
            if self.relays.discovered.insert(peer, address).is_none() {
                tracing::debug!(relay = %peer, "relay found among peers");
            }
        }
    }

    fn update_reachability(&mut self) {
        // Behind NAT (a peer saw us at an address that is not ours), a dial-back to our own
        // interface address from a neighbour on our subnet proves only that the LAN reaches us.
        let behind_nat = self.observed.iter().any(|a| !self.autonat.is_ours(a));
        let state = &mut self.autonat;
        let lan_only = |(tested, from_lan): &(Multiaddr, bool)| {
            *from_lan && behind_nat && state.is_ours(tested)
        };
        state.lan_successes = state.passed.iter().filter(|p| lan_only(p)).count() as u64;
        state.successes = state.passed.len() as u64 - state.lan_successes;
        let now = if state.declared || state.successes > 0 {
            Reachability::Public
        } else if state.failures >= PRIVATE_AFTER_FAILURES {
            Reachability::Private
        } else {
            Reachability::Unknown
        };
        if now != state.reachability {
            tracing::info!(was = ?state.reachability, now = ?now, "reachability changed");
            state.reachability = now;
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.set_mode(Some(if now == Reachability::Private {
                    kad::Mode::Client
                } else {
                    kad::Mode::Server
                }));
            }
        }
    }

    /// Applies changed allowlist and revocation files; a file that does not load leaves the
    /// lists in force as they are.
    fn reload_access(&mut self, force: bool) {
        if let Some(list) = self.allowlist.as_mut() {
            match list.poll(force) {
                None => {}
                Some(Err(error)) => {
                    tracing::error!(%error, "p2p.allowlist_file not reloaded; the allowlist in force stays")
                }
                Some(Ok(peers)) => {
                    if let Some(allowed) = self.swarm.behaviour_mut().allowed.as_mut() {
                        let (added, removed) = access::diff(allowed.allowed_peers(), &peers);
                        for peer in &added {
                            allowed.allow_peer(*peer);
                        }
                        for peer in &removed {
                            // Closes its connections.
                            allowed.disallow_peer(*peer);
                        }
                        if !added.is_empty() || !removed.is_empty() {
                            tracing::info!(
                                added = added.len(),
                                removed = removed.len(),
                                allowed = peers.len(),
                                "allowlist reloaded"
                            );
                        }
                    }
                }
            }
        }
        if let Some(list) = self.revoked.as_mut() {
            match list.poll(force) {
                None => {}
                Some(Err(error)) => {
                    tracing::error!(%error, "p2p.revoked_file not reloaded; the revocations in force stay")
                }
                Some(Ok(peers)) => {
                    let revoked = &mut self.swarm.behaviour_mut().revoked;
                    let (added, removed) = access::diff(revoked.blocked_peers(), &peers);
                    for peer in &added {
                        // Closes its connections.
                        revoked.block_peer(*peer);
                        tracing::warn!(%peer, "peer revoked: disconnecting");
                    }
                    for peer in &removed {
                        revoked.unblock_peer(*peer);
                    }
                    if !added.is_empty() || !removed.is_empty() {
                        tracing::info!(
                            added = added.len(),
                            removed = removed.len(),
                            revoked = peers.len(),
                            "revocation list reloaded"
                        );
                    }
                }
            }
        }
        let behaviour = self.swarm.behaviour();
        let allowlist = behaviour.allowed.as_ref().map(|a| a.allowed_peers().len());
        let revoked = behaviour.revoked.blocked_peers().len();
        let mut info = self.info.lock().expect("net info lock poisoned");
        info.allowlist = allowlist;
        info.revoked = revoked;
    }

    /// Counts a connection refused by the allowlist or the revocation list.
    fn count_denied(&mut self, cause: &libp2p::swarm::ConnectionDenied) {
        let reason = if cause
            .downcast_ref::<allow_block_list::NotAllowed>()
            .is_some()
        {
            "not_allowed"
        } else if cause.downcast_ref::<allow_block_list::Blocked>().is_some() {
            "revoked"
        } else {
            "connection_limit"
        };
        refuse(&self.refused, "connection", reason);
        if reason != "connection_limit" {
            self.info
                .lock()
                .expect("net info lock poisoned")
                .refused_connections += 1;
        }
    }

    fn refresh_info(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let peers = self
            .connected
            .iter()
            .filter_map(|(peer, connections)| {
                let link = connections.best()?;
                let direct = connections.is_direct();
                Some(PeerInfo {
                    peer_id: peer.to_string(),
                    address: link.address.to_string(),
                    direction: link.direction,
                    path: if direct { "direct" } else { "relayed" },
                    hole_punched: direct && connections.first_relayed,
                    connected_ms: connections.since.elapsed().as_millis() as u64,
                    gossip_score: gossipsub.peer_score(peer).unwrap_or(0.0),
                    rtt_ms: self.rtt.get(peer).map(|rtt| rtt.as_secs_f64() * 1000.0),
                })
            })
            .collect();
        let external = self
            .swarm
            .external_addresses()
            .map(ToString::to_string)
            .collect();
        let relay_circuits = self
            .swarm
            .behaviour()
            .relay
            .as_ref()
            .map_or(0, |_| self.relay_circuits);
        let mut info = self.info.lock().expect("net info lock poisoned");
        info.peers = peers;
        info.external_addresses = external;
        info.commands_refused = self
            .commands_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let nat = &mut info.nat;
        nat.reachability = self.autonat.reachability;
        nat.autonat_tests = self.autonat.successes + self.autonat.failures;
        nat.autonat_failures = self.autonat.failures;
        nat.observed_addresses = self.observed.iter().map(ToString::to_string).collect();
        nat.relayed_addresses = self
            .relays
            .relayed_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        nat.relays_known = self
            .relays
            .candidates()
            .iter()
            .map(|(_, address)| address.to_string())
            .collect();
        nat.relays_reserved = self
            .relays
            .reserved
            .iter()
            .map(ToString::to_string)
            .collect();
        nat.relays_reserved.sort();
        nat.relay_circuits = relay_circuits;
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) {
        let topic = IdentTopic::new(topic.name(&self.chain_id));
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::trace!("published with no peers")
            }
            Err(error) => tracing::debug!(%error, "publish failed"),
        }
    }

    fn on_command(&mut self, command: P2pCommand) {
        if let P2pCommand::ReloadAccess = command {
            self.reload_access(true);
            return;
        }
        if let P2pCommand::Probe {
            addresses,
            upgrade_wait,
            timeout,
            reply,
        } = command
        {
            let peers: HashSet<Option<PeerId>> = addresses.iter().map(peer_of).collect();
            let peer = match peers.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(peer)] => *peer,
                _ => {
                    let _ = reply.send(ProbeOutcome {
                        error: Some(
                            "give one or more addresses of one peer, each ending in /p2p/<peer id>"
                                .into(),
                        ),
                        ..Default::default()
                    });
                    return;
                }
            };
            if self.probes.iter().any(|p| p.peer == peer) {
                let _ = reply.send(ProbeOutcome {
                    peer_id: peer.to_string(),
                    error: Some("a probe of this peer is running".into()),
                    ..Default::default()
                });
                return;
            }
            if self.connected.contains_key(&peer) {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            // Keep the bootstrap redial off this peer while the probe owns it.
            self.dialing.insert(peer);
            self.probes.push(Probe {
                peer,
                addresses,
                dialled: None,
                pending: false,
                dials: 0,
                last_dial: None,
                started: Instant::now(),
                upgrade_wait,
                timeout,
                outcome: ProbeOutcome {
                    peer_id: peer.to_string(),
                    ..Default::default()
                },
                reply,
            });
            self.advance_probes();
            return;
        }
        let behaviour = self.swarm.behaviour_mut();
        match command {
            P2pCommand::ReloadAccess | P2pCommand::Probe { .. } => {}
            P2pCommand::Publish(topic, data) => self.publish(topic, tagged(data, 0)),
            P2pCommand::Republish(topic, data) => {
                self.publish(topic, tagged(data, rand::random::<u64>().max(1)))
            }
            P2pCommand::Validate {
                id,
                source,
                acceptance,
            } => {
                if matches!(acceptance, MessageAcceptance::Reject) {
                    self.info
                        .lock()
                        .expect("net info lock poisoned")
                        .invalid_messages += 1;
                }
                behaviour
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            P2pCommand::Sync { peer, request } => {
                behaviour.sync.send_request(&peer, request);
            }
            P2pCommand::Respond { channel, response } => {
                if behaviour.sync.send_response(channel, response).is_err() {
                    tracing::debug!("sync response dropped: the requester went away");
                }
            }
            P2pCommand::FetchTile {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.tiles.send_request(&peer, request);
                self.tile_replies.insert(id, reply);
            }
            P2pCommand::RespondTile { channel, response } => {
                if behaviour.tiles.send_response(channel, response).is_err() {
                    tracing::debug!("tile response dropped: the requester went away");
                }
            }
        }
    }

    /// Hands a peer's tile request to the inference service, or answers "unavailable" at once
    /// when no service took the queue (a node without inference), the service is gone, or too
    /// many requests wait.
    fn on_tile_request(&mut self, inbound: TileInbound) {
        let served = self
            .tile_queue
            .lock()
            .map(|queue| queue.is_none())
            .unwrap_or(false);
        let refused = if served {
            match self.tile_requests.try_send(inbound) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(inbound))
                | Err(mpsc::error::TrySendError::Closed(inbound)) => Some(inbound),
            }
        } else {
            Some(inbound)
        };
        if let Some(inbound) = refused {
            let response = TileResponse::Unavailable {
                reason: "this node serves no tiles now".into(),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .tiles
                .send_response(inbound.channel, response);
        }
    }

    async fn emit(&mut self, event: P2pEvent) {
        // The node went away: nothing left to tell.
        let _ = self.events.send(event).await;
    }

    async fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.dialing.remove(&peer_id);
                self.dial_address.remove(&peer_id);
                let address = endpoint.get_remote_address().clone();
                let direction = if endpoint.is_dialer() {
                    "outbound"
                } else {
                    "inbound"
                };
                let relayed = endpoint.is_relayed();
                if !self.static_mode && !relayed {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer_id, address.clone());
                    }
                }
                let first = !self.connected.contains_key(&peer_id);
                let entry = self
                    .connected
                    .entry(peer_id)
                    .or_insert_with(|| PeerConnections {
                        since: Instant::now(),
                        first_relayed: relayed,
                        connections: HashMap::new(),
                    });
                entry.connections.insert(
                    connection_id,
                    Link {
                        address,
                        direction,
                        relayed,
                        since: Instant::now(),
                    },
                );
                if first {
                    tracing::debug!(peer = %peer_id, direction, relayed, "peer connected");
                    self.emit(P2pEvent::Connected(peer_id)).await;
                } else if !relayed {
                    tracing::debug!(peer = %peer_id, direction, "direct connection added");
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                let gone = match self.connected.get_mut(&peer_id) {
                    Some(entry) => {
                        entry.connections.remove(&connection_id);
                        entry.connections.is_empty()
                    }
                    None => false,
                };
                if gone {
                    self.connected.remove(&peer_id);
                    self.rtt.remove(&peer_id);
                    tracing::debug!(peer = %peer_id, cause = ?cause, "peer disconnected");
                    self.emit(P2pEvent::Disconnected(peer_id)).await;
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(peer) = peer_id {
                    for probe in self.probes.iter_mut().filter(|p| p.peer == peer) {
                        probe.pending = false;
                        probe.outcome.error = None;
                    }
                    self.dialing.remove(&peer);
                    if let Some(address) = self.dial_address.remove(&peer) {
                        self.failed_dials.insert(address, Instant::now());
                    }
                }
                if let libp2p::swarm::DialError::Denied { cause } = &error {
                    self.count_denied(cause);
                }
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                if let libp2p::swarm::ListenError::Denied { cause } = &error {
                    self.count_denied(cause);
                }
                tracing::debug!(from = %send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => match (self.topics.get(&message.topic), untagged(message.data)) {
                (Some(topic), Some(data)) => {
                    self.emit(P2pEvent::Gossip {
                        topic: *topic,
                        source: propagation_source,
                        id: message_id,
                        data,
                    })
                    .await
                }
                // Not one of our topics, or too short to carry a copy tag.
                _ => {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.emit(P2pEvent::SyncRequest {
                        peer,
                        request,
                        channel,
                    })
                    .await
                }
                request_response::Message::Response { response, .. } => {
                    self.emit(P2pEvent::SyncResponse { peer, response }).await
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => {
                self.emit(P2pEvent::SyncFailed {
                    peer,
                    reason: error.to_string(),
                })
                .await
            }
            SwarmEvent::Behaviour(BehaviourEvent::Tiles(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_tile_request(TileInbound {
                    peer,
                    request,
                    channel,
                }),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.tile_replies.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Tiles(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some(reply) = self.tile_replies.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // What a peer saw over a relayed connection is the circuit, not us.
                let observed = info.observed_addr.clone();
                let has_ip = observed
                    .iter()
                    .any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)));
                if has_ip && !is_relayed(&observed) {
                    self.observed.retain(|a| a != &observed);
                    self.observed.insert(0, observed);
                    self.observed.truncate(8);
                }
                self.update_reachability();
                if info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == relay::HOP_PROTOCOL_NAME.as_ref())
                {
                    self.discover_relay(peer_id, &info.listen_addrs);
                }
                if !self.static_mode {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        for address in info.listen_addrs {
                            kad.add_address(&peer_id, address);
                        }
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !is_relayed(&address) => {
                self.autonat.local_ips.extend(interface_ipv4(&address));
            }
            SwarmEvent::NewListenAddr { address, .. } if is_relayed(&address) => {
                tracing::info!(%address, "relayed address");
                if !self.relays.relayed_addresses.contains(&address) {
                    self.relays.relayed_addresses.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } if is_relayed(&address) => {
                self.relays.relayed_addresses.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                self.relays
                    .relayed_addresses
                    .retain(|a| !addresses.contains(a));
                if let Some((relay, _)) = self.relays.listeners.remove(&listener_id) {
                    tracing::info!(%relay, ?reason, "relay reservation closed");
                    self.relays.reserved.remove(&relay);
                    self.relays
                        .retry_after
                        .insert(relay, Instant::now() + Duration::from_secs(2));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => match event {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    self.relays.reserved.insert(relay_peer_id);
                }
                other => tracing::debug!(event = ?other, "relay client"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => match event {
                relay::Event::CircuitReqAccepted { .. } => self.relay_circuits += 1,
                relay::Event::CircuitClosed { .. } => {
                    self.relay_circuits = self.relay_circuits.saturating_sub(1)
                }
                other => tracing::debug!(event = ?other, "relay server"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => {
                let mut info = self.info.lock().expect("net info lock poisoned");
                match result {
                    Ok(_) => {
                        info.nat.hole_punch_successes += 1;
                        tracing::info!(peer = %remote_peer_id, "hole punch: direct connection");
                    }
                    Err(error) => {
                        info.nat.hole_punch_failures += 1;
                        tracing::info!(peer = %remote_peer_id, %error, "hole punch failed: staying relayed");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            })) => {
                let from_lan = self.connected.get(&server).is_some_and(|c| {
                    c.direct_addresses()
                        .any(|link| self.autonat.on_our_lan(&link.address))
                });
                match result {
                    // Reachable through a relay is what a private node is.
                    Ok(()) if is_relayed(&tested_addr) => {
                        tracing::debug!(address = %tested_addr, %server, "AutoNAT: relayed address reachable");
                    }
                    Ok(()) => {
                        tracing::info!(address = %tested_addr, %server, from_lan, "AutoNAT: reachable");
                        self.autonat.passed.push((tested_addr, from_lan));
                    }
                    Err(error) => {
                        self.autonat.failures += 1;
                        tracing::debug!(address = %tested_addr, %server, %error, "AutoNAT: not reachable");
                    }
                }
                self.update_reachability();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(event)) => {
                let mut info = self.info.lock().expect("net info lock poisoned");
                match event {
                    upnp::Event::NewExternalAddr { external_addr, .. } => {
                        tracing::info!(address = %external_addr, "UPnP: port mapped");
                        info.nat.upnp = "mapped".into();
                        info.nat.upnp_addresses.push(external_addr.to_string());
                    }
                    upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                        let gone = external_addr.to_string();
                        info.nat.upnp_addresses.retain(|a| a != &gone);
                    }
                    upnp::Event::GatewayNotFound => info.nat.upnp = "no gateway".into(),
                    upnp::Event::NonRoutableGateway => info.nat.upnp = "gateway not public".into(),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.rtt.insert(peer, rtt);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
