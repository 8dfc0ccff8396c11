//! Bisection of a commit range by A/B verdicts (`devnet bisect`): which commit first made a
//! figure worse than the good commit. Pure: the caller measures (builds, runs pairs, judges);
//! this module decides what to measure next and when a step needs more pairs.
//!
//! Commits are indexed `0..len`: 0 is the known-good commit, `len - 1` the bad one. The bad end
//! is measured first (a range whose end is not worse has nothing to bisect), then the midpoint
//! of the remaining range each step, as `git bisect` does, so `n` commits take about
//! `log2(n) + 1` steps. A step whose verdict is neither Worse nor "not worse" (Inconclusive, or
//! Saturated) is measured again with more pairs, up to `retries` times; a step still undecided
//! then ends the bisection with the range it narrowed down to.

use serde::Serialize;

use crate::bench::Verdict;

/// One measured step: commit `index` against the good commit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub index: usize,
    /// Each try's verdict, the last one decisive unless the bisection stopped there.
    pub verdicts: Vec<Verdict>,
}

/// How a bisection ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `first_bad` is the first commit judged worse; the one before it was judged not worse
    /// (or is the good commit).
    Found { first_bad: usize },
    /// The bad commit is not worse than the good one: nothing to bisect.
    BadNotWorse { verdict: Verdict },
    /// A step stayed undecided after every retry: the first bad commit lies in
    /// `good + 1 ..= bad`, and `undecided` could not be judged.
    Undecided {
        good: usize,
        bad: usize,
        undecided: usize,
    },
}

/// Whether a verdict decides a step: `Some(true)` worse, `Some(false)` not worse.
fn decides(verdict: Verdict) -> Option<bool> {
    match verdict {
        Verdict::Worse => Some(true),
        Verdict::Same | Verdict::Better => Some(false),
        Verdict::Inconclusive | Verdict::Saturated => None,
    }
}

/// Bisects commits `0..len` (`len >= 2`). `measure(index, try)` judges commit `index` against
/// commit 0; `try` counts from 0 and grows on each retry of the same commit (the caller adds
/// pairs). Returns the outcome and every step in order.
pub fn bisect<E>(
    len: usize,
    retries: usize,
    mut measure: impl FnMut(usize, usize) -> Result<Verdict, E>,
) -> Result<(Outcome, Vec<Step>), E> {
    assert!(len >= 2, "a range needs a good and a bad commit");
    let mut steps = Vec::new();
    let (mut good, mut bad) = (0, len - 1);
    let mut index = bad;
    loop {
        let mut step = Step {
            index,
            verdicts: Vec::new(),
        };
        let mut worse = None;
        for attempt in 0..=retries {
            let verdict = measure(index, attempt)?;
            step.verdicts.push(verdict);
            worse = decides(verdict);
            if worse.is_some() {
                break;
            }
        }
        let last = *step.verdicts.last().expect("at least one try");
        steps.push(step);
        match worse {
            None if index == len - 1 => return Ok((Outcome::BadNotWorse { verdict: last }, steps)),
            None => {
                let outcome = Outcome::Undecided {
                    good,
                    bad,
                    undecided: index,
                };
                return Ok((outcome, steps));
            }
            Some(false) if index == len - 1 => {
                return Ok((Outcome::BadNotWorse { verdict: last }, steps))
            }
            Some(true) => bad = index,
            Some(false) => good = index,
        }
        if bad - good <= 1 {
            return Ok((Outcome::Found { first_bad: bad }, steps));
        }
        index = good + (bad - good) / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of `len` commits where every commit from `first_bad` on is worse.
    fn run(len: usize, first_bad: usize) -> (Outcome, Vec<Step>) {
        bisect::<()>(len, 2, |index, _| {
            Ok(if index >= first_bad {
                Verdict::Worse
            } else {
                Verdict::Same
            })
        })
        .unwrap()
    }

    #[test]
    fn finds_the_first_worse_commit_in_about_log2_steps() {
        for len in 2..=40 {
            for first_bad in 1..len {
                let (outcome, steps) = run(len, first_bad);
                assert_eq!(outcome, Outcome::Found { first_bad }, "len {len}");
                let bound = (len as f64).log2().ceil() as usize + 1;
                assert!(steps.len() <= bound, "len {len}: {} steps", steps.len());
                assert_eq!(steps[0].index, len - 1, "the bad end is measured first");
            }
        }
    }

    #[test]
    fn a_bad_end_that_is_not_worse_ends_at_once() {
        let (outcome, steps) = bisect::<()>(6, 2, |_, _| Ok(Verdict::Same)).unwrap();
        assert_eq!(
            outcome,
            Outcome::BadNotWorse {
                verdict: Verdict::Same
            }
        );
        assert_eq!(steps.len(), 1);
    }

    #[test]
    fn an_undecided_step_is_retried_with_more_pairs_then_reported() {
        // Commit 3 judges Inconclusive on its first try and Worse on its second.
        let mut tries = Vec::new();
        let (outcome, _) = bisect::<()>(6, 2, |index, attempt| {
            tries.push((index, attempt));
            Ok(match (index, attempt) {
                (3, 0) => Verdict::Inconclusive,
                (index, _) if index >= 3 => Verdict::Worse,
                _ => Verdict::Same,
            })
        })
        .unwrap();
        assert_eq!(outcome, Outcome::Found { first_bad: 3 });
        assert!(tries.contains(&(3, 1)), "{tries:?}");
        // Never judged: the range is narrowed to commit 2 and 3, and 3 stays undecided.
        let (outcome, steps) = bisect::<()>(6, 1, |index, _| {
            Ok(match index {
                5 => Verdict::Worse,
                2 => Verdict::Same,
                _ => Verdict::Inconclusive,
            })
        })
        .unwrap();
        assert_eq!(
            outcome,
            Outcome::Undecided {
                good: 2,
                bad: 5,
                undecided: 3
            }
        );
        assert_eq!(steps.last().unwrap().verdicts.len(), 2, "one retry");
    }

    #[test]
    fn a_measuring_error_stops_the_bisection() {
        let result = bisect(4, 2, |index, _| {
            if index == 1 {
                Err("build failed")
            } else {
                Ok(Verdict::Worse)
            }
        });
        assert_eq!(result, Err("build failed"));
    }
}
