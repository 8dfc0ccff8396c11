//! RocksDB options tuned for small memory and for large, synced block commits.
//!
//! Why these settings (measured with `blyan-node bench-storage`, see the storage doc):
//! - Large block bodies never enter RocksDB (see `segments.rs`), so memtables, flushes and
//!   compactions only ever handle small values.
//! - `bytes_per_sync` makes background flushes write back in 1 MiB steps instead of one large
//!   burst at the end of a file, which otherwise stalls the foreground WAL fsync.
//! - Recycled WAL files let `fdatasync` skip the file-size metadata update on each commit.
//! - One small shared block cache and small memtables keep an idle node to a few MiB.

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options};

use super::{cf, Durability, StorageConfig};

const MIB: u64 = 1 << 20;

pub(super) struct Tuned {
    pub db: Options,
    cache: Cache,
    config: StorageConfig,
}

impl Tuned {
    pub fn new(config: &StorageConfig, durability: Durability) -> Tuned {
        let cache = Cache::new_lru_cache((config.block_cache_mb * MIB) as usize);
        let mut db = Options::default();
        db.create_if_missing(true);
        db.create_missing_column_families(true);
        db.set_max_background_jobs(2);
        db.set_bytes_per_sync(MIB);
        if durability == Durability::Synced {
            // RocksDB refuses unlogged writes on a database that recycles WAL files.
            db.set_recycle_log_file_num(4);
        }
        // Bound total memtable memory across families and the WAL kept for them.
        let memtables = config.write_buffer_mb * MIB * u64::from(config.max_write_buffers);
        db.set_db_write_buffer_size((memtables + 8 * MIB) as usize);
        db.set_max_total_wal_size(memtables.max(64 * MIB));
        // RocksDB's info LOG: small, so that 100 nodes do not fill the disk with it.
        db.set_keep_log_file_num(2);
        db.set_max_log_file_size((4 * MIB) as usize);
        db.set_max_open_files(256);
        Tuned {
            db,
            cache,
            config: config.clone(),
        }
    }

    pub fn column_family(&self, name: &str) -> Options {
        let mut options = Options::default();
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_max_write_buffer_number(self.config.max_write_buffers as i32);
        let buffer = self.config.write_buffer_mb * MIB;
        if name == cf::BLOCKS {
            options.set_write_buffer_size(buffer as usize);
        } else {
            options.set_write_buffer_size((buffer / 4).max(MIB) as usize);
        }
        options.set_target_file_size_base(16 * MIB);
        options.set_max_bytes_for_level_base(64 * MIB);
        options
    }
}
