//! The whole chain state as an ordered key-value map in memory, written through to RocksDB with
//! each block, and its Merkle root (the app hash).
//!
//! Keys fall into [`BUCKETS`] buckets by the first two bytes of their SHA-256. A bucket's hash is
//! SHA-256 over its entries in key order; the root is a binary Merkle tree over the bucket
//! hashes. So the root depends only on the set of entries, never on the order they were written
//! in, a block re-hashes only the buckets it touched, and a state snapshot can be cut into
//! chunks of whole buckets that are each checked against the bucket hashes, which are checked
//! against the root.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::block::Hash;

/// Number of buckets; a power of two.
pub const BUCKETS: usize = 1024;

/// The bucket of a key.
pub fn bucket_of(key: &[u8]) -> usize {
    let digest = Sha256::digest(key);
    (usize::from(digest[0]) << 8 | usize::from(digest[1])) % BUCKETS
}

/// Hash of one bucket's entries (in key order).
pub fn bucket_hash<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(b"blyan/state-bucket/v1");
    for (key, value) in entries {
        hasher.update((key.len() as u32).to_be_bytes());
        hasher.update(key);
        hasher.update((value.len() as u32).to_be_bytes());
        hasher.update(value);
    }
    Hash(hasher.finalize().into())
}

/// The Merkle root over the bucket hashes.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    assert!(
        leaves.len().is_power_of_two(),
        "bucket count is a power of two"
    );
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let mut hasher = Sha256::new();
                hasher.update([1u8]);
                hasher.update(pair[0].0);
                hasher.update(pair[1].0);
                Hash(hasher.finalize().into())
            })
            .collect();
    }
    level[0]
}

/// Writes of one block (or one transaction) over the committed state: `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Some of the writes, by reference.
type WriteRefs<'a> = Vec<(&'a Vec<u8>, &'a Option<Vec<u8>>)>;

/// The committed state.
#[derive(Clone)]
pub struct Store {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    bucket_keys: Vec<BTreeSet<Vec<u8>>>,
    bucket_hashes: Vec<Hash>,
    root: Hash,
}

impl Default for Store {
    fn default() -> Self {
        Store::from_entries(std::iter::empty())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "Store({} keys, root {})",
            self.map.len(),
            self.root
        )
    }
}

impl Store {
    /// A store holding `entries` (in any order).
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Store {
        let mut store = Store {
            map: BTreeMap::new(),
            bucket_keys: vec![BTreeSet::new(); BUCKETS],
            bucket_hashes: Vec::new(),
            root: Hash::ZERO,
        };
        for (key, value) in entries {
            store.bucket_keys[bucket_of(&key)].insert(key.clone());
            store.map.insert(key, value);
        }
        store.bucket_hashes = (0..BUCKETS).map(|b| store.compute_bucket(b, &[])).collect();
        store.root = merkle_root(&store.bucket_hashes);
        store
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The app hash of this state.
    pub fn root(&self) -> Hash {
        self.root
    }

    pub fn bucket_hashes(&self) -> &[Hash] {
        &self.bucket_hashes
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.map
            .range(prefix.to_vec()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }

    /// Every entry of a bucket, in key order.
    pub fn bucket_entries(&self, bucket: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.bucket_keys[bucket]
            .iter()
            .map(|key| (key.clone(), self.map[key].clone()))
            .collect()
    }

    /// A bucket's hash with `writes` (all of them in this bucket) applied over its entries.
    fn compute_bucket(&self, bucket: usize, writes: &[(&Vec<u8>, &Option<Vec<u8>>)]) -> Hash {
        let mut merged: BTreeMap<&[u8], &[u8]> = self.bucket_keys[bucket]
            .iter()
            .map(|key| (key.as_slice(), self.map[key].as_slice()))
            .collect();
        for (key, value) in writes {
            match value {
                Some(value) => merged.insert(key.as_slice(), value.as_slice()),
                None => merged.remove(key.as_slice()),
            };
        }
        bucket_hash(merged.into_iter())
    }

    /// The root the state would have after `writes`, and the new hashes of the touched buckets.
    /// Each key is hashed to its bucket once.
    pub fn root_after(&self, writes: &Writes) -> (Hash, Vec<(usize, Hash)>) {
        if writes.is_empty() {
            return (self.root, Vec::new());
        }
        let mut by_bucket: BTreeMap<usize, WriteRefs> = BTreeMap::new();
        for (key, value) in writes {
            by_bucket
                .entry(bucket_of(key))
                .or_default()
                .push((key, value));
        }
        let updates: Vec<(usize, Hash)> = by_bucket
            .into_iter()
            .map(|(bucket, writes)| (bucket, self.compute_bucket(bucket, &writes)))
            .collect();
        let mut leaves = self.bucket_hashes.clone();
        for (bucket, hash) in &updates {
            leaves[*bucket] = *hash;
        }
        (merkle_root(&leaves), updates)
    }

    /// Applies writes whose root was computed by [`Store::root_after`].
    pub fn apply(&mut self, writes: Writes, root: Hash, updates: &[(usize, Hash)]) {
        for (key, value) in writes {
            let bucket = bucket_of(&key);
            match value {
                Some(value) => {
                    self.bucket_keys[bucket].insert(key.clone());
                    self.map.insert(key, value);
                }
                None => {
                    self.bucket_keys[bucket].remove(&key);
                    self.map.remove(&key);
                }
            }
        }
        for (bucket, hash) in updates {
            self.bucket_hashes[*bucket] = *hash;
        }
        self.root = root;
        debug_assert_eq!(self.root, merkle_root(&self.bucket_hashes));
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }
}

/// Reads through pending writes to the committed store.
pub struct Overlay<'a> {
    pub base: &'a Store,
    pub writes: Writes,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a Store) -> Overlay<'a> {
        Overlay {
            base,
            writes: Writes::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(value) => value.clone(),
            None => self.base.get(key).map(<[u8]>::to_vec),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Entries under `prefix` as the overlay sees them, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .scan(prefix)
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect();
        for (key, value) in self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
        {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().collect()
    }

    /// A savepoint: the writes so far (restore with [`Overlay::rollback`]).
    pub fn savepoint(&self) -> Writes {
        self.writes.clone()
    }

    pub fn rollback(&mut self, savepoint: Writes) {
        self.writes = savepoint;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn root_after_matches_a_store_built_from_scratch_and_apply_keeps_it() {
        let mut store = Store::from_entries((0u8..50).map(|i| (vec![b'k', i], vec![i; 3])));
        let mut writes = Writes::new();
        writes.insert(vec![b'k', 3], None);
        writes.insert(vec![b'k', 7], Some(vec![9]));
        writes.insert(b"new".to_vec(), Some(vec![1, 2]));
        let (root, updates) = store.root_after(&writes);
        let expected = Store::from_entries(
            (0u8..50)
                .filter(|i| *i != 3)
                .map(|i| (vec![b'k', i], if i == 7 { vec![9] } else { vec![i; 3] }))
                .chain([(b"new".to_vec(), vec![1, 2])]),
        );
        assert_eq!(root, expected.root());
        store.apply(writes, root, &updates);
        assert_eq!(store.root(), expected.root());
        assert_eq!(store.get(b"new"), Some(&[1u8, 2][..]));
        assert_eq!(store.get(&[b'k', 3]), None);
    }

    #[test]
    fn overlay_scan_merges_writes_and_deletes() {
        let store = Store::from_entries([
            (b"d/a".to_vec(), vec![1]),
            (b"d/b".to_vec(), vec![2]),
            (b"e/x".to_vec(), vec![3]),
        ]);
        let mut overlay = Overlay::new(&store);
        overlay.delete(b"d/a".to_vec());
        overlay.put(b"d/c".to_vec(), vec![4]);
        let keys: Vec<Vec<u8>> = overlay.scan(b"d/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"d/b".to_vec(), b"d/c".to_vec()]);
    }

    proptest! {
        /// The app hash is a function of the state only: the same entries written in any order,
        /// in any number of blocks, give the same root.
        #[test]
        fn root_is_independent_of_insertion_order(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..6),
                proptest::collection::vec(any::<u8>(), 0..6),
                0..40,
            ),
            seed in any::<u64>(),
            split in 0usize..40,
        ) {
            let all: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().collect();
            let direct = Store::from_entries(all.clone());
            let mut shuffled = all.clone();
            let mut state = seed | 1;
            for index in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(index, (state % (index as u64 + 1)) as usize);
            }
            let mut incremental = Store::default();
            let split = split.min(shuffled.len());
            for part in [&shuffled[..split], &shuffled[split..]] {
                let writes: Writes = part.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
                let (root, updates) = incremental.root_after(&writes);
                incremental.apply(writes, root, &updates);
            }
            prop_assert_eq!(incremental.root(), direct.root());
            let reversed = Store::from_entries(all.into_iter().rev());
            prop_assert_eq!(reversed.root(), direct.root());
        }
    }
}
