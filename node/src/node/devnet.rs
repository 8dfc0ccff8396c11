//! Devnet-only behaviours: the Byzantine switches of `[devnet]` (equivocating votes and
//! proposals, withheld votes, dropped proposals, amnesia, invalid blocks, a mutated block
//! field, transaction spam) and
//! the commit slowdown, beside the honest path that calls them.
//!
//! They are compiled only with the `devnet` cargo feature, which workspace builds (the harness
//! depends on it) and the harness's image build enable, and the operator image
//! (`cargo build -p blyan-node`, `node/Dockerfile`) does not. Without it, [`Devnet`] is a
//! zero-sized type whose every answer is the honest one, and `config.rs` refuses a `[devnet]`
//! section at start, naming the field.

use std::time::Duration;

use crate::block::Block;
use crate::config::DevnetConfig;
use crate::consensus::signer::{Signer, SignerStore};
use crate::consensus::types::{Proposal, SignedVote, Vote};

/// What the node asks before each act a Byzantine node may twist.
pub(super) struct Devnet {
    #[cfg(feature = "devnet")]
    config: DevnetConfig,
}

#[cfg(feature = "devnet")]
impl Devnet {
    pub(super) fn new(config: DevnetConfig) -> Devnet {
        Devnet { config }
    }

    /// Added to every commit of a decided block (zero when not set).
    pub(super) fn commit_delay(&self) -> Duration {
        Duration::from_millis(self.config.commit_delay_ms)
    }

    /// Whether "spam" is on (the node loop then ticks every 100 ms).
    pub(super) fn spamming(&self) -> bool {
        self.config.spam_txs_per_s > 0
    }

    /// "spam": a tenth of `spam_txs_per_s` junk transactions (well-formed length, random
    /// bytes, so every honest node must decode and refuse them) for one 100 ms tick.
    pub(super) fn spam(&self, height: u64, round: u32) -> Vec<Vec<u8>> {
        use rand::RngCore;
        if !self.spamming() || !self.config.fires(height, round, "spam") {
            return Vec::new();
        }
        let mut rng = rand::thread_rng();
        (0..self.config.spam_txs_per_s.div_ceil(10))
            .map(|_| {
                let mut junk = vec![0u8; 154];
                rng.fill_bytes(&mut junk);
                junk
            })
            .collect()
    }

    /// "amnesia": `Some(forget)` when `ignore_locks` is on, whether to forget our lock at
    /// `height`; `None` leaves the core as it is.
    pub(super) fn ignore_lock(&self, height: u64) -> Option<bool> {
        self.config
            .ignore_locks
            .then(|| self.config.fires(height, 0, "ignore_locks"))
    }

    /// "invalid_blocks" (a wrong app hash) and "mutate_block" (the named field): our proposed
    /// block, spoiled so that the others must refuse it.
    pub(super) fn spoil_block(&self, height: u64, round: u32, block: &mut Block) {
        if self.config.invalid_blocks && self.config.fires(height, round, "invalid_blocks") {
            mutate(block, "app_hash");
            tracing::warn!(height, round, "devnet: proposing an invalid block");
        }
        let field = self.config.mutate_block.as_str();
        if !field.is_empty() && self.config.fires(height, round, "mutate_block") {
            mutate(block, field);
            tracing::warn!(
                height,
                round,
                field,
                "devnet: proposing a block with one field mutated"
            );
        }
    }

    /// "equivocate_proposals": a second, different block for the same height and round,
    /// signed, encoded for gossip (peers see one or the other first).
    pub(super) fn second_proposal(
        &self,
        proposal: &Proposal,
        block: &Block,
        signer: &Signer<impl SignerStore>,
    ) -> Option<Vec<u8>> {
        let fires = self.config.equivocate_proposals
            && self
                .config
                .fires(proposal.height, proposal.round, "equivocate_proposals");
        fires.then(|| {
            let mut other = block.clone();
            other.header.time_ms += 1;
            let signed = signer.sign_proposal_unguarded(Proposal {
                value: other.hash(),
                ..*proposal
            });
            crate::wire::encode_proposal(&signed, &other)
        })
    }

    /// "equivocate_votes": with a vote for a block, a conflicting nil vote for the same
    /// height, round and step, for the others only.
    pub(super) fn conflicting_vote(
        &self,
        vote: &Vote,
        signer: &Signer<impl SignerStore>,
    ) -> Option<SignedVote> {
        let fires = self.config.equivocate_votes
            && vote.value.is_some()
            && self
                .config
                .fires(vote.height, vote.round, "equivocate_votes");
        fires.then(|| {
            signer.sign_unguarded(Vote {
                value: None,
                ..*vote
            })
        })
    }

    /// "withhold_votes": sign the vote but never send it.
    pub(super) fn withhold(&self, vote: &Vote) -> bool {
        self.config.withhold_votes && self.config.fires(vote.height, vote.round, "withhold_votes")
    }

    /// "drop_proposals": act as if the proposal never came (and do not pass it on).
    pub(super) fn drop_proposal(&self, proposal: &Proposal) -> bool {
        self.config.drop_proposals
            && self
                .config
                .fires(proposal.height, proposal.round, "drop_proposals")
    }
}

/// Changes `field` (one of [`crate::config::MUTABLE_BLOCK_FIELDS`]) of an otherwise valid
/// block: a hash flipped in its first byte, the time an hour ahead, or a junk transaction added
/// with the data hash recomputed (so the header is consistent and only re-checking the
/// transactions finds it). The caller hashes and signs the result.
#[cfg(feature = "devnet")]
pub(crate) fn mutate(block: &mut Block, field: &str) {
    let header = &mut block.header;
    match field {
        "app_hash" => header.app_hash.0[0] ^= 0xff,
        "prev_hash" => header.prev_hash.0[0] ^= 0xff,
        "validators_hash" => header.validators_hash.0[0] ^= 0xff,
        "time" => header.time_ms += 3_600_000,
        "txs" => {
            let junk = (0..154u8).map(|i| i.wrapping_mul(31) ^ header.height as u8);
            block.txs.push(junk.collect());
            block.header.data_hash =
                crate::block::data_hash(&block.txs, &block.last_commit, &block.evidence);
        }
        other => unreachable!("config validation admits only MUTABLE_BLOCK_FIELDS, got {other:?}"),
    }
}

/// The honest node: every answer is "behave".
#[cfg(not(feature = "devnet"))]
impl Devnet {
    pub(super) fn new(config: DevnetConfig) -> Devnet {
        debug_assert!(config.is_off(), "config validation refuses [devnet] here");
        Devnet {}
    }

    pub(super) fn commit_delay(&self) -> Duration {
        Duration::ZERO
    }

    pub(super) fn spamming(&self) -> bool {
        false
    }

    pub(super) fn spam(&self, _height: u64, _round: u32) -> Vec<Vec<u8>> {
        Vec::new()
    }

    pub(super) fn ignore_lock(&self, _height: u64) -> Option<bool> {
        None
    }

    pub(super) fn spoil_block(&self, _height: u64, _round: u32, _block: &mut Block) {}

    pub(super) fn second_proposal(
        &self,
        _proposal: &Proposal,
        _block: &Block,
        _signer: &Signer<impl SignerStore>,
    ) -> Option<Vec<u8>> {
        None
    }

    pub(super) fn conflicting_vote(
        &self,
        _vote: &Vote,
        _signer: &Signer<impl SignerStore>,
    ) -> Option<SignedVote> {
        None
    }

    pub(super) fn withhold(&self, _vote: &Vote) -> bool {
        false
    }

    pub(super) fn drop_proposal(&self, _proposal: &Proposal) -> bool {
        false
    }
}
