//! Import of the legacy file-based chain layout (one JSON file per block plus expert weight
//! files). The accepted layout is documented in `docs/STORAGE_ARCHITECTURE.md`:
//!
//! ```text
//! LEGACY_DIR/blocks/<index>.json   {"index", "timestamp", "prev_hash", "block_type", "payload", "hash"}
//! LEGACY_DIR/experts/<name>        expert weight files (optional folder)
//! ```
//!
//! `hash` is the hex SHA-256 of the UTF-8 string `"{index}|{timestamp}|{prev_hash}|{block_type}|{payload}"`,
//! `prev_hash` is the previous block's `hash` (64 zeros for index 0), and indices run 0, 1, 2, …
//! without gaps. Legacy block `i` becomes native block `i + 1`, whose single transaction is the
//! legacy record itself, so the import can be checked and repeated.
//!
//! The whole legacy chain is verified before anything is written, so a tampered block leaves
//! the home untouched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{meta_key, StateChange, Storage, StorageError};
use crate::block::{Block, Hash};

/// Largest legacy block file we read, in bytes.
const MAX_LEGACY_BLOCK_BYTES: u64 = 64 << 20;

/// Why a legacy import failed. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a legacy chain directory (no blocks/ folder)")]
    NoBlocks { path: PathBuf },
    #[error("{path}: file name is not <index>.json")]
    BadFileName { path: PathBuf },
    #[error("{path}: invalid block JSON: {message}")]
    BadJson { path: PathBuf, message: String },
    #[error("{path}: file is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: index {found} does not match the file name ({expected})")]
    IndexMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: block index {missing} is missing (indices must run 0, 1, 2, ...)")]
    Gap { path: PathBuf, missing: u64 },
    #[error("{path}: hash mismatch: file says {stated}, content hashes to {computed} (tampered or corrupt)")]
    HashMismatch {
        path: PathBuf,
        stated: String,
        computed: String,
    },
    #[error("{path}: prev_hash {found} does not match the hash of block {previous} ({expected})")]
    BrokenLink {
        path: PathBuf,
        previous: u64,
        expected: String,
        found: String,
    },
    #[error("home database {home} already holds another chain ({detail}); use a fresh home")]
    ForeignChain { home: PathBuf, detail: String },
    #[error("replaying legacy block {height} over the chain state: {detail}")]
    Replay { height: u64, detail: String },
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// One legacy block file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyBlock {
    pub index: u64,
    /// Unix seconds.
    pub timestamp: u64,
    pub prev_hash: String,
    #[serde(default)]
    pub block_type: String,
    pub payload: String,
    pub hash: String,
}

impl LegacyBlock {
    /// The hash the legacy format defines for this block.
    pub fn computed_hash(&self) -> Hash {
        let preimage = format!(
            "{}|{}|{}|{}|{}",
            self.index, self.timestamp, self.prev_hash, self.block_type, self.payload
        );
        Hash::digest(preimage.as_bytes())
    }

    /// The native block's single transaction: the canonical JSON of this record.
    fn record(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a legacy block always serialises")
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub blocks_verified: u64,
    pub blocks_imported: u64,
    pub blocks_already_present: u64,
    pub experts_imported: u64,
    pub latest_height: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LegacyError + '_ {
    move |source| LegacyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The block files of a legacy directory, sorted by index, checked for gaps.
fn block_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LegacyError> {
    let blocks = dir.join("blocks");
    if !blocks.is_dir() {
        return Err(LegacyError::NoBlocks {
            path: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&blocks).map_err(io(&blocks))? {
        let path = entry.map_err(io(&blocks))?.path();
        let index = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".json"))
            .and_then(|stem| stem.parse::<u64>().ok())
            .ok_or_else(|| LegacyError::BadFileName { path: path.clone() })?;
        files.push((index, path));
    }
    files.sort();
    for (position, (index, path)) in files.iter().enumerate() {
        if *index != position as u64 {
            return Err(LegacyError::Gap {
                path: path.clone(),
                missing: position as u64,
            });
        }
    }
    Ok(files)
}

fn read_block(index: u64, path: &Path) -> Result<LegacyBlock, LegacyError> {
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    if size > MAX_LEGACY_BLOCK_BYTES {
        return Err(LegacyError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_LEGACY_BLOCK_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let block: LegacyBlock = serde_json::from_str(&text).map_err(|error| LegacyError::BadJson {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    if block.index != index {
        return Err(LegacyError::IndexMismatch {
            path: path.to_path_buf(),
            expected: index,
            found: block.index,
        });
    }
    let computed = block.computed_hash().to_hex();
    if computed != block.hash.to_ascii_lowercase() {
        return Err(LegacyError::HashMismatch {
            path: path.to_path_buf(),
            stated: block.hash.clone(),
            computed,
        });
    }
    Ok(block)
}

/// Reads and verifies block `index`, including its link to the previous block's hash.
fn verified(index: u64, path: &Path, previous_hash: &str) -> Result<LegacyBlock, LegacyError> {
    let block = read_block(index, path)?;
    if !block.prev_hash.eq_ignore_ascii_case(previous_hash) {
        return Err(LegacyError::BrokenLink {
            path: path.to_path_buf(),
            previous: index.saturating_sub(1),
            expected: previous_hash.to_string(),
            found: block.prev_hash,
        });
    }
    Ok(block)
}

/// Verifies the whole legacy chain without writing anything; returns its genesis hash.
pub fn verify(dir: &Path) -> Result<(u64, String), LegacyError> {
    let files = block_files(dir)?;
    let mut previous = Hash::ZERO.to_hex();
    let mut genesis = String::new();
    for (index, path) in &files {
        let block = verified(*index, path, &previous)?;
        if *index == 0 {
            genesis = block.hash.to_ascii_lowercase();
        }
        previous = block.hash.to_ascii_lowercase();
    }
    Ok((files.len() as u64, genesis))
}

/// One native block built from a legacy record: what [`import`] commits in one atomic batch.
pub struct Replayed {
    pub block: Block,
    /// The state changes the block makes (the whole genesis state with the first block).
    pub changes: Vec<StateChange>,
    /// Consensus records written with it (the app hash after the block, validator sets).
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Builds each imported block over the chain state, so that the imported home holds the state
/// of its tip and a node can start on it (the state rules live above storage, in the app).
pub trait Replay {
    /// The native block at `height` (on `prev_hash`) whose one transaction is `record`.
    fn block(
        &mut self,
        height: u64,
        time_ms: u64,
        prev_hash: Hash,
        record: Vec<u8>,
    ) -> Result<Replayed, String>;
    /// The block last built was committed to storage.
    fn committed(&mut self);
}

/// Imports `dir` into `storage` as chain `chain_id`, building each block and its state with
/// `replay`. Verifies everything first; idempotent; an interrupted import can be run again.
pub fn import(
    dir: &Path,
    storage: &Storage,
    chain_id: &str,
    replay: &mut dyn Replay,
) -> Result<ImportReport, LegacyError> {
    let (count, genesis) = verify(dir)?;
    check_same_chain(storage, chain_id, &genesis)?;
    // Recorded before the first block, so that a home interrupted mid-import is still known
    // as an import (the node starts on an imported tip without a commit certificate).
    if storage.meta_get(meta_key::LEGACY_ORIGIN)?.is_none() && count > 0 {
        storage.meta_put(meta_key::LEGACY_ORIGIN, genesis.as_bytes())?;
    }
    let mut report = ImportReport {
        blocks_verified: count,
        ..ImportReport::default()
    };
    let mut previous = Hash::ZERO.to_hex();
    for (index, path) in block_files(dir)? {
        let legacy = verified(index, &path, &previous)?;
        previous = legacy.hash.to_ascii_lowercase();
        let height = index + 1;
        if let Some(existing) = storage.block(height)? {
            if existing.txs != [legacy.record()] {
                return Err(LegacyError::ForeignChain {
                    home: storage.path().to_path_buf(),
                    detail: format!("block {height} differs from {}", path.display()),
                });
            }
            report.blocks_already_present += 1;
            continue;
        }
        let tip = storage.tip();
        let time_ms = legacy.timestamp.saturating_mul(1000);
        let replayed = replay
            .block(height, time_ms, tip.hash, legacy.record())
            .map_err(|detail| LegacyError::Replay { height, detail })?;
        storage.commit_block_with(&replayed.block, &replayed.changes, &replayed.records)?;
        replay.committed();
        report.blocks_imported += 1;
    }
    report.experts_imported = import_experts(dir, storage)?;
    report.latest_height = storage.tip().height;
    Ok(report)
}

/// Refuses a home that holds blocks of any other chain.
fn check_same_chain(storage: &Storage, chain_id: &str, genesis: &str) -> Result<(), LegacyError> {
    let home = storage.path().to_path_buf();
    if let Some(existing) = storage.chain_id() {
        if existing != chain_id {
            return Err(LegacyError::ForeignChain {
                home,
                detail: format!("chain id {existing:?}, importing as {chain_id:?}"),
            });
        }
    }
    let origin = storage.meta_get(meta_key::LEGACY_ORIGIN)?;
    match origin {
        Some(origin) if origin != genesis.as_bytes() => Err(LegacyError::ForeignChain {
            home,
            detail: format!(
                "imported from legacy genesis {}, not {genesis}",
                String::from_utf8_lossy(&origin)
            ),
        }),
        None if storage.tip().height > 0 => Err(LegacyError::ForeignChain {
            home,
            detail: format!("{} native blocks", storage.tip().height),
        }),
        _ => Ok(()),
    }
}

fn import_experts(dir: &Path, storage: &Storage) -> Result<u64, LegacyError> {
    let experts = dir.join("experts");
    if !experts.is_dir() {
        return Ok(0);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&experts)
        .map_err(io(&experts))?
        .map(|entry| entry.map(|entry| entry.path()).map_err(io(&experts)))
        .collect::<Result<_, _>>()?;
    paths.sort();
    let mut imported = 0;
    for path in paths.iter().filter(|path| path.is_file()) {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| LegacyError::BadFileName { path: path.clone() })?;
        let bytes = std::fs::read(path).map_err(io(path))?;
        storage.put_expert(name, &bytes)?;
        imported += 1;
    }
    Ok(imported)
}

/// Writes a legacy directory of `count` blocks (and one expert file); used by tests and docs.
pub fn write_sample(dir: &Path, count: u64) -> Result<Vec<LegacyBlock>, std::io::Error> {
    std::fs::create_dir_all(dir.join("blocks"))?;
    std::fs::create_dir_all(dir.join("experts"))?;
    let mut previous = Hash::ZERO.to_hex();
    let mut blocks = Vec::new();
    for index in 0..count {
        let mut block = LegacyBlock {
            index,
            timestamp: 1_700_000_000 + index,
            prev_hash: previous.clone(),
            block_type: if index == 0 { "meta" } else { "expert" }.to_string(),
            payload: format!("{{\"expert\":\"layer0.expert{index}\"}}"),
            hash: String::new(),
        };
        block.hash = block.computed_hash().to_hex();
        previous = block.hash.clone();
        let path = dir.join("blocks").join(format!("{index:06}.json"));
        std::fs::write(path, serde_json::to_vec_pretty(&block)?)?;
        blocks.push(block);
    }
    std::fs::write(
        dir.join("experts").join("layer0.expert0.safetensors"),
        b"legacy expert weights",
    )?;
    Ok(blocks)
}
