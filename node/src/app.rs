//! The application over the chain state ([`crate::state`]): the node's handle on the state
//! (execution, the app hash, mempool checks), the bounded mempool, and the checks a proposed
//! block must pass before it is voted for.
//!
//! Transactions are defined in [`crate::state::tx`]; a transaction that does not apply (wrong
//! nonce, not even the fee in the balance) is skipped and changes nothing, one whose body fails
//! pays its fee and changes nothing else; the block stays valid either way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use crate::block::{Block, Hash};
use crate::consensus::validators::Validator;
use crate::genesis::Genesis;
pub use crate::state::tx::{verify_block_txs, Tx, TxBody, TxError, MAX_TX_BYTES};
use crate::state::{
    set_hash, BlockInput, ChainState, Executed, InferenceRewards, NoInferenceRewards,
};
pub use crate::state::{Account, TxOutcome, MAX_NONCE_GAP};
use crate::storage::{StateChange, Storage, StorageError};
use crate::wire::{decode_evidence, Commit};

/// The node's handle on the chain state; the API reads the same state through [`App::shared`].
pub struct App {
    state: Arc<RwLock<ChainState>>,
    /// The genesis state is in memory only until the first block's commit writes it.
    unpersisted: bool,
    inference: Box<dyn InferenceRewards>,
}

impl App {
    /// The state at the storage's tip: genesis for an empty chain, else loaded from disk.
    pub fn open(storage: &Storage, genesis: &Genesis) -> Result<App, StorageError> {
        let tip = storage.tip().height;
        let params = genesis.staking.clone();
        let (state, unpersisted) = if tip == 0 {
            let validators = genesis
                .validator_set()
                .map_err(|error| storage_corrupt(storage, error.to_string()))?;
            (
                ChainState::genesis(
                    &genesis.chain_id,
                    params,
                    &genesis.account_balances(),
                    validators.validators(),
                ),
                true,
            )
        } else {
            let entries = storage.state_entries()?;
            if entries.is_empty() {
                return Err(storage_corrupt(
                    storage,
                    format!("the chain is at height {tip} but holds no state"),
                ));
            }
            (
                ChainState::from_entries(&genesis.chain_id, params, tip, entries)
                    .map_err(|error| storage_corrupt(storage, error.to_string()))?,
                false,
            )
        };
        Ok(App {
            state: Arc::new(RwLock::new(state)),
            unpersisted,
            inference: Box::new(NoInferenceRewards),
        })
    }

    /// The state restored from a verified snapshot (state sync).
    pub fn restored(state: ChainState) -> App {
        App {
            state: Arc::new(RwLock::new(state)),
            unpersisted: false,
            inference: Box::new(NoInferenceRewards),
        }
    }

    pub fn shared(&self) -> Arc<RwLock<ChainState>> {
        self.state.clone()
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ChainState> {
        self.state.read().expect("state lock poisoned")
    }

    /// The app hash after the latest committed block (what the next block's header carries).
    pub fn app_hash(&self) -> Hash {
        self.read().app_hash()
    }

    pub fn account(&self, address: &[u8; 32]) -> Account {
        self.read().account(address)
    }

    /// Checks a transaction against the committed state, for the mempool.
    pub fn check(&self, tx: &Tx, pending_nonces: u64) -> Result<(), TxError> {
        self.read().check_tx(tx, pending_nonces)
    }

    /// Executes a block's (already verified) transactions; nothing is written until the caller
    /// stores [`App::changes`] and calls [`App::committed`].
    pub fn execute(&self, input: &BlockInput, txs: &[Tx]) -> Executed {
        self.read().execute(input, txs, self.inference.as_ref())
    }

    /// The storage writes of an executed block (with the whole genesis state the first time).
    pub fn changes(&self, executed: &Executed) -> Vec<StateChange> {
        let mut changes = Vec::with_capacity(executed.writes.len());
        if self.unpersisted {
            let state = self.read();
            for (key, value) in state.store().entries() {
                if !executed.writes.contains_key(key) {
                    changes.push(StateChange::Put(key.to_vec(), value.to_vec()));
                }
            }
        }
        for (key, value) in &executed.writes {
            changes.push(match value {
                Some(value) => StateChange::Put(key.clone(), value.clone()),
                None => StateChange::Delete(key.clone()),
            });
        }
        changes
    }

    /// Records that an executed block was committed to storage.
    pub fn committed(&mut self, executed: Executed) {
        self.state
            .write()
            .expect("state lock poisoned")
            .commit(executed);
        self.unpersisted = false;
    }
}

fn storage_corrupt(storage: &Storage, detail: String) -> StorageError {
    StorageError::Corrupt {
        path: storage.path().to_path_buf(),
        detail,
    }
}

/// Mempool limits.
#[derive(Clone, Copy, Debug)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// How long a transaction may wait before `update` drops it.
    pub ttl: std::time::Duration,
}

/// Pending transactions in arrival order, deduplicated by hash.
pub struct Mempool {
    limits: MempoolLimits,
    order: VecDeque<Hash>,
    txs: HashMap<Hash, Tx>,
    arrived: HashMap<Hash, std::time::Instant>,
    per_sender: HashMap<[u8; 32], u64>,
    bytes: usize,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Mempool {
        Mempool {
            limits,
            order: VecDeque::new(),
            txs: HashMap::new(),
            arrived: HashMap::new(),
            per_sender: HashMap::new(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.txs.contains_key(hash)
    }

    /// Pending transactions of `sender`.
    pub fn pending_from(&self, sender: &[u8; 32]) -> u64 {
        self.per_sender.get(sender).copied().unwrap_or(0)
    }

    /// Adds a checked transaction.
    pub fn insert(&mut self, tx: Tx) -> Result<Hash, TxError> {
        let hash = tx.hash();
        if self.txs.contains_key(&hash) {
            return Err(TxError::Duplicate);
        }
        if self.txs.len() >= self.limits.max_txs {
            return Err(TxError::MempoolFull(format!(
                "{} transactions",
                self.limits.max_txs
            )));
        }
        let size = tx.encode().len();
        if self.bytes + size > self.limits.max_bytes {
            return Err(TxError::MempoolFull(format!(
                "{} bytes",
                self.limits.max_bytes
            )));
        }
        self.bytes += size;
        *self.per_sender.entry(tx.from).or_default() += 1;
        self.order.push_back(hash);
        self.txs.insert(hash, tx);
        self.arrived.insert(hash, std::time::Instant::now());
        Ok(hash)
    }

    /// Up to `max_txs` transactions for a block: senders in the order their first pending
    /// transaction arrived, each sender's transactions in nonce order and only while the nonces
    /// run on without a gap from `account_nonce(sender)`. A transaction after a gap (its
    /// predecessor not yet here, as gossip may deliver them out of order) waits for a later
    /// block instead of being committed unexecuted.
    pub fn reap(&self, max_txs: usize, account_nonce: impl Fn(&[u8; 32]) -> u64) -> Vec<Tx> {
        let mut senders: Vec<[u8; 32]> = Vec::new();
        let mut by_sender: HashMap<[u8; 32], Vec<&Tx>> = HashMap::new();
        for tx in self.order.iter().filter_map(|hash| self.txs.get(hash)) {
            let entry = by_sender.entry(tx.from).or_default();
            if entry.is_empty() {
                senders.push(tx.from);
            }
            entry.push(tx);
        }
        let mut picked = Vec::with_capacity(max_txs.min(self.txs.len()));
        for sender in senders {
            let mut txs = by_sender.remove(&sender).unwrap_or_default();
            txs.sort_by_key(|tx| tx.nonce);
            let mut next = account_nonce(&sender);
            for tx in txs {
                if picked.len() == max_txs {
                    return picked;
                }
                if tx.nonce < next {
                    continue;
                }
                if tx.nonce > next {
                    break;
                }
                picked.push(tx.clone());
                next += 1;
            }
        }
        picked
    }

    /// Drops committed transactions, those whose nonce the chain has passed and those older
    /// than the TTL.
    pub fn update(&mut self, committed: &HashSet<Hash>, app: &App) {
        let mut nonces: HashMap<[u8; 32], u64> = HashMap::new();
        let mut keep = VecDeque::with_capacity(self.order.len());
        for hash in self.order.drain(..) {
            let Some(tx) = self.txs.get(&hash) else {
                continue;
            };
            let nonce = *nonces
                .entry(tx.from)
                .or_insert_with(|| app.account(&tx.from).nonce);
            let expired = self
                .arrived
                .get(&hash)
                .is_some_and(|arrived| arrived.elapsed() > self.limits.ttl);
            if committed.contains(&hash) || tx.nonce < nonce || expired {
                let tx = self.txs.remove(&hash).expect("present");
                self.arrived.remove(&hash);
                self.bytes -= tx.encode().len();
                if let Some(count) = self.per_sender.get_mut(&tx.from) {
                    *count -= 1;
                    if *count == 0 {
                        self.per_sender.remove(&tx.from);
                    }
                }
            } else {
                keep.push_back(hash);
            }
        }
        self.order = keep;
    }
}

/// What the next block must match: the chain, the tip it builds on, and the validator sets.
pub struct Expected<'a> {
    pub chain_id: &'a str,
    pub height: u64,
    pub prev_hash: Hash,
    pub prev_time_ms: u64,
    pub app_hash: Hash,
    pub max_txs: usize,
    /// The set deciding this height.
    pub validators: &'a [Validator],
    /// The set of the next height (its hash is in the header).
    pub next_validators_hash: Hash,
    /// The set that signed the previous block; `None` at height 1.
    pub prev_validators: Option<&'a [Validator]>,
    /// The latest block time a proposal may carry ([`latest_block_time`]); `None` for a block
    /// that comes with its commit certificate (a quorum already took it).
    pub latest_time_ms: Option<u64>,
}

/// How far ahead of a validator's clock a proposed block's time may be: a proposer whose
/// clock runs ahead by more (or that lies) has its block refused, so no validator can push
/// block times into the future; a clock that lags only makes its own blocks' times late
/// (they must still follow the parent's). `docs/CONSENSUS.md`, "Block time".
pub const MAX_BLOCK_TIME_AHEAD_MS: u64 = 10_000;

/// The latest time a block proposed on top of a parent of `prev_time_ms` may carry, by a
/// clock reading `now_ms`: the later of the two (a parent legitimately ahead of our clock,
/// as a genesis time set in the future, must not stop the chain), plus
/// [`MAX_BLOCK_TIME_AHEAD_MS`].
pub fn latest_block_time(now_ms: u64, prev_time_ms: u64) -> u64 {
    now_ms.max(prev_time_ms + 1) + MAX_BLOCK_TIME_AHEAD_MS
}

/// A block that passed [`check_block`]: its transactions and what else execution needs.
pub struct Checked {
    pub txs: Vec<Tx>,
    pub input: BlockInput,
}

/// Decodes a block that was already checked (ours, or decided by a quorum) into what execution
/// needs, verifying nothing again. Undecodable parts count as absent.
pub fn decode_body(block: &Block) -> Result<Checked, String> {
    let txs = block
        .txs
        .iter()
        .map(|tx| Tx::decode(tx))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("bad transaction: {error}"))?;
    let last_signers = (block.header.height > 1)
        .then(|| Commit::decode(&block.last_commit).ok())
        .flatten()
        .map(|commit| commit.signatures.iter().map(|(index, _)| *index).collect());
    let evidence = block
        .evidence
        .iter()
        .filter_map(|item| decode_evidence(item).ok())
        .collect();
    Ok(Checked {
        txs,
        input: BlockInput {
            height: block.header.height,
            proposer: block.header.proposer,
            last_signers,
            evidence,
        },
    })
}

/// Verifies a commit certificate for block `hash` at `height` against the set that decided it:
/// known, distinct signers holding more than two thirds of the power, every signature valid.
/// Returns the signers' indices.
pub fn verify_commit(
    chain_id: &str,
    validators: &[Validator],
    height: u64,
    hash: Hash,
    commit: &Commit,
) -> Result<Vec<u32>, String> {
    let total: u128 = validators.iter().map(|v| u128::from(v.power)).sum();
    let mut seen = HashSet::new();
    let mut power: u128 = 0;
    let mut keyed = Vec::with_capacity(commit.signatures.len());
    for vote in commit.votes(height, hash) {
        let index = vote.vote.validator;
        let validator = validators
            .get(index as usize)
            .ok_or_else(|| format!("commit names validator {index}, not in the set"))?;
        if !seen.insert(index) {
            return Err(format!("commit names validator {index} twice"));
        }
        power += u128::from(validator.power);
        keyed.push((vote, validator.public_key));
    }
    if power * 3 <= total * 2 {
        return Err(format!(
            "commit power {power} of {total} is not more than two thirds"
        ));
    }
    if !crate::consensus::types::verify_votes_batch(chain_id, &keyed) {
        return Err("commit has an invalid signature".into());
    }
    Ok(keyed.iter().map(|(vote, _)| vote.vote.validator).collect())
}

/// A block's time: after its parent's and, for a proposal, not past `latest_time_ms`.
fn check_time(time_ms: u64, prev_time_ms: u64, latest_time_ms: Option<u64>) -> Result<(), String> {
    if time_ms <= prev_time_ms {
        return Err(format!(
            "time {time_ms} is not after the parent's {prev_time_ms}"
        ));
    }
    match latest_time_ms {
        Some(latest) if time_ms > latest => Err(format!(
            "time {time_ms} is more than {MAX_BLOCK_TIME_AHEAD_MS} ms ahead of this node's \
             clock (latest {latest})"
        )),
        _ => Ok(()),
    }
}

/// Checks a block's header and body against the chain: height, parent, app hash, time (after
/// the parent's and, for a proposal, not ahead of our clock by more than
/// [`MAX_BLOCK_TIME_AHEAD_MS`]), the
/// validator set hashes, the proposer index, the previous block's commit certificate, evidence
/// that decodes, and every transaction's signature (those `verified` vouches for are skipped,
/// see [`verify_block_txs`]).
pub fn check_block(
    block: &Block,
    expected: &Expected,
    verified: &dyn Fn(&Hash) -> bool,
) -> Result<Checked, String> {
    let Expected {
        chain_id,
        height,
        prev_hash,
        prev_time_ms,
        app_hash,
        max_txs,
        validators,
        next_validators_hash,
        prev_validators,
        latest_time_ms,
    } = *expected;
    let header = &block.header;
    if header.chain_id != chain_id {
        return Err(format!(
            "chain id {:?}, expected {chain_id:?}",
            header.chain_id
        ));
    }
    if header.height != height {
        return Err(format!("height {}, expected {height}", header.height));
    }
    if header.prev_hash != prev_hash {
        return Err(format!("parent {}, expected {prev_hash}", header.prev_hash));
    }
    if header.app_hash != app_hash {
        return Err(format!("app hash {}, expected {app_hash}", header.app_hash));
    }
    check_time(header.time_ms, prev_time_ms, latest_time_ms)?;
    let validators_hash = set_hash(validators);
    if header.validators_hash != validators_hash {
        return Err(format!(
            "validators hash {}, expected {validators_hash}",
            header.validators_hash
        ));
    }
    if header.next_validators_hash != next_validators_hash {
        return Err(format!(
            "next validators hash {}, expected {next_validators_hash}",
            header.next_validators_hash
        ));
    }
    if header.proposer as usize >= validators.len() {
        return Err(format!(
            "proposer {} is not in the set of {}",
            header.proposer,
            validators.len()
        ));
    }
    if block.txs.len() > max_txs {
        return Err(format!("{} transactions, limit {max_txs}", block.txs.len()));
    }
    if !block.data_hash_matches() {
        return Err("data hash does not match the body".into());
    }
    let last_signers = match prev_validators {
        None if block.last_commit.is_empty() => None,
        None => return Err("the first block carries no last commit".into()),
        Some(prev) => {
            let commit = Commit::decode(&block.last_commit)
                .map_err(|error| format!("last commit: {error}"))?;
            Some(
                verify_commit(chain_id, prev, height - 1, prev_hash, &commit)
                    .map_err(|error| format!("last commit: {error}"))?,
            )
        }
    };
    let evidence = block
        .evidence
        .iter()
        .map(|item| decode_evidence(item).map_err(|error| format!("evidence: {error}")))
        .collect::<Result<Vec<_>, _>>()?;
    let txs =
        verify_block_txs(chain_id, &block.txs, verified).map_err(|error| error.to_string())?;
    Ok(Checked {
        txs,
        input: BlockInput {
            height,
            proposer: header.proposer,
            last_signers,
            evidence,
        },
    })
}

#[cfg(test)]
mod tests;
