//! The validator's signer with double-sign protection.
//!
//! Before a signature leaves the signer, it persists what it signs: height, round, step, the
//! value, the signature, and the lock the validator holds. It refuses to sign anything at an
//! earlier height/round/step, and anything different at the same one (it hands back the stored
//! signature for an identical request). After a restart it reloads that record, so a validator
//! that crashes mid-round never double-signs, and resumes with its lock.

use ed25519_dalek::{Signature, Signer as _, SigningKey};

use super::state_machine::Resume;
use super::types::{Height, Proposal, Round, SignedProposal, SignedVote, ValueId, Vote, VoteKind};
use crate::block::Hash;
use crate::storage::{Storage, StorageError};

/// Step order within a round, as the signer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignStep {
    Propose = 1,
    Prevote = 2,
    Precommit = 3,
}

/// The signer's durable record of the last thing it signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastSigned {
    pub height: Height,
    pub round: Round,
    pub step: SignStep,
    pub sign_bytes_hash: Hash,
    pub signature: Signature,
    /// The lock after this signature: set by a precommit for a value, kept within the height.
    pub locked: Option<(Round, ValueId)>,
    /// The vote itself when the last signature was a vote, so a restart can count and re-send it.
    pub vote: Option<Vote>,
}

const RECORD_BYTES: usize = 8 + 4 + 1 + 32 + 64 + 1 + 4 + 32 + VOTE_BYTES;
const VOTE_BYTES: usize = 1 + 1 + 32 + 4;

fn encode_vote(vote: Option<Vote>, bytes: &mut Vec<u8>) {
    match vote {
        None => bytes.extend_from_slice(&[0; VOTE_BYTES]),
        Some(vote) => {
            bytes.push(match vote.kind {
                VoteKind::Prevote => 1,
                VoteKind::Precommit => 2,
            });
            bytes.push(u8::from(vote.value.is_some()));
            bytes.extend_from_slice(&vote.value.unwrap_or(Hash::ZERO).0);
            bytes.extend_from_slice(&vote.validator.to_be_bytes());
        }
    }
}

fn decode_vote(bytes: &[u8], height: Height, round: Round) -> Option<Option<Vote>> {
    let kind = match bytes[0] {
        0 => return Some(None),
        1 => VoteKind::Prevote,
        2 => VoteKind::Precommit,
        _ => return None,
    };
    let value = match bytes[1] {
        0 => None,
        1 => Some(Hash(bytes[2..34].try_into().ok()?)),
        _ => return None,
    };
    let validator = u32::from_be_bytes(bytes[34..38].try_into().ok()?);
    Some(Some(Vote {
        kind,
        height,
        round,
        value,
        validator,
    }))
}

impl LastSigned {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(RECORD_BYTES);
        bytes.extend_from_slice(&self.height.to_be_bytes());
        bytes.extend_from_slice(&self.round.to_be_bytes());
        bytes.push(self.step as u8);
        bytes.extend_from_slice(&self.sign_bytes_hash.0);
        bytes.extend_from_slice(&self.signature.to_bytes());
        let (flag, round, value) = match self.locked {
            Some((round, value)) => (1, round, value),
            None => (0, 0, Hash::ZERO),
        };
        bytes.push(flag);
        bytes.extend_from_slice(&round.to_be_bytes());
        bytes.extend_from_slice(&value.0);
        encode_vote(self.vote, &mut bytes);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<LastSigned> {
        if bytes.len() != RECORD_BYTES {
            return None;
        }
        let height = u64::from_be_bytes(bytes[0..8].try_into().ok()?);
        let round = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
        let step = match bytes[12] {
            1 => SignStep::Propose,
            2 => SignStep::Prevote,
            3 => SignStep::Precommit,
            _ => return None,
        };
        let sign_bytes_hash = Hash(bytes[13..45].try_into().ok()?);
        let signature = Signature::from_bytes(&bytes[45..109].try_into().ok()?);
        let locked_round = u32::from_be_bytes(bytes[110..114].try_into().ok()?);
        let locked_value = Hash(bytes[114..146].try_into().ok()?);
        let locked = match bytes[109] {
            0 => None,
            1 => Some((locked_round, locked_value)),
            _ => return None,
        };
        let vote = decode_vote(&bytes[146..], height, round)?;
        Some(LastSigned {
            height,
            round,
            step,
            sign_bytes_hash,
            signature,
            locked,
            vote,
        })
    }
}

/// Where the signer keeps its record. `save` must be durable when it returns.
pub trait SignerStore {
    fn load(&self) -> Result<Option<LastSigned>, SignError>;
    fn save(&mut self, record: &LastSigned) -> Result<(), SignError>;
}

/// Why the signer refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("refusing to sign {step:?} at height {height} round {round}: already signed a later step (height {last_height} round {last_round} {last_step:?})")]
    Regression {
        height: Height,
        round: Round,
        step: SignStep,
        last_height: Height,
        last_round: Round,
        last_step: SignStep,
    },
    #[error("refusing to double-sign {step:?} at height {height} round {round}: a different message was signed there")]
    Conflict {
        height: Height,
        round: Round,
        step: SignStep,
    },
    #[error("signer record is corrupt")]
    CorruptRecord,
    #[error("signer store: {0}")]
    Storage(#[from] StorageError),
}

/// A store in memory (the simulator keeps it across simulated crashes).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub record: Option<LastSigned>,
}

impl SignerStore for MemoryStore {
    fn load(&self) -> Result<Option<LastSigned>, SignError> {
        Ok(self.record)
    }

    fn save(&mut self, record: &LastSigned) -> Result<(), SignError> {
        self.record = Some(*record);
        Ok(())
    }
}

/// The record in the node's RocksDB `consensus` family, written with a synced WAL. Holds the
/// storage by reference or by `Arc`.
pub struct StorageStore<S: std::ops::Deref<Target = Storage>> {
    pub storage: S,
}

const SIGNER_KEY: &[u8] = b"signer/last_signed";

impl<S: std::ops::Deref<Target = Storage>> SignerStore for StorageStore<S> {
    fn load(&self) -> Result<Option<LastSigned>, SignError> {
        match self.storage.consensus_get(SIGNER_KEY)? {
            None => Ok(None),
            Some(bytes) => LastSigned::decode(&bytes)
                .map(Some)
                .ok_or(SignError::CorruptRecord),
        }
    }

    fn save(&mut self, record: &LastSigned) -> Result<(), SignError> {
        Ok(self.storage.consensus_put(SIGNER_KEY, &record.encode())?)
    }
}

/// Signs proposals and votes, never twice differently for one height/round/step.
pub struct Signer<S: SignerStore> {
    key: SigningKey,
    chain_id: String,
    store: S,
    last: Option<LastSigned>,
}

impl<S: SignerStore> Signer<S> {
    pub fn new(key: SigningKey, chain_id: &str, store: S) -> Result<Signer<S>, SignError> {
        let last = store.load()?;
        Ok(Signer {
            key,
            chain_id: chain_id.to_string(),
            store,
            last,
        })
    }

    pub fn last_signed(&self) -> Option<LastSigned> {
        self.last
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Where to resume `height` after a restart: the round last signed in and the lock held.
    pub fn resume(&self, height: Height) -> Option<Resume> {
        self.last
            .filter(|last| last.height == height)
            .map(|last| Resume {
                round: last.round,
                locked: last.locked,
                last_vote: last.vote.map(|vote| SignedVote {
                    vote,
                    signature: last.signature,
                }),
            })
    }

    fn sign(
        &mut self,
        height: Height,
        round: Round,
        step: SignStep,
        bytes: &[u8],
        locks: Option<(Round, ValueId)>,
        vote: Option<Vote>,
    ) -> Result<Signature, SignError> {
        let digest = Hash::digest(bytes);
        let mut locked = None;
        if let Some(last) = self.last {
            let position = (height, round, step);
            let last_position = (last.height, last.round, last.step);
            if position < last_position {
                return Err(SignError::Regression {
                    height,
                    round,
                    step,
                    last_height: last.height,
                    last_round: last.round,
                    last_step: last.step,
                });
            }
            if position == last_position {
                if last.sign_bytes_hash == digest {
                    return Ok(last.signature);
                }
                return Err(SignError::Conflict {
                    height,
                    round,
                    step,
                });
            }
            if last.height == height {
                locked = last.locked;
            }
        }
        let signature = self.key.sign(bytes);
        let record = LastSigned {
            height,
            round,
            step,
            sign_bytes_hash: digest,
            signature,
            locked: locks.or(locked),
            vote,
        };
        // Persist first: the signature leaves only once the record is durable.
        self.store.save(&record)?;
        self.last = Some(record);
        Ok(signature)
    }

    /// Signs `vote` with no double-sign guard and no record. Only for devnet nodes made to
    /// equivocate on purpose (`[devnet] equivocate_votes`), so that the harness can check that
    /// the others catch it; compiled only with the `devnet` feature.
    #[cfg(feature = "devnet")]
    pub fn sign_unguarded(&self, vote: Vote) -> SignedVote {
        let signature = self.key.sign(&vote.sign_bytes(&self.chain_id));
        SignedVote { vote, signature }
    }

    /// Signs `proposal` with no double-sign guard and no record: only for devnet nodes made to
    /// equivocate proposals on purpose (`[devnet] equivocate_proposals`); compiled only with
    /// the `devnet` feature.
    #[cfg(feature = "devnet")]
    pub fn sign_proposal_unguarded(&self, proposal: Proposal) -> SignedProposal {
        let signature = self.key.sign(&proposal.sign_bytes(&self.chain_id));
        SignedProposal {
            proposal,
            signature,
        }
    }

    pub fn sign_vote(&mut self, vote: Vote) -> Result<SignedVote, SignError> {
        let step = match vote.kind {
            VoteKind::Prevote => SignStep::Prevote,
            VoteKind::Precommit => SignStep::Precommit,
        };
        let locks = match (vote.kind, vote.value) {
            (VoteKind::Precommit, Some(value)) => Some((vote.round, value)),
            _ => None,
        };
        let bytes = vote.sign_bytes(&self.chain_id);
        let signature = self.sign(vote.height, vote.round, step, &bytes, locks, Some(vote))?;
        Ok(SignedVote { vote, signature })
    }

    pub fn sign_proposal(&mut self, proposal: Proposal) -> Result<SignedProposal, SignError> {
        let bytes = proposal.sign_bytes(&self.chain_id);
        let signature = self.sign(
            proposal.height,
            proposal.round,
            SignStep::Propose,
            &bytes,
            None,
            None,
        )?;
        Ok(SignedProposal {
            proposal,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    fn vote(kind: VoteKind, round: Round, value: Option<u8>) -> Vote {
        Vote {
            kind,
            height: 5,
            round,
            value: value.map(|byte| Hash([byte; 32])),
            validator: 0,
        }
    }

    #[test]
    fn refuses_conflicts_and_regressions_but_repeats_identical_signatures() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut signer = Signer::new(key, "chain", MemoryStore::default()).unwrap();
        let first = signer
            .sign_vote(vote(VoteKind::Prevote, 0, Some(1)))
            .unwrap();
        let again = signer
            .sign_vote(vote(VoteKind::Prevote, 0, Some(1)))
            .unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            signer.sign_vote(vote(VoteKind::Prevote, 0, Some(2))),
            Err(SignError::Conflict { .. })
        ));
        signer
            .sign_vote(vote(VoteKind::Precommit, 1, Some(1)))
            .unwrap();
        assert!(matches!(
            signer.sign_vote(vote(VoteKind::Prevote, 1, None)),
            Err(SignError::Regression { .. })
        ));
        let resume = signer.resume(5).unwrap();
        assert_eq!((resume.round, resume.locked), (1, Some((1, Hash([1; 32])))));
        assert_eq!(
            resume.last_vote.unwrap().vote,
            vote(VoteKind::Precommit, 1, Some(1))
        );
    }

    #[test]
    fn record_round_trips() {
        let record = LastSigned {
            height: 7,
            round: 2,
            step: SignStep::Precommit,
            sign_bytes_hash: Hash([3; 32]),
            signature: Signature::from_bytes(&[4; 64]),
            locked: Some((2, Hash([5; 32]))),
            vote: Some(Vote {
                kind: VoteKind::Precommit,
                height: 7,
                round: 2,
                value: None,
                validator: 3,
            }),
        };
        assert_eq!(LastSigned::decode(&record.encode()), Some(record));
        assert_eq!(LastSigned::decode(&[1, 2, 3]), None);
    }

    /// A validator "killed" mid-round (its signer and database dropped without a clean
    /// shutdown) and restarted from the same RocksDB refuses to sign a conflicting vote.
    #[test]
    fn restart_from_rocksdb_mid_round_never_double_signs() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let prevote_for_a = vote(VoteKind::Prevote, 3, Some(0xA));
        {
            let storage = Storage::open(dir.path(), &StorageConfig::default()).unwrap();
            let mut signer =
                Signer::new(key.clone(), "chain", StorageStore { storage: &storage }).unwrap();
            signer
                .sign_vote(vote(VoteKind::Precommit, 2, Some(0xA)))
                .unwrap();
            signer.sign_vote(prevote_for_a).unwrap();
            // Dropped here mid-round: no flush, no shutdown.
        }
        let storage = Storage::open(dir.path(), &StorageConfig::default()).unwrap();
        let mut signer = Signer::new(key, "chain", StorageStore { storage: &storage }).unwrap();
        assert!(matches!(
            signer.sign_vote(vote(VoteKind::Prevote, 3, Some(0xB))),
            Err(SignError::Conflict { .. })
        ));
        assert!(matches!(
            signer.sign_vote(vote(VoteKind::Prevote, 3, None)),
            Err(SignError::Conflict { .. })
        ));
        assert!(
            signer.sign_vote(prevote_for_a).is_ok(),
            "the same vote may be re-sent"
        );
        let resume = signer.resume(5).unwrap();
        assert_eq!(
            (resume.round, resume.locked),
            (3, Some((2, Hash([0xA; 32])))),
            "the lock survives the restart"
        );
        assert_eq!(
            resume.last_vote.unwrap().vote,
            prevote_for_a,
            "and so does the last vote"
        );
    }
}
