//! Empirical lower bounds on ε from one training run: Steinke, Nasr and Jagielski 2023, "Privacy
//! Auditing with One (1) Training Run" (NeurIPS 2023).
//!
//! Setting: `m` canaries, each included in the private training data independently with
//! probability 1/2. After training, the auditor scores every canary (higher = more likely
//! included), guesses "in" for some, "out" for some and abstains on the rest: `r` guesses, `v`
//! of them correct. Under ε-DP the number of correct guesses is stochastically dominated by
//! Binomial(r, e^ε/(1+e^ε)), so observing `v` is evidence against every ε whose p-value
//! P[Binomial(r, e^ε/(1+e^ε)) ≥ v] is below β = 1 − confidence. The reported lower bound is the
//! largest such ε: the mechanism is not ε-DP for any smaller ε, at confidence 1 − β.
//!
//! For an (ε, δ) claim with δ > 0 the p-value gains the paper's term 2mδ·α (their Theorem for
//! approximate DP); [`epsilon_lower_bound_with_delta`] computes that bound, which needs `m`.

use crate::accountant::log_space::log_add;
use crate::error::{PrivacyError, Result};

/// Confidence 1 − β at which bounds are usually reported (β = 0.05).
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Upper end of the ε search; a bound reaching it is reported as this value.
pub const MAX_EPSILON: f64 = 50.0;

/// Bisection stops once the bracket is this narrow.
const EPSILON_TOLERANCE: f64 = 1e-12;

/// Most bisection steps (the bracket halves each time; 64 already reach f64 resolution).
const MAX_BISECTION_STEPS: usize = 200;

/// Summation of binomial terms stops once a term is this far (in log) below the running sum.
const NEGLIGIBLE_LOG_TERM: f64 = -40.0;

/// Largest ε such that `correct` of `guesses` membership guesses would still be unlikely
/// (p-value < 1 − `confidence`) under ε-DP (δ = 0); 0 when no ε ≥ 0 is rejected.
///
/// This tests pure ε-DP. Against an (ε, δ) claim with δ > 0 it is not a valid test on its own:
/// use [`epsilon_lower_bound_with_delta`], which adds the δ term to the p-value.
pub fn epsilon_lower_bound(guesses: u64, correct: u64, confidence: f64) -> Result<f64> {
    check_counts(guesses, correct)?;
    let log_beta = log_beta(confidence)?;
    largest_rejected(|eps| Ok(log_tail(guesses, correct, eps) < log_beta))
}

/// Largest ε such that the mechanism is not (ε, `delta`)-DP at `confidence`, from `correct` of
/// `guesses` guesses about `canaries` canaries (the paper's bound for approximate DP).
///
/// The p-value is P[Binomial(r, p) ≥ v] + 2mδ · max_{1≤i≤v} P[v − i ≤ Binomial(r, p) < v] / i
/// with p = e^ε/(1+e^ε); with `delta` = 0 it equals [`epsilon_lower_bound`].
pub fn epsilon_lower_bound_with_delta(
    canaries: u64,
    guesses: u64,
    correct: u64,
    confidence: f64,
    delta: f64,
) -> Result<f64> {
    check_counts(guesses, correct)?;
    check_canaries(canaries, guesses)?;
    check_audit_delta(delta)?;
    let beta = log_beta(confidence)?.exp();
    largest_rejected(|eps| Ok(p_value_unchecked(canaries, guesses, correct, eps, delta) < beta))
}

/// Probability of at least `correct` right guesses out of `guesses` about `canaries` canaries
/// if the mechanism were (`epsilon`, `delta`)-DP (capped at 1).
pub fn p_value(canaries: u64, guesses: u64, correct: u64, epsilon: f64, delta: f64) -> Result<f64> {
    check_counts(guesses, correct)?;
    check_canaries(canaries, guesses)?;
    check_audit_delta(delta)?;
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(PrivacyError::invalid(
            "epsilon",
            format!("must be finite and ≥ 0, got {epsilon}"),
        ));
    }
    Ok(p_value_unchecked(
        canaries, guesses, correct, epsilon, delta,
    ))
}

/// The guesses of a threshold attack: the `k_in` highest-scored canaries are guessed "in", the
/// `k_out` lowest-scored "out"; returns (guesses, correct).
///
/// Canaries are put in one total order, higher score first and, among equal scores, lower index
/// first; the first `k_in` and the last `k_out` of that order are guessed (`k_out` shrinks so
/// the two never overlap). Scores must be finite and `included` as long as `scores`.
pub fn guesses_from_scores(
    scores: &[f64],
    included: &[bool],
    k_in: usize,
    k_out: usize,
) -> Result<(u64, u64)> {
    if scores.len() != included.len() {
        return Err(PrivacyError::invalid(
            "included",
            format!(
                "needs one flag per score ({} scores, {} flags)",
                scores.len(),
                included.len()
            ),
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(PrivacyError::invalid(
            "scores",
            format!("score {i} is {}; every score must be finite", scores[i]),
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let k_in = k_in.min(order.len());
    let k_out = k_out.min(order.len() - k_in);
    let right_in = order[..k_in].iter().filter(|&&i| included[i]).count();
    let right_out = order[order.len() - k_out..]
        .iter()
        .filter(|&&i| !included[i])
        .count();
    Ok(((k_in + k_out) as u64, (right_in + right_out) as u64))
}

/// Bisection for the largest ε in [0, [`MAX_EPSILON`]] that `rejected` accepts, keeping the
/// lower end rejected throughout (so the answer is itself a rejected ε, or 0).
fn largest_rejected(rejected: impl Fn(f64) -> Result<bool>) -> Result<f64> {
    if !rejected(0.0)? {
        return Ok(0.0);
    }
    if rejected(MAX_EPSILON)? {
        return Ok(MAX_EPSILON);
    }
    let (mut lo, mut hi) = (0.0f64, MAX_EPSILON);
    for _ in 0..MAX_BISECTION_STEPS {
        if hi - lo <= EPSILON_TOLERANCE {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if rejected(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// (ε, δ) p-value for already validated inputs.
fn p_value_unchecked(canaries: u64, guesses: u64, correct: u64, eps: f64, delta: f64) -> f64 {
    let tail = log_tail(guesses, correct, eps).exp();
    let extra = if delta > 0.0 && correct > 0 {
        let log_alpha = log_alpha(guesses, correct, eps);
        (log_alpha + (2.0 * canaries as f64 * delta).ln()).exp()
    } else {
        0.0
    };
    (tail + extra).min(1.0)
}

/// log P[Binomial(r, p(ε)) ≥ v], summed in log space from k = v upwards.
fn log_tail(r: u64, v: u64, eps: f64) -> f64 {
    if v == 0 {
        return 0.0;
    }
    let (log_p, log_q) = log_accuracy(eps);
    let mode = (r as f64 + 1.0) * log_p.exp();
    let lg_r1 = libm::lgamma(r as f64 + 1.0);
    let mut acc = f64::NEG_INFINITY;
    for k in v..=r {
        let term = log_binomial_pmf(lg_r1, r, k, log_p, log_q);
        acc = log_add(acc, term);
        if k as f64 > mode && term < acc + NEGLIGIBLE_LOG_TERM {
            break;
        }
    }
    acc
}

/// log max_{1≤i≤v} P[v − i ≤ Binomial(r, p(ε)) < v] / i.
fn log_alpha(r: u64, v: u64, eps: f64) -> f64 {
    let (log_p, log_q) = log_accuracy(eps);
    let mode = (r as f64 + 1.0) * log_p.exp();
    let lg_r1 = libm::lgamma(r as f64 + 1.0);
    let mut cum = f64::NEG_INFINITY;
    let mut best = f64::NEG_INFINITY;
    for i in 1..=v {
        let k = v - i;
        let term = log_binomial_pmf(lg_r1, r, k, log_p, log_q);
        cum = log_add(cum, term);
        best = best.max(cum - (i as f64).ln());
        // Below the mode the terms only shrink: the cumulative sum has stopped growing and its
        // ratio to i can only fall from here.
        if (k as f64) < mode && term < cum + NEGLIGIBLE_LOG_TERM {
            break;
        }
    }
    best
}

/// (log p, log(1 − p)) for p = e^ε/(1+e^ε), the accuracy of ε-DP randomized response.
fn log_accuracy(eps: f64) -> (f64, f64) {
    let soft = (-eps).exp().ln_1p();
    (-soft, -eps - soft)
}

/// log C(r, k) p^k (1 − p)^{r−k}, with `lg_r1` = lgamma(r + 1).
fn log_binomial_pmf(lg_r1: f64, r: u64, k: u64, log_p: f64, log_q: f64) -> f64 {
    let kf = k as f64;
    let rest = (r - k) as f64;
    let log_choose = lg_r1 - libm::lgamma(kf + 1.0) - libm::lgamma(rest + 1.0);
    let from_q = if r == k { 0.0 } else { rest * log_q };
    log_choose + kf * log_p + from_q
}

/// log β for β = 1 − confidence, after checking 0 < confidence < 1.
fn log_beta(confidence: f64) -> Result<f64> {
    if confidence.is_finite() && confidence > 0.0 && confidence < 1.0 {
        Ok((-confidence).ln_1p())
    } else {
        Err(PrivacyError::invalid(
            "confidence",
            format!("must lie in (0, 1), got {confidence}"),
        ))
    }
}

/// Checks correct ≤ guesses.
fn check_counts(guesses: u64, correct: u64) -> Result<()> {
    if correct <= guesses {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "correct guesses",
            format!("{correct} exceeds the {guesses} guesses made"),
        ))
    }
}

/// Checks guesses ≤ canaries.
fn check_canaries(canaries: u64, guesses: u64) -> Result<()> {
    if guesses <= canaries {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "canaries",
            format!("{guesses} guesses about only {canaries} canaries"),
        ))
    }
}

/// Checks 0 ≤ δ < 1 (δ = 0 is pure DP here).
fn check_audit_delta(delta: f64) -> Result<()> {
    if delta.is_finite() && (0.0..1.0).contains(&delta) {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "delta",
            format!("must lie in [0, 1), got {delta}"),
        ))
    }
}
