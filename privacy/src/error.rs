//! Typed errors of the differential-privacy part of the crate (mechanisms, accountant, ledger).

use std::path::PathBuf;

/// Result alias for the DP mechanisms, the accountant and the ledger.
pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;

/// Everything that can go wrong when releasing, accounting or recording a DP release.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A caller- or user-supplied parameter is out of its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The parameter's name as the user knows it.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// OpenDP refused to build or run a measurement.
    #[error("OpenDP: {0}")]
    OpenDp(String),
    /// A numerical computation did not produce a finite, trustworthy value.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// The release or training would take the node over its (ε, δ) cap; the node must abstain.
    #[error(
        "privacy budget exceeded: spent ε = {spent:.4}, this charge would make it ε = {would_be:.4} \
         but the cap is ε = {cap} at δ = {delta:e}; abstaining"
    )]
    BudgetExceeded {
        /// ε spent before this release, at the budget's δ.
        spent: f64,
        /// ε after this charge (a release or training), at the budget's δ.
        would_be: f64,
        /// The cap ε_max.
        cap: f64,
        /// The budget's δ.
        delta: f64,
    },
    /// The ledger's hash chain or signatures do not verify; the node refuses to spend more.
    #[error("ledger integrity check failed: {0}")]
    ChainBroken(String),
    /// The sled store failed.
    #[error("ledger storage: {0}")]
    Storage(#[from] sled::Error),
    /// A file in the data directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored record or key could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// The node's signing key could not be created or used.
    #[error("node key: {0}")]
    Key(String),
}

impl PrivacyError {
    /// Builds an [`PrivacyError::InvalidArgument`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    /// True when the error means "the budget does not allow this release" (abstain, don't fail).
    pub fn is_budget_exceeded(&self) -> bool {
        matches!(self, Self::BudgetExceeded { .. })
    }

    /// True when the error is a bad parameter (the CLI maps it to exit code 2).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Self::InvalidArgument { .. })
    }
}

impl From<opendp::error::Error> for PrivacyError {
    fn from(err: opendp::error::Error) -> Self {
        Self::OpenDp(format!(
            "{:?}: {}",
            err.variant,
            err.message.unwrap_or_default()
        ))
    }
}

/// Checks 0 < q ≤ 1 (client sampling rate per round).
pub(crate) fn check_sample_rate(q: f64) -> Result<()> {
    if q.is_finite() && q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "sample rate",
            format!("must lie in (0, 1], got {q}"),
        ))
    }
}

/// Checks 0 < δ < 1.
pub(crate) fn check_delta(delta: f64) -> Result<()> {
    if delta.is_finite() && delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "delta",
            format!("must lie in (0, 1), got {delta}"),
        ))
    }
}

/// Checks that a noise multiplier σ/Δ is finite and positive.
pub(crate) fn check_noise_multiplier(z: f64) -> Result<()> {
    if z.is_finite() && z > 0.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "noise multiplier",
            format!("must be finite and > 0, got {z}"),
        ))
    }
}

/// Checks that an L2 clip bound C is finite and positive.
pub(crate) fn check_clip(clip: f64) -> Result<()> {
    if clip.is_finite() && clip > 0.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "clip",
            format!("must be finite and > 0, got {clip}"),
        ))
    }
}

/// Checks that a target or cap ε is finite and positive.
pub(crate) fn check_epsilon(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "epsilon",
            format!("must be finite and > 0, got {eps}"),
        ))
    }
}

/// Checks rounds ≥ 1.
pub(crate) fn check_rounds(rounds: u64) -> Result<()> {
    if rounds >= 1 {
        Ok(())
    } else {
        Err(PrivacyError::invalid("rounds", "must be at least 1"))
    }
}
