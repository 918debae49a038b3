//! A client: learns from its private data and the host's last synthetic set (step 2), then
//! judges this round's synthetic set into one flat upload vector (step 3).

use std::sync::Arc;

use models::classifier::{Arch, OptimizerKind, TaskModel};
use models::data::captions::random_captions;
use models::data::Dataset;
use models::dp_sgd::{train_private, train_synthetic_only, DpSgdConfig};
use models::text::TextEncoder;
use models::train::{train_client, ClientTrainConfig, DistillSet, TrainStats};
use privacy::ledger::Ledger;
use protocol::session::training::{Permit, RecordPlan, RecordTrainer};
use protocol::{LatentCode, RoundStart, UploadLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};

models::knobs! {
    /// The client's knobs (the `[model]` section of the node's config.toml holds them).
    #[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    pub struct LearnerConfig {
        /// The local objective and its sizes.
        #[knob(table)]
        pub train: ClientTrainConfig,
        /// Learning rate of local training.
        pub lr: f64,
        /// Optimiser of local training: "adamw", or "sgd" (with `momentum`).
        pub optimizer: OptimizerKind,
        /// Momentum μ of the "sgd" optimiser, in [0, 1).
        pub momentum: f64,
        /// Rounds of kept synthetic samples (with their teachers) a client distils from: 1 is
        /// the last round's only.
        pub distill_rounds: usize,
        /// `distill_rounds` under record-level DP (its synthetic samples are free and
        /// stand in for the private signal the noise takes away).
        pub dp_distill_rounds: usize,
        /// Under record-level DP, also distil from the synthetic samples the host's filter
        /// dropped, against their prompted class: they are public, so free, and without them
        /// clients still at chance see no sample the filter keeps and never start learning.
        pub dp_distill_unkept: bool,
    }
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            train: ClientTrainConfig::default(),
            // Chosen with `fedmmkt simulate --validation` (seed 0, 20 rounds, FedMMKT's client
            // accuracy by its mean over rounds 10–20): AdamW 2e-3 74.9 %, 1e-3 74.4 %; SGD with
            // momentum 0.9 at 0.01 74.4 %, 0.02 73.3 %, 0.05 diverged (a client's upload went
            // NaN in round 3). Unlike FedAvg's, these models are never averaged, so their
            // AdamW moments stay their own.
            lr: 2e-3,
            optimizer: OptimizerKind::Adamw,
            momentum: 0.9,
            distill_rounds: 1,
            // 2 and 3 measured alike on the validation split (1 lost 4 points); 2 is cheaper.
            dp_distill_rounds: 2,
            dp_distill_unkept: true,
        }
    }
}

impl LearnerConfig {
    /// These knobs with the tiny preset's sizes (one local epoch per round); see
    /// [`crate::learn::SynthesizerConfig::tiny`].
    pub fn tiny(self) -> Self {
        Self {
            train: ClientTrainConfig {
                epochs: 1,
                ..self.train
            },
            ..self
        }
    }
}

/// Record-level DP of a learner: its plan and permits, the ledger that pays for each round's
/// private training, and the source of the DP-SGD noise.
pub struct RecordDp {
    /// The plan, the permits and the released class counts.
    pub trainer: RecordTrainer,
    /// The node's budget ledger.
    pub ledger: Arc<Ledger>,
    /// DP-SGD noise: seeded from the OS on a node; from the run's seed in simulations
    /// (reproducible, and so not private against anyone who knows the seed).
    pub noise: ChaCha20Rng,
}

/// What a node's learner needs for record-level DP.
pub struct RecordSettings {
    /// Budget ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Per-example clip C.
    pub clip: f64,
    /// Rounds the budget is spread over.
    pub planned_rounds: u32,
    /// Names the node's private records in its ledger entries.
    pub dataset_id: String,
    /// The node's ledger.
    pub ledger: Arc<Ledger>,
}

/// What a round's local training did with the private records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivateUse {
    /// Trained on them without record-level DP (none, or client-level on the upload).
    Plain,
    /// Trained on them by DP-SGD, paid for in the ledger first.
    DpSgd,
    /// Not trained on them: this round was already paid for and trained (a retry).
    AlreadyTrained,
    /// Not trained on them: the budget is spent; synthetic samples only.
    BudgetSpent,
}

/// One data owner with its private data and its own task model.
pub struct Learner {
    /// Index of this client in the federation.
    pub id: usize,
    model: TaskModel,
    data: Dataset,
    emb: Vec<f32>,
    cfg: LearnerConfig,
    previous: Option<RoundStart>,
    memory: std::collections::VecDeque<DistillSet>,
    rng: ChaCha8Rng,
    record: Option<RecordDp>,
    last_use: Option<PrivateUse>,
    latent_cache: Option<(LatentCode, Vec<f64>)>,
}

impl Learner {
    /// A client with private `data`, captioned with random templates, and a fresh `arch` model.
    pub fn new(
        id: usize,
        arch: Arch,
        data: Dataset,
        encoder: &Arc<dyn TextEncoder>,
        cfg: LearnerConfig,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let texts = random_captions(&data.classes, &data.labels, &mut rng);
        let emb = encoder.encode(&texts)?;
        let model = TaskModel::new(
            arch,
            data.rows,
            data.num_classes(),
            encoder.dim(),
            cfg.lr,
            rng.random(),
        )?
        .with_optimizer(cfg.optimizer, cfg.momentum)?;
        Ok(Self {
            id,
            model,
            data,
            emb,
            cfg,
            previous: None,
            memory: std::collections::VecDeque::new(),
            rng,
            record: None,
            last_use: None,
            latent_cache: None,
        })
    }

    /// This learner with record-level DP: every round's private training goes through
    /// DP-SGD, paid for in `dp.ledger` before it starts.
    pub fn with_record_dp(mut self, dp: RecordDp) -> Self {
        self.record = Some(dp);
        self
    }

    /// This learner with record-level DP as `s` describes: its plan calibrated to its own
    /// data, its records named `s.dataset_id` in `s.ledger`, DP-SGD noise from `noise`.
    pub fn with_record_level(self, s: RecordSettings, noise: ChaCha20Rng) -> anyhow::Result<Self> {
        let plan = self.record_plan(s.epsilon, s.delta, s.clip, s.planned_rounds)?;
        let trainer = RecordTrainer::new(plan, s.dataset_id)?;
        Ok(self.with_record_dp(RecordDp {
            trainer,
            ledger: s.ledger,
            noise,
        }))
    }

    /// Its record-level DP, if on.
    pub fn record_dp(&self) -> Option<&RecordDp> {
        self.record.as_ref()
    }

    /// How the last round's training used the private records (`None` before the first).
    pub fn last_use(&self) -> Option<PrivateUse> {
        self.last_use
    }

    /// The task model (for evaluation and FedAvg).
    pub fn model(&self) -> &TaskModel {
        &self.model
    }

    /// Forgets the task model's optimiser state (FedAvg's fresh optimiser each round).
    pub fn reset_optimizer(&mut self) -> anyhow::Result<()> {
        Ok(self.model.reset_optimizer()?)
    }

    /// Its knobs.
    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    /// Its record-level plan at (ε, δ) with per-example clip `clip` over `rounds` rounds:
    /// `dp_epochs` passes of Poisson batches of `dp_batch` expected examples each round.
    pub fn record_plan(
        &self,
        epsilon: f64,
        delta: f64,
        clip: f64,
        rounds: u32,
    ) -> anyhow::Result<RecordPlan> {
        let t = &self.cfg.train;
        let records = self.data.len();
        anyhow::ensure!(
            records > 0 && t.dp_batch > 0 && t.dp_epochs.is_finite() && t.dp_epochs > 0.0,
            "record-level DP needs private data, dp_batch ≥ 1 and dp_epochs > 0"
        );
        let batch = t.dp_batch.min(records);
        Ok(RecordPlan {
            epsilon,
            delta,
            clip,
            expected_batch: batch as f64,
            steps_per_round: ((t.dp_epochs * records as f64 / batch as f64).ceil() as u64).max(1),
            planned_rounds: rounds,
            records: records as u64,
            classes: self.data.num_classes(),
        })
    }

    /// Its private data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Images per class in its private data.
    pub fn class_counts(&self) -> Vec<usize> {
        self.data.class_counts()
    }

    /// Round `round`'s local training on private data plus `distill` (or none); under
    /// record-level DP, by DP-SGD once the ledger has recorded the round, else on `distill`
    /// alone.
    pub fn train(
        &mut self,
        round: u64,
        distill: Option<&DistillSet>,
    ) -> anyhow::Result<TrainStats> {
        let Some(rec) = self.record.as_mut() else {
            self.last_use = Some(PrivateUse::Plain);
            return Ok(train_client(
                &mut self.model,
                &self.data,
                &self.emb,
                distill,
                &self.cfg.train,
                &mut self.rng,
            )?);
        };
        let (used, stats) = match rec.trainer.permit(&rec.ledger, round)? {
            Permit::Train(cost) => {
                let dp = DpSgdConfig {
                    clip: cost.clip,
                    noise_multiplier: cost.noise_multiplier,
                    sample_rate: cost.sample_rate,
                    steps: usize::try_from(cost.steps)?,
                };
                let stats = train_private(
                    &mut self.model,
                    &self.data,
                    &self.emb,
                    distill,
                    &self.cfg.train,
                    &dp,
                    &mut self.rng,
                    &mut rec.noise,
                )?;
                (PrivateUse::DpSgd, stats)
            }
            permit => {
                let used = if permit == Permit::AlreadyTrained {
                    PrivateUse::AlreadyTrained
                } else {
                    PrivateUse::BudgetSpent
                };
                let stats = match distill {
                    Some(d) if used == PrivateUse::BudgetSpent => train_synthetic_only(
                        &mut self.model,
                        d,
                        self.emb.len() / self.data.len().max(1),
                        &self.cfg.train,
                        &mut self.rng,
                    )?,
                    _ => TrainStats::default(),
                };
                (used, stats)
            }
        };
        if used == PrivateUse::BudgetSpent {
            tracing::info!(
                client = self.id,
                round,
                "privacy budget spent: synthetic samples only"
            );
        }
        self.last_use = Some(used);
        Ok(stats)
    }

    /// Step 2: the kept samples of the previous round with their teacher targets, if this
    /// client saw that round and the host sent its teacher; under record-level DP (with
    /// `dp_distill_unkept`) followed by the dropped samples, each against its prompted class.
    pub fn distill_set(&self, start: &RoundStart) -> Option<DistillSet> {
        let teacher = start.teacher.as_ref()?;
        let prev = self
            .previous
            .as_ref()
            .filter(|p| p.round == teacher.round)?;
        let p = prev.side as usize * prev.side as usize;
        let e = prev.emb_dim as usize;
        let mut set = DistillSet {
            teacher: teacher.probs.clone(),
            labels: Some(Vec::with_capacity(teacher.kept.len())),
            emb: Some(Vec::with_capacity(teacher.kept.len() * e)),
            ..Default::default()
        };
        // Appends sample `j` (image, prompted class, caption) and returns its prompted class.
        let push = |set: &mut DistillSet, j: usize| -> Option<usize> {
            let y = *prev.prompt_class.get(j)?;
            set.images
                .extend_from_slice(prev.images.get(j * p..(j + 1) * p)?);
            set.labels.as_mut()?.push(y as u8);
            set.emb
                .as_mut()?
                .extend_from_slice(prev.text_emb.get(j * e..(j + 1) * e)?);
            Some(usize::from(y))
        };
        for &j in &teacher.kept {
            push(&mut set, j as usize)?;
        }
        if self.record.is_some() && self.cfg.dp_distill_unkept {
            let c = prev.classes as usize;
            let kept: std::collections::HashSet<u32> = teacher.kept.iter().copied().collect();
            for j in 0..prev.samples() {
                if kept.contains(&(j as u32)) {
                    continue;
                }
                let y = push(&mut set, j)?;
                set.teacher
                    .extend((0..c).map(|k| if k == y { 1.0 } else { 0.0 }));
            }
        }
        Some(set)
    }

    /// Step 2 (learn): local training with distillation from the previous round's kept samples.
    pub fn learn(&mut self, start: &RoundStart, distill: bool) -> anyhow::Result<TrainStats> {
        if !distill {
            return self.train(start.round, None);
        }
        if let Some(new) = self.distill_set(start) {
            self.memory.push_back(new);
        }
        let keep = if self.record.is_some() {
            self.cfg.dp_distill_rounds
        } else {
            self.cfg.distill_rounds
        };
        while self.memory.len() > keep.max(1) {
            self.memory.pop_front();
        }
        let set = DistillSet::concat(self.memory.make_contiguous());
        self.train(start.round, Some(&set).filter(|s| !s.is_empty()))
    }

    /// Step 3 (judge): predictions on this round's synthetic set as one flat upload vector.
    pub fn judge(&mut self, start: &RoundStart) -> anyhow::Result<Vec<f32>> {
        start.validate()?;
        let n = start.samples();
        let preds = self.model.predict_proba(&start.images, n)?;
        let layout = UploadLayout::of(start);
        let exact = self.class_counts();
        let counts = match self.record.as_mut() {
            Some(rec) => rec
                .trainer
                .released_counts(&rec.ledger, start.round, &exact)?
                .unwrap_or_else(|| vec![0.0; exact.len()]),
            None => exact.iter().map(|&c| c as f64).collect(),
        };
        let moments = self.latent_sums(start)?;
        let upload = layout.build(&preds, &start.prompt_class, &counts, moments.as_deref())?;
        self.previous = Some(start.clone());
        Ok(upload)
    }

    /// Its per-class sums in the round's latent code, when the round asks for them and this
    /// learner may share them: not under record-level DP, where they would be a release of
    /// the private records that nothing pays for (the host then gets zero weight from it).
    fn latent_sums(&mut self, start: &RoundStart) -> anyhow::Result<Option<Vec<f64>>> {
        let Some(code) = start.latent.as_ref().filter(|_| self.record.is_none()) else {
            return Ok(None);
        };
        anyhow::ensure!(
            code.mean.len() == self.data.pixels()
                && start.classes as usize == self.data.num_classes(),
            "the round's latent code does not fit this node's {}-pixel images of {} classes",
            self.data.pixels(),
            self.data.num_classes()
        );
        if let Some((cached, sums)) = &self.latent_cache {
            if cached == code {
                return Ok(Some(sums.clone()));
            }
        }
        let sums = code.class_sums(
            &self.data.images,
            &self.data.labels,
            self.data.num_classes(),
        );
        self.latent_cache = Some((code.clone(), sums.clone()));
        Ok(Some(sums))
    }
}
