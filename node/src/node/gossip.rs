//! Gossip in and out: checking votes, proposals and transactions from peers, the validation
//! verdicts sent back to gossipsub, buffering early messages, and re-sending our own messages
//! when a height makes no progress.

use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::PeerId;

use crate::app::{check_block, Tx, TxError};
use crate::block::{Block, Hash};
use crate::consensus::state_machine::Input;
use crate::consensus::types::{SignedProposal, SignedVote};
use crate::p2p::{P2pCommand, P2pEvent, Topic};
use crate::state::set_hash;
use crate::wire::{self};

use super::*;

impl Node {
    /// The key of validator `index` at `height`: the tip's set, the next height's (`set`) or
    /// the one after (older heights are checked against `set`, then ignored).
    pub(super) fn validator_key(&self, height: u64, index: u32) -> Option<VerifyingKey> {
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
    pub(super) fn add_late_precommit(&mut self, vote: &SignedVote) {
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

    pub(super) fn accept(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) {
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
    pub(super) fn reject(&self, id: MessageId, source: PeerId, reason: &'static str) {
        crate::metrics::refuse(&self.shared.metrics.refused_inputs, "p2p", reason);
        self.accept(id, source, MessageAcceptance::Reject);
    }

    /// A height some peer is at tells us it committed the one before.
    pub(super) fn saw_height(&mut self, height: u64, peer: PeerId) {
        let committed = height.saturating_sub(1);
        if committed > self.best_known {
            self.best_known = committed;
            self.best_peer = Some(peer);
        }
    }

    pub(super) fn buffer(&mut self, message: Buffered) {
        if message.height() == self.consensus.height() + 1 && self.buffered.len() < MAX_BUFFERED {
            self.buffered.push(message);
        }
    }

    /// An event from the P2P task; one from a peer an incoming message fault names goes through
    /// that fault first (devnet builds).
    pub(super) fn on_p2p(&mut self, event: P2pEvent) -> Result<(), NodeError> {
        #[cfg(feature = "devnet")]
        if self.shared.inbound.active()
            && super::messages::peer_of(&event)
                .is_some_and(|peer| self.shared.inbound.concerns(&peer))
        {
            let shaped = self.shared.inbound.shape(event);
            if let Some((delay, event)) = shaped.later {
                let held = self.held.0.clone();
                self.shared.inbound.later(delay, event, move |event| {
                    let _ = held.try_send(event);
                });
            }
            for event in shaped.now {
                self.on_p2p_event(event)?;
            }
            return Ok(());
        }
        self.on_p2p_event(event)
    }

    pub(super) fn on_p2p_event(&mut self, event: P2pEvent) -> Result<(), NodeError> {
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

    pub(super) fn on_vote_message(
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

    pub(super) fn on_proposal_message(
        &mut self,
        data: &[u8],
        source: PeerId,
        id: MessageId,
    ) -> Result<(), NodeError> {
        let Ok((proposal, block)) = wire::decode_proposal(data) else {
            self.reject(id, source, "malformed_proposal");
            return Ok(());
        };
        if self.devnet.drop_proposal(&proposal.proposal) {
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
    pub(super) fn expected(&self, max_txs: usize) -> crate::app::Expected<'_> {
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
            latest_time_ms: None,
        }
    }

    /// A signature-checked proposal of the current height; returns the block's validity.
    pub(super) fn on_proposal(
        &mut self,
        proposal: SignedProposal,
        block: Block,
    ) -> Result<bool, NodeError> {
        self.note_proposed_value(&proposal);
        // Transactions in our mempool were verified when they entered it.
        let mempool = self.shared.mempool.lock().expect("mempool lock poisoned");
        let expected = crate::app::Expected {
            latest_time_ms: Some(crate::app::latest_block_time(
                self.shared.clock.now_ms(),
                self.tip_time_ms,
            )),
            ..self.expected(self.max_block_txs)
        };
        let verdict =
            check_block(&block, &expected, &|hash| mempool.contains(hash)).and_then(|checked| {
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
    pub(super) fn note_proposed_value(&mut self, proposal: &SignedProposal) {
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
    pub(super) fn submit(&mut self, bytes: &[u8], from: Option<PeerId>) -> Result<Hash, TxError> {
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

    pub(super) fn maybe_rebroadcast(&mut self) {
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
}
