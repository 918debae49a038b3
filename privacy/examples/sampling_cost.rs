//! Measures what a client release costs: ledger write (+ flush) and OpenDP noise per element.
//!
//! `cargo run -p privacy --example sampling_cost [DIMENSION] [REPEATS]`

use std::time::Instant;

use privacy::ledger::{ChargeContext, Ledger};
use privacy::mechanism::{DiscreteGaussianRelease, GaussianRelease, ReleaseConfig};
use privacy::PrivacyUnit;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let d: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4000);
    let repeats: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let cfg = ReleaseConfig {
        clip: 1.0,
        noise_multiplier: 1.0,
        expected_participants: 10,
        min_participants: 8,
        sample_rate: 1.0,
        dimension: d,
    };
    let upload: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin() * 0.01).collect();
    let ctx = ChargeContext {
        round: 0,
        dataset_id: "bench".into(),
        unit: PrivacyUnit::Client,
    };
    for k in [-30, -20] {
        let (mut charge_s, mut noise_s) = (0.0, 0.0);
        for _ in 0..repeats {
            let release = GaussianRelease::with_granularity(&cfg, k)?;
            let t = Instant::now();
            let charged = ledger.charge(release, &ctx)?;
            charge_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let out = charged.noise_f32(&upload)?;
            noise_s += t.elapsed().as_secs_f64();
            assert_eq!(out.len(), d);
        }
        let r = f64::from(repeats);
        println!(
            "gaussian k={k:>3}  d={d}: noise {:.2} µs/element ({:.1} ms/upload), ledger charge+flush {:.2} ms",
            noise_s / r / d as f64 * 1e6,
            noise_s / r * 1e3,
            charge_s / r * 1e3
        );
    }
    for s in [1024.0, 65536.0] {
        let (mut charge_s, mut noise_s) = (0.0, 0.0);
        for _ in 0..repeats {
            let release = DiscreteGaussianRelease::new(&cfg, s)?;
            let t = Instant::now();
            let charged = ledger.charge(release, &ctx)?;
            charge_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let out = charged.noise(&upload)?;
            noise_s += t.elapsed().as_secs_f64();
            assert_eq!(out.len(), d);
        }
        let r = f64::from(repeats);
        println!(
            "discrete s={s:>6} d={d}: noise {:.2} µs/element ({:.1} ms/upload), ledger charge+flush {:.2} ms",
            noise_s / r / d as f64 * 1e6,
            noise_s / r * 1e3,
            charge_s / r * 1e3
        );
    }
    Ok(())
}
