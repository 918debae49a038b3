//! The data world every run draws from, the node's and the simulation's alike: the seeds of
//! each component, the carved splits, the label-skewed partition of the client pool, and the
//! caption encoder. A node's own view ([`World`]): the public host set every node can rebuild,
//! its private data (its own directory, or a shard of the embedded data chosen from its peer
//! id) and the test split for its metrics.

use std::path::Path;
use std::sync::Arc;

use models::data::captions::all_captions;
use models::data::{dirichlet_partition, DataSource, Dataset, SplitConfig, Splits};
use models::text::{BowTextEncoder, TextEncoder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

/// Caption embedding width of the default encoder (as in `fedmmkt simulate`).
pub const EMB_DIM: usize = 32;

/// What the node's models are built from.
pub struct World {
    /// The host's public set (same on every node with the same seed).
    pub host_public: Dataset,
    /// This node's private data.
    pub private: Dataset,
    /// Where the private data came from.
    pub private_origin: String,
    /// Held-out test images for the node's own accuracy.
    pub test: Dataset,
    /// The frozen caption encoder (same on every node with the same seed).
    pub encoder: Arc<dyn TextEncoder>,
    /// Which embedded shard this node uses (None with its own dataset).
    pub shard: Option<usize>,
}

/// The shard of the embedded data a peer uses when it has no dataset of its own.
pub fn shard_of(peer: &[u8], shards: usize) -> usize {
    let digest = ring::digest::digest(&ring::digest::SHA256, peer);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_le_bytes(first) % shards.max(1) as u64) as usize
}

/// The splits every node (and the testnet) carves from the embedded data with `seed`.
pub fn federation_splits(seed: u64) -> anyhow::Result<Splits> {
    let embedded = DataSource::embedded()?;
    let split = SplitConfig {
        host_per_class: 20,
        oracle_per_class: 300,
        ..SplitConfig::default()
    };
    Ok(Splits::carve(&embedded, &split, seed)?)
}

/// The caption encoder every node (and the testnet's evaluation) builds from `seed`.
pub fn federation_encoder(classes: &[String], seed: u64) -> Arc<dyn TextEncoder> {
    bow_encoder(classes, EMB_DIM, seed)
}

/// The frozen bag-of-words caption encoder of width `dim` over every caption of `classes`.
pub fn bow_encoder(classes: &[String], dim: usize, seed: u64) -> Arc<dyn TextEncoder> {
    let corpus: Vec<(usize, String)> = all_captions(classes)
        .into_iter()
        .map(|(c, _, t)| (c, t))
        .collect();
    Arc::new(BowTextEncoder::new(dim, sub_seed(seed, 2), &corpus))
}

/// The client pool split into `parts` label-skewed shards (Dirichlet α, at least 10 images each).
pub fn partition(
    splits: &Splits,
    parts: usize,
    alpha: f64,
    seed: u64,
) -> anyhow::Result<Vec<Vec<usize>>> {
    Ok(dirichlet_partition(
        &splits.pool.labels,
        splits.pool.num_classes(),
        parts.max(1),
        alpha,
        10,
        sub_seed(seed, 1),
    )?)
}

impl World {
    /// Builds the world for peer `peer` from the embedded data (or `dataset` for the private part).
    pub fn build(
        peer: &[u8],
        dataset: Option<&Path>,
        seed: u64,
        shards: usize,
        alpha: f64,
    ) -> anyhow::Result<Self> {
        let splits = federation_splits(seed)?;
        let encoder = federation_encoder(&splits.host.classes, seed);
        let (private, private_origin, shard) = match dataset {
            Some(dir) => {
                let src = DataSource::from_dir(dir)?;
                let data = src.train.unwrap_or(src.test);
                anyhow::ensure!(
                    data.classes == splits.host.classes && data.rows == splits.host.rows,
                    "dataset {} has classes {:?} of {}×{} images; this federation uses {:?} of {}×{}",
                    dir.display(),
                    data.classes,
                    data.rows,
                    data.cols,
                    splits.host.classes,
                    splits.host.rows,
                    splits.host.cols
                );
                (data, dir.display().to_string(), None)
            }
            None => {
                let shards = shards.max(1);
                let parts = partition(&splits, shards, alpha, seed)?;
                let k = shard_of(peer, shards);
                let part = parts
                    .get(k)
                    .ok_or_else(|| anyhow::anyhow!("no shard {k} of {shards}"))?;
                (
                    splits.pool.subset(part),
                    format!("embedded shard {k} of {shards}"),
                    Some(k),
                )
            }
        };
        Ok(Self {
            host_public: splits.host,
            private,
            private_origin,
            test: splits.test,
            encoder,
            shard,
        })
    }
}
