//! Inverse accounting: the smallest noise multiplier that meets a target ε (bisection).

use super::{epsilon_for, EpsilonAt};
use crate::error::{
    check_delta, check_epsilon, check_rounds, check_sample_rate, PrivacyError, Result,
};

/// Largest noise multiplier the search will consider.
const MAX_NOISE_MULTIPLIER: f64 = 1e6;
/// Smallest noise multiplier the search will consider.
const MIN_NOISE_MULTIPLIER: f64 = 1e-4;
/// Relative width of the final bracket.
const RELATIVE_TOLERANCE: f64 = 1e-9;

/// Smallest noise multiplier z (to within 1e-9 relative) with ε(z, q, rounds, δ) ≤ `target_epsilon`.
///
/// The returned z is always the upper end of the final bracket, so it never overshoots the target.
pub fn noise_multiplier_for(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    rounds: u64,
) -> Result<f64> {
    check_epsilon(target_epsilon)?;
    check_delta(delta)?;
    check_sample_rate(sample_rate)?;
    check_rounds(rounds)?;
    bisect_noise_multiplier(target_epsilon, |z| {
        epsilon_for(z, sample_rate, rounds, delta).map(|e: EpsilonAt| e.epsilon)
    })
}

/// Generic bisection: smallest z with `epsilon_of(z)` ≤ `target`, assuming ε decreases in z.
///
/// Used both for the plain accountant and, in `mechanism`, for the exact charged noise of a release.
pub fn bisect_noise_multiplier(
    target: f64,
    mut epsilon_of: impl FnMut(f64) -> Result<f64>,
) -> Result<f64> {
    check_epsilon(target)?;
    let mut hi = 1.0;
    while epsilon_of(hi)? > target {
        hi *= 2.0;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::invalid(
                "epsilon",
                format!(
                    "target ε = {target} needs a noise multiplier above {MAX_NOISE_MULTIPLIER}"
                ),
            ));
        }
    }
    let mut lo = hi / 2.0;
    while epsilon_of(lo)? <= target {
        hi = lo;
        lo /= 2.0;
        if lo < MIN_NOISE_MULTIPLIER {
            return Ok(hi);
        }
    }
    // Invariant: ε(lo) > target ≥ ε(hi).
    while (hi - lo) > RELATIVE_TOLERANCE * hi {
        let mid = 0.5 * (lo + hi);
        if epsilon_of(mid)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}
