//! Wire encodings of consensus messages and commit certificates. Decoding takes untrusted
//! bytes and never panics; every length is checked.

use ed25519_dalek::Signature;

use crate::block::{Block, Hash};
use crate::types::{Evidence, Proposal, SignedProposal, SignedVote, Vote, VoteKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("bad {0}")]
    Bad(&'static str),
    #[error("block: {0}")]
    Block(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < count {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn hash(&mut self) -> Result<Hash, WireError> {
        Ok(Hash(self.take(32)?.try_into().expect("32 bytes")))
    }
    fn signature(&mut self) -> Result<Signature, WireError> {
        Ok(Signature::from_bytes(
            self.take(64)?.try_into().expect("64 bytes"),
        ))
    }
    fn finish(self) -> Result<(), WireError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(WireError::Trailing(extra)),
        }
    }
}

pub fn encode_vote(vote: &SignedVote) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 4 + 33 + 4 + 64);
    let v = &vote.vote;
    out.push(match v.kind {
        VoteKind::Prevote => 1,
        VoteKind::Precommit => 2,
    });
    out.extend_from_slice(&v.height.to_be_bytes());
    out.extend_from_slice(&v.round.to_be_bytes());
    match v.value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&value.0);
        }
    }
    out.extend_from_slice(&v.validator.to_be_bytes());
    out.extend_from_slice(&vote.signature.to_bytes());
    out
}

pub fn decode_vote(bytes: &[u8]) -> Result<SignedVote, WireError> {
    let mut reader = Reader { bytes };
    let kind = match reader.u8()? {
        1 => VoteKind::Prevote,
        2 => VoteKind::Precommit,
        _ => return Err(WireError::Bad("vote kind")),
    };
    let height = reader.u64()?;
    let round = reader.u32()?;
    let value = match reader.u8()? {
        0 => None,
        1 => Some(reader.hash()?),
        _ => return Err(WireError::Bad("vote value flag")),
    };
    let validator = reader.u32()?;
    let signature = reader.signature()?;
    reader.finish()?;
    Ok(SignedVote {
        vote: Vote {
            kind,
            height,
            round,
            value,
            validator,
        },
        signature,
    })
}

/// Evidence of equivocation: the two votes, each length-prefixed (u16 BE).
pub fn encode_evidence(evidence: &Evidence) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * 160);
    for vote in [&evidence.first, &evidence.second] {
        let bytes = encode_vote(vote);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

pub fn decode_evidence(bytes: &[u8]) -> Result<Evidence, WireError> {
    let mut reader = Reader { bytes };
    let mut vote = || -> Result<SignedVote, WireError> {
        let length = u16::from_be_bytes(reader.take(2)?.try_into().expect("2 bytes"));
        decode_vote(reader.take(usize::from(length))?)
    };
    let first = vote()?;
    let second = vote()?;
    reader.finish()?;
    Ok(Evidence { first, second })
}

/// A proposal travels with its block.
pub fn encode_proposal(proposal: &SignedProposal, block: &Block) -> Vec<u8> {
    let body = block.encode();
    let p = &proposal.proposal;
    let mut out = Vec::with_capacity(8 + 4 + 32 + 5 + 4 + 64 + body.len());
    out.extend_from_slice(&p.height.to_be_bytes());
    out.extend_from_slice(&p.round.to_be_bytes());
    out.extend_from_slice(&p.value.0);
    match p.pol_round {
        None => out.push(0),
        Some(round) => {
            out.push(1);
            out.extend_from_slice(&round.to_be_bytes());
        }
    }
    out.extend_from_slice(&p.proposer.to_be_bytes());
    out.extend_from_slice(&proposal.signature.to_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode_proposal(bytes: &[u8]) -> Result<(SignedProposal, Block), WireError> {
    let mut reader = Reader { bytes };
    let height = reader.u64()?;
    let round = reader.u32()?;
    let value = reader.hash()?;
    let pol_round = match reader.u8()? {
        0 => None,
        1 => Some(reader.u32()?),
        _ => return Err(WireError::Bad("proof-of-lock flag")),
    };
    let proposer = reader.u32()?;
    let signature = reader.signature()?;
    let block = Block::decode(reader.bytes).map_err(|error| WireError::Block(error.to_string()))?;
    if block.hash() != value {
        return Err(WireError::Bad("block hash (not the proposed value)"));
    }
    Ok((
        SignedProposal {
            proposal: Proposal {
                height,
                round,
                value,
                pol_round,
                proposer,
            },
            signature,
        },
        block,
    ))
}

/// A commit certificate: the round and the precommit signatures for a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub round: u32,
    pub signatures: Vec<(u32, Signature)>,
}

/// Most signatures a certificate may hold (bounds decoding).
pub const MAX_COMMIT_SIGNATURES: u32 = 10_000;

impl Commit {
    pub fn from_votes(round: u32, votes: &[SignedVote]) -> Commit {
        let mut signatures: Vec<(u32, Signature)> = votes
            .iter()
            .map(|vote| (vote.vote.validator, vote.signature))
            .collect();
        signatures.sort_by_key(|(validator, _)| *validator);
        Commit { round, signatures }
    }

    /// The precommits this certificate stands for, for `block_hash` at `height`.
    pub fn votes(&self, height: u64, block_hash: Hash) -> Vec<SignedVote> {
        self.signatures
            .iter()
            .map(|(validator, signature)| SignedVote {
                vote: Vote {
                    kind: VoteKind::Precommit,
                    height,
                    round: self.round,
                    value: Some(block_hash),
                    validator: *validator,
                },
                signature: *signature,
            })
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.signatures.len() * 68);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&(self.signatures.len() as u32).to_be_bytes());
        for (validator, signature) in &self.signatures {
            out.extend_from_slice(&validator.to_be_bytes());
            out.extend_from_slice(&signature.to_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Commit, WireError> {
        let mut reader = Reader { bytes };
        let round = reader.u32()?;
        let count = reader.u32()?;
        if count > MAX_COMMIT_SIGNATURES {
            return Err(WireError::Bad("signature count"));
        }
        let mut signatures = Vec::with_capacity(count as usize);
        for _ in 0..count {
            signatures.push((reader.u32()?, reader.signature()?));
        }
        reader.finish()?;
        Ok(Commit { round, signatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    fn block() -> Block {
        Block::new("c", 3, 10, Hash([1; 32]), Hash([2; 32]), vec![vec![7; 20]])
    }

    #[test]
    fn messages_round_trip() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 3,
            round: 1,
            value: Some(Hash([5; 32])),
            validator: 2,
        };
        let signed = SignedVote {
            vote,
            signature: key.sign(&vote.sign_bytes("c")),
        };
        assert_eq!(decode_vote(&encode_vote(&signed)).unwrap(), signed);
        let nil = SignedVote {
            vote: Vote {
                value: None,
                ..vote
            },
            ..signed
        };
        assert_eq!(decode_vote(&encode_vote(&nil)).unwrap(), nil);

        let block = block();
        let proposal = Proposal {
            height: 3,
            round: 1,
            value: block.hash(),
            pol_round: Some(0),
            proposer: 1,
        };
        let signed_proposal = SignedProposal {
            proposal,
            signature: key.sign(&proposal.sign_bytes("c")),
        };
        let (decoded, decoded_block) =
            decode_proposal(&encode_proposal(&signed_proposal, &block)).unwrap();
        assert_eq!(decoded, signed_proposal);
        assert_eq!(decoded_block, block);

        let other = Block::new("c", 3, 11, Hash([1; 32]), Hash([2; 32]), vec![]);
        assert_eq!(
            decode_proposal(&encode_proposal(&signed_proposal, &other)).unwrap_err(),
            WireError::Bad("block hash (not the proposed value)")
        );

        let commit = Commit::from_votes(1, &[signed]);
        assert_eq!(Commit::decode(&commit.encode()).unwrap(), commit);
        assert_eq!(commit.votes(3, Hash([5; 32]))[0], signed);
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_vote(&bytes);
            let _ = decode_proposal(&bytes);
            let _ = Commit::decode(&bytes);
        }
    }
}
