use super::*;

fn batch(config: &SimConfig, seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    seeds.map(|seed| run(config, seed)).collect()
}

#[test]
fn same_seed_same_run_event_for_event() {
    let config = SimConfig::new(4, 1, 10);
    for seed in [1, 2, 3] {
        let first = run(&config, seed);
        let second = run(&config, seed);
        assert_eq!(first, second, "seed {seed}");
        assert!(first.events > 100);
    }
    assert_ne!(
        run(&config, 1).trace,
        run(&config, 2).trace,
        "different seeds differ"
    );
}

#[test]
fn n4_f0_no_faults_decides_every_height_in_round_zero() {
    let mut config = SimConfig::new(4, 0, 20);
    config.faults = false;
    for outcome in batch(&config, 0..20) {
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(
            outcome.rounds_per_height,
            vec![1; 20],
            "seed {}",
            outcome.seed
        );
    }
}

#[test]
fn n4_f1_faults_200_seeds_safe_and_live() {
    let config = SimConfig::new(4, 1, 20);
    for outcome in batch(&config, 0..200) {
        assert!(outcome.is_ok(), "seed {}: {outcome:?}", outcome.seed);
    }
}

#[test]
fn n7_f2_faults_50_seeds_safe_and_live_with_evidence() {
    let mut config = SimConfig::new(7, 2, 20);
    config.byzantine_kinds = vec![ByzantineKind::Equivocate];
    let outcomes = batch(&config, 0..50);
    for outcome in &outcomes {
        assert!(outcome.is_ok(), "seed {}: {outcome:?}", outcome.seed);
    }
    assert!(
        outcomes.iter().map(|o| o.equivocations).sum::<usize>() > 100,
        "equivocators equivocate"
    );
}

#[test]
fn crashed_validators_restart_without_double_signing() {
    // Seeds whose plan crashes an honest validator; the signer must refuse conflicting
    // signatures after some restarts, and safety must hold throughout.
    let config = SimConfig::new(4, 0, 20);
    let outcomes = batch(&config, 0..100);
    for outcome in &outcomes {
        assert!(outcome.is_ok(), "seed {}: {outcome:?}", outcome.seed);
    }
    assert!(
        outcomes.iter().any(|o| o.refused_signatures > 0),
        "some restart hit the double-sign guard"
    );
}

#[test]
fn checker_bites_n4_f2_equivocators_break_safety() {
    let mut config = SimConfig::new(4, 2, 20);
    config.byzantine_kinds = vec![ByzantineKind::Equivocate];
    config.split_precommits = false;
    let violation = (0..200)
        .map(|seed| run(&config, seed))
        .find(|o| o.safety_violation.is_some());
    let violation = violation.expect("two equivocators of four must break safety within 200 seeds");
    assert!(violation.safety_violation.unwrap().contains("decided"));
}

#[test]
fn checker_bites_broken_lock_rule_breaks_safety() {
    let mut config = SimConfig::new(4, 1, 20);
    config.broken_lock = true;
    config.relay = false;
    config.byzantine_kinds = vec![ByzantineKind::Equivocate];
    let found = (0..500)
        .map(|seed| run(&config, seed))
        .find(|o| o.safety_violation.is_some());
    assert!(
        found.is_some(),
        "ignoring locks must break safety within 500 seeds"
    );
    // The same seeds with the lock rule intact are safe.
    config.broken_lock = false;
    let seed = found.unwrap().seed;
    assert!(
        run(&config, seed).safety_violation.is_none(),
        "seed {seed} is safe with locks"
    );
}

/// Regression: validators that missed round 0's polka (one down, one crashed) could never accept
/// the locked validators' re-proposal, so the height stalled for 40 rounds. A re-proposal now
/// travels with its proof-of-lock prevotes.
#[test]
fn regression_n7_f2_seed_304_reproposal_carries_its_proof_of_lock() {
    let outcome = run(&SimConfig::new(7, 2, 20), 304);
    assert!(outcome.is_ok(), "{outcome:?}");
}
