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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, round: Round, value: Option<u8>) -> SignedVote {
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 3,
            round,
            value: value.map(|byte| Hash([byte; 32])),
            validator: 0,
        };
        SignedVote {
            vote,
            signature: key.sign(&vote.sign_bytes("chain")),
        }
    }

    #[test]
    fn sign_bytes_bind_chain_step_height_round_and_value() {
        let vote = signed(&SigningKey::from_bytes(&[1; 32]), 0, Some(1)).vote;
        let base = vote.sign_bytes("chain");
        assert_ne!(base, vote.sign_bytes("other-chain"));
        for changed in [
            Vote {
                kind: VoteKind::Prevote,
                ..vote
            },
            Vote { height: 4, ..vote },
            Vote { round: 1, ..vote },
            Vote {
                value: None,
                ..vote
            },
            Vote {
                value: Some(Hash([2; 32])),
                ..vote
            },
        ] {
            assert_ne!(changed.sign_bytes("chain"), base, "{changed:?}");
        }
    }

    #[test]
    fn batch_verification_accepts_good_and_rejects_one_bad_signature() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let public = key.verifying_key();
        let mut votes: Vec<(SignedVote, VerifyingKey)> = (0..50)
            .map(|round| (signed(&key, round, Some(7)), public))
            .collect();
        assert!(verify_votes_batch("chain", &votes));
        assert!(!verify_votes_batch("other-chain", &votes));
        votes[17].0.vote.value = Some(Hash([8; 32]));
        assert!(!verify_votes_batch("chain", &votes));
        assert!(!votes[17].0.verify("chain", &public));
    }

    #[test]
    fn evidence_is_valid_only_for_two_different_signed_votes_of_one_slot() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let public = key.verifying_key();
        let evidence = Evidence {
            first: signed(&key, 0, Some(1)),
            second: signed(&key, 0, None),
        };
        assert!(evidence.is_valid("chain", &public));
        let same = Evidence {
            first: signed(&key, 0, Some(1)),
            second: signed(&key, 0, Some(1)),
        };
        assert!(!same.is_valid("chain", &public));
        let other_round = Evidence {
            first: signed(&key, 0, Some(1)),
            second: signed(&key, 1, None),
        };
        assert!(!other_round.is_valid("chain", &public));
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let forged = Evidence {
            first: signed(&key, 0, Some(1)),
            second: signed(&stranger, 0, None),
        };
        assert!(!forged.is_valid("chain", &public));
    }
}
