//! Scores the generator after each completed round, outside the protocol: the oracle (trained
//! on the oracle split no node sees) judges samples from each replicated checkpoint, with the
//! same noise every round (common random numbers) so changes are the generator's.

use std::sync::Arc;

use models::data::Splits;
use models::oracle::Oracle;
use models::text::TextEncoder;
use node::config::ModelConfig;
use node::round::{pretrained_host, Host, PretrainCache};
use node::run::world::federation_encoder;
use node::simulate::setup::{eval_rng, sub_seed};

use crate::record::GenPoint;
use crate::report::GridImages;

/// The judge and the means to rebuild the host's generator from a checkpoint.
pub struct Evaluator {
    oracle: Oracle,
    splits: Splits,
    encoder: Arc<dyn TextEncoder>,
    model: ModelConfig,
    seed: u64,
    per_class: usize,
    cache: Option<PretrainCache>,
}

impl Evaluator {
    /// Trains the oracle (`tiny`: fewer epochs and samples).
    pub fn new(splits: Splits, model: ModelConfig, seed: u64, tiny: bool) -> anyhow::Result<Self> {
        let epochs = if tiny { 2 } else { 15 };
        let oracle = Oracle::train(&splits.oracle, &splits.test, epochs, sub_seed(seed, 3))?;
        let encoder = federation_encoder(&splits.host.classes, seed);
        Ok(Self {
            oracle,
            splits,
            encoder,
            model,
            seed,
            per_class: if tiny { 10 } else { 50 },
            cache: None,
        })
    }

    /// Loads round 0's pre-training from `cache` (and stores it there) instead of recomputing.
    pub fn with_cache(mut self, cache: PretrainCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The oracle's accuracy on real test images.
    pub fn oracle_acc_real(&self) -> anyhow::Result<f64> {
        Ok(self.oracle.accuracy(&self.splits.test)?)
    }

    /// Scores the generator of `checkpoint` (None: freshly pre-trained, round 0) and returns
    /// the score and a grid of samples.
    pub fn score(
        &self,
        round: u64,
        checkpoint: Option<&[u8]>,
    ) -> anyhow::Result<(GenPoint, GridImages)> {
        let (cfg, seed) = (self.model.host_config(), sub_seed(self.seed, 4));
        let host = match checkpoint {
            Some(bytes) => {
                let mut host = Host::new(cfg, self.encoder.clone(), &self.splits.host, seed)?;
                host.restore(bytes)?;
                host
            }
            None => {
                let cache = self.cache.as_ref();
                pretrained_host(cfg, self.encoder.clone(), &self.splits.host, seed, cache)?.0
            }
        };
        let (pixels, labels) =
            host.sample_per_class(self.per_class, &mut eval_rng(self.seed, 0))?;
        let s = self.oracle.score(&pixels, &labels)?;
        let (grid_pixels, grid_labels) = host.sample_per_class(8, &mut eval_rng(self.seed, 1))?;
        Ok((
            GenPoint {
                oracle_acc: s.oracle_acc,
                frechet: s.frechet,
            },
            GridImages {
                round,
                pixels: grid_pixels,
                labels: grid_labels,
                classes: self.splits.host.classes.len(),
                side: self.splits.host.rows,
            },
        ))
    }

    /// Class names (for the report).
    pub fn classes(&self) -> &[String] {
        &self.splits.host.classes
    }
}
