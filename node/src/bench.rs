//! `blyan-node bench-storage`: latency of synced block commits at several block sizes.
//!
//! Each size gets fresh databases in a temporary directory under `dir`, a short warm-up, then
//! `blocks` timed commits of one block holding one incompressible transaction of that size.
//! Disks here are shared and noisy, so two baselines are measured in the same run: the floor
//! (append the encoded block to a plain file and `fdatasync`), interleaved commit by commit with
//! ours, and then, alone so that its background flushes cannot slow ours, a naive RocksDB
//! (default options, the encoded block inline, one synced put). Compare within one run.

use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::RngCore;
use serde::Serialize;

use crate::block::Block;
use crate::storage::{Storage, StorageConfig, StorageError};

/// Latency figures of one writer, in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// Figures for one block size: ours and the two baselines of the same run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizeReport {
    pub block_bytes: u64,
    pub blocks: u64,
    /// `Storage::commit_block`.
    pub ours: Latency,
    /// RocksDB with default options, block inline, one synced put.
    pub naive_rocksdb: Latency,
    /// Append to a plain file and `fdatasync`: what the disk allows.
    pub fdatasync_floor: Latency,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("baseline: {0}")]
    Baseline(String),
    #[error("temporary directory under {path}: {source}")]
    TempDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Parses sizes such as `1KiB`, `64KiB`, `1MiB` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1024, 64KiB or 1MiB"))?;
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KiB or MiB)"
            ))
        }
    };
    let bytes = number * multiplier;
    if bytes == 0 || bytes > 16 << 20 {
        return Err(format!("{text:?}: block size must be 1 B to 16 MiB"));
    }
    Ok(bytes)
}

/// Runs one size; `progress` is called after each commit with the number done.
pub fn run_size(
    dir: &Path,
    config: &StorageConfig,
    block_bytes: u64,
    blocks: u64,
    mut progress: impl FnMut(u64),
) -> Result<SizeReport, BenchError> {
    let temporary = tempfile::Builder::new()
        .prefix("blyan-bench-")
        .tempdir_in(dir)
        .map_err(|source| BenchError::TempDir {
            path: dir.to_path_buf(),
            source,
        })?;
    let storage = Storage::open(&temporary.path().join("ours"), config)?;
    let floor_path = temporary.path().join("floor.log");
    let mut floor = std::fs::File::create(&floor_path)
        .map_err(|error| BenchError::Baseline(error.to_string()))?;
    let mut payload = vec![0u8; block_bytes as usize];
    rand::thread_rng().fill_bytes(&mut payload);
    let warm_up = (blocks / 10).clamp(1, 20);
    let new_histogram = || Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let (mut ours, mut baseline, mut raw) = (new_histogram(), new_histogram(), new_histogram());
    let mut encoded_blocks = Vec::new();
    for index in 0..warm_up + blocks {
        let tip = storage.tip();
        let stamp = 8.min(payload.len());
        payload[..stamp].copy_from_slice(&index.to_be_bytes()[..stamp]);
        let block = Block::new(
            "bench",
            tip.height + 1,
            index,
            tip.hash,
            tip.hash,
            vec![payload.clone()],
        );
        let begin = Instant::now();
        storage.commit_block(&block, &[])?;
        let ours_us = begin.elapsed().as_micros() as u64;
        let encoded = block.encode();
        let begin = Instant::now();
        std::io::Write::write_all(&mut floor, &encoded)
            .and_then(|()| floor.sync_data())
            .map_err(|error| BenchError::Baseline(error.to_string()))?;
        let floor_us = begin.elapsed().as_micros() as u64;
        if index >= warm_up {
            ours.record(ours_us.max(1)).expect("histogram auto-resizes");
            raw.record(floor_us.max(1)).expect("histogram auto-resizes");
            progress(index - warm_up + 1);
        }
        if encoded_blocks.len() < 2 {
            encoded_blocks.push(encoded);
        }
    }
    drop(storage);
    let naive = rocksdb::DB::open_default(temporary.path().join("naive"))
        .map_err(|error| BenchError::Baseline(error.to_string()))?;
    let mut synced = rocksdb::WriteOptions::default();
    synced.set_sync(true);
    for index in 0..warm_up + blocks {
        let value = &encoded_blocks[(index % 2) as usize];
        let begin = Instant::now();
        naive
            .put_opt(index.to_be_bytes(), value, &synced)
            .map_err(|error| BenchError::Baseline(error.to_string()))?;
        if index >= warm_up {
            baseline
                .record((begin.elapsed().as_micros() as u64).max(1))
                .expect("histogram auto-resizes");
        }
    }
    Ok(SizeReport {
        block_bytes,
        blocks,
        ours: Latency::of(&ours),
        naive_rocksdb: Latency::of(&baseline),
        fdatasync_floor: Latency::of(&raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("64kib"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn a_short_run_reports_ordered_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let report = run_size(dir.path(), &StorageConfig::default(), 4096, 20, |done| {
            seen = done
        })
        .unwrap();
        assert_eq!(seen, 20);
        assert_eq!(report.blocks, 20);
        for latency in [&report.ours, &report.naive_rocksdb, &report.fdatasync_floor] {
            assert!(
                latency.p50_us > 0
                    && latency.p50_us <= latency.p99_us
                    && latency.p99_us <= latency.max_us,
                "{latency:?}"
            );
        }
    }
}
