//! One-run canary audit of record-level DP-SGD (Steinke, Nasr & Jagielski 2023, "Privacy
//! Auditing with One (1) Training Run").
//!
//! Design:
//! - **Canaries**: `m` images of uniformly random pixels, each with a uniformly random label.
//!   They lie far from the Fashion-MNIST images, so nothing in the real data teaches the model
//!   their labels: a canary's loss is low only if the canary itself was trained on. This is the
//!   strongest black-box canary we can build without access to the gradients.
//! - **Inclusion**: each canary joins the private training set independently with
//!   probability ½ (seeded), next to `records` real Fashion-MNIST images.
//! - **Training**: the real record-level pipeline, [`models::dp_sgd::train_private`], with
//!   Poisson rate q = batch / n, clip C and the noise multiplier z the RDP accountant gives for
//!   (ε, δ) over all steps, so the run is (ε, δ)-DP per record. Without noise (the audit's
//!   sanity check): no clipping and z = 0.
//! - **Score**: the log-probability the final model gives each canary's label (minus its
//!   cross-entropy).
//! - **Guesses**: fixed before training: the k = max(1, ⌊m/10⌋) highest-scored canaries are
//!   guessed "in", the k lowest "out" (2k guesses, the other canaries abstain).
//! - **Bound**: [`privacy::audit::epsilon_lower_bound_with_delta`] at 95 % confidence and the
//!   run's δ: an ε below which the run cannot be (ε, δ)-DP, unless 5 % bad luck.

use models::classifier::{Arch, TaskModel};
use models::data::captions::random_captions;
use models::data::DataSource;
use models::dp_sgd::{train_private, DpSgdConfig};
use models::train::ClientTrainConfig;
use privacy::accountant::noise_multiplier_for;
use privacy::audit::{epsilon_lower_bound_with_delta, guesses_from_scores, DEFAULT_CONFIDENCE};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::world::{federation_encoder, sub_seed};

/// Most canaries an audit may use.
pub const MAX_CANARIES: usize = 100_000;

/// A bad audit setting (the CLI's usage error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAudit(pub String);

/// The settings of one canary audit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CanaryConfig {
    /// Claimed ε of the training run; `None` trains without clipping or noise.
    pub epsilon: Option<f64>,
    /// δ of the claim (and of the audit's bound).
    pub delta: f64,
    /// Number m of canaries.
    pub canaries: usize,
    /// Real Fashion-MNIST records in the private set, next to the included canaries.
    pub records: usize,
    /// Passes over the private set (steps = epochs · ⌈n / batch⌉).
    pub epochs: usize,
    /// Expected private batch size (Poisson rate q = batch / n).
    pub batch: usize,
    /// Per-example clip C (ignored without noise).
    pub clip: f64,
    /// Learning rate of the AdamW optimiser.
    pub lr: f64,
    /// The task model audited.
    pub arch: Arch,
    /// Seed of canaries, inclusion, records, model, sampling and noise.
    pub seed: u64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            epsilon: Some(8.0),
            delta: 1e-5,
            canaries: 1000,
            records: 3000,
            epochs: 30,
            batch: 64,
            clip: 1.0,
            lr: 2e-3,
            arch: Arch::Mlp,
            seed: 1,
        }
    }
}

impl CanaryConfig {
    /// Checks every setting, with a message naming the bad one.
    pub fn validate(&self) -> Result<(), InvalidAudit> {
        let bad = |m: String| Err(InvalidAudit(m));
        if let Some(e) = self.epsilon {
            if !(e.is_finite() && e > 0.0) {
                return bad(format!(
                    "--epsilon must be finite and > 0 (use --no-noise for no privacy), got {e}"
                ));
            }
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return bad(format!("--delta must lie in (0, 1), got {}", self.delta));
        }
        if !(2..=MAX_CANARIES).contains(&self.canaries) {
            return bad(format!(
                "--canaries must lie in 2..={MAX_CANARIES}, got {}",
                self.canaries
            ));
        }
        if !(1..=10_000).contains(&self.records) {
            return bad(format!(
                "--records must lie in 1..=10000 (the embedded test set), got {}",
                self.records
            ));
        }
        if !(1..=10_000).contains(&self.epochs) {
            return bad(format!(
                "--epochs must lie in 1..=10000, got {}",
                self.epochs
            ));
        }
        if !(1..=4096).contains(&self.batch) {
            return bad(format!("--batch must lie in 1..=4096, got {}", self.batch));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!("--clip must be finite and > 0, got {}", self.clip));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be finite and > 0, got {}", self.lr));
        }
        Ok(())
    }
}

/// Guesses per side for `m` canaries: k = max(1, ⌊m/10⌋) "in" and as many "out".
pub fn guesses_per_side(m: usize) -> usize {
    (m / 10).max(1)
}

/// What an audit found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryReport {
    /// The run's claimed ε (`None`: trained without noise).
    pub epsilon_claimed: Option<f64>,
    /// ε below which the run is not (ε, δ)-DP, at 95 % confidence.
    pub epsilon_lower_bound: f64,
    /// Canaries m.
    pub canaries: u64,
    /// Guesses made (2k).
    pub guesses: u64,
    /// Correct guesses.
    pub correct: u64,
    /// Canaries that were trained on.
    pub included: usize,
    /// Private records n (real plus included canaries).
    pub private_records: usize,
    /// Noise multiplier z of the run.
    pub noise_multiplier: f64,
    /// Clip C of the run (infinite without noise).
    pub clip: f64,
    /// Poisson rate q.
    pub sample_rate: f64,
    /// DP-SGD steps.
    pub steps: usize,
    /// Mean score (log-probability of the label) of the included canaries.
    pub mean_score_in: f64,
    /// Mean score of the excluded canaries.
    pub mean_score_out: f64,
}

/// The canaries: random pixels and random labels, and which of them are trained on.
struct Canaries {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    included: Vec<bool>,
}

fn draw_canaries(m: usize, pixels: usize, classes: usize, rng: &mut ChaCha8Rng) -> Canaries {
    let mut c = Canaries {
        pixels: vec![0; m * pixels],
        labels: Vec::with_capacity(m),
        included: Vec::with_capacity(m),
    };
    rng.fill(c.pixels.as_mut_slice());
    for _ in 0..m {
        c.labels.push(rng.random_range(0..classes) as u8);
        c.included.push(rng.random::<bool>());
    }
    c
}

/// Runs the audit; `progress(epoch, epochs, loss)` is called after each epoch.
pub fn run(
    cfg: &CanaryConfig,
    progress: &dyn Fn(usize, usize, f32),
) -> anyhow::Result<CanaryReport> {
    cfg.validate()?;
    let source = DataSource::embedded()?;
    let real = source.test;
    anyhow::ensure!(
        cfg.records <= real.len(),
        InvalidAudit(format!(
            "--records {} exceeds the {} embedded images",
            cfg.records,
            real.len()
        ))
    );
    let p = real.pixels();
    let classes = real.num_classes();
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 40));
    let canaries = draw_canaries(cfg.canaries, p, classes, &mut rng);
    let mut order: Vec<usize> = (0..real.len()).collect();
    order.shuffle(&mut rng);
    let mut private = real.subset(&order[..cfg.records]);
    for i in (0..cfg.canaries).filter(|&i| canaries.included[i]) {
        private
            .images
            .extend_from_slice(&canaries.pixels[i * p..(i + 1) * p]);
        private.labels.push(canaries.labels[i]);
    }
    let included = private.len() - cfg.records;
    let n = private.len();
    let encoder = federation_encoder(&real.classes, cfg.seed);
    let texts = random_captions(&private.classes, &private.labels, &mut rng);
    let emb = encoder.encode(&texts)?;

    let sample_rate = (cfg.batch as f64 / n as f64).min(1.0);
    let steps_per_epoch = n.div_ceil(cfg.batch);
    let steps = cfg.epochs * steps_per_epoch;
    let (clip, noise_multiplier) = match cfg.epsilon {
        Some(e) => (
            cfg.clip,
            noise_multiplier_for(e, cfg.delta, sample_rate, steps as u64)?,
        ),
        None => (f64::INFINITY, 0.0),
    };
    tracing::info!(
        canaries = cfg.canaries,
        included,
        records = n,
        sample_rate,
        steps,
        noise_multiplier,
        clip,
        "canary audit: training with DP-SGD"
    );
    let dp = DpSgdConfig {
        clip,
        noise_multiplier,
        sample_rate,
        steps: steps_per_epoch,
    };
    let train_cfg = ClientTrainConfig {
        batch: cfg.batch,
        ..ClientTrainConfig::default()
    };
    let mut model = TaskModel::new(
        cfg.arch,
        real.rows,
        classes,
        encoder.dim(),
        cfg.lr,
        sub_seed(cfg.seed, 41),
    )?;
    let mut sampling = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 42));
    let mut noise = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 43));
    for epoch in 1..=cfg.epochs {
        let stats = train_private(
            &mut model,
            &private,
            &emb,
            None,
            &train_cfg,
            &dp,
            &mut sampling,
            &mut noise,
        )?;
        tracing::debug!(epoch, loss = stats.loss, "canary audit epoch");
        progress(epoch, cfg.epochs, stats.loss);
    }

    let scores = scores(&model, &canaries.pixels, &canaries.labels, classes)?;
    let mean = |want: bool| {
        let (s, k) = scores
            .iter()
            .zip(&canaries.included)
            .filter(|(_, &inc)| inc == want)
            .fold((0.0, 0usize), |(s, k), (&x, _)| (s + x, k + 1));
        if k == 0 {
            0.0
        } else {
            s / k as f64
        }
    };
    let k = guesses_per_side(cfg.canaries);
    let (guesses, correct) = guesses_from_scores(&scores, &canaries.included, k, k)?;
    let epsilon_lower_bound = epsilon_lower_bound_with_delta(
        cfg.canaries as u64,
        guesses,
        correct,
        DEFAULT_CONFIDENCE,
        cfg.delta,
    )?;
    tracing::info!(
        guesses,
        correct,
        epsilon_lower_bound,
        "canary audit: membership guesses scored"
    );
    Ok(CanaryReport {
        epsilon_claimed: cfg.epsilon,
        epsilon_lower_bound,
        canaries: cfg.canaries as u64,
        guesses,
        correct,
        included,
        private_records: n,
        noise_multiplier,
        clip,
        sample_rate,
        steps,
        mean_score_in: mean(true),
        mean_score_out: mean(false),
    })
}

/// Each canary's score: the log-probability the model gives its label (finite: clamped).
fn scores(
    model: &TaskModel,
    pixels: &[u8],
    labels: &[u8],
    classes: usize,
) -> anyhow::Result<Vec<f64>> {
    let probs = model.predict_proba(pixels, labels.len())?;
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, &l)| f64::from(probs[i * classes + l as usize].max(f32::MIN_POSITIVE)).ln())
        .collect())
}
