//! Deterministic carving of a data source into host, client, test and oracle sets, and the
//! Dirichlet label-skew partition of the client pool.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use crate::data::dataset::{DataSource, Dataset};
use crate::error::{ModelError, Result};

/// How many images per class go to each fixed split; everything else is the client pool.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SplitConfig {
    /// The host's small public labelled set, used to pre-train the generator.
    pub host_per_class: usize,
    /// Held-out real test images on which client accuracy is reported.
    pub test_per_class: usize,
    /// Images only the oracle classifier ever trains on.
    pub oracle_per_class: usize,
    /// A fixed public unlabelled set for the FedMD/FedDF baseline.
    pub public_per_class: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            host_per_class: 30,
            test_per_class: 150,
            oracle_per_class: 150,
            public_per_class: 30,
        }
    }
}

/// The disjoint splits every run uses.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Host's public labelled set.
    pub host: Dataset,
    /// Pool partitioned among clients.
    pub pool: Dataset,
    /// Real held-out test set.
    pub test: Dataset,
    /// Oracle-only training set.
    pub oracle: Dataset,
    /// Public unlabelled set of the FedMD baseline.
    pub public: Dataset,
}

/// Shuffles each class's indices and hands out `takes[i]` per class to split `i`; the rest last.
fn carve_per_class(ds: &Dataset, takes: &[usize], rng: &mut ChaCha8Rng) -> Result<Vec<Vec<usize>>> {
    let mut by_class = vec![Vec::new(); ds.num_classes()];
    for (i, &l) in ds.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let need: usize = takes.iter().sum();
    let mut out = vec![Vec::new(); takes.len() + 1];
    for (c, idx) in by_class.iter_mut().enumerate() {
        if idx.len() < need {
            return Err(ModelError::Dataset(format!(
                "class {c} ({}) has {} images, the splits need at least {need}",
                ds.classes[c],
                idx.len()
            )));
        }
        idx.shuffle(rng);
        let mut start = 0;
        for (s, &t) in takes.iter().enumerate() {
            out[s].extend_from_slice(&idx[start..start + t]);
            start += t;
        }
        out[takes.len()].extend_from_slice(&idx[start..]);
    }
    for split in &mut out {
        split.sort_unstable();
        split.shuffle(rng);
    }
    Ok(out)
}

impl Splits {
    /// Carves the splits: with a train split, host/public/pool come from train and test/oracle
    /// from t10k; with t10k alone, every split is carved from it.
    pub fn carve(src: &DataSource, cfg: &SplitConfig, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT);
        match &src.train {
            Some(train) => {
                let t = carve_per_class(
                    &src.test,
                    &[cfg.test_per_class, cfg.oracle_per_class],
                    &mut rng,
                )?;
                let p =
                    carve_per_class(train, &[cfg.host_per_class, cfg.public_per_class], &mut rng)?;
                Ok(Self {
                    test: src.test.subset(&t[0]),
                    oracle: src.test.subset(&t[1]),
                    host: train.subset(&p[0]),
                    public: train.subset(&p[1]),
                    pool: train.subset(&p[2]),
                })
            }
            None => {
                let s = carve_per_class(
                    &src.test,
                    &[
                        cfg.host_per_class,
                        cfg.test_per_class,
                        cfg.oracle_per_class,
                        cfg.public_per_class,
                    ],
                    &mut rng,
                )?;
                Ok(Self {
                    host: src.test.subset(&s[0]),
                    test: src.test.subset(&s[1]),
                    oracle: src.test.subset(&s[2]),
                    public: src.test.subset(&s[3]),
                    pool: src.test.subset(&s[4]),
                })
            }
        }
    }
}

/// Salt so split and partition draws differ for one seed.
const SPLIT_SALT: u64 = 0x5eed_5011;

/// Splits `labels` over `clients` with per-class proportions drawn from Dirichlet(α); every
/// index lands in exactly one client, and every client gets at least `min_size` indices.
pub fn dirichlet_partition(
    labels: &[u8],
    num_classes: usize,
    clients: usize,
    alpha: f64,
    min_size: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if clients == 0 {
        return Err(ModelError::Config("need at least one client".into()));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(ModelError::Config(format!(
            "Dirichlet alpha must be > 0, got {alpha}"
        )));
    }
    if clients * min_size > labels.len() {
        return Err(ModelError::Config(format!(
            "{} images cannot give {clients} clients {min_size} each",
            labels.len()
        )));
    }
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| ModelError::Config(e.to_string()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(i);
        } else {
            return Err(ModelError::Config(format!(
                "label {l} >= {num_classes} classes"
            )));
        }
    }
    let cap = labels.len() as f64 / clients as f64;
    for _attempt in 0..10_000 {
        let mut parts = vec![Vec::new(); clients];
        for idx in &by_class {
            let mut idx = idx.clone();
            idx.shuffle(&mut rng);
            // Clients already holding their fair share get no more of this class (NIID-Bench).
            let mut p: Vec<f64> = (0..clients)
                .map(|k| {
                    let g = gamma.sample(&mut rng).max(1e-300);
                    if (parts[k].len() as f64) < cap {
                        g
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = p.iter().sum();
            if sum <= 0.0 {
                p.iter_mut().for_each(|x| *x = 1.0);
            }
            let sum: f64 = p.iter().sum();
            let mut acc = 0.0;
            let mut start = 0;
            for (k, pk) in p.iter().enumerate() {
                acc += pk / sum;
                let end = if k + 1 == clients {
                    idx.len()
                } else {
                    ((acc * idx.len() as f64).round() as usize).min(idx.len())
                };
                parts[k].extend_from_slice(&idx[start..end.max(start)]);
                start = end.max(start);
            }
        }
        if parts.iter().all(|p| p.len() >= min_size) {
            for p in &mut parts {
                p.shuffle(&mut rng);
            }
            return Ok(parts);
        }
    }
    Err(ModelError::Config(format!(
        "no Dirichlet({alpha}) draw gave every one of {clients} clients {min_size} images"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_assigns_every_sample_once_and_is_seeded() {
        let labels: Vec<u8> = (0..2000).map(|i| (i % 10) as u8).collect();
        let a = dirichlet_partition(&labels, 10, 7, 0.1, 10, 42).unwrap();
        let b = dirichlet_partition(&labels, 10, 7, 0.1, 10, 42).unwrap();
        let c = dirichlet_partition(&labels, 10, 7, 0.1, 10, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
        assert!(a.iter().all(|p| p.len() >= 10));
    }

    #[test]
    fn small_alpha_skews_labels_large_alpha_does_not() {
        let labels: Vec<u8> = (0..5000).map(|i| (i % 10) as u8).collect();
        let dominant = |alpha: f64| {
            let parts = dirichlet_partition(&labels, 10, 10, alpha, 10, 7).unwrap();
            let fracs: Vec<f64> = parts
                .iter()
                .map(|p| {
                    let mut c = [0usize; 10];
                    p.iter().for_each(|&i| c[labels[i] as usize] += 1);
                    *c.iter().max().unwrap() as f64 / p.len() as f64
                })
                .collect();
            fracs.iter().sum::<f64>() / fracs.len() as f64
        };
        assert!(dominant(0.1) > 0.5, "{}", dominant(0.1));
        assert!(dominant(100.0) < 0.2, "{}", dominant(100.0));
    }

    #[test]
    fn partition_rejects_bad_input() {
        let labels = vec![0u8; 10];
        assert!(dirichlet_partition(&labels, 1, 0, 0.1, 1, 0).is_err());
        assert!(dirichlet_partition(&labels, 1, 2, -1.0, 1, 0).is_err());
        assert!(dirichlet_partition(&labels, 1, 20, 0.1, 1, 0).is_err());
        assert!(dirichlet_partition(&[3u8], 2, 1, 0.1, 1, 0).is_err());
    }

    #[test]
    fn splits_are_disjoint_balanced_and_seeded() {
        let src = DataSource::embedded().unwrap();
        let cfg = SplitConfig::default();
        let s = Splits::carve(&src, &cfg, 1).unwrap();
        assert!(s
            .host
            .class_counts()
            .iter()
            .all(|&c| c == cfg.host_per_class));
        assert!(s
            .test
            .class_counts()
            .iter()
            .all(|&c| c == cfg.test_per_class));
        assert!(s
            .oracle
            .class_counts()
            .iter()
            .all(|&c| c == cfg.oracle_per_class));
        let total = s.host.len() + s.test.len() + s.oracle.len() + s.public.len() + s.pool.len();
        assert_eq!(total, 10_000);
        let again = Splits::carve(&src, &cfg, 1).unwrap();
        assert_eq!(s.test.images, again.test.images);
        // Disjoint: no oracle image appears among the pool images (exact pixel match).
        let pool: std::collections::HashSet<&[u8]> =
            (0..s.pool.len()).map(|i| s.pool.image(i)).collect();
        let dup = (0..s.oracle.len())
            .filter(|&i| pool.contains(s.oracle.image(i)))
            .count();
        assert!(dup <= 2, "{dup} oracle images also in pool");
    }
}
