//! The consensus keys the node writes beside each block (its commit certificate, app hash,
//! transaction index) and each epoch's validator-set record.

use serde::Serialize;

use crate::block::Hash;

pub fn commit_key(height: u64) -> Vec<u8> {
    [b"c/".as_slice(), &height.to_be_bytes()].concat()
}

pub fn app_hash_key(height: u64) -> Vec<u8> {
    [b"r/".as_slice(), &height.to_be_bytes()].concat()
}

/// The consensus record of an epoch's validator set, kept for ever (state sync's light client
/// follows the set from genesis through them; the state prunes old sets).
pub fn set_record_key(epoch: u64) -> Vec<u8> {
    [b"vs/".as_slice(), &epoch.to_be_bytes()].concat()
}

/// A committed transaction's index record.
pub fn tx_key(hash: &Hash) -> Vec<u8> {
    [b"t/".as_slice(), &hash.0].concat()
}

/// Where a committed transaction is: height, index in the block, and whether it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
    pub applied: bool,
}

impl TxLocation {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.push(u8::from(self.applied));
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TxLocation> {
        if bytes.len() != 13 {
            return None;
        }
        Some(TxLocation {
            height: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            index: u32::from_be_bytes(bytes[8..12].try_into().ok()?),
            applied: bytes[12] == 1,
        })
    }
}
