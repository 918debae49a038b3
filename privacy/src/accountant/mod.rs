//! The privacy accountant: RDP of the Poisson-subsampled Gaussian, composition over rounds,
//! conversion to (ε, δ) and the inverse (noise multiplier for a target ε).
//!
//! ```
//! use privacy::accountant::{epsilon_for, noise_multiplier_for};
//! // 100 rounds, every client takes part (q = 1), z = 5: what ε at δ = 1e-5?
//! let e = epsilon_for(5.0, 1.0, 100, 1e-5).unwrap();
//! // And back: the smallest z that keeps ε within that bound.
//! let z = noise_multiplier_for(e.epsilon, 1e-5, 1.0, 100).unwrap();
//! assert!((z - 5.0).abs() < 1e-3);
//! ```

pub mod calibrate;
pub mod conversion;
pub(crate) mod log_space;
pub mod rdp;

pub use calibrate::{bisect_noise_multiplier, noise_multiplier_for};
pub use conversion::{epsilon_from_rdp, EpsilonAt};
pub use rdp::{default_orders, subsampled_gaussian_curve, subsampled_gaussian_rdp};

use crate::error::{check_delta, check_rounds, PrivacyError, Result};

/// ε at `delta` after `rounds` rounds of the subsampled Gaussian (noise multiplier `z`, rate `q`).
pub fn epsilon_for(z: f64, q: f64, rounds: u64, delta: f64) -> Result<EpsilonAt> {
    check_rounds(rounds)?;
    check_delta(delta)?;
    let mut acc = RdpAccountant::new();
    acc.compose_subsampled_gaussian(q, z, rounds)?;
    acc.epsilon(delta)
}

/// Running RDP composition over a fixed order grid.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant on [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// An empty accountant on a caller-chosen grid (every order must be in (1, `rdp::MAX_ORDER`]).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty()
            || orders
                .iter()
                .any(|&a| !(a.is_finite() && a > 1.0 && a <= rdp::MAX_ORDER))
        {
            return Err(PrivacyError::invalid(
                "RDP orders",
                "need at least one order, each in (1, 100000]",
            ));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// The order grid.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP curve so far (one value per order).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Adds `steps` rounds of the subsampled Gaussian with rate `q` and noise multiplier `z`.
    pub fn compose_subsampled_gaussian(&mut self, q: f64, z: f64, steps: u64) -> Result<()> {
        let curve = subsampled_gaussian_curve(q, z, steps, &self.orders)?;
        self.compose_curve(&curve)
    }

    /// Adds an already computed RDP curve on the same grid (RDP composes additively).
    pub fn compose_curve(&mut self, curve: &[f64]) -> Result<()> {
        if curve.len() != self.orders.len() || curve.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err(PrivacyError::invalid(
                "RDP curve",
                format!(
                    "needs {} finite non-negative values, got {}",
                    self.orders.len(),
                    curve.len()
                ),
            ));
        }
        for (acc, r) in self.rdp.iter_mut().zip(curve) {
            *acc += r;
        }
        Ok(())
    }

    /// The best (ε, order) at `delta` for everything composed so far.
    pub fn epsilon(&self, delta: f64) -> Result<EpsilonAt> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }
}
