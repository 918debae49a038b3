//! Differential privacy in the simulation: each client releases its upload through its own
//! durable, signed budget ledger by the node's one release path
//! (`protocol::session::release`) before its session masks or sends it.

use std::path::{Path, PathBuf};

use privacy::ledger::{Budget, Ledger};
use protocol::session::release::{PrivacyPlan, Release, Releaser};
use protocol::session::ReleasePlan;

use super::config::DpConfig;

/// The ledgers and releasers of all clients.
pub struct DpClients {
    ledgers: Vec<Ledger>,
    releasers: Vec<Releaser>,
    /// The noise multiplier of the last release (what the report shows; every round of a run
    /// has the same shape, which the round sessions fix).
    z: Option<f64>,
    delta: f64,
    dir: PathBuf,
}

impl DpClients {
    /// Opens a fresh ledger for each client under `dir/client-K`, capped at the budget; the
    /// noise is calibrated so `rounds` releases of a round's shape spend exactly the budget.
    pub fn new(dp: &DpConfig, clients: usize, rounds: usize, dir: &Path) -> anyhow::Result<Self> {
        let plan = PrivacyPlan {
            epsilon: dp.epsilon,
            delta: dp.delta,
            clip: dp.clip,
            planned_rounds: u32::try_from(rounds)?,
        };
        let releaser = Releaser::new(plan);
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let ledgers = (0..clients)
            .map(|k| -> anyhow::Result<Ledger> {
                let ledger = Ledger::open(&dir.join(format!("client-{k}")))?;
                ledger.set_budget(Budget::new(dp.epsilon, dp.delta)?)?;
                Ok(ledger)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            ledgers,
            releasers: vec![releaser; clients],
            z: None,
            delta: dp.delta,
            dir: dir.to_path_buf(),
        })
    }

    /// The calibrated noise multiplier z of the releases so far (`None` before the first).
    pub fn noise_multiplier(&self) -> Option<f64> {
        self.z
    }

    /// Where the ledgers live (`fedmmkt privacy audit --data-dir DIR/client-K` reads them).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Client `k`'s release for the round `plan` describes: recorded in its ledger first,
    /// then clipped, noised and clamped; [`Release::BudgetExhausted`] when the budget would
    /// be exceeded (the client abstains).
    pub fn release(
        &mut self,
        k: usize,
        plan: &ReleasePlan,
        upload: &[f32],
    ) -> anyhow::Result<Release> {
        let (Some(ledger), Some(releaser)) = (self.ledgers.get(k), self.releasers.get_mut(k))
        else {
            anyhow::bail!("no ledger for client {k}");
        };
        self.z = Some(releaser.noise_multiplier(plan)?);
        let release = releaser.release(ledger, plan, format!("client-{k}"), upload)?;
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
            .map(|l| Ok(l.epsilon_spent(self.delta)?.epsilon))
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
            epsilon: 1.0,
            delta: 1e-5,
            clip: 1.0,
            prompt_mix: 0.0,
            calibration_rounds: None,
        };
        let mut clients = DpClients::new(&dp, 2, 2, dir.path()).unwrap();
        assert_eq!(clients.noise_multiplier(), None);
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
            let Release::Noised(out) = clients.release(0, &plan, &upload).unwrap() else {
                panic!("round {round} refused");
            };
            assert_eq!(out.len(), 4);
            assert_ne!(out, upload.to_vec());
            assert!(clients.noise_multiplier().is_some_and(|z| z > 0.0));
        }
        plan.round = 2;
        assert_eq!(
            clients.release(0, &plan, &upload).unwrap(),
            Release::BudgetExhausted,
            "third release must be refused"
        );
        let spent = clients.epsilon_spent().unwrap();
        assert!(spent[0] <= 1.0 + 1e-9 && spent[0] > 0.9, "{spent:?}");
        assert_eq!(spent[1], 0.0);
        assert!(clients.verify_all());
        assert!(clients.release(5, &plan, &upload).is_err());
    }
}
