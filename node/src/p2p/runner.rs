//! The swarm task (an actor): its state and main loop, bootstrap dialling, probes, relay
//! reservations, AutoNAT reachability, the access lists and `/net_info`. What it does with each
//! swarm event is in `events.rs`, with each command from the node in `commands.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::allow_block_list::{self};
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::SwarmEvent;
use libp2p::{kad, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;

use super::access::WatchedList;
use crate::config::ReserveRelays;
use crate::metrics::{refuse, RefusedInputs};

use super::*;

/// A probe in progress.
pub(super) struct Probe {
    pub(super) peer: PeerId,
    pub(super) addresses: Vec<Multiaddr>,
    /// When the dial went out (`None`: waiting for the old connections to close).
    pub(super) dialled: Option<Instant>,
    /// A dial is in flight (cleared when it fails; the probe dials again until its timeout).
    pub(super) pending: bool,
    pub(super) dials: u32,
    pub(super) last_dial: Option<Instant>,
    pub(super) started: Instant,
    pub(super) upgrade_wait: Duration,
    pub(super) timeout: Duration,
    pub(super) outcome: ProbeOutcome,
    pub(super) reply: tokio::sync::oneshot::Sender<ProbeOutcome>,
}

pub(super) struct Runner {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) chain_id: String,
    pub(super) topics: HashMap<TopicHash, Topic>,
    pub(super) bootstrap: Vec<Multiaddr>,
    pub(super) static_mode: bool,
    pub(super) events: mpsc::Sender<P2pEvent>,
    pub(super) info: Arc<Mutex<NetInfo>>,
    pub(super) connected: HashMap<PeerId, PeerConnections>,
    pub(super) rtt: HashMap<PeerId, Duration>,
    pub(super) dialing: HashSet<PeerId>,
    pub(super) tile_requests: mpsc::Sender<TileInbound>,
    /// The receiving end of `tile_requests` until the inference service takes it.
    pub(super) tile_queue: Arc<Mutex<Option<mpsc::Receiver<TileInbound>>>>,
    pub(super) tile_replies: HashMap<
        request_response::OutboundRequestId,
        tokio::sync::oneshot::Sender<Result<TileResponse, String>>,
    >,
    pub(super) allowlist: Option<WatchedList>,
    pub(super) revoked: Option<WatchedList>,
    pub(super) refused: RefusedInputs,
    pub(super) relays: Relays,
    pub(super) autonat: AutonatState,
    /// Bootstrap addresses whose last dial failed, and when (skipped for [`DIAL_BACKOFF`] while
    /// the peer has other addresses, e.g. through another relay).
    pub(super) failed_dials: HashMap<Multiaddr, Instant>,
    /// The address each pending bootstrap dial went to.
    pub(super) dial_address: HashMap<PeerId, Multiaddr>,
    /// Our addresses as peers reported them (identify), most recent first.
    pub(super) observed: Vec<Multiaddr>,
    /// Circuits this node relays now (as a relay server).
    pub(super) relay_circuits: u64,
    pub(super) probes: Vec<Probe>,
    /// [`P2pCommands`]' refusals (the runner holds no sender: the queue closes when the node's
    /// senders are gone, which ends the task).
    pub(super) commands_refused: Arc<std::sync::atomic::AtomicU64>,
}

/// How long a probe waits for the old connections to its peer to close before it dials beside
/// them (a peer that redials at once would otherwise keep the probe from ever dialling).
pub(super) const PROBE_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a bootstrap address that failed is passed over for the peer's other addresses.
pub(super) const DIAL_BACKOFF: Duration = Duration::from_secs(10);
/// AutoNAT dial-back failures (with no address confirmed) before a node counts as private.
/// AutoNAT v2 tests each candidate address once, so one failure is already a verdict on an
/// address peers saw; a later success makes the node public again.
pub(super) const PRIVATE_AFTER_FAILURES: u64 = 1;

/// One connection to a peer: its remote address, direction, and whether it runs through a
/// relay (the endpoint says so; an inbound relayed connection's remote address is only
/// `/p2p/<peer>`).
pub(super) struct Link {
    pub(super) address: Multiaddr,
    pub(super) direction: &'static str,
    pub(super) relayed: bool,
    /// When it was established (a probe counts only the links made after its dial).
    pub(super) since: Instant,
}

/// A connected peer's connections (a relayed one and, after hole punching, a direct one).
pub(super) struct PeerConnections {
    pub(super) since: Instant,
    pub(super) first_relayed: bool,
    pub(super) connections: HashMap<ConnectionId, Link>,
}

impl PeerConnections {
    /// The connection to report: a direct one if there is one.
    pub(super) fn best(&self) -> Option<&Link> {
        self.connections
            .values()
            .find(|link| !link.relayed)
            .or_else(|| self.connections.values().next())
    }

    pub(super) fn is_direct(&self) -> bool {
        self.connections.values().any(|link| !link.relayed)
    }

    pub(super) fn direct_addresses(&self) -> impl Iterator<Item = &Link> {
        self.connections.values().filter(|link| !link.relayed)
    }
}

#[derive(Default)]
pub(super) struct AutonatState {
    pub(super) successes: u64,
    pub(super) failures: u64,
    /// Dial-backs from peers on our own subnet: they say nothing about the outside.
    pub(super) lan_successes: u64,
    /// Successful tests: the address tested and whether the server was on our subnet
    /// (re-judged when we learn later that we are behind NAT).
    pub(super) passed: Vec<(Multiaddr, bool)>,
    /// `p2p.external_addresses` is set: the operator declares the node reachable.
    pub(super) declared: bool,
    pub(super) reachability: Reachability,
    /// Our interface addresses (not loopback), from the listeners.
    pub(super) local_ips: HashSet<std::net::Ipv4Addr>,
}

impl AutonatState {
    /// Whether `address` is on one of our own interfaces (or loopback).
    pub(super) fn is_ours(&self, address: &Multiaddr) -> bool {
        address.iter().any(|part| match part {
            Protocol::Ip4(ip) => ip.is_loopback() || self.local_ips.contains(&ip),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    }

    /// Whether `address` is on the /24 of one of our interfaces (a LAN neighbour, e.g. another
    /// node behind the same NAT). Loopback devnets are their own world, so 127/8 never is.
    pub(super) fn on_our_lan(&self, address: &Multiaddr) -> bool {
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
pub(super) struct Relays {
    pub(super) mode: ReserveRelays,
    pub(super) wanted: usize,
    /// `p2p.relays`.
    pub(super) configured: Vec<(PeerId, Multiaddr)>,
    /// Connected peers that serve as relays (identify lists the hop protocol).
    pub(super) discovered: HashMap<PeerId, Multiaddr>,
    /// Circuit listeners: the relay each is on and when it started.
    pub(super) listeners: HashMap<ListenerId, (PeerId, Instant)>,
    /// Relays that accepted our reservation.
    pub(super) reserved: HashSet<PeerId>,
    /// Relays to leave alone until then (a reservation failed or the relay went away).
    pub(super) retry_after: HashMap<PeerId, Instant>,
    pub(super) relayed_addresses: Vec<Multiaddr>,
}

impl Relays {
    pub(super) fn candidates(&self) -> Vec<(PeerId, Multiaddr)> {
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
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<P2pCommand>) {
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

    pub(super) fn dial_missing(&mut self) {
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
    pub(super) fn advance_probes(&mut self) {
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
    pub(super) fn wants_relays(&self) -> bool {
        match self.relays.mode {
            ReserveRelays::Always => true,
            ReserveRelays::Never => false,
            ReserveRelays::Auto => self.autonat.reachability == Reachability::Private,
        }
    }

    /// Keeps `relay_reservations` circuit listeners on live relays (or none when not wanted).
    pub(super) fn maintain_relays(&mut self) {
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
    pub(super) fn discover_relay(&mut self, peer: PeerId, listen: &[Multiaddr]) {
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

    pub(super) fn update_reachability(&mut self) {
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
    pub(super) fn reload_access(&mut self, force: bool) {
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
    pub(super) fn count_denied(&mut self, cause: &libp2p::swarm::ConnectionDenied) {
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

    pub(super) fn refresh_info(&mut self) {
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

    pub(super) fn publish(&mut self, topic: Topic, data: Vec<u8>) {
        let topic = IdentTopic::new(topic.name(&self.chain_id));
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::trace!("published with no peers")
            }
            Err(error) => tracing::debug!(%error, "publish failed"),
        }
    }

    pub(super) async fn emit(&mut self, event: P2pEvent) {
        // The node went away: nothing left to tell.
        let _ = self.events.send(event).await;
    }
}
