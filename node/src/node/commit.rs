//! Carrying out what the consensus core decides: building our proposals, signing and sending
//! our proposals and votes, and executing and committing a decided block.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{decode_body, App, Checked, Tx, TxOutcome};
use crate::block::{Block, Hash};
use crate::consensus::signer::SignError;
use crate::consensus::state_machine::{Effect, Input};
use crate::consensus::types::{Evidence, Proposal, SignedVote, ValidatorIndex, Vote};
use crate::consensus::validators::ValidatorSet;
use crate::p2p::{P2pCommand, Topic};
use crate::state::{set_hash, set_key, Executed, StateEvent};
use crate::storage::keys::{app_hash_key, commit_key, set_record_key, tx_key, TxLocation};
use crate::wire::{self, Commit};

use super::*;

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

/// A signature, or `None` when the signer refused (a double sign it guards against: logged,
/// the message not sent); a storage failure of the signer's record is fatal.
fn signed_or_skip<T>(result: Result<T, SignError>, what: &str) -> Result<Option<T>, NodeError> {
    match result {
        Ok(signed) => Ok(Some(signed)),
        Err(SignError::Storage(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(%error, "{what} not signed");
            Ok(None)
        }
    }
}

impl Node {
    pub(super) fn drive_effects(&mut self, input: Input) -> Result<(), NodeError> {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for effect in self.consensus.handle(input) {
                match effect {
                    Effect::GetValue { height, round } => {
                        queue.push_back(self.propose_value(height, round));
                    }
                    Effect::Propose(proposal) => {
                        if let Some(input) = self.send_proposal(proposal)? {
                            queue.push_back(input);
                        }
                    }
                    Effect::Vote(vote) => {
                        if let Some(input) = self.send_vote(vote)? {
                            queue.push_back(input);
                        }
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
                    } => return self.decide(height, round, value, &commit),
                    Effect::Evidence(evidence) => self.note_evidence(*evidence),
                }
            }
        }
        Ok(())
    }

    /// Our block for `height`, held as a candidate; the core proposes its hash.
    fn propose_value(&mut self, height: u64, round: u32) -> Input {
        let mut block = self.build_block(height, self.set.index_of(&self.public_key));
        self.devnet.spoil_block(height, round, &mut block);
        let value = block.hash();
        self.candidates.insert(value, block);
        Input::ProposeValue {
            height,
            round,
            value,
        }
    }

    /// Signs and gossips our proposal; returns it as an input for our own core.
    fn send_proposal(&mut self, proposal: Proposal) -> Result<Option<Input>, NodeError> {
        if self.catching_up() {
            return Ok(None);
        }
        let Some(block) = self.candidates.get(&proposal.value) else {
            tracing::error!(height = proposal.height, "no block for our proposal");
            return Ok(None);
        };
        let Some(signer) = self.signer.as_mut() else {
            return Ok(None);
        };
        let Some(signed) = signed_or_skip(signer.sign_proposal(proposal), "proposal")? else {
            return Ok(None);
        };
        let bytes = wire::encode_proposal(&signed, block);
        let second = self.devnet.second_proposal(&proposal, block, signer);
        self.own_messages.push((Topic::Proposals, bytes.clone()));
        self.send(P2pCommand::Publish(Topic::Proposals, bytes));
        if let Some(second) = second {
            self.send(P2pCommand::Publish(Topic::Proposals, second));
        }
        self.proposal_seen
            .entry(proposal.round)
            .or_insert_with(Instant::now);
        Ok(Some(Input::Proposal {
            proposal: signed,
            valid: true,
        }))
    }

    /// Signs and gossips our vote; returns it as an input for our own core.
    fn send_vote(&mut self, vote: Vote) -> Result<Option<Input>, NodeError> {
        if self.catching_up() {
            return Ok(None);
        }
        let Some(signer) = self.signer.as_mut() else {
            return Ok(None);
        };
        let Some(signed) = signed_or_skip(signer.sign_vote(vote), "vote")? else {
            return Ok(None);
        };
        let conflicting = self.devnet.conflicting_vote(&vote, signer);
        let bytes = wire::encode_vote(&signed);
        if !self.devnet.withhold(&vote) {
            self.own_messages.push((Topic::Votes, bytes.clone()));
            self.send(P2pCommand::Publish(Topic::Votes, bytes));
        }
        if let Some(conflicting) = conflicting {
            self.send(P2pCommand::Publish(
                Topic::Votes,
                wire::encode_vote(&conflicting),
            ));
        }
        Ok(Some(Input::Vote(signed)))
    }

    /// Commits the decided block; the next height starts from the event loop.
    fn decide(
        &mut self,
        height: u64,
        round: u32,
        value: Hash,
        commit: &[SignedVote],
    ) -> Result<(), NodeError> {
        let Some(block) = self.candidates.remove(&value) else {
            return Err(NodeError::Chain(format!(
                "decided {value} at height {height} without holding the block"
            )));
        };
        let checked = decode_body(&block)
            .map_err(|error| NodeError::Chain(format!("decided block: {error}")))?;
        let tx_count = checked.txs.len();
        let latency = self.proposal_seen.get(&round).map(Instant::elapsed);
        let delay = self.devnet.commit_delay();
        if !delay.is_zero() {
            // Devnet slowdown: as slow execution would, it holds the loop.
            std::thread::sleep(delay);
        }
        self.commit(&block, checked, &Commit::from_votes(round, commit))?;
        self.record_decision(latency);
        tracing::debug!(height, round, hash = %value, txs = tx_count, "committed");
        // Even with no pause the next height starts from the event loop: a lone validator
        // would otherwise decide height after height inside this call, never serving its peers
        // (and overflow the stack).
        self.next_height_at = Some(Instant::now() + self.timeout_commit);
        Ok(())
    }

    /// Counts an equivocation and holds it for our next proposals.
    fn note_evidence(&mut self, evidence: Evidence) {
        self.evidence += 1;
        self.shared.metrics.evidence.inc();
        let (validator, height, round, kind) = evidence.key();
        tracing::warn!(validator, height, round, ?kind, "equivocation observed");
        let known = self
            .pending_evidence
            .iter()
            .any(|pending| pending.key() == evidence.key());
        if !known && self.pending_evidence.len() < MAX_PENDING_EVIDENCE {
            self.pending_evidence.push(evidence);
        }
    }

    pub(super) fn build_block(&self, height: u64, me: Option<ValidatorIndex>) -> Block {
        let txs: Vec<Vec<u8>> = self
            .shared
            .mempool
            .lock()
            .expect("mempool lock poisoned")
            .reap(self.max_block_txs, |sender| self.app.account(sender).nonce)
            .iter()
            .map(Tx::encode)
            .collect();
        let time_ms = self.shared.clock.now_ms().max(self.tip_time_ms + 1);
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
    pub(super) fn commit(
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
    pub(super) fn advance_set(&mut self, height: u64, commit: &Commit) -> Result<(), NodeError> {
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
}
