//! A scenario plan: everything random about a run, drawn from its seed before it starts.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::super::state_machine::Params;

/// How a Byzantine validator misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByzantineKind {
    /// Sends nothing at all.
    Silent,
    /// Signs conflicting proposals and votes and sends each peer the version that serves the
    /// attack best (the simulator's adversary sees every node's state).
    Equivocate,
    /// Forgets its lock (prevotes as if never locked) and signs without double-sign protection.
    Amnesia,
}

impl ByzantineKind {
    pub const ALL: [ByzantineKind; 3] = [
        ByzantineKind::Silent,
        ByzantineKind::Equivocate,
        ByzantineKind::Amnesia,
    ];

    pub fn parse(text: &str) -> Option<ByzantineKind> {
        match text {
            "silent" => Some(ByzantineKind::Silent),
            "equivocate" => Some(ByzantineKind::Equivocate),
            "amnesia" => Some(ByzantineKind::Amnesia),
            _ => None,
        }
    }
}

/// What a batch of scenarios looks like; the seed fills in the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub validators: usize,
    pub byzantine: usize,
    pub heights: u64,
    /// Kinds the Byzantine validators draw from (each picks one per scenario).
    pub byzantine_kinds: Vec<ByzantineKind>,
    /// Network and process faults: loss with retransmission, partitions, crashes.
    pub faults: bool,
    /// Let equivocators draw the split-precommit strategy (see [`Plan::split_parity`]); when
    /// false they always mirror, the strongest attack on a network with too many of them.
    pub split_precommits: bool,
    /// Honest validators relay what they receive (gossip). Safety must hold without it too, and
    /// an adversary facing no relays exposes broken rules faster.
    pub relay: bool,
    /// Deliberately broken rule: every validator ignores its lock. For showing that the checker
    /// catches a broken protocol; never on in a real node.
    pub broken_lock: bool,
}

impl SimConfig {
    pub fn new(validators: usize, byzantine: usize, heights: u64) -> SimConfig {
        SimConfig {
            validators,
            byzantine,
            heights,
            byzantine_kinds: ByzantineKind::ALL.to_vec(),
            faults: true,
            split_precommits: true,
            relay: true,
            broken_lock: false,
        }
    }
}

/// A partition: `groups[i]` is node i's side; messages between sides wait until it heals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub start_us: u64,
    pub end_us: u64,
    pub side: Vec<u8>,
}

/// A crash of one node and its restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    pub node: usize,
    pub at_us: u64,
    pub restart_us: u64,
}

/// Everything random about one scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    pub byzantine: Vec<Option<ByzantineKind>>,
    pub params: Params,
    pub min_delay_us: u64,
    pub jitter_us: u64,
    pub slow_probability: f64,
    pub loss_probability: f64,
    pub partitions: Vec<Partition>,
    pub crashes: Vec<Crash>,
    /// Equivocators' precommit strategy: `None` mirrors each peer's proposal to it; `Some(p)`
    /// sends nil precommits to peers whose index parity is not `p`.
    pub split_parity: Option<usize>,
    /// Faults happen before this time; after it the network is synchronous (GST).
    pub chaos_end_us: u64,
    pub deadline_us: u64,
}

pub const CHAOS_WINDOW_US: u64 = 2_000_000;

impl Plan {
    pub fn draw(config: &SimConfig, rng: &mut StdRng) -> Plan {
        let count = config.validators;
        let mut indices: Vec<usize> = (0..count).collect();
        indices.shuffle(rng);
        let mut byzantine = vec![None; count];
        for index in indices.iter().take(config.byzantine) {
            byzantine[*index] = Some(
                *config
                    .byzantine_kinds
                    .choose(rng)
                    .unwrap_or(&ByzantineKind::Silent),
            );
        }
        let params = Params {
            timeout_propose_ms: 40,
            timeout_propose_delta_ms: 20,
            timeout_prevote_ms: 20,
            timeout_prevote_delta_ms: 10,
            timeout_precommit_ms: 20,
            timeout_precommit_delta_ms: 10,
        };
        let mut plan = Plan {
            byzantine,
            params,
            min_delay_us: rng.gen_range(200..2_000),
            jitter_us: rng.gen_range(500..8_000),
            slow_probability: 0.0,
            loss_probability: 0.0,
            partitions: Vec::new(),
            crashes: Vec::new(),
            split_parity: [None, Some(0), Some(1)][rng.gen_range(0..3)]
                .filter(|_| config.split_precommits),
            chaos_end_us: 0,
            deadline_us: 0,
        };
        if config.faults {
            plan.chaos_end_us = CHAOS_WINDOW_US;
            plan.slow_probability = *[0.0, 0.02, 0.1].choose(rng).expect("non-empty");
            plan.loss_probability = *[0.0, 0.01, 0.05, 0.2].choose(rng).expect("non-empty");
            for _ in 0..rng.gen_range(0..=2) {
                plan.partitions.push(draw_partition(count, rng));
            }
            for _ in 0..rng.gen_range(0..=2) {
                let at_us = rng.gen_range(0..CHAOS_WINDOW_US);
                plan.crashes.push(Crash {
                    node: rng.gen_range(0..count),
                    at_us,
                    restart_us: at_us + rng.gen_range(50_000..800_000),
                });
            }
        }
        let last_fault = plan
            .crashes
            .iter()
            .map(|crash| crash.restart_us)
            .chain(plan.partitions.iter().map(|p| p.end_us))
            .max()
            .unwrap_or(0)
            .max(plan.chaos_end_us);
        // Generous: after the last fault heals, a second per height plus ten seconds.
        plan.deadline_us = last_fault + config.heights * 1_000_000 + 10_000_000;
        plan
    }
}

fn draw_partition(count: usize, rng: &mut StdRng) -> Partition {
    let start_us = rng.gen_range(0..CHAOS_WINDOW_US);
    let end_us = start_us + rng.gen_range(50_000..800_000);
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    // Halves, one isolated node, or a random minority.
    let minority = match rng.gen_range(0..3) {
        0 => count / 2,
        1 => 1,
        _ => rng.gen_range(1..count.max(2)),
    };
    let mut side = vec![0u8; count];
    for node in order.iter().take(minority) {
        side[*node] = 1;
    }
    Partition {
        start_us,
        end_us,
        side,
    }
}
