//! Rényi DP of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019).
//!
//! With sampling rate q and noise multiplier σ (noise std / L2 sensitivity), one step has
//! RDP(α) = log A_α / (α − 1), where A_α = E_{z∼μ0}[(μ(z)/μ0(z))^α], μ0 = N(0, σ²),
//! μ1 = N(1, σ²), μ = (1 − q)μ0 + qμ1. For integer α the binomial expansion is exact and
//! finite; for fractional α the generalised binomial series is split at the point z0 where
//! (1 − q)μ0 = qμ1, so that each half converges. All sums are done in log space.

use super::log_space::{log_add, log_ndtr, log_sub};
use crate::error::{check_noise_multiplier, check_sample_rate, PrivacyError, Result};

/// Iterations after which a slowly converging fractional-order series gives up and the
/// (conservative) log-convex interpolation between the neighbouring integer orders is used.
const MAX_SERIES_TERMS: usize = 20_000;

/// A series term below e^-38 (relative to A_α ≥ 1) no longer changes an f64 sum.
const SERIES_CUTOFF_LOG: f64 = -38.0;

/// Stop once a term is below e^-18 ≈ 1.5e-8 of A_α − 1 (what RDP ≈ (A_α − 1)/(α − 1) depends on).
const SERIES_RELATIVE_CUTOFF_LOG: f64 = -18.0;

/// Largest RDP order accepted (the integer expansion has α + 1 terms).
pub const MAX_ORDER: f64 = 100_000.0;

/// The dense order grid used by the accountant and the ledger.
///
/// Fine steps near α = 1 (where small ε at small δ is decided), integers up to 64 and a few large
/// orders for very small noise; about 330 orders in all.
pub fn default_orders() -> Vec<f64> {
    let mut orders = Vec::with_capacity(340);
    // 1.02, 1.04, ..., 2.00
    orders.extend((51..=100).map(|i| f64::from(i) / 50.0));
    // 2.05, ..., 10.00
    orders.extend((41..=200).map(|i| f64::from(i) / 20.0));
    // 10.25, ..., 20.00
    orders.extend((41..=80).map(|i| f64::from(i) / 4.0));
    // 21, ..., 64
    orders.extend((21..=64).map(f64::from));
    // 72, 80, ..., 256
    orders.extend((9..=32).map(|i| f64::from(i) * 8.0));
    orders.extend([320.0, 384.0, 512.0, 768.0, 1024.0]);
    orders
}

/// RDP at `order` of one step of the Poisson-subsampled Gaussian with rate `q` and noise multiplier `sigma`.
pub fn subsampled_gaussian_rdp(q: f64, sigma: f64, order: f64) -> Result<f64> {
    check_sample_rate(q)?;
    check_noise_multiplier(sigma)?;
    if !(order.is_finite() && order > 1.0 && order <= MAX_ORDER) {
        return Err(PrivacyError::invalid(
            "RDP order",
            format!("must lie in (1, {MAX_ORDER}], got {order}"),
        ));
    }
    if q == 1.0 {
        // Plain Gaussian mechanism: RDP(α) = α / (2σ²).
        return Ok(order / (2.0 * sigma * sigma));
    }
    let log_a = if order.fract() == 0.0 {
        log_a_int(q, sigma, order as u64)
    } else {
        log_a_frac(q, sigma, order)?
    };
    // Subsampling never hurts: the unsampled Gaussian's α/(2σ²) caps every (conservative) bound.
    let rdp = (log_a / (order - 1.0)).min(order / (2.0 * sigma * sigma));
    if rdp.is_nan() || rdp < -1e-12 {
        return Err(PrivacyError::Numerical(format!(
            "RDP of the subsampled Gaussian at order {order} (q = {q}, σ = {sigma}) came out {rdp}"
        )));
    }
    // A_α ≥ 1 in exact arithmetic; tiny negative values are round-off.
    Ok(rdp.max(0.0))
}

/// RDP curve of `steps` composed steps of the subsampled Gaussian at each of `orders`.
///
/// Rényi divergence is non-decreasing in α, so a (conservative) bound at one order is replaced
/// by the value at any larger order when that is smaller; the curve is therefore monotone.
pub fn subsampled_gaussian_curve(
    q: f64,
    sigma: f64,
    steps: u64,
    orders: &[f64],
) -> Result<Vec<f64>> {
    let steps = steps as f64;
    let mut curve = orders
        .iter()
        .map(|&a| subsampled_gaussian_rdp(q, sigma, a).map(|r| r * steps))
        .collect::<Result<Vec<f64>>>()?;
    let mut by_order: Vec<usize> = (0..orders.len()).collect();
    by_order.sort_by(|&i, &j| orders[i].total_cmp(&orders[j]));
    let mut smallest_above = f64::INFINITY;
    for &i in by_order.iter().rev() {
        curve[i] = curve[i].min(smallest_above);
        smallest_above = curve[i];
    }
    Ok(curve)
}

/// log A_α for integer α by the finite binomial expansion
/// A_α = Σ_k C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / (2σ²)).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let lg_a1 = libm::lgamma(a + 1.0);
    let mut acc = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let kf = k as f64;
        let log_binom = lg_a1 - libm::lgamma(kf + 1.0) - libm::lgamma(a - kf + 1.0);
        let rest = if k == alpha { 0.0 } else { (a - kf) * log_1mq };
        let term = log_binom + kf * log_q + rest + (kf * kf - kf) / two_var;
        acc = log_add(acc, term);
    }
    acc
}

/// log A_α for fractional α: the two generalised binomial series split at z0.
///
/// A_α = Σ_i C(α,i) (1−q)^{α−i} q^i e^{(i²−i)/(2σ²)} Φ((z0 − i)/σ)
///     + Σ_i C(α,i) (1−q)^i q^{α−i} e^{(j²−j)/(2σ²)} Φ((j − z0)/σ),  j = α − i,
/// with z0 = σ² log(1/q − 1) + 1/2. Terms alternate in sign once i > α.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let lg_a1 = libm::lgamma(alpha + 1.0);
    let mut pos = f64::NEG_INFINITY;
    let mut neg = f64::NEG_INFINITY;
    for i in 0..MAX_SERIES_TERMS {
        let fi = i as f64;
        let (lg_rest, sign_rest) = libm::lgamma_r(alpha - fi + 1.0);
        let log_coef = lg_a1 - libm::lgamma(fi + 1.0) - lg_rest;
        let j = alpha - fi;
        let t0 = log_coef
            + fi * log_q
            + j * log_1mq
            + (fi * fi - fi) / two_var
            + log_ndtr((z0 - fi) / sigma);
        let t1 = log_coef
            + j * log_q
            + fi * log_1mq
            + (j * j - j) / two_var
            + log_ndtr((j - z0) / sigma);
        let term = log_add(t0, t1);
        if sign_rest > 0 {
            pos = log_add(pos, term);
        } else {
            neg = log_add(neg, term);
        }
        if fi > alpha {
            let log_a = log_sub(pos, neg).ok_or_else(|| {
                PrivacyError::Numerical(format!(
                    "fractional-order series at α = {alpha} cancelled to a non-positive value"
                ))
            })?;
            let log_a_minus_1 = log_a.exp_m1().max(f64::MIN_POSITIVE).ln();
            if term < SERIES_CUTOFF_LOG || term < log_a_minus_1 + SERIES_RELATIVE_CUTOFF_LOG {
                // Past α the terms alternate in sign and shrink, so the remainder is at most the
                // last term: add it to stay an upper bound.
                return Ok(log_add(log_a, term));
            }
        }
    }
    // Slow convergence (q near 1/2 and small σ): log A_α is convex in α (Hölder), so the chord
    // between the neighbouring integer orders bounds it from above — conservative, never lower.
    let lo = alpha.floor();
    let hi = alpha.ceil();
    let log_lo = if lo <= 1.0 {
        0.0 // A_1 = 1
    } else {
        log_a_int(q, sigma, lo as u64)
    };
    let log_hi = log_a_int(q, sigma, hi as u64);
    Ok(log_lo + (alpha - lo) * (log_hi - log_lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_fractional_paths_agree_near_integers() {
        // The fractional series at α = 3 ± tiny must straddle the exact binomial value at 3.
        let exact = subsampled_gaussian_rdp(0.05, 1.2, 3.0).unwrap();
        let below = subsampled_gaussian_rdp(0.05, 1.2, 3.0 - 1e-9).unwrap();
        let above = subsampled_gaussian_rdp(0.05, 1.2, 3.0 + 1e-9).unwrap();
        assert!((below - exact).abs() / exact < 1e-6, "{below} vs {exact}");
        assert!((above - exact).abs() / exact < 1e-6, "{above} vs {exact}");
    }

    #[test]
    fn full_participation_is_the_plain_gaussian() {
        let r = subsampled_gaussian_rdp(1.0, 2.0, 5.0).unwrap();
        assert!((r - 5.0 / 8.0).abs() < 1e-15);
    }

    #[test]
    fn tiny_sample_rate_tends_to_zero() {
        let r = subsampled_gaussian_rdp(1e-6, 1.0, 2.5).unwrap();
        assert!(r < 1e-10, "{r}");
    }

    #[test]
    fn interpolation_fallback_bounds_from_above() {
        // A slowly converging case: q = 0.5, small σ.
        let q = 0.5;
        let s = 0.6;
        let frac = subsampled_gaussian_rdp(q, s, 2.5).unwrap();
        let lo = log_a_int(q, s, 2);
        let hi = log_a_int(q, s, 3);
        let chord = (lo + 0.5 * (hi - lo)) / 1.5;
        assert!(frac <= chord * (1.0 + 1e-9), "{frac} > chord {chord}");
        assert!(frac > 0.0);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(subsampled_gaussian_rdp(0.0, 1.0, 2.0).is_err());
        assert!(subsampled_gaussian_rdp(1.5, 1.0, 2.0).is_err());
        assert!(subsampled_gaussian_rdp(0.1, -1.0, 2.0).is_err());
        assert!(subsampled_gaussian_rdp(0.1, 1.0, 1.0).is_err());
        assert!(subsampled_gaussian_rdp(0.1, 1.0, f64::NAN).is_err());
    }
}
