//! The client's flat upload vector and the host's reading of the aggregate (their sum).
//!
//! Layout for S synthetic samples and C classes: S rows of C values
//! `w_{k,y_j} · p_k(·|x̃_j)`, then the C weights `w_{k,·}`, where `w_{k,c} = n_{k,c} / N_k` is the
//! share of class c in client k's data. Shares rather than raw counts keep every upload's L2
//! norm below `sqrt(S + 1)`, a bound the privacy layer can clip to without knowing the data.
//!
//! When the round carries the generator's latent code (`RoundStart::latent`, width d), a
//! moment block follows: C weights (the client's share of each class it shares moments of, 0
//! otherwise), then per class d values `w_{k,c} · mean(z/R)` and d values `w_{k,c} · mean((z/R)²)`
//! over its images of that class, each code clipped to norm R. The sum gives the host the
//! federation's class-conditional means and variances in the space its generator samples:
//! what the clients' ensemble judgement cannot say.

use crate::error::ProtocolError;
use crate::messages::RoundStart;

/// Shape of the upload vector of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLayout {
    /// Synthetic samples judged.
    pub samples: usize,
    /// Classes.
    pub classes: usize,
    /// Width d of the latent code the round asks per-class moments in (0: none); see
    /// [`UploadLayout::moment_block`].
    pub moments: usize,
}

/// The federation's per-class moments of real images in the generator's latent code, read
/// from the aggregate (classes no contributor had are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMoments {
    /// Latent width d.
    pub dim: usize,
    /// Per class: `Some((mean, variance))`, `d` values each, or `None` without support.
    pub classes: Vec<Option<(Vec<f32>, Vec<f32>)>>,
}

/// The ensemble teacher recovered from the aggregate of all uploads.
#[derive(Debug, Clone, PartialEq)]
pub struct Teacher {
    /// Q_j, `samples * classes` values; rows sum to one (uniform where no client had support).
    pub probs: Vec<f32>,
    /// ρ_j = Q_j[y_j]: the clients' collective belief that sample j shows its prompt.
    pub reward: Vec<f32>,
    /// Σ_k w_{k,y_j}: how much client data stood behind each judgement.
    pub support: Vec<f32>,
}

impl UploadLayout {
    /// The layout of the uploads answering `start`.
    pub fn of(start: &RoundStart) -> Self {
        Self {
            samples: start.samples(),
            classes: start.classes as usize,
            moments: start.latent_dim(),
        }
    }

    /// Length of the flat vector.
    pub fn len(&self) -> usize {
        self.samples * self.classes + self.classes + self.moment_len()
    }

    /// Length of the moment block: per class a weight, then `d` first and `d` second moments.
    fn moment_len(&self) -> usize {
        if self.moments == 0 {
            0
        } else {
            self.classes * (1 + 2 * self.moments)
        }
    }

    /// True for a degenerate zero-length layout.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// L2 norm no honest upload exceeds (each row has norm ≤ its weight ≤ 1; shares sum to 1;
    /// the moment block's rows, of clipped codes, have norm ≤ 2·share ≤ 2).
    pub fn l2_bound(&self) -> f64 {
        let moments = if self.moments == 0 { 0.0 } else { 3.0 };
        ((self.samples + 1) as f64).sqrt() + moments
    }

    /// The moment block of one client: for each class c with `n_c` records, its share w_c
    /// (as in the upload), then w_c·mean_c(z/R) and w_c·mean_c((z/R)²), where each record's
    /// code z is clipped to L2 norm R. `sums` holds, per class, Σ z/R and Σ (z/R)² (`2d`
    /// values, as [`crate::LatentCode::class_sums`] gives them) and `counts` the records
    /// behind them; `None` (a client that does not share moments) gives zeros.
    fn moment_block(
        &self,
        share: &[f32],
        moments: Option<(&[f64], &[f64])>,
    ) -> Result<Vec<f32>, ProtocolError> {
        let (c, d) = (self.classes, self.moments);
        let mut out = vec![0f32; self.moment_len()];
        let Some((sums, counts)) = moments else {
            return Ok(out);
        };
        if sums.len() != c * 2 * d || counts.len() != c {
            return Err(ProtocolError::Invalid {
                kind: "upload",
                reason: format!(
                    "moment sums {} and counts {} do not fit {c} classes × {d}",
                    sums.len(),
                    counts.len()
                ),
            });
        }
        let (weights, rows) = out.split_at_mut(c);
        for k in 0..c {
            if counts[k] < 1.0 {
                continue;
            }
            let w = share[k];
            weights[k] = w;
            let row = &mut rows[k * 2 * d..(k + 1) * 2 * d];
            for (o, v) in row.iter_mut().zip(&sums[k * 2 * d..(k + 1) * 2 * d]) {
                *o = (w as f64 * v / counts[k]) as f32;
            }
        }
        Ok(out)
    }

    /// Builds a client's upload from its predictions (`samples * classes`), the prompted
    /// class of each sample, its class counts (exact, or as released under DP), and, where the
    /// layout asks for moments, its per-class latent sums (`None`: this client shares none).
    pub fn build(
        &self,
        preds: &[f32],
        prompt_class: &[u16],
        counts: &[f64],
        moments: Option<&[f64]>,
    ) -> Result<Vec<f32>, ProtocolError> {
        let (s, c) = (self.samples, self.classes);
        if preds.len() != s * c || prompt_class.len() != s || counts.len() != c {
            return Err(ProtocolError::Invalid {
                kind: "upload",
                reason: format!(
                    "predictions {}, prompts {}, counts {} do not fit {s} samples × {c} classes",
                    preds.len(),
                    prompt_class.len(),
                    counts.len()
                ),
            });
        }
        let total: f64 = counts.iter().map(|n| n.max(0.0)).sum();
        let share: Vec<f32> = counts
            .iter()
            .map(|&n| {
                if total > 0.0 {
                    (n.max(0.0) / total) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let mut out = Vec::with_capacity(self.len());
        for (row, &y) in preds.chunks_exact(c).zip(prompt_class) {
            let w = share
                .get(y as usize)
                .copied()
                .ok_or_else(|| ProtocolError::Invalid {
                    kind: "upload",
                    reason: format!("prompt class {y} out of range"),
                })?;
            out.extend(row.iter().map(|p| w * p));
        }
        out.extend_from_slice(&share);
        if self.moments > 0 {
            out.extend(self.moment_block(&share, moments.map(|m| (m, counts)))?);
        }
        Ok(out)
    }

    /// Reads the moment block of the aggregate: per class, the share-weighted mean over the
    /// contributors of their class means of z (and of z², for the variance), scaled back by
    /// the clip `clip`; `None` when the layout has no moment block. Classes whose summed
    /// weight is below `min_weight` are left out.
    pub fn moments(
        &self,
        sum: &[f64],
        clip: f32,
        min_weight: f64,
    ) -> Result<Option<ClassMoments>, ProtocolError> {
        if self.moments == 0 {
            return Ok(None);
        }
        if sum.len() != self.len() {
            return Err(ProtocolError::Invalid {
                kind: "aggregate",
                reason: format!("{} values for a layout of {}", sum.len(), self.len()),
            });
        }
        let (c, d) = (self.classes, self.moments);
        let block = &sum[self.samples * c + c..];
        let (weights, rows) = block.split_at(c);
        let r = clip as f64;
        let classes = (0..c)
            .map(|k| {
                let w = weights[k];
                // NaN (a corrupt aggregate) has no support either.
                if w.is_nan() || w < min_weight.max(1e-9) {
                    return None;
                }
                let row = &rows[k * 2 * d..(k + 1) * 2 * d];
                let mean: Vec<f64> = row[..d].iter().map(|v| r * v / w).collect();
                let var: Vec<f32> = row[d..]
                    .iter()
                    .zip(&mean)
                    .map(|(m2, m)| ((r * r * m2 / w) - m * m).max(0.0) as f32)
                    .collect();
                Some((mean.into_iter().map(|m| m as f32).collect(), var))
            })
            .collect();
        Ok(Some(ClassMoments { dim: d, classes }))
    }

    /// Reads the aggregate Σ_k u_k: Q_j = Σ_k w_{k,y_j} p_k(·|x̃_j) / Σ_k w_{k,y_j}.
    /// Noise may make entries negative; they are clamped and rows renormalised.
    pub fn teacher(&self, sum: &[f64], prompt_class: &[u16]) -> Result<Teacher, ProtocolError> {
        let (s, c) = (self.samples, self.classes);
        if sum.len() != self.len() || prompt_class.len() != s {
            return Err(ProtocolError::Invalid {
                kind: "aggregate",
                reason: format!("{} values for a layout of {}", sum.len(), self.len()),
            });
        }
        let weights = &sum[s * c..];
        let mut probs = Vec::with_capacity(s * c);
        let mut reward = Vec::with_capacity(s);
        let mut support = Vec::with_capacity(s);
        for (row, &y) in sum[..s * c].chunks_exact(c).zip(prompt_class) {
            let w = weights.get(y as usize).copied().unwrap_or(0.0);
            support.push(w as f32);
            let clamped: Vec<f64> = row.iter().map(|v| v.max(0.0)).collect();
            let mass: f64 = clamped.iter().sum();
            let q: Vec<f32> = if mass > 1e-9 {
                clamped.iter().map(|v| (v / mass) as f32).collect()
            } else {
                vec![1.0 / c as f32; c]
            };
            reward.push(q.get(y as usize).copied().unwrap_or(0.0));
            probs.extend(q);
        }
        Ok(Teacher {
            probs,
            reward,
            support,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_is_the_share_weighted_ensemble() {
        let layout = UploadLayout {
            samples: 2,
            classes: 2,
            moments: 0,
        };
        let prompts = [0u16, 1];
        // Client A: all class 0; client B: 3 of class 0, 1 of class 1.
        let a = layout
            .build(&[0.8, 0.2, 0.6, 0.4], &prompts, &[10.0, 0.0], None)
            .unwrap();
        let b = layout
            .build(&[0.4, 0.6, 0.2, 0.8], &prompts, &[3.0, 1.0], None)
            .unwrap();
        assert_eq!(a.len(), layout.len());
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (*x + *y) as f64).collect();
        let t = layout.teacher(&sum, &prompts).unwrap();
        // Sample 0 (class 0): weights 1 and 0.75 → Q = (1·0.8 + 0.75·0.4) / 1.75.
        let q00 = (0.8 + 0.75 * 0.4) / 1.75;
        assert!((t.probs[0] - q00 as f32).abs() < 1e-6);
        assert!((t.reward[0] - q00 as f32).abs() < 1e-6);
        // Sample 1 (class 1): only B has class-1 data → Q = B's prediction.
        assert!((t.probs[3] - 0.8).abs() < 1e-6 && (t.reward[1] - 0.8).abs() < 1e-6);
        assert!((t.support[0] - 1.75).abs() < 1e-6);
        for u in [&a, &b] {
            let norm = u.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
            assert!(norm <= layout.l2_bound());
        }
    }

    #[test]
    fn no_support_gives_uniform_and_bad_shapes_are_errors() {
        let layout = UploadLayout {
            samples: 1,
            classes: 4,
            moments: 0,
        };
        let t = layout.teacher(&[0.0; 8], &[2]).unwrap();
        assert_eq!(t.probs, vec![0.25; 4]);
        assert!(layout.teacher(&[0.0; 7], &[2]).is_err());
        assert!(layout.build(&[0.25; 4], &[9], &[1.0; 4], None).is_err());
        assert!(layout.build(&[0.25; 3], &[0], &[1.0; 4], None).is_err());
    }

    #[test]
    fn moments_are_the_share_weighted_class_moments_of_the_contributors() {
        let layout = UploadLayout {
            samples: 1,
            classes: 2,
            moments: 2,
        };
        let prompts = [0u16];
        let clip = 4.0f32;
        // Client A: 2 records of class 0 with codes (4, 0) and (0, 4), none of class 1 (sums
        // of z/R and (z/R)² per class, as LatentCode::class_sums gives them).
        let a_sums = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let a = layout
            .build(&[0.5, 0.5], &prompts, &[2.0, 0.0], Some(&a_sums))
            .unwrap();
        // Client B: 2 records of class 0, both (2, 2), and 2 of class 1, both (-4, 0).
        let b_sums = [1.0, 1.0, 0.5, 0.5, -2.0, 0.0, 2.0, 0.0];
        let b = layout
            .build(&[0.5, 0.5], &prompts, &[2.0, 2.0], Some(&b_sums))
            .unwrap();
        // Client C shares no moments: its weights are zero, it changes nothing.
        let c = layout
            .build(&[0.5, 0.5], &prompts, &[1.0, 1.0], None)
            .unwrap();
        assert_eq!(a.len(), layout.len());
        for u in [&a, &b, &c] {
            let norm = u.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
            assert!(norm <= layout.l2_bound(), "{norm}");
        }
        let sum: Vec<f64> = (0..a.len()).map(|i| (a[i] + b[i] + c[i]) as f64).collect();
        let m = layout.moments(&sum, clip, 0.0).unwrap().unwrap();
        // Class 0: A (share 1) has mean (2, 2), E z² (8, 8); B (share 0.5) mean (2, 2), E z² (4, 4).
        let (mean, var) = m.classes[0].clone().unwrap();
        let want_m2 = (8.0 + 0.5 * 4.0) / 1.5;
        for k in 0..2 {
            assert!((mean[k] - 2.0).abs() < 1e-5, "{mean:?}");
            assert!((var[k] - (want_m2 - 4.0) as f32).abs() < 1e-4, "{var:?}");
        }
        // Class 1: only B: mean (−4, 0), variance 0.
        let (mean, var) = m.classes[1].clone().unwrap();
        assert!((mean[0] + 4.0).abs() < 1e-5 && mean[1].abs() < 1e-5);
        assert!(var.iter().all(|v| v.abs() < 1e-4));
        // Without support a class is left out; without a block there are no moments.
        let m = layout.moments(&sum, clip, 0.6).unwrap().unwrap();
        assert!(m.classes[1].is_none() && m.classes[0].is_some());
        let plain = UploadLayout {
            moments: 0,
            ..layout
        };
        assert!(plain
            .moments(&sum[..plain.len()], clip, 0.0)
            .unwrap()
            .is_none());
        assert!(layout.moments(&sum[1..], clip, 0.0).is_err());
        assert!(layout
            .build(&[0.5, 0.5], &prompts, &[2.0, 0.0], Some(&a_sums[1..]))
            .is_err());
    }
}
