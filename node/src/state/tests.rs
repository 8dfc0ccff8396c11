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
        evidence_max_age: 20,
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
    });
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
}
