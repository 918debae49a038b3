//! What a ledger entry paid for: one noised release, or one stretch of private training (DP-SGD).

use serde::{Deserialize, Serialize};

use crate::accountant::subsampled_gaussian_curve;
use crate::error::{check_clip, check_noise_multiplier, check_sample_rate, PrivacyError, Result};
use crate::mechanism::{MechanismKind, ReleaseCost};

/// The cost recorded in a ledger entry.
///
/// Untagged in JSON, so entries written before training was recorded (a bare [`ReleaseCost`])
/// still parse; the two shapes share no required field set, so decoding is unambiguous.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Spend {
    /// A noised release through OpenDP: a round upload, or a node's one-time class shares.
    Release(ReleaseCost),
    /// DP-SGD steps over the node's private records.
    Training(TrainingCost),
}

impl Spend {
    /// The spend's RDP curve at `orders` (what the ledger composes).
    pub fn rdp_curve(&self, orders: &[f64]) -> Result<Vec<f64>> {
        match self {
            Self::Release(c) => c.rdp_curve(orders),
            Self::Training(c) => c.rdp_curve(orders),
        }
    }

    /// Checks the recorded parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Release(c) => c.config.validate(),
            Self::Training(c) => c.validate(),
        }
    }

    /// The mechanism: OpenDP's for a release, [`MechanismKind::DpSgd`] for training.
    pub fn mechanism(&self) -> MechanismKind {
        match self {
            Self::Release(c) => c.mechanism,
            Self::Training(_) => MechanismKind::DpSgd,
        }
    }

    /// The release's cost, when this is a release.
    pub fn as_release(&self) -> Option<&ReleaseCost> {
        match self {
            Self::Release(c) => Some(c),
            Self::Training(_) => None,
        }
    }

    /// The training's cost, when this is training.
    pub fn as_training(&self) -> Option<&TrainingCost> {
        match self {
            Self::Release(_) => None,
            Self::Training(c) => Some(c),
        }
    }
}

impl From<ReleaseCost> for Spend {
    fn from(c: ReleaseCost) -> Self {
        Self::Release(c)
    }
}

impl From<TrainingCost> for Spend {
    fn from(c: TrainingCost) -> Self {
        Self::Training(c)
    }
}

/// DP-SGD over a node's private records: `steps` Poisson-sampled steps, each clipping every
/// example's gradient to `clip` and adding Gaussian noise of std `noise_multiplier · clip`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingCost {
    /// Size of the private dataset (sets `sample_rate` = expected batch / records).
    pub records: u64,
    /// q: probability that a record is (Poisson-)sampled into a step's batch.
    pub sample_rate: f64,
    /// z: noise std on the sum of clipped gradients divided by the clip.
    pub noise_multiplier: f64,
    /// C: per-example L2 clip.
    pub clip: f64,
    /// T: number of noised steps.
    pub steps: u64,
}

impl TrainingCost {
    /// Checks q in (0, 1], z > 0 finite, C > 0 finite, steps ≥ 1, records ≥ 1.
    pub fn validate(&self) -> Result<()> {
        if self.records == 0 {
            return Err(PrivacyError::invalid("records", "must be at least 1"));
        }
        check_sample_rate(self.sample_rate)?;
        check_noise_multiplier(self.noise_multiplier)?;
        check_clip(self.clip)?;
        if self.steps == 0 {
            return Err(PrivacyError::invalid("steps", "must be at least 1"));
        }
        Ok(())
    }

    /// RDP of the `steps` composed subsampled-Gaussian steps at `orders`.
    pub fn rdp_curve(&self, orders: &[f64]) -> Result<Vec<f64>> {
        subsampled_gaussian_curve(self.sample_rate, self.noise_multiplier, self.steps, orders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn training() -> TrainingCost {
        TrainingCost {
            records: 1000,
            sample_rate: 0.064,
            noise_multiplier: 1.1,
            clip: 1.0,
            steps: 50,
        }
    }

    #[test]
    fn validation_rejects_each_bad_field() {
        assert!(training().validate().is_ok());
        let bad = [
            TrainingCost {
                records: 0,
                ..training()
            },
            TrainingCost {
                sample_rate: 0.0,
                ..training()
            },
            TrainingCost {
                sample_rate: 1.5,
                ..training()
            },
            TrainingCost {
                noise_multiplier: 0.0,
                ..training()
            },
            TrainingCost {
                noise_multiplier: f64::INFINITY,
                ..training()
            },
            TrainingCost {
                clip: -1.0,
                ..training()
            },
            TrainingCost {
                clip: f64::NAN,
                ..training()
            },
            TrainingCost {
                steps: 0,
                ..training()
            },
        ];
        for c in bad {
            let err = c.validate().unwrap_err();
            assert!(err.is_invalid_argument(), "{c:?}: {err}");
        }
    }

    #[test]
    fn training_json_round_trips_as_training() {
        let s = Spend::Training(training());
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("Training"), "untagged: {json}");
        let back: Spend = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.mechanism(), MechanismKind::DpSgd);
    }

    #[test]
    fn curve_is_the_composed_subsampled_gaussian() {
        let c = training();
        let orders = [1.5, 2.0, 8.0];
        let want = subsampled_gaussian_curve(0.064, 1.1, 50, &orders).unwrap();
        assert_eq!(c.rdp_curve(&orders).unwrap(), want);
    }
}
