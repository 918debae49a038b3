//! The text-to-image generator: a conditional flow-matching model whose velocity network is
//! conditioned on the caption embedding, sampled with a fixed number of Euler steps.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, AdamW, Linear, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::classifier::TaskModel;
use crate::error::{ModelError, Result};
use crate::init::{normal_vec, pixels_to_tensor, reinit, tensor_to_pixels};
use crate::losses::scalar;

/// A text-to-image model: samples images for caption embeddings, and learns from weighted
/// (image, caption embedding) triples.
pub trait Generator {
    /// Draws one u8 image per caption embedding (`emb` is `n * emb_dim` values).
    fn sample(&self, emb: &[f32], n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<u8>>;
    /// Trains on `(images, embeddings, weights)` for `steps` steps; returns the mean loss.
    fn train(&mut self, set: &WeightedSet, steps: usize, rng: &mut ChaCha8Rng) -> Result<f32>;
    /// Saves the parameters as safetensors.
    fn save(&self, path: &Path) -> Result<()>;
    /// Loads parameters saved by `save`.
    fn load(&mut self, path: &Path) -> Result<()>;
}

/// Training triples for the generator: images, their caption embeddings, per-sample weights.
#[derive(Debug, Clone, Default)]
pub struct WeightedSet {
    /// u8 pixels, `len * pixels`.
    pub images: Vec<u8>,
    /// Caption embeddings, `len * emb_dim`.
    pub emb: Vec<f32>,
    /// Non-negative weights (1 for real public data, the reward for kept synthetic samples).
    pub weights: Vec<f32>,
}

impl WeightedSet {
    /// Number of triples.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Appends every triple of `other`.
    pub fn extend(&mut self, other: &WeightedSet) {
        self.images.extend_from_slice(&other.images);
        self.emb.extend_from_slice(&other.emb);
        self.weights.extend_from_slice(&other.weights);
    }
}

crate::knobs! {
    /// Shape and optimisation settings of the flow-matching generator.
    #[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct FlowConfig {
        /// Pixels per image (784 for 28×28); a host sets it from its public set.
        pub pixels: usize,
        /// Caption embedding width; a host sets it from its text encoder.
        pub emb_dim: usize,
        /// Hidden width of the flow's velocity network.
        pub hidden: usize,
        /// Residual blocks of the velocity network.
        pub blocks: usize,
        /// Width of the PCA latent space the flow runs in (fitted on the pre-training images,
        /// whitened); 0 runs the flow directly on pixels.
        pub latent_dim: usize,
        /// Euler steps when sampling.
        pub sample_steps: usize,
        /// Probability of dropping the caption during training (enables guidance).
        pub uncond_prob: f32,
        /// Classifier-free guidance scale at sampling (1 = plain conditional sampling).
        pub guidance: f32,
        /// Learning rate of the generator's training.
        pub lr: f64,
        /// Images per generator training step.
        pub batch: usize,
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            pixels: 784,
            emb_dim: 32,
            hidden: 256,
            blocks: 3,
            latent_dim: 64,
            sample_steps: 16,
            uncond_prob: 0.1,
            guidance: 1.0,
            lr: 1e-3,
            batch: 128,
        }
    }
}

impl FlowConfig {
    /// Width of the space the flow runs in.
    pub fn data_dim(&self) -> usize {
        if self.latent_dim > 0 {
            self.latent_dim
        } else {
            self.pixels
        }
    }
}

const TIME_FEATURES: usize = 16;

/// A whitened PCA code: `z = ((x − mean) · basis) / scale`, `x = mean + (z · scale) · basisᵀ`.
/// Stored as parameters so checkpoints carry it, but never trained.
struct PcaCodec {
    mean: candle_core::Var,
    basis: candle_core::Var,
    scale: candle_core::Var,
}

impl PcaCodec {
    fn new(varmap: &VarMap, pixels: usize, dim: usize, device: &Device) -> Result<Self> {
        let var = |name: &str, shape: Vec<usize>| -> Result<candle_core::Var> {
            let v = candle_core::Var::from_tensor(&Tensor::ones(shape, DType::F32, device)?)?;
            varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("parameter store lock poisoned".into()))?
                .insert(format!("codec.{name}"), v.clone());
            Ok(v)
        };
        Ok(Self {
            mean: var("mean", vec![1, pixels])?,
            basis: var("basis", vec![pixels, dim])?,
            scale: var("scale", vec![1, dim])?,
        })
    }

    /// Fits the code to `x` `[n, pixels]` (values in [-1, 1]).
    fn fit(&self, x: &Tensor) -> Result<()> {
        let (n, p) = x.dims2()?;
        let dim = self.basis.dims()[1];
        let mean = x.mean_keepdim(0)?;
        let xc = x.broadcast_sub(&mean)?;
        let cov = (xc.t()?.matmul(&xc)? / (n.max(2) - 1) as f64)?;
        let cov: Vec<f32> = cov.flatten_all()?.to_vec1()?;
        let m = nalgebra::DMatrix::from_row_slice(p, p, &cov).map(|v| v as f64);
        let eig = nalgebra::SymmetricEigen::new(m);
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let mut basis = vec![0f32; p * dim];
        let mut scale = vec![0f32; dim];
        for (k, &i) in order.iter().take(dim).enumerate() {
            scale[k] = eig.eigenvalues[i].max(1e-6).sqrt() as f32;
            for r in 0..p {
                basis[r * dim + k] = eig.eigenvectors[(r, i)] as f32;
            }
        }
        self.mean.set(&mean)?;
        self.basis
            .set(&Tensor::from_vec(basis, (p, dim), x.device())?)?;
        self.scale
            .set(&Tensor::from_vec(scale, (1, dim), x.device())?)?;
        Ok(())
    }

    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(self.mean.as_tensor())?
            .matmul(self.basis.as_tensor())?
            .broadcast_div(self.scale.as_tensor())?)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.broadcast_mul(self.scale.as_tensor())?
            .matmul(&self.basis.as_tensor().t()?)?
            .broadcast_add(self.mean.as_tensor())?)
    }
}

struct VelocityNet {
    input: Linear,
    cond: Linear,
    blocks: Vec<(Linear, Linear)>,
    output: Linear,
}

impl VelocityNet {
    fn new(vb: VarBuilder, cfg: &FlowConfig) -> Result<Self> {
        let h = cfg.hidden;
        let blocks = (0..cfg.blocks)
            .map(|i| {
                let b = vb.pp(format!("block{i}"));
                Ok((linear(h, h, b.pp("cond"))?, linear(h, h, b.pp("fc"))?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input: linear(cfg.data_dim(), h, vb.pp("input"))?,
            cond: linear(cfg.emb_dim + TIME_FEATURES, h, vb.pp("cond"))?,
            blocks,
            output: linear(h, cfg.data_dim(), vb.pp("output"))?,
        })
    }

    /// Velocity at `x` `[B, P]`, times `t` (B values in [0,1]), conditions `c` `[B, E]`.
    fn forward(&self, x: &Tensor, t: &[f32], c: &Tensor) -> Result<Tensor> {
        let b = t.len();
        let mut feats = Vec::with_capacity(b * TIME_FEATURES);
        for &ti in t {
            for k in 0..TIME_FEATURES / 2 {
                let f = (k as f32).exp2() * std::f32::consts::PI * ti;
                feats.push(f.sin());
                feats.push(f.cos());
            }
        }
        let tf = Tensor::from_vec(feats, (b, TIME_FEATURES), x.device())?;
        let cond = self.cond.forward(&Tensor::cat(&[c, &tf], 1)?)?.silu()?;
        let mut h = (self.input.forward(x)? + &cond)?;
        for (film, fc) in &self.blocks {
            let g = film.forward(&cond)?;
            h = (&h + fc.forward(&(h.silu()? + g)?)?)?;
        }
        Ok(self.output.forward(&h.silu()?)?)
    }
}

/// The default generator: conditional flow matching (rectified flow) with an MLP velocity net.
pub struct FlowGenerator {
    cfg: FlowConfig,
    varmap: VarMap,
    net: VelocityNet,
    codec: Option<PcaCodec>,
    codec_ready: bool,
    opt: AdamW,
    device: Device,
}

impl FlowGenerator {
    /// A freshly initialised generator, parameters drawn from `seed`.
    pub fn new(cfg: FlowConfig, seed: u64) -> Result<Self> {
        if cfg.pixels == 0
            || cfg.emb_dim == 0
            || cfg.hidden == 0
            || cfg.sample_steps == 0
            || cfg.batch == 0
        {
            return Err(ModelError::Config(format!(
                "generator sizes must be positive: {cfg:?}"
            )));
        }
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let net = VelocityNet::new(vb.pp("velocity"), &cfg)?;
        reinit(&varmap, seed)?;
        let trainable = varmap.all_vars();
        let codec = if cfg.latent_dim > 0 {
            Some(PcaCodec::new(&varmap, cfg.pixels, cfg.latent_dim, &device)?)
        } else {
            None
        };
        let opt = AdamW::new(
            trainable,
            ParamsAdamW {
                lr: cfg.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        Ok(Self {
            cfg,
            varmap,
            net,
            codec_ready: codec.is_none(),
            codec,
            opt,
            device,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Fits the latent code (PCA) to the pre-training images; a no-op in pixel space.
    pub fn fit_latent(&mut self, images: &[u8]) -> Result<()> {
        let n = images.len() / self.cfg.pixels;
        if let Some(codec) = &self.codec {
            if n < 2 {
                return Err(ModelError::Config(
                    "the latent code needs at least two images".into(),
                ));
            }
            codec.fit(&pixels_to_tensor(images, n, &self.device)?)?;
        }
        self.codec_ready = true;
        Ok(())
    }

    /// Sets the learning rate (lower for fine-tuning than for pre-training).
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    fn ensure_ready(&self) -> Result<()> {
        if self.codec_ready {
            Ok(())
        } else {
            Err(ModelError::Config(
                "the generator's latent code is not fitted: call fit_latent or load a checkpoint"
                    .into(),
            ))
        }
    }

    fn velocity(&self, x: &Tensor, t: f32, c: &Tensor, uncond: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let tv = vec![t; n];
        let vc = self.net.forward(x, &tv, c)?;
        if (self.cfg.guidance - 1.0).abs() < f32::EPSILON {
            return Ok(vc);
        }
        let vu = self.net.forward(x, &tv, uncond)?;
        Ok((&vu + ((vc - &vu)? * self.cfg.guidance as f64)?)?)
    }
}

impl Generator for FlowGenerator {
    fn sample(&self, emb: &[f32], n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<u8>> {
        self.sample_guided(emb, n, None, rng)
    }

    fn train(&mut self, set: &WeightedSet, steps: usize, rng: &mut ChaCha8Rng) -> Result<f32> {
        self.ensure_ready()?;
        let (p, e) = (self.cfg.pixels, self.cfg.emb_dim);
        if set.images.len() != set.len() * p || set.emb.len() != set.len() * e {
            return Err(ModelError::Config(
                "generator training set has inconsistent sizes".into(),
            ));
        }
        if set.is_empty() || steps == 0 {
            return Ok(0.0);
        }
        let mut order: Vec<usize> = (0..set.len()).collect();
        let mut cursor = order.len();
        let mut total = 0.0;
        for _ in 0..steps {
            let b = self.cfg.batch.min(set.len());
            let mut idx = Vec::with_capacity(b);
            while idx.len() < b {
                if cursor == order.len() {
                    order.shuffle(rng);
                    cursor = 0;
                }
                idx.push(order[cursor]);
                cursor += 1;
            }
            let mut px = Vec::with_capacity(b * p);
            let mut em = Vec::with_capacity(b * e);
            let mut w = Vec::with_capacity(b);
            for &i in &idx {
                px.extend_from_slice(&set.images[i * p..(i + 1) * p]);
                if rng.random::<f32>() < self.cfg.uncond_prob {
                    em.extend(std::iter::repeat_n(0f32, e));
                } else {
                    em.extend_from_slice(&set.emb[i * e..(i + 1) * e]);
                }
                w.push(set.weights[i].max(0.0));
            }
            let wsum: f32 = w.iter().sum();
            if wsum <= 0.0 {
                continue;
            }
            let mut x1 = pixels_to_tensor(&px, b, &self.device)?;
            if let Some(codec) = &self.codec {
                x1 = codec.encode(&x1)?;
            }
            let d = self.cfg.data_dim();
            let x0 = Tensor::from_vec(normal_vec(rng, b * d), (b, d), &self.device)?;
            let t: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
            let tt = Tensor::from_slice(&t, (b, 1), &self.device)?;
            let xt = (x0.broadcast_mul(&(1.0 - &tt)?)? + x1.broadcast_mul(&tt)?)?;
            let target = (&x1 - &x0)?;
            let c = Tensor::from_vec(em, (b, e), &self.device)?;
            let v = self.net.forward(&xt, &t, &c)?;
            let per_sample = (v - target)?.sqr()?.mean(1)?;
            let wt = Tensor::from_vec(w, b, &self.device)?;
            let loss = ((per_sample * wt)?.sum_all()? / wsum as f64)?;
            self.opt.backward_step(&loss)?;
            total += scalar(&loss)?;
        }
        Ok(total / steps as f32)
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.varmap.save(path)?;
        Ok(())
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        self.varmap.load(path)?;
        self.codec_ready = true;
        Ok(())
    }
}

/// Classifier guidance: each Euler step also climbs log p(prompted class | predicted image)
/// of a classifier, scaled by `scale` (Dhariwal & Nichol 2021, on the flow's clean estimate).
pub struct Guidance<'a> {
    /// The classifier whose belief steers sampling.
    pub classifier: &'a TaskModel,
    /// Prompted class of each sample.
    pub labels: &'a [u8],
    /// Step size of the guidance term.
    pub scale: f64,
    /// Weight β of the classifier's entropy in the objective log p(y|x) + β·H(p(·|x)): above
    /// zero, samples stay their class but move towards where the classifier is less sure.
    pub entropy: f64,
}

/// The generator's whitened PCA code, `z = ((x − mean) · basis) / scale`, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentBasis {
    /// Mean image, `pixels` values.
    pub mean: Vec<f32>,
    /// Basis, `pixels × d` values, row-major.
    pub basis: Vec<f32>,
    /// Scale of each of the `d` components.
    pub scale: Vec<f32>,
}

/// Per-class first and second moments of real images in the generator's latent code: what the
/// federation's data looks like, class by class, in the space the flow samples.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatentMoments {
    /// Latent width d.
    pub dim: usize,
    /// Per class, `Some((mean, variance))` of `d` values each, or `None` where unknown.
    pub classes: Vec<Option<(Vec<f32>, Vec<f32>)>>,
}

/// Moment matching of samples to [`LatentMoments`]: each class's samples are shifted and
/// rescaled, dimension by dimension, so their mean and standard deviation move `strength` of
/// the way from their own towards the target's (classes without target moments stay as they
/// are). It acts on the flow's predicted end points at time `at` of the sampling path and
/// moves the current states by the same amount, so the rest of the path (and the critic's
/// guidance) still shapes the samples; at 1 it acts on the final latents.
pub struct Calibration<'a> {
    /// The target moments.
    pub moments: &'a LatentMoments,
    /// Class of each sample.
    pub labels: &'a [u8],
    /// 0: no change; 1: the samples' per-class moments equal the target's.
    pub strength: f32,
    /// Where on the sampling path, in [0, 1].
    pub at: f32,
}

impl Calibration<'_> {
    /// Applies the calibration to latents `z` (`labels.len() * dim`, row-major) in place.
    fn apply(&self, z: &mut [f32]) -> Result<()> {
        self.apply_rows(z, self.labels)
    }

    /// [`Self::apply`] to latents of samples of classes `labels`.
    fn apply_rows(&self, z: &mut [f32], labels: &[u8]) -> Result<()> {
        let d = self.moments.dim;
        if d == 0
            || z.len() != labels.len() * d
            || self
                .moments
                .classes
                .iter()
                .flatten()
                .any(|(m, v)| m.len() != d || v.len() != d)
        {
            return Err(ModelError::Config(format!(
                "latent moments of width {d} do not fit {} samples",
                labels.len()
            )));
        }
        let lam = self.strength.clamp(0.0, 1.0);
        for (c, target) in self.moments.classes.iter().enumerate() {
            let Some((tmean, tvar)) = target else {
                continue;
            };
            let rows: Vec<usize> = (0..labels.len())
                .filter(|&i| labels[i] as usize == c)
                .collect();
            if rows.len() < 2 {
                continue;
            }
            let n = rows.len() as f32;
            for k in 0..d {
                let mean = rows.iter().map(|&i| z[i * d + k]).sum::<f32>() / n;
                let sd = (rows
                    .iter()
                    .map(|&i| (z[i * d + k] - mean).powi(2))
                    .sum::<f32>()
                    / (n - 1.0))
                    .sqrt();
                let target_mean = mean + lam * (tmean[k] - mean);
                let target_sd = sd + lam * (tvar[k].max(0.0).sqrt() - sd);
                let ratio = if sd > 1e-6 { target_sd / sd } else { 1.0 };
                for &i in &rows {
                    z[i * d + k] = target_mean + (z[i * d + k] - mean) * ratio;
                }
            }
        }
        Ok(())
    }
}

impl FlowGenerator {
    /// The fitted latent code (`None` for a flow on pixels).
    pub fn latent_code(&self) -> Result<Option<LatentBasis>> {
        self.ensure_ready()?;
        let Some(codec) = &self.codec else {
            return Ok(None);
        };
        let flat = |v: &candle_core::Var| -> Result<Vec<f32>> {
            Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        };
        Ok(Some(LatentBasis {
            mean: flat(&codec.mean)?,
            basis: flat(&codec.basis)?,
            scale: flat(&codec.scale)?,
        }))
    }

    /// Samples like [`Generator::sample`], optionally steered by a classifier.
    pub fn sample_guided(
        &self,
        emb: &[f32],
        n: usize,
        guidance: Option<&Guidance>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<u8>> {
        self.sample_calibrated(emb, n, guidance, None, rng)
    }

    /// Samples like [`Self::sample_guided`], then moves each class's latents towards the
    /// `calibration`'s moments before decoding (a flow on pixels ignores it).
    pub fn sample_calibrated(
        &self,
        emb: &[f32],
        n: usize,
        guidance: Option<&Guidance>,
        calibration: Option<&Calibration>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<u8>> {
        self.ensure_ready()?;
        if let Some(g) = guidance {
            if g.labels.len() != n {
                return Err(ModelError::Config(format!(
                    "{} guidance labels for {n} samples",
                    g.labels.len()
                )));
            }
        }
        if emb.len() != n * self.cfg.emb_dim {
            return Err(ModelError::Config(format!(
                "{} embedding values for {n} samples of width {}",
                emb.len(),
                self.cfg.emb_dim
            )));
        }
        let d = self.cfg.data_dim();
        if let Some(cal) = calibration {
            if cal.labels.len() != n || cal.moments.dim != d || self.codec.is_none() {
                return Err(ModelError::Config(format!(
                    "calibration for {} samples of latent width {} does not fit {n} samples of a {d}-wide latent code",
                    cal.labels.len(),
                    cal.moments.dim
                )));
            }
        }
        // The step whose predicted end points are calibrated (None: the final latents).
        let steps = self.cfg.sample_steps;
        let mid = calibration
            .map(|c| (c.at.clamp(0.0, 1.0) * steps as f32).round() as usize)
            .filter(|&k| k < steps);
        let mut latents: Vec<f32> = Vec::with_capacity(n * d);
        for start in (0..n).step_by(256) {
            let b = (n - start).min(256);
            let e = &emb[start * self.cfg.emb_dim..(start + b) * self.cfg.emb_dim];
            let c = Tensor::from_slice(e, (b, self.cfg.emb_dim), &self.device)?;
            let uncond = c.zeros_like()?;
            let mut x = Tensor::from_vec(normal_vec(rng, b * d), (b, d), &self.device)?;
            let dt = 1.0 / self.cfg.sample_steps as f32;
            for k in 0..self.cfg.sample_steps {
                let t = k as f32 * dt;
                let mut v = self.velocity(&x, t, &c, &uncond)?.detach();
                if let Some(cal) = calibration.filter(|_| mid == Some(k)) {
                    // Calibrate the predicted end points; move the states by as much.
                    let end = (&x + (&v * (1.0 - t) as f64)?)?;
                    let mut z: Vec<f32> = end.flatten_all()?.to_vec1()?;
                    cal.apply_rows(&mut z, &cal.labels[start..start + b])?;
                    let moved = Tensor::from_vec(z, (b, d), &self.device)?;
                    x = (&x + (moved - end)?)?;
                }
                if let Some(g) = guidance {
                    let labels: Vec<u32> = g.labels[start..start + b]
                        .iter()
                        .map(|&l| l as u32)
                        .collect();
                    let grad = self.guidance_gradient(&x, &v, t, g, &labels)?;
                    v = (&v + (grad * g.scale)?)?;
                }
                x = (x + (v * dt as f64)?)?.detach();
            }
            latents.extend(x.flatten_all()?.to_vec1::<f32>()?);
        }
        let Some(codec) = &self.codec else {
            let x = Tensor::from_vec(latents, (n, d), &self.device)?;
            return tensor_to_pixels(&x);
        };
        if let Some(cal) = calibration.filter(|_| mid.is_none()) {
            cal.apply(&mut latents)?;
        }
        let x = Tensor::from_vec(latents, (n, d), &self.device)?;
        tensor_to_pixels(&codec.decode(&x)?)
    }

    /// ∇ₓ Σ [log p(label | x̂) + β·H(p(·|x̂))], x̂ = decode(x + (1 − t)·v): the direction that
    /// makes each sample's predicted end point look more like its prompted class to the
    /// guidance classifier (and, with β > 0, less certain of it).
    fn guidance_gradient(
        &self,
        x: &Tensor,
        v: &Tensor,
        t: f32,
        guidance: &Guidance,
        labels: &[u32],
    ) -> Result<Tensor> {
        let classifier = guidance.classifier;
        let xv = candle_core::Var::from_tensor(x)?;
        let end = (xv.as_tensor() + (v * (1.0 - t) as f64)?)?;
        let pixels = match &self.codec {
            Some(codec) => codec.decode(&end)?,
            None => end,
        };
        let logp = candle_nn::ops::log_softmax(&classifier.logits(&pixels)?, 1)?;
        let idx = Tensor::from_slice(labels, (labels.len(), 1), x.device())?;
        let mut objective = logp.gather(&idx, 1)?.sum_all()?;
        if guidance.entropy > 0.0 {
            let entropy = (logp.exp()? * &logp)?.sum_all()?.neg()?;
            objective = (objective + (entropy * guidance.entropy)?)?;
        }
        let grads = objective.backward()?;
        let g = grads
            .get(xv.as_tensor())
            .cloned()
            .ok_or_else(|| ModelError::Config("no gradient reached the sample".into()))?;
        Ok(g.detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn calibration_moves_each_class_to_its_target_moments() {
        // Two classes of three 2-d samples; class 1 has no target and must stay as it is.
        let labels = [0u8, 0, 0, 1, 1, 1];
        let z0: Vec<f32> = vec![1.0, 0.0, 2.0, 1.0, 3.0, 2.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0];
        let moments = LatentMoments {
            dim: 2,
            classes: vec![Some((vec![-1.0, 10.0], vec![4.0, 0.25])), None],
        };
        let moments_of = |z: &[f32], c: u8, k: usize| {
            let v: Vec<f32> = (0..6)
                .filter(|&i| labels[i] == c)
                .map(|i| z[i * 2 + k])
                .collect();
            let m = v.iter().sum::<f32>() / 3.0;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / 2.0;
            (m, var)
        };
        let mut z = z0.clone();
        let full = Calibration {
            moments: &moments,
            labels: &labels,
            strength: 1.0,
            at: 1.0,
        };
        full.apply(&mut z).unwrap();
        for (k, (m, v)) in [(-1.0, 4.0), (10.0, 0.25)].into_iter().enumerate() {
            let (gm, gv) = moments_of(&z, 0, k);
            assert!(
                (gm - m).abs() < 1e-5 && (gv - v).abs() < 1e-4,
                "{k}: {gm} {gv}"
            );
        }
        assert_eq!(z[6..], z0[6..]);
        // Half way: the mean moves half the distance, the spread half way in sd.
        let mut half = z0.clone();
        Calibration {
            strength: 0.5,
            ..full
        }
        .apply(&mut half)
        .unwrap();
        let (m, v) = moments_of(&half, 0, 0);
        assert!((m - 0.5).abs() < 1e-5, "{m}");
        assert!((v.sqrt() - 1.5).abs() < 1e-4, "{v}");
        // Strength 0 changes nothing; moments of another width are refused.
        let mut same = z0.clone();
        Calibration {
            strength: 0.0,
            ..full
        }
        .apply(&mut same)
        .unwrap();
        assert_eq!(same, z0);
        let wide = LatentMoments {
            dim: 3,
            classes: moments.classes.clone(),
        };
        let bad = Calibration {
            moments: &wide,
            labels: &labels,
            strength: 1.0,
            at: 1.0,
        };
        assert!(bad.apply(&mut z.clone()).is_err());
    }

    /// Two classes: bright left half vs bright right half, with noise.
    pub(crate) fn halves(n_per_class: usize, rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<u8>) {
        let (mut px, mut labels) = (Vec::new(), Vec::new());
        for c in 0..2u8 {
            for _ in 0..n_per_class {
                for _r in 0..28 {
                    for col in 0..28 {
                        let bright = (col < 14) == (c == 0);
                        let base: i32 = if bright { 200 } else { 30 };
                        px.push((base + rng.random_range(-25..25)).clamp(0, 255) as u8);
                    }
                }
                labels.push(c);
            }
        }
        (px, labels)
    }

    /// A small flow for the tests' two-class images.
    fn small_flow(latent_dim: usize) -> FlowConfig {
        FlowConfig {
            emb_dim: 2,
            hidden: 64,
            blocks: 1,
            latent_dim,
            batch: 32,
            lr: 3e-3,
            ..Default::default()
        }
    }

    fn left_minus_right(img: &[u8]) -> f32 {
        let (mut l, mut r) = (0f32, 0f32);
        for (i, &p) in img.iter().enumerate() {
            if i % 28 < 14 {
                l += p as f32;
            } else {
                r += p as f32;
            }
        }
        (l - r) / 392.0
    }

    #[test]
    fn flow_generator_learns_a_conditional_distribution() {
        for latent_dim in [0, 8] {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let (px, labels) = halves(32, &mut rng);
            let emb: Vec<f32> = labels
                .iter()
                .flat_map(|&c| if c == 0 { [1.0, 0.0] } else { [0.0, 1.0] })
                .collect();
            let cfg = small_flow(latent_dim);
            let mut g = FlowGenerator::new(cfg, 3).unwrap();
            g.fit_latent(&px).unwrap();
            let set = WeightedSet {
                images: px,
                emb,
                weights: vec![1.0; labels.len()],
            };
            let first = g.train(&set, 10, &mut rng).unwrap();
            g.train(&set, 250, &mut rng).unwrap();
            let last = g.train(&set, 10, &mut rng).unwrap();
            assert!(
                last < first * 0.85,
                "latent {latent_dim}: loss {first} -> {last}"
            );
            let cond: Vec<f32> = [[1.0, 0.0]; 10]
                .iter()
                .chain([[0.0, 1.0]; 10].iter())
                .flatten()
                .copied()
                .collect();
            let out = g.sample(&cond, 20, &mut rng).unwrap();
            let right = out
                .chunks_exact(784)
                .enumerate()
                .filter(|(i, img)| (left_minus_right(img) > 0.0) == (*i < 10))
                .count();
            assert!(
                right >= 18,
                "latent {latent_dim}: only {right}/20 samples match their condition"
            );
        }
    }

    #[test]
    fn classifier_guidance_steers_an_unconditional_flow() {
        use crate::classifier::{Arch, TaskModel};
        use crate::data::Dataset;
        use crate::train::{train_client, ClientTrainConfig};
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (px, labels) = halves(32, &mut rng);
        // The flow never sees the class: it learns the mixture of both halves.
        let cfg = small_flow(8);
        let mut g = FlowGenerator::new(cfg, 3).unwrap();
        g.fit_latent(&px).unwrap();
        let set = WeightedSet {
            images: px.clone(),
            emb: vec![0.0; 2 * labels.len()],
            weights: vec![1.0; labels.len()],
        };
        g.train(&set, 250, &mut rng).unwrap();
        let ds = Dataset {
            images: px,
            labels: labels.clone(),
            rows: 28,
            cols: 28,
            classes: vec!["l".into(), "r".into()],
        };
        let mut clf = TaskModel::new(Arch::Mlp, 28, 2, 1, 3e-3, 5).unwrap();
        let tc = ClientTrainConfig {
            epochs: 4,
            batch: 16,
            align_weight: 0.0,
            ..Default::default()
        };
        train_client(&mut clf, &ds, &vec![0.0; labels.len()], None, &tc, &mut rng).unwrap();
        let want: Vec<u8> = (0..40).map(|i| (i % 2) as u8).collect();
        let emb = vec![0f32; 80];
        let matches = |out: &[u8]| {
            out.chunks_exact(784)
                .zip(&want)
                .filter(|(img, &l)| (left_minus_right(img) > 0.0) == (l == 0))
                .count()
        };
        let plain = g
            .sample(&emb, 40, &mut ChaCha8Rng::seed_from_u64(8))
            .unwrap();
        let guide = Guidance {
            classifier: &clf,
            labels: &want,
            scale: 5.0,
            entropy: 0.0,
        };
        let steered = g
            .sample_guided(&emb, 40, Some(&guide), &mut ChaCha8Rng::seed_from_u64(8))
            .unwrap();
        let (p, s) = (matches(&plain), matches(&steered));
        assert!(s >= 36 && s > p + 8, "guided {s}/40 vs unguided {p}/40");
        // The entropy term: with a classifier that is not saturated (freshly initialised, so
        // its gradients do not vanish), plain guidance raises its belief in the prompted class
        // and the entropy term holds that belief back.
        let mut unsure = TaskModel::new(Arch::Mlp, 28, 2, 1, 1e-3, 9).unwrap();
        let brief = ClientTrainConfig { epochs: 1, ..tc };
        train_client(
            &mut unsure,
            &ds,
            &vec![0.0; labels.len()],
            None,
            &brief,
            &mut rng,
        )
        .unwrap();
        let belief = |out: &[u8]| {
            let p = unsure.predict_proba(out, 40).unwrap();
            p.chunks_exact(2)
                .zip(&want)
                .map(|(row, &l)| row[l as usize])
                .sum::<f32>()
                / 40.0
        };
        let sample = |entropy: f64| {
            let guide = Guidance {
                classifier: &unsure,
                labels: &want,
                scale: 5.0,
                entropy,
            };
            g.sample_guided(&emb, 40, Some(&guide), &mut ChaCha8Rng::seed_from_u64(8))
                .unwrap()
        };
        let (b_none, b_plain, b_soft) =
            (belief(&plain), belief(&sample(0.0)), belief(&sample(4.0)));
        let seen = format!("belief unguided {b_none:.3}, guided {b_plain:.3}, entropy {b_soft:.3}");
        assert!(b_plain > b_none + 0.3, "{seen}");
        assert!(
            b_soft > b_none + 0.3,
            "the entropy term undid the guidance: {seen}"
        );
        assert!(
            b_soft < b_plain - 0.03,
            "the entropy term changed nothing: {seen}"
        );
        let bad = Guidance {
            classifier: &clf,
            labels: &want[..3],
            scale: 1.0,
            entropy: 0.0,
        };
        assert!(g.sample_guided(&emb, 40, Some(&bad), &mut rng).is_err());
    }

    #[test]
    fn save_load_round_trip_and_seeded_init() {
        let cfg = FlowConfig {
            emb_dim: 2,
            hidden: 16,
            blocks: 1,
            latent_dim: 4,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (px, _) = halves(4, &mut rng);
        let mut a = FlowGenerator::new(cfg, 5).unwrap();
        a.fit_latent(&px).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        a.save(&path).unwrap();
        let mut b = FlowGenerator::new(cfg, 6).unwrap();
        assert!(
            b.sample(&[1.0, 0.0], 1, &mut rng).is_err(),
            "unfitted latent code must be refused"
        );
        b.load(&path).unwrap();
        let emb = vec![1.0, 0.0, 0.0, 1.0];
        let sa = a
            .sample(&emb, 2, &mut ChaCha8Rng::seed_from_u64(9))
            .unwrap();
        let sb = b
            .sample(&emb, 2, &mut ChaCha8Rng::seed_from_u64(9))
            .unwrap();
        assert_eq!(sa, sb);
        let mut c = FlowGenerator::new(cfg, 5).unwrap();
        let mut d = FlowGenerator::new(cfg, 5).unwrap();
        c.fit_latent(&px).unwrap();
        d.fit_latent(&px).unwrap();
        assert_eq!(
            c.sample(&emb, 2, &mut ChaCha8Rng::seed_from_u64(1))
                .unwrap(),
            d.sample(&emb, 2, &mut ChaCha8Rng::seed_from_u64(1))
                .unwrap()
        );
        assert!(a.sample(&emb[..3], 2, &mut rng).is_err());
    }
}
