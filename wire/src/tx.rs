//! Signed transactions.
//!
//! Every transaction is `version, kind, from, body, fee, nonce, signature`: the sender's ed25519
//! public key is its address, the signature covers the chain id and every other byte, and the
//! per-account nonce stops replay. A transfer is 154 bytes (`to`, `amount` as its body), the
//! same layout as before the other kinds existed.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};

use crate::block::Hash;
use crate::types::Evidence;

pub const TX_VERSION: u8 = 1;
/// Largest encoded transaction.
pub const MAX_TX_BYTES: usize = 1024;
/// Longest expert name and metadata text.
pub const MAX_EXPERT_TEXT: usize = 128;

/// Why a transaction is refused (by the mempool or the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("invalid signature")]
    BadSignature,
    #[error("nonce {got} already used (account nonce is {expected})")]
    StaleNonce { expected: u64, got: u64 },
    #[error("nonce {got} is too far ahead of the account nonce {expected}")]
    NonceGap { expected: u64, got: u64 },
    #[error("balance {balance} is less than amount + fee {needed}")]
    InsufficientFunds { balance: u64, needed: u128 },
    #[error("would fail: {0}")]
    WouldFail(String),
    #[error("already in the mempool")]
    Duplicate,
    #[error("mempool is full ({0})")]
    MempoolFull(String),
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxBody {
    /// Moves `amount` to `to`.
    Transfer { to: [u8; 32], amount: u64 },
    /// Makes the sender a validator (its address is its consensus key) with `amount` self-bonded.
    CreateValidator { amount: u64, commission_bps: u32 },
    /// Bonds `amount` of the sender's balance to `validator`.
    Delegate { validator: [u8; 32], amount: u64 },
    /// Starts unbonding `amount` from `validator`; it returns after the unbonding period.
    Undelegate { validator: [u8; 32], amount: u64 },
    /// A jailed (not tombstoned) validator asks to come back once its jail time is over.
    Unjail,
    /// Records an expert: the hash of its content and the Merkle root of its weight tiles.
    RegisterExpert {
        content_hash: Hash,
        tiles_root: Hash,
        name: String,
        layer: u32,
        tiles: u32,
        bytes: u64,
    },
    /// Anyone may submit proof that a validator signed two conflicting votes.
    SubmitEvidence { evidence: Box<Evidence> },
}

impl TxBody {
    pub fn kind(&self) -> u8 {
        match self {
            TxBody::Transfer { .. } => 1,
            TxBody::CreateValidator { .. } => 2,
            TxBody::Delegate { .. } => 3,
            TxBody::Undelegate { .. } => 4,
            TxBody::Unjail => 5,
            TxBody::RegisterExpert { .. } => 6,
            TxBody::SubmitEvidence { .. } => 7,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            TxBody::Transfer { .. } => "transfer",
            TxBody::CreateValidator { .. } => "create_validator",
            TxBody::Delegate { .. } => "delegate",
            TxBody::Undelegate { .. } => "undelegate",
            TxBody::Unjail => "unjail",
            TxBody::RegisterExpert { .. } => "register_expert",
            TxBody::SubmitEvidence { .. } => "submit_evidence",
        }
    }

    /// What leaves the sender's balance besides the fee.
    pub fn spends(&self) -> u64 {
        match self {
            TxBody::Transfer { amount, .. }
            | TxBody::CreateValidator { amount, .. }
            | TxBody::Delegate { amount, .. } => *amount,
            _ => 0,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            TxBody::Transfer { to, amount } => {
                out.extend_from_slice(to);
                out.extend_from_slice(&amount.to_be_bytes());
            }
            TxBody::CreateValidator {
                amount,
                commission_bps,
            } => {
                out.extend_from_slice(&amount.to_be_bytes());
                out.extend_from_slice(&commission_bps.to_be_bytes());
            }
            TxBody::Delegate { validator, amount } | TxBody::Undelegate { validator, amount } => {
                out.extend_from_slice(validator);
                out.extend_from_slice(&amount.to_be_bytes());
            }
            TxBody::Unjail => {}
            TxBody::RegisterExpert {
                content_hash,
                tiles_root,
                name,
                layer,
                tiles,
                bytes,
            } => {
                out.extend_from_slice(&content_hash.0);
                out.extend_from_slice(&tiles_root.0);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&layer.to_be_bytes());
                out.extend_from_slice(&tiles.to_be_bytes());
                out.extend_from_slice(&bytes.to_be_bytes());
            }
            TxBody::SubmitEvidence { evidence } => {
                out.extend_from_slice(&crate::wire::encode_evidence(evidence));
            }
        }
    }

    fn decode(kind: u8, bytes: &[u8]) -> Result<TxBody, TxError> {
        let bad = |what: &str| TxError::Malformed(format!("{what} ({} body bytes)", bytes.len()));
        let array = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("checked") };
        let number = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("checked"));
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("checked"));
        match kind {
            1 | 3 | 4 => {
                if bytes.len() != 40 {
                    return Err(bad("body is not 40 bytes"));
                }
                let (key, amount) = (array(0), number(32));
                Ok(match kind {
                    1 => TxBody::Transfer { to: key, amount },
                    3 => TxBody::Delegate {
                        validator: key,
                        amount,
                    },
                    _ => TxBody::Undelegate {
                        validator: key,
                        amount,
                    },
                })
            }
            2 => {
                if bytes.len() != 12 {
                    return Err(bad("create_validator body is not 12 bytes"));
                }
                Ok(TxBody::CreateValidator {
                    amount: number(0),
                    commission_bps: word(8),
                })
            }
            5 => {
                if !bytes.is_empty() {
                    return Err(bad("unjail has no body"));
                }
                Ok(TxBody::Unjail)
            }
            6 => {
                if bytes.len() < 65 {
                    return Err(bad("register_expert body too short"));
                }
                let name_len = usize::from(bytes[64]);
                if bytes.len() != 65 + name_len + 16 {
                    return Err(bad("register_expert body length"));
                }
                let name = std::str::from_utf8(&bytes[65..65 + name_len])
                    .map_err(|_| bad("expert name is not UTF-8"))?
                    .to_string();
                let at = 65 + name_len;
                Ok(TxBody::RegisterExpert {
                    content_hash: Hash(array(0)),
                    tiles_root: Hash(array(32)),
                    name,
                    layer: word(at),
                    tiles: word(at + 4),
                    bytes: number(at + 8),
                })
            }
            7 => Ok(TxBody::SubmitEvidence {
                evidence: Box::new(
                    crate::wire::decode_evidence(bytes)
                        .map_err(|error| bad(&format!("evidence: {error}")))?,
                ),
            }),
            other => Err(TxError::Malformed(format!("unknown kind {other}"))),
        }
    }
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    pub from: [u8; 32],
    pub body: TxBody,
    pub fee: u64,
    pub nonce: u64,
    pub signature: [u8; 64],
}

fn sign_bytes(chain_id: &str, unsigned: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + chain_id.len() + unsigned.len());
    bytes.extend_from_slice(b"blyan/tx/v1");
    bytes.push(chain_id.len() as u8);
    bytes.extend_from_slice(chain_id.as_bytes());
    bytes.extend_from_slice(unsigned);
    bytes
}

impl Tx {
    /// A transaction of any kind signed by `key`.
    pub fn signed(chain_id: &str, key: &SigningKey, body: TxBody, fee: u64, nonce: u64) -> Tx {
        let mut tx = Tx {
            from: key.verifying_key().to_bytes(),
            body,
            fee,
            nonce,
            signature: [0; 64],
        };
        let unsigned = tx.unsigned_bytes();
        tx.signature = key.sign(&sign_bytes(chain_id, &unsigned)).to_bytes();
        tx
    }

    /// A transfer signed by `key`.
    pub fn transfer(
        chain_id: &str,
        key: &SigningKey,
        to: [u8; 32],
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Tx {
        Tx::signed(chain_id, key, TxBody::Transfer { to, amount }, fee, nonce)
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.push(TX_VERSION);
        out.push(self.body.kind());
        out.extend_from_slice(&self.from);
        self.body.encode_into(&mut out);
        out.extend_from_slice(&self.fee.to_be_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.unsigned_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Tx, TxError> {
        const FIXED: usize = 2 + 32 + 8 + 8 + 64;
        if bytes.len() < FIXED || bytes.len() > MAX_TX_BYTES {
            return Err(TxError::Malformed(format!(
                "{} bytes, a transaction is {FIXED} to {MAX_TX_BYTES}",
                bytes.len()
            )));
        }
        if bytes[0] != TX_VERSION {
            return Err(TxError::Malformed(format!("unknown version {}", bytes[0])));
        }
        let end = bytes.len();
        let body = TxBody::decode(bytes[1], &bytes[34..end - 80])?;
        if let TxBody::RegisterExpert { name, .. } = &body {
            if name.is_empty() || name.len() > MAX_EXPERT_TEXT {
                return Err(TxError::Malformed(format!(
                    "expert name must be 1 to {MAX_EXPERT_TEXT} bytes"
                )));
            }
        }
        let number = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("checked"));
        Ok(Tx {
            from: bytes[2..34].try_into().expect("length checked above"),
            body,
            fee: number(end - 80),
            nonce: number(end - 72),
            signature: bytes[end - 64..].try_into().expect("length checked above"),
        })
    }

    pub fn hash(&self) -> Hash {
        Hash::digest(&self.encode())
    }

    /// The bytes the signature covers.
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        sign_bytes(chain_id, &self.unsigned_bytes())
    }

    pub fn verify(&self, chain_id: &str) -> Result<(), TxError> {
        let key = VerifyingKey::from_bytes(&self.from).map_err(|_| TxError::BadSignature)?;
        key.verify(
            &self.sign_bytes(chain_id),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| TxError::BadSignature)
    }
}

/// Verifies every transaction of a block at once (one batch); the first error otherwise.
/// Transactions for which `verified` says yes are not checked again: the caller vouches that it
/// verified exactly these bytes before (its mempool holds them; the hash covers the signature).
pub fn verify_block_txs(
    chain_id: &str,
    txs: &[Vec<u8>],
    verified: &dyn Fn(&Hash) -> bool,
) -> Result<Vec<Tx>, TxError> {
    let decoded: Vec<Tx> = txs
        .iter()
        .map(|tx| Tx::decode(tx))
        .collect::<Result<_, _>>()?;
    let unchecked: Vec<&Tx> = decoded.iter().filter(|tx| !verified(&tx.hash())).collect();
    if unchecked.is_empty() {
        return Ok(decoded);
    }
    let messages: Vec<Vec<u8>> = unchecked.iter().map(|tx| tx.sign_bytes(chain_id)).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<Signature> = unchecked
        .iter()
        .map(|tx| Signature::from_bytes(&tx.signature))
        .collect();
    let keys: Vec<VerifyingKey> = unchecked
        .iter()
        .map(|tx| VerifyingKey::from_bytes(&tx.from).map_err(|_| TxError::BadSignature))
        .collect::<Result<_, _>>()?;
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys)
        .map_err(|_| TxError::BadSignature)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{SignedVote, Vote, VoteKind};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn every_kind_round_trips_and_the_signature_binds_chain_and_fields() {
        let vote = |value: Option<Hash>| {
            let vote = Vote {
                kind: VoteKind::Precommit,
                height: 4,
                round: 0,
                value,
                validator: 1,
            };
            SignedVote {
                vote,
                signature: key(3).sign(&vote.sign_bytes("c")),
            }
        };
        let bodies = vec![
            TxBody::Transfer {
                to: [2; 32],
                amount: 10,
            },
            TxBody::CreateValidator {
                amount: 500,
                commission_bps: 1000,
            },
            TxBody::Delegate {
                validator: [3; 32],
                amount: 7,
            },
            TxBody::Undelegate {
                validator: [3; 32],
                amount: 7,
            },
            TxBody::Unjail,
            TxBody::RegisterExpert {
                content_hash: Hash::digest(b"w"),
                tiles_root: Hash::digest(b"r"),
                name: "layer0.expert3".into(),
                layer: 0,
                tiles: 4,
                bytes: 1 << 20,
            },
            TxBody::SubmitEvidence {
                evidence: Box::new(Evidence {
                    first: vote(Some(Hash::digest(b"a"))),
                    second: vote(None),
                }),
            },
        ];
        for body in bodies {
            let tx = Tx::signed("c", &key(1), body.clone(), 2, 5);
            let bytes = tx.encode();
            assert_eq!(Tx::decode(&bytes).unwrap(), tx, "{}", body.kind_name());
            assert!(tx.verify("c").is_ok());
            assert_eq!(tx.verify("other"), Err(TxError::BadSignature));
            let mut changed = bytes.clone();
            changed[bytes.len() - 70] ^= 1; // the nonce
            assert_eq!(
                Tx::decode(&changed).unwrap().verify("c"),
                Err(TxError::BadSignature)
            );
        }
        assert_eq!(
            Tx::transfer("c", &key(1), [2; 32], 1, 1, 0).encode().len(),
            154
        );
        assert!(matches!(Tx::decode(&[1; 10]), Err(TxError::Malformed(_))));
        let mut bad_kind = Tx::transfer("c", &key(1), [2; 32], 1, 1, 0).encode();
        bad_kind[1] = 99;
        assert!(matches!(Tx::decode(&bad_kind), Err(TxError::Malformed(_))));
    }

    #[test]
    fn block_verification_catches_an_altered_transaction_even_next_to_vouched_ones() {
        let mut txs = vec![
            Tx::transfer("c", &key(1), [2; 32], 10, 1, 0).encode(),
            Tx::transfer("c", &key(1), [2; 32], 1, 1, 1).encode(),
        ];
        assert_eq!(verify_block_txs("c", &txs, &|_| false).unwrap().len(), 2);
        txs[1][70] ^= 1;
        assert_eq!(
            verify_block_txs("c", &txs, &|_| false),
            Err(TxError::BadSignature)
        );
        let good = Tx::decode(&txs[0]).unwrap().hash();
        assert_eq!(
            verify_block_txs("c", &txs, &|hash| *hash == good),
            Err(TxError::BadSignature)
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Tx::decode(&bytes);
        }
    }
}
