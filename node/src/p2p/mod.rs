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
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr, PeerId, Swarm};
use serde::Serialize;
use tokio::sync::mpsc;

pub mod access;
pub mod bench;
pub mod probe;

use crate::config::P2pConfig;
use crate::metrics::RefusedInputs;
use access::WatchedList;

mod behaviour;
mod commands;
mod events;
mod handle;
mod runner;

pub use behaviour::peer_of;
use behaviour::{
    build_swarm, interface_ipv4, is_relayed, parse_addresses, Behaviour, BehaviourEvent,
};
pub use handle::{CommandRefused, P2pCommands, P2pHandle};
use runner::{AutonatState, Link, PeerConnections, Probe, Relays, Runner};

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
    let (allowlist, revoked) = load_access_lists(&mut swarm, config)?;
    let endpoints = Endpoints::parse(config)?;
    let bound = bind(&mut swarm, &endpoints.listen).await?;
    for address in &endpoints.external {
        swarm.add_external_address(address.clone());
    }
    let topics: HashMap<TopicHash, Topic> = Topic::ALL
        .iter()
        .map(|topic| (IdentTopic::new(topic.name(chain_id)).hash(), *topic))
        .collect();
    let info = Arc::new(Mutex::new(first_net_info(
        &swarm,
        config,
        local_peer_id,
        &bound,
        &endpoints.external,
    )));
    let (command_tx, command_rx) = P2pCommands::bounded(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(4096);
    let (tile_tx, tile_rx) = mpsc::channel(256);
    let tile_queue = Arc::new(Mutex::new(Some(tile_rx)));
    let declared = !config.static_mode && !config.external_addresses.is_empty();
    let runner = Runner {
        swarm,
        chain_id: chain_id.to_string(),
        topics,
        bootstrap: endpoints.bootstrap,
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
            configured: endpoints.relays,
            ..Default::default()
        },
        autonat: AutonatState {
            declared,
            reachability: if declared {
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
        commands_refused: command_tx.refused_counter(),
    };
    tokio::spawn(runner.run(command_rx));
    let handle = P2pHandle {
        commands: command_tx,
        info,
        local_peer_id,
        tile_requests: tile_queue,
        gossip_metrics: Arc::new(gossip_metrics),
    };
    Ok((handle, event_rx, bound))
}

/// `p2p.allowlist_file` and `p2p.revoked_file`, loaded into the swarm's allow and block lists
/// (a file that does not load is an error) and kept for reloading.
fn load_access_lists(
    swarm: &mut Swarm<behaviour::Behaviour>,
    config: &P2pConfig,
) -> Result<(Option<WatchedList>, Option<WatchedList>), P2pError> {
    let mut allowlist = (!config.allowlist_file.is_empty())
        .then(|| WatchedList::new(config.allowlist_file.clone().into()));
    let mut revoked = (!config.revoked_file.is_empty())
        .then(|| WatchedList::new(config.revoked_file.clone().into()));
    for (field, list) in [
        ("p2p.allowlist_file", &mut allowlist),
        ("p2p.revoked_file", &mut revoked),
    ] {
        let Some(list) = list else { continue };
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
    Ok((allowlist, revoked))
}

/// The addresses of `[p2p]`, parsed (each error names its field and item).
struct Endpoints {
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    relays: Vec<(PeerId, Multiaddr)>,
}

impl Endpoints {
    fn parse(config: &P2pConfig) -> Result<Endpoints, P2pError> {
        let listen = parse_addresses("p2p.listen", &config.listen)?;
        let external = parse_addresses("p2p.external_addresses", &config.external_addresses)?;
        let mut bootstrap = parse_addresses("p2p.bootstrap", &config.bootstrap)?;
        for domain in &config.bootstrap_dns {
            let seed: Multiaddr = format!("/dnsaddr/{domain}").parse().map_err(|error| {
                P2pError::Config(format!("p2p.bootstrap_dns {domain:?}: {error}"))
            })?;
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
        Ok(Endpoints {
            listen,
            external,
            bootstrap,
            relays,
        })
    }
}

/// Listens on every address and waits until each is bound (or fails), so callers see real
/// ports.
async fn bind(
    swarm: &mut Swarm<behaviour::Behaviour>,
    listen: &[Multiaddr],
) -> Result<Vec<Multiaddr>, P2pError> {
    for address in listen {
        swarm
            .listen_on(address.clone())
            .map_err(|error| P2pError::Listen {
                address: address.to_string(),
                reason: error.to_string(),
            })?;
    }
    let mut bound = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bound.len() < listen.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let failed = |reason: String| P2pError::Listen {
            address: format!("{listen:?}"),
            reason,
        };
        match tokio::time::timeout(remaining, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => bound.push(address),
            Ok(SwarmEvent::ListenerError { error, .. })
            | Ok(SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            }) => return Err(failed(error.to_string())),
            Ok(_) => {}
            Err(_) => return Err(failed("not bound within 10 s".into())),
        }
    }
    Ok(bound)
}

/// `/net_info` before the first refresh.
fn first_net_info(
    swarm: &Swarm<behaviour::Behaviour>,
    config: &P2pConfig,
    local_peer_id: PeerId,
    bound: &[Multiaddr],
    external: &[Multiaddr],
) -> NetInfo {
    NetInfo {
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
    }
}

#[cfg(test)]
mod tests;
