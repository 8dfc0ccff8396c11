//! RocksDB checkpoints under `HOME/checkpoints/<height>`, with pruning by retention.
//!
//! A checkpoint is a consistent, openable copy of the database made of hard links (cheap on
//! the same filesystem). It is the unit of snapshots and, later, of state sync.

use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use serde::Serialize;

use super::{Storage, StorageError};

/// A checkpoint that was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointInfo {
    pub height: u64,
    pub path: PathBuf,
    /// Older checkpoints removed by the retention setting.
    pub pruned: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Storage {
    /// Creates a checkpoint of the current tip under `dir/<height>` and prunes old ones.
    pub fn create_checkpoint(&self, dir: &Path) -> Result<CheckpointInfo, StorageError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Hold the tip lock so that no commit lands between reading the height and linking.
        let tip = self.tip.lock().expect("tip lock poisoned");
        let path = dir.join(tip.height.to_string());
        if path.exists() {
            return Err(StorageError::CheckpointExists { path });
        }
        let staging = dir.join(format!(".{}.partial", tip.height));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        Checkpoint::new(self.db())?.create_checkpoint(&staging)?;
        self.segments
            .checkpoint_into(&staging, self.segment_tail()?)?;
        // The rename makes a checkpoint appear whole or not at all.
        std::fs::rename(&staging, &path).map_err(io(&path))?;
        let height = tip.height;
        drop(tip);
        let pruned = prune(dir, self.config().checkpoint_retention)?;
        Ok(CheckpointInfo {
            height,
            path,
            pruned,
        })
    }
}

/// Checkpoint heights present in `dir`, ascending. Other entries are ignored.
pub fn list(dir: &Path) -> Result<Vec<u64>, StorageError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut heights = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if let Some(height) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u64>().ok())
        {
            heights.push(height);
        }
    }
    heights.sort_unstable();
    Ok(heights)
}

fn prune(dir: &Path, retention: u32) -> Result<Vec<PathBuf>, StorageError> {
    if retention == 0 {
        return Ok(Vec::new());
    }
    let heights = list(dir)?;
    let excess = heights.len().saturating_sub(retention as usize);
    let mut pruned = Vec::new();
    for height in &heights[..excess] {
        let path = dir.join(height.to_string());
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
        pruned.push(path);
    }
    Ok(pruned)
}
