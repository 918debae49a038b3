//! The one path by which a client's upload leaves it: the spend is recorded in its ledger
//! first (durable, signed), then the upload is clipped and noised and clamped to the
//! encoding's bound; the session masks it next. The node and the simulation both use it.

use std::collections::HashMap;

use privacy::error::PrivacyError;
use privacy::ledger::{ChargeContext, Ledger};
use privacy::mechanism::{calibrate_noise_multiplier, GaussianRelease, NoiseSpec, ReleaseConfig};
use privacy::PrivacyUnit;

use super::client::ReleasePlan;

/// A client's privacy knobs: its whole budget, the clip, and the releases the noise is
/// calibrated for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyPlan {
    /// Total ε the client may spend.
    pub epsilon: f64,
    /// δ of the guarantee.
    pub delta: f64,
    /// L2 bound every upload is clipped to.
    pub clip: f64,
    /// Releases the noise is calibrated for: this many spend the whole budget.
    pub planned_rounds: u32,
}

/// What the release produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// The privatised upload, charged to the ledger.
    Noised(Vec<f32>),
    /// The ledger refused the spend: the client sits the round out.
    BudgetExhausted,
}

/// Charges and noises a client's uploads, calibrating the noise once per round shape.
#[derive(Debug, Clone)]
pub struct Releaser {
    plan: PrivacyPlan,
    /// Calibrated noise multipliers by (participants, noise shares unknown to the host).
    noise: HashMap<(u32, u32), f64>,
}

impl Releaser {
    /// A releaser for `plan`.
    pub fn new(plan: PrivacyPlan) -> Self {
        Self {
            plan,
            noise: HashMap::new(),
        }
    }

    /// The release shape of a round (noise multiplier z).
    fn config(&self, round: &ReleasePlan, z: f64) -> ReleaseConfig {
        ReleaseConfig {
            clip: self.plan.clip,
            noise_multiplier: z,
            expected_participants: round.participants,
            min_participants: round.noise_shares,
            sample_rate: 1.0,
            dimension: round.dim,
        }
    }

    /// The noise multiplier for a round of this shape: `planned_rounds` releases of it spend
    /// exactly the budget.
    pub fn noise_multiplier(&mut self, round: &ReleasePlan) -> Result<f64, PrivacyError> {
        let key = (round.participants, round.noise_shares);
        if let Some(z) = self.noise.get(&key) {
            return Ok(*z);
        }
        let spec = NoiseSpec::Gaussian {
            granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
        };
        let z = calibrate_noise_multiplier(
            self.plan.epsilon,
            self.plan.delta,
            u64::from(self.plan.planned_rounds.max(1)),
            &self.config(round, 1.0),
            spec,
        )?;
        self.noise.insert(key, z);
        Ok(z)
    }

    /// The noise multiplier z of a sum of `noise_shares` releases under this plan, whatever
    /// the round's shape: each release's noise has standard deviation z·clip/√noise_shares.
    /// What a host expects of the noise of clients with its own budget.
    pub fn aggregate_noise_multiplier(&mut self) -> Result<f64, PrivacyError> {
        self.noise_multiplier(&ReleasePlan {
            term: 0,
            round: 0,
            attempt: 0,
            participants: 2,
            noise_shares: 2,
            dim: 1,
            bound: f32::MAX,
        })
    }

    /// Releases `upload` for `round`: charged to `ledger` under `dataset_id` first, then
    /// clipped, noised and clamped to the encoding's bound.
    pub fn release(
        &mut self,
        ledger: &Ledger,
        round: &ReleasePlan,
        dataset_id: String,
        upload: &[f32],
    ) -> Result<Release, PrivacyError> {
        if upload.len() != round.dim {
            return Err(PrivacyError::invalid(
                "upload",
                format!(
                    "{} values for a round of dimension {}",
                    upload.len(),
                    round.dim
                ),
            ));
        }
        let z = self.noise_multiplier(round)?;
        let release = GaussianRelease::new(&self.config(round, z))?;
        let ctx = ChargeContext {
            round: round.round,
            dataset_id,
            unit: PrivacyUnit::Client,
        };
        let charged = match ledger.charge(release, &ctx) {
            Ok(charged) => charged,
            Err(e) if e.is_budget_exceeded() => return Ok(Release::BudgetExhausted),
            Err(e) => return Err(e),
        };
        let bound = round.bound;
        Ok(Release::Noised(
            charged
                .noise_f32(upload)?
                .into_iter()
                .map(|v| v.clamp(-bound, bound))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privacy::ledger::Budget;

    #[test]
    fn spends_are_recorded_and_refused_once_the_budget_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.set_budget(Budget::new(1.0, 1e-5).unwrap()).unwrap();
        let mut r = Releaser::new(PrivacyPlan {
            epsilon: 1.0,
            delta: 1e-5,
            clip: 1.0,
            planned_rounds: 2,
        });
        let mut plan = ReleasePlan {
            term: 1,
            round: 1,
            attempt: 0,
            participants: 3,
            noise_shares: 2,
            dim: 4,
            bound: 16.0,
        };
        let upload = [3.0f32, 0.0, 0.0, 4.0];
        for round in 1..=2 {
            plan.round = round;
            let Release::Noised(out) = r.release(&ledger, &plan, "d".into(), &upload).unwrap()
            else {
                panic!("round {round} refused");
            };
            assert_eq!(out.len(), 4);
            assert!(out.iter().all(|v| v.abs() <= 16.0));
            assert_ne!(out, upload.to_vec());
        }
        plan.round = 3;
        assert_eq!(
            r.release(&ledger, &plan, "d".into(), &upload).unwrap(),
            Release::BudgetExhausted
        );
        assert_eq!(
            ledger.entries().unwrap().len(),
            2,
            "only the two releases were charged"
        );
        assert!(r.release(&ledger, &plan, "d".into(), &[0.0; 3]).is_err());
        let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
        assert!(spent <= 1.0 + 1e-9 && spent > 0.9, "{spent}");
    }

    #[test]
    fn each_release_carries_the_aggregate_noise_over_its_noise_shares() {
        let mut r = Releaser::new(PrivacyPlan {
            epsilon: 2.0,
            delta: 1e-5,
            clip: 5.0,
            planned_rounds: 10,
        });
        let z = r.aggregate_noise_multiplier().unwrap();
        assert!(z > 0.5 && z.is_finite(), "{z}");
        for (participants, noise_shares, dim) in [(3, 2, 8), (10, 9, 6300), (64, 40, 100_000)] {
            let plan = ReleasePlan {
                term: 1,
                round: 1,
                attempt: 0,
                participants,
                noise_shares,
                dim,
                bound: 80.0,
            };
            let zr = r.noise_multiplier(&plan).unwrap();
            let cost = GaussianRelease::new(&r.config(&plan, zr))
                .unwrap()
                .cost()
                .clone();
            let want = z * 5.0 / f64::from(noise_shares).sqrt();
            let rel = (cost.per_client_scale - want).abs() / want;
            assert!(rel < 1e-3, "{plan:?}: {} vs {want}", cost.per_client_scale);
        }
    }
}
