//! One table-style test per rule of the core, driving a single validator of four (equal power,
//! so 3 votes are a quorum and 2 are more than a third).

use ed25519_dalek::{Signature, SigningKey};

use super::state_machine::*;
use super::types::*;
use super::validators::{Validator, ValidatorSet};
use crate::block::Hash;

const H: Height = 1;

fn validators() -> ValidatorSet {
    ValidatorSet::new(
        (0..4u8)
            .map(|index| Validator {
                public_key: SigningKey::from_bytes(&[index + 1; 32]).verifying_key(),
                power: 1,
            })
            .collect(),
    )
    .unwrap()
}

fn value(byte: u8) -> ValueId {
    Hash([byte; 32])
}

fn signature() -> Signature {
    Signature::from_bytes(&[0; 64])
}

fn vote(kind: VoteKind, round: Round, validator: u32, value_byte: Option<u8>) -> Input {
    Input::Vote(SignedVote {
        vote: Vote {
            kind,
            height: H,
            round,
            value: value_byte.map(value),
            validator,
        },
        signature: signature(),
    })
}

fn proposal(round: Round, value_byte: u8, pol_round: Option<Round>, valid: bool) -> Input {
    let proposer = validators().proposer(round);
    Input::Proposal {
        proposal: SignedProposal {
            proposal: Proposal {
                height: H,
                round,
                value: value(value_byte),
                pol_round,
                proposer,
            },
            signature: signature(),
        },
        valid,
    }
}

fn timeout(kind: TimeoutKind, round: Round) -> Input {
    Input::Timeout(Timeout {
        kind,
        height: H,
        round,
    })
}

/// A core for validator `me`, started at height 1; returns it and the start effects.
fn started(me: u32) -> (Consensus, Vec<Effect>) {
    let mut core = Consensus::new(Params::default(), Some(me), validators());
    let effects = core.handle(Input::StartHeight {
        height: H,
        validators: validators(),
        resume: None,
    });
    (core, effects)
}

/// Validator 3 is not the round-0 proposer (validator 0 is).
fn observer() -> Consensus {
    started(3).0
}

fn my_vote(kind: VoteKind, round: Round, value_byte: Option<u8>) -> Effect {
    Effect::Vote(Vote {
        kind,
        height: H,
        round,
        value: value_byte.map(value),
        validator: 3,
    })
}

fn scheduled(kind: TimeoutKind, round: Round) -> Effect {
    Effect::ScheduleTimeout {
        timeout: Timeout {
            kind,
            height: H,
            round,
        },
        duration_ms: Params::default().duration_ms(kind, round),
    }
}

/// Votes of validators 0, 1 and 2 (a quorum) for one value in one round and step.
fn three(kind: VoteKind, round: Round, value_byte: Option<u8>) -> Vec<Input> {
    (0..3)
        .map(|validator| vote(kind, round, validator, value_byte))
        .collect()
}

/// Locks validator 3 on value 1 in round 0 and moves it to round 1.
fn locked_on_1_then_round_1(core: &mut Consensus) {
    feed(core, vec![proposal(0, 1, None, true)]);
    feed(core, three(VoteKind::Prevote, 0, Some(1)));
    assert_eq!(core.locked(), Some((0, value(1))));
    feed(core, vec![timeout(TimeoutKind::Precommit, 0)]);
    assert_eq!(core.round(), 1);
}

fn feed(core: &mut Consensus, inputs: Vec<Input>) -> Vec<Effect> {
    inputs
        .into_iter()
        .flat_map(|input| core.handle(input))
        .collect()
}

#[test]
fn l11_start_round_proposer_asks_for_a_value_others_wait() {
    assert_eq!(validators().proposer(0), 0);
    let (_, effects) = started(0);
    assert_eq!(
        effects,
        vec![
            Effect::GetValue {
                height: H,
                round: 0
            },
            scheduled(TimeoutKind::Propose, 0)
        ]
    );
    let (_, effects) = started(3);
    assert_eq!(effects, vec![scheduled(TimeoutKind::Propose, 0)]);
}

#[test]
fn l19_proposer_proposes_the_value_it_is_given() {
    let (mut core, _) = started(0);
    let effects = core.handle(Input::ProposeValue {
        height: H,
        round: 0,
        value: value(1),
    });
    assert_eq!(
        effects,
        vec![Effect::Propose(Proposal {
            height: H,
            round: 0,
            value: value(1),
            pol_round: None,
            proposer: 0
        })]
    );
    assert!(
        core.handle(Input::ProposeValue {
            height: H,
            round: 0,
            value: value(2)
        })
        .is_empty(),
        "proposes once"
    );
}

#[test]
fn l22_prevote_valid_proposal_or_nil() {
    let table = [(true, Some(1)), (false, None)];
    for (valid, expected) in table {
        let mut core = observer();
        let effects = core.handle(proposal(0, 1, None, valid));
        assert_eq!(
            effects,
            vec![my_vote(VoteKind::Prevote, 0, expected)],
            "valid={valid}"
        );
        assert_eq!(core.step(), Step::Prevote);
    }
}

#[test]
fn l22_locked_validator_prevotes_nil_for_another_value() {
    let mut core = observer();
    locked_on_1_then_round_1(&mut core);
    let effects = core.handle(proposal(1, 2, None, true));
    assert_eq!(effects, vec![my_vote(VoteKind::Prevote, 1, None)]);
}

#[test]
fn broken_lock_switch_prevotes_for_another_value() {
    let mut core = observer();
    core.set_ignore_lock(true);
    locked_on_1_then_round_1(&mut core);
    let effects = core.handle(proposal(1, 2, None, true));
    assert_eq!(effects, vec![my_vote(VoteKind::Prevote, 1, Some(2))]);
}

#[test]
fn l28_proof_of_lock_from_a_later_round_unlocks() {
    let mut core = observer();
    locked_on_1_then_round_1(&mut core);
    // Round 1 saw a polka for value 2 that we missed; round 2 re-proposes it with pol_round 1.
    feed(&mut core, three(VoteKind::Prevote, 1, Some(2)));
    feed(&mut core, vec![timeout(TimeoutKind::Precommit, 1)]);
    assert_eq!(core.round(), 2);
    let effects = feed(&mut core, vec![proposal(2, 2, Some(1), true)]);
    assert!(
        effects.contains(&my_vote(VoteKind::Prevote, 2, Some(2))),
        "{effects:?}"
    );
}

#[test]
fn l28_proof_of_lock_older_than_the_lock_keeps_it() {
    let mut core = observer();
    // Polka for 2 in round 0 (we prevoted nil), then we lock on 1 in round 1.
    feed(&mut core, vec![proposal(0, 1, None, false)]);
    feed(&mut core, three(VoteKind::Prevote, 0, Some(2)));
    feed(&mut core, vec![timeout(TimeoutKind::Precommit, 0)]);
    feed(&mut core, vec![proposal(1, 1, None, true)]);
    feed(&mut core, three(VoteKind::Prevote, 1, Some(1)));
    assert_eq!(core.locked(), Some((1, value(1))));
    feed(&mut core, vec![timeout(TimeoutKind::Precommit, 1)]);
    let effects = core.handle(proposal(2, 2, Some(0), true));
    assert_eq!(effects, vec![my_vote(VoteKind::Prevote, 2, None)]);
}

#[test]
fn l34_any_prevote_quorum_schedules_the_prevote_timeout() {
    let mut core = observer();
    feed(&mut core, vec![proposal(0, 1, None, true)]);
    let effects = feed(
        &mut core,
        vec![
            vote(VoteKind::Prevote, 0, 0, Some(1)),
            vote(VoteKind::Prevote, 0, 1, None),
            vote(VoteKind::Prevote, 0, 2, Some(3)),
        ],
    );
    assert_eq!(effects, vec![scheduled(TimeoutKind::Prevote, 0)]);
    let effects = feed(&mut core, vec![timeout(TimeoutKind::Prevote, 0)]);
    assert_eq!(
        effects,
        vec![my_vote(VoteKind::Precommit, 0, None)],
        "L61: prevote timeout precommits nil"
    );
}

#[test]
fn l36_polka_locks_and_precommits() {
    let mut core = observer();
    feed(&mut core, vec![proposal(0, 1, None, true)]);
    let effects = feed(&mut core, three(VoteKind::Prevote, 0, Some(1)));
    assert!(
        effects.contains(&my_vote(VoteKind::Precommit, 0, Some(1))),
        "{effects:?}"
    );
    assert_eq!(core.locked(), Some((0, value(1))));
    assert_eq!(core.step(), Step::Precommit);
}

#[test]
fn l44_nil_polka_precommits_nil() {
    let mut core = observer();
    feed(&mut core, vec![proposal(0, 1, None, true)]);
    let effects = feed(&mut core, three(VoteKind::Prevote, 0, None));
    assert!(
        effects.contains(&my_vote(VoteKind::Precommit, 0, None)),
        "{effects:?}"
    );
    assert_eq!(core.locked(), None);
}

#[test]
fn l47_any_precommit_quorum_schedules_the_precommit_timeout_and_l65_moves_on() {
    let mut core = observer();
    let effects = feed(
        &mut core,
        vec![
            vote(VoteKind::Precommit, 0, 0, None),
            vote(VoteKind::Precommit, 0, 1, Some(1)),
            vote(VoteKind::Precommit, 0, 2, Some(2)),
        ],
    );
    assert_eq!(effects, vec![scheduled(TimeoutKind::Precommit, 0)]);
    let effects = feed(&mut core, vec![timeout(TimeoutKind::Precommit, 0)]);
    assert_eq!(core.round(), 1);
    assert_eq!(effects, vec![scheduled(TimeoutKind::Propose, 1)]);
}

#[test]
fn l49_precommit_quorum_with_the_proposal_decides_in_any_round() {
    let mut core = observer();
    // Precommits for round 2 arrive before we get there, then its proposal.
    let effects = feed(&mut core, three(VoteKind::Precommit, 2, Some(5)));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Decide { .. })),
        "no decision without the value"
    );
    let effects = feed(&mut core, vec![proposal(2, 5, None, true)]);
    let decide = effects
        .iter()
        .find(|e| matches!(e, Effect::Decide { .. }))
        .expect("decides");
    match decide {
        Effect::Decide {
            height,
            round,
            value: decided,
            commit,
        } => {
            assert_eq!((*height, *round, *decided), (H, 2, value(5)));
            assert_eq!(commit.len(), 3);
        }
        _ => unreachable!(),
    }
    assert_eq!(core.step(), Step::Commit);
}

#[test]
fn l49_invalid_proposal_is_never_decided() {
    let mut core = observer();
    feed(&mut core, three(VoteKind::Precommit, 0, Some(5)));
    let effects = feed(&mut core, vec![proposal(0, 5, None, false)]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Decide { .. })));
}

#[test]
fn l55_f_plus_one_senders_in_a_later_round_skip_to_it() {
    let mut core = observer();
    let effects = feed(&mut core, vec![vote(VoteKind::Prevote, 4, 0, None)]);
    assert!(
        effects.is_empty() && core.round() == 0,
        "one sender is not enough"
    );
    let effects = feed(&mut core, vec![vote(VoteKind::Precommit, 4, 1, None)]);
    assert_eq!(core.round(), 4);
    assert!(effects.contains(&scheduled(TimeoutKind::Propose, 4)));
}

#[test]
fn l57_propose_timeout_prevotes_nil_and_stale_timeouts_do_nothing() {
    let mut core = observer();
    assert!(feed(&mut core, vec![timeout(TimeoutKind::Propose, 3)]).is_empty());
    let effects = feed(&mut core, vec![timeout(TimeoutKind::Propose, 0)]);
    assert_eq!(effects, vec![my_vote(VoteKind::Prevote, 0, None)]);
    assert!(
        feed(&mut core, vec![timeout(TimeoutKind::Propose, 0)]).is_empty(),
        "once per step"
    );
}

#[test]
fn proposals_from_the_wrong_proposer_or_height_are_ignored() {
    let mut core = observer();
    let mut wrong = proposal(0, 1, None, true);
    if let Input::Proposal { proposal, .. } = &mut wrong {
        proposal.proposal.proposer = 2;
    }
    assert!(core.handle(wrong).is_empty());
    let mut other_height = proposal(0, 1, None, true);
    if let Input::Proposal { proposal, .. } = &mut other_height {
        proposal.proposal.height = 9;
    }
    assert!(core.handle(other_height).is_empty());
}

#[test]
fn equivocating_vote_yields_evidence() {
    let mut core = observer();
    core.handle(vote(VoteKind::Prevote, 0, 1, Some(1)));
    let effects = core.handle(vote(VoteKind::Prevote, 0, 1, Some(2)));
    assert!(
        matches!(effects.as_slice(), [Effect::Evidence(evidence)] if evidence.key() == (1, H, 0, VoteKind::Prevote))
    );
}

#[test]
fn timeouts_grow_with_the_round() {
    let params = Params::default();
    for kind in [
        TimeoutKind::Propose,
        TimeoutKind::Prevote,
        TimeoutKind::Precommit,
    ] {
        assert!(params.duration_ms(kind, 3) > params.duration_ms(kind, 0));
    }
}

#[test]
fn resume_restores_round_and_lock() {
    let mut core = Consensus::new(Params::default(), Some(3), validators());
    core.handle(Input::StartHeight {
        height: H,
        validators: validators(),
        resume: Some(Resume {
            round: 2,
            locked: Some((1, value(7))),
            last_vote: None,
        }),
    });
    assert_eq!((core.round(), core.locked()), (2, Some((1, value(7)))));
    let effects = core.handle(proposal(2, 8, None, true));
    assert_eq!(
        effects,
        vec![my_vote(VoteKind::Prevote, 2, None)],
        "still locked on 7"
    );
}

#[test]
fn commit_certificate_decides_despite_a_conflicting_local_vote() {
    let mut core = observer();
    // We hold validator 2's nil precommit; the certificate carries its precommit for 5.
    core.handle(vote(VoteKind::Precommit, 0, 2, None));
    let precommits: Vec<SignedVote> = (0..3)
        .map(
            |validator| match vote(VoteKind::Precommit, 0, validator, Some(5)) {
                Input::Vote(signed) => signed,
                _ => unreachable!(),
            },
        )
        .collect();
    let Input::Proposal {
        proposal: signed, ..
    } = proposal(0, 5, None, true)
    else {
        unreachable!()
    };
    let short = core.handle(Input::Commit {
        proposal: signed,
        precommits: precommits[..2].to_vec(),
    });
    assert!(short.is_empty(), "two of four is not a quorum");
    let effects = core.handle(Input::Commit {
        proposal: signed,
        precommits,
    });
    assert!(
        matches!(effects.as_slice(), [Effect::Decide { round: 0, .. }]),
        "{effects:?}"
    );
    assert_eq!(core.decided(), Some((0, value(5))));
}
