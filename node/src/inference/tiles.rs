//! Experts as verified tiles.
//!
//! An expert is one safetensors file. It is cut into tiles of at most [`MAX_TILE_BYTES`]; each
//! tile is addressed by its BLAKE3 hash, and the tiles' Merkle root (with the file's own hash
//! and size) is what `register_expert` puts on chain. On disk an expert is two files in
//! `HOME/experts/`: `<content>.safetensors` (the weights, memory-mapped when loaded) and
//! `<content>.json` (its [`ExpertManifest`]: name, layer, tile size and tile hashes). Every
//! load from disk and every tile from a peer is checked against those hashes; a tile that does
//! not match is refused and fetched again from a peer.
//!
//! The manifest lives beside the weights rather than in RocksDB: `blyan-node experts generate`
//! writes experts while the node may be running, and RocksDB admits one process per database.
//! Both files are written to a temporary name, synced, then renamed, so a crash leaves either
//! the old state or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::block::Hash;

/// The largest tile: what one peer request carries.
pub const MAX_TILE_BYTES: u64 = 4 * 1024 * 1024;
/// The tile size experts are cut into unless told otherwise.
pub const DEFAULT_TILE_BYTES: u64 = 1024 * 1024;
/// The largest expert file this store accepts (and the most tiles one may have).
pub const MAX_EXPERT_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "expert {content}: tile {index} does not match its hash (expected {expected}, got {got})"
    )]
    Mismatch {
        content: Hash,
        index: u32,
        expected: Hash,
        got: Hash,
    },
    #[error("expert {0}: not in the local store")]
    Missing(Hash),
    #[error("expert manifest: {0}")]
    Manifest(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TileError + '_ {
    move |source| TileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// BLAKE3 of some bytes, as the chain's 32-byte hash type.
pub fn hash_bytes(bytes: &[u8]) -> Hash {
    Hash(*blake3::hash(bytes).as_bytes())
}

/// The Merkle root of tile hashes: leaves are the tile hashes, a parent is
/// `BLAKE3(0x01 || left || right)`, an odd last node moves up unchanged, and the root of no
/// tiles is `BLAKE3(0x00)`.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return hash_bytes(&[0]);
    }
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(&[1]);
                    hasher.update(&left.0);
                    hasher.update(&right.0);
                    Hash(*hasher.finalize().as_bytes())
                }
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

/// What the chain and the store know of an expert's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertManifest {
    /// `MODEL/base` or `MODEL/l<layer>/e<index>`.
    pub name: String,
    pub layer: u32,
    /// BLAKE3 of the whole safetensors file.
    pub content_hash: Hash,
    pub bytes: u64,
    pub tile_bytes: u64,
    pub tiles: Vec<Hash>,
    pub tiles_root: Hash,
}

impl ExpertManifest {
    /// Cuts `content` into tiles and hashes them.
    pub fn of(name: &str, layer: u32, content: &[u8], tile_bytes: u64) -> ExpertManifest {
        assert!(
            (1..=MAX_TILE_BYTES).contains(&tile_bytes),
            "tile size {tile_bytes} out of range"
        );
        let tiles: Vec<Hash> = content
            .chunks(tile_bytes as usize)
            .map(hash_bytes)
            .collect();
        ExpertManifest {
            name: name.to_string(),
            layer,
            content_hash: hash_bytes(content),
            bytes: content.len() as u64,
            tile_bytes,
            tiles_root: merkle_root(&tiles),
            tiles,
        }
    }

    /// Checks the manifest's own consistency: tile count for its size, tile size within
    /// bounds, and its Merkle root over its tile hashes.
    pub fn check(&self) -> Result<(), TileError> {
        let bad = |why: String| Err(TileError::Manifest(format!("{}: {why}", self.name)));
        if !(1..=MAX_TILE_BYTES).contains(&self.tile_bytes) {
            return bad(format!(
                "tile_bytes {} is not between 1 and {MAX_TILE_BYTES}",
                self.tile_bytes
            ));
        }
        if self.bytes == 0 || self.bytes > MAX_EXPERT_BYTES {
            return bad(format!(
                "bytes {} is not between 1 and {MAX_EXPERT_BYTES}",
                self.bytes
            ));
        }
        let expected = self.bytes.div_ceil(self.tile_bytes);
        if self.tiles.len() as u64 != expected {
            return bad(format!(
                "{} tiles listed, {expected} expected for {} bytes in tiles of {}",
                self.tiles.len(),
                self.bytes,
                self.tile_bytes
            ));
        }
        let root = merkle_root(&self.tiles);
        if root != self.tiles_root {
            return bad(format!(
                "tiles_root {} is not the root of its tiles ({root})",
                self.tiles_root
            ));
        }
        Ok(())
    }

    /// The byte range of tile `index` in the file.
    pub fn range(&self, index: u32) -> std::ops::Range<usize> {
        let start = index as u64 * self.tile_bytes;
        let end = (start + self.tile_bytes).min(self.bytes);
        start as usize..end as usize
    }
}

/// An expert's weights mapped from disk, every tile verified.
pub struct MappedExpert {
    pub manifest: ExpertManifest,
    pub map: memmap2::Mmap,
}

/// The experts on this node's disk.
#[derive(Clone, Debug)]
pub struct ExpertStore {
    dir: PathBuf,
}

impl ExpertStore {
    /// The store under `dir` (created when missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<ExpertStore, TileError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(ExpertStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_path(&self, content: &Hash) -> PathBuf {
        self.dir.join(format!("{}.safetensors", content.to_hex()))
    }

    fn manifest_path(&self, content: &Hash) -> PathBuf {
        self.dir.join(format!("{}.json", content.to_hex()))
    }

    fn partial_path(&self, content: &Hash) -> PathBuf {
        self.dir.join(format!("{}.part", content.to_hex()))
    }

    /// Writes `path` through a temporary file, synced and renamed into place.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TileError> {
        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(bytes).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        fs::rename(&temporary, path).map_err(io(path))?;
        Ok(())
    }

    /// Stores a whole expert (the generator, or a node importing a checkpoint).
    pub fn put(
        &self,
        name: &str,
        layer: u32,
        content: &[u8],
        tile_bytes: u64,
    ) -> Result<ExpertManifest, TileError> {
        let manifest = ExpertManifest::of(name, layer, content, tile_bytes);
        manifest.check()?;
        Self::write_atomic(&self.data_path(&manifest.content_hash), content)?;
        self.put_manifest(&manifest)?;
        Ok(manifest)
    }

    fn put_manifest(&self, manifest: &ExpertManifest) -> Result<(), TileError> {
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
        Self::write_atomic(&self.manifest_path(&manifest.content_hash), &json)
    }

    /// The manifest of a stored expert, if any (checked for consistency).
    pub fn manifest(&self, content: &Hash) -> Result<Option<ExpertManifest>, TileError> {
        let path = self.manifest_path(content);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(&path)(error)),
        };
        let manifest: ExpertManifest = serde_json::from_slice(&bytes)
            .map_err(|error| TileError::Manifest(format!("{}: {error}", path.display())))?;
        if manifest.content_hash != *content {
            return Err(TileError::Manifest(format!(
                "{}: names content {} instead of {content}",
                path.display(),
                manifest.content_hash
            )));
        }
        manifest.check()?;
        Ok(Some(manifest))
    }

    /// Every stored expert's manifest (files that are not manifests are skipped).
    pub fn list(&self) -> Result<Vec<ExpertManifest>, TileError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(content) = Hash::from_hex(stem) else {
                continue;
            };
            if let Some(manifest) = self.manifest(&content)? {
                if self.data_path(&content).exists() {
                    out.push(manifest);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Maps a stored expert and verifies every tile against `manifest` (read straight from
    /// the page cache, no copy). The first tile that does not match is reported.
    pub fn load(&self, manifest: &ExpertManifest) -> Result<MappedExpert, TileError> {
        let path = self.data_path(&manifest.content_hash);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(TileError::Missing(manifest.content_hash))
            }
            Err(error) => return Err(io(&path)(error)),
        };
        let length = file.metadata().map_err(io(&path))?.len();
        if length != manifest.bytes {
            return Err(TileError::Mismatch {
                content: manifest.content_hash,
                index: (length.min(manifest.bytes) / manifest.tile_bytes) as u32,
                expected: manifest.tiles_root,
                got: hash_bytes(&length.to_be_bytes()),
            });
        }
        // SAFETY: the file is only ever replaced by rename (never truncated in place) by this
        // node; a tile rewritten in place by `repair_tile` is re-verified before use.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(&path))?;
        verify_tiles(manifest, &map)?;
        Ok(MappedExpert {
            manifest: manifest.clone(),
            map,
        })
    }

    /// One verified tile's bytes, to serve a peer (a tile that fails its hash is not served).
    pub fn read_tile(&self, manifest: &ExpertManifest, index: u32) -> Result<Vec<u8>, TileError> {
        if index as usize >= manifest.tiles.len() {
            return Err(TileError::Manifest(format!(
                "{}: no tile {index} (it has {})",
                manifest.name,
                manifest.tiles.len()
            )));
        }
        let path = self.data_path(&manifest.content_hash);
        let file = File::open(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => TileError::Missing(manifest.content_hash),
            _ => io(&path)(error),
        })?;
        let range = manifest.range(index);
        let mut bytes = vec![0u8; range.len()];
        file.read_exact_at(&mut bytes, range.start as u64)
            .map_err(io(&path))?;
        check_tile(manifest, index, &bytes)?;
        Ok(bytes)
    }

    /// Writes one verified tile into a stored expert's file in place (a tile found corrupt).
    pub fn repair_tile(
        &self,
        manifest: &ExpertManifest,
        index: u32,
        bytes: &[u8],
    ) -> Result<(), TileError> {
        check_tile(manifest, index, bytes)?;
        let path = self.data_path(&manifest.content_hash);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all_at(bytes, manifest.range(index).start as u64)
            .map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        Ok(())
    }

    /// Starts assembling an expert fetched from peers (a `.part` file of its full size).
    pub fn begin_partial(&self, manifest: &ExpertManifest) -> Result<PartialExpert, TileError> {
        manifest.check()?;
        let path = self.partial_path(&manifest.content_hash);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len(manifest.bytes).map_err(io(&path))?;
        Ok(PartialExpert {
            manifest: manifest.clone(),
            path,
            file,
            have: vec![false; manifest.tiles.len()],
        })
    }

    /// Moves a complete partial expert into the store, after checking the whole file's hash.
    pub fn finish_partial(&self, partial: PartialExpert) -> Result<(), TileError> {
        if let Some(index) = partial.have.iter().position(|have| !have) {
            return Err(TileError::Manifest(format!(
                "{}: tile {index} is still missing",
                partial.manifest.name
            )));
        }
        partial.file.sync_all().map_err(io(&partial.path))?;
        let bytes = fs::read(&partial.path).map_err(io(&partial.path))?;
        let got = hash_bytes(&bytes);
        if got != partial.manifest.content_hash {
            return Err(TileError::Mismatch {
                content: partial.manifest.content_hash,
                index: 0,
                expected: partial.manifest.content_hash,
                got,
            });
        }
        let target = self.data_path(&partial.manifest.content_hash);
        fs::rename(&partial.path, &target).map_err(io(&target))?;
        self.put_manifest(&partial.manifest)
    }
}

/// An expert being assembled from tiles.
pub struct PartialExpert {
    pub manifest: ExpertManifest,
    path: PathBuf,
    file: File,
    have: Vec<bool>,
}

impl PartialExpert {
    /// Writes a tile after checking it against its hash.
    pub fn put_tile(&mut self, index: u32, bytes: &[u8]) -> Result<(), TileError> {
        check_tile(&self.manifest, index, bytes)?;
        self.file
            .write_all_at(bytes, self.manifest.range(index).start as u64)
            .map_err(io(&self.path))?;
        self.have[index as usize] = true;
        Ok(())
    }

    pub fn missing(&self) -> Vec<u32> {
        (0..self.have.len() as u32)
            .filter(|index| !self.have[*index as usize])
            .collect()
    }
}

fn check_tile(manifest: &ExpertManifest, index: u32, bytes: &[u8]) -> Result<(), TileError> {
    let Some(expected) = manifest.tiles.get(index as usize) else {
        return Err(TileError::Manifest(format!(
            "{}: no tile {index}",
            manifest.name
        )));
    };
    let got = hash_bytes(bytes);
    if bytes.len() != manifest.range(index).len() || got != *expected {
        return Err(TileError::Mismatch {
            content: manifest.content_hash,
            index,
            expected: *expected,
            got,
        });
    }
    Ok(())
}

/// Checks every tile of `content` against the manifest.
pub fn verify_tiles(manifest: &ExpertManifest, content: &[u8]) -> Result<(), TileError> {
    for index in 0..manifest.tiles.len() as u32 {
        check_tile(manifest, index, &content[manifest.range(index)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_changes_with_any_tile_and_checks_consistency() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let manifest = ExpertManifest::of("m/l0/e0", 0, &content, 1024);
        assert_eq!(manifest.tiles.len(), 10);
        manifest.check().unwrap();
        let mut changed = content.clone();
        changed[5000] ^= 1;
        let other = ExpertManifest::of("m/l0/e0", 0, &changed, 1024);
        assert_ne!(other.tiles_root, manifest.tiles_root);
        assert_eq!(other.tiles[..4], manifest.tiles[..4]);
        let mut forged = manifest.clone();
        forged.tiles[3] = other.tiles[4];
        let error = forged.check().unwrap_err().to_string();
        assert!(error.contains("tiles_root"), "{error}");
        let mut short = manifest.clone();
        short.tiles.pop();
        assert!(short.check().unwrap_err().to_string().contains("9 tiles"));
    }

    #[test]
    fn a_tampered_tile_on_disk_is_refused_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExpertStore::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let manifest = store.put("m/l0/e1", 0, &content, 1000).unwrap();
        assert_eq!(store.list().unwrap(), vec![manifest.clone()]);
        store.load(&manifest).unwrap();
        // Flip one byte of tile 2 on disk.
        let path = store.data_path(&manifest.content_hash);
        let mut bytes = fs::read(&path).unwrap();
        bytes[2500] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        match store.load(&manifest) {
            Err(TileError::Mismatch { index, .. }) => assert_eq!(index, 2),
            other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
        }
        assert!(
            store.read_tile(&manifest, 2).is_err(),
            "a bad tile is not served"
        );
        // A wrong tile is refused by repair too; the right one fixes the file.
        assert!(store.repair_tile(&manifest, 2, &bytes[2000..3000]).is_err());
        store
            .repair_tile(&manifest, 2, &content[2000..3000])
            .unwrap();
        let loaded = store.load(&manifest).unwrap();
        assert_eq!(&loaded.map[..], &content[..]);
    }

    #[test]
    fn partial_experts_assemble_only_from_matching_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let source = ExpertStore::open(dir.path().join("a")).unwrap();
        let target = ExpertStore::open(dir.path().join("b")).unwrap();
        let content: Vec<u8> = (0..3500u32).map(|i| (i % 13) as u8).collect();
        let manifest = source.put("m/base", 0, &content, 1000).unwrap();
        let mut partial = target.begin_partial(&manifest).unwrap();
        assert_eq!(partial.missing(), vec![0, 1, 2, 3]);
        assert!(partial.put_tile(1, &[0u8; 1000]).is_err());
        for index in [3, 0, 2] {
            partial
                .put_tile(index, &source.read_tile(&manifest, index).unwrap())
                .unwrap();
        }
        assert_eq!(partial.missing(), vec![1]);
        partial
            .put_tile(1, &source.read_tile(&manifest, 1).unwrap())
            .unwrap();
        target.finish_partial(partial).unwrap();
        assert_eq!(
            target.load(&manifest).unwrap().map[..],
            content[..],
            "assembled expert"
        );
        assert_eq!(target.list().unwrap().len(), 1);
    }
}
