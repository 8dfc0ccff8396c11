//! The validator set of a height and stake-weighted proposer rotation.
//!
//! Proposer selection is Tendermint's priority algorithm: each step, every validator's priority
//! grows by its voting power, the highest priority proposes (ties go to the lowest index), and
//! the proposer's priority drops by the total power. Over time each validator proposes in
//! proportion to its stake. Round `r` of a height uses `r + 1` steps from the height's starting
//! priorities; the next height starts one step further on.

use ed25519_dalek::VerifyingKey;

use super::types::{Round, ValidatorIndex};

/// A validator: its consensus key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub public_key: VerifyingKey,
    pub power: u64,
}

/// Why a validator set is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidatorSetError {
    #[error("validator set is empty")]
    Empty,
    #[error("validator {index} has zero voting power")]
    ZeroPower { index: usize },
    #[error("total voting power {total} exceeds the limit {limit}")]
    TooMuchPower { total: u128, limit: u64 },
    #[error("validators {first} and {second} share a public key")]
    DuplicateKey { first: usize, second: usize },
}

/// Total power is capped so that priorities never overflow an i64.
pub const MAX_TOTAL_POWER: u64 = i64::MAX as u64 / 8;

/// The validators of one height, with their proposer priorities at the height's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    priorities: Vec<i64>,
    total_power: u64,
}

impl ValidatorSet {
    pub fn new(validators: Vec<Validator>) -> Result<ValidatorSet, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        let mut total: u128 = 0;
        for (index, validator) in validators.iter().enumerate() {
            if validator.power == 0 {
                return Err(ValidatorSetError::ZeroPower { index });
            }
            total += u128::from(validator.power);
        }
        if total > u128::from(MAX_TOTAL_POWER) {
            return Err(ValidatorSetError::TooMuchPower {
                total,
                limit: MAX_TOTAL_POWER,
            });
        }
        let mut keys: Vec<(&[u8; 32], usize)> = validators
            .iter()
            .enumerate()
            .map(|(index, validator)| (validator.public_key.as_bytes(), index))
            .collect();
        keys.sort();
        for pair in keys.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(ValidatorSetError::DuplicateKey {
                    first: pair[0].1.min(pair[1].1),
                    second: pair[0].1.max(pair[1].1),
                });
            }
        }
        let count = validators.len();
        Ok(ValidatorSet {
            validators,
            priorities: vec![0; count],
            total_power: total as u64,
        })
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(index as usize)
    }

    pub fn power(&self, index: ValidatorIndex) -> u64 {
        self.get(index).map_or(0, |validator| validator.power)
    }

    pub fn index_of(&self, key: &VerifyingKey) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|validator| validator.public_key == *key)
            .map(|index| index as ValidatorIndex)
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// More than two thirds of the total power.
    pub fn is_quorum(&self, power: u64) -> bool {
        u128::from(power) * 3 > u128::from(self.total_power) * 2
    }

    /// More than one third of the total power (at least one honest validator).
    pub fn is_one_third(&self, power: u64) -> bool {
        u128::from(power) * 3 > u128::from(self.total_power)
    }

    /// One priority step; returns the proposer it selects.
    fn step(&mut self) -> ValidatorIndex {
        let mut best = 0;
        for (index, validator) in self.validators.iter().enumerate() {
            self.priorities[index] += validator.power as i64;
            if self.priorities[index] > self.priorities[best] {
                best = index;
            }
        }
        self.priorities[best] -= self.total_power as i64;
        best as ValidatorIndex
    }

    /// Proposers of rounds `0..rounds` at this height.
    pub fn proposers(&self, rounds: Round) -> Vec<ValidatorIndex> {
        let mut scratch = self.clone();
        (0..rounds).map(|_| scratch.step()).collect()
    }

    /// The proposer of `round` at this height.
    pub fn proposer(&self, round: Round) -> ValidatorIndex {
        let mut scratch = self.clone();
        let mut proposer = 0;
        for _ in 0..=round {
            proposer = scratch.step();
        }
        proposer
    }

    /// The same validators with the priorities of the next height's start.
    pub fn next_height(&self) -> ValidatorSet {
        let mut next = self.clone();
        next.step();
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    pub(crate) fn set(powers: &[u64]) -> ValidatorSet {
        let validators = powers
            .iter()
            .enumerate()
            .map(|(index, power)| Validator {
                public_key: SigningKey::from_bytes(&[index as u8 + 1; 32]).verifying_key(),
                power: *power,
            })
            .collect();
        ValidatorSet::new(validators).unwrap()
    }

    #[test]
    fn equal_stake_rotates_round_robin() {
        let validators = set(&[10, 10, 10, 10]);
        assert_eq!(validators.proposers(8), vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(validators.next_height().proposer(0), 1);
    }

    #[test]
    fn proposals_are_proportional_to_stake() {
        let validators = set(&[1, 2, 7]);
        let proposers = validators.proposers(1000);
        let count = |index| proposers.iter().filter(|p| **p == index).count();
        assert_eq!((count(0), count(1), count(2)), (100, 200, 700));
    }

    #[test]
    fn thresholds_are_strict() {
        let validators = set(&[1, 1, 1]);
        assert!(!validators.is_quorum(2));
        assert!(validators.is_quorum(3));
        assert!(!validators.is_one_third(1));
        assert!(validators.is_one_third(2));
        let four = set(&[1, 1, 1, 1]);
        assert!(four.is_quorum(3) && !four.is_quorum(2));
        assert!(four.is_one_third(2) && !four.is_one_third(1));
    }

    #[test]
    fn bad_sets_are_refused() {
        assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Empty));
        let key = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let zero = vec![Validator {
            public_key: key,
            power: 0,
        }];
        assert_eq!(
            ValidatorSet::new(zero),
            Err(ValidatorSetError::ZeroPower { index: 0 })
        );
        let twice = vec![
            Validator {
                public_key: key,
                power: 1,
            },
            Validator {
                public_key: key,
                power: 1,
            },
        ];
        assert_eq!(
            ValidatorSet::new(twice),
            Err(ValidatorSetError::DuplicateKey {
                first: 0,
                second: 1
            })
        );
    }
}
