//! Consensus messages, their canonical sign bytes, and evidence.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::block::Hash;

pub type Height = u64;
pub type Round = u32;
/// Position of a validator in the height's validator set.
pub type ValidatorIndex = u32;
/// What consensus agrees on: the hash of a block.
pub type ValueId = Hash;

/// The two kinds of vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

impl VoteKind {
    fn tag(self) -> u8 {
        match self {
            VoteKind::Prevote => 1,
            VoteKind::Precommit => 2,
        }
    }
}

/// A vote for a value (or nil) at a height, round and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vote {
    pub kind: VoteKind,
    pub height: Height,
    pub round: Round,
    /// `None` is a nil vote.
    pub value: Option<ValueId>,
    pub validator: ValidatorIndex,
}

/// A proposal of a value for a height and round; `pol_round` is the round of the proof of lock
/// (the "valid round") when the proposer re-proposes a value it saw a polka for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: ValueId,
    pub pol_round: Option<Round>,
    pub proposer: ValidatorIndex,
}

fn chain_prefix(domain: &[u8], chain_id: &str) -> Vec<u8> {
    assert!(chain_id.len() <= 255, "chain id fits one length byte");
    let mut bytes = Vec::with_capacity(96);
    bytes.extend_from_slice(domain);
    bytes.push(chain_id.len() as u8);
    bytes.extend_from_slice(chain_id.as_bytes());
    bytes
}

impl Vote {
    /// Canonical bytes that are signed: domain, chain id, step, height, round, value.
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        let mut bytes = chain_prefix(b"blyan/vote/v1", chain_id);
        bytes.push(self.kind.tag());
        bytes.extend_from_slice(&self.height.to_be_bytes());
        bytes.extend_from_slice(&self.round.to_be_bytes());
        match self.value {
            None => bytes.push(0),
            Some(value) => {
                bytes.push(1);
                bytes.extend_from_slice(&value.0);
            }
        }
        bytes
    }
}

impl Proposal {
    /// Canonical bytes that are signed: domain, chain id, height, round, value, proof-of-lock round.
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        let mut bytes = chain_prefix(b"blyan/proposal/v1", chain_id);
        bytes.extend_from_slice(&self.height.to_be_bytes());
        bytes.extend_from_slice(&self.round.to_be_bytes());
        bytes.extend_from_slice(&self.value.0);
        match self.pol_round {
            None => bytes.push(0),
            Some(round) => {
                bytes.push(1);
                bytes.extend_from_slice(&round.to_be_bytes());
            }
        }
        bytes
    }
}

/// A vote with its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedVote {
    pub vote: Vote,
    pub signature: Signature,
}

/// A proposal with its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedProposal {
    pub proposal: Proposal,
    pub signature: Signature,
}

impl SignedVote {
    pub fn verify(&self, chain_id: &str, key: &VerifyingKey) -> bool {
        key.verify(&self.vote.sign_bytes(chain_id), &self.signature)
            .is_ok()
    }
}

impl SignedProposal {
    pub fn verify(&self, chain_id: &str, key: &VerifyingKey) -> bool {
        key.verify(&self.proposal.sign_bytes(chain_id), &self.signature)
            .is_ok()
    }
}

/// Verifies many votes at once (ed25519 batch verification); true only if all are valid.
pub fn verify_votes_batch(chain_id: &str, votes: &[(SignedVote, VerifyingKey)]) -> bool {
    let messages: Vec<Vec<u8>> = votes
        .iter()
        .map(|(vote, _)| vote.vote.sign_bytes(chain_id))
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<Signature> = votes.iter().map(|(vote, _)| vote.signature).collect();
    let keys: Vec<VerifyingKey> = votes.iter().map(|(_, key)| *key).collect();
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok()
}

/// Proof that a validator signed two different votes for one height, round and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub first: SignedVote,
    pub second: SignedVote,
}

/// What an equivocation is about: one validator, height, round and step.
pub type EquivocationKey = (ValidatorIndex, Height, Round, VoteKind);

impl Evidence {
    pub fn key(&self) -> EquivocationKey {
        let vote = self.first.vote;
        (vote.validator, vote.height, vote.round, vote.kind)
    }

    /// Both votes are the same validator's, at one height/round/step, for different values, and
    /// both signatures verify.
    pub fn is_valid(&self, chain_id: &str, key: &VerifyingKey) -> bool {
        let (first, second) = (self.first.vote, self.second.vote);
        first.validator == second.validator
            && first.height == second.height
            && first.round == second.round
            && first.kind == second.kind
            && first.value != second.value
            && self.first.verify(chain_id, key)
            && self.second.verify(chain_id, key)
    }
}
