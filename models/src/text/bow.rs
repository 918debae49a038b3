//! The default text encoder: a frozen, seeded bag of words weighted by inverse class frequency.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::TextEncoder;
use crate::error::Result;

/// A frozen bag-of-words encoder: each word gets a seeded random direction, weighted by how
/// few classes use it, so captions of one class land close together without any download.
#[derive(Debug, Clone)]
pub struct BowTextEncoder {
    dim: usize,
    seed: u64,
    weights: HashMap<String, f32>,
    unknown_weight: f32,
}

/// Lowercase words; hyphens stay inside words, other punctuation separates them.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// FNV-1a: a stable hash, so a word's direction never changes between builds or platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl BowTextEncoder {
    /// Builds the encoder; `corpus` pairs each caption with its class, to weight words by
    /// inverse class frequency (a word every class uses carries almost no weight).
    pub fn new(dim: usize, seed: u64, corpus: &[(usize, String)]) -> Self {
        let classes: std::collections::HashSet<usize> = corpus.iter().map(|(c, _)| *c).collect();
        let n = classes.len().max(1) as f32;
        let mut df: HashMap<String, std::collections::HashSet<usize>> = HashMap::new();
        for (c, text) in corpus {
            for w in words(text) {
                df.entry(w).or_default().insert(*c);
            }
        }
        let weights = df
            .into_iter()
            .map(|(w, cs)| (w, ((1.0 + n) / (1.0 + cs.len() as f32)).ln() + 0.05))
            .collect();
        Self {
            dim,
            seed,
            weights,
            unknown_weight: (1.0 + n).ln() + 0.05,
        }
    }

    fn direction(&self, word: &str) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(word.as_bytes()) ^ self.seed);
        (0..self.dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }
}

impl TextEncoder for BowTextEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for text in texts {
            let mut v = vec![0f32; self.dim];
            for w in words(text) {
                let weight = self.weights.get(&w).copied().unwrap_or(self.unknown_weight);
                for (acc, d) in v.iter_mut().zip(self.direction(&w)) {
                    *acc += weight * d;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            out.extend_from_slice(&v);
        }
        Ok(out)
    }

    fn name(&self) -> String {
        format!("bag-of-words-{}", self.dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::captions::all_captions;

    #[test]
    fn same_class_captions_are_closer_than_other_classes() {
        let classes: Vec<String> = [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let caps = all_captions(&classes);
        let corpus: Vec<(usize, String)> = caps.iter().map(|(c, _, t)| (*c, t.clone())).collect();
        let enc = BowTextEncoder::new(32, 7, &corpus);
        let texts: Vec<String> = caps.iter().map(|(_, _, t)| t.clone()).collect();
        let e = enc.encode(&texts).unwrap();
        let d = enc.dim();
        let cos = |i: usize, j: usize| -> f32 { (0..d).map(|k| e[i * d + k] * e[j * d + k]).sum() };
        for i in 0..caps.len() {
            let same = (0..caps.len())
                .filter(|&j| j != i && caps[j].0 == caps[i].0)
                .map(|j| cos(i, j));
            let other = (0..caps.len())
                .filter(|&j| caps[j].0 != caps[i].0)
                .map(|j| cos(i, j));
            let worst_same = same.fold(f32::INFINITY, f32::min);
            let best_other = other.fold(f32::NEG_INFINITY, f32::max);
            assert!(
                worst_same > best_other,
                "{}: {worst_same} <= {best_other}",
                caps[i].2
            );
        }
        // Unit length and deterministic.
        assert!((cos(0, 0) - 1.0).abs() < 1e-5);
        assert_eq!(e, enc.encode(&texts).unwrap());
    }
}
