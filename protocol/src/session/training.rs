//! The one path by which a node's private records are used under record-level DP: the
//! run's DP-SGD plan (sampling rate, noise multiplier, steps per round, calibrated so the
//! whole run, class-share release included, spends exactly the budget), the write-ahead
//! permit for each round's private training, and the one-time release of the class counts.
//! The node and the simulation both use it.

use privacy::accountant::{bisect_noise_multiplier, RdpAccountant};
use privacy::error::PrivacyError;
use privacy::ledger::{ChargeContext, Ledger, Spend, TrainingCost};
use privacy::mechanism::{GaussianRelease, NoiseSpec, ReleaseConfig, ReleaseCost};
use privacy::PrivacyUnit;

/// Noise std of the one-time class-count release, in records (its sensitivity is 1).
pub const SHARE_NOISE: f64 = 8.0;

/// A node's record-level plan for a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordPlan {
    /// Total ε the node may spend on its records.
    pub epsilon: f64,
    /// δ of the guarantee.
    pub delta: f64,
    /// Per-example L2 clip C.
    pub clip: f64,
    /// Expected private examples per step (q = this / records).
    pub expected_batch: f64,
    /// Private DP-SGD steps per round.
    pub steps_per_round: u64,
    /// Rounds of private training the budget is spread over.
    pub planned_rounds: u32,
    /// Private records the node holds.
    pub records: u64,
    /// Classes (length of the class-count release).
    pub classes: usize,
}

impl RecordPlan {
    /// Poisson rate q = expected batch / records (at most 1).
    pub fn sample_rate(&self) -> f64 {
        (self.expected_batch / self.records.max(1) as f64).min(1.0)
    }

    /// The class-count release: Gaussian noise of std [`SHARE_NOISE`] at sensitivity 1.
    fn share_config(&self) -> ReleaseConfig {
        ReleaseConfig {
            clip: 1.0,
            noise_multiplier: SHARE_NOISE,
            expected_participants: 1,
            min_participants: 1,
            sample_rate: 1.0,
            dimension: self.classes,
        }
    }

    fn share_cost(&self) -> Result<ReleaseCost, PrivacyError> {
        ReleaseCost::compute(
            &self.share_config(),
            NoiseSpec::Gaussian {
                granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
            },
        )
    }

    /// One round's training entry at noise multiplier `z`.
    pub fn round_cost(&self, z: f64) -> TrainingCost {
        TrainingCost {
            records: self.records,
            sample_rate: self.sample_rate(),
            noise_multiplier: z,
            clip: self.clip,
            steps: self.steps_per_round,
        }
    }

    /// The smallest z for which the share release plus `planned_rounds` rounds of training
    /// stay within ε, composed exactly as the ledger will compose them.
    pub fn noise_multiplier(&self) -> Result<f64, PrivacyError> {
        if self.records == 0 || self.steps_per_round == 0 || self.planned_rounds == 0 {
            return Err(PrivacyError::invalid(
                "record-level plan",
                format!(
                    "needs records, steps per round and rounds ≥ 1 (got {}, {}, {})",
                    self.records, self.steps_per_round, self.planned_rounds
                ),
            ));
        }
        let base = RdpAccountant::new();
        let share = self.share_cost()?.rdp_curve(base.orders())?;
        let rounds = f64::from(self.planned_rounds);
        bisect_noise_multiplier(self.epsilon, |z| {
            let mut acc = base.clone();
            acc.compose_curve(&share)?;
            let round: Vec<f64> = self
                .round_cost(z)
                .rdp_curve(base.orders())?
                .into_iter()
                .map(|r| r * rounds)
                .collect();
            acc.compose_curve(&round)?;
            Ok(acc.epsilon(self.delta)?.epsilon)
        })
    }
}

/// Whether this round may train on private records.
#[derive(Debug, Clone, PartialEq)]
pub enum Permit {
    /// Yes: the entry is durable in the ledger; train exactly once with these settings.
    Train(TrainingCost),
    /// This round's training was already charged (an earlier attempt, or before a crash):
    /// do not train on private records again.
    AlreadyTrained,
    /// The budget cannot pay for another round: take part without private training.
    BudgetSpent,
}

/// A node's record-level accounting: its plan's z, the permits, the released class counts.
#[derive(Debug, Clone)]
pub struct RecordTrainer {
    plan: RecordPlan,
    z: f64,
    dataset_id: String,
    counts: Option<Vec<f64>>,
}

impl RecordTrainer {
    /// Calibrates `plan` for the records of `dataset_id`.
    pub fn new(plan: RecordPlan, dataset_id: String) -> Result<Self, PrivacyError> {
        let z = plan.noise_multiplier()?;
        Ok(Self {
            plan,
            z,
            dataset_id,
            counts: None,
        })
    }

    /// The calibrated noise multiplier.
    pub fn noise_multiplier(&self) -> f64 {
        self.z
    }

    /// The plan.
    pub fn plan(&self) -> &RecordPlan {
        &self.plan
    }

    fn ctx(&self, round: u64) -> ChargeContext {
        ChargeContext {
            round,
            dataset_id: self.dataset_id.clone(),
            unit: PrivacyUnit::Record,
        }
    }

    /// Round `round`'s permit: charged durably before it is returned as [`Permit::Train`].
    pub fn permit(&self, ledger: &Ledger, round: u64) -> Result<Permit, PrivacyError> {
        let trained = ledger.entries()?.iter().any(|e| {
            e.round == round
                && e.unit == PrivacyUnit::Record
                && e.dataset_id == self.dataset_id
                && matches!(e.cost, Spend::Training(_))
        });
        if trained {
            return Ok(Permit::AlreadyTrained);
        }
        let cost = self.plan.round_cost(self.z);
        match ledger.charge_training(&cost, &self.ctx(round)) {
            Ok(_) => Ok(Permit::Train(cost)),
            Err(e) if e.is_budget_exceeded() => Ok(Permit::BudgetSpent),
            Err(e) => Err(e),
        }
    }

    /// The class counts as released: noised once (charged first, in their own entry) and
    /// reused after that; `None` when the budget cannot pay for the release.
    pub fn released_counts(
        &mut self,
        ledger: &Ledger,
        round: u64,
        counts: &[usize],
    ) -> Result<Option<Vec<f64>>, PrivacyError> {
        if let Some(c) = &self.counts {
            return Ok(Some(c.clone()));
        }
        let release = GaussianRelease::new(&self.plan.share_config())?;
        let charged = match ledger.charge(release, &self.ctx(round)) {
            Ok(c) => c,
            Err(e) if e.is_budget_exceeded() => return Ok(None),
            Err(e) => return Err(e),
        };
        let exact: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        let noised: Vec<f64> = charged
            .noise_counts(&exact)?
            .into_iter()
            .map(|c| c.max(0.0))
            .collect();
        self.counts = Some(noised.clone());
        Ok(Some(noised))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privacy::ledger::Budget;

    fn plan() -> RecordPlan {
        RecordPlan {
            epsilon: 4.0,
            delta: 1e-5,
            clip: 1.0,
            expected_batch: 32.0,
            steps_per_round: 20,
            planned_rounds: 3,
            records: 640,
            classes: 10,
        }
    }

    #[test]
    fn the_plan_spends_exactly_the_budget_then_training_stops() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.set_budget(Budget::new(4.0, 1e-5).unwrap()).unwrap();
        let mut t = RecordTrainer::new(plan(), "node-0".into()).unwrap();
        assert!(t.noise_multiplier() > 0.3 && t.noise_multiplier() < 5.0);
        let counts = t.released_counts(&ledger, 1, &[64; 10]).unwrap().unwrap();
        assert_eq!(counts.len(), 10);
        assert_ne!(counts, vec![64.0; 10]);
        // Released once: the same values again, no second entry.
        assert_eq!(
            t.released_counts(&ledger, 2, &[64; 10]).unwrap().unwrap(),
            counts
        );
        assert_eq!(ledger.len().unwrap(), 1);
        for round in 1..=3 {
            assert!(matches!(
                t.permit(&ledger, round).unwrap(),
                Permit::Train(_)
            ));
            // A retry of the same round (or a restart) never trains twice.
            assert_eq!(t.permit(&ledger, round).unwrap(), Permit::AlreadyTrained);
        }
        let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
        assert!(spent <= 4.0 && spent > 3.99, "spent {spent}");
        assert_eq!(t.permit(&ledger, 4).unwrap(), Permit::BudgetSpent);
        assert_eq!(ledger.len().unwrap(), 4);
        assert!(ledger.verify().is_ok());
    }

    #[test]
    fn sample_rate_and_bad_plans() {
        assert!((plan().sample_rate() - 0.05).abs() < 1e-12);
        let tiny = RecordPlan {
            records: 10,
            ..plan()
        };
        assert_eq!(tiny.sample_rate(), 1.0);
        assert!(RecordPlan {
            records: 0,
            ..plan()
        }
        .noise_multiplier()
        .is_err());
        assert!(RecordPlan {
            epsilon: -1.0,
            ..plan()
        }
        .noise_multiplier()
        .is_err());
    }
}
