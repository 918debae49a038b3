//! The client's local training loop: cross-entropy on private data, distillation on the
//! kept synthetic (or public) samples, and image–caption alignment on both.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::classifier::TaskModel;
use crate::data::Dataset;
use crate::error::{ModelError, Result};
use crate::init::pixels_to_tensor;
use crate::losses::{alignment, cross_entropy, kl_distill, scalar};

/// Samples a client distils from: images with teacher distributions, and (for synthetic
/// samples) the prompted class and caption embedding.
#[derive(Debug, Clone, Default)]
pub struct DistillSet {
    /// u8 pixels, `len * pixels`.
    pub images: Vec<u8>,
    /// Teacher class distributions, `len * classes`.
    pub teacher: Vec<f32>,
    /// Prompted class per sample, when known (synthetic samples).
    pub labels: Option<Vec<u8>>,
    /// Caption embedding per sample, when known.
    pub emb: Option<Vec<f32>>,
}

impl DistillSet {
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Concatenates several sets (a client's memory of past rounds); labels and embeddings
    /// survive only if every part has them.
    pub fn concat(parts: &[DistillSet]) -> DistillSet {
        let all = |f: fn(&DistillSet) -> bool| parts.iter().all(f);
        let keep_labels = all(|p| p.labels.is_some());
        let keep_emb = all(|p| p.emb.is_some());
        let mut out = DistillSet {
            labels: keep_labels.then(Vec::new),
            emb: keep_emb.then(Vec::new),
            ..Default::default()
        };
        for p in parts {
            out.images.extend_from_slice(&p.images);
            out.teacher.extend_from_slice(&p.teacher);
            if let (Some(o), Some(l)) = (out.labels.as_mut(), p.labels.as_ref()) {
                o.extend_from_slice(l);
            }
            if let (Some(o), Some(e)) = (out.emb.as_mut(), p.emb.as_ref()) {
                o.extend_from_slice(e);
            }
        }
        out
    }
}

crate::knobs! {
    /// Weights and sizes of the client's local objective.
    #[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct ClientTrainConfig {
        /// Local training epochs per round: passes over the larger of the private and
        /// distillation sets.
        pub epochs: usize,
        /// Private samples per local training step.
        pub batch: usize,
        /// Distillation samples per local training step.
        pub distill_batch: usize,
        /// Distillation temperature τ.
        pub tau: f64,
        /// Weight of the distillation loss (0 disables it).
        pub kd_weight: f64,
        /// Weight of the image–caption alignment loss (0 disables it).
        pub align_weight: f64,
        /// Temperature of the alignment logits.
        pub align_temperature: f64,
        /// Record-level DP: expected private examples per DP-SGD step (Poisson rate q =
        /// this / records; large batches keep the noise small next to the signal).
        pub dp_batch: usize,
        /// Record-level DP: passes over the private data per round (steps = this × records /
        /// `dp_batch`, at least 1); the synthetic set still gets `epochs` passes, the steps
        /// beyond the private ones touching synthetic samples only.
        pub dp_epochs: f64,
        /// Record-level DP: SGD learning rate of the noised private steps (the synthetic
        /// steps keep the model's own optimiser).
        pub dp_lr: f64,
        /// Record-level DP: weight of the cross-entropy of the synthetic samples against
        /// their prompted class (public, so free; it stands in for the private signal the
        /// noise takes away).
        pub dp_label_weight: f64,
    }
}

impl Default for ClientTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch: 32,
            distill_batch: 32,
            tau: 2.0,
            kd_weight: 1.0,
            align_weight: 0.2,
            align_temperature: 0.2,
            // Chosen with `fedmmkt simulate --validation --dp-epsilon 8` (10 clients, α = 0.1):
            // few full-batch steps keep the noise small next to the signal; 1, 2 and 4 passes
            // measured within a point of each other, 2 at half the cost of 4.
            dp_batch: 4096,
            dp_epochs: 2.0,
            dp_lr: 0.5,
            dp_label_weight: 1.0,
        }
    }
}

/// What a round of local training did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TrainStats {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Mean total loss over the steps.
    pub loss: f32,
}

/// Indices of a set in reshuffled passes.
pub(crate) struct Cycler {
    order: Vec<usize>,
    cursor: usize,
}

impl Cycler {
    /// A cycler over `0..n`.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            order: (0..n).collect(),
            cursor: n,
        }
    }

    /// The next `b` indices (fewer only when the set is smaller).
    pub(crate) fn take(&mut self, b: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut out = Vec::with_capacity(b);
        while out.len() < b.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.order.shuffle(rng);
                self.cursor = 0;
            }
            out.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        out
    }
}

/// Rows `idx` of a row-major buffer of `width`-wide rows, concatenated (callers pass indices
/// they validated against the buffer).
pub fn gather<T: Copy>(src: &[T], idx: &[usize], width: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        out.extend_from_slice(&src[i * width..(i + 1) * width]);
    }
    out
}

/// Trains `model` for one round; `private_emb` holds the caption embedding of each private
/// image (`private.len() * emb_dim`), `distill` last round's kept samples with their teacher.
pub fn train_client(
    model: &mut TaskModel,
    private: &Dataset,
    private_emb: &[f32],
    distill: Option<&DistillSet>,
    cfg: &ClientTrainConfig,
    rng: &mut ChaCha8Rng,
) -> Result<TrainStats> {
    let p = private.pixels();
    let c = private.num_classes();
    let n = private.len();
    let emb_dim = private_emb.len().checked_div(n).unwrap_or(0);
    if n == 0 || emb_dim * n != private_emb.len() || cfg.batch == 0 {
        return Err(ModelError::Config(format!(
            "client training needs private images with one embedding each (got {n} images, {} values)",
            private_emb.len()
        )));
    }
    let distill = distill.filter(|d| !d.is_empty() && cfg.kd_weight > 0.0);
    let n_distill = distill.map_or(0, |d| d.images.len() / p);
    if let Some(d) = distill {
        if d.images.len() != n_distill * p || d.teacher.len() != n_distill * c {
            return Err(ModelError::Config(
                "teacher targets do not match the distillation set".into(),
            ));
        }
    }
    let dev = model.device().clone();
    let per_epoch = n
        .max(n_distill * cfg.batch / cfg.distill_batch.max(1))
        .div_ceil(cfg.batch);
    let steps = cfg.epochs * per_epoch;
    let mut pc = Cycler::new(n);
    let mut dc = Cycler::new(n_distill);
    let mut total = 0.0;
    for _ in 0..steps {
        let pi = pc.take(cfg.batch, rng);
        let labels: Vec<u32> = pi.iter().map(|&i| private.labels[i] as u32).collect();
        let mut pixels = gather(&private.images, &pi, p);
        let mut align_labels = labels.clone();
        let mut align_emb = gather(private_emb, &pi, emb_dim);
        let di = match distill {
            Some(_) => dc.take(cfg.distill_batch, rng),
            None => Vec::new(),
        };
        if let Some(d) = distill {
            pixels.extend(gather(&d.images, &di, p));
            if let (Some(l), Some(e)) = (&d.labels, &d.emb) {
                align_labels.extend(di.iter().map(|&i| l[i] as u32));
                align_emb.extend(gather(e, &di, emb_dim));
            }
        }
        let bp = pi.len();
        let x = pixels_to_tensor(&pixels, bp + di.len(), &dev)?;
        let out = model.forward(&x)?;
        let y = Tensor::from_vec(labels, bp, &dev)?;
        let mut loss = cross_entropy(&out.logits.narrow(0, 0, bp)?, &y)?;
        if let Some(d) = distill {
            let teacher = Tensor::from_vec(gather(&d.teacher, &di, c), (di.len(), c), &dev)?;
            let kd = kl_distill(&out.logits.narrow(0, bp, di.len())?, &teacher, cfg.tau)?;
            loss = (loss + (kd * cfg.kd_weight)?)?;
        }
        if cfg.align_weight > 0.0 {
            let na = align_labels.len();
            let txt = Tensor::from_vec(align_emb, (na, emb_dim), &dev)?;
            let al = alignment(
                &out.embedding.narrow(0, 0, na)?,
                &txt,
                &align_labels,
                cfg.align_temperature,
            )?;
            loss = (loss + (al * cfg.align_weight)?)?;
        }
        total += scalar(&loss)?;
        model.step(&loss)?;
    }
    Ok(TrainStats {
        steps,
        loss: if steps > 0 { total / steps as f32 } else { 0.0 },
    })
}

/// Fraction of `ds` that `model` classifies correctly.
pub fn accuracy(model: &TaskModel, ds: &Dataset) -> Result<f64> {
    if ds.is_empty() {
        return Ok(0.0);
    }
    let probs = model.predict_proba(&ds.images, ds.len())?;
    Ok(argmax_accuracy(&probs, &ds.labels, ds.num_classes()))
}

/// Fraction of rows of `probs` (`labels.len() * classes`) whose argmax equals the label.
pub fn argmax_accuracy(probs: &[f32], labels: &[u8], classes: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = probs
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &l)| argmax(row) == l as usize)
        .count();
    correct as f64 / labels.len() as f64
}

/// Index of the largest value (first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}
