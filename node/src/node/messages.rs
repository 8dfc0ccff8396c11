//! Message faults inside the node (devnet only, `POST /admin/devnet/messages`): this node's
//! outgoing votes, proposals, transactions and block-sync messages dropped, duplicated,
//! delayed, reordered or answered by an old message, between the consensus output and the
//! wire; or, for a fault that names `peers`, what this node receives from those peers, between
//! the wire and the consensus input (gossip goes to every mesh peer at once, so a per-peer fault
//! acts where one peer's messages can be told apart: on arrival). TCP and TLS hide packet-level duplication and reordering from the node, so the harness
//! injects them here (`kind = "messages"`, `docs/CHAOS.md`). Only builds with the `devnet`
//! feature apply them; the API refuses to set one on a node not in devnet mode.

// The operator build keeps the type (the API answers that the controls are off) but never
// shapes a message.
#![cfg_attr(not(feature = "devnet"), allow(dead_code))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use libp2p::PeerId;

use crate::config::MessageFaults;
use crate::p2p::{P2pCommand, P2pEvent, Topic};

/// Old gossip messages kept for `replay_old`.
const RECENT: usize = 64;
/// Messages held for a delay at once; beyond it they go at once (every queue is bounded).
const MAX_HELD: usize = 4096;

/// What the message faults did since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MessageCounts {
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub reordered: u64,
    pub replayed: u64,
}

struct Active {
    faults: MessageFaults,
    /// `faults.peers` parsed (an incoming fault acts only on what these peers send).
    peers: Vec<PeerId>,
    rng: StdRng,
    recent: VecDeque<(Topic, Vec<u8>)>,
}

/// The message fault in force (none by default) and its counts.
#[derive(Default)]
pub struct MessageShaper {
    on: AtomicBool,
    active: Mutex<Option<Active>>,
    counts: [AtomicU64; 5],
    held: Arc<AtomicUsize>,
}

/// One message as the fault in force lets it through.
pub(crate) struct Shaped<M> {
    /// Pass these now, in this order.
    pub now: Vec<M>,
    /// Pass this one after the delay.
    pub later: Option<(Duration, M)>,
}

impl<M> Default for Shaped<M> {
    fn default() -> Self {
        Shaped {
            now: Vec::new(),
            later: None,
        }
    }
}

fn topic_kind(topic: Topic) -> &'static str {
    match topic {
        Topic::Votes => "vote",
        Topic::Proposals => "proposal",
        Topic::Txs => "tx",
    }
}

/// A message a shaper acts on: a command going out, or an event coming in from a peer.
pub(crate) trait Message: Sized {
    /// vote, proposal, tx or sync; `None`: not a message a fault acts on.
    fn kind(&self) -> Option<&'static str>;
    /// A gossip message's topic and bytes (what copies and replays are made of).
    fn gossip(&self) -> Option<(Topic, &[u8])>;
    /// A further copy of gossip `bytes` on `topic`, going the way this message goes.
    fn copy(&self, topic: Topic, bytes: Vec<u8>) -> Self;
}

impl Message for P2pCommand {
    fn kind(&self) -> Option<&'static str> {
        match self {
            P2pCommand::Publish(topic, _) | P2pCommand::Republish(topic, _) => {
                Some(topic_kind(*topic))
            }
            P2pCommand::Sync { .. } | P2pCommand::Respond { .. } => Some("sync"),
            _ => None,
        }
    }

    fn gossip(&self) -> Option<(Topic, &[u8])> {
        match self {
            P2pCommand::Publish(topic, bytes) | P2pCommand::Republish(topic, bytes) => {
                Some((*topic, bytes))
            }
            _ => None,
        }
    }

    /// A gossip copy with its own message id (`Republish`), so that the mesh carries it.
    fn copy(&self, topic: Topic, bytes: Vec<u8>) -> Self {
        P2pCommand::Republish(topic, bytes)
    }
}

impl Message for P2pEvent {
    fn kind(&self) -> Option<&'static str> {
        match self {
            P2pEvent::Gossip { topic, .. } => Some(topic_kind(*topic)),
            P2pEvent::SyncRequest { .. } | P2pEvent::SyncResponse { .. } => Some("sync"),
            _ => None,
        }
    }

    fn gossip(&self) -> Option<(Topic, &[u8])> {
        match self {
            P2pEvent::Gossip { topic, data, .. } => Some((*topic, data)),
            _ => None,
        }
    }

    /// The same delivery again (same sender and message id) carrying `bytes`.
    fn copy(&self, topic: Topic, bytes: Vec<u8>) -> Self {
        match self {
            P2pEvent::Gossip { source, id, .. } => P2pEvent::Gossip {
                topic,
                source: *source,
                id: id.clone(),
                data: bytes,
            },
            // Only gossip is copied (`gossip` is `None` for the rest).
            _ => unreachable!("only gossip events are copied"),
        }
    }
}

/// The peer an incoming event came from (the gossip's forwarder, a sync request's or
/// answer's peer).
pub(crate) fn peer_of(event: &P2pEvent) -> Option<PeerId> {
    match event {
        P2pEvent::Gossip { source, .. } => Some(*source),
        P2pEvent::SyncRequest { peer, .. } | P2pEvent::SyncResponse { peer, .. } => Some(*peer),
        _ => None,
    }
}

impl MessageShaper {
    /// Puts `faults` in force (its generator seeded afresh), or ends the one in force.
    pub fn set(&self, faults: Option<MessageFaults>) {
        let mut active = self.active.lock().expect("message faults lock poisoned");
        *active = faults.map(|faults| Active {
            rng: StdRng::seed_from_u64(faults.seed),
            peers: faults
                .peers
                .iter()
                .filter_map(|peer| peer.parse().ok())
                .collect(),
            faults,
            recent: VecDeque::with_capacity(RECENT),
        });
        self.on.store(active.is_some(), Ordering::Release);
    }

    /// The fault in force and what the faults did so far.
    pub fn status(&self) -> (Option<MessageFaults>, MessageCounts) {
        let active = self.active.lock().expect("message faults lock poisoned");
        let count = |i: usize| self.counts[i].load(Ordering::Relaxed);
        let counts = MessageCounts {
            dropped: count(0),
            duplicated: count(1),
            delayed: count(2),
            reordered: count(3),
            replayed: count(4),
        };
        (active.as_ref().map(|a| a.faults.clone()), counts)
    }

    fn note(&self, which: usize) {
        self.counts[which].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a message fault is in force (one atomic load: the node's send path asks it
    /// before anything else).
    pub(crate) fn active(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Whether the fault in force acts on what `peer` sends (an incoming fault names peers).
    pub(crate) fn concerns(&self, peer: &PeerId) -> bool {
        let active = self.active.lock().expect("message faults lock poisoned");
        active.as_ref().is_some_and(|a| a.peers.contains(peer))
    }

    /// What becomes of `command` under the fault in force.
    pub(crate) fn shape<M: Message>(&self, command: M) -> Shaped<M> {
        let pass = |command| Shaped {
            now: vec![command],
            later: None,
        };
        if !self.on.load(Ordering::Acquire) {
            return pass(command);
        }
        let Some(kind) = command.kind() else {
            return pass(command);
        };
        let mut guard = self.active.lock().expect("message faults lock poisoned");
        let Some(active) = guard.as_mut().filter(|a| a.faults.acts_on(kind)) else {
            return pass(command);
        };
        // The scalars only: cloning the fault (its `types`) for every message would allocate.
        let MessageFaults {
            drop,
            duplicate,
            delay_ms,
            reorder,
            replay_old,
            ..
        } = active.faults;
        let mut draw = |p: f64| p > 0.0 && active.rng.gen_bool(p);
        if draw(drop) {
            self.note(0);
            return Shaped::default();
        }
        let (duplicate, replay) = (draw(duplicate), draw(replay_old));
        let reorder = draw(reorder);
        let mut shaped = Shaped::default();
        if let Some((topic, bytes)) = command.gossip() {
            if replay && !active.recent.is_empty() {
                let pick = active.rng.gen_range(0..active.recent.len());
                let (old_topic, old) = active.recent[pick].clone();
                shaped.now.push(command.copy(old_topic, old));
                self.note(4);
            }
            if duplicate {
                shaped.now.push(command.copy(topic, bytes.to_vec()));
                self.note(1);
            }
            if active.recent.len() == RECENT {
                active.recent.pop_front();
            }
            active.recent.push_back((topic, bytes.to_vec()));
        }
        let mut delay = Duration::from_millis(delay_ms);
        if reorder {
            let extra = active.rng.gen_range(1..=delay_ms.max(100));
            delay += Duration::from_millis(extra);
            self.note(3);
        }
        if delay.is_zero() || self.held.load(Ordering::Relaxed) >= MAX_HELD {
            shaped.now.insert(0, command);
        } else {
            self.note(2);
            shaped.later = Some((delay, command));
        }
        shaped
    }

    /// Passes `message` on with `pass` after `delay` (a task; counted while held).
    pub(crate) fn later<M: Send + 'static>(
        &self,
        delay: Duration,
        message: M,
        pass: impl FnOnce(M) + Send + 'static,
    ) {
        let held = self.held.clone();
        held.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pass(message);
            held.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(n: u8) -> P2pCommand {
        P2pCommand::Publish(Topic::Votes, vec![n])
    }

    fn bytes(command: &P2pCommand) -> (bool, Vec<u8>) {
        match command {
            P2pCommand::Publish(_, b) => (false, b.clone()),
            P2pCommand::Republish(_, b) => (true, b.clone()),
            _ => panic!("not gossip"),
        }
    }

    #[test]
    fn without_a_fault_every_message_goes_as_it_came() {
        let shaper = MessageShaper::default();
        let shaped = shaper.shape(vote(1));
        assert_eq!(
            shaped.now.iter().map(bytes).collect::<Vec<_>>(),
            [(false, vec![1])]
        );
        assert!(shaped.later.is_none());
    }

    #[test]
    fn each_fault_does_what_it_names_and_only_to_its_types() {
        let shaper = MessageShaper::default();
        let faults = |f: MessageFaults| Some(MessageFaults { seed: 3, ..f });
        shaper.set(faults(MessageFaults {
            drop: 1.0,
            types: vec!["vote".into()],
            ..Default::default()
        }));
        assert!(shaper.shape(vote(1)).now.is_empty(), "a vote is dropped");
        let tx = shaper.shape(P2pCommand::Publish(Topic::Txs, vec![9]));
        assert_eq!(tx.now.len(), 1, "a transaction is not a vote");
        shaper.set(faults(MessageFaults {
            duplicate: 1.0,
            ..Default::default()
        }));
        let twice: Vec<_> = shaper.shape(vote(2)).now.iter().map(bytes).collect();
        assert_eq!(twice, [(false, vec![2]), (true, vec![2])]);
        shaper.set(faults(MessageFaults {
            replay_old: 1.0,
            ..Default::default()
        }));
        assert_eq!(shaper.shape(vote(3)).now.len(), 1, "nothing old yet");
        let replayed: Vec<_> = shaper.shape(vote(4)).now.iter().map(bytes).collect();
        assert_eq!(replayed, [(false, vec![4]), (true, vec![3])]);
        shaper.set(faults(MessageFaults {
            delay_ms: 50,
            ..Default::default()
        }));
        let held = shaper.shape(vote(5));
        assert!(held.now.is_empty());
        assert_eq!(held.later.map(|(d, _)| d), Some(Duration::from_millis(50)));
        shaper.set(None);
        assert_eq!(shaper.shape(vote(6)).now.len(), 1);
        let (now, counts) = shaper.status();
        assert_eq!(now, None);
        assert_eq!(
            counts,
            MessageCounts {
                dropped: 1,
                duplicated: 1,
                delayed: 1,
                reordered: 0,
                replayed: 1
            }
        );
    }

    #[test]
    fn an_incoming_fault_acts_only_on_the_peers_it_names_and_its_copies_keep_the_sender() {
        let (named, other) = (PeerId::random(), PeerId::random());
        let shaper = MessageShaper::default();
        shaper.set(Some(MessageFaults {
            duplicate: 1.0,
            peers: vec![named.to_string()],
            seed: 1,
            ..Default::default()
        }));
        assert!(shaper.concerns(&named) && !shaper.concerns(&other));
        let event = P2pEvent::Gossip {
            topic: Topic::Votes,
            source: named,
            id: libp2p::gossipsub::MessageId::new(b"m"),
            data: vec![7],
        };
        assert_eq!(peer_of(&event), Some(named));
        let shaped = shaper.shape(event);
        assert_eq!(shaped.now.len(), 2, "the vote and its copy");
        for event in &shaped.now {
            let P2pEvent::Gossip { source, data, .. } = event else {
                panic!("not gossip")
            };
            assert_eq!((*source, data.as_slice()), (named, [7u8].as_slice()));
        }
        shaper.set(Some(MessageFaults {
            drop: 1.0,
            peers: vec![named.to_string()],
            ..Default::default()
        }));
        let event = P2pEvent::SyncFailed {
            peer: named,
            reason: "x".into(),
        };
        assert_eq!(
            shaper.shape(event).now.len(),
            1,
            "not a message a fault acts on"
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_fate_for_the_same_messages() {
        let fates = || {
            let shaper = MessageShaper::default();
            shaper.set(Some(MessageFaults {
                drop: 0.3,
                duplicate: 0.3,
                reorder: 0.3,
                seed: 11,
                ..Default::default()
            }));
            (0..200u8)
                .map(|n| {
                    let shaped = shaper.shape(vote(n));
                    (shaped.now.len(), shaped.later.map(|(d, _)| d))
                })
                .collect::<Vec<_>>()
        };
        let first = fates();
        assert_eq!(first, fates());
        let dropped = first.iter().filter(|(n, l)| *n == 0 && l.is_none()).count();
        assert!(
            (30..=90).contains(&dropped),
            "{dropped} of 200 dropped at p = 0.3"
        );
    }
}
