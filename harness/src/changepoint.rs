//! Change points in a series of benchmark figures: E-Divisive means (Matteson and James, 2014),
//! the method Apache Otava (formerly Hunter) applies to performance histories.
//!
//! For a split of the series into a left part X and a right part Y, the divergence
//!
//! ```text
//! q = |X||Y|/(|X|+|Y|) * ( 2 mean|x - y| - mean|x - x'| - mean|y - y'| )
//! ```
//!
//! grows when the two parts differ in distribution. The split with the largest `q` is a
//! candidate; it is kept when a permutation test (the series shuffled, the best `q` found again,
//! [`PERMUTATIONS`] times with a fixed seed) gives a p-value under `alpha`. The two parts are
//! then searched the same way (binary segmentation), down to [`MIN_SEGMENT`] points.

use rand::{seq::SliceRandom, SeedableRng};
use serde::Serialize;

/// Permutations per significance test.
pub const PERMUTATIONS: usize = 199;
/// Fewest points on each side of a change point.
pub const MIN_SEGMENT: usize = 2;

/// One change point: the first index of the new regime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangePoint {
    pub index: usize,
    /// Mean of the segment before and after (up to the neighbouring change points).
    pub before: f64,
    pub after: f64,
    pub p_value: f64,
}

fn mean_abs_between(left: &[f64], right: &[f64]) -> f64 {
    let mut sum = 0.0;
    for x in left {
        for y in right {
            sum += (x - y).abs();
        }
    }
    sum / (left.len() * right.len()) as f64
}

fn mean_abs_within(part: &[f64]) -> f64 {
    let n = part.len();
    if n < 2 {
        return 0.0;
    }
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += (part[i] - part[j]).abs();
        }
    }
    sum / (n * (n - 1) / 2) as f64
}

/// The split index with the largest divergence, and that divergence (`None` when the series is
/// too short to split).
pub fn best_split(series: &[f64]) -> Option<(usize, f64)> {
    let n = series.len();
    if n < 2 * MIN_SEGMENT {
        return None;
    }
    (MIN_SEGMENT..=n - MIN_SEGMENT)
        .map(|tau| {
            let (left, right) = series.split_at(tau);
            let weight = (left.len() * right.len()) as f64 / n as f64;
            let q = weight
                * (2.0 * mean_abs_between(left, right)
                    - mean_abs_within(left)
                    - mean_abs_within(right));
            (tau, q)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The change points of `series`, in order. Deterministic: the permutations use a fixed seed.
pub fn change_points(series: &[f64], alpha: f64) -> Vec<ChangePoint> {
    assert!(alpha > 0.0 && alpha < 1.0, "alpha must be in (0, 1)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xed1_u64);
    let mut found: Vec<(usize, f64)> = Vec::new();
    // Segments still to search, as [start, end).
    let mut pending = vec![(0, series.len())];
    while let Some((start, end)) = pending.pop() {
        let segment = &series[start..end];
        let Some((tau, q)) = best_split(segment) else {
            continue;
        };
        if q <= 0.0 {
            continue;
        }
        let mut shuffled = segment.to_vec();
        let mut as_large = 0;
        for _ in 0..PERMUTATIONS {
            shuffled.shuffle(&mut rng);
            if best_split(&shuffled).is_some_and(|(_, other)| other >= q) {
                as_large += 1;
            }
        }
        let p_value = (as_large + 1) as f64 / (PERMUTATIONS + 1) as f64;
        if p_value < alpha {
            found.push((start + tau, p_value));
            pending.push((start, start + tau));
            pending.push((start + tau, end));
        }
    }
    found.sort_by_key(|(index, _)| *index);
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(found.iter().map(|(index, _)| *index))
        .chain(std::iter::once(series.len()))
        .collect();
    found
        .iter()
        .enumerate()
        .map(|(k, (index, p_value))| ChangePoint {
            index: *index,
            before: mean(&series[bounds[k]..*index]),
            after: mean(&series[*index..bounds[k + 2]]),
            p_value: *p_value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise in [-amplitude, amplitude], reproducible.
    fn noisy(level: f64, amplitude: f64, count: usize, seed: u64) -> Vec<f64> {
        use rand::Rng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| level + rng.gen_range(-amplitude..=amplitude))
            .collect()
    }

    #[test]
    fn a_step_is_found_where_it_happens() {
        let mut series = noisy(20.0, 2.0, 12, 1);
        series.extend(noisy(30.0, 2.0, 8, 2));
        let points = change_points(&series, 0.05);
        assert_eq!(points.len(), 1, "{points:?}");
        assert_eq!(points[0].index, 12);
        assert!(
            points[0].before < 22.0 && points[0].after > 28.0,
            "{points:?}"
        );
        assert!(points[0].p_value < 0.05);
    }

    #[test]
    fn noise_alone_has_no_change_point() {
        for seed in 0..5 {
            let series = noisy(20.0, 3.0, 20, 100 + seed);
            assert_eq!(change_points(&series, 0.05), Vec::new(), "seed {seed}");
        }
    }

    #[test]
    fn two_steps_are_both_found() {
        let mut series = noisy(10.0, 0.5, 8, 3);
        series.extend(noisy(15.0, 0.5, 8, 4));
        series.extend(noisy(11.0, 0.5, 8, 5));
        let indices: Vec<usize> = change_points(&series, 0.05)
            .iter()
            .map(|point| point.index)
            .collect();
        assert_eq!(indices, vec![8, 16]);
    }

    #[test]
    fn short_series_have_none() {
        assert_eq!(change_points(&[1.0, 5.0, 9.0], 0.05), Vec::new());
        assert!(best_split(&[1.0, 2.0, 3.0]).is_none());
    }
}
