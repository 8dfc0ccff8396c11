//! The request-response messages of block sync, state sync and expert tiles, as they cross the
//! wire in CBOR (libp2p's `request_response::cbor` codec, `cbor4ii` with serde): what a peer asks
//! and what it answers. Every field a peer sends is bounded by the codec's size limits and checked
//! by the receiver; decoding arbitrary bytes must never panic (fuzzed in `fuzz/`).

use serde::{Deserialize, Serialize};

/// Block-sync request: blocks from `from_height`, at most `max_blocks`; or, with `snapshot`, a
/// state-sync request (then the block fields are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from_height: u64,
    pub max_blocks: u32,
    #[serde(default)]
    pub snapshot: Option<SnapshotRequest>,
}

/// What a state-syncing node asks a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotRequest {
    /// The latest snapshot the peer serves.
    Offer,
    /// One chunk (a run of whole buckets) of the snapshot at `height`.
    Chunk { height: u64, index: u32 },
    /// Blocks with their commit certificates at these heights (at most [`MAX_SYNC_BLOCKS`]).
    Heights { heights: Vec<u64> },
    /// The validator sets of these epochs (at most [`MAX_SYNC_SETS`]).
    Sets { epochs: Vec<u64> },
}

/// A peer's answer to a [`SnapshotRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotResponse {
    Offer {
        height: u64,
        chunks: u32,
        bucket_hashes: Vec<serde_bytes::ByteBuf>,
    },
    Chunk {
        height: u64,
        index: u32,
        entries: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    },
    Blocks {
        blocks: Vec<(u64, SyncedBlock)>,
    },
    Sets {
        sets: Vec<(u64, serde_bytes::ByteBuf)>,
    },
    Unavailable {
        reason: String,
    },
}

/// Most validator sets per state-sync answer.
pub const MAX_SYNC_SETS: usize = 256;

/// A block with its commit certificate, both in their wire encodings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBlock {
    #[serde(with = "serde_bytes")]
    pub block: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub commit: Vec<u8>,
}

/// Block-sync answer: the responder's tip and the blocks it has from the requested height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub tip_height: u64,
    pub blocks: Vec<SyncedBlock>,
    #[serde(default)]
    pub snapshot: Option<SnapshotResponse>,
}

pub const SYNC_PROTOCOL: &str = "/blyan/sync/1";
/// Expert weight tiles (`crate::inference`): a manifest or one tile per request.
pub const TILES_PROTOCOL: &str = "/blyan/tiles/1";

/// What a node asks a peer for an expert it lacks (by the expert's content hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TileRequest {
    /// The expert's tile list (hashes and sizes), to check against the on-chain Merkle root.
    Manifest {
        #[serde(with = "serde_bytes")]
        content_hash: Vec<u8>,
    },
    /// One tile's bytes.
    Tile {
        #[serde(with = "serde_bytes")]
        content_hash: Vec<u8>,
        index: u32,
    },
}

/// A peer's answer to a [`TileRequest`]; the requester verifies every byte of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TileResponse {
    Manifest {
        #[serde(with = "serde_bytes")]
        json: Vec<u8>,
    },
    Tile {
        index: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    Unavailable {
        reason: String,
    },
}

/// Largest tile answer: a 4 MiB tile plus its framing.
pub const MAX_TILE_RESPONSE_BYTES: u64 = 4 * 1024 * 1024 + 64 * 1024;
/// Most blocks per sync response.
pub const MAX_SYNC_BLOCKS: u32 = 64;

/// Largest sync or tile request the codec reads (the node sets it on both protocols).
pub const MAX_REQUEST_BYTES: u64 = 1024;

/// A request-response message that did not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed CBOR message: {0}")]
pub struct DecodeError(String);

/// Decodes one message the way libp2p's `request_response::cbor` codec does once it has read
/// the stream (at most its size limit): `cbor4ii::serde::from_slice`. For tests and fuzzing:
/// the node's codec is libp2p's own.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Encodes one message as libp2p's cbor codec writes it.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    match cbor4ii::serde::to_vec(Vec::new(), message) {
        Ok(bytes) => bytes,
        // Writing into a Vec fails only when memory cannot be reserved.
        Err(e) => panic!("CBOR encoding into memory failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T>(message: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = encode(message);
        let back: T = decode(&bytes).expect("an encoded message decodes");
        assert_eq!(&back, message);
    }

    #[test]
    fn every_message_kind_round_trips() {
        round_trip(&SyncRequest {
            from_height: 7,
            max_blocks: MAX_SYNC_BLOCKS,
            snapshot: Some(SnapshotRequest::Heights {
                heights: vec![1, 2, 3],
            }),
        });
        round_trip(&SyncResponse {
            tip_height: 9,
            blocks: vec![SyncedBlock {
                block: vec![1; 40],
                commit: vec![2; 12],
            }],
            snapshot: Some(SnapshotResponse::Chunk {
                height: 8,
                index: 1,
                entries: vec![(
                    serde_bytes::ByteBuf::from(vec![3]),
                    serde_bytes::ByteBuf::from(vec![4, 5]),
                )],
            }),
        });
        round_trip(&TileRequest::Tile {
            content_hash: vec![9; 32],
            index: 3,
        });
        round_trip(&TileResponse::Unavailable {
            reason: "no such expert".into(),
        });
    }

    #[test]
    fn a_request_from_an_older_node_without_the_snapshot_field_decodes() {
        #[derive(Serialize)]
        struct Old {
            from_height: u64,
            max_blocks: u32,
        }
        let request: SyncRequest = decode(&encode(&Old {
            from_height: 5,
            max_blocks: 2,
        }))
        .expect("decodes");
        assert_eq!(request.snapshot, None);
        assert_eq!(request.from_height, 5);
    }

    #[test]
    fn malformed_messages_are_refused_with_an_error() {
        // Truncated, wrong type, unknown variant, a length far beyond the input.
        let good = encode(&TileRequest::Manifest {
            content_hash: vec![1; 32],
        });
        assert!(decode::<TileRequest>(&good[..good.len() - 1]).is_err());
        assert!(decode::<SyncRequest>(&good).is_err());
        assert!(decode::<TileRequest>(&encode(&"Nope")).is_err());
        let huge_array = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<SyncResponse>(&huge_array).is_err());
        // An unknown field whose value nests 100,000 arrays deep (skipped values recurse too):
        // refused by the decoder's depth limit, not a stack overflow.
        let mut deep = vec![0xa1, 0x61, b'x'];
        deep.extend(std::iter::repeat_n(0x81, 100_000));
        deep.push(0x00);
        assert!(decode::<SyncRequest>(&deep).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<SyncRequest>(&bytes);
            let _ = decode::<SyncResponse>(&bytes);
            let _ = decode::<TileRequest>(&bytes);
            let _ = decode::<TileResponse>(&bytes);
        }
    }
}
