//! Client task models of different shapes: a feature extractor, a classifier head and a
//! projection of the features into the text-embedding space.

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{
    conv2d_no_bias, linear, AdamW, Conv2d, Conv2dConfig, Linear, Module, Optimizer as _,
    ParamsAdamW, VarBuilder, VarMap,
};

use crate::error::{ModelError, Result};
use crate::init::{pixels_to_tensor, reinit};

/// `Display` and `FromStr` for an enum with `ALL` and `name()`: the name on the command line,
/// in config files and in reports; an unknown name is a [`ModelError::Config`] listing them.
macro_rules! named_enum_text {
    ($t:ty, $what:literal) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $t {
            type Err = ModelError;

            fn from_str(s: &str) -> Result<Self> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = <$t>::ALL.iter().map(|v| v.name()).collect();
                        ModelError::Config(format!(
                            concat!("unknown ", $what, " {:?} (one of {})"),
                            s,
                            names.join(", ")
                        ))
                    })
            }
        }
    };
}

/// The architectures clients can run; heterogeneous on purpose, so no two can average weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 784-256-128 multilayer perceptron.
    Mlp,
    /// Two strided convolutions (8 and 16 channels) and a 128-unit layer.
    SmallCnn,
    /// Two strided convolutions (16 and 32 channels) and a 192-unit layer.
    WideCnn,
    /// Two unstrided convolutions (16 and 32 channels), each followed by 2×2 max pooling, and a
    /// 128-unit layer: the usual FedAvg reference CNN for 28×28 images (about 106 k weights).
    PooledCnn,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 4] = [Arch::Mlp, Arch::SmallCnn, Arch::WideCnn, Arch::PooledCnn];

    /// The heterogeneous federation's architectures, assigned to clients round-robin.
    pub const MIXED: [Arch; 3] = [Arch::Mlp, Arch::SmallCnn, Arch::WideCnn];

    /// Width of the feature vector.
    pub fn feature_dim(self) -> usize {
        match self {
            Arch::Mlp | Arch::SmallCnn | Arch::PooledCnn => 128,
            Arch::WideCnn => 192,
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mlp => "mlp",
            Arch::SmallCnn => "small-cnn",
            Arch::WideCnn => "wide-cnn",
            Arch::PooledCnn => "pooled-cnn",
        }
    }
}

named_enum_text!(Arch, "architecture");

/// The optimiser of local training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// AdamW with weight decay 1e-4.
    #[default]
    Adamw,
    /// SGD with heavy-ball momentum (PyTorch's: `v ← μ·v + g`, `w ← w − lr·v`), no weight
    /// decay: the usual optimiser of FedAvg's clients.
    Sgd,
}

impl OptimizerKind {
    /// Every optimiser.
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Adamw, OptimizerKind::Sgd];

    /// The name used on the command line, in config files and in reports.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

named_enum_text!(OptimizerKind, "optimiser");

/// SGD with momentum over a fixed set of variables; velocities start at zero, so the first
/// step is plain SGD.
struct MomentumSgd {
    vars: Vec<Var>,
    velocity: Vec<Option<Tensor>>,
    lr: f64,
    momentum: f64,
}

impl MomentumSgd {
    fn new(vars: Vec<Var>, lr: f64, momentum: f64) -> Self {
        let velocity = vec![None; vars.len()];
        Self {
            vars,
            velocity,
            lr,
            momentum,
        }
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, v) in self.vars.iter().zip(&mut self.velocity) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let next = match v.take() {
                Some(old) => ((old * self.momentum)? + g)?,
                None => g.clone(),
            };
            var.set(&(var.as_tensor() - (&next * self.lr)?)?)?;
            *v = Some(next);
        }
        Ok(())
    }
}

/// A task model's optimiser and its state.
enum Opt {
    Adamw(AdamW),
    Sgd(MomentumSgd),
}

enum Features {
    Mlp(Linear, Linear),
    Cnn(Conv2d, Conv2d, Linear),
    Pooled(Conv2d, Conv2d, Linear),
}

impl Features {
    fn new(arch: Arch, vb: VarBuilder, side: usize) -> Result<Self> {
        let conv_stride = |i, o, k, stride, vb| {
            conv2d_no_bias(
                i,
                o,
                k,
                Conv2dConfig {
                    stride,
                    ..Default::default()
                },
                vb,
            )
        };
        let conv = |i, o, k, vb| conv_stride(i, o, k, 2, vb);
        let out_side = |s: usize, k: usize| (s - k) / 2 + 1;
        Ok(match arch {
            Arch::Mlp => Features::Mlp(
                linear(side * side, 256, vb.pp("fc1"))?,
                linear(256, arch.feature_dim(), vb.pp("fc2"))?,
            ),
            Arch::SmallCnn | Arch::WideCnn => {
                let (c1, c2) = if arch == Arch::SmallCnn {
                    (8, 16)
                } else {
                    (16, 32)
                };
                let s = out_side(out_side(side, 5), 3);
                Features::Cnn(
                    conv(1, c1, 5, vb.pp("conv1"))?,
                    conv(c1, c2, 3, vb.pp("conv2"))?,
                    linear(c2 * s * s, arch.feature_dim(), vb.pp("fc"))?,
                )
            }
            Arch::PooledCnn => {
                // 28 → conv5 24 → pool 12 → conv3 10 → pool 5.
                let s = ((side - 4) / 2 - 2) / 2;
                Features::Pooled(
                    conv_stride(1, 16, 5, 1, vb.pp("conv1"))?,
                    conv_stride(16, 32, 3, 1, vb.pp("conv2"))?,
                    linear(32 * s * s, arch.feature_dim(), vb.pp("fc"))?,
                )
            }
        })
    }

    /// Features of `x`; with `taps`, every layer's input and output probe is recorded.
    fn forward(&self, x: &Tensor, side: usize, taps: &mut Option<&mut Vec<Tap>>) -> Result<Tensor> {
        Ok(match self {
            Features::Mlp(a, b) => {
                let h = tap_linear(a, x, taps)?.relu()?;
                tap_linear(b, &h, taps)?.relu()?
            }
            Features::Cnn(c1, c2, fc) => {
                let n = x.dim(0)?;
                let h = x.reshape((n, 1, side, side))?;
                let h = tap_conv(c1, &h, taps)?.relu()?;
                let h = tap_conv(c2, &h, taps)?.relu()?;
                tap_linear(fc, &h.flatten_from(1)?, taps)?.relu()?
            }
            Features::Pooled(c1, c2, fc) => {
                let n = x.dim(0)?;
                let h = x.reshape((n, 1, side, side))?;
                let h = tap_conv(c1, &h, taps)?.relu()?.max_pool2d(2)?;
                let h = tap_conv(c2, &h, taps)?.relu()?.max_pool2d(2)?;
                tap_linear(fc, &h.flatten_from(1)?, taps)?.relu()?
            }
        })
    }
}

/// A parameterised layer seen by DP-SGD: its input, and a zero variable added to its output
/// whose gradient is the gradient with respect to that output (candle keeps gradients only
/// for variables).
pub(crate) struct Tap {
    /// The layer's input `[B, in]` or `[B, C, H, W]`, detached.
    pub input: Tensor,
    /// Zeros shaped like the layer's output.
    pub probe: Var,
    /// Which kind of layer.
    pub layer: TapLayer,
}

/// The layer kinds whose per-example gradient norms DP-SGD computes.
pub(crate) enum TapLayer {
    /// `y = x Wᵀ (+ b)`.
    Linear {
        /// Whether it has a bias.
        bias: bool,
    },
    /// A bias-free 2-D convolution with a square kernel.
    Conv {
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
}

fn probe(
    out: Tensor,
    input: &Tensor,
    layer: TapLayer,
    taps: &mut Option<&mut Vec<Tap>>,
) -> Result<Tensor> {
    let Some(taps) = taps else {
        return Ok(out);
    };
    let probe = Var::zeros(out.shape(), out.dtype(), out.device())?;
    let out = (out + probe.as_tensor())?;
    taps.push(Tap {
        input: input.detach(),
        probe,
        layer,
    });
    Ok(out)
}

fn tap_linear(l: &Linear, x: &Tensor, taps: &mut Option<&mut Vec<Tap>>) -> Result<Tensor> {
    let bias = l.bias().is_some();
    probe(l.forward(x)?, x, TapLayer::Linear { bias }, taps)
}

fn tap_conv(c: &Conv2d, x: &Tensor, taps: &mut Option<&mut Vec<Tap>>) -> Result<Tensor> {
    let (kernel, stride) = (c.weight().dim(3)?, c.config().stride);
    probe(c.forward(x)?, x, TapLayer::Conv { kernel, stride }, taps)
}

/// A client's task model: `head ∘ features` classifies, `projection ∘ features` embeds.
pub struct TaskModel {
    arch: Arch,
    side: usize,
    varmap: VarMap,
    features: Features,
    head: Linear,
    projection: Linear,
    opt: Opt,
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    device: Device,
}

/// Everything a forward pass produces that the losses need.
pub struct Forward {
    /// Class scores `[B, C]`.
    pub logits: Tensor,
    /// Projection into the text-embedding space `[B, E]`.
    pub embedding: Tensor,
}

impl TaskModel {
    /// A new model for `side`×`side` images, `classes` classes and `emb_dim`-wide captions.
    pub fn new(
        arch: Arch,
        side: usize,
        classes: usize,
        emb_dim: usize,
        lr: f64,
        seed: u64,
    ) -> Result<Self> {
        if side < 12 || classes < 2 || emb_dim == 0 {
            return Err(ModelError::Config(format!(
                "task model needs side >= 12, >= 2 classes, emb_dim > 0 (got {side}, {classes}, {emb_dim})"
            )));
        }
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let features = Features::new(arch, vb.pp("features"), side)?;
        let head = linear(arch.feature_dim(), classes, vb.pp("head"))?;
        let projection = linear(arch.feature_dim(), emb_dim, vb.pp("projection"))?;
        reinit(&varmap, seed)?;
        let (kind, momentum) = (OptimizerKind::Adamw, 0.0);
        let opt = Self::optimizer(&varmap, kind, lr, momentum)?;
        Ok(Self {
            arch,
            side,
            varmap,
            features,
            head,
            projection,
            opt,
            kind,
            lr,
            momentum,
            device,
        })
    }

    /// This model stepping with a fresh `kind` optimiser (`momentum` is SGD's μ in [0, 1)).
    pub fn with_optimizer(mut self, kind: OptimizerKind, momentum: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(ModelError::Config(format!(
                "momentum must be in [0, 1) (got {momentum})"
            )));
        }
        self.kind = kind;
        self.momentum = momentum;
        self.reset_optimizer()?;
        Ok(self)
    }

    /// A fresh optimiser over every variable of `varmap` (no moments, step count zero).
    fn optimizer(varmap: &VarMap, kind: OptimizerKind, lr: f64, momentum: f64) -> Result<Opt> {
        Ok(match kind {
            OptimizerKind::Adamw => Opt::Adamw(AdamW::new(
                varmap.all_vars(),
                ParamsAdamW {
                    lr,
                    weight_decay: 1e-4,
                    ..Default::default()
                },
            )?),
            OptimizerKind::Sgd => Opt::Sgd(MomentumSgd::new(varmap.all_vars(), lr, momentum)),
        })
    }

    /// Forgets the optimiser's state (AdamW's moments and step count, SGD's velocity), keeping
    /// the parameters: FedAvg starts each round's local training from the new global model
    /// with a fresh optimiser, so state from the client's own (skewed) optimum does not carry
    /// into the round.
    pub fn reset_optimizer(&mut self) -> Result<()> {
        self.opt = Self::optimizer(&self.varmap, self.kind, self.lr, self.momentum)?;
        Ok(())
    }

    /// Its architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Pixels per image (side²).
    pub fn pixels(&self) -> usize {
        self.side * self.side
    }

    /// The device its tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Feature vectors `[B, F]` of images `[B, pixels]` in [-1, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.features.forward(x, self.side, &mut None)
    }

    /// [`Self::forward`] with every parameterised layer tapped (input and output probe), in
    /// forward order, for per-example gradient norms.
    pub(crate) fn forward_tapped(&self, x: &Tensor) -> Result<(Forward, Vec<Tap>)> {
        let mut taps = Vec::new();
        let f = self.features.forward(x, self.side, &mut Some(&mut taps))?;
        let logits = tap_linear(&self.head, &f, &mut Some(&mut taps))?;
        let embedding = tap_linear(&self.projection, &f, &mut Some(&mut taps))?;
        Ok((Forward { logits, embedding }, taps))
    }

    /// The trainable variables sorted by name (a fixed order, unlike the map's).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut vars: Vec<(String, Var)> = self
            .varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Every parameter, flattened in name order (to compare models and updates).
    pub fn flat_params(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (_, v) in self.named_vars() {
            out.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// One plain SGD step `w ← w − lr·g` (DP-SGD's noised private steps), leaving the
    /// optimiser's state alone.
    pub fn sgd_step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (_, var) in self.named_vars() {
            if let Some(g) = grads.get(var.as_tensor()) {
                var.set(&(var.as_tensor() - (g * lr)?)?)?;
            }
        }
        Ok(())
    }

    /// One optimiser step from gradients computed elsewhere (DP-SGD's noised ones).
    pub fn step_with(&mut self, grads: &GradStore) -> Result<()> {
        match &mut self.opt {
            Opt::Adamw(o) => o.step(grads)?,
            Opt::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }

    /// Logits and embeddings of images `[B, pixels]` in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Forward> {
        let f = self.features(x)?;
        Ok(Forward {
            logits: self.head.forward(&f)?,
            embedding: self.projection.forward(&f)?,
        })
    }

    /// Logits only (skips the projection).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.features(x)?)?)
    }

    /// One optimiser step on `loss`.
    pub fn step(&mut self, loss: &Tensor) -> Result<()> {
        self.step_with(&loss.backward()?)
    }

    /// Softmax predictions for u8 images (`n * pixels` bytes), `n * classes` values.
    pub fn predict_proba(&self, pixels: &[u8], n: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        let p = self.side * self.side;
        for start in (0..n).step_by(512) {
            let b = (n - start).min(512);
            let x = pixels_to_tensor(&pixels[start * p..(start + b) * p], b, &self.device)?;
            let probs = candle_nn::ops::softmax_last_dim(&self.logits(&x)?)?;
            out.extend(probs.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Feature vectors for u8 images, `n * feature_dim` values.
    pub fn embed_features(&self, pixels: &[u8], n: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        let p = self.side * self.side;
        for start in (0..n).step_by(512) {
            let b = (n - start).min(512);
            let x = pixels_to_tensor(&pixels[start * p..(start + b) * p], b, &self.device)?;
            out.extend(self.features(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The parameters, for averaging (FedAvg) and checkpoints.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Saves the parameters as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.varmap.save(path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::train::{accuracy, train_client, ClientTrainConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn stripes(n: usize, rng: &mut ChaCha8Rng) -> Dataset {
        // Class c: a bright horizontal band at rows 7c..7c+7 (4 classes), plus noise.
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 4;
            for r in 0..28 {
                for _ in 0..28 {
                    let base: i32 = if r / 7 == c { 180 } else { 40 };
                    images.push((base + rng.random_range(-30..30)).clamp(0, 255) as u8);
                }
            }
            labels.push(c as u8);
        }
        Dataset {
            images,
            labels,
            rows: 28,
            cols: 28,
            classes: (0..4).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn every_architecture_learns_a_tiny_task() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let train = stripes(64, &mut rng);
        let test = stripes(40, &mut rng);
        for arch in Arch::ALL {
            let mut m = TaskModel::new(arch, 28, 4, 3, 3e-3, 1).unwrap();
            let before = accuracy(&m, &test).unwrap();
            let emb: Vec<f32> = train
                .labels
                .iter()
                .flat_map(|&l| [l as f32, 1.0, 0.0])
                .collect();
            let cfg = ClientTrainConfig {
                epochs: 6,
                batch: 16,
                ..Default::default()
            };
            let stats = train_client(&mut m, &train, &emb, None, &cfg, &mut rng).unwrap();
            let after = accuracy(&m, &test).unwrap();
            assert_eq!(stats.steps, 6 * 4);
            assert!(after >= 0.9, "{arch:?}: accuracy {before} -> {after}");
        }
    }

    #[test]
    fn distillation_teaches_classes_absent_from_private_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let all = stripes(96, &mut rng);
        let private_idx: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] < 2).collect();
        let other_idx: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] >= 2).collect();
        let private = all.subset(&private_idx);
        let other = all.subset(&other_idx);
        let emb: Vec<f32> = private
            .labels
            .iter()
            .flat_map(|&l| [l as f32, 1.0])
            .collect();
        let test = stripes(40, &mut rng);
        let unseen: Vec<usize> = (0..test.len()).filter(|&i| test.labels[i] >= 2).collect();
        let unseen = test.subset(&unseen);
        let cfg = ClientTrainConfig {
            epochs: 5,
            batch: 16,
            distill_batch: 16,
            align_weight: 0.0,
            ..Default::default()
        };
        let teacher: Vec<f32> = other
            .labels
            .iter()
            .flat_map(|&l| (0..4).map(move |c| if c == l { 0.97 } else { 0.01 }))
            .collect();
        let set = crate::train::DistillSet {
            images: other.images.clone(),
            teacher,
            labels: None,
            emb: None,
        };
        let mut with = TaskModel::new(Arch::Mlp, 28, 4, 2, 3e-3, 1).unwrap();
        train_client(&mut with, &private, &emb, Some(&set), &cfg, &mut rng).unwrap();
        let mut without = TaskModel::new(Arch::Mlp, 28, 4, 2, 3e-3, 1).unwrap();
        train_client(&mut without, &private, &emb, None, &cfg, &mut rng).unwrap();
        let (a, b) = (
            accuracy(&with, &unseen).unwrap(),
            accuracy(&without, &unseen).unwrap(),
        );
        assert!(
            a >= 0.9 && b <= 0.1,
            "unseen classes: with distillation {a}, without {b}"
        );
    }

    fn params(m: &TaskModel) -> Vec<f32> {
        m.flat_params().unwrap()
    }

    /// Largest element-wise difference of two parameter vectors.
    fn max_diff(x: &[f32], y: &[f32]) -> f32 {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    }

    /// One optimiser step of `m` on a fixed batch of `data`.
    fn one_step(m: &mut TaskModel, data: &Dataset) {
        let x = pixels_to_tensor(&data.images, data.len(), m.device()).unwrap();
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let y = Tensor::from_vec(labels, data.len(), m.device()).unwrap();
        let loss = crate::losses::cross_entropy(&m.logits(&x).unwrap(), &y).unwrap();
        m.step(&loss).unwrap();
    }

    #[test]
    fn after_an_optimizer_reset_the_next_update_ignores_earlier_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (old, batch) = (stripes(32, &mut rng), stripes(16, &mut rng));
        // A model with moments from ten steps on other data, then given new parameters (as
        // FedAvg's average overwrites them).
        let mut trained = TaskModel::new(Arch::SmallCnn, 28, 4, 2, 3e-3, 1).unwrap();
        for _ in 0..10 {
            one_step(&mut trained, &old);
        }
        let fresh = TaskModel::new(Arch::SmallCnn, 28, 4, 2, 3e-3, 9).unwrap();
        let set_from = |m: &TaskModel| {
            for ((_, dst), (_, src)) in m.named_vars().iter().zip(fresh.named_vars()) {
                dst.set(src.as_tensor()).unwrap();
            }
        };
        set_from(&trained);
        let mut kept = TaskModel::new(Arch::SmallCnn, 28, 4, 2, 3e-3, 1).unwrap();
        for _ in 0..10 {
            one_step(&mut kept, &old);
        }
        set_from(&kept);
        trained.reset_optimizer().unwrap();
        // The reference: the same parameters under an optimiser that never stepped.
        let mut reference = TaskModel::new(Arch::SmallCnn, 28, 4, 2, 3e-3, 9).unwrap();
        assert_eq!(params(&trained), params(&reference));
        one_step(&mut trained, &batch);
        one_step(&mut reference, &batch);
        one_step(&mut kept, &batch);
        let (a, b, c) = (params(&trained), params(&reference), params(&kept));
        assert!(
            max_diff(&a, &b) < 1e-6,
            "reset update differs from a fresh one"
        );
        assert!(
            max_diff(&c, &b) > 1e-4,
            "without the reset the kept moments must change the update"
        );
    }

    /// Gradients of the cross-entropy on `data` at `m`'s parameters, in name order (zero for
    /// the projection, which the logits do not use).
    fn grads(m: &TaskModel, data: &Dataset) -> Vec<Tensor> {
        let x = pixels_to_tensor(&data.images, data.len(), m.device()).unwrap();
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let y = Tensor::from_vec(labels, data.len(), m.device()).unwrap();
        let loss = crate::losses::cross_entropy(&m.logits(&x).unwrap(), &y).unwrap();
        let store = loss.backward().unwrap();
        m.named_vars()
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like().unwrap(),
            })
            .collect()
    }

    #[test]
    fn sgd_with_momentum_matches_the_heavy_ball_update_by_hand() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (a, b) = (stripes(16, &mut rng), stripes(16, &mut rng));
        let (lr, mu) = (0.05, 0.9);
        let new = || {
            TaskModel::new(Arch::SmallCnn, 28, 4, 2, lr, 3)
                .unwrap()
                .with_optimizer(OptimizerKind::Sgd, mu)
                .unwrap()
        };
        let mut sgd = new();
        one_step(&mut sgd, &a);
        one_step(&mut sgd, &b);
        // By hand on a twin: w1 = w0 − lr·g1, then w2 = w1 − lr·(μ·g1 + g2).
        let twin = new();
        let g1 = grads(&twin, &a);
        for ((_, v), g) in twin.named_vars().iter().zip(&g1) {
            v.set(&(v.as_tensor() - (g * lr).unwrap()).unwrap())
                .unwrap();
        }
        let g2 = grads(&twin, &b);
        for (((_, v), g1), g2) in twin.named_vars().iter().zip(&g1).zip(&g2) {
            let vel = ((g1 * mu).unwrap() + g2).unwrap();
            v.set(&(v.as_tensor() - (vel * lr).unwrap()).unwrap())
                .unwrap();
        }
        let got = params(&sgd);
        let off = max_diff(&got, &params(&twin));
        assert!(off < 1e-6, "momentum SGD off by {off}");
        // Momentum matters: plain SGD (μ = 0) lands elsewhere.
        let mut plain = TaskModel::new(Arch::SmallCnn, 28, 4, 2, lr, 3)
            .unwrap()
            .with_optimizer(OptimizerKind::Sgd, 0.0)
            .unwrap();
        one_step(&mut plain, &a);
        one_step(&mut plain, &b);
        assert_ne!(params(&plain), got);
        // A reset forgets the velocity: the next step is plain SGD from where it stands.
        sgd.reset_optimizer().unwrap();
        let before = params(&sgd);
        let g = grads(&sgd, &a);
        one_step(&mut sgd, &a);
        let flat: Vec<f32> = g
            .iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect();
        for ((after, w), g) in params(&sgd).iter().zip(&before).zip(&flat) {
            assert!((after - (w - lr as f32 * g)).abs() < 1e-6);
        }
    }

    #[test]
    fn optimizers_parse_and_momentum_is_checked() {
        for o in OptimizerKind::ALL {
            assert_eq!(o.name().parse::<OptimizerKind>().unwrap(), o);
        }
        assert!("adam".parse::<OptimizerKind>().is_err());
        let m = || TaskModel::new(Arch::Mlp, 28, 4, 2, 1e-2, 0).unwrap();
        assert!(m().with_optimizer(OptimizerKind::Sgd, 1.0).is_err());
        assert!(m().with_optimizer(OptimizerKind::Sgd, -0.1).is_err());
        assert!(m().with_optimizer(OptimizerKind::Sgd, f64::NAN).is_err());
    }

    #[test]
    fn architectures_parse_from_their_names() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
        }
        assert!("resnet".parse::<Arch>().is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(TaskModel::new(Arch::Mlp, 4, 10, 8, 1e-3, 0).is_err());
        assert!(TaskModel::new(Arch::Mlp, 28, 1, 8, 1e-3, 0).is_err());
    }
}
