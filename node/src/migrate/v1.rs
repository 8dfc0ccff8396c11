//! In-place upgrade of a database written by blyan-node before staking (block encoding 1,
//! [`V1Block`]): `start` finds such a home's blocks undecodable by today's encoding, so it
//! upgrades it first.
//!
//! The first chain's consensus rules (no proposer, validator sets, commit certificates or
//! evidence in a block; another state) cannot be carried into today's blocks with their hashes,
//! so the upgrade does what `migrate` does for the file-based chain: every v1 block becomes a
//! native block whose one transaction is the v1 block's stored bytes (its v1 hash is SHA-256 of
//! their header part), replayed over the home's genesis state, and the node commits on top.
//!
//! Nothing is lost and a crash at any point resumes: the whole v1 chain is verified (decoding,
//! heights, links, data hashes, the stored tip) before anything moves; then `data` is renamed
//! to `data.v1` (one atomic rename), the new `data` is built block by block (each in one
//! batch; blocks already there are checked and skipped), and only then is the backup renamed
//! `data.v1-imported`, which is kept.

use std::path::{Path, PathBuf};

use crate::block::{Hash, V1Block, V1_ENCODING_VERSION};
use crate::genesis::Genesis;
use crate::migrate::StateReplay;
use crate::storage::legacy::Replay;
use crate::storage::{meta_key, Storage, StorageConfig, StorageError};

/// Why a v1 database could not be upgraded; each names the database and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("v1 database {path}: block {height}: {reason}; nothing was changed")]
    Bad {
        path: PathBuf,
        height: u64,
        reason: String,
    },
    #[error("v1 database {path} holds chain {found:?}, but this home's genesis is {expected:?}")]
    ForeignChain {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} holds native blocks beside the v1 backup {backup}; move one of them away")]
    Mixed { path: PathBuf, backup: PathBuf },
    #[error("upgrading v1 block {height}: {detail}")]
    Replay { height: u64, detail: String },
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// What an upgrade did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Report {
    /// Blocks of the v1 chain (all verified).
    pub blocks: u64,
    /// Of them, written now (the rest were there from an interrupted upgrade).
    pub imported: u64,
    /// Where the v1 database is kept.
    pub kept: PathBuf,
}

fn sibling(data: &Path, suffix: &str) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data.with_file_name(name)
}

/// Upgrades the database at `data` when it holds v1 blocks (or an upgrade was interrupted);
/// `None` when there is nothing to do.
pub fn upgrade(
    data: &Path,
    config: &StorageConfig,
    genesis: &Genesis,
) -> Result<Option<V1Report>, V1Error> {
    let backup = sibling(data, ".v1");
    if !backup.exists() {
        if !data.join("CURRENT").exists() {
            return Ok(None);
        }
        let storage = Storage::open(data, config)?;
        let tip = storage.tip().height;
        let first_byte = storage
            .raw_block(tip)?
            .and_then(|bytes| bytes.first().copied());
        if tip == 0 || first_byte != Some(V1_ENCODING_VERSION) {
            return Ok(None);
        }
        verify(&storage, &genesis.chain_id)?;
        drop(storage);
        std::fs::rename(data, &backup).map_err(|source| V1Error::Io {
            path: data.to_path_buf(),
            source,
        })?;
    }
    let old = Storage::open(&backup, config)?;
    let blocks = verify(&old, &genesis.chain_id)?;
    let new = Storage::open(data, config)?;
    let origin = format!("v1:{}", first_hash(&old)?);
    match new.legacy_origin()? {
        Some(found) if found == origin => {}
        None if new.tip().height == 0 => {
            new.meta_put(meta_key::LEGACY_ORIGIN, origin.as_bytes())?
        }
        _ => {
            return Err(V1Error::Mixed {
                path: data.to_path_buf(),
                backup,
            })
        }
    }
    let imported = replay(&old, &new, genesis, blocks)?;
    drop((old, new));
    let kept = sibling(data, ".v1-imported");
    std::fs::rename(&backup, &kept).map_err(|source| V1Error::Io {
        path: backup.clone(),
        source,
    })?;
    Ok(Some(V1Report {
        blocks,
        imported,
        kept,
    }))
}

fn first_hash(storage: &Storage) -> Result<Hash, V1Error> {
    let bytes = storage.raw_block(1)?.unwrap_or_default();
    V1Block::decode(&bytes)
        .map(|block| block.hash)
        .map_err(|error| bad(storage, 1, error.to_string()))
}

fn bad(storage: &Storage, height: u64, reason: String) -> V1Error {
    V1Error::Bad {
        path: storage.path().to_path_buf(),
        height,
        reason,
    }
}

/// Checks the whole v1 chain: every block 1..=tip decodes, has its height, links to the one
/// before and matches its data hash, the tip's hash is the stored one, and the chain is the
/// genesis'. Returns the number of blocks.
fn verify(storage: &Storage, chain_id: &str) -> Result<u64, V1Error> {
    let tip = storage.tip();
    let mut previous = Hash::ZERO;
    for height in 1..=tip.height {
        let bytes = storage
            .raw_block(height)?
            .ok_or_else(|| bad(storage, height, "missing".into()))?;
        let block =
            V1Block::decode(&bytes).map_err(|error| bad(storage, height, error.to_string()))?;
        if block.chain_id != chain_id {
            return Err(V1Error::ForeignChain {
                path: storage.path().to_path_buf(),
                found: block.chain_id,
                expected: chain_id.to_string(),
            });
        }
        let problem = if block.height != height {
            Some(format!("says height {}", block.height))
        } else if block.prev_hash != previous {
            Some(format!(
                "links to {}, not to block {}",
                block.prev_hash,
                height - 1
            ))
        } else if !block.data_hash_matches() {
            Some("data hash does not match its transactions".into())
        } else {
            None
        };
        if let Some(reason) = problem {
            return Err(bad(storage, height, reason));
        }
        previous = block.hash;
    }
    if previous != tip.hash {
        return Err(bad(
            storage,
            tip.height,
            format!("hashes to {previous}, the database's tip is {}", tip.hash),
        ));
    }
    Ok(tip.height)
}

/// Writes each v1 block as a native block over the state (skipping those already written,
/// which must carry the same record). Returns how many were written.
fn replay(old: &Storage, new: &Storage, genesis: &Genesis, blocks: u64) -> Result<u64, V1Error> {
    let mut state = StateReplay::new(new, genesis);
    let mut imported = 0;
    for height in 1..=blocks {
        let record = old
            .raw_block(height)?
            .ok_or_else(|| bad(old, height, "missing".into()))?;
        if let Some(existing) = new.block(height)? {
            if existing.txs != [record] {
                return Err(V1Error::Mixed {
                    path: new.path().to_path_buf(),
                    backup: old.path().to_path_buf(),
                });
            }
            continue;
        }
        let time_ms = V1Block::decode(&record)
            .map_err(|error| bad(old, height, error.to_string()))?
            .time_ms;
        let replayed = state
            .block(height, time_ms, new.tip().hash, record)
            .map_err(|detail| V1Error::Replay { height, detail })?;
        new.commit_block_with(&replayed.block, &replayed.changes, &replayed.records)?;
        state.committed();
        imported += 1;
    }
    Ok(imported)
}
