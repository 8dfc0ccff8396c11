use super::*;
use crate::consensus::types::{SignedVote, Vote};
use ed25519_dalek::{Signer as _, SigningKey};
use proptest::prelude::*;

const CHAIN: &str = "c";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn address(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

fn params() -> StakingParams {
    StakingParams {
        epoch_length: 5,
        unbonding_blocks: 3,
        downtime_window: 4,
        downtime_max_missed: 2,
        downtime_jail_blocks: 3,
        evidence_max_age: 3,
        ..StakingParams::devnet()
    }
}

/// Validators are seeds 1..=4 (power 100 each); accounts 10..=13 hold 1,000 each.
fn genesis(params: StakingParams) -> ChainState {
    let validators: Vec<Validator> = (1..=4)
        .map(|seed| Validator {
            public_key: key(seed).verifying_key(),
            power: 100,
        })
        .collect();
    let accounts: Vec<([u8; 32], u64)> = (10..=13).map(|seed| (address(seed), 1_000)).collect();
    ChainState::genesis(CHAIN, params, &accounts, &validators)
}

/// Executes and commits one block in which `signers` signed the previous one.
fn block(state: &mut ChainState, signers: &[u32], txs: &[Tx], evidence: Vec<Evidence>) -> Executed {
    let height = state.height + 1;
    let members = state.members(state.params.epoch_of(height)).unwrap().len() as u64;
    let input = BlockInput {
        height,
        proposer: (height % members) as u32,
        last_signers: (height > 1).then(|| signers.to_vec()),
        evidence,
    };
    let executed = state.execute(&input, txs, &NoInferenceRewards);
    let outcomes = executed.outcomes.clone();
    let events = executed.events.clone();
    let app_hash = executed.app_hash;
    state.commit(executed);
    assert_eq!(state.app_hash(), app_hash);
    Executed {
        writes: Writes::new(),
        app_hash,
        bucket_updates: Vec::new(),
        outcomes,
        events,
    }
}

fn conserved(state: &ChainState) {
    let supply = state.supply();
    assert_eq!(
        state.total_tokens(),
        u128::from(supply.genesis) + u128::from(supply.minted) - u128::from(supply.burned),
        "tokens = genesis + minted - burned"
    );
    for (validator, record) in state.validators() {
        let delegated: u64 = state.delegations(&validator).iter().map(|(_, a)| a).sum();
        assert_eq!(
            record.tokens, delegated,
            "tokens are the sum of delegations"
        );
    }
}

fn equivocation(signer: u8, index: u32, height: u64) -> Evidence {
    let vote = |value: Option<Hash>| {
        let vote = Vote {
            kind: VoteKind::Precommit,
            height,
            round: 0,
            value,
            validator: index,
        };
        SignedVote {
            vote,
            signature: key(signer).sign(&vote.sign_bytes(CHAIN)),
        }
    };
    Evidence {
        first: vote(Some(Hash::digest(b"block"))),
        second: vote(None),
    }
}

#[test]
fn double_sign_is_slashed_once_tombstoned_and_out_of_the_next_set() {
    let mut state = genesis(params());
    let all = [0, 1, 2, 3];
    block(&mut state, &all, &[], vec![]);
    // Validator index 2 (seed 3) equivocated at height 1; the evidence rides in block 2.
    let executed = block(&mut state, &all, &[], vec![equivocation(3, 2, 1)]);
    assert!(executed.events.iter().any(|e| matches!(
        e,
        StateEvent::Slashed {
            reason: "double sign",
            burned: 5,
            ..
        }
    )));
    let record = state.validator(&address(3)).unwrap();
    assert!(record.tombstoned && record.jailed);
    assert_eq!(record.tokens, 95, "5% of 100 burned");
    assert_eq!(state.evidence().len(), 1);
    // The same evidence again (in a block, or as a transaction) burns nothing more.
    block(&mut state, &all, &[], vec![equivocation(3, 2, 1)]);
    let tx = Tx::signed(
        CHAIN,
        &key(10),
        TxBody::SubmitEvidence {
            evidence: Box::new(equivocation(3, 2, 1)),
        },
        1,
        0,
    );
    let executed = block(&mut state, &all, &[tx], vec![]);
    assert!(
        matches!(&executed.outcomes[0], TxOutcome::Failed(reason) if reason.contains("already"))
    );
    assert_eq!(state.validator(&address(3)).unwrap().tokens, 95);
    // A forged equivocation (signed by another key) counts for nothing.
    block(&mut state, &all, &[], vec![equivocation(4, 0, 2)]);
    assert!(!state.validator(&address(1)).unwrap().jailed);
    // Epoch 0 is heights 1..=5; the set for epoch 1 was fixed at height 4, without it.
    assert_eq!(state.height, 5);
    let next = state.members(1).unwrap();
    assert_eq!(next.len(), 3);
    assert!(!next.iter().any(|m| m.key == address(3)));
    conserved(&state);
}

#[test]
fn downtime_jails_and_slashes_and_unjail_returns_the_validator_next_epoch() {
    let mut state = genesis(params());
    block(&mut state, &[], &[], vec![]);
    // Validator 3 (seed 4) signs nothing: 3 misses of a window of 4 is over the limit of 2.
    for _ in 0..3 {
        block(&mut state, &[0, 1, 2], &[], vec![]);
    }
    let record = state.validator(&address(4)).unwrap();
    assert!(record.jailed && !record.tombstoned);
    assert_eq!(record.tokens, 99, "1% of 100 burned");
    assert_eq!(record.jailed_until, 4 + 3);
    let unjail = |nonce| Tx::signed(CHAIN, &key(4), TxBody::Unjail, 0, nonce);
    // Too early: fails (and uses its nonce).
    let executed = block(&mut state, &[0, 1, 2], &[unjail(0)], vec![]);
    assert!(matches!(&executed.outcomes[0], TxOutcome::Failed(r) if r.contains("jailed until")));
    assert_eq!(state.height, 5);
    assert_eq!(
        state.members(1).unwrap().len(),
        3,
        "jailed at 4: out of epoch 1"
    );
    block(&mut state, &[0, 1, 2], &[], vec![]);
    let executed = block(&mut state, &[0, 1, 2], &[unjail(1)], vec![]);
    assert_eq!(executed.outcomes[0], TxOutcome::Applied);
    assert!(!state.validator(&address(4)).unwrap().jailed);
    while state.height < 9 {
        block(&mut state, &[0, 1, 2], &[], vec![]);
    }
    let back = state.members(2).unwrap();
    assert_eq!(
        back.len(),
        4,
        "unjailed at 7: back in epoch 2 (heights 11..)"
    );
    conserved(&state);
}

#[test]
fn delegation_changes_power_only_at_the_next_epoch_and_unbonding_returns_tokens_later() {
    let mut state = genesis(params());
    let all = [0, 1, 2, 3];
    let delegate = Tx::signed(
        CHAIN,
        &key(10),
        TxBody::Delegate {
            validator: address(2),
            amount: 300,
        },
        1,
        0,
    );
    block(&mut state, &all, &[delegate], vec![]);
    assert_eq!(state.validator(&address(2)).unwrap().tokens, 400);
    assert_eq!(state.members(0).unwrap()[1].power, 100, "epoch 0 unchanged");
    while state.height < 4 {
        block(&mut state, &all, &[], vec![]);
    }
    let next = state.members(1).unwrap();
    assert_eq!(
        next[0],
        Member {
            key: address(2),
            power: 400
        },
        "largest first"
    );
    let before = state.account(&address(10)).balance;
    let undelegate = Tx::signed(
        CHAIN,
        &key(10),
        TxBody::Undelegate {
            validator: address(2),
            amount: 200,
        },
        1,
        1,
    );
    block(&mut state, &all, &[undelegate], vec![]); // height 5, matures at 8
    assert_eq!(state.unbondings().len(), 1);
    assert!(state.account(&address(10)).balance < before + 200);
    block(&mut state, &all, &[], vec![]);
    block(&mut state, &all, &[], vec![]);
    assert_eq!(state.unbondings().len(), 1, "not yet at 7");
    let at7 = state.account(&address(10)).balance;
    block(&mut state, &all, &[], vec![]);
    assert!(state.unbondings().is_empty());
    assert!(state.account(&address(10)).balance >= at7 + 200);
    conserved(&state);
}

/// The nothing-at-stake escape: a validator unbonds everything, then its equivocation of a
/// height at which the stake was still bonded is judged. The unbonding stake is slashed as the
/// bonded stake would have been (CometBFT/Cosmos); an unbonding that began before the
/// infraction is not.
#[test]
fn unbonding_stake_is_slashed_for_an_equivocation_committed_while_it_was_bonded() {
    // No rewards, so that the balance shows exactly what the unbonding returns.
    let quiet = StakingParams {
        block_reward: 0,
        ..params()
    };
    let mut state = genesis(quiet.clone());
    let all = [0, 1, 2, 3];
    block(&mut state, &all, &[], vec![]);
    let unbond = |amount| {
        Tx::signed(
            CHAIN,
            &key(3),
            TxBody::Undelegate {
                validator: address(3),
                amount,
            },
            0,
            0,
        )
    };
    // Height 2: validator seed 3 (index 2) unbonds all its 100; it matures at height 5.
    block(&mut state, &all, &[unbond(100)], vec![]);
    assert_eq!(state.validator(&address(3)).unwrap().tokens, 0);
    // Height 3 carries the evidence of its equivocation at height 2, while it was bonded.
    let executed = block(&mut state, &all, &[], vec![equivocation(3, 2, 2)]);
    let burned: u64 = executed
        .events
        .iter()
        .filter_map(|event| match event {
            StateEvent::Slashed { burned, .. } => Some(*burned),
            _ => None,
        })
        .sum();
    assert_eq!(burned, 5, "5% of the 100 unbonding");
    assert_eq!(state.unbondings()[0].3, 95);
    conserved(&state);
    while state.height < 5 {
        block(&mut state, &all, &[], vec![]);
    }
    assert_eq!(state.account(&address(3)).balance, 95, "only 95 come back");

    // An unbonding that began before the infraction was not at stake in it.
    let mut state = genesis(quiet);
    block(&mut state, &all, &[], vec![]);
    block(&mut state, &all, &[unbond(100)], vec![]);
    block(&mut state, &all, &[], vec![]);
    block(&mut state, &all, &[], vec![equivocation(3, 2, 3)]);
    assert_eq!(state.unbondings()[0].3, 100);
}

#[test]
fn genesis_refuses_evidence_older_than_the_unbonding_period() {
    let mut params = StakingParams::devnet();
    params.evidence_max_age = params.unbonding_blocks + 1;
    let (field, reason) = params.validate().unwrap_err();
    assert_eq!(field, "staking.evidence_max_age");
    assert!(reason.contains("unbonding_blocks"), "{reason}");
    params.evidence_max_age = params.unbonding_blocks;
    assert!(params.validate().is_ok());
    assert!(StakingParams::mainnet().validate().is_ok());
}

#[test]
fn rewards_and_fees_are_paid_exactly_with_commission_and_delegators() {
    let mut p = params();
    p.block_reward = 1_000;
    let mut state = genesis(p);
    let create = Tx::signed(
        CHAIN,
        &key(11),
        TxBody::CreateValidator {
            amount: 500,
            commission_bps: 1_000,
        },
        0,
        0,
    );
    let executed = block(&mut state, &[], &[create], vec![]);
    assert_eq!(executed.outcomes[0], TxOutcome::Applied);
    let before: u128 = state.total_tokens();
    block(&mut state, &[0, 1, 2, 3], &[], vec![]);
    assert_eq!(
        state.total_tokens(),
        before + 1_000,
        "exactly the reward was minted"
    );
    conserved(&state);
    // Block 2's proposer is index 2 (seed 3): 10% bonus of 1,000 plus a quarter of 900.
    let account = state.account(&address(3));
    assert_eq!(account.balance, 100 + 225);
}

#[test]
fn app_hash_depends_on_the_state_not_on_the_order_it_was_built() {
    let validators: Vec<Validator> = (1..=3)
        .map(|seed| Validator {
            public_key: key(seed).verifying_key(),
            power: 10,
        })
        .collect();
    let accounts: Vec<([u8; 32], u64)> = (10..=20).map(|seed| (address(seed), 5)).collect();
    let mut reversed = accounts.clone();
    reversed.reverse();
    let one = ChainState::genesis(CHAIN, params(), &accounts, &validators);
    let two = ChainState::genesis(CHAIN, params(), &reversed, &validators);
    assert_eq!(one.app_hash(), two.app_hash());
    let loaded = ChainState::from_entries(CHAIN, params(), 0, {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = one
            .store()
            .entries()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        entries.reverse();
        entries
    })
    .unwrap();
    assert_eq!(loaded.app_hash(), one.app_hash());
    let other = ChainState::genesis(CHAIN, params(), &accounts[1..], &validators);
    assert_ne!(other.app_hash(), one.app_hash());
}

/// A random transaction from one of the accounts 10..=13 or validators 1..=4.
fn arbitrary_tx() -> impl Strategy<Value = (u8, u8, u8, u64, u64)> {
    (0u8..7, 1u8..14, 1u8..14, 0u64..1_500, 0u64..30)
}

fn build_tx(state: &ChainState, (kind, from, to, amount, fee): (u8, u8, u8, u64, u64)) -> Tx {
    let nonce = state.account(&address(from)).nonce;
    let body = match kind {
        0 => TxBody::Transfer {
            to: address(to),
            amount,
        },
        1 => TxBody::Delegate {
            validator: address(to),
            amount,
        },
        2 => TxBody::Undelegate {
            validator: address(to),
            amount,
        },
        3 => TxBody::CreateValidator {
            amount,
            commission_bps: (amount * 10) as u32,
        },
        4 => TxBody::Unjail,
        5 => TxBody::RegisterExpert {
            content_hash: Hash::digest(&[to]),
            tiles_root: Hash::digest(&[from]),
            name: "e".into(),
            layer: 0,
            tiles: 1,
            bytes: amount,
        },
        _ => TxBody::SubmitEvidence {
            evidence: Box::new(equivocation(
                to.clamp(1, 4),
                u32::from(to.clamp(1, 4)) - 1,
                1,
            )),
        },
    };
    Tx::signed(CHAIN, &key(from), body, fee, nonce)
}

/// Validator seed 3's stake: 100 of its own; delegator seed 10 adds `delegated` at height 1.
/// Blocks 2.. each may unbond (delegator, amount) from it; it equivocates at height
/// `infraction` and the evidence rides in the block `delay` later. Amounts are multiples of
/// 20, so 5% of each entry is exact. (Infractions stay in epoch 0, where index 2 is seed 3.)
fn equivocation_run(
    delegated: u64,
    unbonds: &[(bool, u64)],
    infraction: u64,
    delay: u64,
) -> (u64, u64, ChainState) {
    let mut p = params();
    p.unbonding_blocks = 6;
    p.evidence_max_age = 6;
    let mut state = genesis(p);
    let all = [0, 1, 2, 3];
    let delegate = Tx::signed(
        CHAIN,
        &key(10),
        TxBody::Delegate {
            validator: address(3),
            amount: delegated,
        },
        0,
        0,
    );
    block(&mut state, &all, &[delegate], vec![]);
    let evidence_at = infraction + delay;
    let mut at_stake = 0;
    let mut burned = 0;
    let mut next = unbonds.iter();
    while state.height < evidence_at {
        let height = state.height + 1;
        if height == infraction {
            at_stake = state.validator(&address(3)).unwrap().tokens;
        }
        let mut txs = Vec::new();
        if let Some((own, amount)) = next.next() {
            let delegator = if *own { 3 } else { 10 };
            let bonded = state
                .delegations(&address(3))
                .iter()
                .find(|(key, _)| *key == address(delegator))
                .map_or(0, |(_, amount)| *amount);
            let amount = (*amount).min(bonded);
            if amount > 0 {
                let nonce = state.account(&address(delegator)).nonce;
                txs.push(Tx::signed(
                    CHAIN,
                    &key(delegator),
                    TxBody::Undelegate {
                        validator: address(3),
                        amount,
                    },
                    0,
                    nonce,
                ));
            }
        }
        let evidence = if height == evidence_at {
            vec![equivocation(3, 2, infraction)]
        } else {
            vec![]
        };
        let executed = block(&mut state, &all, &txs, evidence);
        burned += executed
            .events
            .iter()
            .filter_map(|event| match event {
                StateEvent::Slashed { burned, .. } => Some(*burned),
                _ => None,
            })
            .sum::<u64>();
        conserved(&state);
    }
    (at_stake, burned, state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over random blocks of random transactions and signers: tokens are conserved except for
    /// what was minted and burned (accounted exactly), delegations sum to stake, no arithmetic
    /// under- or overflows (it would panic), and a failed transaction writes only its sender's
    /// fee and nonce.
    #[test]
    fn supply_is_conserved_and_failed_transactions_change_only_the_fee(
        blocks in proptest::collection::vec(
            (proptest::collection::vec(arbitrary_tx(), 0..6), proptest::collection::vec(0u32..4, 0..4), any::<bool>()),
            1..16,
        )
    ) {
        let mut state = genesis(params());
        let mut burned_by_events = 0u64;
        for (txs, signers, with_evidence) in blocks {
            // Each transaction alone against the committed state: a failure writes one key.
            for spec in &txs {
                let tx = build_tx(&state, *spec);
                let mut exec = state.exec(state.height + 1);
                let before = state.account(&tx.from);
                if let TxOutcome::Failed(_) = exec.apply_tx(&tx) {
                    let writes: Vec<Vec<u8>> = exec.overlay.writes.keys().cloned().collect();
                    prop_assert_eq!(writes, vec![account_key(&tx.from)]);
                    let after = exec.account(&tx.from);
                    prop_assert_eq!(after.balance, before.balance - tx.fee);
                    prop_assert_eq!(after.nonce, before.nonce + 1);
                }
            }
            let mut built = Vec::new();
            let mut scratch_nonces: BTreeMap<[u8; 32], u64> = BTreeMap::new();
            for spec in txs {
                let mut tx = build_tx(&state, spec);
                let nonce = scratch_nonces.entry(tx.from).or_insert(tx.nonce);
                tx = Tx::signed(CHAIN, &key(spec.1), tx.body, tx.fee, *nonce);
                *nonce += 1;
                built.push(tx);
            }
            let evidence = if with_evidence { vec![equivocation(1, 0, 1)] } else { vec![] };
            let executed = block(&mut state, &signers, &built, evidence);
            for event in executed.events {
                if let StateEvent::Slashed { burned, .. } = event {
                    burned_by_events += burned;
                }
            }
            conserved(&state);
        }
        let supply = state.supply();
        prop_assert_eq!(supply.minted, state.height * state.params.block_reward);
        prop_assert_eq!(supply.burned, burned_by_events, "every burn is a slashing");
    }

    /// No equivocation within the unbonding window goes unpunished: whatever the validator and
    /// its delegator unbond before or after it, exactly the stake bonded at the infraction's
    /// height (5%) is burned, from delegations and unbonding entries alike.
    #[test]
    fn no_equivocation_within_the_unbonding_window_goes_unpunished(
        delegated in (0u64..=50).prop_map(|k| k * 20),
        unbonds in proptest::collection::vec((any::<bool>(), (0u64..=60).prop_map(|k| k * 20)), 0..12),
        infraction in 2u64..=5,
        delay in 1u64..=6,
    ) {
        let (at_stake, burned, _) = equivocation_run(delegated, &unbonds, infraction, delay);
        prop_assert_eq!(burned, at_stake / 20, "5% of the {} bonded at height {}", at_stake, infraction);
    }
}

/// Records read back from storage are decoded once at load: a malformed one is an error that
/// names its key, not a panic on the first read of it.
#[test]
fn a_state_with_a_malformed_record_is_refused_at_load_naming_the_record() {
    let good: Vec<(Vec<u8>, Vec<u8>)> = genesis(params())
        .store()
        .entries()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let spoil = |prefix: &[u8], value: &[u8]| {
        let mut entries = good.clone();
        let entry = entries
            .iter_mut()
            .find(|(key, _)| key.starts_with(prefix))
            .expect("genesis writes a record of this prefix");
        entry.1 = value.to_vec();
        let key = entry.0.clone();
        (key, ChainState::from_entries(CHAIN, params(), 1, entries))
    };
    for (prefix, value, why) in [
        (
            b"v/".as_slice(),
            b"{not json".as_slice(),
            "not the JSON record expected",
        ),
        (b"a/", &[0u8; 15][..], "a value of 15 bytes, not 16"),
        (b"s/", &[1u8; 41][..], "a set record of 41 bytes"),
        (b"m/supply", b"[]", "not the JSON record expected"),
    ] {
        let (key, loaded) = spoil(prefix, value);
        let Err(StateError::Record {
            key: named,
            why: said,
        }) = loaded
        else {
            panic!("a malformed {prefix:?} record was loaded");
        };
        assert!(said.contains(why), "{said}");
        assert!(
            named.ends_with(&hex::encode(&key[2..])),
            "{named} names the record"
        );
    }
    assert!(ChainState::from_entries(CHAIN, params(), 1, good).is_ok());
}
