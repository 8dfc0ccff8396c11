use super::*;

fn open(dir: &Path) -> Storage {
    Storage::open(dir, &StorageConfig::default()).expect("open storage")
}

fn next_block(storage: &Storage, txs: Vec<Vec<u8>>) -> Block {
    let tip = storage.tip();
    Block::new("test-chain", tip.height + 1, 1, tip.hash, Hash::ZERO, txs)
}

fn commit_n(storage: &Storage, count: u64) {
    for index in 0..count {
        let block = next_block(storage, vec![index.to_be_bytes().to_vec()]);
        storage.commit_block(&block, &[]).expect("commit");
    }
}

#[test]
fn committed_blocks_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hashes: Vec<Hash> = {
        let storage = open(dir.path());
        commit_n(&storage, 5);
        (1..=5)
            .map(|height| storage.block(height).unwrap().unwrap().hash())
            .collect()
    };
    let storage = open(dir.path());
    assert_eq!(storage.tip().height, 5);
    assert_eq!(storage.tip().hash, hashes[4]);
    assert_eq!(storage.chain_id().as_deref(), Some("test-chain"));
    for (index, hash) in hashes.iter().enumerate() {
        assert_eq!(storage.height_of(hash).unwrap(), Some(index as u64 + 1));
    }
    assert!(storage.block(6).unwrap().is_none());
}

#[test]
fn commit_rejects_blocks_that_do_not_extend_the_tip() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    commit_n(&storage, 2);
    let tip = storage.tip();
    let skip = Block::new("test-chain", 4, 1, tip.hash, Hash::ZERO, vec![]);
    assert!(matches!(
        storage.commit_block(&skip, &[]),
        Err(StorageError::NotNext { latest: 2, got: 4 })
    ));
    let orphan = Block::new("test-chain", 3, 1, Hash::digest(b"x"), Hash::ZERO, vec![]);
    assert!(matches!(
        storage.commit_block(&orphan, &[]),
        Err(StorageError::WrongParent { height: 3, .. })
    ));
    let other_chain = Block::new("other", 3, 1, tip.hash, Hash::ZERO, vec![]);
    assert!(matches!(
        storage.commit_block(&other_chain, &[]),
        Err(StorageError::WrongChain { .. })
    ));
    assert_eq!(storage.tip(), tip, "a refused commit changes nothing");
}

#[test]
fn state_changes_land_with_their_block() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let block = next_block(&storage, vec![]);
    let changes = vec![
        StateChange::Put(b"alice".to_vec(), b"100".to_vec()),
        StateChange::Put(b"bob".to_vec(), b"5".to_vec()),
    ];
    storage.commit_block(&block, &changes).unwrap();
    let block = next_block(&storage, vec![]);
    storage
        .commit_block(&block, &[StateChange::Delete(b"bob".to_vec())])
        .unwrap();
    assert_eq!(storage.state_get(b"alice").unwrap(), Some(b"100".to_vec()));
    assert_eq!(storage.state_get(b"bob").unwrap(), None);
}

#[test]
fn consensus_records_and_experts_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.consensus_put(b"last_signed", b"h1r0").unwrap();
    assert_eq!(
        storage.consensus_get(b"last_signed").unwrap(),
        Some(b"h1r0".to_vec())
    );
    let hash = storage.put_expert("layer0.expert1", b"weights").unwrap();
    assert_eq!(hash, Hash::digest(b"weights"));
    assert_eq!(storage.expert(&hash).unwrap(), Some(b"weights".to_vec()));
    assert_eq!(storage.expert_hash("layer0.expert1").unwrap(), Some(hash));
}

#[test]
fn large_blocks_round_trip_through_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let body = vec![7u8; 1 << 20];
    for _ in 0..20 {
        let block = next_block(&storage, vec![body.clone()]);
        storage.commit_block(&block, &[]).unwrap();
    }
    storage.flush().unwrap();
    drop(storage);
    let storage = open(dir.path());
    for height in 1..=20 {
        assert_eq!(storage.block(height).unwrap().unwrap().txs[0], body);
    }
    let segment_files = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(
        segment_files >= 1,
        "block bodies are stored in segment files"
    );
    let sst_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("sst"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum();
    assert!(
        sst_bytes < 1 << 20,
        "the LSM tree holds references, not 20 MiB of bodies ({sst_bytes} B)"
    );
}

#[test]
fn second_open_of_the_same_database_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = Storage::open(dir.path(), &StorageConfig::default());
    assert!(matches!(second, Err(StorageError::Locked { .. })));
}

#[test]
fn schema_v1_database_is_migrated_to_current() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        let storage = open(dir.path());
        commit_n(&storage, 3);
        let hash = storage.block(2).unwrap().unwrap().hash();
        schema::downgrade_for_test(&storage, 1);
        assert_eq!(storage.height_of(&hash).unwrap(), None, "v1 has no index");
        hash
    };
    let storage = open(dir.path());
    assert_eq!(storage.height_of(&hash).unwrap(), Some(2));
    let version = storage.meta_get(meta_key::SCHEMA_VERSION).unwrap().unwrap();
    assert_eq!(version, CURRENT_SCHEMA_VERSION.to_be_bytes());
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        commit_n(&storage, 1);
        schema::set_version_for_test(&storage, CURRENT_SCHEMA_VERSION + 1);
    }
    let error = Storage::open(dir.path(), &StorageConfig::default())
        .err()
        .expect("newer schema must be refused");
    assert!(
        matches!(error, StorageError::SchemaTooNew { found, .. } if found == CURRENT_SCHEMA_VERSION + 1)
    );
    assert!(error
        .to_string()
        .contains("newer than this binary supports"));
}

#[test]
fn checkpoints_open_as_databases_and_are_pruned_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        checkpoint_retention: 2,
        ..StorageConfig::default()
    };
    let storage = Storage::open(&dir.path().join("data"), &config).unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mut infos = Vec::new();
    for _ in 0..3 {
        commit_n(&storage, 2);
        infos.push(storage.create_checkpoint(&checkpoints).unwrap());
    }
    assert_eq!(checkpoint::list(&checkpoints).unwrap(), vec![4, 6]);
    assert_eq!(infos[2].pruned, vec![checkpoints.join("2")]);
    assert!(matches!(
        storage.create_checkpoint(&checkpoints),
        Err(StorageError::CheckpointExists { .. })
    ));
    let copy = Storage::open(&checkpoints.join("6"), &config).unwrap();
    assert_eq!(copy.tip(), storage.tip());
}

#[test]
fn bytes_past_the_committed_segment_tail_are_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![3u8; 64 << 10];
    {
        let storage = open(dir.path());
        for _ in 0..3 {
            let block = next_block(&storage, vec![body.clone()]);
            storage.commit_block(&block, &[]).unwrap();
        }
    }
    // A crash after a body was written but before its batch committed leaves garbage.
    let segment = dir.path().join("segments/00000000.seg");
    let committed = std::fs::metadata(&segment).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xEE; 5000]).unwrap();
    drop(file);
    let storage = open(dir.path());
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), committed);
    let block = next_block(&storage, vec![body.clone()]);
    storage.commit_block(&block, &[]).unwrap();
    for height in 1..=4 {
        assert_eq!(storage.block(height).unwrap().unwrap().txs[0], body);
    }
}

#[test]
fn segments_roll_over_and_checkpoints_carry_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir.path().join("data"));
    let body = vec![9u8; 5 << 20];
    for _ in 0..15 {
        let block = next_block(&storage, vec![body.clone()]);
        storage.commit_block(&block, &[]).unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("data/segments"))
        .unwrap()
        .count();
    assert!(
        segments >= 2,
        "75 MiB of bodies span more than one 64 MiB segment"
    );
    let info = storage
        .create_checkpoint(&dir.path().join("checkpoints"))
        .unwrap();
    let body_after = vec![1u8; 5 << 20];
    let block = next_block(&storage, vec![body_after]);
    storage.commit_block(&block, &[]).unwrap();
    drop(storage);
    let copy = open(&info.path);
    assert_eq!(copy.tip().height, 15);
    for height in 1..=15 {
        assert_eq!(copy.block(height).unwrap().unwrap().txs[0], body);
    }
    // The checkpoint is independent: committing to it does not touch the original.
    let block = next_block(&copy, vec![vec![2u8; 5 << 20]]);
    copy.commit_block(&block, &[]).unwrap();
    drop(copy);
    let original = open(&dir.path().join("data"));
    assert_eq!(
        original.block(16).unwrap().unwrap().txs[0],
        vec![1u8; 5 << 20]
    );
}

/// The data hash was checked only by a `debug_assert!`: a release build stored a block whose
/// body did not match its header (and a debug build panicked instead of refusing it).
#[test]
fn a_block_whose_body_does_not_match_its_data_hash_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    commit_n(&storage, 2);
    let mut block = next_block(&storage, vec![b"one".to_vec()]);
    block.txs.push(b"smuggled".to_vec());
    let error = storage.commit_block(&block, &[]).unwrap_err();
    assert!(
        matches!(error, StorageError::DataHashMismatch { height: 3 }),
        "{error}"
    );
    assert_eq!(storage.tip().height, 2);
    assert!(storage.block(3).unwrap().is_none());
}
