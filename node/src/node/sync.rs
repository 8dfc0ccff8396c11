//! Block sync, both sides: serving blocks, commits, state snapshots and set records to peers,
//! and catching up from them (every synced block's commit certificate is verified).

use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::app::{check_block, verify_commit, Checked};
use crate::block::Block;
use crate::p2p::{P2pCommand, SyncRequest, SyncResponse, SyncedBlock, MAX_SYNC_BLOCKS};
use crate::p2p::{SnapshotRequest, SnapshotResponse, MAX_SYNC_SETS};
use crate::state::store::BUCKETS;
use crate::storage::keys::{commit_key, set_record_key};
use crate::wire::Commit;

use super::*;

/// State snapshots are cut into this many chunks of whole buckets.
pub const SNAPSHOT_CHUNKS: u32 = 16;

impl Node {
    pub(super) fn serve_sync(&self, request: &SyncRequest) -> Result<SyncResponse, NodeError> {
        if let Some(snapshot) = &request.snapshot {
            return Ok(SyncResponse {
                tip_height: self.tip_height,
                blocks: Vec::new(),
                snapshot: Some(self.serve_snapshot(snapshot)?),
            });
        }
        let mut blocks = Vec::new();
        let first = request.from_height.max(1);
        let count = u64::from(request.max_blocks.clamp(1, MAX_SYNC_BLOCKS));
        let mut bytes = 0usize;
        for height in first..first.saturating_add(count) {
            if height > self.tip_height || bytes > 8 << 20 {
                break;
            }
            let (Some(block), Some(commit)) = (
                self.storage.block(height)?,
                self.storage.consensus_get(&commit_key(height))?,
            ) else {
                break;
            };
            let block = block.encode();
            bytes += block.len() + commit.len();
            blocks.push(SyncedBlock { block, commit });
        }
        Ok(SyncResponse {
            tip_height: self.tip_height,
            blocks,
            snapshot: None,
        })
    }

    /// Answers a state-sync request from the snapshots, blocks and set records we hold.
    pub(super) fn serve_snapshot(
        &self,
        request: &SnapshotRequest,
    ) -> Result<SnapshotResponse, NodeError> {
        let unavailable = |reason: String| SnapshotResponse::Unavailable { reason };
        let snapshot = |height: u64| {
            self.snapshots
                .iter()
                .find(|(at, _)| *at == height)
                .map(|(_, store)| store.clone())
        };
        Ok(match request {
            SnapshotRequest::Offer => {
                // The snapshot's app hash is proven by the header of the block after it.
                match self
                    .snapshots
                    .iter()
                    .rev()
                    .find(|(at, _)| *at < self.tip_height)
                {
                    Some((height, store)) => SnapshotResponse::Offer {
                        height: *height,
                        chunks: SNAPSHOT_CHUNKS,
                        bucket_hashes: store
                            .bucket_hashes()
                            .iter()
                            .map(|hash| serde_bytes::ByteBuf::from(hash.0.to_vec()))
                            .collect(),
                    },
                    None => unavailable("no snapshot yet".into()),
                }
            }
            SnapshotRequest::Chunk { height, index } => match snapshot(*height) {
                Some(store) if *index < SNAPSHOT_CHUNKS => {
                    let per_chunk = BUCKETS / SNAPSHOT_CHUNKS as usize;
                    let first = *index as usize * per_chunk;
                    SnapshotResponse::Chunk {
                        height: *height,
                        index: *index,
                        entries: (first..first + per_chunk)
                            .flat_map(|bucket| store.bucket_entries(bucket))
                            .map(|(key, value)| {
                                (
                                    serde_bytes::ByteBuf::from(key),
                                    serde_bytes::ByteBuf::from(value),
                                )
                            })
                            .collect(),
                    }
                }
                Some(_) => unavailable(format!("chunk {index} of {SNAPSHOT_CHUNKS}")),
                None => unavailable(format!("no snapshot at height {height}")),
            },
            SnapshotRequest::Heights { heights } => {
                let mut blocks = Vec::new();
                for height in heights.iter().take(MAX_SYNC_BLOCKS as usize) {
                    let (Some(block), Some(commit)) = (
                        self.storage.block(*height)?,
                        self.storage.consensus_get(&commit_key(*height))?,
                    ) else {
                        return Ok(unavailable(format!("no block {height}")));
                    };
                    blocks.push((
                        *height,
                        SyncedBlock {
                            block: block.encode(),
                            commit,
                        },
                    ));
                }
                SnapshotResponse::Blocks { blocks }
            }
            SnapshotRequest::Sets { epochs } => {
                let mut sets = Vec::new();
                for epoch in epochs.iter().take(MAX_SYNC_SETS) {
                    match self.storage.consensus_get(&set_record_key(*epoch))? {
                        Some(bytes) => sets.push((*epoch, serde_bytes::ByteBuf::from(bytes))),
                        None => return Ok(unavailable(format!("no set of epoch {epoch}"))),
                    }
                }
                SnapshotResponse::Sets { sets }
            }
        })
    }

    pub(super) fn request_sync(&mut self, peer: PeerId) {
        self.sync_in_flight = Some((peer, Instant::now()));
        self.send(P2pCommand::Sync {
            peer,
            request: SyncRequest {
                from_height: self.tip_height + 1,
                max_blocks: MAX_SYNC_BLOCKS,
                snapshot: None,
            },
        });
    }

    pub(super) fn maybe_sync(&mut self) {
        self.maybe_rebroadcast();
        if self
            .sync_in_flight
            .is_some_and(|(_, since)| since.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.sync_in_flight = None;
        let stalled = self
            .last_decided_at
            .is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if self.best_known <= self.tip_height {
            self.behind_since = None;
            if stalled && !self.peers.is_empty() {
                // Nothing decided for a while: ask someone where the chain is.
                let index = (self.tip_height as usize) % self.peers.len();
                self.request_sync(self.peers[index]);
            }
            return;
        }
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        // One height behind is the normal race at a height's end; act if it persists.
        if self.catching_up() || since.elapsed() > Duration::from_millis(300) {
            let peer = self
                .best_peer
                .filter(|peer| self.peers.contains(peer))
                .or_else(|| self.peers.first().copied());
            if let Some(peer) = peer {
                self.request_sync(peer);
            }
        }
    }

    pub(super) fn on_sync_response(
        &mut self,
        peer: PeerId,
        response: SyncResponse,
    ) -> Result<(), NodeError> {
        if self.sync_in_flight.is_some_and(|(p, _)| p == peer) {
            self.sync_in_flight = None;
        }
        if response.tip_height > self.best_known {
            self.best_known = response.tip_height;
            self.best_peer = Some(peer);
        }
        let mut applied = 0;
        for synced in &response.blocks {
            match self.verify_synced(synced) {
                Ok(Some((block, checked, commit))) => {
                    self.commit(&block, checked, &commit)?;
                    self.shared.metrics.blocks_synced.inc();
                    self.shared
                        .view
                        .write()
                        .expect("view lock poisoned")
                        .blocks_synced += 1;
                    applied += 1;
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "sync: rejected a block");
                    break;
                }
            }
        }
        if applied == 0 && response.blocks.is_empty() && response.tip_height > self.tip_height {
            // Ahead of us but without our next block: it state-synced past it. Ask another.
            let others: Vec<PeerId> = self.peers.iter().filter(|p| **p != peer).copied().collect();
            if !others.is_empty() {
                let other = others
                    [(self.tip_height as usize + response.tip_height as usize) % others.len()];
                tracing::debug!(%peer, %other, height = self.tip_height + 1, "peer lacks our next block; asking another");
                self.best_peer = Some(other);
                self.request_sync(other);
            }
        }
        if applied > 0 {
            tracing::info!(%peer, applied, height = self.tip_height, peer_tip = response.tip_height, "caught up through block sync");
            self.start_height()?;
            if self.tip_height < response.tip_height {
                self.request_sync(peer);
            }
        }
        self.update_view();
        Ok(())
    }

    /// Verifies a synced block and its commit certificate against our tip; `None` when it is
    /// not the next block (already have it).
    #[allow(clippy::type_complexity)]
    pub(super) fn verify_synced(
        &self,
        synced: &SyncedBlock,
    ) -> Result<Option<(Block, Checked, Commit)>, String> {
        let block = Block::decode(&synced.block).map_err(|error| error.to_string())?;
        if block.header.height <= self.tip_height {
            return Ok(None);
        }
        let checked = check_block(
            &block,
            &self.expected(crate::block::MAX_TXS_PER_BLOCK as usize),
            &|_| false,
        )?;
        let commit = Commit::decode(&synced.commit).map_err(|error| error.to_string())?;
        verify_commit(
            &self.chain_id,
            self.set.validators(),
            block.header.height,
            block.hash(),
            &commit,
        )?;
        Ok(Some((block, checked, commit)))
    }
}
