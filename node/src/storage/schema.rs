//! Schema versions and the forward migration path.
//!
//! | version | layout |
//! |---|---|
//! | 1 | blocks under `b<height>`, metadata latest height/hash |
//! | 2 | adds the block hash index `h<hash> -> height` in the blocks family |
//! | 3 | a block value may be a reference into a segment file (large blocks) |
//!
//! A new database is written at [`CURRENT_SCHEMA_VERSION`]. An older one is migrated one
//! version at a time, each step in one atomic batch that also bumps the version, so a crash
//! mid-migration leaves either the old or the new version, never a mix. A newer one is refused.

use rocksdb::WriteBatch;

use super::{block_key, cf, hash_index_key, meta_key, Storage, StorageError};
use crate::block::Block;

/// The schema this binary writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 3;

/// Refuses a database written by a newer binary before anything opens it for writing, so the
/// refusal leaves its files exactly as they were.
pub(super) fn refuse_newer_read_only(path: &std::path::Path) -> Result<(), StorageError> {
    if !path.join("CURRENT").exists() {
        return Ok(());
    }
    let options = rocksdb::Options::default();
    let Ok(names) = rocksdb::DB::list_cf(&options, path) else {
        return Ok(()); // Let the read-write open report what is wrong.
    };
    if !names.iter().any(|name| name == cf::METADATA) {
        return Ok(());
    }
    let db =
        rocksdb::DB::open_cf_for_read_only(&options, path, &names, false).map_err(|source| {
            StorageError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let metadata = db.cf_handle(cf::METADATA).expect("listed above");
    let found = db
        .get_cf(metadata, meta_key::SCHEMA_VERSION)?
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_be_bytes);
    match found {
        Some(found) if found > CURRENT_SCHEMA_VERSION => Err(StorageError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: CURRENT_SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Brings the database to [`CURRENT_SCHEMA_VERSION`].
pub(super) fn upgrade(storage: &mut Storage) -> Result<(), StorageError> {
    let found = match storage.meta_get(meta_key::SCHEMA_VERSION)? {
        None => {
            if storage.meta_get(meta_key::LATEST_HEIGHT)?.is_some() {
                return Err(storage.corrupt("blocks present but no schema version"));
            }
            storage.meta_put(
                meta_key::SCHEMA_VERSION,
                &CURRENT_SCHEMA_VERSION.to_be_bytes(),
            )?;
            return Ok(());
        }
        Some(bytes) => u32::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| storage.corrupt("schema_version is not 4 bytes"))?,
        ),
    };
    if found > CURRENT_SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            path: storage.path.clone(),
            found,
            supported: CURRENT_SCHEMA_VERSION,
        });
    }
    if found == 0 {
        return Err(storage.corrupt("schema version 0 does not exist"));
    }
    for version in found..CURRENT_SCHEMA_VERSION {
        let mut batch = WriteBatch::default();
        match version {
            1 => v1_to_v2(storage, &mut batch)?,
            // Older blocks stay inline and readable; only new large blocks use segments, which
            // older binaries cannot read: hence the version.
            2 => {}
            other => unreachable!("no migration from schema {other}"),
        }
        batch.put_cf(
            storage.handle(cf::METADATA),
            meta_key::SCHEMA_VERSION,
            (version + 1).to_be_bytes(),
        );
        storage.db().write_opt(batch, &super::synced())?;
        tracing::info!(from = version, to = version + 1, path = %storage.path.display(), "migrated storage schema");
    }
    Ok(())
}

/// Version 2 adds the hash index: one entry per stored block.
fn v1_to_v2(storage: &Storage, batch: &mut WriteBatch) -> Result<(), StorageError> {
    let blocks = storage.handle(cf::BLOCKS);
    let iterator = storage
        .db()
        .prefix_iterator_cf(blocks, block_key(0).get(..1).expect("key has a prefix"));
    for item in iterator {
        let (key, value) = item?;
        if key.first() != Some(&b'b') {
            break;
        }
        let block = Block::decode(&value)
            .map_err(|error| storage.corrupt(format!("block under key {key:?}: {error}")))?;
        batch.put_cf(
            blocks,
            hash_index_key(&block.hash()),
            block.header.height.to_be_bytes(),
        );
    }
    Ok(())
}

/// Test aid: rewrites the database as schema version `version` would have left it.
#[cfg(test)]
pub(super) fn downgrade_for_test(storage: &Storage, version: u32) {
    assert_eq!(version, 1, "only version 1 is modelled");
    let blocks = storage.handle(cf::BLOCKS);
    let keys: Vec<Box<[u8]>> = storage
        .db()
        .prefix_iterator_cf(blocks, b"h")
        .map(|item| item.expect("iterate").0)
        .take_while(|key| key.first() == Some(&b'h'))
        .collect();
    for key in keys {
        storage.db().delete_cf(blocks, key).expect("delete");
    }
    storage
        .meta_put(meta_key::SCHEMA_VERSION, &version.to_be_bytes())
        .expect("write version");
}

/// Test aid: marks the database as written by a newer binary.
#[cfg(test)]
pub(super) fn set_version_for_test(storage: &Storage, version: u32) {
    storage
        .meta_put(meta_key::SCHEMA_VERSION, &version.to_be_bytes())
        .expect("write version");
}
