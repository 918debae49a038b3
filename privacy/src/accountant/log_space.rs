//! Log-space arithmetic used by the accountant: stable sums and the log normal CDF.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// log(e^a + e^b) without overflow; −∞ is the neutral element.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(e^a − e^b) for a > b; `None` when the difference is not positive.
pub(crate) fn log_sub(a: f64, b: f64) -> Option<f64> {
    if b == f64::NEG_INFINITY {
        return Some(a);
    }
    if a <= b {
        return None;
    }
    // log(e^a − e^b) = a + log(1 − e^{b−a})
    let d = b - a;
    let v = if d > -LN_2 {
        (-d.exp_m1()).ln()
    } else {
        (-d.exp()).ln_1p()
    };
    Some(a + v)
}

/// log Φ(x), the log of the standard normal CDF, accurate in both tails.
pub(crate) fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        // Φ(x) = 1 − Φ(−x), with Φ(−x) tiny.
        (-0.5 * libm::erfc(x / SQRT_2)).ln_1p()
    } else if x > -20.0 {
        (0.5 * libm::erfc(-x / SQRT_2)).ln()
    } else if x.is_finite() {
        // Asymptotic series: Φ(x) = φ(x)/|x| · Σ_k (−1)^k (2k−1)!! / x^{2k}; for |x| ≥ 20 the
        // terms shrink by ≥ 1/400 each, so six terms are exact to f64 precision.
        let inv_x2 = 1.0 / (x * x);
        let mut term = 1.0;
        let mut sum = 1.0;
        for k in 1..=6 {
            term *= -f64::from(2 * k - 1) * inv_x2;
            sum += term;
        }
        -0.5 * x * x - (-x).ln() - 0.5 * (2.0 * PI).ln() + sum.ln()
    } else if x.is_nan() {
        f64::NAN
    } else {
        f64::NEG_INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_add_and_sub_are_inverse() {
        let a = 3.0_f64;
        let b = 1.5_f64;
        let s = log_add(a, b);
        assert!((s - (a.exp() + b.exp()).ln()).abs() < 1e-14);
        let back = log_sub(s, b).unwrap();
        assert!((back - a).abs() < 1e-13);
        assert!(log_sub(1.0, 1.0).is_none());
        assert_eq!(
            log_add(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert!((log_add(1e6, 1e6) - (1e6 + LN_2)).abs() < 1e-9);
    }

    #[test]
    fn log_ndtr_matches_known_values() {
        // Φ(0) = 1/2, Φ(−1) = 0.15865525393145707, Φ(2) = 0.9772498680518208.
        assert!((log_ndtr(0.0) - 0.5_f64.ln()).abs() < 1e-15);
        assert!((log_ndtr(-1.0) - 0.158_655_253_931_457_07_f64.ln()).abs() < 1e-13);
        assert!((log_ndtr(2.0) - 0.977_249_868_051_820_8_f64.ln()).abs() < 1e-13);
        // Continuity across the branch at −20 (relative to the value, about −203.9).
        let left = log_ndtr(-20.0 - 1e-9);
        let right = log_ndtr(-20.0 + 1e-9);
        assert!((left - right).abs() < 1e-6, "{left} vs {right}");
        // Deep tail stays finite where Φ itself underflows.
        let deep = log_ndtr(-60.0);
        assert!(deep.is_finite() && deep < -1800.0);
        assert!(log_ndtr(40.0) <= 0.0 && log_ndtr(40.0) > -1e-300);
    }
}
