//! State sync: a node with an empty database starts from a peer's state snapshot instead of
//! replaying every block.
//!
//! Trust comes from genesis alone, as a light client's does:
//! 1. A peer offers its latest snapshot: height `H` and the hashes of its 1,024 state buckets.
//! 2. The validator set is followed from genesis to `H + 1`, one commit per epoch: the last block
//!    of each epoch is fetched with its commit certificate, the commit is verified against the
//!    set we trust, and the block's `next_validators_hash` vouches for the next epoch's set,
//!    whose members a peer sends and we hash.
//! 3. Block `H + 1`, verified by its commit, carries the app hash after `H`; the bucket hashes
//!    must have that Merkle root.
//! 4. Each chunk (64 whole buckets) must hash to its bucket hashes; a bad chunk is refused and
//!    asked of another peer.
//! 5. The state, block `H` and its commit (carried in block `H + 1`) are written in one batch;
//!    the node then block-syncs from `H + 1` as usual.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::app::verify_commit;
use crate::block::{Block, Hash};
use crate::consensus::validators::Validator;
use crate::genesis::Genesis;
use crate::node::SNAPSHOT_CHUNKS;
use crate::p2p::{
    P2pCommand, P2pEvent, P2pHandle, SnapshotRequest, SnapshotResponse, SyncRequest, SyncResponse,
    SyncedBlock, MAX_SYNC_BLOCKS,
};
use crate::state::store::{bucket_hash, bucket_of, merkle_root, BUCKETS};
use crate::state::{set_hash, to_validators, try_decode_members, ChainState, StakingParams};
use crate::storage::keys::{app_hash_key, commit_key, set_record_key};
use crate::storage::{StateChange, Storage, StorageError};
use crate::wire::Commit;

#[derive(Debug, thiserror::Error)]
pub enum StateSyncError {
    #[error("no peer offered a snapshot within {0:?}")]
    NoOffer(Duration),
    #[error("the P2P task stopped")]
    P2pStopped,
    #[error("peer {peer}: {reason}")]
    Peer { peer: PeerId, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// What state sync did, for the log and `/status`.
#[derive(Clone, Debug)]
pub struct Synced {
    pub height: u64,
    pub keys: usize,
    pub epochs_verified: u64,
    pub elapsed: Duration,
    /// Peers connected now (the node loop starts with them: their `Connected` events were
    /// consumed here).
    pub peers: Vec<PeerId>,
}

struct Client<'a> {
    p2p: &'a P2pHandle,
    events: &'a mut mpsc::Receiver<P2pEvent>,
    peers: Vec<PeerId>,
    timeout: Duration,
}

impl Client<'_> {
    /// Handles what arrives while syncing: gossip is ignored (we cannot judge it yet), sync
    /// requests get an empty answer, peers are tracked. Returns a response when one comes.
    async fn next(
        &mut self,
        until: Instant,
    ) -> Result<Option<(PeerId, SyncResponse)>, StateSyncError> {
        loop {
            let event = tokio::select! {
                event = self.events.recv() => event.ok_or(StateSyncError::P2pStopped)?,
                _ = tokio::time::sleep_until(until.into()) => return Ok(None),
            };
            match event {
                P2pEvent::Gossip { source, id, .. } => {
                    let _ = self.p2p.commands.send(P2pCommand::Validate {
                        id,
                        source,
                        acceptance: MessageAcceptance::Ignore,
                    });
                }
                P2pEvent::SyncRequest { channel, .. } => {
                    let _ = self.p2p.commands.send(P2pCommand::Respond {
                        channel,
                        response: SyncResponse {
                            tip_height: 0,
                            blocks: Vec::new(),
                            snapshot: None,
                        },
                    });
                }
                P2pEvent::Connected(peer) => {
                    if !self.peers.contains(&peer) {
                        self.peers.push(peer);
                    }
                }
                P2pEvent::Disconnected(peer) => self.peers.retain(|p| *p != peer),
                P2pEvent::SyncFailed { peer, reason } => {
                    tracing::debug!(%peer, %reason, "state sync request failed");
                    return Ok(Some((peer, failed_response())));
                }
                P2pEvent::SyncResponse { peer, response } => return Ok(Some((peer, response))),
            }
        }
    }

    /// Asks `peer` and waits for its answer to a snapshot request.
    async fn ask(
        &mut self,
        peer: PeerId,
        request: SnapshotRequest,
    ) -> Result<SnapshotResponse, StateSyncError> {
        let _ = self.p2p.commands.send(P2pCommand::Sync {
            peer,
            request: SyncRequest {
                from_height: 0,
                max_blocks: 0,
                snapshot: Some(request),
            },
        });
        let until = Instant::now() + self.timeout;
        loop {
            match self.next(until).await? {
                None => {
                    return Err(StateSyncError::Peer {
                        peer,
                        reason: format!("no answer within {:?}", self.timeout),
                    })
                }
                Some((from, response)) if from == peer => {
                    return response.snapshot.ok_or_else(|| StateSyncError::Peer {
                        peer,
                        reason: "answered without a snapshot part (request failed)".into(),
                    })
                }
                Some(_) => {}
            }
        }
    }
}

fn failed_response() -> SyncResponse {
    SyncResponse {
        tip_height: 0,
        blocks: Vec::new(),
        snapshot: None,
    }
}

fn peer_error(peer: PeerId, reason: impl Into<String>) -> StateSyncError {
    StateSyncError::Peer {
        peer,
        reason: reason.into(),
    }
}

/// Verifies a block and its commit against the set that decided it; returns the block.
fn verified_block(
    genesis: &Genesis,
    validators: &[Validator],
    height: u64,
    synced: &SyncedBlock,
) -> Result<(Block, Commit), String> {
    let block = Block::decode(&synced.block).map_err(|e| format!("block {height}: {e}"))?;
    if block.header.height != height || block.header.chain_id != genesis.chain_id {
        return Err(format!("block {height}: wrong height or chain"));
    }
    if block.header.validators_hash != set_hash(validators) {
        return Err(format!(
            "block {height}: validators hash is not the trusted set's"
        ));
    }
    let commit = Commit::decode(&synced.commit).map_err(|e| format!("commit {height}: {e}"))?;
    verify_commit(&genesis.chain_id, validators, height, block.hash(), &commit)
        .map_err(|e| format!("commit {height}: {e}"))?;
    Ok((block, commit))
}

/// Runs state sync over the node's P2P swarm (before the node loop takes the events); writes
/// the verified snapshot into `storage`, which must be empty. `progress` gets a line per step.
pub async fn run(
    p2p: &P2pHandle,
    events: &mut mpsc::Receiver<P2pEvent>,
    genesis: &Genesis,
    storage: &Storage,
    wait_for_offer: Duration,
    progress: &dyn Fn(&str),
) -> Result<Synced, StateSyncError> {
    let started = Instant::now();
    let mut client = Client {
        p2p,
        events,
        peers: Vec::new(),
        timeout: Duration::from_secs(20),
    };
    // 1. An offer: ask every peer as it connects, keep the highest.
    let offer = best_offer(&mut client, wait_for_offer, progress).await?;
    // 2. Follow the validator set from genesis to height + 1, one commit per epoch.
    let verified = verify_offer(&mut client, genesis, &offer).await?;
    progress(&format!(
        "app hash of height {} verified through {} epoch(s) of commits: {}",
        offer.height, verified.epochs, verified.app_hash
    ));
    // 3. Chunks, each checked against the bucket hashes; a peer that sends a bad one is dropped.
    let entries = fetch_chunks(&mut client, &offer, progress).await?;
    // 4. Write it all in one batch: state, block `height`, its commit and the set records.
    let epochs_verified = verified.epochs;
    let keys = write(storage, genesis, &offer, verified, entries)?;
    Ok(Synced {
        height: offer.height,
        keys,
        epochs_verified,
        elapsed: started.elapsed(),
        peers: client.peers.clone(),
    })
}

/// A peer's snapshot offer: its height and the hashes of its state buckets.
struct Offer {
    peer: PeerId,
    height: u64,
    bucket_hashes: Vec<Hash>,
}

/// Asks every peer for an offer as it connects, for up to `wait`; keeps the highest.
async fn best_offer(
    client: &mut Client<'_>,
    wait: Duration,
    progress: &dyn Fn(&str),
) -> Result<Offer, StateSyncError> {
    let deadline = Instant::now() + wait;
    let mut asked = HashSet::new();
    let mut best: Option<Offer> = None;
    while Instant::now() < deadline {
        let fresh: Vec<PeerId> = client
            .peers
            .iter()
            .filter(|peer| !asked.contains(*peer))
            .copied()
            .collect();
        for peer in fresh {
            asked.insert(peer);
            let Some(offer) = ask_offer(client, peer).await else {
                continue;
            };
            progress(&format!(
                "peer {peer} offers a snapshot at height {}",
                offer.height
            ));
            if best.as_ref().is_none_or(|b| offer.height > b.height) {
                best = Some(offer);
            }
        }
        if best.is_some() && !client.peers.iter().any(|peer| !asked.contains(peer)) {
            break;
        }
        client
            .next(Instant::now() + Duration::from_millis(300))
            .await?;
    }
    best.ok_or(StateSyncError::NoOffer(wait))
}

/// `peer`'s offer, when it answers with one of the shape this node uses.
async fn ask_offer(client: &mut Client<'_>, peer: PeerId) -> Option<Offer> {
    match client.ask(peer, SnapshotRequest::Offer).await {
        Ok(SnapshotResponse::Offer {
            height,
            chunks,
            bucket_hashes,
        }) if chunks == SNAPSHOT_CHUNKS && bucket_hashes.len() == BUCKETS => {
            let bucket_hashes = bucket_hashes
                .iter()
                .map(|bytes| bytes.as_slice().try_into().ok().map(Hash))
                .collect::<Option<Vec<Hash>>>()?;
            Some(Offer {
                peer,
                height,
                bucket_hashes,
            })
        }
        Ok(other) => {
            tracing::debug!(%peer, ?other, "no usable snapshot offer");
            None
        }
        Err(error) => {
            tracing::debug!(%error, "offer request failed");
            None
        }
    }
}

/// What step 2 proved of an offer: block `height`, the verified block `height + 1` (its commit
/// of `height` and its app hash), and the set records of every epoch up to it.
struct Verified {
    base: Block,
    top: Block,
    app_hash: Hash,
    epochs: u64,
    set_records: Vec<(u64, Vec<u8>)>,
}

/// Follows the validator set from genesis to the offer's height + 1 (one commit per epoch)
/// and checks the offered bucket hashes against the app hash that block carries.
async fn verify_offer(
    client: &mut Client<'_>,
    genesis: &Genesis,
    offer: &Offer,
) -> Result<Verified, StateSyncError> {
    let (peer, height) = (offer.peer, offer.height);
    let params = &genesis.staking;
    let target = height + 1;
    let last_epoch = params.epoch_of(target);
    let epochs: Vec<u64> = (1..=last_epoch).collect();
    let sets = fetch_sets(client, peer, &epochs).await?;
    let mut heights: Vec<u64> = (0..last_epoch)
        .map(|k| (k + 1) * params.epoch_length)
        .collect();
    heights.extend([height, target]);
    let blocks = fetch_blocks(client, peer, &heights).await?;
    let fail = |reason: String| peer_error(peer, reason);
    let (trusted, set_records) = follow_sets(genesis, &sets, &blocks, last_epoch).map_err(fail)?;
    let (top, _) = blocks
        .get(&target)
        .ok_or_else(|| format!("block {target} missing"))
        .and_then(|synced| verified_block(genesis, &trusted, target, synced))
        .map_err(fail)?;
    let app_hash = top.header.app_hash;
    let base_synced = blocks
        .get(&height)
        .ok_or_else(|| fail(format!("block {height} missing")))?;
    let base = Block::decode(&base_synced.block).map_err(|e| fail(e.to_string()))?;
    if base.hash() != top.header.prev_hash || !base.data_hash_matches() {
        return Err(fail(format!(
            "block {height} is not block {target}'s parent"
        )));
    }
    if merkle_root(&offer.bucket_hashes) != app_hash {
        return Err(fail(format!(
            "the offered bucket hashes do not have the app hash {app_hash} of height {height}"
        )));
    }
    Ok(Verified {
        base,
        top,
        app_hash,
        epochs: last_epoch,
        set_records,
    })
}

/// The member lists of `epochs`, asked of `peer` in batches.
async fn fetch_sets(
    client: &mut Client<'_>,
    peer: PeerId,
    epochs: &[u64],
) -> Result<BTreeMap<u64, Vec<u8>>, StateSyncError> {
    let mut sets = BTreeMap::new();
    for batch in epochs.chunks(crate::p2p::MAX_SYNC_SETS) {
        let request = SnapshotRequest::Sets {
            epochs: batch.to_vec(),
        };
        match client.ask(peer, request).await? {
            SnapshotResponse::Sets { sets: got } => sets.extend(
                got.into_iter()
                    .map(|(epoch, bytes)| (epoch, bytes.into_vec())),
            ),
            other => return Err(peer_error(peer, format!("sets: {other:?}"))),
        }
    }
    Ok(sets)
}

/// The blocks at `heights`, with their commits, asked of `peer` in batches.
async fn fetch_blocks(
    client: &mut Client<'_>,
    peer: PeerId,
    heights: &[u64],
) -> Result<BTreeMap<u64, SyncedBlock>, StateSyncError> {
    let mut blocks = BTreeMap::new();
    for batch in heights.chunks(MAX_SYNC_BLOCKS as usize) {
        let request = SnapshotRequest::Heights {
            heights: batch.to_vec(),
        };
        match client.ask(peer, request).await? {
            SnapshotResponse::Blocks { blocks: got } => blocks.extend(got),
            other => return Err(peer_error(peer, format!("blocks: {other:?}"))),
        }
    }
    Ok(blocks)
}

/// Follows the set from genesis through `last_epoch` epochs: each epoch's last block is
/// verified by its commit under the set trusted so far, and its `next_validators_hash` vouches
/// for the next set. Returns the last trusted set and every epoch's set record.
#[allow(clippy::type_complexity)]
fn follow_sets(
    genesis: &Genesis,
    sets: &BTreeMap<u64, Vec<u8>>,
    blocks: &BTreeMap<u64, SyncedBlock>,
    last_epoch: u64,
) -> Result<(Vec<Validator>, Vec<(u64, Vec<u8>)>), String> {
    let mut trusted: Vec<Validator> = genesis
        .validator_set()
        .map_err(|error| error.to_string())?
        .validators()
        .to_vec();
    let mut set_records = vec![(0u64, crate::state::encode_members(&members_of(&trusted)))];
    for epoch in 0..last_epoch {
        let boundary = (epoch + 1) * genesis.staking.epoch_length;
        let synced = blocks
            .get(&boundary)
            .ok_or_else(|| format!("block {boundary} missing"))?;
        let (block, _) = verified_block(genesis, &trusted, boundary, synced)?;
        let bytes = sets
            .get(&(epoch + 1))
            .ok_or_else(|| format!("set of epoch {} missing", epoch + 1))?;
        let members = try_decode_members(bytes)
            .ok_or_else(|| format!("set of epoch {} malformed", epoch + 1))?;
        let next = to_validators(&members);
        if set_hash(&next) != block.header.next_validators_hash {
            return Err(format!(
                "set of epoch {} does not match block {boundary}",
                epoch + 1
            ));
        }
        set_records.push((epoch + 1, bytes.clone()));
        trusted = next;
    }
    Ok((trusted, set_records))
}

/// Every chunk of the offer, each checked against its bucket hashes; a chunk that fails is
/// asked of another peer, and the peer that sent it is not asked again.
async fn fetch_chunks(
    client: &mut Client<'_>,
    offer: &Offer,
    progress: &dyn Fn(&str),
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateSyncError> {
    let per_chunk = BUCKETS / SNAPSHOT_CHUNKS as usize;
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut bad_peers: HashSet<PeerId> = HashSet::new();
    for index in 0..SNAPSHOT_CHUNKS {
        let mut tries = 0;
        loop {
            tries += 1;
            let candidates: Vec<PeerId> = std::iter::once(offer.peer)
                .chain(client.peers.iter().copied())
                .filter(|p| !bad_peers.contains(p))
                .collect();
            let Some(from) = candidates
                .get((index as usize + tries) % candidates.len().max(1))
                .copied()
            else {
                return Err(peer_error(offer.peer, "every peer sent a bad chunk"));
            };
            let request = SnapshotRequest::Chunk {
                height: offer.height,
                index,
            };
            let chunk = match client.ask(from, request).await {
                Ok(SnapshotResponse::Chunk { entries: got, .. }) => got,
                Ok(other) => {
                    tracing::warn!(peer = %from, ?other, "chunk refused");
                    bad_peers.insert(from);
                    continue;
                }
                Err(error) if tries < 5 => {
                    tracing::warn!(%error, "chunk request failed");
                    continue;
                }
                Err(error) => return Err(error),
            };
            match check_chunk(index as usize, per_chunk, &offer.bucket_hashes, chunk) {
                Ok(good) => {
                    entries.extend(good);
                    break;
                }
                Err(reason) => {
                    tracing::warn!(peer = %from, %reason, "bad state chunk");
                    bad_peers.insert(from);
                }
            }
        }
        progress(&format!(
            "chunk {}/{SNAPSHOT_CHUNKS} verified ({} keys so far)",
            index + 1,
            entries.len()
        ));
    }
    Ok(entries)
}

/// Rebuilds the state from `entries`, checks it has the verified app hash, and writes it, block
/// `height`, its commit and the set records in one batch. Returns the number of keys.
fn write(
    storage: &Storage,
    genesis: &Genesis,
    offer: &Offer,
    verified: Verified,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<usize, StateSyncError> {
    let height = offer.height;
    let params: StakingParams = genesis.staking.clone();
    let state = ChainState::from_entries(&genesis.chain_id, params, height, entries.clone())
        .map_err(|error| peer_error(offer.peer, error.to_string()))?;
    if state.app_hash() != verified.app_hash {
        return Err(peer_error(
            offer.peer,
            "the restored state does not have the verified app hash",
        ));
    }
    let changes: Vec<StateChange> = entries
        .into_iter()
        .map(|(key, value)| StateChange::Put(key, value))
        .collect();
    let mut records = vec![
        (commit_key(height), verified.top.last_commit.clone()),
        (app_hash_key(height), verified.app_hash.0.to_vec()),
    ];
    records.extend(
        verified
            .set_records
            .into_iter()
            .map(|(epoch, bytes)| (set_record_key(epoch), bytes)),
    );
    storage.restore_at(&verified.base, &changes, &records)?;
    Ok(changes.len())
}

fn members_of(validators: &[Validator]) -> Vec<crate::state::Member> {
    validators
        .iter()
        .map(|validator| crate::state::Member {
            key: validator.public_key.to_bytes(),
            power: validator.power,
        })
        .collect()
}

/// Checks that a chunk holds exactly the buckets `index * per_chunk ..` with the given hashes.
#[allow(clippy::type_complexity)]
fn check_chunk(
    index: usize,
    per_chunk: usize,
    bucket_hashes: &[Hash],
    chunk: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let first = index * per_chunk;
    let mut buckets: BTreeMap<usize, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    for (key, value) in chunk {
        let bucket = bucket_of(&key);
        if !(first..first + per_chunk).contains(&bucket) {
            return Err(format!("key in bucket {bucket}, outside chunk {index}"));
        }
        buckets
            .entry(bucket)
            .or_default()
            .insert(key.into_vec(), value.into_vec());
    }
    let mut out = Vec::new();
    for (bucket, expected) in bucket_hashes.iter().enumerate().skip(first).take(per_chunk) {
        let entries = buckets.remove(&bucket).unwrap_or_default();
        let hash = bucket_hash(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        if hash != *expected {
            return Err(format!("bucket {bucket} does not match its hash"));
        }
        out.extend(entries);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::Store;

    #[test]
    fn a_chunk_must_hold_exactly_its_buckets_with_their_hashes() {
        let store = Store::from_entries((0u32..3000).map(|i| (i.to_be_bytes().to_vec(), vec![1])));
        let per_chunk = BUCKETS / SNAPSHOT_CHUNKS as usize;
        let chunk = |index: usize| -> Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> {
            (index * per_chunk..(index + 1) * per_chunk)
                .flat_map(|bucket| store.bucket_entries(bucket))
                .map(|(k, v)| (serde_bytes::ByteBuf::from(k), serde_bytes::ByteBuf::from(v)))
                .collect()
        };
        let hashes = store.bucket_hashes().to_vec();
        let mut all = Vec::new();
        for index in 0..SNAPSHOT_CHUNKS as usize {
            all.extend(check_chunk(index, per_chunk, &hashes, chunk(index)).unwrap());
        }
        assert_eq!(Store::from_entries(all).root(), store.root());
        let mut tampered = chunk(3);
        tampered[0].1 = serde_bytes::ByteBuf::from(vec![2]);
        assert!(check_chunk(3, per_chunk, &hashes, tampered).is_err());
        let mut short = chunk(3);
        short.pop();
        assert!(check_chunk(3, per_chunk, &hashes, short).is_err());
        assert!(
            check_chunk(4, per_chunk, &hashes, chunk(3)).is_err(),
            "wrong chunk"
        );
    }
}
