//! The client's flat upload vector and the host's reading of the aggregate (their sum).
//!
//! Layout for S synthetic samples and C classes: S rows of C values
//! `w_{k,y_j} · p_k(·|x̃_j)`, then the C weights `w_{k,·}`, where `w_{k,c} = n_{k,c} / N_k` is the
//! share of class c in client k's data. Shares rather than raw counts keep every upload's L2
//! norm below `sqrt(S + 1)`, a bound the privacy layer can clip to without knowing the data.

use crate::error::ProtocolError;

/// Shape of the upload vector of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLayout {
    /// Synthetic samples judged.
    pub samples: usize,
    /// Classes.
    pub classes: usize,
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
    /// Length of the flat vector.
    pub fn len(&self) -> usize {
        self.samples * self.classes + self.classes
    }

    /// True for a degenerate zero-length layout.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// L2 norm no honest upload exceeds (each row has norm ≤ its weight ≤ 1; shares sum to 1).
    pub fn l2_bound(&self) -> f64 {
        ((self.samples + 1) as f64).sqrt()
    }

    /// Builds a client's upload from its predictions (`samples * classes`), the prompted
    /// class of each sample, and its class counts (exact, or as released under DP).
    pub fn build(
        &self,
        preds: &[f32],
        prompt_class: &[u16],
        counts: &[f64],
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
        Ok(out)
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
        };
        let prompts = [0u16, 1];
        // Client A: all class 0; client B: 3 of class 0, 1 of class 1.
        let a = layout
            .build(&[0.8, 0.2, 0.6, 0.4], &prompts, &[10.0, 0.0])
            .unwrap();
        let b = layout
            .build(&[0.4, 0.6, 0.2, 0.8], &prompts, &[3.0, 1.0])
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
        };
        let t = layout.teacher(&[0.0; 8], &[2]).unwrap();
        assert_eq!(t.probs, vec![0.25; 4]);
        assert!(layout.teacher(&[0.0; 7], &[2]).is_err());
        assert!(layout.build(&[0.25; 4], &[9], &[1.0; 4]).is_err());
        assert!(layout.build(&[0.25; 3], &[0], &[1.0; 4]).is_err());
    }
}
