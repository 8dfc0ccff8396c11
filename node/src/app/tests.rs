use super::*;
use crate::consensus::types::{SignedVote, Vote, VoteKind};
use crate::genesis::{Genesis, GenesisAccount, GenesisValidator};
use crate::storage::StorageConfig;
use ed25519_dalek::{Signer as _, SigningKey};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: "c".into(),
        genesis_time_ms: 0,
        validators: (3..=6)
            .map(|seed| GenesisValidator {
                name: format!("v{seed}"),
                public_key: hex::encode(key(seed).verifying_key().to_bytes()),
                power: 10,
            })
            .collect(),
        accounts: vec![GenesisAccount {
            address: hex::encode(key(1).verifying_key().to_bytes()),
            balance: 1000,
        }],
        staking: crate::state::StakingParams::devnet(),
    }
}

fn setup() -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageConfig::default()).unwrap();
    let app = App::open(&storage, &genesis()).unwrap();
    (dir, app)
}

#[test]
fn execution_applies_valid_transfers_skips_bad_nonce_and_charges_failed_ones() {
    let (_dir, app) = setup();
    let alice = key(1);
    let bob = key(2).verifying_key().to_bytes();
    let txs = vec![
        Tx::transfer("c", &alice, bob, 100, 1, 0),
        Tx::transfer("c", &alice, bob, 100, 1, 0), // replayed nonce
        Tx::transfer("c", &alice, bob, 5000, 1, 1), // overdraft: pays the fee
        Tx::transfer("c", &alice, bob, 50, 1, 2),
    ];
    let input = BlockInput {
        height: 1,
        ..BlockInput::default()
    };
    let executed = app.execute(&input, &txs);
    assert_eq!(executed.outcomes[0], TxOutcome::Applied);
    assert_eq!(executed.outcomes[1], TxOutcome::Skipped);
    assert!(matches!(executed.outcomes[2], TxOutcome::Failed(_)));
    assert_eq!(executed.outcomes[3], TxOutcome::Applied);
    let again = app.execute(&input, &txs);
    assert_eq!(again.app_hash, executed.app_hash, "deterministic");
    assert_ne!(executed.app_hash, app.app_hash());
    let mut app = app;
    app.committed(executed);
    assert_eq!(
        app.account(&alice.verifying_key().to_bytes()),
        Account {
            balance: 1000 - 150 - 3,
            nonce: 3
        }
    );
    assert_eq!(app.account(&bob).balance, 150);
}

fn precommit(seed: u8, index: u32, height: u64, hash: Hash) -> SignedVote {
    let vote = Vote {
        kind: VoteKind::Precommit,
        height,
        round: 0,
        value: Some(hash),
        validator: index,
    };
    SignedVote {
        vote,
        signature: key(seed).sign(&vote.sign_bytes("c")),
    }
}

#[test]
fn a_block_must_carry_a_valid_quorum_commit_of_its_parent_and_the_right_set_hashes() {
    let genesis = genesis();
    let set = genesis.validator_set().unwrap();
    let validators = set.validators();
    let parent = Hash::digest(b"parent");
    let commit = |signers: &[(u8, u32)]| {
        let votes: Vec<SignedVote> = signers
            .iter()
            .map(|(seed, index)| precommit(*seed, *index, 1, parent))
            .collect();
        Commit::from_votes(0, &votes).encode()
    };
    let expected = Expected {
        chain_id: "c",
        height: 2,
        prev_hash: parent,
        prev_time_ms: 1,
        app_hash: Hash::ZERO,
        max_txs: 10,
        validators,
        next_validators_hash: set_hash(validators),
        prev_validators: Some(validators),
        latest_time_ms: None,
    };
    let block_with = |last_commit: Vec<u8>| {
        let mut block = Block::new("c", 2, 2, parent, Hash::ZERO, vec![]);
        block.header.validators_hash = set_hash(validators);
        block.header.next_validators_hash = set_hash(validators);
        block.header.proposer = 1;
        block.with_body(last_commit, vec![])
    };
    let good = block_with(commit(&[(3, 0), (4, 1), (5, 2)]));
    let checked = check_block(&good, &expected, &|_| false).unwrap();
    assert_eq!(checked.input.last_signers, Some(vec![0, 1, 2]));
    assert_eq!(checked.input.proposer, 1);
    let short = block_with(commit(&[(3, 0), (4, 1)]));
    let error = check_block(&short, &expected, &|_| false).err().unwrap();
    assert!(error.contains("not more than two thirds"), "{error}");
    let forged = block_with(commit(&[(3, 0), (4, 1), (9, 2)]));
    let error = check_block(&forged, &expected, &|_| false).err().unwrap();
    assert!(error.contains("invalid signature"), "{error}");
    let none = block_with(vec![]);
    assert!(check_block(&none, &expected, &|_| false).is_err());
    let mut wrong_set = good.clone();
    wrong_set.header.next_validators_hash = Hash::ZERO;
    let error = check_block(&wrong_set, &expected, &|_| false)
        .err()
        .unwrap();
    assert!(error.contains("next validators hash"), "{error}");
}

#[test]
fn reap_stops_at_a_nonce_gap_and_keeps_senders_in_arrival_order() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let bob = SigningKey::from_bytes(&[2; 32]);
    let mut pool = Mempool::new(MempoolLimits {
        max_txs: 100,
        max_bytes: 1 << 20,
        ttl: std::time::Duration::from_secs(60),
    });
    // Gossip delivered alice's nonce 2 before her nonce 1.
    for (key, nonce) in [(&alice, 0), (&bob, 0), (&alice, 2), (&bob, 1)] {
        pool.insert(Tx::transfer("c", key, [9; 32], 1, 1, nonce))
            .unwrap();
    }
    let picked: Vec<(u8, u64)> = pool
        .reap(10, |_| 0)
        .iter()
        .map(|tx| (tx.from[0], tx.nonce))
        .collect();
    let (a, b) = (
        alice.verifying_key().to_bytes()[0],
        bob.verifying_key().to_bytes()[0],
    );
    assert_eq!(
        picked,
        vec![(a, 0), (b, 0), (b, 1)],
        "alice's 2 waits for 1"
    );
    pool.insert(Tx::transfer("c", &alice, [9; 32], 1, 1, 1))
        .unwrap();
    assert_eq!(pool.reap(10, |_| 0).len(), 5, "the gap is filled");
}

#[test]
fn transactions_older_than_the_ttl_are_dropped_at_the_next_update() {
    let (_dir, app) = setup();
    let alice = key(1);
    let mut pool = Mempool::new(MempoolLimits {
        max_txs: 100,
        max_bytes: 1 << 20,
        ttl: std::time::Duration::from_millis(50),
    });
    // Nonce 5 never comes due (0..4 never arrive).
    pool.insert(Tx::transfer("c", &alice, [9; 32], 1, 1, 5))
        .unwrap();
    pool.update(&HashSet::new(), &app);
    assert_eq!(pool.len(), 1, "young: kept");
    std::thread::sleep(std::time::Duration::from_millis(60));
    pool.update(&HashSet::new(), &app);
    assert!(pool.is_empty(), "past the TTL: dropped");
    assert_eq!(pool.pending_from(&alice.verifying_key().to_bytes()), 0);
}

#[test]
fn mempool_dedups_bounds_and_drops_committed() {
    let (_dir, app) = setup();
    let alice = key(1);
    let mut pool = Mempool::new(MempoolLimits {
        max_txs: 3,
        max_bytes: 1 << 20,
        ttl: std::time::Duration::from_secs(60),
    });
    let first = Tx::transfer("c", &alice, [2; 32], 1, 1, 1);
    let zero = Tx::transfer("c", &alice, [2; 32], 1, 1, 0);
    app.check(&first, 0).unwrap();
    pool.insert(first.clone()).unwrap();
    assert_eq!(pool.insert(first.clone()), Err(TxError::Duplicate));
    pool.insert(zero.clone()).unwrap();
    pool.insert(Tx::transfer("c", &alice, [2; 32], 1, 1, 2))
        .unwrap();
    assert!(matches!(
        pool.insert(Tx::transfer("c", &alice, [2; 32], 1, 1, 3)),
        Err(TxError::MempoolFull(_))
    ));
    let reaped = pool.reap(10, |_| 0);
    assert_eq!(
        reaped.iter().map(|tx| tx.nonce).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(pool.reap(2, |_| 0).len(), 2, "at most max_txs");
    // The account is at nonce 1: nonce 0 is stale and left out, 1 and 2 follow on.
    let reaped = pool.reap(10, |_| 1);
    assert_eq!(
        reaped.iter().map(|tx| tx.nonce).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let committed: HashSet<Hash> = [zero.hash()].into_iter().collect();
    pool.update(&committed, &app);
    assert_eq!(pool.len(), 2);
    assert!(!pool.contains(&zero.hash()));
    assert!(matches!(
        app.check(&Tx::transfer("c", &alice, [2; 32], 5000, 1, 0), 0),
        Err(TxError::InsufficientFunds { .. })
    ));
    assert!(matches!(
        app.check(&Tx::transfer("c", &alice, [2; 32], 1, 1, 500), 0),
        Err(TxError::NonceGap { .. })
    ));
}

/// Each field a Byzantine proposer can mutate (`devnet.mutate_block`) makes an otherwise valid
/// block fail the check every validator runs on a proposal, with a reason naming that field.
#[cfg(feature = "devnet")]
#[test]
fn every_mutable_block_field_once_mutated_is_refused_naming_it() {
    let genesis = genesis();
    let set = genesis.validator_set().unwrap();
    let validators = set.validators();
    let now = 1_700_000_000_000;
    let expected = Expected {
        chain_id: "c",
        height: 1,
        prev_hash: Hash::digest(b"genesis"),
        prev_time_ms: now - 1_000,
        app_hash: Hash::digest(b"state"),
        max_txs: 10,
        validators,
        next_validators_hash: set_hash(validators),
        prev_validators: None,
        latest_time_ms: Some(latest_block_time(now, now - 1_000)),
    };
    let mut good = Block::new("c", 1, now, expected.prev_hash, expected.app_hash, vec![]);
    good.header.validators_hash = set_hash(validators);
    good.header.next_validators_hash = set_hash(validators);
    check_block(&good, &expected, &|_| false).expect("the unmutated block is valid");
    let reasons = [
        ("app_hash", "app hash"),
        ("prev_hash", "parent"),
        ("time", "ahead of this node's clock"),
        ("validators_hash", "validators hash"),
        ("txs", "transaction"),
    ];
    assert_eq!(
        reasons.map(|(field, _)| field),
        crate::config::MUTABLE_BLOCK_FIELDS
    );
    for (field, reason) in reasons {
        let mut block = good.clone();
        crate::node::devnet::mutate(&mut block, field);
        assert!(
            block.data_hash_matches(),
            "{field}: the body stays consistent"
        );
        let error = check_block(&block, &expected, &|_| false)
            .err()
            .unwrap_or_else(|| panic!("a block with {field} mutated was accepted"));
        assert!(error.contains(reason), "{field}: {error}");
    }
}

/// A proposal may run ahead of the validator's clock by the bound and no more; a parent that is
/// itself ahead of the clock (a genesis time in the future) moves the bound with it.
#[test]
fn a_proposed_block_time_is_bounded_by_the_local_clock_or_the_parent() {
    assert_eq!(
        latest_block_time(5_000, 1_000),
        5_000 + MAX_BLOCK_TIME_AHEAD_MS
    );
    assert_eq!(
        latest_block_time(5_000, 9_000),
        9_001 + MAX_BLOCK_TIME_AHEAD_MS
    );
}
