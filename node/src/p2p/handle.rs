//! The node's side of the swarm task: the bounded command queue and the handle.

use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::mpsc;

use super::*;

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

    /// The refusal counter, shared with the swarm task (which holds no sender: the queue
    /// closes when the node's senders are gone, which ends the task).
    pub(super) fn refused_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.refused.clone()
    }
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
