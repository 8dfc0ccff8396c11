//! The assembled node: the consensus core driven by real time, the P2P swarm, storage, the
//! mempool and the transfer application, in one event loop.
//!
//! The loop owns all consensus state; the API reads a [`View`] and submits transactions through
//! a channel. Every proposal and vote is signed by the persist-then-sign [`Signer`] before it
//! leaves. A decided block, its commit certificate, its app hash and its transaction index are
//! written in one atomic storage batch. A node that falls behind fetches blocks with their
//! commit certificates through block sync, verifies every certificate, and does not sign until
//! it is within one height of the network again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hdrhistogram::Histogram;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::app::{
    check_block, decode_body, verify_commit, App, Checked, Mempool, MempoolLimits, Tx, TxError,
    TxOutcome,
};
use crate::block::{Block, Hash};
use crate::config::{ConsensusConfig, MempoolConfig};
use crate::consensus::signer::{SignError, Signer, StorageStore};
use crate::consensus::state_machine::{Consensus, Effect, Input, Step, Timeout};
use crate::consensus::types::{
    Evidence, Proposal, SignedProposal, SignedVote, ValidatorIndex, Vote,
};
use crate::consensus::validators::{Validator, ValidatorSet};
use crate::genesis::Genesis;
use crate::metrics::Metrics;
use crate::p2p::{
    P2pCommand, P2pEvent, P2pHandle, SyncRequest, SyncResponse, SyncedBlock, Topic, MAX_SYNC_BLOCKS,
};
use crate::p2p::{SnapshotRequest, SnapshotResponse, MAX_SYNC_SETS};
use crate::state::store::{Store, BUCKETS};
use crate::state::{set_hash, set_key, ChainState, Executed, StateEvent};
use crate::storage::{Storage, StorageError};
use crate::wire::{self, Commit};

/// Fatal errors of the node loop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("signer: {0}")]
    Signer(SignError),
    #[error("genesis: {0}")]
    Genesis(String),
    #[error("stored chain: {0}")]
    Chain(String),
    #[error("the P2P task stopped unexpectedly")]
    P2pStopped,
}

/// Consensus messages for a height this node has not reached yet are held, up to this many.
const MAX_BUFFERED: usize = 8192;
/// Proposed blocks held per height.
const MAX_CANDIDATES: usize = 64;
/// Equivocations held for proposals, and carried in one block.
const MAX_PENDING_EVIDENCE: usize = 256;
const MAX_EVIDENCE_IN_BLOCK: usize = 16;

pub fn commit_key(height: u64) -> Vec<u8> {
    [b"c/".as_slice(), &height.to_be_bytes()].concat()
}

pub fn app_hash_key(height: u64) -> Vec<u8> {
    [b"r/".as_slice(), &height.to_be_bytes()].concat()
}

/// The consensus record of an epoch's validator set, kept for ever (state sync's light client
/// follows the set from genesis through them; the state prunes old sets).
pub fn set_record_key(epoch: u64) -> Vec<u8> {
    [b"vs/".as_slice(), &epoch.to_be_bytes()].concat()
}

/// The validator-set records a block's commit writes beside it: the genesis set with block 1,
/// and each set the block fixed for a later epoch. `app` holds the state before the block.
pub fn set_records(height: u64, app: &App, executed: &Executed) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut records = Vec::new();
    if height == 1 {
        if let Some(bytes) = app.read().store().get(&set_key(0)) {
            records.push((set_record_key(0), bytes.to_vec()));
        }
    }
    for event in &executed.events {
        if let StateEvent::NewSet { epoch, .. } = event {
            if let Some(Some(bytes)) = executed.writes.get(&set_key(*epoch)) {
                records.push((set_record_key(*epoch), bytes.clone()));
            }
        }
    }
    records
}

/// State snapshots are cut into this many chunks of whole buckets.
pub const SNAPSHOT_CHUNKS: u32 = 16;

pub fn tx_key(hash: &Hash) -> Vec<u8> {
    [b"t/".as_slice(), &hash.0].concat()
}

/// Where a committed transaction is: height, index in the block, and whether it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
    pub applied: bool,
}

impl TxLocation {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.push(u8::from(self.applied));
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TxLocation> {
        if bytes.len() != 13 {
            return None;
        }
        Some(TxLocation {
            height: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            index: u32::from_be_bytes(bytes[8..12].try_into().ok()?),
            applied: bytes[12] == 1,
        })
    }
}

/// What the API shows of the node's consensus state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    pub height: u64,
    pub hash: Hash,
    /// App hash after the latest block.
    pub app_hash: Hash,
    pub time_ms: u64,
    /// The height being decided now, its round and step.
    pub consensus_height: u64,
    pub round: u32,
    pub step: String,
    pub catching_up: bool,
    pub validator_index: Option<u32>,
    /// The epoch of the height being decided, and its validator count.
    pub epoch: u64,
    pub validators: usize,
    pub peers: usize,
    pub best_known_height: u64,
    pub evidence: u64,
    pub blocks_decided: u64,
    pub blocks_synced: u64,
    /// The height this node state-synced to at start, if it did.
    pub state_synced_at: Option<u64>,
}

/// Latency samples since start, in microseconds.
pub struct Stats {
    pub commit_latency_us: Histogram<u64>,
    pub block_interval_us: Histogram<u64>,
    pub started: Instant,
    pub first_decided: Option<(Instant, u64)>,
    pub last_decided: Option<(Instant, u64)>,
    /// The last [`RECENT_DECISIONS`] decisions: (height, commit latency in microseconds).
    pub recent: std::collections::VecDeque<(u64, u64)>,
}

/// Decisions kept for `/consensus?since=H` (the harness's recorder reads them).
pub const RECENT_DECISIONS: usize = 512;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            commit_latency_us: Histogram::new(3).expect("3 significant figures is valid"),
            block_interval_us: Histogram::new(3).expect("3 significant figures is valid"),
            started: Instant::now(),
            first_decided: None,
            last_decided: None,
            recent: std::collections::VecDeque::with_capacity(RECENT_DECISIONS),
        }
    }
}

/// State shared between the node loop and the API.
pub struct Shared {
    pub view: RwLock<View>,
    pub stats: Mutex<Stats>,
    pub mempool: Mutex<Mempool>,
    pub genesis: Genesis,
    /// The committed chain state (the node loop writes it once per block).
    pub state: Arc<RwLock<ChainState>>,
    pub metrics: Arc<Metrics>,
}

/// A transaction submitted through the API, with where to send the verdict.
pub type Submission = (Vec<u8>, oneshot::Sender<Result<Hash, TxError>>);

/// Settings of the node loop.
pub struct NodeSettings {
    pub genesis: Genesis,
    pub consensus: ConsensusConfig,
    pub mempool: MempoolConfig,
    pub validator_key: SigningKey,
    /// Devnet-only: added to every commit of a decided block (zero elsewhere).
    pub commit_delay: Duration,
    /// Devnet-only Byzantine behaviours and their trigger (`[devnet]`; all off elsewhere).
    pub devnet: crate::config::DevnetConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Held until its height starts.
enum Buffered {
    Vote(SignedVote),
    Proposal(SignedProposal, Box<Block>),
}

impl Buffered {
    fn height(&self) -> u64 {
        match self {
            Buffered::Vote(vote) => vote.vote.height,
            Buffered::Proposal(proposal, _) => proposal.proposal.height,
        }
    }
}

pub struct Node {
    chain_id: String,
    storage: Arc<Storage>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    timeout_commit: Duration,
    commit_delay: Duration,
    /// Devnet-only Byzantine switches (`[devnet]`).
    devnet: crate::config::DevnetConfig,
    max_block_txs: usize,
    /// The set deciding the current height, with its proposer priorities.
    set: ValidatorSet,
    /// The set of the height after it, and of the tip (whose commit the next block carries).
    next_validators: Vec<Validator>,
    prev_validators: Option<Vec<Validator>>,
    /// The commit certificate of the tip, as this node collected it.
    last_commit: Option<Commit>,
    /// Equivocations seen and not punished yet, for our next proposals.
    pending_evidence: Vec<Evidence>,
    public_key: VerifyingKey,
    snapshot_interval: u64,
    /// The latest state snapshots served to state-syncing peers: (height, state after it).
    snapshots: VecDeque<(u64, Arc<Store>)>,
    consensus: Consensus,
    signer: Option<Signer<StorageStore<Arc<Storage>>>>,
    app: App,
    tip_height: u64,
    tip_hash: Hash,
    tip_time_ms: u64,
    candidates: HashMap<Hash, Block>,
    buffered: Vec<Buffered>,
    timers: Vec<(Instant, Timeout)>,
    next_height_at: Option<Instant>,
    proposal_seen: HashMap<u32, Instant>,
    /// The value each round's first signed proposal of this height named: a second, different
    /// one is the proposer equivocating (counted; Tendermint does not slash it).
    proposed_values: HashMap<u32, Hash>,
    last_decided_at: Option<Instant>,
    best_known: u64,
    best_peer: Option<PeerId>,
    sync_in_flight: Option<(PeerId, Instant)>,
    behind_since: Option<Instant>,
    peers: Vec<PeerId>,
    evidence: u64,
    /// What this validator signed and sent at the current height, for rebroadcast.
    own_messages: Vec<(Topic, Vec<u8>)>,
    /// When to re-send our messages because a peer connected (see [`REBROADCAST_ON_CONNECT`]).
    rebroadcast_at: Option<Instant>,
    /// (height, round, step) and when it last changed.
    progress: ((u64, u32, Step), Instant),
    /// When the current height started, and the steps it has reached (recorded once each in
    /// `consensus_step_seconds`).
    height_started: Instant,
    steps_reached: Vec<Step>,
    last_rebroadcast: Instant,
}

/// With no consensus progress for this long, a validator sends its messages of the height
/// again: gossip delivers a message once, and a node whose mesh was not formed yet (a large
/// devnet starting up, a healed partition) would otherwise never see it.
const REBROADCAST_AFTER: Duration = Duration::from_secs(4);
/// After a peer connects to a node that has been stuck this long, it re-sends its messages
/// about a second later (once the peer's subscriptions are known), not at the next period.
const REBROADCAST_ON_CONNECT: Duration = Duration::from_secs(1);

impl Node {
    /// Opens the node over its storage; checks that the stored chain is this genesis's.
    pub fn new(
        settings: NodeSettings,
        storage: Arc<Storage>,
        p2p: P2pHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Node, NodeError> {
        let genesis = settings.genesis;
        let chain_id = genesis.chain_id.clone();
        if let Some(stored) = storage.chain_id() {
            if stored != chain_id {
                return Err(NodeError::Chain(format!(
                    "the database holds chain {stored:?} but genesis.json is for {chain_id:?}"
                )));
            }
        }
        genesis
            .validator_set()
            .map_err(|error| NodeError::Genesis(error.to_string()))?;
        let public: VerifyingKey = settings.validator_key.verifying_key();
        let tip = storage.tip();
        let tip_time_ms = match storage.block(tip.height)? {
            Some(block) => block.header.time_ms,
            None => genesis.genesis_time_ms,
        };
        let app = App::open(&storage, &genesis)?;
        let (set, next_validators, prev_validators) = {
            let state = app.read();
            let params = &state.params;
            let height = tip.height + 1;
            let validators = state.validators_at(height).ok_or_else(|| {
                NodeError::Chain(format!(
                    "the state holds no validator set for height {height}"
                ))
            })?;
            // Proposer priorities of the next height: one step per height of its epoch so far.
            let mut set = ValidatorSet::new(validators)
                .map_err(|error| NodeError::Chain(format!("validator set: {error}")))?;
            for _ in params.epoch_start(params.epoch_of(height))..height {
                set = set.next_height();
            }
            let next = state
                .validators_at(height + 1)
                .unwrap_or_else(|| set.validators().to_vec());
            // A tip imported from the legacy chain (`blyan-node migrate`) has no commit
            // certificate: the next block carries no last commit, like the first block.
            let imported_tip = tip.height > 0
                && storage.consensus_get(&commit_key(tip.height))?.is_none()
                && storage.legacy_origin()?.is_some();
            let prev = (tip.height > 0 && !imported_tip)
                .then(|| state.validators_at(tip.height))
                .flatten();
            (set, next, prev)
        };
        let me = set.index_of(&public);
        let last_commit = storage
            .consensus_get(&commit_key(tip.height))?
            .map(|bytes| Commit::decode(&bytes))
            .transpose()
            .map_err(|error| NodeError::Chain(format!("stored commit of the tip: {error}")))?;
        // Every node keeps a signer: a full node may join the set at an epoch boundary.
        let signer = Some(
            Signer::new(
                settings.validator_key,
                &chain_id,
                StorageStore {
                    storage: storage.clone(),
                },
            )
            .map_err(NodeError::Signer)?,
        );
        let consensus = Consensus::new(settings.consensus.params(), me, set.clone());
        let limits = MempoolLimits {
            max_txs: settings.mempool.max_txs as usize,
            max_bytes: settings.mempool.max_bytes as usize,
            ttl: std::time::Duration::from_secs(settings.mempool.ttl_s),
        };
        let shared = Arc::new(Shared {
            view: RwLock::new(View {
                height: tip.height,
                hash: tip.hash,
                app_hash: app.app_hash(),
                time_ms: tip_time_ms,
                validator_index: me,
                ..View::default()
            }),
            stats: Mutex::new(Stats::default()),
            mempool: Mutex::new(Mempool::new(limits)),
            genesis,
            state: app.shared(),
            metrics,
        });
        Ok(Node {
            chain_id,
            storage,
            shared,
            p2p,
            timeout_commit: Duration::from_millis(settings.consensus.timeout_commit_ms),
            commit_delay: settings.commit_delay,
            devnet: settings.devnet,
            max_block_txs: settings.consensus.max_block_txs as usize,
            set,
            next_validators,
            prev_validators,
            last_commit,
            pending_evidence: Vec::new(),
            public_key: public,
            snapshot_interval: settings.consensus.snapshot_interval,
            snapshots: VecDeque::new(),
            consensus,
            signer,
            app,
            tip_height: tip.height,
            tip_hash: tip.hash,
            tip_time_ms,
            candidates: HashMap::new(),
            buffered: Vec::new(),
            timers: Vec::new(),
            next_height_at: None,
            proposal_seen: HashMap::new(),
            proposed_values: HashMap::new(),
            last_decided_at: None,
            best_known: tip.height,
            best_peer: None,
            sync_in_flight: None,
            behind_since: None,
            peers: Vec::new(),
            evidence: 0,
            own_messages: Vec::new(),
            rebroadcast_at: None,
            progress: ((0, 0, Step::Commit), Instant::now()),
            height_started: Instant::now(),
            steps_reached: Vec::new(),
            last_rebroadcast: Instant::now(),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Peers connected before the loop runs (their `Connected` events went to state sync).
    pub fn connected(&mut self, peers: Vec<PeerId>) {
        for peer in peers {
            if !self.peers.contains(&peer) {
                self.peers.push(peer);
            }
        }
    }

    /// Runs until `shutdown` resolves; a storage or signer failure ends it with an error.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<P2pEvent>,
        mut submissions: mpsc::Receiver<Submission>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        self.start_height()?;
        let mut sync_tick = tokio::time::interval(Duration::from_millis(200));
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut spam_tick = tokio::time::interval(Duration::from_millis(100));
        spam_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spamming = self.devnet.spam_txs_per_s > 0;
        loop {
            let deadline = self
                .timers
                .iter()
                .map(|(at, _)| *at)
                .chain(self.next_height_at)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let sleep = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                event = events.recv() => match event {
                    Some(event) => self.on_p2p(event)?,
                    None => return Err(NodeError::P2pStopped),
                },
                Some((bytes, reply)) = submissions.recv() => {
                    let verdict = self.submit(&bytes, None);
                    let _ = reply.send(verdict);
                }
                _ = sleep => self.on_time()?,
                _ = sync_tick.tick() => self.maybe_sync(),
                _ = spam_tick.tick(), if spamming => self.spam(),
            }
        }
        Ok(())
    }

    /// Devnet Byzantine "spam": a tenth of `spam_txs_per_s` junk transactions (well-formed
    /// length, random bytes, so every honest node must decode and refuse them) per 100 ms tick.
    fn spam(&mut self) {
        use rand::RngCore;
        let height = self.tip_height + 1;
        if !self.devnet.fires(height, self.consensus.round(), "spam") {
            return;
        }
        let count = self.devnet.spam_txs_per_s.div_ceil(10);
        let mut rng = rand::thread_rng();
        for _ in 0..count {
            let mut junk = vec![0u8; 154];
            rng.fill_bytes(&mut junk);
            self.send(P2pCommand::Publish(Topic::Txs, junk));
        }
    }

    fn send(&self, command: P2pCommand) {
        // Refused only at shutdown (the swarm task ends after the node loop) or when the swarm
        // task's queue is full (counted in /net_info; our own votes and proposals are sent
        // again when a height makes no progress, `maybe_rebroadcast`, and block sync asks again).
        let _ = self.p2p.commands.send(command);
    }

    fn catching_up(&self) -> bool {
        self.best_known >= self.tip_height + 2
    }

    fn update_view(&self) {
        let mut view = self.shared.view.write().expect("view lock poisoned");
        view.height = self.tip_height;
        view.hash = self.tip_hash;
        view.app_hash = self.app.app_hash();
        view.time_ms = self.tip_time_ms;
        view.consensus_height = self.consensus.height();
        view.round = self.consensus.round();
        view.step = step_name(self.consensus.step()).to_string();
        view.catching_up = self.catching_up();
        view.peers = self.peers.len();
        view.best_known_height = self.best_known.max(self.tip_height);
        view.evidence = self.evidence;
        view.validator_index = self.set.index_of(&self.public_key);
        view.validators = self.set.len();
        view.epoch = self.app.read().params.epoch_of(self.tip_height + 1);
        self.shared
            .metrics
            .consensus_round
            .set(i64::from(self.consensus.round()));
        self.shared
            .metrics
            .latest_height
            .set(self.tip_height as i64);
        self.shared.metrics.peers.set(self.peers.len() as i64);
    }

    fn start_height(&mut self) -> Result<(), NodeError> {
        let height = self.tip_height + 1;
        self.next_height_at = None;
        self.own_messages.clear();
        self.timers.clear();
        self.candidates.clear();
        self.proposal_seen.clear();
        self.proposed_values.clear();
        let resume = self
            .signer
            .as_ref()
            .and_then(|signer| signer.resume(height));
        self.height_started = Instant::now();
        self.steps_reached.clear();
        if self.devnet.ignore_locks {
            // Devnet Byzantine "amnesia": forget our lock for the heights the trigger picks.
            self.consensus
                .set_ignore_lock(self.devnet.fires(height, 0, "ignore_locks"));
        }
        self.drive(Input::StartHeight {
            height,
            validators: self.set.clone(),
            resume,
        })?;
        let held: Vec<Buffered> = std::mem::take(&mut self.buffered);
        for message in held {
            match message.height().cmp(&height) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Greater => self.buffered.push(message),
                std::cmp::Ordering::Equal => match message {
                    Buffered::Vote(vote) => self.drive(Input::Vote(vote))?,
                    Buffered::Proposal(proposal, block) => {
                        self.on_proposal(proposal, *block)?;
                    }
                },
            }
            if self.consensus.height() != height {
                break;
            }
        }
        self.update_view();
        Ok(())
    }

    fn on_time(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        if self.next_height_at.is_some_and(|at| at <= now) {
            return self.start_height();
        }
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, timeout) in due {
            self.drive(Input::Timeout(timeout))?;
        }
        self.update_view();
        Ok(())
    }

    /// Feeds one input to the core and carries out the effects, feeding our own messages back.
    fn drive(&mut self, input: Input) -> Result<(), NodeError> {
        self.drive_effects(input)?;
        self.record_step();
        Ok(())
    }

    /// The first time this height reaches a step (in any round), its time since the height
    /// started goes into `consensus_step_seconds`; so do the steps before it that one input
    /// went through at once (a lone validator proposes, prevotes, precommits and decides in
    /// one go).
    fn record_step(&mut self) {
        const ORDER: [Step; 3] = [Step::Prevote, Step::Precommit, Step::Commit];
        let now = self.consensus.step();
        let Some(reached) = ORDER.iter().position(|step| *step == now) else {
            return;
        };
        let elapsed = self.height_started.elapsed().as_secs_f64();
        for step in &ORDER[..=reached] {
            if self.steps_reached.contains(step) {
                continue;
            }
            self.steps_reached.push(*step);
            self.shared
                .metrics
                .consensus_step_seconds
                .get_or_create(&crate::metrics::StepLabels {
                    step: step_name(*step),
                })
                .observe(elapsed);
        }
    }

    fn drive_effects(&mut self, input: Input) -> Result<(), NodeError> {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for effect in self.consensus.handle(input) {
                match effect {
                    Effect::GetValue { height, round } => {
                        let mut block =
                            self.build_block(height, self.set.index_of(&self.public_key));
                        if self.devnet.invalid_blocks
                            && self.devnet.fires(height, round, "invalid_blocks")
                        {
                            // Devnet Byzantine: a block the others must refuse.
                            block.header.app_hash.0[0] ^= 0xff;
                            tracing::warn!(height, round, "devnet: proposing an invalid block");
                        }
                        let value = block.hash();
                        self.candidates.insert(value, block);
                        queue.push_back(Input::ProposeValue {
                            height,
                            round,
                            value,
                        });
                    }
                    Effect::Propose(proposal) => {
                        if self.catching_up() {
                            continue;
                        }
                        let Some(block) = self.candidates.get(&proposal.value) else {
                            tracing::error!(height = proposal.height, "no block for our proposal");
                            continue;
                        };
                        let Some(signer) = self.signer.as_mut() else {
                            continue;
                        };
                        let signed = match signer.sign_proposal(proposal) {
                            Ok(signed) => signed,
                            Err(SignError::Storage(error)) => return Err(error.into()),
                            Err(error) => {
                                tracing::error!(%error, "proposal not signed");
                                continue;
                            }
                        };
                        let bytes = wire::encode_proposal(&signed, block);
                        // Devnet Byzantine: a second, different block for the same height and
                        // round, signed and gossiped too (peers see one or the other first).
                        let second = (self.devnet.equivocate_proposals
                            && self.devnet.fires(
                                proposal.height,
                                proposal.round,
                                "equivocate_proposals",
                            ))
                        .then(|| {
                            let mut other = block.clone();
                            other.header.time_ms += 1;
                            let signed = signer.sign_proposal_unguarded(Proposal {
                                value: other.hash(),
                                ..proposal
                            });
                            wire::encode_proposal(&signed, &other)
                        });
                        self.own_messages.push((Topic::Proposals, bytes.clone()));
                        self.send(P2pCommand::Publish(Topic::Proposals, bytes));
                        if let Some(second) = second {
                            self.send(P2pCommand::Publish(Topic::Proposals, second));
                        }
                        self.proposal_seen
                            .entry(proposal.round)
                            .or_insert_with(Instant::now);
                        queue.push_back(Input::Proposal {
                            proposal: signed,
                            valid: true,
                        });
                    }
                    Effect::Vote(vote) => {
                        if self.catching_up() {
                            continue;
                        }
                        let Some(signer) = self.signer.as_mut() else {
                            continue;
                        };
                        let signed = match signer.sign_vote(vote) {
                            Ok(signed) => signed,
                            Err(SignError::Storage(error)) => return Err(error.into()),
                            Err(error) => {
                                tracing::error!(%error, "vote not signed");
                                continue;
                            }
                        };
                        // Devnet Byzantine mode: a second, conflicting vote (nil) for the same
                        // height, round and step, sent to the others only.
                        let conflicting = (self.devnet.equivocate_votes
                            && vote.value.is_some()
                            && self
                                .devnet
                                .fires(vote.height, vote.round, "equivocate_votes"))
                        .then(|| {
                            signer.sign_unguarded(Vote {
                                value: None,
                                ..vote
                            })
                        });
                        let withhold = self.devnet.withhold_votes
                            && self.devnet.fires(vote.height, vote.round, "withhold_votes");
                        let bytes = wire::encode_vote(&signed);
                        if !withhold {
                            self.own_messages.push((Topic::Votes, bytes.clone()));
                            self.send(P2pCommand::Publish(Topic::Votes, bytes));
                        }
                        if let Some(conflicting) = conflicting {
                            self.send(P2pCommand::Publish(
                                Topic::Votes,
                                wire::encode_vote(&conflicting),
                            ));
                        }
                        queue.push_back(Input::Vote(signed));
                    }
                    Effect::ScheduleTimeout {
                        timeout,
                        duration_ms,
                    } => {
                        self.timers
                            .push((Instant::now() + Duration::from_millis(duration_ms), timeout));
                    }
                    Effect::Decide {
                        height,
                        round,
                        value,
                        commit,
                    } => {
                        let Some(block) = self.candidates.remove(&value) else {
                            return Err(NodeError::Chain(format!(
                                "decided {value} at height {height} without holding the block"
                            )));
                        };
                        let checked = decode_body(&block)
                            .map_err(|error| NodeError::Chain(format!("decided block: {error}")))?;
                        let tx_count = checked.txs.len();
                        let latency = self.proposal_seen.get(&round).map(Instant::elapsed);
                        if !self.commit_delay.is_zero() {
                            // Devnet slowdown: as slow execution would, it holds the loop.
                            std::thread::sleep(self.commit_delay);
                        }
                        self.commit(&block, checked, &Commit::from_votes(round, &commit))?;
                        self.record_decision(latency);
                        tracing::debug!(height, round, hash = %value, txs = tx_count, "committed");
                        // Even with no pause the next height starts from the event loop: a
                        // lone validator would otherwise decide height after height inside
                        // this call, never serving its peers (and overflow the stack).
                        self.next_height_at = Some(Instant::now() + self.timeout_commit);
                        return Ok(());
                    }
                    Effect::Evidence(evidence) => {
                        self.evidence += 1;
                        self.shared.metrics.evidence.inc();
                        let (validator, height, round, kind) = evidence.key();
                        tracing::warn!(validator, height, round, ?kind, "equivocation observed");
                        let known = self
                            .pending_evidence
                            .iter()
                            .any(|pending| pending.key() == evidence.key());
                        if !known && self.pending_evidence.len() < MAX_PENDING_EVIDENCE {
                            self.pending_evidence.push(*evidence);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn record_decision(&mut self, latency: Option<Duration>) {
        let now = Instant::now();
        self.shared.metrics.blocks_committed.inc();
        let mut stats = self.shared.stats.lock().expect("stats lock poisoned");
        if let Some(latency) = latency {
            self.shared
                .metrics
                .commit_latency_seconds
                .observe(latency.as_secs_f64());
            let micros = latency.as_micros().max(1) as u64;
            let _ = stats.commit_latency_us.record(micros);
            if stats.recent.len() == RECENT_DECISIONS {
                stats.recent.pop_front();
            }
            stats.recent.push_back((self.tip_height, micros));
        }
        if let Some(previous) = self.last_decided_at {
            let _ = stats
                .block_interval_us
                .record((now - previous).as_micros().max(1) as u64);
        }
        stats.first_decided.get_or_insert((now, self.tip_height));
        stats.last_decided = Some((now, self.tip_height));
        drop(stats);
        self.last_decided_at = Some(now);
        self.shared
            .view
            .write()
            .expect("view lock poisoned")
            .blocks_decided += 1;
    }

    fn build_block(&self, height: u64, me: Option<ValidatorIndex>) -> Block {
        let txs: Vec<Vec<u8>> = self
            .shared
            .mempool
            .lock()
            .expect("mempool lock poisoned")
            .reap(self.max_block_txs, |sender| self.app.account(sender).nonce)
            .iter()
            .map(Tx::encode)
            .collect();
        let time_ms = now_ms().max(self.tip_time_ms + 1);
        let mut block = Block::new(
            &self.chain_id,
            height,
            time_ms,
            self.tip_hash,
            self.app.app_hash(),
            txs,
        );
        block.header.proposer = me.unwrap_or(0);
        block.header.validators_hash = set_hash(self.set.validators());
        block.header.next_validators_hash = set_hash(&self.next_validators);
        let last_commit = match (&self.last_commit, height > 1) {
            (Some(commit), true) => commit.encode(),
            _ => Vec::new(),
        };
        let evidence = self
            .pending_evidence
            .iter()
            .take(MAX_EVIDENCE_IN_BLOCK)
            .map(wire::encode_evidence)
            .collect();
        block.with_body(last_commit, evidence)
    }

    /// Executes and commits a decided (or synced and verified) block, then moves to the next
    /// height's validator set.
    fn commit(
        &mut self,
        block: &Block,
        checked: Checked,
        commit: &Commit,
    ) -> Result<(), NodeError> {
        let height = block.header.height;
        let hash = block.hash();
        let Checked { txs, input } = checked;
        let executed = self.app.execute(&input, &txs);
        let changes = self.app.changes(&executed);
        let app_hash = executed.app_hash;
        let outcomes = executed.outcomes.clone();
        let events = executed.events.clone();
        let mut records = Vec::with_capacity(txs.len() + 3);
        records.push((commit_key(height), commit.encode()));
        records.extend(set_records(height, &self.app, &executed));
        records.push((app_hash_key(height), app_hash.0.to_vec()));
        let mut committed = HashSet::with_capacity(txs.len());
        for (index, (tx, outcome)) in txs.iter().zip(&outcomes).enumerate() {
            let tx_hash = tx.hash();
            committed.insert(tx_hash);
            let location = TxLocation {
                height,
                index: index as u32,
                applied: *outcome == TxOutcome::Applied,
            };
            records.push((tx_key(&tx_hash), location.encode()));
        }
        self.storage.commit_block_with(block, &changes, &records)?;
        self.app.committed(executed);
        self.tip_height = height;
        self.tip_hash = hash;
        self.tip_time_ms = block.header.time_ms;
        for event in &events {
            match event {
                StateEvent::Slashed {
                    validator,
                    reason,
                    burned,
                } => {
                    tracing::warn!(height, validator = %hex::encode(validator), reason, burned, "validator slashed")
                }
                StateEvent::Jailed { validator, until } => {
                    tracing::warn!(height, validator = %hex::encode(validator), until, "validator jailed")
                }
                StateEvent::NewSet { epoch, members } => {
                    tracing::info!(
                        height,
                        epoch,
                        members,
                        "validator set of the next epoch fixed"
                    )
                }
            }
        }
        self.advance_set(height, commit)?;
        if self.snapshot_interval > 0 && height.is_multiple_of(self.snapshot_interval) {
            let store = Arc::new(self.app.read().store().clone());
            self.snapshots.push_back((height, store));
            if self.snapshots.len() > 2 {
                self.snapshots.pop_front();
            }
        }
        let mut mempool = self.shared.mempool.lock().expect("mempool lock poisoned");
        mempool.update(&committed, &self.app);
        self.shared.metrics.mempool_txs.set(mempool.len() as i64);
        drop(mempool);
        self.update_view();
        Ok(())
    }

    /// After committing `height`: the set of `height + 1` (a new epoch's set starts with fresh
    /// proposer priorities), this node's index in it, and the evidence still worth proposing.
    fn advance_set(&mut self, height: u64, commit: &Commit) -> Result<(), NodeError> {
        self.last_commit = Some(commit.clone());
        self.prev_validators = Some(self.set.validators().to_vec());
        let state = self.app.read();
        let params = state.params.clone();
        if params.epoch_of(height + 1) != params.epoch_of(height) {
            self.set = ValidatorSet::new(self.next_validators.clone())
                .map_err(|error| NodeError::Chain(format!("next validator set: {error}")))?;
            tracing::info!(
                height = height + 1,
                epoch = params.epoch_of(height + 1),
                validators = self.set.len(),
                "new epoch"
            );
        } else {
            self.set = self.set.next_height();
        }
        self.next_validators = state
            .validators_at(height + 2)
            .unwrap_or_else(|| self.set.validators().to_vec());
        self.pending_evidence
            .retain(|evidence| state.would_punish(evidence).is_ok());
        drop(state);
        self.consensus
            .set_validator_index(self.set.index_of(&self.public_key));
        Ok(())
    }

    /// The key of validator `index` at `height`: the tip's set, the next height's (`set`) or
    /// the one after (older heights are checked against `set`, then ignored).
    fn validator_key(&self, height: u64, index: u32) -> Option<VerifyingKey> {
        let validators = if height == self.tip_height && height > 0 {
            self.prev_validators.as_deref()?
        } else if height == self.tip_height + 2 {
            &self.next_validators
        } else {
            self.set.validators()
        };
        validators
            .get(index as usize)
            .map(|validator| validator.public_key)
    }

    /// A precommit for the tip that arrived after we decided it joins the tip's commit, so that
    /// the next block we propose credits every validator that signed in time (the downtime
    /// rules count a signature missing from that commit as a missed block).
    fn add_late_precommit(&mut self, vote: &SignedVote) {
        let Some(commit) = self.last_commit.as_mut() else {
            return;
        };
        let index = vote.vote.validator;
        if vote.vote.round != commit.round
            || commit.signatures.iter().any(|(signer, _)| *signer == index)
        {
            return;
        }
        commit.signatures.push((index, vote.signature));
        commit.signatures.sort_by_key(|(signer, _)| *signer);
    }

    fn accept(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) {
        if matches!(acceptance, MessageAcceptance::Reject) {
            self.shared.metrics.gossip_rejected.inc();
        }
        self.send(P2pCommand::Validate {
            id,
            source,
            acceptance,
        });
    }

    /// Rejects a gossip message (its sender is penalised), counted by `reason`.
    fn reject(&self, id: MessageId, source: PeerId, reason: &'static str) {
        crate::metrics::refuse(&self.shared.metrics.refused_inputs, "p2p", reason);
        self.accept(id, source, MessageAcceptance::Reject);
    }

    /// A height some peer is at tells us it committed the one before.
    fn saw_height(&mut self, height: u64, peer: PeerId) {
        let committed = height.saturating_sub(1);
        if committed > self.best_known {
            self.best_known = committed;
            self.best_peer = Some(peer);
        }
    }

    fn buffer(&mut self, message: Buffered) {
        if message.height() == self.consensus.height() + 1 && self.buffered.len() < MAX_BUFFERED {
            self.buffered.push(message);
        }
    }

    fn on_p2p(&mut self, event: P2pEvent) -> Result<(), NodeError> {
        match event {
            P2pEvent::Gossip {
                topic,
                source,
                id,
                data,
            } => match topic {
                Topic::Votes => self.on_vote_message(&data, source, id)?,
                Topic::Proposals => self.on_proposal_message(&data, source, id)?,
                Topic::Txs => match self.submit(&data, Some(source)) {
                    Ok(_) => self.accept(id, source, MessageAcceptance::Accept),
                    Err(TxError::Malformed(_)) => self.reject(id, source, "malformed_tx"),
                    Err(TxError::BadSignature) => self.reject(id, source, "bad_signature"),
                    Err(_) => self.accept(id, source, MessageAcceptance::Ignore),
                },
            },
            P2pEvent::SyncRequest {
                peer,
                request,
                channel,
            } => {
                let response = self.serve_sync(&request)?;
                tracing::trace!(%peer, from = request.from_height, blocks = response.blocks.len(), "sync served");
                self.send(P2pCommand::Respond { channel, response });
            }
            P2pEvent::SyncResponse { peer, response } => self.on_sync_response(peer, response)?,
            P2pEvent::SyncFailed { peer, reason } => {
                tracing::debug!(%peer, %reason, "sync request failed");
                if self.sync_in_flight.is_some_and(|(p, _)| p == peer) {
                    self.sync_in_flight = None;
                }
            }
            P2pEvent::Connected(peer) => {
                if !self.peers.contains(&peer) {
                    self.peers.push(peer);
                }
                // A link back (a healed partition, a restarted peer): if we are stuck, our
                // messages of this height may be what it lacks.
                self.rebroadcast_at = Some(Instant::now() + REBROADCAST_ON_CONNECT);
                if self.sync_in_flight.is_none() {
                    self.request_sync(peer);
                }
                self.update_view();
            }
            P2pEvent::Disconnected(peer) => {
                self.peers.retain(|p| *p != peer);
                if self.sync_in_flight.is_some_and(|(p, _)| p == peer) {
                    self.sync_in_flight = None;
                }
                if self.best_peer == Some(peer) {
                    self.best_peer = None;
                }
                self.update_view();
            }
        }
        Ok(())
    }

    fn on_vote_message(
        &mut self,
        data: &[u8],
        source: PeerId,
        id: MessageId,
    ) -> Result<(), NodeError> {
        let Ok(vote) = wire::decode_vote(data) else {
            self.reject(id, source, "malformed_vote");
            return Ok(());
        };
        let valid = self
            .validator_key(vote.vote.height, vote.vote.validator)
            .is_some_and(|key| vote.verify(&self.chain_id, &key));
        if !valid {
            self.reject(id, source, "bad_signature");
            return Ok(());
        }
        let current = self.consensus.height();
        let height = vote.vote.height;
        self.accept(
            id,
            source,
            if height + 1 < current {
                MessageAcceptance::Ignore
            } else {
                MessageAcceptance::Accept
            },
        );
        self.saw_height(height, source);
        if height == self.tip_height
            && vote.vote.kind == crate::consensus::types::VoteKind::Precommit
            && vote.vote.value == Some(self.tip_hash)
        {
            self.add_late_precommit(&vote);
        }
        if height == current {
            self.drive(Input::Vote(vote))?;
            self.update_view();
        } else if height > current {
            self.buffer(Buffered::Vote(vote));
        }
        Ok(())
    }

    fn on_proposal_message(
        &mut self,
        data: &[u8],
        source: PeerId,
        id: MessageId,
    ) -> Result<(), NodeError> {
        let Ok((proposal, block)) = wire::decode_proposal(data) else {
            self.reject(id, source, "malformed_proposal");
            return Ok(());
        };
        if self.devnet.drop_proposals
            && self.devnet.fires(
                proposal.proposal.height,
                proposal.proposal.round,
                "drop_proposals",
            )
        {
            // Devnet Byzantine: act as if it never came (and do not pass it on).
            self.accept(id, source, MessageAcceptance::Ignore);
            return Ok(());
        }
        let signed_ok = self
            .validator_key(proposal.proposal.height, proposal.proposal.proposer)
            .is_some_and(|key| proposal.verify(&self.chain_id, &key));
        if !signed_ok {
            self.reject(id, source, "bad_signature");
            return Ok(());
        }
        if block.header.height != proposal.proposal.height {
            self.reject(id, source, "malformed_proposal");
            return Ok(());
        }
        let current = self.consensus.height();
        let height = proposal.proposal.height;
        self.saw_height(height, source);
        if height == current {
            if self.on_proposal(proposal, block)? {
                self.accept(id, source, MessageAcceptance::Accept);
            } else {
                self.reject(id, source, "invalid_block");
            }
        } else {
            self.accept(
                id,
                source,
                if height > current {
                    MessageAcceptance::Accept
                } else {
                    MessageAcceptance::Ignore
                },
            );
            if height > current {
                self.buffer(Buffered::Proposal(proposal, Box::new(block)));
            }
        }
        Ok(())
    }

    /// What a block at the next height must match.
    fn expected(&self, max_txs: usize) -> crate::app::Expected<'_> {
        crate::app::Expected {
            chain_id: &self.chain_id,
            height: self.tip_height + 1,
            prev_hash: self.tip_hash,
            prev_time_ms: self.tip_time_ms,
            app_hash: self.app.app_hash(),
            max_txs,
            validators: self.set.validators(),
            next_validators_hash: set_hash(&self.next_validators),
            prev_validators: self.prev_validators.as_deref(),
        }
    }

    /// A signature-checked proposal of the current height; returns the block's validity.
    fn on_proposal(&mut self, proposal: SignedProposal, block: Block) -> Result<bool, NodeError> {
        self.note_proposed_value(&proposal);
        // Transactions in our mempool were verified when they entered it.
        let mempool = self.shared.mempool.lock().expect("mempool lock poisoned");
        let verdict = check_block(&block, &self.expected(self.max_block_txs), &|hash| {
            mempool.contains(hash)
        })
        .and_then(|checked| {
            // A fresh proposal's block names its proposer (who earns the proposer bonus).
            if proposal.proposal.pol_round.is_none()
                && block.header.proposer != proposal.proposal.proposer
            {
                return Err(format!(
                    "block names proposer {}, the proposal is signed by {}",
                    block.header.proposer, proposal.proposal.proposer
                ));
            }
            Ok(checked)
        });
        drop(mempool);
        let valid = match verdict {
            Ok(_) => true,
            Err(reason) => {
                tracing::warn!(height = block.header.height, round = proposal.proposal.round, %reason, "invalid proposed block");
                false
            }
        };
        if self.candidates.len() < MAX_CANDIDATES {
            self.candidates.insert(proposal.proposal.value, block);
        }
        self.proposal_seen
            .entry(proposal.proposal.round)
            .or_insert_with(Instant::now);
        self.drive(Input::Proposal { proposal, valid })?;
        self.update_view();
        Ok(valid)
    }

    /// Counts a second, different value signed by one proposer for this height and round.
    fn note_proposed_value(&mut self, proposal: &SignedProposal) {
        let (round, value) = (proposal.proposal.round, proposal.proposal.value);
        let first = *self.proposed_values.entry(round).or_insert(value);
        if first != value {
            self.shared.metrics.conflicting_proposals.inc();
            tracing::warn!(
                height = proposal.proposal.height,
                round,
                proposer = proposal.proposal.proposer,
                "conflicting proposals: the proposer signed two different blocks for one round"
            );
        }
    }

    /// Checks a transaction (from the API, or gossip when `from` is set) and adds it to the
    /// mempool; an API transaction is gossiped.
    fn submit(&mut self, bytes: &[u8], from: Option<PeerId>) -> Result<Hash, TxError> {
        let result = (|| {
            let tx = Tx::decode(bytes)?;
            let mut mempool = self.shared.mempool.lock().expect("mempool lock poisoned");
            if mempool.contains(&tx.hash()) {
                return Err(TxError::Duplicate);
            }
            self.app.check(&tx, mempool.pending_from(&tx.from))?;
            let hash = mempool.insert(tx)?;
            self.shared.metrics.mempool_txs.set(mempool.len() as i64);
            Ok(hash)
        })();
        match &result {
            Ok(_) if from.is_none() => {
                self.send(P2pCommand::Publish(Topic::Txs, bytes.to_vec()));
            }
            Err(_) if from.is_none() => {
                self.shared.metrics.txs_rejected.inc();
            }
            _ => {}
        }
        result
    }

    fn serve_sync(&self, request: &SyncRequest) -> Result<SyncResponse, NodeError> {
        if let Some(snapshot) = &request.snapshot {
            return Ok(SyncResponse {
                tip_height: self.tip_height,
                blocks: Vec::new(),
                snapshot: Some(self.serve_snapshot(snapshot)?),
            });
        }
        let mut blocks = Vec::new();
        let first = request.from_height.max(1);
        let count = u64::from(request.max_blocks.clamp(1, MAX_SYNC_BLOCKS));
        let mut bytes = 0usize;
        for height in first..first.saturating_add(count) {
            if height > self.tip_height || bytes > 8 << 20 {
                break;
            }
            let (Some(block), Some(commit)) = (
                self.storage.block(height)?,
                self.storage.consensus_get(&commit_key(height))?,
            ) else {
                break;
            };
            let block = block.encode();
            bytes += block.len() + commit.len();
            blocks.push(SyncedBlock { block, commit });
        }
        Ok(SyncResponse {
            tip_height: self.tip_height,
            blocks,
            snapshot: None,
        })
    }

    /// Answers a state-sync request from the snapshots, blocks and set records we hold.
    fn serve_snapshot(&self, request: &SnapshotRequest) -> Result<SnapshotResponse, NodeError> {
        let unavailable = |reason: String| SnapshotResponse::Unavailable { reason };
        let snapshot = |height: u64| {
            self.snapshots
                .iter()
                .find(|(at, _)| *at == height)
                .map(|(_, store)| store.clone())
        };
        Ok(match request {
            SnapshotRequest::Offer => {
                // The snapshot's app hash is proven by the header of the block after it.
                match self
                    .snapshots
                    .iter()
                    .rev()
                    .find(|(at, _)| *at < self.tip_height)
                {
                    Some((height, store)) => SnapshotResponse::Offer {
                        height: *height,
                        chunks: SNAPSHOT_CHUNKS,
                        bucket_hashes: store
                            .bucket_hashes()
                            .iter()
                            .map(|hash| serde_bytes::ByteBuf::from(hash.0.to_vec()))
                            .collect(),
                    },
                    None => unavailable("no snapshot yet".into()),
                }
            }
            SnapshotRequest::Chunk { height, index } => match snapshot(*height) {
                Some(store) if *index < SNAPSHOT_CHUNKS => {
                    let per_chunk = BUCKETS / SNAPSHOT_CHUNKS as usize;
                    let first = *index as usize * per_chunk;
                    SnapshotResponse::Chunk {
                        height: *height,
                        index: *index,
                        entries: (first..first + per_chunk)
                            .flat_map(|bucket| store.bucket_entries(bucket))
                            .map(|(key, value)| {
                                (
                                    serde_bytes::ByteBuf::from(key),
                                    serde_bytes::ByteBuf::from(value),
                                )
                            })
                            .collect(),
                    }
                }
                Some(_) => unavailable(format!("chunk {index} of {SNAPSHOT_CHUNKS}")),
                None => unavailable(format!("no snapshot at height {height}")),
            },
            SnapshotRequest::Heights { heights } => {
                let mut blocks = Vec::new();
                for height in heights.iter().take(MAX_SYNC_BLOCKS as usize) {
                    let (Some(block), Some(commit)) = (
                        self.storage.block(*height)?,
                        self.storage.consensus_get(&commit_key(*height))?,
                    ) else {
                        return Ok(unavailable(format!("no block {height}")));
                    };
                    blocks.push((
                        *height,
                        SyncedBlock {
                            block: block.encode(),
                            commit,
                        },
                    ));
                }
                SnapshotResponse::Blocks { blocks }
            }
            SnapshotRequest::Sets { epochs } => {
                let mut sets = Vec::new();
                for epoch in epochs.iter().take(MAX_SYNC_SETS) {
                    match self.storage.consensus_get(&set_record_key(*epoch))? {
                        Some(bytes) => sets.push((*epoch, serde_bytes::ByteBuf::from(bytes))),
                        None => return Ok(unavailable(format!("no set of epoch {epoch}"))),
                    }
                }
                SnapshotResponse::Sets { sets }
            }
        })
    }

    fn request_sync(&mut self, peer: PeerId) {
        self.sync_in_flight = Some((peer, Instant::now()));
        self.send(P2pCommand::Sync {
            peer,
            request: SyncRequest {
                from_height: self.tip_height + 1,
                max_blocks: MAX_SYNC_BLOCKS,
                snapshot: None,
            },
        });
    }

    fn maybe_rebroadcast(&mut self) {
        let position = (
            self.consensus.height(),
            self.consensus.round(),
            self.consensus.step(),
        );
        if position != self.progress.0 {
            self.progress = (position, Instant::now());
            return;
        }
        let stalled = self.progress.1.elapsed();
        let after_connect = self
            .rebroadcast_at
            .is_some_and(|at| Instant::now() >= at && stalled >= REBROADCAST_ON_CONNECT);
        let periodic =
            stalled >= REBROADCAST_AFTER && self.last_rebroadcast.elapsed() >= REBROADCAST_AFTER;
        if !(after_connect || periodic) || self.own_messages.is_empty() {
            return;
        }
        self.rebroadcast_at = None;
        self.last_rebroadcast = Instant::now();
        tracing::debug!(
            height = position.0,
            round = position.1,
            messages = self.own_messages.len(),
            "no progress: sending our messages of this height again"
        );
        // New copies (new message ids): peers that took the first copies take these too.
        for (topic, bytes) in self.own_messages.clone() {
            self.send(P2pCommand::Republish(topic, bytes));
        }
    }

    fn maybe_sync(&mut self) {
        self.maybe_rebroadcast();
        if self
            .sync_in_flight
            .is_some_and(|(_, since)| since.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.sync_in_flight = None;
        let stalled = self
            .last_decided_at
            .is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if self.best_known <= self.tip_height {
            self.behind_since = None;
            if stalled && !self.peers.is_empty() {
                // Nothing decided for a while: ask someone where the chain is.
                let index = (self.tip_height as usize) % self.peers.len();
                self.request_sync(self.peers[index]);
            }
            return;
        }
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        // One height behind is the normal race at a height's end; act if it persists.
        if self.catching_up() || since.elapsed() > Duration::from_millis(300) {
            let peer = self
                .best_peer
                .filter(|peer| self.peers.contains(peer))
                .or_else(|| self.peers.first().copied());
            if let Some(peer) = peer {
                self.request_sync(peer);
            }
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, response: SyncResponse) -> Result<(), NodeError> {
        if self.sync_in_flight.is_some_and(|(p, _)| p == peer) {
            self.sync_in_flight = None;
        }
        if response.tip_height > self.best_known {
            self.best_known = response.tip_height;
            self.best_peer = Some(peer);
        }
        let mut applied = 0;
        for synced in &response.blocks {
            match self.verify_synced(synced) {
                Ok(Some((block, checked, commit))) => {
                    self.commit(&block, checked, &commit)?;
                    self.shared.metrics.blocks_synced.inc();
                    self.shared
                        .view
                        .write()
                        .expect("view lock poisoned")
                        .blocks_synced += 1;
                    applied += 1;
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "sync: rejected a block");
                    break;
                }
            }
        }
        if applied == 0 && response.blocks.is_empty() && response.tip_height > self.tip_height {
            // Ahead of us but without our next block: it state-synced past it. Ask another.
            let others: Vec<PeerId> = self.peers.iter().filter(|p| **p != peer).copied().collect();
            if !others.is_empty() {
                let other = others
                    [(self.tip_height as usize + response.tip_height as usize) % others.len()];
                tracing::debug!(%peer, %other, height = self.tip_height + 1, "peer lacks our next block; asking another");
                self.best_peer = Some(other);
                self.request_sync(other);
            }
        }
        if applied > 0 {
            tracing::info!(%peer, applied, height = self.tip_height, peer_tip = response.tip_height, "caught up through block sync");
            self.start_height()?;
            if self.tip_height < response.tip_height {
                self.request_sync(peer);
            }
        }
        self.update_view();
        Ok(())
    }

    /// Verifies a synced block and its commit certificate against our tip; `None` when it is
    /// not the next block (already have it).
    #[allow(clippy::type_complexity)]
    fn verify_synced(
        &self,
        synced: &SyncedBlock,
    ) -> Result<Option<(Block, Checked, Commit)>, String> {
        let block = Block::decode(&synced.block).map_err(|error| error.to_string())?;
        if block.header.height <= self.tip_height {
            return Ok(None);
        }
        let checked = check_block(
            &block,
            &self.expected(crate::block::MAX_TXS_PER_BLOCK as usize),
            &|_| false,
        )?;
        let commit = Commit::decode(&synced.commit).map_err(|error| error.to_string())?;
        verify_commit(
            &self.chain_id,
            self.set.validators(),
            block.header.height,
            block.hash(),
            &commit,
        )?;
        Ok(Some((block, checked, commit)))
    }
}

/// The step's name in `/status`.
pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Propose => "propose",
        Step::Prevote => "prevote",
        Step::Precommit => "precommit",
        Step::Commit => "commit",
    }
}
