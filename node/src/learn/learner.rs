//! A client: learns from its private data and the host's last synthetic set (step 2), then
//! judges this round's synthetic set into one flat upload vector (step 3).

use std::sync::Arc;

use models::classifier::{Arch, TaskModel};
use models::data::captions::random_captions;
use models::data::Dataset;
use models::text::TextEncoder;
use models::train::{train_client, ClientTrainConfig, DistillSet, TrainStats};
use protocol::{RoundStart, UploadLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
        /// Rounds of kept synthetic samples (with their teachers) a client distils from: 1 is
        /// the last round's only.
        pub distill_rounds: usize,
    }
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            train: ClientTrainConfig::default(),
            lr: 2e-3,
            distill_rounds: 1,
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
        )?;
        Ok(Self {
            id,
            model,
            data,
            emb,
            cfg,
            previous: None,
            memory: std::collections::VecDeque::new(),
            rng,
        })
    }

    /// The task model (for evaluation and FedAvg).
    pub fn model(&self) -> &TaskModel {
        &self.model
    }

    /// Its private data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Images per class in its private data.
    pub fn class_counts(&self) -> Vec<usize> {
        self.data.class_counts()
    }

    /// Local training on private data plus `distill` (or none).
    pub fn train(&mut self, distill: Option<&DistillSet>) -> anyhow::Result<TrainStats> {
        Ok(train_client(
            &mut self.model,
            &self.data,
            &self.emb,
            distill,
            &self.cfg.train,
            &mut self.rng,
        )?)
    }

    /// Step 2: the kept samples of the previous round with their teacher targets, if this
    /// client saw that round and the host sent its teacher.
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
        for &j in &teacher.kept {
            let j = j as usize;
            if j >= prev.samples() {
                return None;
            }
            set.images
                .extend_from_slice(&prev.images[j * p..(j + 1) * p]);
            set.labels.as_mut()?.push(prev.prompt_class[j] as u8);
            set.emb
                .as_mut()?
                .extend_from_slice(&prev.text_emb[j * e..(j + 1) * e]);
        }
        Some(set)
    }

    /// Step 2 (learn): local training with distillation from the previous round's kept samples.
    pub fn learn(&mut self, start: &RoundStart, distill: bool) -> anyhow::Result<TrainStats> {
        if !distill {
            return self.train(None);
        }
        if let Some(new) = self.distill_set(start) {
            self.memory.push_back(new);
        }
        while self.memory.len() > self.cfg.distill_rounds.max(1) {
            self.memory.pop_front();
        }
        let set = DistillSet::concat(self.memory.make_contiguous());
        self.train(Some(&set).filter(|s| !s.is_empty()))
    }

    /// Step 3 (judge): predictions on this round's synthetic set as one flat upload vector.
    pub fn judge(&mut self, start: &RoundStart) -> anyhow::Result<Vec<f32>> {
        start.validate()?;
        let n = start.samples();
        let preds = self.model.predict_proba(&start.images, n)?;
        let layout = UploadLayout {
            samples: n,
            classes: start.classes as usize,
        };
        let upload = layout.build(&preds, &start.prompt_class, &self.class_counts())?;
        self.previous = Some(start.clone());
        Ok(upload)
    }
}
