//! Continuous path: clip in f64, then OpenDP's exact Gaussian sampler on the lattice 2^k·ℤ.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use super::{clip_l2, Charged, NoiseSpec, Release, ReleaseConfig, ReleaseCost};
use crate::error::{PrivacyError, Result};

/// A clip + Gaussian release of one client's f32/f64 upload (cost known, nothing run yet).
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianRelease {
    cost: ReleaseCost,
    granularity_exp: i32,
}

impl GaussianRelease {
    /// Default lattice 2^-30 ≈ 9.3e-10: far below any useful noise std, cheap for OpenDP to sample.
    pub const DEFAULT_GRANULARITY_EXP: i32 = -30;

    /// What this release costs (OpenDP's ρ, the charged noise multiplier, ...).
    pub fn cost(&self) -> &ReleaseCost {
        &self.cost
    }

    /// A release with the default granularity.
    pub fn new(config: &ReleaseConfig) -> Result<Self> {
        Self::with_granularity(config, Self::DEFAULT_GRANULARITY_EXP)
    }

    /// A release whose noise lives on the lattice 2^`granularity_exp`·ℤ.
    pub fn with_granularity(config: &ReleaseConfig, granularity_exp: i32) -> Result<Self> {
        let cost = ReleaseCost::compute(config, NoiseSpec::Gaussian { granularity_exp })?;
        Ok(Self {
            cost,
            granularity_exp,
        })
    }
}

impl GaussianRelease {
    /// OpenDP's Gaussian at this release's per-client scale and granularity on `values`.
    fn sample(&self, values: &[f64]) -> Result<Vec<f64>> {
        let domain = VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(values.len());
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::<f64>::default(),
            self.cost.per_client_scale,
            Some(self.granularity_exp),
        )?;
        Ok(m.invoke(&values.to_vec())?)
    }
}

impl Release for GaussianRelease {
    fn cost(&self) -> &ReleaseCost {
        &self.cost
    }
}

impl Charged<GaussianRelease> {
    /// Clips `upload` to L2 norm C and adds this client's noise share (std z·C/√n).
    pub fn noise_f64(self, upload: &[f64]) -> Result<Vec<f64>> {
        let release = &self.release;
        let d = release.cost.config.dimension;
        if upload.len() != d {
            return Err(PrivacyError::invalid(
                "upload",
                format!("has {} values, the release was built for {d}", upload.len()),
            ));
        }
        let clipped = clip_l2(upload, release.cost.config.clip)?;
        release.sample(&clipped)
    }

    /// Noises a histogram of record counts without clipping it: one record moves one count by
    /// 1, so its add/remove-one-record L2 sensitivity is 1, which must not exceed the release's
    /// clip (the sensitivity the cost was computed for).
    pub fn noise_counts(self, counts: &[f64]) -> Result<Vec<f64>> {
        let release = &self.release;
        let d = release.cost.config.dimension;
        if counts.len() != d || release.cost.config.clip < 1.0 {
            return Err(PrivacyError::invalid(
                "counts",
                format!(
                    "{} counts for a release of dimension {d} with sensitivity {} (need ≥ 1)",
                    counts.len(),
                    release.cost.config.clip
                ),
            ));
        }
        release.sample(counts)
    }

    /// [`Self::noise_f64`] for an f32 upload (noised in f64, rounded back: post-processing).
    pub fn noise_f32(self, upload: &[f32]) -> Result<Vec<f32>> {
        let wide: Vec<f64> = upload.iter().map(|&v| f64::from(v)).collect();
        let noised = self.noise_f64(&wide)?;
        Ok(noised.into_iter().map(|v| v as f32).collect())
    }
}
