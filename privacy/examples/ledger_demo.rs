//! One client's side of the round loop, against a real data directory: calibrate, check the
//! budget, record write-ahead, noise. Shows the API the simulation uses and feeds `privacy audit`.
//!
//! `cargo run -p privacy --example ledger_demo -- DATA_DIR ROUNDS [TARGET_EPSILON] [CALIBRATED_ROUNDS]`

use std::path::PathBuf;

use privacy::error::PrivacyError;
use privacy::ledger::{ChargeContext, Ledger};
use privacy::mechanism::{calibrate_noise_multiplier, GaussianRelease, NoiseSpec, ReleaseConfig};
use privacy::PrivacyUnit;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: ledger_demo DATA_DIR ROUNDS [EPS] [R]")?,
    );
    let rounds: u64 = args.next().ok_or("missing ROUNDS")?.parse()?;
    let target: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4.0);
    let planned: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(rounds);
    let delta = 1e-5;

    // Host: noise multiplier for `planned` rounds at `target` ε, as the ledgers will charge it.
    let shape = ReleaseConfig {
        clip: 1.0,
        noise_multiplier: 1.0, // replaced by the calibrated value
        expected_participants: 10,
        min_participants: 8,
        sample_rate: 1.0,
        dimension: 1000,
    };
    let spec = NoiseSpec::Gaussian {
        granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
    };
    let z = calibrate_noise_multiplier(target, delta, planned, &shape, spec)?;
    let config = ReleaseConfig {
        noise_multiplier: z,
        ..shape
    };
    println!("calibrated noise multiplier z = {z:.6} for ε = {target} over {planned} rounds");

    // Client: its ledger (the budget is set with `fedmmkt privacy budget`).
    let ledger = Ledger::open(&dir)?;
    let upload: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.1).sin()).collect();
    for round in 0..rounds {
        let release = GaussianRelease::new(&config)?;
        let ctx = ChargeContext {
            round,
            dataset_id: "fashion-mnist/client-0".into(),
            unit: PrivacyUnit::Client,
        };
        match ledger.charge(release, &ctx) {
            Ok(charged) => {
                let seq = charged.seq();
                let noised = charged.noise_f32(&upload)?;
                println!(
                    "round {round}: recorded entry {seq}, sent {} noised values",
                    noised.len()
                );
            }
            Err(e @ PrivacyError::BudgetExceeded { .. }) => {
                println!("round {round}: abstain ({e})");
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "ε spent: {:.6} at δ = {delta:e}",
        ledger.epsilon_spent(delta)?.epsilon
    );
    Ok(())
}
