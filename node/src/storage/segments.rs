//! Block bodies of large blocks in append-only segment files, outside the LSM tree.
//!
//! A large block is appended to the active segment and `fdatasync`ed; then the RocksDB batch
//! that commits the block stores only a 17-byte reference and the new end of the segment (the
//! tail). A crash between the two leaves unreferenced bytes past the tail, which the next open
//! truncates. So a block body is written exactly once, memtables never hold megabytes, and no
//! flush or compaction ever competes with the next commit's sync.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StorageError;

/// A segment is closed once it holds this many bytes (a block may overshoot it once).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// First byte of a reference value; encoded blocks start with their encoding version (1).
pub const REFERENCE_TAG: u8 = 0xB5;
const REFERENCE_BYTES: usize = 1 + 4 + 8 + 4;

/// Where a block body lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: u32,
    pub offset: u64,
    pub length: u32,
}

impl Location {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(REFERENCE_BYTES);
        bytes.push(REFERENCE_TAG);
        bytes.extend_from_slice(&self.segment.to_be_bytes());
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        bytes.extend_from_slice(&self.length.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Location> {
        if bytes.len() != REFERENCE_BYTES || bytes[0] != REFERENCE_TAG {
            return None;
        }
        Some(Location {
            segment: u32::from_be_bytes(bytes[1..5].try_into().ok()?),
            offset: u64::from_be_bytes(bytes[5..13].try_into().ok()?),
            length: u32::from_be_bytes(bytes[13..17].try_into().ok()?),
        })
    }

    /// The tail after this body: `(segment, end offset)`.
    pub fn end(&self) -> (u32, u64) {
        (self.segment, self.offset + u64::from(self.length))
    }
}

/// Encodes a tail for the metadata family.
pub fn encode_tail(tail: (u32, u64)) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&tail.0.to_be_bytes());
    bytes[4..].copy_from_slice(&tail.1.to_be_bytes());
    bytes
}

pub fn decode_tail(bytes: &[u8]) -> Option<(u32, u64)> {
    if bytes.len() != 12 {
        return None;
    }
    Some((
        u32::from_be_bytes(bytes[..4].try_into().ok()?),
        u64::from_be_bytes(bytes[4..].try_into().ok()?),
    ))
}

struct Active {
    segment: u32,
    file: File,
    offset: u64,
}

/// The segment files of one database, under `DB/segments/`.
pub struct Segments {
    dir: PathBuf,
    active: Mutex<Active>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08}.seg"))
}

fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))
}

impl Segments {
    /// Opens the segments of a database whose committed tail is `tail`; bytes past it (a crash
    /// between a body write and its commit) are cut off.
    pub fn open(db_dir: &Path, tail: Option<(u32, u64)>) -> Result<Segments, StorageError> {
        let dir = db_dir.join("segments");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let (segment, offset) = tail.unwrap_or((0, 0));
        let path = segment_path(&dir, segment);
        let file = open_for_append(&path)?;
        let length = file.metadata().map_err(io(&path))?.len();
        if length < offset {
            return Err(StorageError::Corrupt {
                path: path.clone(),
                detail: format!("segment holds {length} bytes but {offset} are committed"),
            });
        }
        if length > offset {
            file.set_len(offset).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        Ok(Segments {
            dir,
            active: Mutex::new(Active {
                segment,
                file,
                offset,
            }),
        })
    }

    /// Appends `bytes` durably (unless `sync` is false) and returns where they are.
    pub fn append(&self, bytes: &[u8], sync: bool) -> Result<Location, StorageError> {
        let length = u32::try_from(bytes.len()).expect("blocks are far below 4 GiB");
        let mut active = self.active.lock().expect("segment lock poisoned");
        if active.offset > 0 && active.offset + u64::from(length) > SEGMENT_BYTES {
            let next = active.segment + 1;
            let path = segment_path(&self.dir, next);
            let file = open_for_append(&path)?;
            file.set_len(0).map_err(io(&path))?;
            // The directory entry of the new segment must be durable before a commit names it.
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io(&self.dir))?;
            *active = Active {
                segment: next,
                file,
                offset: 0,
            };
        }
        let path = segment_path(&self.dir, active.segment);
        active
            .file
            .write_all_at(bytes, active.offset)
            .map_err(io(&path))?;
        if sync {
            active.file.sync_data().map_err(io(&path))?;
        }
        let location = Location {
            segment: active.segment,
            offset: active.offset,
            length,
        };
        active.offset += u64::from(length);
        Ok(location)
    }

    /// Reads a body back.
    pub fn read(&self, location: Location) -> Result<Vec<u8>, StorageError> {
        let path = segment_path(&self.dir, location.segment);
        let file = File::open(&path).map_err(io(&path))?;
        let mut bytes = vec![0u8; location.length as usize];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(io(&path))?;
        Ok(bytes)
    }

    /// Copies the committed part of every segment into `dest/segments`: closed segments as hard
    /// links (they never change), the active one as a copy up to `tail`.
    pub fn checkpoint_into(
        &self,
        dest: &Path,
        tail: Option<(u32, u64)>,
    ) -> Result<(), StorageError> {
        let target = dest.join("segments");
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        let Some((active, offset)) = tail else {
            return Ok(());
        };
        for segment in 0..active {
            let source = segment_path(&self.dir, segment);
            if source.exists() {
                std::fs::hard_link(&source, segment_path(&target, segment)).map_err(io(&source))?;
            }
        }
        let source = segment_path(&self.dir, active);
        let mut bytes = vec![0u8; offset as usize];
        File::open(&source)
            .and_then(|file| file.read_exact_at(&mut bytes, 0))
            .map_err(io(&source))?;
        let copy = segment_path(&target, active);
        let file = File::create(&copy).map_err(io(&copy))?;
        file.write_all_at(&bytes, 0).map_err(io(&copy))?;
        file.sync_all().map_err(io(&copy))?;
        Ok(())
    }
}
