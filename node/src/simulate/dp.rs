//! Client-level differential privacy in the simulation: each client clips and noises its
//! upload through its own durable, signed budget ledger before the host sees the sum.

use std::path::{Path, PathBuf};

use privacy::ledger::{Budget, ChargeContext, Ledger};
use privacy::mechanism::{calibrate_noise_multiplier, GaussianRelease, NoiseSpec, ReleaseConfig};

use super::config::DpConfig;

/// The ledgers of all clients and the release every one of them applies.
pub struct DpClients {
    ledgers: Vec<Ledger>,
    release: ReleaseConfig,
    delta: f64,
    dir: PathBuf,
}

impl DpClients {
    /// Calibrates the noise so `rounds` releases spend exactly the budget, and opens a fresh
    /// ledger with that cap for each client under `dir/client-K`.
    pub fn new(
        dp: &DpConfig,
        clients: usize,
        rounds: usize,
        dimension: usize,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let shape = ReleaseConfig {
            clip: dp.clip,
            noise_multiplier: 1.0,
            expected_participants: clients as u32,
            // The simulation releases a sum only when every client took part.
            min_participants: clients as u32,
            sample_rate: 1.0,
            dimension,
        };
        let spec = NoiseSpec::Gaussian {
            granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
        };
        let z = calibrate_noise_multiplier(dp.epsilon, dp.delta, rounds as u64, &shape, spec)?;
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
            release: ReleaseConfig {
                noise_multiplier: z,
                ..shape
            },
            delta: dp.delta,
            dir: dir.to_path_buf(),
        })
    }

    /// The calibrated noise multiplier z.
    pub fn noise_multiplier(&self) -> f64 {
        self.release.noise_multiplier
    }

    /// Fewest uploads whose sum may be released.
    pub fn min_participants(&self) -> usize {
        self.release.min_participants as usize
    }

    /// Where the ledgers live (`fedmmkt privacy audit --data-dir DIR/client-K` reads them).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Client `k`'s release for `round`: recorded in its ledger first, then clipped and
    /// noised; `None` when the budget would be exceeded (the client abstains).
    pub fn privatize(
        &self,
        k: usize,
        round: u64,
        upload: &[f32],
    ) -> anyhow::Result<Option<Vec<f32>>> {
        let ledger = self
            .ledgers
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("no ledger for client {k}"))?;
        let ctx = ChargeContext {
            round,
            dataset_id: format!("client-{k}"),
        };
        match ledger.charge(GaussianRelease::new(&self.release)?, &ctx) {
            Ok(charged) => Ok(Some(charged.noise_f32(upload)?)),
            Err(e) if e.is_budget_exceeded() => {
                tracing::info!(client = k, round, "privacy budget exhausted: abstaining");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
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
        let clients = DpClients::new(&dp, 2, 2, 4, dir.path()).unwrap();
        let upload = [3.0f32, 0.0, 0.0, 4.0]; // norm 5: clipped to 1 before noise
        for round in 0..2 {
            let out = clients.privatize(0, round, &upload).unwrap().unwrap();
            assert_eq!(out.len(), 4);
            assert_ne!(out, upload.to_vec());
        }
        assert!(
            clients.privatize(0, 2, &upload).unwrap().is_none(),
            "third release must be refused"
        );
        let spent = clients.epsilon_spent().unwrap();
        assert!(spent[0] <= 1.0 + 1e-9 && spent[0] > 0.9, "{spent:?}");
        assert_eq!(spent[1], 0.0);
        assert!(clients.verify_all());
        assert!(clients.privatize(5, 0, &upload).is_err());
    }
}
