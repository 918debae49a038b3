//! OpenDP-backed releases: costs from OpenDP's maps, distributed noise, clipping, integer path.

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;
use privacy::accountant::{epsilon_for, noise_multiplier_for};
use privacy::ledger::{ChargeContext, Ledger, NodeKey};
use privacy::mechanism::{
    calibrate_noise_multiplier, clip_l2, DiscreteGaussianRelease, GaussianRelease, NoiseSpec,
    ReleaseConfig, ReleaseCost,
};
use privacy::PrivacyUnit;

fn config(z: f64, n: u32, m: u32, d: usize) -> ReleaseConfig {
    ReleaseConfig {
        clip: 1.0,
        noise_multiplier: z,
        expected_participants: n,
        min_participants: m,
        sample_rate: 1.0,
        dimension: d,
    }
}

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    (dir, ledger)
}

fn ctx(round: u64) -> ChargeContext {
    ChargeContext {
        round,
        dataset_id: "test".into(),
        unit: PrivacyUnit::Client,
    }
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn cost_comes_from_opendp_and_matches_closed_form() {
    let cost = GaussianRelease::new(&config(1.5, 10, 10, 1000))
        .unwrap()
        .cost()
        .clone();
    // Sum of 10 shares carries z·C: ρ = 1/(2z²), a hair more for the 2^-30 lattice rounding.
    let rho = 1.0 / (2.0 * 1.5 * 1.5);
    assert!(cost.aggregate_rho >= rho && cost.aggregate_rho < rho * (1.0 + 1e-6));
    assert!(
        cost.charged_noise_multiplier <= 1.5 && cost.charged_noise_multiplier > 1.5 * (1.0 - 1e-6)
    );
    // One share alone (secure aggregation broken) has n times the ρ.
    assert!((cost.local_rho / (10.0 * rho) - 1.0).abs() < 1e-6);
    assert!((cost.per_client_scale - 1.5 / 10f64.sqrt()).abs() < 1e-12);
}

#[test]
fn dropouts_are_charged_at_the_minimum_participation() {
    let full = GaussianRelease::new(&config(2.0, 16, 16, 100)).unwrap();
    let quarter = GaussianRelease::new(&config(2.0, 16, 4, 100)).unwrap();
    let zc = quarter.cost().charged_noise_multiplier;
    // Only 4 of 16 shares guaranteed: the sum carries z·√(4/16) = z/2.
    assert!((zc - 1.0).abs() < 1e-6, "charged {zc}");
    assert!(full.cost().charged_noise_multiplier > 1.99);
}

#[test]
fn our_conversion_agrees_with_opendp_zcdp_to_approx_dp() {
    for &z in &[0.8, 2.0, 5.0] {
        let ours = epsilon_for(z, 1.0, 1, 1e-6).unwrap().epsilon;
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
            L2Distance::<f64>::default(),
            z,
            None,
        )
        .unwrap();
        let theirs = make_zCDP_to_approxDP(m)
            .unwrap()
            .map(&1.0)
            .unwrap()
            .epsilon(1e-6)
            .unwrap();
        // Same bound; ours is minimised over a grid, so at most a little above.
        assert!(
            ours >= theirs * (1.0 - 1e-6) && ours <= theirs * 1.01,
            "z={z}: ours {ours} vs OpenDP {theirs}"
        );
    }
}

#[test]
fn distributed_noise_has_the_announced_std() {
    let (_dir, ledger) = ledger();
    let (n, d, z) = (8u32, 2000usize, 2.0);
    let cfg = config(z, n, n, d);
    let mut sum = vec![0.0f64; d];
    let mut one_share = Vec::new();
    for k in 0..n {
        let charged = ledger
            .charge(GaussianRelease::new(&cfg).unwrap(), &ctx(0))
            .unwrap();
        let noised = charged.noise_f64(&vec![0.0; d]).unwrap();
        if k == 0 {
            one_share = noised.clone();
        }
        for (s, v) in sum.iter_mut().zip(&noised) {
            *s += v;
        }
    }
    let (m1, s1) = mean_std(&one_share);
    let want1 = z / f64::from(n).sqrt();
    assert!((s1 / want1 - 1.0).abs() < 0.06, "share std {s1} vs {want1}");
    assert!(
        m1.abs() < 5.0 * want1 / (d as f64).sqrt(),
        "share mean {m1}"
    );
    let (_, s) = mean_std(&sum);
    assert!((s / z - 1.0).abs() < 0.06, "sum std {s} vs {z}");
    assert_eq!(ledger.len().unwrap(), u64::from(n));
}

#[test]
fn uploads_are_clipped_before_noise() {
    let (_dir, ledger) = ledger();
    // Tiny noise so the output is the clipped vector up to 1e-6.
    let cfg = ReleaseConfig {
        clip: 2.0,
        noise_multiplier: 1e-6,
        ..config(1.0, 1, 1, 4)
    };
    let charged = ledger
        .charge(GaussianRelease::new(&cfg).unwrap(), &ctx(0))
        .unwrap();
    let out = charged.noise_f32(&[30.0, 40.0, 0.0, 0.0]).unwrap();
    let norm = out
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 2.0).abs() < 1e-4, "norm {norm}");
    assert!((f64::from(out[0]) - 1.2).abs() < 1e-4 && (f64::from(out[1]) - 1.6).abs() < 1e-4);
    // Inside the ball: unchanged.
    assert_eq!(clip_l2(&[0.3, 0.4], 1.0).unwrap(), vec![0.3, 0.4]);
    let big = clip_l2(&[3e300, 4e300], 1.0).unwrap();
    let n = (big[0].powi(2) + big[1].powi(2)).sqrt();
    assert!(n <= 1.0 && n > 1.0 - 1e-9);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (_dir, ledger) = ledger();
    let cfg = config(1.0, 1, 1, 3);
    let charged = ledger
        .charge(GaussianRelease::new(&cfg).unwrap(), &ctx(0))
        .unwrap();
    assert!(charged.noise_f64(&[1.0, f64::NAN, 0.0]).is_err());
    let charged = ledger
        .charge(GaussianRelease::new(&cfg).unwrap(), &ctx(0))
        .unwrap();
    assert!(charged.noise_f64(&[1.0, 2.0]).is_err());
    for bad in [
        ReleaseConfig {
            clip: 0.0,
            ..cfg.clone()
        },
        ReleaseConfig {
            clip: f64::NAN,
            ..cfg.clone()
        },
        ReleaseConfig {
            noise_multiplier: -1.0,
            ..cfg.clone()
        },
        ReleaseConfig {
            sample_rate: 0.0,
            ..cfg.clone()
        },
        ReleaseConfig {
            sample_rate: 1.5,
            ..cfg.clone()
        },
        ReleaseConfig {
            min_participants: 2,
            ..cfg.clone()
        },
        ReleaseConfig {
            min_participants: 0,
            ..cfg.clone()
        },
        ReleaseConfig {
            expected_participants: 0,
            ..cfg.clone()
        },
        ReleaseConfig {
            dimension: 0,
            ..cfg.clone()
        },
    ] {
        let err = GaussianRelease::new(&bad).unwrap_err();
        assert!(err.is_invalid_argument(), "{bad:?} gave {err}");
    }
    // Noise below 4 lattice steps is refused rather than mis-accounted.
    assert!(GaussianRelease::with_granularity(&cfg, 0).is_err());
    assert!(DiscreteGaussianRelease::new(&config(0.01, 100, 100, 3), 10.0).is_err());
}

#[test]
fn discrete_path_noises_integers_with_the_announced_std() {
    let (_dir, ledger) = ledger();
    let (n, d, z, s) = (4u32, 2000usize, 1.0, 1024.0);
    let release = DiscreteGaussianRelease::new(&config(z, n, n, d), s).unwrap();
    let cost = release.cost().clone();
    // Sensitivity after rounding: C·s + √d/2.
    let delta = s + 0.5 * (d as f64).sqrt();
    assert!((cost.sensitivity - delta).abs() < 1e-9);
    assert!((cost.charged_noise_multiplier - z).abs() < 1e-9);
    let out = ledger
        .charge(release, &ctx(0))
        .unwrap()
        .noise(&vec![0.0; d])
        .unwrap();
    let x: Vec<f64> = out.iter().map(|&v| v as f64).collect();
    let (_, std) = mean_std(&x);
    let want = z * delta / f64::from(n).sqrt();
    assert!((std / want - 1.0).abs() < 0.06, "std {std} vs {want}");
}

#[test]
fn discrete_path_clips_and_quantizes() {
    let (_dir, ledger) = ledger();
    let cfg = ReleaseConfig {
        clip: 1.0,
        noise_multiplier: 1e-4,
        ..config(1.0, 1, 1, 2)
    };
    let release = DiscreteGaussianRelease::new(&cfg, 1e6).unwrap();
    let out = ledger
        .charge(release, &ctx(0))
        .unwrap()
        .noise(&[3.0, 4.0])
        .unwrap();
    // Clipped to (0.6, 0.8), quantized at 1e6, noise std ≈ 1e-4 · 1e6 = 100.
    assert!((out[0] - 600_000).abs() < 1000, "{out:?}");
    assert!((out[1] - 800_000).abs() < 1000, "{out:?}");
}

#[test]
fn mechanism_calibration_meets_target_as_charged() {
    let cfg = ReleaseConfig {
        sample_rate: 0.5,
        ..config(1.0, 20, 15, 500)
    };
    let spec = NoiseSpec::Gaussian {
        granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
    };
    let z = calibrate_noise_multiplier(4.0, 1e-5, 30, &cfg, spec).unwrap();
    let cost = ReleaseCost::compute(
        &ReleaseConfig {
            noise_multiplier: z,
            ..cfg.clone()
        },
        spec,
    )
    .unwrap();
    let eps = epsilon_for(cost.charged_noise_multiplier, 0.5, 30, 1e-5)
        .unwrap()
        .epsilon;
    assert!(eps <= 4.0, "calibrated z = {z} costs ε = {eps}");
    // It is the plain accountant's answer inflated by √(n/m) for the dropout rule.
    let plain = noise_multiplier_for(4.0, 1e-5, 0.5, 30).unwrap();
    let want = plain * (20.0f64 / 15.0).sqrt();
    assert!((z / want - 1.0).abs() < 1e-5, "{z} vs {want}");
}

#[test]
fn releases_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GaussianRelease>();
    assert_send_sync::<DiscreteGaussianRelease>();
    assert_send_sync::<Ledger>();
    assert_send_sync::<NodeKey>();
}
