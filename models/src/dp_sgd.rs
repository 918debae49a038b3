//! Record-level DP-SGD (Abadi et al. 2016): private examples Poisson-sampled at rate q, each
//! example's gradient clipped to L2 norm C, Gaussian noise of std z·C added to the sum.
//!
//! Per-example gradient norms come from one backward pass, from each layer's input and the
//! gradient with respect to its output: `‖g‖²·(‖a‖² + 1)` for a Linear layer (the "ghost
//! norm", Goodfellow 2015; Li et al. 2022) and the norm of `gᵀ·unfold(a)` for a Conv2d layer
//! (the per-example product, as book-keeping does for convolutions). A second backward pass
//! over the loss re-weighted by each example's clip factor gives the clipped sum. Two passes
//! in all, never a loop over examples; [`clipped_sum_by_loop`] is that loop, kept as the
//! reference the tests and `fedmmkt bench dp-sgd` compare against.
//!
//! Terms that touch only the host's synthetic samples (distillation, cross-entropy against the
//! prompted class, alignment among the synthetic captions) hold no private data: they are added
//! unclipped. In a round of [`train_private`] they get their own steps of the model's optimiser
//! (AdamW by default), and the noised private steps are applied by plain SGD, so the noise never
//! enters the optimiser's state (Adam's moments would shrink every later step); how a noised
//! gradient is applied is post-processing.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, D};
use candle_nn::ops::log_softmax;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::classifier::{Forward, Tap, TapLayer, TaskModel};
use crate::data::Dataset;
use crate::error::{ModelError, Result};
use crate::init::pixels_to_tensor;
use crate::losses::{alignment, kl_distill, l2_normalize, scalar};
use crate::train::{gather, ClientTrainConfig, Cycler, DistillSet, TrainStats};

/// One round's DP-SGD settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpSgdConfig {
    /// Per-example L2 clip C (`f64::INFINITY` with z = 0: no clipping, for audits only).
    pub clip: f64,
    /// Noise multiplier z: the noise on the clipped sum has std z·C.
    pub noise_multiplier: f64,
    /// Poisson sampling rate q of each private example per step.
    pub sample_rate: f64,
    /// Steps this round.
    pub steps: usize,
}

impl DpSgdConfig {
    /// Checks C > 0, z ≥ 0 finite (z > 0 unless C is infinite), q in (0, 1].
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(ModelError::Config(format!("DP-SGD: {what}")));
        if self.clip.is_nan() || self.clip <= 0.0 {
            return bad(&format!("clip must be > 0, got {}", self.clip));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return bad(&format!(
                "noise multiplier must be finite and >= 0, got {}",
                self.noise_multiplier
            ));
        }
        if self.clip.is_infinite() && self.noise_multiplier != 0.0 {
            return bad("an unbounded clip needs noise multiplier 0");
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return bad(&format!(
                "sample rate must lie in (0, 1], got {}",
                self.sample_rate
            ));
        }
        Ok(())
    }
}

/// The rows of one training step: private examples first, then the host's synthetic ones.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    /// Private u8 pixels, `labels.len() * pixels`.
    pub private_pixels: Vec<u8>,
    /// Private labels.
    pub private_labels: Vec<u32>,
    /// Caption embedding per private example.
    pub private_emb: Vec<f32>,
    /// Synthetic u8 pixels.
    pub public_pixels: Vec<u8>,
    /// Teacher distribution per synthetic sample (empty: no distillation).
    pub teacher: Vec<f32>,
    /// Prompted class per synthetic sample (empty: none known).
    pub public_labels: Vec<u32>,
    /// Caption embedding per synthetic sample (empty: none known).
    pub public_emb: Vec<f32>,
}

impl StepBatch {
    fn private_len(&self) -> usize {
        self.private_labels.len()
    }

    fn public_len(&self, pixels: usize) -> usize {
        self.public_pixels.len() / pixels.max(1)
    }
}

/// What the private rows of a step give: each example's gradient norm and the clipped sum.
#[derive(Debug, Clone)]
pub struct ClippedSum {
    /// Per-example gradient L2 norms (over every parameter), before clipping.
    pub norms: Vec<f32>,
    /// Σᵢ min(1, C/‖gᵢ‖)·gᵢ per variable, in [`TaskModel::named_vars`] order.
    pub grads: Vec<(String, Vec<f32>)>,
}

/// The tensors of a step on a model: its forward pass (tapped or not) and the inputs.
struct Step<'a> {
    batch: &'a StepBatch,
    out: Forward,
    taps: Vec<Tap>,
    bp: usize,
}

fn forward<'a>(model: &TaskModel, batch: &'a StepBatch, tapped: bool) -> Result<Step<'a>> {
    let bp = batch.private_len();
    let p = model.pixels();
    let bs = batch.public_len(p);
    let mut pixels = batch.private_pixels.clone();
    pixels.extend_from_slice(&batch.public_pixels);
    let x = pixels_to_tensor(&pixels, bp + bs, model.device())?;
    let (out, taps) = if tapped {
        model.forward_tapped(&x)?
    } else {
        (model.forward(&x)?, Vec::new())
    };
    Ok(Step {
        batch,
        out,
        taps,
        bp,
    })
}

/// Each private example's loss `[bp]`: its cross-entropy plus the weighted alignment of its
/// image with its own caption against the synthetic captions of the step.
fn private_losses(step: &Step, cfg: &ClientTrainConfig) -> Result<Tensor> {
    let b = step.batch;
    let dev = step.out.logits.device();
    let logits = step.out.logits.narrow(0, 0, step.bp)?;
    let y = Tensor::from_vec(b.private_labels.clone(), (step.bp, 1), dev)?;
    let mut loss = log_softmax(&logits, D::Minus1)?
        .gather(&y, 1)?
        .squeeze(1)?
        .neg()?;
    let e = step.out.embedding.dim(1)?;
    let bs = b.public_labels.len();
    if cfg.align_weight > 0.0 && bs > 0 && b.public_emb.len() == bs * e {
        let img = l2_normalize(&step.out.embedding.narrow(0, 0, step.bp)?)?;
        let own = l2_normalize(&Tensor::from_vec(b.private_emb.clone(), (step.bp, e), dev)?)?;
        let cand = l2_normalize(&Tensor::from_vec(b.public_emb.clone(), (bs, e), dev)?)?;
        let logits = Tensor::cat(
            &[(&img * &own)?.sum_keepdim(1)?, img.matmul(&cand.t()?)?],
            1,
        )?;
        let logits = (logits / cfg.align_temperature)?;
        let mut target = vec![0f32; step.bp * (bs + 1)];
        for (i, &l) in b.private_labels.iter().enumerate() {
            let row = &mut target[i * (bs + 1)..(i + 1) * (bs + 1)];
            row[0] = 1.0;
            for (j, &c) in b.public_labels.iter().enumerate() {
                if c == l {
                    row[j + 1] = 1.0;
                }
            }
            let k: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= k);
        }
        let target = Tensor::from_vec(target, (step.bp, bs + 1), dev)?;
        let al = (target * log_softmax(&logits, D::Minus1)?)?.sum(1)?.neg()?;
        loss = (loss + (al * cfg.align_weight)?)?;
    }
    Ok(loss)
}

/// The unclipped loss on the synthetic rows (distillation, cross-entropy against the
/// prompted class, their own alignment), if any.
fn public_loss(step: &Step, cfg: &ClientTrainConfig) -> Result<Option<Tensor>> {
    let b = step.batch;
    let c = step.out.logits.dim(1)?;
    let e = step.out.embedding.dim(1)?;
    let bs = step.out.logits.dim(0)? - step.bp;
    let dev = step.out.logits.device();
    let mut loss: Option<Tensor> = None;
    let mut add = |t: Tensor| -> Result<()> {
        loss = Some(match loss.take() {
            Some(l) => (l + t)?,
            None => t,
        });
        Ok(())
    };
    if bs > 0 && cfg.kd_weight > 0.0 && b.teacher.len() == bs * c {
        let teacher = Tensor::from_vec(b.teacher.clone(), (bs, c), dev)?;
        let kd = kl_distill(&step.out.logits.narrow(0, step.bp, bs)?, &teacher, cfg.tau)?;
        add((kd * cfg.kd_weight)?)?;
    }
    if bs > 0 && cfg.dp_label_weight > 0.0 && b.public_labels.len() == bs {
        let y = Tensor::from_vec(b.public_labels.clone(), bs, dev)?;
        let ce = candle_nn::loss::cross_entropy(&step.out.logits.narrow(0, step.bp, bs)?, &y)?;
        add((ce * cfg.dp_label_weight)?)?;
    }
    if bs > 1
        && cfg.align_weight > 0.0
        && b.public_labels.len() == bs
        && b.public_emb.len() == bs * e
    {
        let txt = Tensor::from_vec(b.public_emb.clone(), (bs, e), dev)?;
        let al = alignment(
            &step.out.embedding.narrow(0, step.bp, bs)?,
            &txt,
            &b.public_labels,
            cfg.align_temperature,
        )?;
        add((al * cfg.align_weight)?)?;
    }
    Ok(loss)
}

/// Rows of `a` `[B, C, H, W]` unfolded into patches `[B, T, C·k·k]` (T output positions).
fn unfold(a: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let (b, c, h, w) = a.dims4()?;
    let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
    let mut idx = Vec::with_capacity(oh * ow * c * kernel * kernel);
    for oy in 0..oh {
        for ox in 0..ow {
            for ch in 0..c {
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        idx.push((ch * h * w + (oy * stride + ky) * w + ox * stride + kx) as u32);
                    }
                }
            }
        }
    }
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, a.device())?;
    Ok(a.reshape((b, c * h * w))?.index_select(&idx, 1)?.reshape((
        b,
        oh * ow,
        c * kernel * kernel,
    ))?)
}

/// Per-example squared gradient norms `[bp]` summed over the tapped layers.
fn squared_norms(taps: &[Tap], grads: &GradStore, bp: usize) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for tap in taps {
        let Some(g) = grads.get(tap.probe.as_tensor()) else {
            continue;
        };
        let g = g.narrow(0, 0, bp)?;
        let a = tap.input.narrow(0, 0, bp)?;
        let n2 = match tap.layer {
            TapLayer::Linear { bias } => {
                let a2 = a.sqr()?.sum(1)?;
                let a2 = if bias { (a2 + 1.0)? } else { a2 };
                (g.sqr()?.sum(1)? * a2)?
            }
            TapLayer::Conv { kernel, stride } => {
                let (_, cout, oh, ow) = g.dims4()?;
                let u = unfold(&a, kernel, stride)?;
                let pg = g.reshape((bp, cout, oh * ow))?.matmul(&u)?;
                pg.sqr()?.sum((1, 2))?
            }
        };
        total = Some(match total {
            Some(t) => (t + n2)?,
            None => n2,
        });
    }
    total.ok_or_else(|| ModelError::Config("no tapped layer received a gradient".into()))
}

/// Per-example norms `[bp]` and clip factors min(1, C/‖gᵢ‖) `[bp]` of a tapped step's
/// private rows (the first backward pass).
fn clip_factors(step: &Step, losses: &Tensor, clip: f64) -> Result<(Tensor, Tensor)> {
    let grads = losses.sum_all()?.backward()?;
    let norms = squared_norms(&step.taps, &grads, step.bp)?.sqrt()?;
    let factors = if clip.is_finite() {
        (norms.clamp(1e-12f32, f32::MAX)?.recip()? * clip)?.clamp(0f32, 1f32)?
    } else {
        norms.ones_like()?
    };
    Ok((norms, factors.detach()))
}

/// The clipped per-example gradient sum of `batch`'s private rows, by the two-pass method
/// the training uses (no noise, no synthetic terms).
pub fn clipped_sum(
    model: &TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
    clip: f64,
) -> Result<ClippedSum> {
    let step = forward(model, batch, true)?;
    let losses = private_losses(&step, cfg)?;
    let (norms, factors) = clip_factors(&step, &losses, clip)?;
    let grads = (losses * factors)?.sum_all()?.backward()?;
    Ok(ClippedSum {
        norms: norms.to_vec1()?,
        grads: flatten(model, &grads)?,
    })
}

/// [`clipped_sum`] by one backward pass per example: the slow reference implementation.
pub fn clipped_sum_by_loop(
    model: &TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
    clip: f64,
) -> Result<ClippedSum> {
    let p = model.pixels();
    let e = batch.private_emb.len() / batch.private_len().max(1);
    let mut norms = Vec::with_capacity(batch.private_len());
    let mut sum: Vec<(String, Vec<f32>)> = Vec::new();
    for i in 0..batch.private_len() {
        let one = StepBatch {
            private_pixels: batch.private_pixels[i * p..(i + 1) * p].to_vec(),
            private_labels: vec![batch.private_labels[i]],
            private_emb: batch.private_emb[i * e..(i + 1) * e].to_vec(),
            public_labels: batch.public_labels.clone(),
            public_emb: batch.public_emb.clone(),
            ..Default::default()
        };
        let step = forward(model, &one, false)?;
        let grads = private_losses(&step, cfg)?.sum_all()?.backward()?;
        let g = flatten(model, &grads)?;
        let norm = g
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let factor = if clip.is_finite() {
            (clip / norm.max(1e-12)).min(1.0)
        } else {
            1.0
        } as f32;
        norms.push(norm as f32);
        if sum.is_empty() {
            sum = g
                .iter()
                .map(|(k, v)| (k.clone(), vec![0.0; v.len()]))
                .collect();
        }
        for ((_, acc), (_, v)) in sum.iter_mut().zip(&g) {
            acc.iter_mut().zip(v).for_each(|(a, &x)| *a += factor * x);
        }
    }
    Ok(ClippedSum { norms, grads: sum })
}

/// Every variable's gradient as a flat vector, zeros where it received none.
fn flatten(model: &TaskModel, grads: &GradStore) -> Result<Vec<(String, Vec<f32>)>> {
    model
        .named_vars()
        .into_iter()
        .map(|(name, var)| {
            let v = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1()?,
                None => vec![0.0; var.elem_count()],
            };
            Ok((name, v))
        })
        .collect()
}

/// One DP-SGD step on `batch`: clipped private sum plus noise N(0, (zC)²), both divided by
/// the expected batch size, plus the unclipped synthetic terms; returns the step's loss.
pub fn dp_step(
    model: &mut TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
    dp: &DpSgdConfig,
    expected_batch: f64,
    noise: &mut dyn RngCore,
) -> Result<f32> {
    let (grads, shown) = dp_gradient(model, batch, cfg, dp, expected_batch, noise)?;
    model.step_with(&grads)?;
    Ok(shown)
}

/// [`dp_step`]'s gradient (noised clipped private mean plus the synthetic terms) and loss,
/// without the optimiser step.
fn dp_gradient(
    model: &TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
    dp: &DpSgdConfig,
    expected_batch: f64,
    noise: &mut dyn RngCore,
) -> Result<(GradStore, f32)> {
    let zero_row;
    let batch = if batch.private_len() == 0 && batch.public_pixels.is_empty() {
        // Nothing sampled: the step is noise alone; one zero row gives the graph (× 0).
        zero_row = StepBatch {
            public_pixels: vec![0; model.pixels()],
            ..Default::default()
        };
        &zero_row
    } else {
        batch
    };
    let step = forward(model, batch, true)?;
    let public = public_loss(&step, cfg)?;
    let mut total = public.clone();
    let mut shown = match &public {
        Some(p) => scalar(p)?,
        None => 0.0,
    };
    if step.bp > 0 {
        let losses = private_losses(&step, cfg)?;
        let (_, factors) = clip_factors(&step, &losses, dp.clip)?;
        shown += scalar(&losses.mean_all()?)?;
        let private = ((losses * factors)?.sum_all()? / expected_batch)?;
        total = Some(match total {
            Some(t) => (t + private)?,
            None => private,
        });
    }
    // Every variable takes part in the graph (× 0 adds nothing), so each has a gradient.
    let touch = ((step.out.logits.sum_all()? + step.out.embedding.sum_all()?)? * 0.0)?;
    let total = match total {
        Some(t) => (t + touch)?,
        None => touch,
    };
    let mut grads = total.backward()?;
    let std = (dp.noise_multiplier * dp.clip / expected_batch) as f32;
    for (_, var) in model.named_vars() {
        let t = var.as_tensor();
        let g = match grads.remove(t) {
            Some(g) => g,
            None => t.zeros_like()?,
        };
        let g = if std > 0.0 {
            let z: Vec<f32> = (0..t.elem_count())
                .map(|_| std * noise.sample::<f32, _>(StandardNormal))
                .collect();
            (g + Tensor::from_vec(z, t.shape(), t.device())?)?
        } else {
            g
        };
        grads.insert(t, g);
    }
    Ok((grads, shown))
}

/// One non-private step on the same loss (mean over private rows, plus the synthetic terms):
/// what `fedmmkt bench dp-sgd` compares a DP-SGD step against.
pub fn plain_step(
    model: &mut TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
) -> Result<f32> {
    let step = forward(model, batch, false)?;
    let mut loss = private_losses(&step, cfg)?.mean_all()?;
    if let Some(p) = public_loss(&step, cfg)? {
        loss = (loss + p)?;
    }
    let shown = scalar(&loss)?;
    model.step(&loss)?;
    Ok(shown)
}

/// A round of DP-SGD: `dp.steps` private steps, each on a Poisson sample of the private data
/// (rate q) next to a cycled batch of the synthetic set, noise drawn from `noise`, spread
/// evenly among the synthetic-only steps that give the synthetic set `cfg.epochs` passes.
#[allow(clippy::too_many_arguments)]
pub fn train_private(
    model: &mut TaskModel,
    private: &Dataset,
    private_emb: &[f32],
    distill: Option<&DistillSet>,
    cfg: &ClientTrainConfig,
    dp: &DpSgdConfig,
    rng: &mut ChaCha8Rng,
    noise: &mut dyn RngCore,
) -> Result<TrainStats> {
    dp.validate()?;
    let p = private.pixels();
    let c = private.num_classes();
    let n = private.len();
    let e = private_emb.len().checked_div(n).unwrap_or(0);
    if n == 0 || e * n != private_emb.len() {
        return Err(ModelError::Config(format!(
            "DP-SGD needs private images with one embedding each (got {n} images, {} values)",
            private_emb.len()
        )));
    }
    let distill = distill.filter(|d| !d.is_empty());
    let n_distill = distill.map_or(0, |d| d.images.len() / p);
    if let Some(d) = distill {
        if d.images.len() != n_distill * p || d.teacher.len() != n_distill * c {
            return Err(ModelError::Config(
                "teacher targets do not match the distillation set".into(),
            ));
        }
    }
    let expected = dp.sample_rate * n as f64;
    let mut dc = Cycler::new(n_distill);
    // The synthetic set gets its `epochs` passes whatever the private steps: the steps beyond
    // the private ones are synthetic-only, the private ones spread evenly among them.
    let synthetic_steps = if n_distill > 0 && cfg.distill_batch > 0 {
        cfg.epochs * n_distill.div_ceil(cfg.distill_batch)
    } else {
        0
    };
    let steps = dp.steps.max(synthetic_steps);
    let mut total = 0.0;
    let mut private_done = 0;
    for s in 0..steps {
        let private_step = (s + 1) * dp.steps / steps.max(1) > private_done;
        let mut batch = StepBatch::default();
        if let Some(d) = distill {
            let di = dc.take(cfg.distill_batch, rng);
            fill_public(&mut batch, d, &di, p, c, e);
        }
        if !private_step {
            total += synthetic_step(model, &batch, cfg)?;
            continue;
        }
        private_done += 1;
        let pi: Vec<usize> = (0..n)
            .filter(|_| rng.random::<f64>() < dp.sample_rate)
            .collect();
        // The noised private step goes by plain SGD: fed to Adam, its noise would fill the
        // second moments and stall the synthetic steps for hundreds of steps after. The
        // synthetic captions stay as alignment candidates; their images are not in it.
        let private_batch = StepBatch {
            private_pixels: gather(&private.images, &pi, p),
            private_labels: pi.iter().map(|&i| u32::from(private.labels[i])).collect(),
            private_emb: gather(private_emb, &pi, e),
            public_labels: std::mem::take(&mut batch.public_labels),
            public_emb: std::mem::take(&mut batch.public_emb),
            ..Default::default()
        };
        let (grads, loss) = dp_gradient(model, &private_batch, cfg, dp, expected, noise)?;
        model.sgd_step(&grads, cfg.dp_lr)?;
        total += loss;
    }
    debug_assert_eq!(private_done, dp.steps);
    Ok(TrainStats {
        steps,
        loss: if steps > 0 { total / steps as f32 } else { 0.0 },
    })
}

/// One Adam step on the synthetic rows of `batch` alone (no private record touched); returns
/// its loss (0 when the rows carry no loss term).
fn synthetic_step(
    model: &mut TaskModel,
    batch: &StepBatch,
    cfg: &ClientTrainConfig,
) -> Result<f32> {
    let step = forward(model, batch, false)?;
    let Some(loss) = public_loss(&step, cfg)? else {
        return Ok(0.0);
    };
    let shown = scalar(&loss)?;
    model.step(&loss)?;
    Ok(shown)
}

/// Copies rows `di` of the synthetic set into the step's public part.
pub(crate) fn fill_public(
    batch: &mut StepBatch,
    d: &DistillSet,
    di: &[usize],
    p: usize,
    c: usize,
    e: usize,
) {
    batch.public_pixels = gather(&d.images, di, p);
    batch.teacher = gather(&d.teacher, di, c);
    if let (Some(l), Some(em)) = (&d.labels, &d.emb) {
        if em.len() == l.len() * e {
            batch.public_labels = di.iter().map(|&i| u32::from(l[i])).collect();
            batch.public_emb = gather(em, di, e);
        }
    }
}

/// A round on the synthetic set only (a node whose budget cannot pay for private training):
/// distillation and synthetic alignment, no private record touched.
pub fn train_synthetic_only(
    model: &mut TaskModel,
    distill: &DistillSet,
    emb_dim: usize,
    cfg: &ClientTrainConfig,
    rng: &mut ChaCha8Rng,
) -> Result<TrainStats> {
    let p = model.pixels();
    let n = distill.images.len() / p.max(1);
    let c = distill.teacher.len() / n.max(1);
    if n == 0 || c * n != distill.teacher.len() || cfg.distill_batch == 0 {
        return Ok(TrainStats::default());
    }
    let steps = cfg.epochs * n.div_ceil(cfg.distill_batch);
    let mut dc = Cycler::new(n);
    let mut total = 0.0;
    for _ in 0..steps {
        let mut batch = StepBatch::default();
        fill_public(
            &mut batch,
            distill,
            &dc.take(cfg.distill_batch, rng),
            p,
            c,
            emb_dim,
        );
        total += synthetic_step(model, &batch, cfg)?;
    }
    Ok(TrainStats {
        steps,
        loss: if steps > 0 { total / steps as f32 } else { 0.0 },
    })
}
