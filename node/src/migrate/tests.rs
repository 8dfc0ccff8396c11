use super::*;
use crate::genesis::GenesisValidator;
use crate::state::StakingParams;
use crate::storage::StorageConfig;
use ed25519_dalek::SigningKey;

fn genesis(epoch_length: u64) -> Genesis {
    let key = SigningKey::from_bytes(&[7; 32]);
    Genesis {
        chain_id: "blyan-legacy".into(),
        genesis_time_ms: 0,
        validators: vec![GenesisValidator {
            name: "v".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            power: 10,
        }],
        accounts: Vec::new(),
        staking: StakingParams {
            epoch_length,
            ..StakingParams::devnet()
        },
    }
}

fn open(dir: &Path) -> Storage {
    Storage::open(dir, &StorageConfig::default()).expect("open storage")
}

#[test]
fn legacy_import_verifies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_dir = dir.path().join("legacy");
    let blocks = legacy::write_sample(&legacy_dir, 10).unwrap();
    let storage = open(&dir.path().join("data"));
    let genesis = genesis(100);
    let report = import(&legacy_dir, &storage, &genesis).unwrap();
    assert_eq!(report.blocks_imported, 10);
    assert_eq!(report.experts_imported, 1);
    assert_eq!(storage.tip().height, 10);
    let again = import(&legacy_dir, &storage, &genesis).unwrap();
    assert_eq!(again.blocks_imported, 0);
    assert_eq!(again.blocks_already_present, 10);
    assert_eq!(storage.tip().height, 10);
    let stored = storage.block(4).unwrap().unwrap();
    let record: legacy::LegacyBlock = serde_json::from_slice(&stored.txs[0]).unwrap();
    assert_eq!(record, blocks[3]);
}

/// The defect: an import wrote blocks but no state, so `App::open` (what `start` does)
/// refused the home. Every imported block now carries its state; across epoch boundaries
/// the next epochs' sets are there, no one is paid for the imported blocks, and the state is
/// the one replaying the same empty blocks over genesis gives.
#[test]
fn an_imported_home_holds_the_state_of_its_tip_across_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_dir = dir.path().join("legacy");
    legacy::write_sample(&legacy_dir, 7).unwrap();
    let storage = open(&dir.path().join("data"));
    let genesis = genesis(3);
    import(&legacy_dir, &storage, &genesis).unwrap();
    let app = App::open(&storage, &genesis).expect("the imported home opens");
    let state = app.read();
    assert!(
        state.validators_at(8).is_some(),
        "the set of the next height"
    );
    let supply = state.supply();
    assert_eq!(supply.minted, supply.burned, "no reward paid: {supply:?}");
    let stored = storage.block(7).unwrap().unwrap();
    let result = storage
        .consensus_get(&app_hash_key(7))
        .unwrap()
        .expect("the app hash after block 7 is recorded");
    assert_eq!(result, app.app_hash().0.to_vec());
    assert_eq!(stored.header.proposer, NO_PROPOSER);
    assert_eq!(
        storage
            .block(2)
            .unwrap()
            .unwrap()
            .header
            .app_hash
            .0
            .to_vec(),
        storage.consensus_get(&app_hash_key(1)).unwrap().unwrap(),
        "each block's header carries the app hash after its parent"
    );
    assert!(storage.legacy_origin().unwrap().is_some());
}

#[test]
fn legacy_import_of_a_tampered_block_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_dir = dir.path().join("legacy");
    legacy::write_sample(&legacy_dir, 5).unwrap();
    let victim = legacy_dir.join("blocks/000003.json");
    let text = std::fs::read_to_string(&victim).unwrap();
    std::fs::write(&victim, text.replace("expert3", "expert9")).unwrap();
    let storage = open(&dir.path().join("data"));
    let error = import(&legacy_dir, &storage, &genesis(100)).unwrap_err();
    assert!(matches!(error, LegacyError::HashMismatch { ref path, .. } if *path == victim));
    assert_eq!(storage.tip().height, 0, "nothing imported");
    assert_eq!(storage.legacy_origin().unwrap(), None, "nothing written");
}

#[test]
fn legacy_import_refuses_a_home_with_another_chain() {
    let dir = tempfile::tempdir().unwrap();
    let legacy_dir = dir.path().join("legacy");
    legacy::write_sample(&legacy_dir, 3).unwrap();
    let storage = open(&dir.path().join("data"));
    let genesis = genesis(100);
    // One native block (with its state), committed the way the import commits, but not
    // recorded as an import.
    let mut replay = StateReplay::new(&storage, &genesis);
    let native = replay.block(1, 1, Hash::ZERO, b"native".to_vec()).unwrap();
    storage
        .commit_block_with(&native.block, &native.changes, &native.records)
        .unwrap();
    let error = import(&legacy_dir, &storage, &genesis).unwrap_err();
    assert!(matches!(error, LegacyError::ForeignChain { .. }), "{error}");
    assert_eq!(storage.tip().height, 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The fixture of the first block encoding (tests/fixtures/v1-database), copied to `data`.
fn v1_home(dir: &Path) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-database/data");
    let data = dir.join("data");
    copy_dir(&fixture, &data);
    data
}

fn v1_genesis(chain_id: &str) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        ..genesis(100)
    }
}

#[test]
fn a_v1_upgrade_interrupted_after_the_rename_or_before_the_last_rename_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = v1_home(dir.path());
    let config = StorageConfig::default();
    // A crash right after the v1 database was moved aside: the next start imports it all.
    std::fs::rename(&data, dir.path().join("data.v1")).unwrap();
    let report = v1::upgrade(&data, &config, &v1_genesis("blyan-v1"))
        .unwrap()
        .expect("an upgrade");
    assert_eq!((report.blocks, report.imported), (88, 88));
    assert_eq!(report.kept, dir.path().join("data.v1-imported"));
    // A crash after the last block but before the backup's rename: nothing is written twice.
    std::fs::rename(&report.kept, dir.path().join("data.v1")).unwrap();
    let again = v1::upgrade(&data, &config, &v1_genesis("blyan-v1"))
        .unwrap()
        .expect("the upgrade finishes");
    assert_eq!((again.blocks, again.imported), (88, 0));
    // Done: later starts find nothing to do, and the state is there.
    assert_eq!(
        v1::upgrade(&data, &config, &v1_genesis("blyan-v1")).unwrap(),
        None
    );
    let storage = open(&data);
    assert_eq!(storage.tip().height, 88);
    App::open(&storage, &v1_genesis("blyan-v1")).expect("the upgraded home holds its state");
}

#[test]
fn a_v1_database_of_another_chain_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = v1_home(dir.path());
    let error = v1::upgrade(&data, &StorageConfig::default(), &v1_genesis("other"))
        .expect_err("another chain");
    assert!(
        error.to_string().contains("holds chain \"blyan-v1\"")
            && error.to_string().contains("\"other\""),
        "{error}"
    );
    assert!(data.join("CURRENT").is_file());
    assert!(!dir.path().join("data.v1").exists(), "nothing moved");
    // A database of today's encoding is not touched either.
    let fresh = tempfile::tempdir().unwrap();
    let storage = open(&fresh.path().join("data"));
    drop(storage);
    assert_eq!(
        v1::upgrade(
            &fresh.path().join("data"),
            &StorageConfig::default(),
            &genesis(100)
        )
        .unwrap(),
        None
    );
}
