//! The oracle: a classifier trained only on the oracle split, used to judge generated images
//! (conditional accuracy) and to embed them for the Fréchet distance.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::classifier::{Arch, TaskModel};
use crate::data::Dataset;
use crate::error::Result;
use crate::metrics::frechet_distance;
use crate::train::{argmax_accuracy, train_client, ClientTrainConfig};

/// How the oracle scored a batch of generated images.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenScore {
    /// Fraction of samples the oracle assigns to their prompted class.
    pub oracle_acc: f64,
    /// Fréchet distance to the real test images in the oracle's feature space.
    pub frechet: f64,
    /// Conditional accuracy per prompted class.
    pub per_class_acc: Vec<f64>,
    /// Fréchet distance per class (samples of class c against real images of class c).
    pub per_class_frechet: Vec<f64>,
}

/// A fixed judge of images, trained once per run on data no client or host sees.
pub struct Oracle {
    model: TaskModel,
    real_features: Vec<f32>,
    real_labels: Vec<u8>,
    classes: usize,
}

impl Oracle {
    /// Trains the oracle on `train` for `epochs`, and embeds `reference` (the real test set).
    pub fn train(train: &Dataset, reference: &Dataset, epochs: usize, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = TaskModel::new(
            Arch::WideCnn,
            train.rows,
            train.num_classes(),
            1,
            2e-3,
            seed,
        )?;
        let cfg = ClientTrainConfig {
            epochs,
            batch: 64,
            align_weight: 0.0,
            kd_weight: 0.0,
            ..Default::default()
        };
        let dummy_emb = vec![0f32; train.len()];
        train_client(&mut model, train, &dummy_emb, None, &cfg, &mut rng)?;
        let real_features = model.embed_features(&reference.images, reference.len())?;
        Ok(Self {
            model,
            real_features,
            real_labels: reference.labels.clone(),
            classes: train.num_classes(),
        })
    }

    /// Accuracy on a labelled set (for the oracle's own accuracy on real test images).
    pub fn accuracy(&self, ds: &Dataset) -> Result<f64> {
        crate::train::accuracy(&self.model, ds)
    }

    /// Scores generated `pixels` (`labels.len()` images) prompted with `labels`.
    pub fn score(&self, pixels: &[u8], labels: &[u8]) -> Result<GenScore> {
        let n = labels.len();
        let probs = self.model.predict_proba(pixels, n)?;
        let dim = self.model.arch().feature_dim();
        let feats = self.model.embed_features(pixels, n)?;
        let mut per_class_acc = Vec::with_capacity(self.classes);
        let mut per_class_frechet = Vec::with_capacity(self.classes);
        for c in 0..self.classes as u8 {
            let idx: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
            let sub_probs: Vec<f32> = idx
                .iter()
                .flat_map(|&i| {
                    probs[i * self.classes..(i + 1) * self.classes]
                        .iter()
                        .copied()
                })
                .collect();
            per_class_acc.push(argmax_accuracy(
                &sub_probs,
                &vec![c; idx.len()],
                self.classes,
            ));
            let gen: Vec<f32> = idx
                .iter()
                .flat_map(|&i| feats[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let real: Vec<f32> = (0..self.real_labels.len())
                .filter(|&i| self.real_labels[i] == c)
                .flat_map(|i| self.real_features[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            per_class_frechet.push(if gen.is_empty() || real.is_empty() {
                f64::NAN
            } else {
                frechet_distance(&gen, &real, dim)?
            });
        }
        Ok(GenScore {
            oracle_acc: argmax_accuracy(&probs, labels, self.classes),
            frechet: frechet_distance(&feats, &self.real_features, dim)?,
            per_class_acc,
            per_class_frechet,
        })
    }
}
