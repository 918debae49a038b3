//! Integer path: clip, quantize by round-to-nearest, then OpenDP's discrete Gaussian on i64,
//! so the noise is added in the domain that secure aggregation sums.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use super::{clip_l2, Charged, NoiseSpec, Release, ReleaseConfig, ReleaseCost};
use crate::error::{PrivacyError, Result};

/// A clip + quantize + discrete-Gaussian release of one client's upload.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteGaussianRelease {
    cost: ReleaseCost,
    quantization_scale: f64,
}

impl DiscreteGaussianRelease {
    /// A release quantizing with `quantization_scale` integer units per real unit.
    pub fn new(config: &ReleaseConfig, quantization_scale: f64) -> Result<Self> {
        let cost =
            ReleaseCost::compute(config, NoiseSpec::DiscreteGaussian { quantization_scale })?;
        Ok(Self {
            cost,
            quantization_scale,
        })
    }

    /// What this release costs (OpenDP's ρ, the charged noise multiplier, ...).
    pub fn cost(&self) -> &ReleaseCost {
        &self.cost
    }

    /// Integer units per real unit.
    pub fn quantization_scale(&self) -> f64 {
        self.quantization_scale
    }
}

impl Release for DiscreteGaussianRelease {
    fn cost(&self) -> &ReleaseCost {
        &self.cost
    }
}

impl Charged<DiscreteGaussianRelease> {
    /// Clips `upload` to L2 norm C, quantizes it (round(x·s)) and adds discrete Gaussian noise
    /// of std z·Δ/√n in integer units; divide the secure-aggregated sum by s to get reals back.
    pub fn noise(self, upload: &[f32]) -> Result<Vec<i64>> {
        let release = &self.release;
        let d = release.cost.config.dimension;
        if upload.len() != d {
            return Err(PrivacyError::invalid(
                "upload",
                format!("has {} values, the release was built for {d}", upload.len()),
            ));
        }
        let wide: Vec<f64> = upload.iter().map(|&v| f64::from(v)).collect();
        let clipped = clip_l2(&wide, release.cost.config.clip)?;
        // |x·s| ≤ C·s ≤ 2^40 (checked when the cost was computed), so the cast is exact.
        let quantized: Vec<i64> = clipped
            .iter()
            .map(|v| (v * release.quantization_scale).round() as i64)
            .collect();
        let domain = VectorDomain::new(AtomDomain::<i64>::default()).with_size(d);
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::<f64>::default(),
            release.cost.per_client_scale,
            None,
        )?;
        Ok(m.invoke(&quantized)?)
    }
}
