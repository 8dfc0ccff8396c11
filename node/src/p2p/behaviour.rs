//! The libp2p behaviour and transport stack, and the address helpers the swarm task uses.

use std::time::Duration;

use libp2p::allow_block_list::{self, AllowedPeers, BlockedPeers};
use libp2p::gossipsub::{self, IdentTopic, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, identify, identity, kad, noise, ping, relay, tcp, tls, upnp,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};

use crate::config::P2pConfig;

use super::*;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    /// Only listed peers (when an allowlist is configured).
    pub(super) allowed: Toggle<allow_block_list::Behaviour<AllowedPeers>>,
    /// Revoked peers: refused, and cut off when added.
    pub(super) revoked: allow_block_list::Behaviour<BlockedPeers>,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub(super) tiles: request_response::cbor::Behaviour<TileRequest, TileResponse>,
    pub(super) identify: identify::Behaviour,
    pub(super) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(super) ping: ping::Behaviour,
    /// Circuit relay v2 client: reservations on relays, and dialling peers through them.
    pub(super) relay_client: relay::client::Behaviour,
    /// Circuit relay v2 server (`p2p.relay_server`), with its limits.
    pub(super) relay: Toggle<relay::Behaviour>,
    /// Hole punching: upgrades a relayed connection to a direct one.
    pub(super) dcutr: dcutr::Behaviour,
    /// AutoNAT v2: peers dial our candidate addresses back (client), and we do it for them
    /// (server).
    pub(super) autonat_client: Toggle<autonat::v2::client::Behaviour>,
    pub(super) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// UPnP IGD port mapping on the gateway (`p2p.upnp`).
    pub(super) upnp: Toggle<upnp::tokio::Behaviour>,
}

pub(super) fn message_id(message: &gossipsub::Message) -> MessageId {
    // Content-addressed: the same payload re-published by another node is one message.
    let digest = crate::block::Hash::digest(&message.data);
    MessageId::from(&digest.0[..20])
}

pub(super) fn behaviour(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    config: &P2pConfig,
    chain_id: &str,
    gossip_metrics: &mut prometheus_client::registry::Registry,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let max = config.max_message_bytes as usize;
    let gossipsub = gossipsub_behaviour(config, chain_id, gossip_metrics)?;
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
    let kad = (!config.static_mode).then(|| kad_behaviour(key));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(config.max_connections));
    let peer_id = key.public().to_peer_id();
    let relay = config
        .relay_server
        .then(|| relay_behaviour(peer_id, config));
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

/// Gossipsub for the three topics: the node validates every message before it is forwarded,
/// per-topic size limits, mesh sizes from the config, and a peer score that punishes invalid
/// messages only.
fn gossipsub_behaviour(
    config: &P2pConfig,
    chain_id: &str,
    gossip_metrics: &mut prometheus_client::registry::Registry,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
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
    Ok(gossipsub)
}

/// Kademlia in server mode from the start (answering peers' and seeders' queries).
fn kad_behaviour(key: &identity::Keypair) -> kad::Behaviour<kad::store::MemoryStore> {
    let peer_id = key.public().to_peer_id();
    let mut kad_config = kad::Config::new(StreamProtocol::new("/blyan/kad/1.0.0"));
    kad_config.set_query_timeout(Duration::from_secs(30));
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Answer peers' (and seeders') queries from the start; a node that learns it is
    // private turns to client mode (see `update_reachability`).
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// A circuit relay server with the config's limits on reservations and circuits.
fn relay_behaviour(peer_id: PeerId, config: &P2pConfig) -> relay::Behaviour {
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
}

pub(super) fn transport_error(error: impl std::fmt::Display) -> P2pError {
    P2pError::Transport(error.to_string())
}

/// The system's resolver settings with caching capped: under a container engine a peer's name
/// does not resolve until its task is running and healthy, and resolves to a new address after
/// the task is replaced (Docker's DNS answers with a 600 s TTL).
pub(super) fn dns_config(
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

pub(super) fn build_swarm(
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
pub(super) fn interface_ipv4(address: &Multiaddr) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
    address.iter().filter_map(|part| match part {
        Protocol::Ip4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    })
}

pub(super) fn is_relayed(address: &Multiaddr) -> bool {
    address
        .iter()
        .any(|part| matches!(part, Protocol::P2pCircuit))
}

pub(super) fn parse_addresses(field: &str, items: &[String]) -> Result<Vec<Multiaddr>, P2pError> {
    items
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse()
                .map_err(|error| P2pError::Config(format!("{field}[{index}] {text:?}: {error}")))
        })
        .collect()
}
