//! DP-SGD's two-pass per-example clipping against the batch-1 loop, on every architecture.

use models::classifier::{Arch, TaskModel};
use models::dp_sgd::{clipped_sum, clipped_sum_by_loop, dp_step, DpSgdConfig, StepBatch};
use models::train::ClientTrainConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const E: usize = 6;

fn batch(bp: usize, bs: usize, rng: &mut ChaCha8Rng) -> StepBatch {
    let px = |n: usize, rng: &mut ChaCha8Rng| (0..n * 784).map(|_| rng.random::<u8>()).collect();
    let emb =
        |n: usize, rng: &mut ChaCha8Rng| (0..n * E).map(|_| rng.random::<f32>() - 0.5).collect();
    StepBatch {
        private_pixels: px(bp, rng),
        private_labels: (0..bp).map(|_| rng.random_range(0..4)).collect(),
        private_emb: emb(bp, rng),
        public_pixels: px(bs, rng),
        teacher: vec![0.25; bs * 4],
        public_labels: (0..bs).map(|_| rng.random_range(0..4)).collect(),
        public_emb: emb(bs, rng),
    }
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1e-3)
}

#[test]
fn two_pass_norms_and_clipped_sum_equal_the_batch_one_loop() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cfg = ClientTrainConfig::default();
    for arch in Arch::ALL {
        let model = TaskModel::new(arch, 28, 4, E, 1e-3, 3).unwrap();
        let b = batch(9, 5, &mut rng);
        let fast0 = clipped_sum(&model, &b, &cfg, f64::INFINITY).unwrap();
        // A clip below the median norm, so some examples are clipped and some are not.
        let mut sorted = fast0.norms.clone();
        sorted.sort_by(f32::total_cmp);
        let clip = f64::from(sorted[sorted.len() / 2]);
        let fast = clipped_sum(&model, &b, &cfg, clip).unwrap();
        let slow = clipped_sum_by_loop(&model, &b, &cfg, clip).unwrap();
        assert_eq!(fast.norms.len(), 9);
        for (f, s) in fast.norms.iter().zip(&slow.norms) {
            assert!(rel(*f, *s) < 1e-4, "{arch:?}: norm {f} vs loop {s}");
        }
        assert!(fast.norms.iter().any(|&n| f64::from(n) > clip * 1.01));
        let flat = |c: &models::dp_sgd::ClippedSum| -> Vec<f32> {
            c.grads
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .collect()
        };
        let (f, s) = (flat(&fast), flat(&slow));
        assert_eq!(f.len(), s.len());
        let diff: f32 = f
            .iter()
            .zip(&s)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = s.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            diff / norm < 1e-4,
            "{arch:?}: clipped sum off by {diff} of {norm}"
        );
        // Clipping bounds the sum: ‖Σ clipped‖ ≤ B·C, and it really is smaller than unclipped.
        let unclipped: f32 = flat(&fast0).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(f64::from(norm) <= 9.0 * clip * 1.0001 && norm < unclipped);
        // Each example's own gradient norm also bounds its contribution: a batch of one.
        let one = StepBatch {
            private_pixels: b.private_pixels[..784].to_vec(),
            private_labels: vec![b.private_labels[0]],
            private_emb: b.private_emb[..E].to_vec(),
            public_labels: b.public_labels.clone(),
            public_emb: b.public_emb.clone(),
            ..Default::default()
        };
        let c1 = clipped_sum(&model, &one, &cfg, clip).unwrap();
        let n1: f32 = flat(&c1).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            rel(n1, fast0.norms[0].min(clip as f32)) < 1e-4,
            "{arch:?}: {n1}"
        );
    }
}

#[test]
fn dp_steps_are_seeded_and_noise_alone_moves_the_weights() {
    let cfg = ClientTrainConfig::default();
    let run = |z: f64, seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let b = batch(6, 4, &mut rng);
        let mut model = TaskModel::new(Arch::SmallCnn, 28, 4, E, 1e-3, 3).unwrap();
        let dp = DpSgdConfig {
            clip: 1.0,
            noise_multiplier: z,
            sample_rate: 0.5,
            steps: 1,
        };
        let mut noise = ChaCha8Rng::seed_from_u64(seed);
        dp_step(&mut model, &b, &cfg, &dp, 6.0, &mut noise).unwrap();
        model.flat_params().unwrap()
    };
    assert_eq!(run(1.0, 5), run(1.0, 5));
    assert_ne!(run(1.0, 5), run(1.0, 6));
    // Nothing sampled and no synthetic rows: the step is noise alone, and still moves weights.
    let mut model = TaskModel::new(Arch::Mlp, 28, 4, E, 1e-3, 3).unwrap();
    let before: Vec<f32> = model.named_vars()[0]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let dp = DpSgdConfig {
        clip: 1.0,
        noise_multiplier: 1.0,
        sample_rate: 0.1,
        steps: 1,
    };
    dp_step(
        &mut model,
        &StepBatch::default(),
        &cfg,
        &dp,
        5.0,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .unwrap();
    let after: Vec<f32> = model.named_vars()[0]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_ne!(before, after);
}

#[test]
fn bad_settings_are_refused() {
    let ok = DpSgdConfig {
        clip: 1.0,
        noise_multiplier: 1.0,
        sample_rate: 0.1,
        steps: 3,
    };
    assert!(ok.validate().is_ok());
    for bad in [
        DpSgdConfig { clip: 0.0, ..ok },
        DpSgdConfig { clip: -1.0, ..ok },
        DpSgdConfig {
            noise_multiplier: -0.1,
            ..ok
        },
        DpSgdConfig {
            noise_multiplier: f64::NAN,
            ..ok
        },
        DpSgdConfig {
            sample_rate: 0.0,
            ..ok
        },
        DpSgdConfig {
            sample_rate: 1.5,
            ..ok
        },
        DpSgdConfig {
            clip: f64::INFINITY,
            ..ok
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    assert!(DpSgdConfig {
        clip: f64::INFINITY,
        noise_multiplier: 0.0,
        ..ok
    }
    .validate()
    .is_ok());
}
