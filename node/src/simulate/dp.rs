//! Differential privacy in the simulation: each client has its own durable, signed budget
//! ledger. Under record-level DP its learner pays for each round's DP-SGD there
//! (`protocol::session::training`); under client-level DP its upload is released through the
//! node's one release path (`protocol::session::release`) before its session masks or sends it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use privacy::ledger::{Budget, Ledger};
use privacy::PrivacyUnit;
use protocol::session::release::{PrivacyPlan, Release, Releaser};
use protocol::session::ReleasePlan;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::config::DpConfig;
use crate::learn::{Learner, RecordSettings};
use crate::world::sub_seed;

/// The ledgers of all clients, and their releasers under client-level DP.
pub struct DpClients {
    dp: DpConfig,
    rounds: usize,
    ledgers: Vec<Arc<Ledger>>,
    releasers: Vec<Releaser>,
    /// The noise multiplier of each client (client-level: of its last release, set by the
    /// round sessions' shape; record-level: its DP-SGD plan's).
    z: Vec<Option<f64>>,
    dir: PathBuf,
}

impl DpClients {
    /// Opens a fresh ledger for each client under `dir/client-K`, capped at the budget; the
    /// noise is calibrated so `rounds` rounds spend exactly the budget.
    pub fn new(dp: &DpConfig, clients: usize, rounds: usize, dir: &Path) -> anyhow::Result<Self> {
        let plan = PrivacyPlan {
            epsilon: dp.epsilon,
            delta: dp.delta,
            clip: dp.clip,
            planned_rounds: u32::try_from(rounds)?,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let ledgers = (0..clients)
            .map(|k| -> anyhow::Result<Arc<Ledger>> {
                let ledger = Ledger::open(&dir.join(format!("client-{k}")))?;
                ledger.set_budget(Budget::new(dp.epsilon, dp.delta)?)?;
                Ok(Arc::new(ledger))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            dp: *dp,
            rounds,
            ledgers,
            releasers: vec![Releaser::new(plan); clients],
            z: vec![None; clients],
            dir: dir.to_path_buf(),
        })
    }

    /// Which unit these clients protect.
    pub fn unit(&self) -> PrivacyUnit {
        self.dp.unit
    }

    /// Under record-level DP, `learner` (client `k`) with DP-SGD paid for in its ledger;
    /// its noise is seeded from `seed` (reproducible runs). Unchanged under client-level DP.
    pub fn attach(&mut self, k: usize, learner: Learner, seed: u64) -> anyhow::Result<Learner> {
        if self.dp.unit != PrivacyUnit::Record {
            return Ok(learner);
        }
        let ledger = self
            .ledgers
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("no ledger for client {k}"))?
            .clone();
        let settings = RecordSettings {
            epsilon: self.dp.epsilon,
            delta: self.dp.delta,
            clip: self.dp.clip,
            planned_rounds: u32::try_from(self.rounds)?,
            dataset_id: format!("client-{k}"),
            ledger,
        };
        let learner =
            learner.with_record_level(settings, ChaCha20Rng::seed_from_u64(sub_seed(seed, 7)))?;
        self.z[k] = learner.record_dp().map(|d| d.trainer.noise_multiplier());
        Ok(learner)
    }

    /// The noise multiplier of the clients' uploads, which all share one budget (0 under
    /// record-level DP, whose uploads carry no noise): what the host expects of a sum.
    pub fn upload_noise_multiplier(&mut self) -> anyhow::Result<f64> {
        match (self.dp.unit, self.releasers.first_mut()) {
            (PrivacyUnit::Client, Some(r)) => Ok(r.aggregate_noise_multiplier()?),
            _ => Ok(0.0),
        }
    }

    /// The noise multiplier z of each client (`None` before it has one).
    pub fn noise_multipliers(&self) -> &[Option<f64>] {
        &self.z
    }

    /// Where the ledgers live (`fedmmkt privacy audit --data-dir DIR/client-K` reads them).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Client `k`'s release for the round `plan` describes: under client-level DP recorded
    /// in its ledger first, then clipped, noised and clamped ([`Release::BudgetExhausted`]
    /// when the budget would be exceeded: the client abstains); under record-level DP the
    /// upload is post-processing of the private training and leaves as it is.
    pub fn release(
        &mut self,
        k: usize,
        plan: &ReleasePlan,
        upload: Vec<f32>,
    ) -> anyhow::Result<Release> {
        if self.dp.unit == PrivacyUnit::Record {
            return Ok(Release::Noised(upload));
        }
        let (Some(ledger), Some(releaser)) = (self.ledgers.get(k), self.releasers.get_mut(k))
        else {
            anyhow::bail!("no ledger for client {k}");
        };
        self.z[k] = Some(releaser.noise_multiplier(plan)?);
        let release = releaser.release(ledger, plan, format!("client-{k}"), &upload)?;
        if release == Release::BudgetExhausted {
            tracing::info!(
                client = k,
                round = plan.round,
                "privacy budget exhausted: abstaining"
            );
        }
        Ok(release)
    }

    /// ε spent so far by each client (at the configured δ), read back from its ledger.
    pub fn epsilon_spent(&self) -> anyhow::Result<Vec<f64>> {
        self.ledgers
            .iter()
            .map(|l| Ok(l.epsilon_spent(self.dp.delta)?.epsilon))
            .collect()
    }

    /// True when every client's chain verifies.
    pub fn verify_all(&self) -> bool {
        self.ledgers.iter().all(|l| l.verify().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_abstain_once_the_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let dp = DpConfig {
            unit: PrivacyUnit::Client,
            epsilon: 1.0,
            delta: 1e-5,
            clip: 1.0,
            prompt_mix: 0.0,
            calibration_rounds: None,
        };
        let mut clients = DpClients::new(&dp, 2, 2, dir.path()).unwrap();
        assert_eq!(clients.noise_multipliers(), &[None, None]);
        let upload = [3.0f32, 0.0, 0.0, 4.0]; // norm 5: clipped to 1 before noise
        let mut plan = ReleasePlan {
            term: 1,
            round: 0,
            attempt: 0,
            participants: 2,
            noise_shares: 2,
            dim: 4,
            bound: 16.0,
        };
        for round in 0..2 {
            plan.round = round;
            let Release::Noised(out) = clients.release(0, &plan, upload.to_vec()).unwrap() else {
                panic!("round {round} refused");
            };
            assert_eq!(out.len(), 4);
            assert_ne!(out, upload.to_vec());
            assert!(clients.noise_multipliers()[0].is_some_and(|z| z > 0.0));
        }
        plan.round = 2;
        assert_eq!(
            clients.release(0, &plan, upload.to_vec()).unwrap(),
            Release::BudgetExhausted,
            "third release must be refused"
        );
        let spent = clients.epsilon_spent().unwrap();
        assert!(spent[0] <= 1.0 + 1e-9 && spent[0] > 0.9, "{spent:?}");
        assert_eq!(spent[1], 0.0);
        assert!(clients.verify_all());
        assert!(clients.release(5, &plan, upload.to_vec()).is_err());
    }
}
