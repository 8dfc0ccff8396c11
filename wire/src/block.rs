//! Blocks and their canonical binary encoding.
//!
//! The encoding is hand-written and versioned so that it never changes under our feet when a
//! serialisation crate is upgraded: a block hash is a consensus fact, not an implementation detail.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First byte of every encoded block; bump when the layout changes. (Version 1 had no
/// proposer, validator set hashes, last commit or evidence: [`V1Block`] reads it, so that a
/// node can upgrade a database written before.)
const ENCODING_VERSION: u8 = 2;
/// The first byte of a block in the first encoding ([`V1Block`]).
pub const V1_ENCODING_VERSION: u8 = 1;
/// Most evidence items in one block.
pub const MAX_EVIDENCE_PER_BLOCK: u32 = 64;
/// Largest last-commit or evidence item, in bytes.
pub const MAX_EXTRA_BYTES: u32 = 1 << 20;
/// Largest chain id we accept, in bytes.
pub const MAX_CHAIN_ID_BYTES: usize = 64;
/// Largest number of transactions in one block.
pub const MAX_TXS_PER_BLOCK: u32 = 1 << 20;
/// Largest single transaction, in bytes.
pub const MAX_TX_BYTES: u32 = 16 << 20;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash, used as the parent of the first block.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Hash, DecodeError> {
        let bytes = hex::decode(text).map_err(|_| DecodeError::BadHex(text.to_string()))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DecodeError::BadHex(text.to_string()))?;
        Ok(Hash(array))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Hash({})", &self.to_hex()[..12])
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Hash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Why bytes could not be decoded into a block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unexpected end of data at byte {offset} (needed {needed} more)")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown block encoding version {0}")]
    UnknownVersion(u8),
    #[error("{field} is too large: {size} (limit {limit})")]
    TooLarge {
        field: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("chain id is not UTF-8")]
    ChainIdNotUtf8,
    #[error("{0} trailing bytes after the block")]
    TrailingBytes(usize),
    #[error("not a 32-byte hex hash: {0:?}")]
    BadHex(String),
}

/// The part of a block that is hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: u64,
    /// Proposer's clock, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub prev_hash: Hash,
    /// Hash over the block's body: transactions, last commit, evidence (see [`data_hash`]).
    pub data_hash: Hash,
    /// Application state hash after the previous block.
    pub app_hash: Hash,
    /// Index (in this height's validator set) of the validator that built the block.
    pub proposer: u32,
    /// Hash of the validator set that decides this height ([`crate::state`] `set_hash`).
    pub validators_hash: Hash,
    /// Hash of the validator set of the next height: a light client follows the set from
    /// epoch to epoch through it.
    pub next_validators_hash: Hash,
}

/// A block: a header, opaque transactions, the commit certificate of the previous block as
/// its proposer collected it (empty at height 1), and evidence of misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Vec<u8>>,
    pub last_commit: Vec<u8>,
    pub evidence: Vec<Vec<u8>>,
}

/// Hash over the transactions only (each length (u32 BE) and bytes); [`data_hash`] is this
/// when a block has no last commit and no evidence.
pub fn txs_hash(txs: &[Vec<u8>]) -> Hash {
    let mut hasher = Sha256::new();
    for tx in txs {
        hasher.update((tx.len() as u32).to_be_bytes());
        hasher.update(tx);
    }
    Hash(hasher.finalize().into())
}

/// Hash over a block's body: the transactions' hash when there is nothing else, otherwise
/// SHA-256 of a domain tag, that hash, the last commit and each evidence item (length-prefixed).
pub fn data_hash(txs: &[Vec<u8>], last_commit: &[u8], evidence: &[Vec<u8>]) -> Hash {
    let txs = txs_hash(txs);
    if last_commit.is_empty() && evidence.is_empty() {
        return txs;
    }
    let mut hasher = Sha256::new();
    hasher.update(b"blyan/body/v2");
    hasher.update(txs.0);
    hasher.update((last_commit.len() as u32).to_be_bytes());
    hasher.update(last_commit);
    hasher.update((evidence.len() as u32).to_be_bytes());
    for item in evidence {
        hasher.update((item.len() as u32).to_be_bytes());
        hasher.update(item);
    }
    Hash(hasher.finalize().into())
}

impl Header {
    /// Canonical bytes of the header; the block hash is their SHA-256.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.chain_id.len() + 8 * 2 + 32 * 3);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.chain_id.len() <= MAX_CHAIN_ID_BYTES,
            "chain id too long"
        );
        out.push(ENCODING_VERSION);
        out.push(self.chain_id.len() as u8);
        out.extend_from_slice(self.chain_id.as_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(&self.data_hash.0);
        out.extend_from_slice(&self.app_hash.0);
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.validators_hash.0);
        out.extend_from_slice(&self.next_validators_hash.0);
    }

    /// The block hash.
    pub fn hash(&self) -> Hash {
        Hash::digest(&self.encode())
    }
}

impl Block {
    /// Builds a block whose `data_hash` matches `txs`.
    pub fn new(
        chain_id: &str,
        height: u64,
        time_ms: u64,
        prev_hash: Hash,
        app_hash: Hash,
        txs: Vec<Vec<u8>>,
    ) -> Block {
        let header = Header {
            chain_id: chain_id.to_string(),
            height,
            time_ms,
            prev_hash,
            data_hash: txs_hash(&txs),
            app_hash,
            proposer: 0,
            validators_hash: Hash::ZERO,
            next_validators_hash: Hash::ZERO,
        };
        Block {
            header,
            txs,
            last_commit: Vec::new(),
            evidence: Vec::new(),
        }
    }

    /// Sets the body's extras and recomputes the data hash.
    pub fn with_body(mut self, last_commit: Vec<u8>, evidence: Vec<Vec<u8>>) -> Block {
        self.last_commit = last_commit;
        self.evidence = evidence;
        self.header.data_hash = data_hash(&self.txs, &self.last_commit, &self.evidence);
        self
    }

    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Whether `data_hash` in the header matches the transactions.
    pub fn data_hash_matches(&self) -> bool {
        self.header.data_hash == data_hash(&self.txs, &self.last_commit, &self.evidence)
    }

    /// Canonical bytes: header, then a u32 transaction count and each transaction
    /// length-prefixed, then the last commit (length-prefixed), then a u32 evidence count and
    /// each item length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self.txs.iter().map(|tx| tx.len() + 4).sum::<usize>()
            + self.last_commit.len()
            + self
                .evidence
                .iter()
                .map(|item| item.len() + 4)
                .sum::<usize>();
        let mut out = Vec::with_capacity(240 + body);
        self.header.encode_into(&mut out);
        out.extend_from_slice(&(self.txs.len() as u32).to_be_bytes());
        for tx in &self.txs {
            out.extend_from_slice(&(tx.len() as u32).to_be_bytes());
            out.extend_from_slice(tx);
        }
        out.extend_from_slice(&(self.last_commit.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.last_commit);
        out.extend_from_slice(&(self.evidence.len() as u32).to_be_bytes());
        for item in &self.evidence {
            out.extend_from_slice(&(item.len() as u32).to_be_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.u8()?;
        if version != ENCODING_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = reader.chain_id()?;
        let header = Header {
            chain_id,
            height: reader.u64()?,
            time_ms: reader.u64()?,
            prev_hash: reader.hash()?,
            data_hash: reader.hash()?,
            app_hash: reader.hash()?,
            proposer: reader.u32()?,
            validators_hash: reader.hash()?,
            next_validators_hash: reader.hash()?,
        };
        let txs = reader.txs()?;
        let last_commit;
        let mut evidence = Vec::new();
        {
            let len = reader.u32()?;
            if len > MAX_EXTRA_BYTES {
                return Err(DecodeError::TooLarge {
                    field: "last commit",
                    size: len.into(),
                    limit: MAX_EXTRA_BYTES.into(),
                });
            }
            last_commit = reader.take(len as usize)?.to_vec();
            let count = reader.u32()?;
            if count > MAX_EVIDENCE_PER_BLOCK {
                return Err(DecodeError::TooLarge {
                    field: "evidence count",
                    size: count.into(),
                    limit: MAX_EVIDENCE_PER_BLOCK.into(),
                });
            }
            for _ in 0..count {
                let len = reader.u32()?;
                if len > MAX_EXTRA_BYTES {
                    return Err(DecodeError::TooLarge {
                        field: "evidence",
                        size: len.into(),
                        limit: MAX_EXTRA_BYTES.into(),
                    });
                }
                evidence.push(reader.take(len as usize)?.to_vec());
            }
        }
        let trailing = bytes.len() - reader.offset;
        if trailing != 0 {
            return Err(DecodeError::TrailingBytes(trailing));
        }
        Ok(Block {
            header,
            txs,
            last_commit,
            evidence,
        })
    }
}

/// A block in the first encoding (blyan-node before staking): a header of chain id, height,
/// time, previous hash, data hash (of the transactions) and app hash, then the transactions.
/// Its hash is SHA-256 of those header bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Block {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
    pub prev_hash: Hash,
    pub data_hash: Hash,
    pub app_hash: Hash,
    pub txs: Vec<Vec<u8>>,
    /// The block hash (of the header bytes as stored).
    pub hash: Hash,
}

impl V1Block {
    /// Decodes untrusted bytes of the first encoding; never panics.
    pub fn decode(bytes: &[u8]) -> Result<V1Block, DecodeError> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.u8()?;
        if version != V1_ENCODING_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = reader.chain_id()?;
        let (height, time_ms) = (reader.u64()?, reader.u64()?);
        let (prev_hash, data_hash, app_hash) = (reader.hash()?, reader.hash()?, reader.hash()?);
        let hash = Hash::digest(&bytes[..reader.offset]);
        let txs = reader.txs()?;
        let trailing = bytes.len() - reader.offset;
        if trailing != 0 {
            return Err(DecodeError::TrailingBytes(trailing));
        }
        Ok(V1Block {
            chain_id,
            height,
            time_ms,
            prev_hash,
            data_hash,
            app_hash,
            txs,
            hash,
        })
    }

    /// Whether the data hash in the header matches the transactions.
    pub fn data_hash_matches(&self) -> bool {
        self.data_hash == txs_hash(&self.txs)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A chain id: its length (u8, at most [`MAX_CHAIN_ID_BYTES`]) and UTF-8 bytes.
    fn chain_id(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        if len > MAX_CHAIN_ID_BYTES {
            return Err(DecodeError::TooLarge {
                field: "chain_id",
                size: len as u64,
                limit: MAX_CHAIN_ID_BYTES as u64,
            });
        }
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| DecodeError::ChainIdNotUtf8)
    }

    /// A u32 transaction count, then each transaction length-prefixed (u32).
    fn txs(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.u32()?;
        if count > MAX_TXS_PER_BLOCK {
            return Err(DecodeError::TooLarge {
                field: "transaction count",
                size: count.into(),
                limit: MAX_TXS_PER_BLOCK.into(),
            });
        }
        let mut txs = Vec::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            let len = self.u32()?;
            if len > MAX_TX_BYTES {
                return Err(DecodeError::TooLarge {
                    field: "transaction",
                    size: len.into(),
                    limit: MAX_TX_BYTES.into(),
                });
            }
            txs.push(self.take(len as usize)?.to_vec());
        }
        Ok(txs)
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.bytes.len() - self.offset;
        if count > remaining {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                needed: count - remaining,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut array = [0; 4];
        array.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(array))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut array = [0; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(array))
    }

    fn hash(&mut self) -> Result<Hash, DecodeError> {
        let mut array = [0; 32];
        array.copy_from_slice(self.take(32)?);
        Ok(Hash(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Block {
        Block::new(
            "blyan-test",
            7,
            1_700_000_000_000,
            Hash::digest(b"parent"),
            Hash::digest(b"state"),
            vec![b"tx-one".to_vec(), Vec::new(), vec![0xff; 300]],
        )
    }

    #[test]
    fn encode_decode_round_trips() {
        let block = sample();
        assert_eq!(Block::decode(&block.encode()).unwrap(), block);
        assert!(block.data_hash_matches());
    }

    #[test]
    fn hash_changes_with_any_header_field() {
        let block = sample();
        let mut other = block.clone();
        other.header.height += 1;
        assert_ne!(block.hash(), other.hash());
        let mut other = block.clone();
        other.header.chain_id.push('x');
        assert_ne!(block.hash(), other.hash());
    }

    #[test]
    fn decode_rejects_trailing_and_truncated_bytes() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(Block::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
        let bytes = sample().encode();
        assert!(matches!(
            Block::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn hash_hex_round_trips_and_rejects_bad_input() {
        let hash = Hash::digest(b"x");
        assert_eq!(Hash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert!(Hash::from_hex("abc").is_err());
        assert!(Hash::from_hex(&"zz".repeat(32)).is_err());
    }

    /// The first encoding, written as blyan-node d90a7e7 wrote it: version 1, chain id,
    /// height, time, previous/data/app hashes (the header, whose SHA-256 is the hash), then
    /// the transactions.
    fn v1_bytes(txs: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut out = vec![V1_ENCODING_VERSION, 1, b'c'];
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(&9u64.to_be_bytes());
        out.extend_from_slice(&[3; 32]);
        let owned: Vec<Vec<u8>> = txs.iter().map(|tx| tx.to_vec()).collect();
        out.extend_from_slice(&txs_hash(&owned).0);
        out.extend_from_slice(&[5; 32]);
        let header = out.len();
        out.extend_from_slice(&(txs.len() as u32).to_be_bytes());
        for tx in txs {
            out.extend_from_slice(&(tx.len() as u32).to_be_bytes());
            out.extend_from_slice(tx);
        }
        (out, header)
    }

    #[test]
    fn a_v1_block_decodes_with_the_hash_of_its_header_and_is_not_a_v2_block() {
        let (bytes, header) = v1_bytes(&[b"ab", b"c"]);
        let block = V1Block::decode(&bytes).unwrap();
        assert_eq!((block.height, block.time_ms), (7, 9));
        assert_eq!(block.prev_hash, Hash([3; 32]));
        assert_eq!(block.txs, vec![b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(block.hash, Hash::digest(&bytes[..header]));
        assert!(block.data_hash_matches());
        assert_eq!(Block::decode(&bytes), Err(DecodeError::UnknownVersion(1)));
        assert!(matches!(
            V1Block::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            V1Block::decode(&sample().encode()),
            Err(DecodeError::UnknownVersion(2))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Block::decode(&bytes);
            let _ = V1Block::decode(&bytes);
        }

        #[test]
        fn round_trip_any_block(height in any::<u64>(), txs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let block = Block::new("c", height, 1, Hash::ZERO, Hash::ZERO, txs);
            prop_assert_eq!(Block::decode(&block.encode()).unwrap(), block);
        }
    }
}
