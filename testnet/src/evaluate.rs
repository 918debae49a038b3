//! Scores the generator after each completed round, outside the protocol: the oracle (trained
//! on the oracle split no node sees) judges samples from each replicated checkpoint, with the
//! same noise every round (common random numbers) so changes are the generator's. Also trains
//! every node's model on its own data alone, the local-only reference for its accuracy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use models::data::Splits;
use models::oracle::Oracle;
use models::text::TextEncoder;
use models::train::accuracy;
use node::config::{ModelConfig, NodeConfig};
use node::learn::{pretrained_synthesizer, PretrainCache, Synthesizer};
use node::run::ml::node_client;
use node::world::{eval_rng, federation_encoder, sub_seed, World};

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
                let mut host =
                    Synthesizer::new(cfg, self.encoder.clone(), &self.splits.host, seed)?;
                host.restore(bytes)?;
                host
            }
            None => {
                let cache = self.cache.as_ref();
                pretrained_synthesizer(cfg, self.encoder.clone(), &self.splits.host, seed, cache)?.0
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

/// Accuracy on the test split after each of `rounds` rounds of the model the node in
/// `node_dir` trains, from its config and dataset directory, with the same local steps per
/// round but on its own data alone: no synthetic set, no distillation (the simulation's
/// `--method local` step, `Client::train(None)`).
pub fn local_only(node_dir: &Path, rounds: u64) -> anyhow::Result<Vec<f64>> {
    let cfg = NodeConfig::load(&node_dir.join("config.toml"))?;
    let dataset = cfg.dataset_path(node_dir).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no dataset directory: the local-only reference needs the node's own data",
            node_dir.display()
        )
    })?;
    let world = World::build(
        &[],
        Some(dataset.existing_dir("node.dataset")?),
        cfg.round.seed,
        cfg.node.embedded_shards as usize,
        cfg.node.alpha,
    )?;
    let mut client = node_client(&world, cfg.client_config(), cfg.round.seed)?;
    (1..=rounds)
        .map(|r| {
            client.train(r, None)?;
            Ok(accuracy(client.model(), &world.test)?)
        })
        .collect()
}

/// [`local_only`] for every node directory, on up to `threads` threads; `progress` gets the
/// number of nodes done. Results in the order of `node_dirs`.
pub fn local_only_all(
    node_dirs: &[PathBuf],
    rounds: u64,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> anyhow::Result<Vec<Vec<f64>>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let mut curves: Vec<anyhow::Result<Vec<f64>>> = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, node_dirs.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(dir) = node_dirs.get(i) else {
                            return mine;
                        };
                        let curve = local_only(dir, rounds)
                            .with_context(|| format!("local-only reference of {}", dir.display()));
                        mine.push((i, curve));
                        progress(done.fetch_add(1, Ordering::SeqCst) + 1);
                    }
                })
            })
            .collect();
        let mut all: Vec<(usize, anyhow::Result<Vec<f64>>)> = Vec::new();
        for w in workers {
            match w.join() {
                Ok(mine) => all.extend(mine),
                Err(_) => all.push((
                    usize::MAX,
                    Err(anyhow::anyhow!("a local-only training thread panicked")),
                )),
            }
        }
        all.sort_by_key(|(i, _)| *i);
        curves = all.into_iter().map(|(_, c)| c).collect();
    });
    curves.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::classifier::Arch;
    use node::learn::Learner;
    use node::world::{federation_splits, partition};

    /// A node directory as the testnet writes it: a config naming the node's dataset directory.
    fn node_dir(root: &Path, name: &str, data: &models::data::Dataset, seed: u64) -> PathBuf {
        let dir = root.join(name);
        let dataset = dir.join("data");
        models::data::idx::write_dataset_dir(&dataset, data).unwrap();
        let mut cfg = NodeConfig::default();
        cfg.node.dataset = Some(dataset.to_string_lossy().into_owned());
        cfg.model.tiny = true;
        cfg.round.seed = seed;
        std::fs::write(dir.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();
        dir
    }

    #[test]
    fn local_only_trains_the_nodes_model_on_its_own_data() {
        let seed = 3;
        let splits = federation_splits(seed).unwrap();
        let parts = partition(&splits, 4, 0.5, seed).unwrap();
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = parts
            .iter()
            .take(2)
            .enumerate()
            .map(|(i, p)| node_dir(root.path(), &format!("n{i}"), &splits.pool.subset(p), seed))
            .collect();
        let t = std::time::Instant::now();
        let curve = local_only(&dirs[0], 2).unwrap();
        eprintln!(
            "local-only, tiny, 2 rounds: {:.2} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(curve.len(), 2);
        assert!(curve.iter().all(|a| (0.0..=1.0).contains(a)), "{curve:?}");
        // The node's client (id 0, MLP, its seed) on its shard, judged on the federation's
        // test split.
        let cfg = NodeConfig::load(&dirs[0].join("config.toml")).unwrap();
        let mut client = Learner::new(
            0,
            Arch::Mlp,
            splits.pool.subset(&parts[0]),
            &federation_encoder(&splits.host.classes, seed),
            cfg.client_config(),
            sub_seed(seed, 5),
        )
        .unwrap();
        let expected: Vec<f64> = (1..=2)
            .map(|r| {
                client.train(r, None).unwrap();
                accuracy(client.model(), &splits.test).unwrap()
            })
            .collect();
        assert_eq!(curve, expected);
        // Every node, in order, deterministic; another node's data gives another curve.
        let seen = std::sync::Mutex::new(Vec::new());
        let all = local_only_all(&dirs, 2, 2, &|done| seen.lock().unwrap().push(done)).unwrap();
        assert_eq!(all[0], curve);
        assert_ne!(all[1], curve);
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, vec![1, 2]);
        // A node without a dataset directory is refused with a reason.
        let bare = root.path().join("bare");
        std::fs::create_dir_all(&bare).unwrap();
        let cfg = toml::to_string(&NodeConfig::default()).unwrap();
        std::fs::write(bare.join("config.toml"), cfg).unwrap();
        let err = local_only(&bare, 1).unwrap_err().to_string();
        assert!(err.contains("no dataset directory"), "{err}");
    }
}
