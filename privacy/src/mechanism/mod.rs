//! OpenDP-backed releases of one client's round upload: L2 clip, then distributed Gaussian noise.
//!
//! A release is built first (parameters only, no data); its cost is computed from OpenDP's
//! privacy maps; the ledger records that cost durably and only then hands back a [`Charged`]
//! release, the one value that can noise an upload. So "record before release" is enforced by
//! the types, not by convention.
//!
//! Distributed noise: with n expected participants each client adds noise of std z·Δ/√n, so the
//! sum of n shares carries z·Δ. If only m < n take part the sum carries z·Δ·√(m/n); the cost is
//! therefore charged for the smallest number of participants for which the aggregate is ever
//! released (`min_participants`, the secure-aggregation threshold below which the round aborts).

mod discrete;
mod gaussian;

pub use discrete::DiscreteGaussianRelease;
pub use gaussian::GaussianRelease;

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;
use serde::{Deserialize, Serialize};

use crate::accountant::{
    bisect_noise_multiplier, default_orders, subsampled_gaussian_curve, RdpAccountant,
};
use crate::error::{
    check_clip, check_delta, check_epsilon, check_noise_multiplier, check_rounds,
    check_sample_rate, PrivacyError, Result,
};

/// Smallest per-client noise scale, in units of the lattice the noise lives on (2^k or 1).
///
/// At ≥ 4 lattice steps the sum of discrete Gaussians differs from one discrete Gaussian (and a
/// discrete Gaussian from the continuous one the RDP accountant analyses) by terms of order
/// e^{−2π²·16} ≈ e^{−315} (Kairouz et al. 2021; Canonne et al. 2020), far below f64 precision.
pub const MIN_SCALE_IN_LATTICE_STEPS: f64 = 4.0;

/// Which mechanism produced a ledger entry: an OpenDP release, or DP-SGD training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MechanismKind {
    /// Gaussian noise on floats, sampled exactly by OpenDP on the lattice 2^k·ℤ.
    Gaussian,
    /// Discrete Gaussian noise on the integers of a quantized upload.
    DiscreteGaussian,
    /// DP-SGD: per-example clipping and Gaussian noise on each Poisson-sampled batch's sum.
    DpSgd,
}

impl MechanismKind {
    /// Short name for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian",
            Self::DiscreteGaussian => "discrete_gaussian",
            Self::DpSgd => "dp_sgd",
        }
    }
}

/// How the noise is represented: floats on a 2^k lattice, or integers after quantization.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSpec {
    /// Continuous path: OpenDP Gaussian over f64 with granularity 2^`granularity_exp`.
    Gaussian {
        /// k in the granularity 2^k of OpenDP's exact sampler (e.g. −30).
        granularity_exp: i32,
    },
    /// Integer path: clip, multiply by `quantization_scale`, round, add discrete Gaussian noise.
    DiscreteGaussian {
        /// Integer units per real unit (the quantizer of secure aggregation).
        quantization_scale: f64,
    },
}

/// The shape of one client's round release, as announced by the round's host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseConfig {
    /// L2 bound C on one client's whole round upload (the client-level sensitivity).
    pub clip: f64,
    /// z: the noise std of the *sum of n shares* divided by the sensitivity.
    pub noise_multiplier: f64,
    /// n: participants the per-client share σ/√n is sized for.
    pub expected_participants: u32,
    /// m ≤ n: fewest participants whose sum is ever released (secure-aggregation threshold).
    pub min_participants: u32,
    /// q: probability that this client is (Poisson-)sampled in a round; 1 when all take part.
    pub sample_rate: f64,
    /// Length of the flat upload vector.
    pub dimension: usize,
}

impl ReleaseConfig {
    /// Checks every field (C > 0, z > 0, 1 ≤ m ≤ n, q in (0, 1], dimension ≥ 1).
    pub fn validate(&self) -> Result<()> {
        check_clip(self.clip)?;
        check_noise_multiplier(self.noise_multiplier)?;
        check_sample_rate(self.sample_rate)?;
        if self.expected_participants == 0 {
            return Err(PrivacyError::invalid(
                "expected participants",
                "must be at least 1",
            ));
        }
        if self.min_participants == 0 || self.min_participants > self.expected_participants {
            return Err(PrivacyError::invalid(
                "min participants",
                format!(
                    "must lie in [1, expected participants = {}], got {}",
                    self.expected_participants, self.min_participants
                ),
            ));
        }
        if self.dimension == 0 {
            return Err(PrivacyError::invalid("dimension", "must be at least 1"));
        }
        Ok(())
    }

    /// √(m/n): the fraction of the nominal aggregate noise std guaranteed to be present.
    pub fn dropout_factor(&self) -> f64 {
        (f64::from(self.min_participants) / f64::from(self.expected_participants)).sqrt()
    }
}

/// What a release costs, from OpenDP's privacy maps, computed before any data is touched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseCost {
    /// The OpenDP mechanism.
    pub mechanism: MechanismKind,
    /// The noise representation (granularity or quantization).
    pub spec: NoiseSpec,
    /// The release's parameters.
    pub config: ReleaseConfig,
    /// L2 sensitivity in the noised domain: C, or C·s + √d/2 after rounding to integers.
    pub sensitivity: f64,
    /// Std of the noise each client adds, in the noised domain: z·Δ/√n.
    pub per_client_scale: f64,
    /// OpenDP zCDP ρ of the released *sum* with only `min_participants` noise shares.
    pub aggregate_rho: f64,
    /// OpenDP zCDP ρ of one client's noised upload if it were seen alone (no secure aggregation).
    pub local_rho: f64,
    /// Noise multiplier actually charged: 1/√(2·aggregate_rho) (≤ z·√(m/n), rounding included).
    pub charged_noise_multiplier: f64,
}

impl ReleaseCost {
    /// Computes the cost of a release shaped by `config` with noise representation `spec`.
    pub fn compute(config: &ReleaseConfig, spec: NoiseSpec) -> Result<Self> {
        config.validate()?;
        let d = config.dimension;
        let n_sqrt = f64::from(config.expected_participants).sqrt();
        let (mechanism, sensitivity, step) = match spec {
            NoiseSpec::Gaussian { granularity_exp } => {
                if !(-1000..=20).contains(&granularity_exp) {
                    return Err(PrivacyError::invalid(
                        "granularity exponent",
                        format!("must lie in [-1000, 20], got {granularity_exp}"),
                    ));
                }
                (
                    MechanismKind::Gaussian,
                    config.clip,
                    2f64.powi(granularity_exp),
                )
            }
            NoiseSpec::DiscreteGaussian { quantization_scale } => {
                let s = quantization_scale;
                if !(s.is_finite() && s > 0.0 && config.clip * s <= MAX_QUANTIZED_NORM) {
                    return Err(PrivacyError::invalid(
                        "quantization scale",
                        format!(
                            "must be > 0 with clip·scale ≤ {MAX_QUANTIZED_NORM:e}, got {s} (clip {})",
                            config.clip
                        ),
                    ));
                }
                // Round-to-nearest moves each coordinate by ≤ 1/2: ‖round(x)‖ ≤ C·s + √d/2.
                let delta = config.clip * s + 0.5 * (d as f64).sqrt();
                (MechanismKind::DiscreteGaussian, delta, 1.0)
            }
        };
        let per_client_scale = config.noise_multiplier * sensitivity / n_sqrt;
        if !(per_client_scale.is_finite() && per_client_scale >= MIN_SCALE_IN_LATTICE_STEPS * step)
        {
            return Err(PrivacyError::invalid(
                "noise multiplier",
                format!(
                    "each client's noise std {per_client_scale:e} must be ≥ {MIN_SCALE_IN_LATTICE_STEPS} \
                     lattice steps ({step:e}); raise z, the clip or the quantization scale"
                ),
            ));
        }
        let aggregate_scale = per_client_scale * f64::from(config.min_participants).sqrt();
        let (local_rho, aggregate_rho) = match spec {
            NoiseSpec::Gaussian { granularity_exp } => (
                float_rho(d, per_client_scale, granularity_exp, sensitivity)?,
                float_rho(d, aggregate_scale, granularity_exp, sensitivity)?,
            ),
            NoiseSpec::DiscreteGaussian { .. } => (
                int_rho(d, per_client_scale, sensitivity)?,
                int_rho(d, aggregate_scale, sensitivity)?,
            ),
        };
        if !(aggregate_rho.is_finite() && aggregate_rho > 0.0) {
            return Err(PrivacyError::Numerical(format!(
                "OpenDP's privacy map gave ρ = {aggregate_rho}"
            )));
        }
        let charged_noise_multiplier = (2.0 * aggregate_rho).sqrt().recip();
        Ok(Self {
            mechanism,
            spec,
            config: config.clone(),
            sensitivity,
            per_client_scale,
            aggregate_rho,
            local_rho,
            charged_noise_multiplier,
        })
    }

    /// One round's RDP curve at `orders`: subsampled Gaussian at (q, charged noise multiplier).
    pub fn rdp_curve(&self, orders: &[f64]) -> Result<Vec<f64>> {
        subsampled_gaussian_curve(
            self.config.sample_rate,
            self.charged_noise_multiplier,
            1,
            orders,
        )
    }
}

/// Largest C·s accepted by the integer path (keeps every quantized value exact in f64 and i64).
pub const MAX_QUANTIZED_NORM: f64 = (1u64 << 40) as f64;

/// OpenDP's zCDP ρ of the Gaussian over f64 vectors of length `d` at granularity 2^k.
fn float_rho(d: usize, scale: f64, k: i32, d_in: f64) -> Result<f64> {
    let domain = VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(d);
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        domain,
        L2Distance::<f64>::default(),
        scale,
        Some(k),
    )?;
    Ok(m.map(&d_in)?)
}

/// OpenDP's zCDP ρ of the discrete Gaussian over i64 vectors of length `d`.
fn int_rho(d: usize, scale: f64, d_in: f64) -> Result<f64> {
    let domain = VectorDomain::new(AtomDomain::<i64>::default()).with_size(d);
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        domain,
        L2Distance::<f64>::default(),
        scale,
        None,
    )?;
    Ok(m.map(&d_in)?)
}

/// A release whose cost is known before it runs (implemented by the Gaussian release types).
pub trait Release {
    /// The cost the ledger must record before the release may run.
    fn cost(&self) -> &ReleaseCost;
}

/// A release whose cost the ledger has durably recorded; the only way to noise an upload.
///
/// Built only by [`crate::ledger::Ledger::charge`]; consumed by its `noise*` method, so one
/// recorded entry pays for exactly one noised upload.
#[derive(Debug)]
pub struct Charged<R> {
    release: R,
    seq: u64,
}

impl<R: Release> Charged<R> {
    /// Wraps a release the ledger has just recorded as entry `seq`.
    pub(crate) fn new(release: R, seq: u64) -> Self {
        Self { release, seq }
    }

    /// Sequence number of the ledger entry that paid for this release.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The recorded cost.
    pub fn cost(&self) -> &ReleaseCost {
        self.release.cost()
    }
}

/// Scales `x` into the L2 ball of radius `clip` (unchanged if already inside); rejects NaN/∞.
pub fn clip_l2(x: &[f64], clip: f64) -> Result<Vec<f64>> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(PrivacyError::invalid(
            "upload",
            "contains NaN or infinite values",
        ));
    }
    // Scale before squaring so huge entries cannot overflow.
    let max_abs = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max_abs == 0.0 {
        return Ok(x.to_vec());
    }
    let norm = max_abs * x.iter().map(|v| (v / max_abs).powi(2)).sum::<f64>().sqrt();
    if norm <= clip {
        return Ok(x.to_vec());
    }
    // Shrink a hair more than C/‖x‖ so f64 rounding can never leave the norm above C.
    let factor = clip / norm * (1.0 - 1e-12);
    Ok(x.iter().map(|v| v * factor).collect())
}

/// Most rounds [`calibrate_noise_multiplier`] composes one by one.
pub const MAX_CALIBRATION_ROUNDS: u64 = 1_000_000;

/// Smallest nominal noise multiplier z such that `rounds` releases shaped like `config` (its
/// `noise_multiplier` ignored) cost at most `target_epsilon` at `delta`, exactly as the ledger
/// will charge them (OpenDP's map, lattice rounding and the `min_participants` rule included)
/// on a ledger using [`default_orders`].
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    rounds: u64,
    config: &ReleaseConfig,
    spec: NoiseSpec,
) -> Result<f64> {
    check_epsilon(target_epsilon)?;
    check_delta(delta)?;
    check_rounds(rounds)?;
    if rounds > MAX_CALIBRATION_ROUNDS {
        return Err(PrivacyError::invalid(
            "rounds",
            format!("at most {MAX_CALIBRATION_ROUNDS} for calibration, got {rounds}"),
        ));
    }
    let orders = default_orders();
    let mut trial = config.clone();
    bisect_noise_multiplier(target_epsilon, |z| {
        trial.noise_multiplier = z;
        match ReleaseCost::compute(&trial, spec) {
            Ok(cost) => {
                // Compose exactly as the ledger will (curve added once per round), so the last
                // calibrated round is never refused over floating-point rounding.
                let curve = cost.rdp_curve(&orders)?;
                let mut acc = RdpAccountant::with_orders(orders.clone())?;
                for _ in 0..rounds {
                    acc.compose_curve(&curve)?;
                }
                acc.epsilon(delta).map(|e| e.epsilon)
            }
            // Too little noise for the lattice: treat as "not private enough" so bisection moves up.
            Err(PrivacyError::InvalidArgument {
                name: "noise multiplier",
                ..
            }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    })
}
