//! Crash-safe storage on RocksDB: blocks, state, consensus records, expert tiles and metadata.
//!
//! Every block commit is one atomic write batch written with a synced WAL, so a commit that
//! returned survives a crash of the process or the machine. See `docs/STORAGE_ARCHITECTURE.md`.

mod checkpoint;
pub mod keys;
pub mod legacy;
mod options;
mod schema;
mod segments;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::block::{Block, DecodeError, Hash};

pub use checkpoint::{list as list_checkpoints, CheckpointInfo};
pub use schema::CURRENT_SCHEMA_VERSION;

/// Column family names. The order is the order they are created in.
pub mod cf {
    pub const BLOCKS: &str = "blocks";
    pub const STATE: &str = "state";
    pub const CONSENSUS: &str = "consensus";
    pub const EXPERTS: &str = "experts";
    pub const METADATA: &str = "metadata";
    pub const ALL: [&str; 5] = [BLOCKS, STATE, CONSENSUS, EXPERTS, METADATA];
}

/// Keys in the metadata column family.
pub(crate) mod meta_key {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const LATEST_HEIGHT: &[u8] = b"latest_height";
    pub const LATEST_HASH: &[u8] = b"latest_hash";
    pub const CHAIN_ID: &[u8] = b"chain_id";
    pub const LEGACY_ORIGIN: &[u8] = b"legacy_origin";
    pub const SEGMENT_TAIL: &[u8] = b"segment_tail";
}

/// Storage settings; the defaults let 100 nodes share one 24 GiB host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Shared LRU block cache for all column families, MiB.
    pub block_cache_mb: u64,
    /// Memtable size of the blocks column family, MiB (other families use a quarter, at least 1).
    pub write_buffer_mb: u64,
    /// Memtables per column family before writes wait for a flush (at least 2).
    pub max_write_buffers: u32,
    /// Blocks of at least this many encoded bytes go to append-only segment files; RocksDB
    /// then holds only a reference to them.
    pub blob_min_bytes: u64,
    /// Checkpoints kept under `HOME/checkpoints`; older ones are pruned. 0 keeps all.
    pub checkpoint_retention: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            block_cache_mb: 8,
            write_buffer_mb: 16,
            max_write_buffers: 3,
            blob_min_bytes: 4096,
            checkpoint_retention: 3,
        }
    }
}

impl StorageConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=4096).contains(&self.block_cache_mb) {
            return Err((
                "storage.block_cache_mb",
                "must be between 1 and 4096".into(),
            ));
        }
        if !(1..=1024).contains(&self.write_buffer_mb) {
            return Err((
                "storage.write_buffer_mb",
                "must be between 1 and 1024".into(),
            ));
        }
        if !(2..=16).contains(&self.max_write_buffers) {
            return Err((
                "storage.max_write_buffers",
                "must be between 2 and 16".into(),
            ));
        }
        if !(64..=(64 << 20)).contains(&self.blob_min_bytes) {
            return Err((
                "storage.blob_min_bytes",
                "must be between 64 and 67108864".into(),
            ));
        }
        Ok(())
    }
}

/// Errors of the storage layer; each carries the path or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database {path} is locked by another process (is a node running with this home?)")]
    Locked { path: PathBuf },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("database {path} has schema version {found}, newer than this binary supports ({supported}); upgrade blyan-node")]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("database {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("block {height} in {path} cannot be decoded: {source}")]
    BadBlock {
        path: PathBuf,
        height: u64,
        source: DecodeError,
    },
    #[error("block height {got} does not follow the latest height {latest}")]
    NotNext { latest: u64, got: u64 },
    #[error("block {height} has parent {got}, but the latest block is {expected}")]
    WrongParent {
        height: u64,
        expected: Hash,
        got: Hash,
    },
    #[error("block {height} has chain id {got:?}, but this database holds chain {expected:?}")]
    WrongChain {
        height: u64,
        expected: String,
        got: String,
    },
    #[error("block {height}: its body does not match the data hash in its header; not stored")]
    DataHashMismatch { height: u64 },
    #[error("checkpoint {path} already exists")]
    CheckpointExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
}

/// Key-value entries, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A change to the application state, applied in the same batch as its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// How block commits reach the disk; chosen when the database is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// WAL written and fsynced before the call returns. The only mode the node uses.
    Synced,
    /// No WAL at all: writes live in memory until a flush. Exists only so that tests can show
    /// that the crash checker catches lost commits; never use it for real data.
    UnsafeNoWal,
    /// The WAL written but never fsynced: a process crash loses nothing (the kernel keeps the
    /// writes), a power loss does. Exists only so that the power-loss test has a control that
    /// must lose commits (`tests/power_loss.rs`); never use it for real data.
    UnsafeUnsyncedWal,
}

/// The latest committed block, cached so that commits need no read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub hash: Hash,
}

/// The node's database.
pub struct Storage {
    db: DB,
    path: PathBuf,
    config: StorageConfig,
    tip: Mutex<Tip>,
    chain_id: Mutex<Option<String>>,
    durability: Durability,
    segments: segments::Segments,
}

fn block_key(height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = b'b';
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

fn hash_index_key(hash: &Hash) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = b'h';
    key[1..].copy_from_slice(&hash.0);
    key
}

fn expert_tile_key(hash: &Hash) -> Vec<u8> {
    [b"tile/".as_slice(), &hash.0].concat()
}

fn expert_name_key(name: &str) -> Vec<u8> {
    [b"name/".as_slice(), name.as_bytes()].concat()
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl Storage {
    /// Opens (or creates) the database at `path`, migrating an older schema forward.
    pub fn open(path: &Path, config: &StorageConfig) -> Result<Storage, StorageError> {
        Storage::open_with_durability(path, config, Durability::Synced)
    }

    /// [`Storage::open`] with an explicit durability for block commits; see [`Durability`].
    pub fn open_with_durability(
        path: &Path,
        config: &StorageConfig,
        durability: Durability,
    ) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(path).map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        schema::refuse_newer_read_only(path)?;
        let tuned = options::Tuned::new(config, durability);
        let descriptors = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, tuned.column_family(name)));
        let db = DB::open_cf_descriptors(&tuned.db, path, descriptors).map_err(|source| {
            if source.as_ref().contains("lock") {
                StorageError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StorageError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        // The committed segment tail, read before the segments are opened (opening cuts them
        // back to it).
        let metadata = db
            .cf_handle(cf::METADATA)
            .expect("opened with the database");
        let tail = match db.get_cf(metadata, meta_key::SEGMENT_TAIL)? {
            None => None,
            Some(bytes) => {
                Some(
                    segments::decode_tail(&bytes).ok_or_else(|| StorageError::Corrupt {
                        path: path.to_path_buf(),
                        detail: "segment tail is not 12 bytes".into(),
                    })?,
                )
            }
        };
        let mut storage = Storage {
            db,
            path: path.to_path_buf(),
            config: config.clone(),
            tip: Mutex::new(Tip {
                height: 0,
                hash: Hash::ZERO,
            }),
            chain_id: Mutex::new(None),
            durability,
            segments: segments::Segments::open(path, tail)?,
        };
        schema::upgrade(&mut storage)?;
        let tip = storage.read_tip()?;
        *storage.tip.get_mut().expect("tip lock poisoned") = tip;
        let chain_id = storage.meta_get(meta_key::CHAIN_ID)?;
        let chain_id = chain_id
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| storage.corrupt("chain id is not UTF-8"))
            })
            .transpose()?;
        *storage.chain_id.get_mut().expect("chain id lock poisoned") = chain_id;
        Ok(storage)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn handle(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} was opened with the database"))
    }

    pub(crate) fn corrupt(&self, detail: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// The legacy genesis hash this chain was imported from (`blyan-node migrate`), if any.
    pub fn legacy_origin(&self) -> Result<Option<String>, StorageError> {
        Ok(self
            .meta_get(meta_key::LEGACY_ORIGIN)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub(crate) fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.handle(cf::METADATA), key)?)
    }

    fn segment_tail(&self) -> Result<Option<(u32, u64)>, StorageError> {
        self.meta_get(meta_key::SEGMENT_TAIL)?
            .map(|bytes| {
                segments::decode_tail(&bytes)
                    .ok_or_else(|| self.corrupt("segment tail is not 12 bytes"))
            })
            .transpose()
    }

    fn read_tip(&self) -> Result<Tip, StorageError> {
        let Some(height) = self.meta_get(meta_key::LATEST_HEIGHT)? else {
            return Ok(Tip {
                height: 0,
                hash: Hash::ZERO,
            });
        };
        let height = u64::from_be_bytes(
            height
                .try_into()
                .map_err(|_| self.corrupt("latest_height is not 8 bytes"))?,
        );
        let hash = self
            .meta_get(meta_key::LATEST_HASH)?
            .ok_or_else(|| self.corrupt("latest_height without latest_hash"))?;
        let hash = Hash(
            hash.try_into()
                .map_err(|_| self.corrupt("latest_hash is not 32 bytes"))?,
        );
        Ok(Tip { height, hash })
    }

    /// The latest committed block (height 0 and the zero hash for an empty chain).
    pub fn tip(&self) -> Tip {
        *self.tip.lock().expect("tip lock poisoned")
    }

    /// The chain this database holds, once its first block is committed.
    pub fn chain_id(&self) -> Option<String> {
        self.chain_id
            .lock()
            .expect("chain id lock poisoned")
            .clone()
    }

    /// Commits `block` and its state changes in one atomic, synced write batch.
    ///
    /// The block must extend the tip: next height, parent hash equal to the tip's hash, and the
    /// database's chain id. Its data hash must match its transactions (the caller's job; asserted
    /// in debug builds).
    pub fn commit_block(&self, block: &Block, changes: &[StateChange]) -> Result<(), StorageError> {
        self.commit_block_with(block, changes, &[])
    }

    /// [`Storage::commit_block`] that also writes `records` (key, value) to the consensus
    /// family in the same atomic batch: the block's commit certificate, its transaction index.
    pub fn commit_block_with(
        &self,
        block: &Block,
        changes: &[StateChange],
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let mut tip = self.tip.lock().expect("tip lock poisoned");
        let mut chain_id = self.chain_id.lock().expect("chain id lock poisoned");
        let header = &block.header;
        if header.height != tip.height + 1 {
            return Err(StorageError::NotNext {
                latest: tip.height,
                got: header.height,
            });
        }
        if header.prev_hash != tip.hash {
            return Err(StorageError::WrongParent {
                height: header.height,
                expected: tip.hash,
                got: header.prev_hash,
            });
        }
        if let Some(expected) = chain_id.as_ref() {
            if *expected != header.chain_id {
                return Err(StorageError::WrongChain {
                    height: header.height,
                    expected: expected.clone(),
                    got: header.chain_id.clone(),
                });
            }
        }
        self.write_block(&mut tip, &mut chain_id, block, changes, records)
    }

    /// Starts an empty database at `block` (state sync): the block becomes the tip without its
    /// ancestors, with the restored state and `records`, in one synced batch.
    pub fn restore_at(
        &self,
        block: &Block,
        changes: &[StateChange],
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let mut tip = self.tip.lock().expect("tip lock poisoned");
        let mut chain_id = self.chain_id.lock().expect("chain id lock poisoned");
        if tip.height != 0 {
            return Err(self.corrupt(format!(
                "state sync needs an empty database; this one is at height {}",
                tip.height
            )));
        }
        self.write_block(&mut tip, &mut chain_id, block, changes, records)
    }

    fn write_block(
        &self,
        tip: &mut Tip,
        chain_id: &mut Option<String>,
        block: &Block,
        changes: &[StateChange],
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let header = &block.header;
        // Callers validate blocks at the boundary (consensus, import); the last line of
        // defence is checked in release builds too: hashing a 1 MiB body costs about 1 ms,
        // next to the synced write's fsync, and a body that does not match its header must
        // never become part of the chain on disk.
        if !block.data_hash_matches() {
            return Err(StorageError::DataHashMismatch {
                height: header.height,
            });
        }
        let hash = block.hash();
        let blocks = self.handle(cf::BLOCKS);
        let state = self.handle(cf::STATE);
        let metadata = self.handle(cf::METADATA);
        let mut batch = WriteBatch::default();
        let encoded = block.encode();
        if encoded.len() as u64 >= self.config.blob_min_bytes {
            // Body first, synced; the batch below then makes it part of the chain.
            let location = self
                .segments
                .append(&encoded, self.durability == Durability::Synced)?;
            batch.put_cf(blocks, block_key(header.height), location.encode());
            batch.put_cf(
                metadata,
                meta_key::SEGMENT_TAIL,
                segments::encode_tail(location.end()),
            );
        } else {
            batch.put_cf(blocks, block_key(header.height), encoded);
        }
        batch.put_cf(blocks, hash_index_key(&hash), header.height.to_be_bytes());
        for change in changes {
            match change {
                StateChange::Put(key, value) => batch.put_cf(state, key, value),
                StateChange::Delete(key) => batch.delete_cf(state, key),
            }
        }
        let consensus = self.handle(cf::CONSENSUS);
        for (key, value) in records {
            batch.put_cf(consensus, key, value);
        }
        batch.put_cf(
            metadata,
            meta_key::LATEST_HEIGHT,
            header.height.to_be_bytes(),
        );
        batch.put_cf(metadata, meta_key::LATEST_HASH, hash.0);
        if chain_id.is_none() {
            batch.put_cf(metadata, meta_key::CHAIN_ID, header.chain_id.as_bytes());
        }
        let mut options = synced();
        match self.durability {
            Durability::Synced => {}
            Durability::UnsafeNoWal => {
                options.set_sync(false);
                options.disable_wal(true);
            }
            Durability::UnsafeUnsyncedWal => options.set_sync(false),
        }
        self.db.write_opt(batch, &options)?;
        *tip = Tip {
            height: header.height,
            hash,
        };
        chain_id.get_or_insert_with(|| header.chain_id.clone());
        Ok(())
    }

    /// The stored bytes of the block at `height` (read from its segment when it lives in
    /// one), not decoded: a database of an earlier encoding is read through this.
    pub fn raw_block(&self, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(bytes) = self.db.get_cf(self.handle(cf::BLOCKS), block_key(height))? else {
            return Ok(None);
        };
        if bytes.first() == Some(&segments::REFERENCE_TAG) {
            let location = segments::Location::decode(&bytes).ok_or_else(|| {
                self.corrupt(format!("block {height} has a malformed segment reference"))
            })?;
            return Ok(Some(self.segments.read(location)?));
        }
        Ok(Some(bytes))
    }

    /// The block at `height`, if committed. Verifies that the stored bytes decode.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StorageError> {
        let Some(bytes) = self.raw_block(height)? else {
            return Ok(None);
        };
        Block::decode(&bytes)
            .map(Some)
            .map_err(|source| StorageError::BadBlock {
                path: self.path.clone(),
                height,
                source,
            })
    }

    /// The height of the block with `hash`, if committed.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.handle(cf::BLOCKS), hash_index_key(hash))?
        else {
            return Ok(None);
        };
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| self.corrupt(format!("hash index entry for {hash} is not 8 bytes")))?;
        Ok(Some(u64::from_be_bytes(array)))
    }

    /// A value of the application state.
    pub fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.handle(cf::STATE), key)?)
    }

    /// Every entry of the application state, in key order (loaded into memory at start).
    pub fn state_entries(&self) -> Result<Entries, StorageError> {
        self.db
            .iterator_cf(self.handle(cf::STATE), rocksdb::IteratorMode::Start)
            .map(|item| {
                item.map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(StorageError::from)
            })
            .collect()
    }

    /// A consensus record (for example the signer's last signed vote).
    pub fn consensus_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.handle(cf::CONSENSUS), key)?)
    }

    /// Writes a consensus record durably (synced WAL) before returning: a validator calls this
    /// before it lets a signature leave the process.
    pub fn consensus_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.handle(cf::CONSENSUS), key, value, &synced())?;
        Ok(())
    }

    /// Stores an expert weight tile under its SHA-256 and records `name` for it. Idempotent.
    pub fn put_expert(&self, name: &str, bytes: &[u8]) -> Result<Hash, StorageError> {
        let hash = Hash::digest(bytes);
        let experts = self.handle(cf::EXPERTS);
        let mut batch = WriteBatch::default();
        batch.put_cf(experts, expert_tile_key(&hash), bytes);
        batch.put_cf(experts, expert_name_key(name), hash.0);
        self.db.write_opt(batch, &synced())?;
        Ok(hash)
    }

    /// An expert tile by content hash, verified against it.
    pub fn expert(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.handle(cf::EXPERTS), expert_tile_key(hash))?
        else {
            return Ok(None);
        };
        if Hash::digest(&bytes) != *hash {
            return Err(self.corrupt(format!("expert tile {hash} does not match its hash")));
        }
        Ok(Some(bytes))
    }

    /// The content hash recorded for an expert name.
    pub fn expert_hash(&self, name: &str) -> Result<Option<Hash>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.handle(cf::EXPERTS), expert_name_key(name))?
        else {
            return Ok(None);
        };
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| self.corrupt(format!("expert name {name:?} maps to a bad hash")))?;
        Ok(Some(Hash(array)))
    }

    pub(crate) fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.handle(cf::METADATA), key, value, &synced())?;
        Ok(())
    }

    /// Flushes memtables and syncs the WAL; called on clean shutdown so restart replays nothing.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        for name in cf::ALL {
            self.db.flush_cf(self.handle(name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

impl Storage {
    /// A cheap read that proves the database answers (used by `/health`).
    pub fn check(&self) -> Result<(), StorageError> {
        self.meta_get(meta_key::SCHEMA_VERSION)?
            .map(|_| ())
            .ok_or_else(|| self.corrupt("schema version missing"))
    }
}
