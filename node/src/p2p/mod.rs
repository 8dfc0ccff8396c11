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

use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers, BlockedPeers};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity, kad, noise, ping, tcp, tls, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm, SwarmBuilder,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub mod access;
pub mod bench;
pub mod probe;

use crate::config::P2pConfig;
use crate::metrics::{refuse, RefusedInputs};
use access::WatchedList;

/// Gossip topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Txs,
    Proposals,
    Votes,
    /// A 16-byte unique tick a stalled node publishes before re-sending its own messages.
    /// gossipsub drops expired ids from its duplicate cache only when it inserts a new one, so
    /// on a chain stalled by a partition (nothing new published anywhere) every re-send was
    /// refused as "already published" for ever; the tick's insertion purges them first.
    Ticks,
}

/// How long gossipsub remembers a message id (and refuses to publish the same bytes again).
pub const DUPLICATE_CACHE: Duration = Duration::from_secs(3);

/// The size of a [`Topic::Ticks`] message.
pub const TICK_BYTES: usize = 16;

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Txs, Topic::Proposals, Topic::Votes, Topic::Ticks];

    fn name(self, chain_id: &str) -> String {
        let suffix = match self {
            Topic::Txs => "txs",
            Topic::Proposals => "proposals",
            Topic::Votes => "votes",
            Topic::Ticks => "ticks",
        };
        format!("/blyan/{chain_id}/{suffix}/1")
    }
}

/// Block-sync request: blocks from `from_height`, at most `max_blocks`; or, with `snapshot`, a
/// state-sync request (then the block fields are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from_height: u64,
    pub max_blocks: u32,
    #[serde(default)]
    pub snapshot: Option<SnapshotRequest>,
}

/// What a state-syncing node asks a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotRequest {
    /// The latest snapshot the peer serves.
    Offer,
    /// One chunk (a run of whole buckets) of the snapshot at `height`.
    Chunk { height: u64, index: u32 },
    /// Blocks with their commit certificates at these heights (at most [`MAX_SYNC_BLOCKS`]).
    Heights { heights: Vec<u64> },
    /// The validator sets of these epochs (at most [`MAX_SYNC_SETS`]).
    Sets { epochs: Vec<u64> },
}

/// A peer's answer to a [`SnapshotRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotResponse {
    Offer {
        height: u64,
        chunks: u32,
        bucket_hashes: Vec<serde_bytes::ByteBuf>,
    },
    Chunk {
        height: u64,
        index: u32,
        entries: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    },
    Blocks {
        blocks: Vec<(u64, SyncedBlock)>,
    },
    Sets {
        sets: Vec<(u64, serde_bytes::ByteBuf)>,
    },
    Unavailable {
        reason: String,
    },
}

/// Most validator sets per state-sync answer.
pub const MAX_SYNC_SETS: usize = 256;

/// A block with its commit certificate, both in their wire encodings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBlock {
    #[serde(with = "serde_bytes")]
    pub block: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub commit: Vec<u8>,
}

/// Block-sync answer: the responder's tip and the blocks it has from the requested height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub tip_height: u64,
    pub blocks: Vec<SyncedBlock>,
    #[serde(default)]
    pub snapshot: Option<SnapshotResponse>,
}

pub const SYNC_PROTOCOL: &str = "/blyan/sync/1";
/// Expert weight tiles (`crate::inference`): a manifest or one tile per request.
pub const TILES_PROTOCOL: &str = "/blyan/tiles/1";

/// What a node asks a peer for an expert it lacks (by the expert's content hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TileRequest {
    /// The expert's tile list (hashes and sizes), to check against the on-chain Merkle root.
    Manifest {
        #[serde(with = "serde_bytes")]
        content_hash: Vec<u8>,
    },
    /// One tile's bytes.
    Tile {
        #[serde(with = "serde_bytes")]
        content_hash: Vec<u8>,
        index: u32,
    },
}

/// A peer's answer to a [`TileRequest`]; the requester verifies every byte of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TileResponse {
    Manifest {
        #[serde(with = "serde_bytes")]
        json: Vec<u8>,
    },
    Tile {
        index: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    Unavailable {
        reason: String,
    },
}

/// A tile request from a peer, for the inference service to answer with
/// [`P2pCommand::RespondTile`].
#[derive(Debug)]
pub struct TileInbound {
    pub peer: PeerId,
    pub request: TileRequest,
    pub channel: ResponseChannel<TileResponse>,
}

/// Largest tile answer: a 4 MiB tile plus its framing.
pub const MAX_TILE_RESPONSE_BYTES: u64 = 4 * 1024 * 1024 + 64 * 1024;
/// Largest vote or transaction gossip message (a vote is 114 bytes, a transfer 154).
pub const MAX_VOTE_OR_TX_BYTES: usize = 1024;
/// Most blocks per sync response.
pub const MAX_SYNC_BLOCKS: u32 = 64;

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
    Publish(Topic, Vec<u8>),
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
    pub address: String,
    pub direction: &'static str,
    pub connected_ms: u64,
    pub gossip_score: f64,
    pub rtt_ms: Option<f64>,
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
}

/// The node's side of the swarm.
#[derive(Clone)]
pub struct P2pHandle {
    pub commands: mpsc::UnboundedSender<P2pCommand>,
    pub info: Arc<Mutex<NetInfo>>,
    pub local_peer_id: PeerId,
    /// Tile requests from peers; taken once by the inference service (requests arriving while
    /// nobody took it are answered "unavailable").
    pub tile_requests: Arc<Mutex<Option<mpsc::Receiver<TileInbound>>>>,
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
}

fn message_id(message: &gossipsub::Message) -> MessageId {
    // Content-addressed: the same payload re-published by another node is one message.
    let digest = crate::block::Hash::digest(&message.data);
    MessageId::from(&digest.0[..20])
}

fn behaviour(
    key: &identity::Keypair,
    config: &P2pConfig,
    chain_id: &str,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let max = config.max_message_bytes as usize;
    let topic_hash = |topic: Topic| IdentTopic::new(topic.name(chain_id)).hash();
    let mesh_n = config.gossip_mesh_n as usize;
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
        .max_transmit_size_for_topic(max, topic_hash(Topic::Proposals))
        .max_transmit_size_for_topic(MAX_VOTE_OR_TX_BYTES, topic_hash(Topic::Votes))
        .max_transmit_size_for_topic(MAX_VOTE_OR_TX_BYTES, topic_hash(Topic::Txs))
        .max_transmit_size_for_topic(1024, topic_hash(Topic::Ticks))
        .heartbeat_interval(Duration::from_millis(config.gossip_heartbeat_ms))
        // Shorter than the node's rebroadcast interval, so a message sent again is not
        // dropped as a duplicate.
        .duplicate_cache_time(DUPLICATE_CACHE)
        .mesh_n_low((mesh_n * 2 / 3).max(1))
        .mesh_n(mesh_n)
        .mesh_n_high(mesh_n * 2)
        .mesh_outbound_min((mesh_n / 3).clamp(1, 2))
        .gossip_lazy(mesh_n)
        .flood_publish(true)
        .build()
        .map_err(|error| format!("gossipsub config: {error}"))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)?;
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
        .set_request_size_maximum(1024)
        .set_response_size_maximum(max as u64 * MAX_SYNC_BLOCKS as u64);
    let sync = request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
    );
    let tiles = request_response::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(1024)
            .set_response_size_maximum(MAX_TILE_RESPONSE_BYTES),
        [(StreamProtocol::new(TILES_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
    );
    let identify = identify::Behaviour::new(
        identify::Config::new("/blyan/1.0.0".into(), key.public())
            .with_agent_version(format!("blyan-node/{}", crate::VERSION))
            .with_hide_listen_addrs(config.static_mode),
    );
    let kad = (!config.static_mode).then(|| {
        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(StreamProtocol::new("/blyan/kad/1.0.0"));
        kad_config.set_query_timeout(Duration::from_secs(30));
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config)
    });
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(config.max_connections));
    Ok(Behaviour {
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
fn dns_config() -> Result<(libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts), P2pError> {
    let (config, mut options) =
        hickory_resolver::system_conf::read_system_conf().map_err(transport_error)?;
    options.negative_max_ttl = Some(Duration::from_secs(1));
    options.positive_max_ttl = Some(Duration::from_secs(5));
    Ok((config, options))
}

fn build_swarm(
    keypair: identity::Keypair,
    config: &P2pConfig,
    chain_id: &str,
) -> Result<Swarm<Behaviour>, P2pError> {
    let tcp_config = || tcp::Config::default().nodelay(true);
    let make = |key: &identity::Keypair| behaviour(key, config, chain_id);
    let swarm_config =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let (dns, dns_options) = dns_config()?;
    // The builder's types differ per transport choice, so each arm spells its own prefix and
    // shares the rest.
    macro_rules! finish {
        ($stage:expr) => {
            $stage
                .with_dns_config(dns.clone(), dns_options.clone())
                .with_behaviour(make)
                .map_err(transport_error)?
                .with_swarm_config(swarm_config)
                .build()
        };
    }
    let tcp = tcp_config();
    let swarm = match (config.noise, config.quic) {
        (false, false) => finish!(builder
            .with_tcp(tcp, tls::Config::new, yamux::Config::default)
            .map_err(transport_error)?),
        (false, true) => finish!(builder
            .with_tcp(tcp, tls::Config::new, yamux::Config::default)
            .map_err(transport_error)?
            .with_quic()),
        (true, false) => finish!(builder
            .with_tcp(tcp, noise::Config::new, yamux::Config::default)
            .map_err(transport_error)?),
        (true, true) => finish!(builder
            .with_tcp(tcp, noise::Config::new, yamux::Config::default)
            .map_err(transport_error)?
            .with_quic()),
    };
    Ok(swarm)
}

fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|part| match part {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
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
    let mut swarm = build_swarm(keypair, config, chain_id)?;
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
    let bootstrap = parse_addresses("p2p.bootstrap", &config.bootstrap)?;
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
        ..Default::default()
    }));
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(4096);
    let (tile_tx, tile_rx) = mpsc::channel(256);
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
        tile_replies: HashMap::new(),
        allowlist,
        revoked,
        refused,
    };
    tokio::spawn(runner.run(command_rx));
    Ok((
        P2pHandle {
            commands: command_tx,
            info,
            local_peer_id,
            tile_requests: Arc::new(Mutex::new(Some(tile_rx))),
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
    connected: HashMap<PeerId, (Multiaddr, &'static str, Instant)>,
    rtt: HashMap<PeerId, Duration>,
    dialing: HashSet<PeerId>,
    tile_requests: mpsc::Sender<TileInbound>,
    tile_replies: HashMap<
        request_response::OutboundRequestId,
        tokio::sync::oneshot::Sender<Result<TileResponse, String>>,
    >,
    allowlist: Option<WatchedList>,
    revoked: Option<WatchedList>,
    refused: RefusedInputs,
}

impl Runner {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<P2pCommand>) {
        self.dial_missing();
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event).await,
                _ = redial.tick() => self.dial_missing(),
                _ = refresh.tick() => {
                    self.reload_access(false);
                    self.refresh_info();
                }
            }
        }
        tracing::debug!("p2p stopped");
    }

    fn dial_missing(&mut self) {
        for address in self.bootstrap.clone() {
            match peer_of(&address) {
                Some(peer) => {
                    if peer == *self.swarm.local_peer_id()
                        || self.connected.contains_key(&peer)
                        || self.dialing.contains(&peer)
                    {
                        continue;
                    }
                    self.dialing.insert(peer);
                    if let Err(error) = self.swarm.dial(address.clone()) {
                        self.dialing.remove(&peer);
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
            .map(|(peer, (address, direction, since))| PeerInfo {
                peer_id: peer.to_string(),
                address: address.to_string(),
                direction,
                connected_ms: since.elapsed().as_millis() as u64,
                gossip_score: gossipsub.peer_score(peer).unwrap_or(0.0),
                rtt_ms: self.rtt.get(peer).map(|rtt| rtt.as_secs_f64() * 1000.0),
            })
            .collect();
        let external = self
            .swarm
            .external_addresses()
            .map(ToString::to_string)
            .collect();
        let mut info = self.info.lock().expect("net info lock poisoned");
        info.peers = peers;
        info.external_addresses = external;
    }

    fn on_command(&mut self, command: P2pCommand) {
        if let P2pCommand::ReloadAccess = command {
            self.reload_access(true);
            return;
        }
        let behaviour = self.swarm.behaviour_mut();
        match command {
            P2pCommand::ReloadAccess => {}
            P2pCommand::Publish(topic, data) => {
                let topic = IdentTopic::new(topic.name(&self.chain_id));
                match behaviour.gossipsub.publish(topic, data) {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        tracing::trace!("published with no peers")
                    }
                    Err(error) => tracing::debug!(%error, "publish failed"),
                }
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

    async fn emit(&mut self, event: P2pEvent) {
        // The node went away: nothing left to tell.
        let _ = self.events.send(event).await;
    }

    async fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                self.dialing.remove(&peer_id);
                let (address, direction) = if endpoint.is_dialer() {
                    (endpoint.get_remote_address().clone(), "outbound")
                } else {
                    (endpoint.get_remote_address().clone(), "inbound")
                };
                if !self.static_mode {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer_id, address.clone());
                    }
                }
                if num_established.get() == 1 {
                    self.connected
                        .insert(peer_id, (address, direction, Instant::now()));
                    tracing::debug!(peer = %peer_id, direction, "peer connected");
                    self.emit(P2pEvent::Connected(peer_id)).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.rtt.remove(&peer_id);
                tracing::debug!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.emit(P2pEvent::Disconnected(peer_id)).await;
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(peer) = peer_id {
                    self.dialing.remove(&peer);
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
            })) => match self.topics.get(&message.topic) {
                Some(topic) => {
                    self.emit(P2pEvent::Gossip {
                        topic: *topic,
                        source: propagation_source,
                        id: message_id,
                        data: message.data,
                    })
                    .await
                }
                None => {
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
                } => {
                    if let Err(error) = self.tile_requests.try_send(TileInbound {
                        peer,
                        request,
                        channel,
                    }) {
                        // Nobody serves tiles here, or too many requests queued: say so.
                        let inbound = match error {
                            mpsc::error::TrySendError::Full(inbound)
                            | mpsc::error::TrySendError::Closed(inbound) => inbound,
                        };
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
            })) if !self.static_mode => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for address in info.listen_addrs {
                        kad.add_address(&peer_id, address);
                    }
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
