//! RDP → (ε, δ) conversion of Balle, Barthe, Gaboardi, Hsu and Sato (2020), as in Opacus and
//! Google's dp_accounting: ε = RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1), minimised over α.

use serde::{Deserialize, Serialize};

use crate::error::{check_delta, PrivacyError, Result};

/// Orders at or below this are skipped: the bound is numerically unstable as α → 1.
const MIN_CONVERSION_ORDER: f64 = 1.01;

/// An ε together with the RDP order that attained it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpsilonAt {
    /// The (ε, δ)-DP ε.
    pub epsilon: f64,
    /// The Rényi order α at which the minimum was attained.
    pub order: f64,
}

/// Converts an RDP curve (`rdp[i]` at `orders[i]`) to the smallest ε at `delta` over the grid.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<EpsilonAt> {
    check_delta(delta)?;
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(PrivacyError::invalid(
            "RDP curve",
            format!(
                "needs as many values as orders and at least one (got {} orders, {} values)",
                orders.len(),
                rdp.len()
            ),
        ));
    }
    let log_delta = delta.ln();
    let mut best = EpsilonAt {
        epsilon: f64::INFINITY,
        order: f64::NAN,
    };
    for (&a, &r) in orders.iter().zip(rdp) {
        if !(a.is_finite() && a >= 1.0) || r.is_nan() || r < 0.0 {
            return Err(PrivacyError::invalid(
                "RDP curve",
                format!("order {a} with RDP {r}: orders must be ≥ 1 and RDP ≥ 0"),
            ));
        }
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            // δ ≥ sqrt(1 − e^{−KL}) and RDP(α) ≥ KL: (0, δ)-DP already holds.
            0.0
        } else if a > MIN_CONVERSION_ORDER {
            r + (-1.0 / a).ln_1p() - (log_delta + a.ln()) / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.epsilon {
            best = EpsilonAt {
                epsilon: eps,
                order: a,
            };
        }
    }
    if best.epsilon.is_infinite() {
        // Report the order anyway so callers can print it; ε is genuinely unbounded on this grid.
        best.order = orders.last().copied().unwrap_or(f64::NAN);
    }
    best.epsilon = best.epsilon.max(0.0);
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_closed_form_matches_the_formula_at_one_order() {
        let orders = [2.0];
        let rdp = [2.0 / (2.0 * 4.0)];
        let e = epsilon_from_rdp(&orders, &rdp, 1e-5).unwrap();
        let want = 0.25 + (0.5f64).ln() - (1e-5f64.ln() + 2f64.ln());
        assert!((e.epsilon - want).abs() < 1e-12);
        assert_eq!(e.order, 2.0);
    }

    #[test]
    fn zero_curve_gives_zero() {
        let e = epsilon_from_rdp(&[1.5, 2.0], &[0.0, 0.0], 1e-5).unwrap();
        assert_eq!(e.epsilon, 0.0);
    }

    #[test]
    fn rejects_mismatched_or_negative_curves() {
        assert!(epsilon_from_rdp(&[2.0], &[0.1, 0.2], 1e-5).is_err());
        assert!(epsilon_from_rdp(&[2.0], &[-0.1], 1e-5).is_err());
        assert!(epsilon_from_rdp(&[0.5], &[0.1], 1e-5).is_err());
        assert!(epsilon_from_rdp(&[2.0], &[0.1], 0.0).is_err());
        assert!(epsilon_from_rdp(&[2.0], &[0.1], 1.0).is_err());
    }
}
