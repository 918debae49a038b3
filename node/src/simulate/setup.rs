//! What every run of one config shares: the splits, the client partition, the text encoder,
//! the oracle and the pre-trained generator. Built once, so `--compare` trains them once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::data::{DataSource, Dataset, Splits};
use models::generator::Generator;
use models::oracle::{GenScore, Oracle};
use models::text::{MiniLmEncoder, TextEncoder};

use super::config::{SimConfig, TextEncoderKind};
use crate::learn::Synthesizer;
use crate::world::{bow_encoder, eval_rng, partition, sub_seed};

/// Shared, read-only inputs of every run with one config and seed.
pub struct Setup {
    /// The fixed splits.
    pub splits: Splits,
    /// Client pool indices of each client.
    pub partition: Vec<Vec<usize>>,
    /// The frozen caption encoder.
    pub encoder: Arc<dyn TextEncoder>,
    /// The judge of generated images.
    pub oracle: Oracle,
    /// The oracle's accuracy on real test images (the ceiling for the generator's score).
    pub oracle_acc_real: f64,
    /// Safetensors checkpoint of the generator after pre-training.
    pub pretrained: PathBuf,
    /// The pre-trained generator's score.
    pub gen_start: GenScore,
    /// Where the data came from.
    pub data_origin: String,
    /// Directory for run artefacts (checkpoints, ledgers).
    pub work_dir: PathBuf,
}

impl Setup {
    /// Loads data, carves splits, partitions clients, trains the oracle and pre-trains the generator.
    pub fn build(
        cfg: &SimConfig,
        source: &DataSource,
        work_dir: &Path,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        progress("carving splits");
        let splits = Splits::carve(source, &cfg.split, cfg.seed)?;
        let partition = partition(&splits, cfg.clients, cfg.alpha, cfg.seed)?;
        let encoder: Arc<dyn TextEncoder> = match (&cfg.text_encoder, &cfg.text_encoder_dir) {
            (TextEncoderKind::Minilm, Some(dir)) => Arc::new(MiniLmEncoder::load(dir)?),
            _ => bow_encoder(&splits.host.classes, cfg.emb_dim, cfg.seed),
        };
        progress("training oracle");
        let oracle = Oracle::train(
            &splits.oracle,
            &splits.test,
            cfg.oracle_epochs,
            sub_seed(cfg.seed, 3),
        )?;
        let oracle_acc_real = oracle.accuracy(&splits.test)?;
        progress("pre-training generator");
        let mut host = Synthesizer::new(
            cfg.host,
            encoder.clone(),
            &splits.host,
            sub_seed(cfg.seed, 4),
        )?;
        host.pretrain()?;
        std::fs::create_dir_all(work_dir)?;
        let pretrained = work_dir.join("generator-pretrained.safetensors");
        host.generator().save(&pretrained)?;
        let (images, labels) =
            host.sample_per_class(cfg.eval_per_class, &mut eval_rng(cfg.seed, 0))?;
        let gen_start = oracle.score(&images, &labels)?;
        Ok(Self {
            splits,
            partition,
            encoder,
            oracle,
            oracle_acc_real,
            pretrained,
            gen_start,
            data_origin: source.origin.clone(),
            work_dir: work_dir.to_path_buf(),
        })
    }

    /// Private data of client `k`.
    pub fn client_data(&self, k: usize) -> Dataset {
        self.splits.pool.subset(&self.partition[k])
    }
}
