//! Message faults inside the node (devnet only, `POST /admin/devnet/messages`): this node's
//! outgoing votes, proposals, transactions and block-sync messages dropped, duplicated,
//! delayed, reordered or answered by an old message, between the consensus output and the
//! wire. TCP and TLS hide packet-level duplication and reordering from the node, so the harness
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

use crate::config::MessageFaults;
use crate::p2p::{P2pCommand, Topic};

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

/// One outgoing command as the fault in force lets it go.
#[derive(Default)]
pub(crate) struct Shaped {
    /// Send these now, in this order.
    pub now: Vec<P2pCommand>,
    /// Send this one after the delay.
    pub later: Option<(Duration, P2pCommand)>,
}

fn kind(command: &P2pCommand) -> Option<&'static str> {
    match command {
        P2pCommand::Publish(topic, _) | P2pCommand::Republish(topic, _) => Some(match topic {
            Topic::Votes => "vote",
            Topic::Proposals => "proposal",
            Topic::Txs => "tx",
        }),
        P2pCommand::Sync { .. } | P2pCommand::Respond { .. } => Some("sync"),
        _ => None,
    }
}

impl MessageShaper {
    /// Puts `faults` in force (its generator seeded afresh), or ends the one in force.
    pub fn set(&self, faults: Option<MessageFaults>) {
        let mut active = self.active.lock().expect("message faults lock poisoned");
        *active = faults.map(|faults| Active {
            rng: StdRng::seed_from_u64(faults.seed),
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

    /// What becomes of `command` under the fault in force.
    pub(crate) fn shape(&self, command: P2pCommand) -> Shaped {
        let pass = |command| Shaped {
            now: vec![command],
            later: None,
        };
        if !self.on.load(Ordering::Acquire) {
            return pass(command);
        }
        let Some(kind) = kind(&command) else {
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
        if let P2pCommand::Publish(topic, bytes) | P2pCommand::Republish(topic, bytes) = &command {
            if replay && !active.recent.is_empty() {
                let pick = active.rng.gen_range(0..active.recent.len());
                let (old_topic, old) = active.recent[pick].clone();
                shaped.now.push(P2pCommand::Republish(old_topic, old));
                self.note(4);
            }
            if duplicate {
                shaped
                    .now
                    .push(P2pCommand::Republish(*topic, bytes.clone()));
                self.note(1);
            }
            if active.recent.len() == RECENT {
                active.recent.pop_front();
            }
            active.recent.push_back((*topic, bytes.clone()));
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

    /// Sends `command` through `commands` after `delay` (a task; counted while held).
    pub(crate) fn send_later(
        &self,
        delay: Duration,
        command: P2pCommand,
        commands: crate::p2p::P2pCommands,
    ) {
        let held = self.held.clone();
        held.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = commands.send(command);
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
