//! A deterministic simulator: N in-process validators running the real consensus core on a
//! simulated network, all driven by one seeded scheduler. Same seed, same run, event for event.
//!
//! Fault model (see `docs/CONSENSUS.md`): random delays (reordering), slow messages, loss
//! repaired by retransmission after a delay, partitions during which messages between sides wait
//! for the heal, crash and restart of nodes (a restarted node keeps its chain and its signer
//! record, and loses the rest), and Byzantine validators ([`ByzantineKind`]). Faults stop at the
//! end of the chaos window; after it the network is synchronous, and every honest validator must
//! reach the target height before the deadline.
//!
//! Checks: safety (no two honest validators decide different values at one height), liveness
//! (every honest validator decides every height by the deadline), and evidence (every
//! equivocation whose two votes reached honest validators is reported by one of them).

mod plan;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;

use ed25519_dalek::{Signer as _, SigningKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::signer::{MemoryStore, Signer};
use super::state_machine::{Consensus, Effect, Input, Timeout};
use super::types::{
    verify_votes_batch, EquivocationKey, Height, Proposal, Round, SignedProposal, SignedVote,
    ValueId, Vote,
};
use super::validators::{Validator, ValidatorSet};
use crate::block::Hash;

pub use plan::{ByzantineKind, Crash, Partition, Plan, SimConfig, CHAOS_WINDOW_US};

const CHAIN_ID: &str = "blyan-sim";
/// Relays go to every peer in small networks and to this many random peers in large ones.
const RELAY_FANOUT: usize = 6;
/// Messages of future heights a node buffers before it drops more.
const MAX_BUFFERED: usize = 20_000;
/// Votes remembered per node for equivocation detection, in heights below the current one.
const WATCH_HEIGHTS: Height = 64;
/// Message digests remembered for relay deduplication before the set is reset.
const MAX_SEEN: usize = 200_000;
/// How long a finished scenario keeps delivering messages in flight.
const DRAIN_US: u64 = 500_000;
/// Hard bound on events per scenario, so that a bug cannot loop forever.
const MAX_EVENTS: u64 = 50_000_000;

/// The result of one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub safety_violation: Option<String>,
    pub liveness_failure: Option<String>,
    /// Equivocations whose conflicting votes both reached honest validators.
    pub equivocations: usize,
    /// Of those, the ones no honest validator reported.
    pub evidence_missed: usize,
    /// Rounds needed per height (decision round + 1), from the first honest decision.
    pub rounds_per_height: Vec<u32>,
    pub events: u64,
    pub sim_time_us: u64,
    /// A digest of every event in order: equal for two runs of one seed.
    pub trace: u64,
    /// Signatures the double-sign protection refused (restarted honest validators).
    pub refused_signatures: u64,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.safety_violation.is_none()
            && self.liveness_failure.is_none()
            && self.evidence_missed == 0
    }
}

#[derive(Clone, Debug)]
struct Certificate {
    proposal: SignedProposal,
    precommits: Vec<SignedVote>,
}

#[derive(Clone, Debug)]
enum Message {
    Proposal(SignedProposal),
    Vote(SignedVote),
    Certificate(Rc<Certificate>),
    /// "I am at this height": sent after a restart; peers answer with what it missed.
    Status(Height),
}

impl Message {
    fn height(&self) -> Height {
        match self {
            Message::Proposal(p) => p.proposal.height,
            Message::Vote(v) => v.vote.height,
            Message::Certificate(c) => c.proposal.proposal.height,
            Message::Status(height) => *height,
        }
    }

    fn digest(&self) -> u64 {
        match self {
            Message::Proposal(p) => {
                u64::from_le_bytes(p.signature.to_bytes()[..8].try_into().expect("8 bytes"))
            }
            Message::Vote(v) => {
                u64::from_le_bytes(v.signature.to_bytes()[..8].try_into().expect("8 bytes"))
            }
            Message::Certificate(c) => c.proposal.proposal.height ^ 0xC3C3,
            Message::Status(height) => *height ^ 0x5757,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Rc<Message>,
    },
    Timer {
        node: usize,
        incarnation: u32,
        timeout: Timeout,
    },
    StartHeight {
        node: usize,
        incarnation: u32,
        height: Height,
    },
    Crash(usize),
    Restart(usize),
}

struct Scheduled {
    time_us: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time_us, self.sequence) == (other.time_us, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_us, self.sequence).cmp(&(other.time_us, other.sequence))
    }
}

struct Node {
    byzantine: Option<ByzantineKind>,
    key: SigningKey,
    alive: bool,
    incarnation: u32,
    core: Consensus,
    signer: Signer<MemoryStore>,
    /// Persisted across crashes: the decided chain and its certificates.
    chain: Vec<ValueId>,
    certificates: Vec<Rc<Certificate>>,
    /// Lost on crash.
    own_messages: Vec<Rc<Message>>,
    future: Vec<(usize, Rc<Message>)>,
    seen: HashSet<u64>,
    watched: HashMap<EquivocationKey, SignedVote>,
    certificates_sent: HashSet<(usize, Height)>,
}

/// One scenario being run.
struct Sim {
    seed: u64,
    config: SimConfig,
    plan: Plan,
    rng: StdRng,
    now_us: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<Node>,
    /// What the equivocating proposers sent each peer, by height and round.
    adversary_proposals: HashMap<(Height, Round, usize), ValueId>,
    /// The adversary's split of the honest validators into two sides (alternating by index).
    side: Vec<usize>,
    validator_sets: Vec<ValidatorSet>,
    verified: HashSet<[u8; 64]>,
    decisions: Vec<Option<(usize, ValueId, Round)>>,
    safety_violation: Option<String>,
    /// Byzantine votes delivered to honest nodes: which values per equivocation key.
    delivered_byzantine: HashMap<EquivocationKey, Vec<Option<ValueId>>>,
    reported: HashSet<EquivocationKey>,
    events: u64,
    trace: u64,
    refused: u64,
    debug: bool,
}

fn mix(trace: u64, value: u64) -> u64 {
    (trace ^ value)
        .wrapping_mul(0x100_0000_01b3)
        .rotate_left(29)
}

fn value_for(height: Height, round: Round, proposer: u32, salt: u8) -> ValueId {
    let mut bytes = [0u8; 17];
    bytes[..8].copy_from_slice(&height.to_be_bytes());
    bytes[8..12].copy_from_slice(&round.to_be_bytes());
    bytes[12..16].copy_from_slice(&proposer.to_be_bytes());
    bytes[16] = salt;
    Hash::digest(&bytes)
}

/// Runs one scenario.
pub fn run(config: &SimConfig, seed: u64) -> Outcome {
    assert!(config.validators >= 1, "at least one validator");
    assert!(
        config.byzantine <= config.validators,
        "byzantine <= validators"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = Plan::draw(config, &mut rng);
    let mut sim = Sim::new(seed, config.clone(), plan, rng);
    sim.run()
}

impl Sim {
    fn new(seed: u64, config: SimConfig, plan: Plan, rng: StdRng) -> Sim {
        let keys: Vec<SigningKey> = (0..config.validators)
            .map(|index| {
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
                secret[8..16].copy_from_slice(&seed.to_be_bytes());
                SigningKey::from_bytes(&secret)
            })
            .collect();
        let genesis = ValidatorSet::new(
            keys.iter()
                .map(|key| Validator {
                    public_key: key.verifying_key(),
                    power: 10,
                })
                .collect(),
        )
        .expect("distinct keys, non-zero power");
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let byzantine = plan.byzantine[index];
                let mut core = Consensus::new(plan.params, Some(index as u32), genesis.clone());
                core.set_ignore_lock(
                    config.broken_lock || byzantine == Some(ByzantineKind::Amnesia),
                );
                Node {
                    byzantine,
                    key: key.clone(),
                    alive: byzantine != Some(ByzantineKind::Silent),
                    incarnation: 0,
                    core,
                    signer: Signer::new(key.clone(), CHAIN_ID, MemoryStore::default())
                        .expect("memory store"),
                    chain: Vec::new(),
                    certificates: Vec::new(),
                    own_messages: Vec::new(),
                    future: Vec::new(),
                    seen: HashSet::new(),
                    watched: HashMap::new(),
                    certificates_sent: HashSet::new(),
                }
            })
            .collect();
        let mut side = vec![0; config.validators];
        let mut honest_seen = 0;
        for (index, slot) in side.iter_mut().enumerate() {
            if plan.byzantine[index].is_none() {
                *slot = honest_seen % 2;
                honest_seen += 1;
            }
        }
        Sim {
            seed,
            side,
            adversary_proposals: HashMap::new(),
            decisions: vec![None; config.heights as usize + 1],
            config,
            plan,
            rng,
            now_us: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            nodes,
            validator_sets: vec![genesis],
            verified: HashSet::new(),
            safety_violation: None,
            delivered_byzantine: HashMap::new(),
            reported: HashSet::new(),
            events: 0,
            trace: seed,
            refused: 0,
            debug: std::env::var_os("BLYAN_SIM_DEBUG").is_some(),
        }
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled {
            time_us: at_us,
            sequence: self.sequence,
            event,
        }));
    }

    /// Validator set of `height` (1-based).
    fn validators(&mut self, height: Height) -> ValidatorSet {
        while self.validator_sets.len() < height as usize {
            let next = self.validator_sets.last().expect("genesis").next_height();
            self.validator_sets.push(next);
        }
        self.validator_sets[height as usize - 1].clone()
    }

    fn honest(&self, node: usize) -> bool {
        self.nodes[node].byzantine.is_none()
    }

    fn done(&self) -> bool {
        (0..self.nodes.len())
            .filter(|node| self.honest(*node))
            .all(|node| self.nodes[node].chain.len() as u64 >= self.config.heights)
    }

    fn run(&mut self) -> Outcome {
        for crash in self.plan.crashes.clone() {
            self.schedule(crash.at_us, Event::Crash(crash.node));
            self.schedule(crash.restart_us, Event::Restart(crash.node));
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node].alive {
                self.schedule(
                    0,
                    Event::StartHeight {
                        node,
                        incarnation: 0,
                        height: 1,
                    },
                );
            }
        }
        let mut drain_until = None;
        while let Some(Reverse(next)) = self.queue.pop() {
            let stop = drain_until.unwrap_or(self.plan.deadline_us);
            if next.time_us > stop || self.events >= MAX_EVENTS {
                break;
            }
            self.now_us = next.time_us;
            self.events += 1;
            self.trace = mix(self.trace, next.time_us ^ (next.sequence << 20));
            self.dispatch(next.event);
            if self.safety_violation.is_some() {
                break;
            }
            // Once every honest validator is done, let messages in flight land (for evidence).
            if drain_until.is_none() && self.done() {
                drain_until = Some(self.now_us + DRAIN_US);
            }
        }
        self.outcome()
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, message } => {
                self.trace = mix(self.trace, message.digest() ^ ((to as u64) << 48));
                if self.nodes[to].alive {
                    self.receive(to, from, message);
                }
            }
            Event::Timer {
                node,
                incarnation,
                timeout,
            } => {
                if self.nodes[node].alive && self.nodes[node].incarnation == incarnation {
                    self.input(node, Input::Timeout(timeout));
                }
            }
            Event::StartHeight {
                node,
                incarnation,
                height,
            } => {
                if self.nodes[node].alive && self.nodes[node].incarnation == incarnation {
                    self.start_height(node, height);
                }
            }
            Event::Crash(node) => self.crash(node),
            Event::Restart(node) => self.restart(node),
        }
    }

    fn start_height(&mut self, node: usize, height: Height) {
        let validators = self.validators(height);
        let resume = match self.nodes[node].byzantine {
            None => self.nodes[node].signer.resume(height),
            Some(_) => None,
        };
        self.nodes[node].own_messages.clear();
        if self.nodes[node].seen.len() > MAX_SEEN {
            self.nodes[node].seen.clear();
        }
        self.input(
            node,
            Input::StartHeight {
                height,
                validators,
                resume,
            },
        );
        let buffered = std::mem::take(&mut self.nodes[node].future);
        let (now, later): (Vec<_>, Vec<_>) = buffered
            .into_iter()
            .partition(|(_, m)| m.height() == height);
        self.nodes[node].future = later;
        for (from, message) in now {
            if self.nodes[node].core.height() != height {
                break;
            }
            self.receive(node, from, message);
        }
    }

    fn debug(&self, text: impl FnOnce() -> String) {
        if self.debug {
            eprintln!("[{:>8} us] {}", self.now_us, text());
        }
    }

    fn crash(&mut self, node: usize) {
        self.debug(|| format!("crash {node}"));
        let state = &mut self.nodes[node];
        if !state.alive {
            return;
        }
        state.alive = false;
        state.incarnation += 1;
        state.own_messages.clear();
        state.future.clear();
        state.seen.clear();
        state.watched.clear();
        state.certificates_sent.clear();
    }

    fn restart(&mut self, node: usize) {
        self.debug(|| format!("restart {node}"));
        if self.nodes[node].alive || self.nodes[node].byzantine == Some(ByzantineKind::Silent) {
            return;
        }
        let genesis = self.validator_sets[0].clone();
        let state = &mut self.nodes[node];
        state.alive = true;
        let store = state.signer.store().clone();
        state.signer = Signer::new(state.key.clone(), CHAIN_ID, store).expect("memory store");
        let ignore_lock =
            self.config.broken_lock || state.byzantine == Some(ByzantineKind::Amnesia);
        state.core = Consensus::new(self.plan.params, Some(node as u32), genesis);
        state.core.set_ignore_lock(ignore_lock);
        let height = state.chain.len() as Height + 1;
        self.start_height(node, height);
        self.broadcast(node, Rc::new(Message::Status(height)), false);
        // Re-send the last vote signed before the crash: peers may not have it.
        if let Some(own) = self.nodes[node]
            .signer
            .resume(height)
            .and_then(|resume| resume.last_vote)
        {
            let message = Rc::new(Message::Vote(own));
            self.nodes[node].own_messages.push(message.clone());
            self.broadcast(node, message, false);
        }
    }

    /// Sends `message` from `from` to `to` through the simulated network.
    fn send(&mut self, from: usize, to: usize, message: Rc<Message>, relay: bool) {
        if from == to {
            return;
        }
        let mut delay = self.plan.min_delay_us + self.rng.gen_range(0..=self.plan.jitter_us);
        if self.now_us < self.plan.chaos_end_us {
            if self.rng.gen_bool(self.plan.slow_probability) {
                delay += self.rng.gen_range(20_000..100_000);
            }
            if !relay && self.rng.gen_bool(self.plan.loss_probability) {
                delay += self.rng.gen_range(50_000..200_000); // lost, then retransmitted
            }
        }
        let mut at = self.now_us + delay;
        for partition in &self.plan.partitions {
            let active = partition.start_us <= self.now_us && self.now_us < partition.end_us;
            if active && partition.side[from] != partition.side[to] {
                at = at.max(partition.end_us + delay);
            }
        }
        self.schedule(at, Event::Deliver { to, from, message });
    }

    fn broadcast(&mut self, from: usize, message: Rc<Message>, relay: bool) {
        for to in 0..self.nodes.len() {
            self.send(from, to, message.clone(), relay);
        }
    }

    fn relay(&mut self, node: usize, from: usize, message: &Rc<Message>) {
        let count = self.nodes.len();
        if count <= RELAY_FANOUT + 2 {
            for to in 0..count {
                if to != from {
                    self.send(node, to, message.clone(), true);
                }
            }
        } else {
            for _ in 0..RELAY_FANOUT {
                let to = self.rng.gen_range(0..count);
                if to != from {
                    self.send(node, to, message.clone(), true);
                }
            }
        }
    }

    fn signature_ok(&mut self, message: &Message) -> bool {
        let (signature, validator, bytes) = match message {
            Message::Proposal(p) => (
                p.signature,
                p.proposal.proposer,
                p.proposal.sign_bytes(CHAIN_ID),
            ),
            Message::Vote(v) => (v.signature, v.vote.validator, v.vote.sign_bytes(CHAIN_ID)),
            _ => return true,
        };
        let raw = signature.to_bytes();
        if self.verified.contains(&raw) {
            return true;
        }
        let Some(key) = self.validator_sets[0].get(validator).map(|v| v.public_key) else {
            return false;
        };
        let ok = ed25519_dalek::Verifier::verify(&key, &bytes, &signature).is_ok();
        if ok {
            self.verified.insert(raw);
        }
        ok
    }

    /// Verifies a certificate's precommits in one ed25519 batch (those not yet verified).
    fn certificate_signatures_ok(&mut self, certificate: &Certificate) -> bool {
        let pending: Vec<(SignedVote, ed25519_dalek::VerifyingKey)> = certificate
            .precommits
            .iter()
            .filter(|vote| !self.verified.contains(&vote.signature.to_bytes()))
            .filter_map(|vote| {
                Some((
                    *vote,
                    self.validator_sets[0].get(vote.vote.validator)?.public_key,
                ))
            })
            .collect();
        if pending.is_empty() {
            return true;
        }
        if !verify_votes_batch(CHAIN_ID, &pending) {
            return false;
        }
        for (vote, _) in pending {
            self.verified.insert(vote.signature.to_bytes());
        }
        true
    }

    fn receive(&mut self, node: usize, from: usize, message: Rc<Message>) {
        if self.nodes[node].byzantine == Some(ByzantineKind::Silent) || !self.signature_ok(&message)
        {
            return;
        }
        let height = self.nodes[node].core.height();
        match &*message {
            Message::Status(their_height) => self.answer_status(node, from, *their_height),
            Message::Certificate(certificate) => {
                let certificate_height = certificate.proposal.proposal.height;
                if certificate_height == height {
                    let certificate = certificate.clone();
                    if !self.certificate_signatures_ok(&certificate) {
                        return;
                    }
                    self.input(
                        node,
                        Input::Commit {
                            proposal: certificate.proposal,
                            precommits: certificate.precommits.clone(),
                        },
                    );
                } else if certificate_height > height {
                    self.buffer(node, from, message);
                }
            }
            Message::Proposal(_) | Message::Vote(_) => {
                self.receive_consensus(node, from, message, height)
            }
        }
    }

    fn receive_consensus(
        &mut self,
        node: usize,
        from: usize,
        message: Rc<Message>,
        height: Height,
    ) {
        if let Message::Vote(vote) = &*message {
            self.watch(node, *vote);
        }
        let message_height = message.height();
        if message_height > height {
            self.buffer(node, from, message);
            return;
        }
        if self.nodes[node].seen.insert(message.digest())
            && self.nodes[node].byzantine.is_none()
            && self.config.relay
        {
            // Relay once, also for past heights, so that a lagging equivocator's votes still meet.
            self.relay(node, from, &message);
        }
        if message_height < height {
            if self.nodes[node]
                .certificates_sent
                .insert((from, message_height))
            {
                if let Some(certificate) = self.nodes[node]
                    .certificates
                    .get(message_height as usize - 1)
                    .cloned()
                {
                    self.send(node, from, Rc::new(Message::Certificate(certificate)), true);
                }
            }
            return;
        }
        match &*message {
            Message::Proposal(proposal) => self.input(
                node,
                Input::Proposal {
                    proposal: *proposal,
                    valid: true,
                },
            ),
            Message::Vote(vote) => self.input(node, Input::Vote(*vote)),
            _ => unreachable!("only consensus messages here"),
        }
    }

    fn buffer(&mut self, node: usize, from: usize, message: Rc<Message>) {
        if self.nodes[node].future.len() < MAX_BUFFERED {
            self.nodes[node].future.push((from, message));
        }
    }

    /// Equivocation detection across heights (the evidence pool); honest nodes only.
    fn watch(&mut self, node: usize, vote: SignedVote) {
        if self.nodes[node].byzantine.is_some() {
            return;
        }
        let key = (
            vote.vote.validator,
            vote.vote.height,
            vote.vote.round,
            vote.vote.kind,
        );
        if !self.honest(vote.vote.validator as usize) {
            let values = self.delivered_byzantine.entry(key).or_default();
            if !values.contains(&vote.vote.value) {
                values.push(vote.vote.value);
            }
        }
        let floor = self.nodes[node].core.height().saturating_sub(WATCH_HEIGHTS);
        let watched = &mut self.nodes[node].watched;
        match watched.get(&key) {
            Some(first) if first.vote.value != vote.vote.value => {
                self.reported.insert(key);
            }
            Some(_) => {}
            None if vote.vote.height >= floor => {
                watched.insert(key, vote);
            }
            None => {}
        }
        if watched.len() > 50_000 {
            watched.retain(|(_, height, _, _), _| *height >= floor);
        }
    }

    fn answer_status(&mut self, node: usize, from: usize, their_height: Height) {
        let ours = self.nodes[node].chain.len() as Height;
        for height in their_height..=ours {
            if let Some(certificate) = self.nodes[node]
                .certificates
                .get(height as usize - 1)
                .cloned()
            {
                self.send(node, from, Rc::new(Message::Certificate(certificate)), true);
            }
        }
        // Like Tendermint's per-peer gossip: hand a peer that (re)joins our height the
        // proposals and the votes of our last two rounds that it may have missed.
        if self.nodes[node].core.height() == their_height {
            let core = &self.nodes[node].core;
            let mut catch_up: Vec<Message> = Vec::new();
            for proposal in core.proposals() {
                catch_up.push(Message::Proposal(*proposal));
                catch_up.extend(
                    self.proof_of_lock(node, proposal)
                        .into_iter()
                        .map(Message::Vote),
                );
            }
            for round in core.round().saturating_sub(1)..=core.round() {
                catch_up.extend(
                    core.keeper()
                        .votes_in_round(round)
                        .into_iter()
                        .map(Message::Vote),
                );
            }
            for message in catch_up {
                self.send(node, from, Rc::new(message), true);
            }
        }
        for message in self.nodes[node].own_messages.clone() {
            self.send(node, from, message, true);
        }
    }

    /// Feeds one input to a node's core and carries out the effects (which may feed more).
    fn input(&mut self, node: usize, input: Input) {
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let effects = self.nodes[node].core.handle(input);
            let mut follow_ups = Vec::new();
            for effect in effects {
                self.effect(node, effect, &mut follow_ups);
            }
            // Inputs caused by effects run in the order the effects came.
            pending.extend(follow_ups.into_iter().rev());
        }
    }

    fn effect(&mut self, node: usize, effect: Effect, follow_ups: &mut Vec<Input>) {
        match effect {
            Effect::GetValue { height, round } => follow_ups.push(Input::ProposeValue {
                height,
                round,
                value: value_for(height, round, node as u32, 0),
            }),
            Effect::Propose(proposal) => self.propose(node, proposal, follow_ups),
            Effect::Vote(vote) => self.vote(node, vote, follow_ups),
            Effect::ScheduleTimeout {
                timeout,
                duration_ms,
            } => {
                let incarnation = self.nodes[node].incarnation;
                self.schedule(
                    self.now_us + duration_ms * 1000,
                    Event::Timer {
                        node,
                        incarnation,
                        timeout,
                    },
                );
            }
            Effect::Decide {
                height,
                round,
                value,
                commit,
            } => self.decide(node, height, round, value, commit),
            Effect::Evidence(evidence) => {
                if self.honest(node) {
                    self.reported.insert(evidence.key());
                }
            }
        }
    }

    fn propose(&mut self, node: usize, proposal: Proposal, follow_ups: &mut Vec<Input>) {
        match self.nodes[node].byzantine {
            None => match self.nodes[node].signer.sign_proposal(proposal) {
                Ok(signed) => {
                    let message = Rc::new(Message::Proposal(signed));
                    self.nodes[node].own_messages.push(message.clone());
                    self.broadcast(node, message, false);
                    // A re-proposal travels with its proof of lock, as in Tendermint's gossip:
                    // peers that missed that round's prevotes could not accept it otherwise.
                    for vote in self.proof_of_lock(node, &signed) {
                        self.broadcast(node, Rc::new(Message::Vote(vote)), true);
                    }
                    follow_ups.push(Input::Proposal {
                        proposal: signed,
                        valid: true,
                    });
                }
                Err(_) => self.refused += 1,
            },
            Some(kind) => {
                let signed = self.sign_proposal_unprotected(node, proposal);
                follow_ups.push(Input::Proposal {
                    proposal: signed,
                    valid: true,
                });
                if kind == ByzantineKind::Equivocate {
                    let mut other = proposal;
                    other.value = value_for(proposal.height, proposal.round, node as u32, 1);
                    other.pol_round = None;
                    let other = self.sign_proposal_unprotected(node, other);
                    let count = self.nodes.len();
                    // The fresh value goes to the side that gets no helpful precommits (split
                    // strategy), so that side moves on locked and meets a value without a proof.
                    let fresh_side = match self.plan.split_parity {
                        Some(parity) => 1 - parity,
                        None => 1,
                    };
                    for to in 0..count {
                        let chosen = if self.side[to] != fresh_side {
                            signed
                        } else {
                            other
                        };
                        self.adversary_proposals
                            .insert((proposal.height, proposal.round, to), chosen.proposal.value);
                        self.send(node, to, Rc::new(Message::Proposal(chosen)), false);
                    }
                } else {
                    self.broadcast(node, Rc::new(Message::Proposal(signed)), false);
                }
            }
        }
    }

    /// The prevotes for a proposal's value in its proof-of-lock round, as `node` holds them.
    fn proof_of_lock(&self, node: usize, proposal: &SignedProposal) -> Vec<SignedVote> {
        match proposal.proposal.pol_round {
            Some(round) => self.nodes[node].core.keeper().votes_for(
                round,
                super::types::VoteKind::Prevote,
                proposal.proposal.value,
            ),
            None => Vec::new(),
        }
    }

    fn sign_proposal_unprotected(&self, node: usize, proposal: Proposal) -> SignedProposal {
        SignedProposal {
            proposal,
            signature: self.nodes[node].key.sign(&proposal.sign_bytes(CHAIN_ID)),
        }
    }

    fn sign_vote_unprotected(&self, node: usize, vote: Vote) -> SignedVote {
        SignedVote {
            vote,
            signature: self.nodes[node].key.sign(&vote.sign_bytes(CHAIN_ID)),
        }
    }

    fn vote(&mut self, node: usize, vote: Vote, follow_ups: &mut Vec<Input>) {
        self.debug(|| {
            format!(
                "{node} votes {:?} h{} r{} {}",
                vote.kind,
                vote.height,
                vote.round,
                vote.value.is_some()
            )
        });
        match self.nodes[node].byzantine {
            None => match self.nodes[node].signer.sign_vote(vote) {
                Ok(signed) => {
                    let message = Rc::new(Message::Vote(signed));
                    self.nodes[node].own_messages.push(message.clone());
                    self.broadcast(node, message, false);
                    follow_ups.push(Input::Vote(signed));
                }
                Err(error) => {
                    self.debug(|| format!("{node} refused: {error}"));
                    self.refused += 1
                }
            },
            Some(ByzantineKind::Equivocate) => {
                let own = self.sign_vote_unprotected(node, vote);
                follow_ups.push(Input::Vote(own));
                for to in 0..self.nodes.len() {
                    if to == node {
                        continue;
                    }
                    let value = self.attack_value(to, vote);
                    let signed = if value == vote.value {
                        own
                    } else {
                        self.sign_vote_unprotected(node, Vote { value, ..vote })
                    };
                    self.send(node, to, Rc::new(Message::Vote(signed)), false);
                }
            }
            Some(_) => {
                let signed = self.sign_vote_unprotected(node, vote);
                self.broadcast(node, Rc::new(Message::Vote(signed)), false);
                follow_ups.push(Input::Vote(signed));
            }
        }
    }

    /// The omniscient adversary's choice of value for a vote to `to`. Prevotes (and, in the
    /// mirror strategy, precommits) carry the value of the proposal `to` holds for that round, so
    /// that its polka or commit forms; in the split strategy precommits to one parity of peers
    /// are nil, so that some decide while the rest move to the next round. Peers without a
    /// proposal get a conflicting value if odd-numbered, so every equivocator equivocates.
    fn attack_value(&self, to: usize, vote: Vote) -> Option<ValueId> {
        if vote.kind == super::types::VoteKind::Precommit {
            if let Some(parity) = self.plan.split_parity {
                if self.side[to] != parity {
                    return None;
                }
            }
        }
        let target = &self.nodes[to].core;
        if target.height() == vote.height {
            if let Some(proposal) = target.proposal(vote.round) {
                return Some(proposal.proposal.value);
            }
        }
        if let Some(value) = self.adversary_proposals.get(&(vote.height, vote.round, to)) {
            return Some(*value);
        }
        if self.side[to] == 1 {
            return match vote.value {
                Some(_) => None,
                None => Some(value_for(vote.height, vote.round, vote.validator, 2)),
            };
        }
        vote.value
    }

    fn decide(
        &mut self,
        node: usize,
        height: Height,
        round: Round,
        value: ValueId,
        commit: Vec<SignedVote>,
    ) {
        self.debug(|| format!("{node} decides h{height} r{round}"));
        let Some(proposal) = self.nodes[node].core.proposal_for(round, value).copied() else {
            unreachable!("the core decides only with the proposal in hand");
        };
        let state = &mut self.nodes[node];
        if state.chain.len() as Height == height - 1 {
            state.chain.push(value);
            state.certificates.push(Rc::new(Certificate {
                proposal,
                precommits: commit,
            }));
        }
        if self.honest(node) && (height as usize) < self.decisions.len() {
            match self.decisions[height as usize] {
                None => self.decisions[height as usize] = Some((node, value, round)),
                Some((other, decided, _)) if decided != value => {
                    self.safety_violation = Some(format!(
                        "height {height}: validator {other} decided {}, validator {node} decided {}",
                        &decided.to_hex()[..12],
                        &value.to_hex()[..12]
                    ));
                }
                Some(_) => {}
            }
        }
        let incarnation = self.nodes[node].incarnation;
        self.schedule(
            self.now_us,
            Event::StartHeight {
                node,
                incarnation,
                height: height + 1,
            },
        );
    }

    fn outcome(&self) -> Outcome {
        let liveness_failure = if self.safety_violation.is_none() && !self.done() {
            let behind: Vec<String> = (0..self.nodes.len())
                .filter(|node| self.honest(*node))
                .filter(|node| (self.nodes[*node].chain.len() as u64) < self.config.heights)
                .map(|node| {
                    let state = &self.nodes[node];
                    format!(
                        "validator {node} decided {} heights (at height {} round {} step {:?}{})",
                        state.chain.len(),
                        state.core.height(),
                        state.core.round(),
                        state.core.step(),
                        if state.alive { "" } else { ", down" }
                    )
                })
                .collect();
            Some(format!(
                "not every honest validator reached height {} by {} ms: {}",
                self.config.heights,
                self.plan.deadline_us / 1000,
                behind.join(", ")
            ))
        } else {
            None
        };
        let equivocations: Vec<&EquivocationKey> = self
            .delivered_byzantine
            .iter()
            .filter(|((_, height, _, _), values)| {
                values.len() >= 2 && *height <= self.config.heights
            })
            .map(|(key, _)| key)
            .collect();
        let evidence_missed = equivocations
            .iter()
            .filter(|key| !self.reported.contains(key))
            .count();
        if std::env::var("BLYAN_SIM_DEBUG").is_ok() {
            for key in equivocations
                .iter()
                .filter(|key| !self.reported.contains(key))
            {
                let holders: Vec<String> = (0..self.nodes.len())
                    .filter(|n| self.honest(*n))
                    .map(|n| {
                        format!(
                            "{n}@h{}:{:?}",
                            self.nodes[n].core.height(),
                            self.nodes[n]
                                .watched
                                .get(key)
                                .map(|v| v.vote.value.map(|h| h.to_hex()[..4].to_string()))
                        )
                    })
                    .collect();
                eprintln!(
                    "missed {key:?} values {:?} holders {holders:?}",
                    self.delivered_byzantine[key]
                        .iter()
                        .map(|v| v.map(|h| h.to_hex()[..4].to_string()))
                        .collect::<Vec<_>>()
                );
            }
        }
        Outcome {
            seed: self.seed,
            safety_violation: self.safety_violation.clone(),
            liveness_failure,
            equivocations: equivocations.len(),
            evidence_missed,
            rounds_per_height: self
                .decisions
                .iter()
                .flatten()
                .map(|(_, _, round)| round + 1)
                .collect(),
            events: self.events,
            sim_time_us: self.now_us,
            trace: self.trace,
            refused_signatures: self.refused,
        }
    }
}

#[cfg(test)]
mod tests;
