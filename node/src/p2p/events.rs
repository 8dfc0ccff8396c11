//! The swarm task's answer to each swarm event: connections, gossip, sync and tile
//! exchanges, identify, listeners, relays, hole punching, AutoNAT, UPnP and ping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::SwarmEvent;
use libp2p::{autonat, dcutr, identify, ping, relay, upnp, Multiaddr, PeerId};

use super::*;

impl Runner {
    pub(super) async fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint).await,
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => self.on_closed(peer_id, connection_id, cause).await,
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.on_dial_failed(peer_id, &error)
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
            SwarmEvent::Behaviour(event) => self.on_behaviour(event).await,
            SwarmEvent::NewListenAddr { address, .. } if !is_relayed(&address) => {
                self.autonat.local_ips.extend(interface_ipv4(&address));
            }
            SwarmEvent::NewListenAddr { address, .. } => {
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
            } => self.on_listener_closed(listener_id, &addresses, reason),
            _ => {}
        }
    }

    async fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                self.on_gossip(propagation_source, message_id, message)
                    .await
            }
            BehaviourEvent::Sync(event) => self.on_sync(event).await,
            BehaviourEvent::Tiles(event) => self.on_tiles(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            BehaviourEvent::RelayClient(event) => match event {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    self.relays.reserved.insert(relay_peer_id);
                }
                other => tracing::debug!(event = ?other, "relay client"),
            },
            BehaviourEvent::Relay(event) => match event {
                relay::Event::CircuitReqAccepted { .. } => self.relay_circuits += 1,
                relay::Event::CircuitClosed { .. } => {
                    self.relay_circuits = self.relay_circuits.saturating_sub(1)
                }
                other => tracing::debug!(event = ?other, "relay server"),
            },
            BehaviourEvent::Dcutr(event) => self.on_hole_punch(event),
            BehaviourEvent::AutonatClient(event) => self.on_autonat(event),
            BehaviourEvent::Upnp(event) => self.on_upnp(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.rtt.insert(peer, rtt);
            }
            _ => {}
        }
    }

    async fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
    ) {
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

    async fn on_closed(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        cause: Option<libp2p::swarm::ConnectionError>,
    ) {
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

    fn on_dial_failed(&mut self, peer_id: Option<PeerId>, error: &libp2p::swarm::DialError) {
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
        if let libp2p::swarm::DialError::Denied { cause } = error {
            self.count_denied(cause);
        }
        tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
    }

    async fn on_gossip(&mut self, source: PeerId, id: MessageId, message: gossipsub::Message) {
        match (self.topics.get(&message.topic), untagged(message.data)) {
            (Some(topic), Some(data)) => {
                let topic = *topic;
                self.emit(P2pEvent::Gossip {
                    topic,
                    source,
                    id,
                    data,
                })
                .await
            }
            // Not one of our topics, or too short to carry a copy tag.
            _ => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, MessageAcceptance::Reject);
            }
        }
    }

    async fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
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
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.emit(P2pEvent::SyncFailed {
                    peer,
                    reason: error.to_string(),
                })
                .await
            }
            _ => {}
        }
    }

    fn on_tiles(&mut self, event: request_response::Event<TileRequest, TileResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
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
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.tile_replies.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, peer_id: PeerId, info: identify::Info) {
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

    fn on_listener_closed(
        &mut self,
        listener_id: ListenerId,
        addresses: &[Multiaddr],
        reason: Result<(), std::io::Error>,
    ) {
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

    fn on_hole_punch(&mut self, event: dcutr::Event) {
        let dcutr::Event {
            remote_peer_id,
            result,
        } = event;
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

    fn on_autonat(&mut self, event: autonat::v2::client::Event) {
        let autonat::v2::client::Event {
            tested_addr,
            server,
            result,
            ..
        } = event;
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

    fn on_upnp(&mut self, event: upnp::Event) {
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
}
