//! The swarm task's answer to each command from the node.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::*;

impl Runner {
    pub(super) fn on_command(&mut self, command: P2pCommand) {
        match command {
            P2pCommand::ReloadAccess => self.reload_access(true),
            P2pCommand::Probe {
                addresses,
                upgrade_wait,
                timeout,
                reply,
            } => self.start_probe(addresses, upgrade_wait, timeout, reply),
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
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            P2pCommand::Sync { peer, request } => {
                self.swarm.behaviour_mut().sync.send_request(&peer, request);
            }
            P2pCommand::Respond { channel, response } => {
                let sync = &mut self.swarm.behaviour_mut().sync;
                if sync.send_response(channel, response).is_err() {
                    tracing::debug!("sync response dropped: the requester went away");
                }
            }
            P2pCommand::FetchTile {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .tiles
                    .send_request(&peer, request);
                self.tile_replies.insert(id, reply);
            }
            P2pCommand::RespondTile { channel, response } => {
                let tiles = &mut self.swarm.behaviour_mut().tiles;
                if tiles.send_response(channel, response).is_err() {
                    tracing::debug!("tile response dropped: the requester went away");
                }
            }
        }
    }

    /// Starts a probe of one peer (its addresses all name it), unless one is running: the
    /// peer is disconnected first, and the bootstrap redial leaves it to the probe.
    fn start_probe(
        &mut self,
        addresses: Vec<Multiaddr>,
        upgrade_wait: Duration,
        timeout: Duration,
        reply: tokio::sync::oneshot::Sender<ProbeOutcome>,
    ) {
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
    }

    /// Hands a peer's tile request to the inference service, or answers "unavailable" at once
    /// when no service took the queue (a node without inference), the service is gone, or too
    /// many requests wait.
    pub(super) fn on_tile_request(&mut self, inbound: TileInbound) {
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
}
