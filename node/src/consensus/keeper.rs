//! The vote keeper of one height: counts voting power per round, step and value, ignores
//! duplicates, and turns two different votes of one validator for one round and step into
//! [`Evidence`].
//!
//! An equivocator's votes count once toward *each* value it signed (up to
//! [`MAX_VALUES_PER_VALIDATOR`]), and once toward the "any value" total. This is what lets an
//! honest validator verify a polka or a commit that other honest validators saw, even when the
//! equivocator showed it a different vote first (Tendermint gets the same from "peer maj23"
//! claims). It is safe: with at most f faulty of 3f+1, two quorums for different values in one
//! round would need 4f+2 - 2f = 2f+2 honest votes, more than the 2f+1 honest validators.

use std::collections::BTreeMap;

use super::types::{Evidence, Round, SignedVote, ValidatorIndex, ValueId, Vote, VoteKind};

/// Distinct values one validator's votes count for in one round and step.
pub const MAX_VALUES_PER_VALIDATOR: usize = 4;

/// What adding a vote did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Counted.
    Added,
    /// The same vote was already counted; nothing changed.
    Duplicate,
    /// The validator had voted differently: evidence. The new vote counts for its value too
    /// (unless the validator already signed [`MAX_VALUES_PER_VALIDATOR`] values here).
    Equivocation(Box<Evidence>),
}

/// Votes of one step in one round.
#[derive(Clone, Debug, Default)]
struct StepVotes {
    by_validator: Vec<Option<SignedVote>>,
    /// Later, different votes of equivocators.
    conflicting: Vec<SignedVote>,
    /// Power per value (`None` = nil); few distinct values, so a small vector.
    power_by_value: Vec<(Option<ValueId>, u64)>,
    total: u64,
}

impl StepVotes {
    fn power_for(&self, value: Option<ValueId>) -> u64 {
        self.power_by_value
            .iter()
            .find(|(candidate, _)| *candidate == value)
            .map_or(0, |(_, power)| *power)
    }
}

/// Votes of one round, plus who has spoken in it (for the round-skip rule).
#[derive(Clone, Debug, Default)]
struct RoundVotes {
    prevotes: StepVotes,
    precommits: StepVotes,
    spoke: Vec<bool>,
    spoke_power: u64,
}

/// All votes of one height.
#[derive(Clone, Debug)]
pub struct VoteKeeper {
    powers: Vec<u64>,
    rounds: BTreeMap<Round, RoundVotes>,
}

impl VoteKeeper {
    /// A keeper for validators with these voting powers (indexed by validator).
    pub fn new(powers: Vec<u64>) -> VoteKeeper {
        VoteKeeper {
            powers,
            rounds: BTreeMap::new(),
        }
    }

    fn round_mut(&mut self, round: Round) -> &mut RoundVotes {
        let count = self.powers.len();
        self.rounds.entry(round).or_insert_with(|| RoundVotes {
            prevotes: StepVotes {
                by_validator: vec![None; count],
                ..StepVotes::default()
            },
            precommits: StepVotes {
                by_validator: vec![None; count],
                ..StepVotes::default()
            },
            spoke: vec![false; count],
            spoke_power: 0,
        })
    }

    /// Records that `validator` sent something in `round` (a vote or a proposal).
    pub fn note_sender(&mut self, round: Round, validator: ValidatorIndex) {
        let Some(power) = self.powers.get(validator as usize).copied() else {
            return;
        };
        let votes = self.round_mut(round);
        let slot = &mut votes.spoke[validator as usize];
        if !*slot {
            *slot = true;
            votes.spoke_power += power;
        }
    }

    /// Adds a vote whose signature the caller has verified. Votes of unknown validators are
    /// ignored (reported as duplicates: they change nothing).
    pub fn add(&mut self, signed: SignedVote) -> AddOutcome {
        let vote = signed.vote;
        let Some(power) = self.powers.get(vote.validator as usize).copied() else {
            return AddOutcome::Duplicate;
        };
        self.note_sender(vote.round, vote.validator);
        let votes = self.round_mut(vote.round);
        let step = match vote.kind {
            VoteKind::Prevote => &mut votes.prevotes,
            VoteKind::Precommit => &mut votes.precommits,
        };
        let slot = &mut step.by_validator[vote.validator as usize];
        let outcome = match slot {
            Some(existing) => {
                let first = *existing;
                let mine = || {
                    step.conflicting
                        .iter()
                        .filter(|v| v.vote.validator == vote.validator)
                };
                if first.vote == vote || mine().any(|v| v.vote == vote) {
                    return AddOutcome::Duplicate;
                }
                let evidence = AddOutcome::Equivocation(Box::new(Evidence {
                    first,
                    second: signed,
                }));
                if mine().count() + 1 >= MAX_VALUES_PER_VALIDATOR {
                    return evidence;
                }
                step.conflicting.push(signed);
                evidence
            }
            None => {
                *slot = Some(signed);
                step.total += power;
                AddOutcome::Added
            }
        };
        match step
            .power_by_value
            .iter_mut()
            .find(|(value, _)| *value == vote.value)
        {
            Some((_, total)) => *total += power,
            None => step.power_by_value.push((vote.value, power)),
        }
        outcome
    }

    fn step(&self, round: Round, kind: VoteKind) -> Option<&StepVotes> {
        let votes = self.rounds.get(&round)?;
        Some(match kind {
            VoteKind::Prevote => &votes.prevotes,
            VoteKind::Precommit => &votes.precommits,
        })
    }

    /// Power of the votes for `value` (`None` = nil) in `round` and step `kind`.
    pub fn power_for(&self, round: Round, kind: VoteKind, value: Option<ValueId>) -> u64 {
        self.step(round, kind)
            .map_or(0, |step| step.power_for(value))
    }

    /// Power of all votes (any value or nil) in `round` and step `kind`.
    pub fn power_any(&self, round: Round, kind: VoteKind) -> u64 {
        self.step(round, kind).map_or(0, |step| step.total)
    }

    /// Power of the distinct validators that sent anything in `round`.
    pub fn round_power(&self, round: Round) -> u64 {
        self.rounds.get(&round).map_or(0, |votes| votes.spoke_power)
    }

    /// The vote `validator` cast in `round` and step `kind`, if any.
    pub fn vote_of(
        &self,
        round: Round,
        kind: VoteKind,
        validator: ValidatorIndex,
    ) -> Option<&SignedVote> {
        self.step(round, kind)?
            .by_validator
            .get(validator as usize)?
            .as_ref()
    }

    /// The precommits for `value` in `round`: the commit certificate once they form a quorum.
    pub fn precommits_for(&self, round: Round, value: ValueId) -> Vec<SignedVote> {
        self.votes_for(round, VoteKind::Precommit, value)
    }

    /// The votes of step `kind` for `value` in `round` (for prevotes: a proof of lock).
    pub fn votes_for(&self, round: Round, kind: VoteKind, value: ValueId) -> Vec<SignedVote> {
        self.step(round, kind)
            .map(|step| {
                step.by_validator
                    .iter()
                    .flatten()
                    .chain(step.conflicting.iter())
                    .filter(|signed| signed.vote.value == Some(value))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every vote held for `round`, prevotes first.
    pub fn votes_in_round(&self, round: Round) -> Vec<SignedVote> {
        let Some(votes) = self.rounds.get(&round) else {
            return Vec::new();
        };
        votes
            .prevotes
            .by_validator
            .iter()
            .chain(votes.precommits.by_validator.iter())
            .flatten()
            .copied()
            .collect()
    }

    /// Rounds that hold any message.
    pub fn rounds(&self) -> impl Iterator<Item = Round> + '_ {
        self.rounds.keys().copied()
    }

    /// The vote as counted, for tests and reporting.
    pub fn contains(&self, vote: &Vote) -> bool {
        self.vote_of(vote.round, vote.kind, vote.validator)
            .is_some_and(|signed| signed.vote == *vote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Hash;
    use ed25519_dalek::Signature;
    use proptest::prelude::*;

    fn signed(validator: u32, round: u32, kind: VoteKind, value: Option<u8>) -> SignedVote {
        SignedVote {
            vote: Vote {
                kind,
                height: 1,
                round,
                value: value.map(|byte| Hash([byte; 32])),
                validator,
            },
            signature: Signature::from_bytes(&[0; 64]),
        }
    }

    #[test]
    fn counts_power_per_value_and_step() {
        let mut keeper = VoteKeeper::new(vec![1, 2, 3, 4]);
        assert_eq!(
            keeper.add(signed(0, 0, VoteKind::Prevote, Some(1))),
            AddOutcome::Added
        );
        assert_eq!(
            keeper.add(signed(3, 0, VoteKind::Prevote, Some(1))),
            AddOutcome::Added
        );
        assert_eq!(
            keeper.add(signed(1, 0, VoteKind::Prevote, None)),
            AddOutcome::Added
        );
        assert_eq!(
            keeper.power_for(0, VoteKind::Prevote, Some(Hash([1; 32]))),
            5
        );
        assert_eq!(keeper.power_for(0, VoteKind::Prevote, None), 2);
        assert_eq!(keeper.power_any(0, VoteKind::Prevote), 7);
        assert_eq!(keeper.power_any(0, VoteKind::Precommit), 0);
        assert_eq!(keeper.round_power(0), 7);
    }

    #[test]
    fn duplicate_is_ignored_and_conflict_is_evidence() {
        let mut keeper = VoteKeeper::new(vec![1, 1, 1, 1]);
        let first = signed(2, 3, VoteKind::Precommit, Some(7));
        assert_eq!(keeper.add(first), AddOutcome::Added);
        assert_eq!(keeper.add(first), AddOutcome::Duplicate);
        let second = signed(2, 3, VoteKind::Precommit, Some(8));
        match keeper.add(second) {
            AddOutcome::Equivocation(evidence) => {
                assert_eq!(evidence.first, first);
                assert_eq!(evidence.second, second);
            }
            other => panic!("expected evidence, got {other:?}"),
        }
        assert_eq!(
            keeper.power_any(3, VoteKind::Precommit),
            1,
            "one validator, counted once in total"
        );
        assert_eq!(
            keeper.power_for(3, VoteKind::Precommit, Some(Hash([8; 32]))),
            1,
            "and once per value"
        );
        assert_eq!(keeper.precommits_for(3, Hash([7; 32])), vec![first]);
        assert_eq!(keeper.add(second), AddOutcome::Duplicate);
    }

    #[test]
    fn unknown_validator_changes_nothing() {
        let mut keeper = VoteKeeper::new(vec![1]);
        assert_eq!(
            keeper.add(signed(5, 0, VoteKind::Prevote, None)),
            AddOutcome::Duplicate
        );
        assert_eq!(keeper.round_power(0), 0);
    }

    proptest! {
        /// Whatever the order and repetition of votes, the power per value is the sum of the
        /// powers of the validators that voted for it (once each), the total counts each
        /// validator once, and every vote that differs from the validator's first is evidence.
        #[test]
        fn power_counting_matches_a_model(
            powers in proptest::collection::vec(1u64..100, 1..8),
            votes in proptest::collection::vec((0u32..8, 0u32..3, any::<bool>(), proptest::option::of(0u8..3)), 0..64),
        ) {
            let mut keeper = VoteKeeper::new(powers.clone());
            let mut first: std::collections::HashMap<(u32, u32, bool), Option<u8>> = Default::default();
            let mut cast: std::collections::HashSet<(u32, u32, bool, Option<u8>)> = Default::default();
            for (validator, round, precommit, value) in votes {
                let kind = if precommit { VoteKind::Precommit } else { VoteKind::Prevote };
                let outcome = keeper.add(signed(validator, round, kind, value));
                if validator as usize >= powers.len() {
                    prop_assert_eq!(outcome, AddOutcome::Duplicate);
                    continue;
                }
                cast.insert((validator, round, precommit, value));
                match first.get(&(validator, round, precommit)) {
                    None => {
                        first.insert((validator, round, precommit), value);
                        prop_assert_eq!(outcome, AddOutcome::Added);
                    }
                    Some(previous) if *previous == value => prop_assert_eq!(outcome, AddOutcome::Duplicate),
                    Some(_) if outcome == AddOutcome::Duplicate => {} // this conflicting vote came before
                    Some(_) => {
                        prop_assert!(matches!(outcome, AddOutcome::Equivocation(_)), "expected evidence");
                    }
                }
            }
            for round in 0..3 {
                for precommit in [false, true] {
                    let kind = if precommit { VoteKind::Precommit } else { VoteKind::Prevote };
                    let voters: u64 = first
                        .keys()
                        .filter(|(_, r, p)| *r == round && *p == precommit)
                        .map(|(validator, _, _)| powers[*validator as usize])
                        .sum();
                    prop_assert_eq!(keeper.power_any(round, kind), voters);
                }
            }
            for round in 0..3 {
                for precommit in [false, true] {
                    let kind = if precommit { VoteKind::Precommit } else { VoteKind::Prevote };
                    for value in [None, Some(0u8), Some(1), Some(2)] {
                        let model: u64 = cast
                            .iter()
                            .filter(|(_, r, p, v)| *r == round && *p == precommit && *v == value)
                            .map(|(validator, _, _, _)| powers[*validator as usize])
                            .sum();
                        prop_assert_eq!(keeper.power_for(round, kind, value.map(|b| Hash([b; 32]))), model);
                    }
                }
            }
        }
    }
}
