//! What every run of one config shares: the splits, the client partition, the text encoder,
//! the oracle and the pre-trained generator. Built once, so `--compare` trains them once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::data::captions::all_captions;
use models::data::{dirichlet_partition, DataSource, Dataset, Splits};
use models::generator::Generator;
use models::oracle::{GenScore, Oracle};
use models::text::{BowTextEncoder, MiniLmEncoder, TextEncoder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{SimConfig, TextEncoderKind};
use crate::round::Host;

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

/// Seed of one component, so components draw independent streams from one run seed.
pub fn sub_seed(seed: u64, component: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ component.wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Noise for evaluation samples, fixed per seed: stream 0 is what the oracle scores every
/// round (common random numbers, so round-to-round changes are the generator's), another
/// stream draws the image grids.
pub fn eval_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(sub_seed(seed, stream.wrapping_add(1000)))
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
        let mut split = cfg.split;
        split.public_per_class = cfg.host.samples_per_class;
        progress("carving splits");
        let splits = Splits::carve(source, &split, cfg.seed)?;
        let partition = dirichlet_partition(
            &splits.pool.labels,
            splits.pool.num_classes(),
            cfg.clients,
            cfg.alpha,
            10,
            sub_seed(cfg.seed, 1),
        )?;
        let corpus: Vec<(usize, String)> = all_captions(&splits.host.classes)
            .into_iter()
            .map(|(c, _, t)| (c, t))
            .collect();
        let encoder: Arc<dyn TextEncoder> = match (&cfg.text_encoder, &cfg.text_encoder_dir) {
            (TextEncoderKind::Minilm, Some(dir)) => Arc::new(MiniLmEncoder::load(dir)?),
            _ => Arc::new(BowTextEncoder::new(
                cfg.emb_dim,
                sub_seed(cfg.seed, 2),
                &corpus,
            )),
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
        let mut host = Host::new(
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
