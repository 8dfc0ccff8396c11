//! The assembled node: the consensus core driven by real time, the P2P swarm, storage, the
//! mempool and the transfer application, in one event loop.
//!
//! The loop owns all consensus state; the API reads a [`View`] and submits transactions through
//! a channel. Every proposal and vote is signed by the persist-then-sign [`Signer`] before it
//! leaves. A decided block, its commit certificate, its app hash and its transaction index are
//! written in one atomic storage batch. A node that falls behind fetches blocks with their
//! commit certificates through block sync, verifies every certificate, and does not sign until
//! it is within one height of the network again.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hdrhistogram::Histogram;
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::app::{App, Mempool, MempoolLimits, TxError};
use crate::block::{Block, Hash};
use crate::config::{ConsensusConfig, MempoolConfig};
use crate::consensus::signer::{SignError, Signer, StorageStore};
use crate::consensus::state_machine::{Consensus, Input, Step, Timeout};
use crate::consensus::types::{Evidence, SignedProposal, SignedVote};
use crate::consensus::validators::{Validator, ValidatorSet};
use crate::genesis::Genesis;
use crate::metrics::Metrics;
use crate::p2p::{P2pCommand, P2pEvent, P2pHandle, Topic};
use crate::state::store::Store;
use crate::state::ChainState;
use crate::storage::keys::commit_key;
use crate::storage::{Storage, StorageError};
use crate::wire::Commit;

mod commit;
pub use commit::set_records;
pub mod clock;
pub(crate) mod devnet;
mod gossip;
pub mod messages;
mod sync;

pub use sync::SNAPSHOT_CHUNKS;

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
    /// The height its database held when this process opened it (what survived a crash or a
    /// power loss).
    pub started_at_height: u64,
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
    /// The message fault in force on what this node sends (devnet builds;
    /// `POST /admin/devnet/messages`).
    pub messages: messages::MessageShaper,
    /// The message fault in force on what it receives from the peers the fault names.
    pub inbound: messages::MessageShaper,
    /// The clock block times are read from (moved by a clock fault on devnet builds).
    pub clock: clock::Clock,
}

impl Shared {
    fn new(
        view: View,
        mempool: &MempoolConfig,
        genesis: Genesis,
        app: &App,
        metrics: Arc<Metrics>,
    ) -> Shared {
        let limits = MempoolLimits {
            max_txs: mempool.max_txs as usize,
            max_bytes: mempool.max_bytes as usize,
            ttl: Duration::from_secs(mempool.ttl_s),
        };
        Shared {
            view: RwLock::new(view),
            stats: Mutex::new(Stats::default()),
            mempool: Mutex::new(Mempool::new(limits)),
            genesis,
            state: app.shared(),
            metrics,
            messages: messages::MessageShaper::default(),
            inbound: messages::MessageShaper::default(),
            clock: clock::Clock::default(),
        }
    }
}

/// A transaction submitted through the API, with where to send the verdict.
pub type Submission = (Vec<u8>, oneshot::Sender<Result<Hash, TxError>>);

/// Settings of the node loop.
pub struct NodeSettings {
    pub genesis: Genesis,
    pub consensus: ConsensusConfig,
    pub mempool: MempoolConfig,
    pub validator_key: SigningKey,
    /// Devnet-only: Byzantine behaviours and their trigger, and the commit slowdown
    /// (`[devnet]`; all off elsewhere, and refused by a build without the `devnet` feature).
    pub devnet: crate::config::DevnetConfig,
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
    /// Devnet-only behaviours (`devnet.rs`; honest in a build without the `devnet` feature).
    devnet: devnet::Devnet,
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
    /// Incoming messages an incoming message fault held for a delay come back here (bounded:
    /// what does not fit is dropped, as a full link would).
    held: (mpsc::Sender<P2pEvent>, Option<mpsc::Receiver<P2pEvent>>),
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
        let (set, next_validators, prev_validators) = initial_sets(&storage, &app, tip.height)?;
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
        let view = View {
            height: tip.height,
            hash: tip.hash,
            app_hash: app.app_hash(),
            time_ms: tip_time_ms,
            validator_index: me,
            ..View::default()
        };
        let shared = Arc::new(Shared::new(view, &settings.mempool, genesis, &app, metrics));
        Ok(Node {
            chain_id,
            storage,
            shared,
            p2p,
            timeout_commit: Duration::from_millis(settings.consensus.timeout_commit_ms),
            devnet: devnet::Devnet::new(settings.devnet),
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
            held: {
                let (tx, rx) = mpsc::channel(1024);
                (tx, Some(rx))
            },
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
        let spamming = self.devnet.spamming();
        let mut held = self.held.1.take().expect("a node runs once");
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
                Some(event) = held.recv() => self.on_p2p_event(event)?,
                Some((bytes, reply)) = submissions.recv() => {
                    let verdict = self.submit(&bytes, None);
                    let _ = reply.send(verdict);
                }
                _ = sleep => self.on_time()?,
                _ = sync_tick.tick() => self.maybe_sync(),
                _ = spam_tick.tick(), if spamming => {
                    for junk in self.devnet.spam(self.tip_height + 1, self.consensus.round()) {
                        self.send(P2pCommand::Publish(Topic::Txs, junk));
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&self, command: P2pCommand) {
        // Refused only at shutdown (the swarm task ends after the node loop) or when the swarm
        // task's queue is full (counted in /net_info; our own votes and proposals are sent
        // again when a height makes no progress, `maybe_rebroadcast`, and block sync asks again).
        #[cfg(feature = "devnet")]
        if self.shared.messages.active() {
            let shaped = self.shared.messages.shape(command);
            for command in shaped.now {
                let _ = self.p2p.commands.send(command);
            }
            if let Some((delay, command)) = shaped.later {
                let commands = self.p2p.commands.clone();
                self.shared.messages.later(delay, command, move |command| {
                    let _ = commands.send(command);
                });
            }
            return;
        }
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
        if let Some(forget) = self.devnet.ignore_lock(height) {
            self.consensus.set_ignore_lock(forget);
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
}

/// The sets around the stored tip: the one deciding the next height (with its proposer
/// priorities), the one after it, and the tip's own (whose commit the next block carries).
#[allow(clippy::type_complexity)]
fn initial_sets(
    storage: &Storage,
    app: &App,
    tip: u64,
) -> Result<(ValidatorSet, Vec<Validator>, Option<Vec<Validator>>), NodeError> {
    let state = app.read();
    let params = &state.params;
    let height = tip + 1;
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
    // A tip imported from the legacy chain (`blyan-node migrate`) has no commit certificate:
    // the next block carries no last commit, like the first block.
    let imported_tip = tip > 0
        && storage.consensus_get(&commit_key(tip))?.is_none()
        && storage.legacy_origin()?.is_some();
    let prev = (tip > 0 && !imported_tip)
        .then(|| state.validators_at(tip))
        .flatten();
    Ok((set, next, prev))
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
