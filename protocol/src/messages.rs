//! The messages of one FedMMKT round, as they travel between host and clients.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Version of the wire format; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 5;

/// Most synthetic samples one round may carry.
pub const MAX_SAMPLES: usize = 8192;
/// Most classes a round may declare.
pub const MAX_CLASSES: usize = 256;
/// Widest caption embedding accepted.
pub const MAX_EMB_DIM: usize = 1024;
/// Largest image side accepted.
pub const MAX_SIDE: usize = 256;
/// Widest latent code accepted.
pub const MAX_LATENT_DIM: usize = 256;

/// The host's downlink: round r's synthetic set and the teacher targets of round r−1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStart {
    /// Round number, starting at 1.
    pub round: u64,
    /// Image side in pixels (images are square, grayscale).
    pub side: u16,
    /// Number of classes.
    pub classes: u16,
    /// Caption embedding width.
    pub emb_dim: u16,
    /// Synthetic images, `samples * side * side` bytes.
    pub images: Vec<u8>,
    /// Class each sample was prompted with.
    pub prompt_class: Vec<u16>,
    /// Caption template each sample was prompted with.
    pub prompt_template: Vec<u16>,
    /// Caption embeddings E(t_j), `samples * emb_dim` values.
    pub text_emb: Vec<f32>,
    /// Teacher targets for the previous round's kept samples, if any.
    pub teacher: Option<TeacherTargets>,
    /// The generator's latent code, when the host asks the clients for the per-class moments
    /// of their real images in it (see [`crate::UploadLayout`]).
    pub latent: Option<LatentCode>,
}

/// The generator's whitened PCA code, `z = ((x − mean) · basis) / scale` for an image `x` with
/// pixels in [-1, 1], and the clip of each record's code: what a client needs to summarise its
/// real images, class by class, in the space the generator samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentCode {
    /// Width d of the code.
    pub dim: u16,
    /// Mean image, `side * side` values.
    pub mean: Vec<f32>,
    /// Basis, `side * side * dim` values (row-major: pixel by component).
    pub basis: Vec<f32>,
    /// Scale of each component, `dim` positive values.
    pub scale: Vec<f32>,
    /// L2 radius R each record's code is clipped to before it enters a sum.
    pub clip: f32,
}

/// The ensemble teacher Q_{r} for the samples of round r that passed the filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherTargets {
    /// The round whose synthetic set these indices refer to.
    pub round: u64,
    /// Indices of the kept samples in that round's synthetic set.
    pub kept: Vec<u32>,
    /// Teacher distributions, `kept.len() * classes` values, rows summing to one.
    pub probs: Vec<f32>,
}

/// Why a client sits a round out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbstainReason {
    /// Its release would exceed the node's privacy budget.
    BudgetExhausted,
    /// Its disk is too full to make the release's ledger entry durable first.
    StorageFull,
}

fn invalid(kind: &'static str, reason: String) -> ProtocolError {
    ProtocolError::Invalid { kind, reason }
}

impl RoundStart {
    /// Number of synthetic samples.
    pub fn samples(&self) -> usize {
        self.prompt_class.len()
    }

    /// Checks every length and range, so a client can use the message without further checks.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let k = "RoundStart";
        let (side, classes, emb) = (
            self.side as usize,
            self.classes as usize,
            self.emb_dim as usize,
        );
        let n = self.samples();
        if self.round == 0 {
            return Err(invalid(k, "round 0 does not exist".into()));
        }
        if side == 0
            || side > MAX_SIDE
            || !(2..=MAX_CLASSES).contains(&classes)
            || emb == 0
            || emb > MAX_EMB_DIM
        {
            return Err(invalid(
                k,
                format!("side {side}, classes {classes}, emb_dim {emb} out of range"),
            ));
        }
        if n == 0 || n > MAX_SAMPLES {
            return Err(invalid(
                k,
                format!("{n} samples (allowed 1..={MAX_SAMPLES})"),
            ));
        }
        if self.images.len() != n * side * side {
            return Err(invalid(
                k,
                format!(
                    "{} image bytes for {n} samples of {side}x{side}",
                    self.images.len()
                ),
            ));
        }
        if self.prompt_template.len() != n || self.text_emb.len() != n * emb {
            return Err(invalid(
                k,
                "prompt templates or embeddings do not match the sample count".into(),
            ));
        }
        if self.prompt_class.iter().any(|&c| c as usize >= classes) {
            return Err(invalid(k, "a prompt class is out of range".into()));
        }
        if self.text_emb.iter().any(|v| !v.is_finite()) {
            return Err(invalid(k, "non-finite text embedding".into()));
        }
        if let Some(t) = &self.teacher {
            t.validate(classes, self.round)?;
        }
        if let Some(code) = &self.latent {
            code.validate(side * side)?;
        }
        Ok(())
    }

    /// Width of the latent code the round asks moments in (0: none asked).
    pub fn latent_dim(&self) -> usize {
        self.latent.as_ref().map_or(0, |c| c.dim as usize)
    }
}

impl LatentCode {
    /// Per class, the sums Σ z/R and Σ (z/R)² over the images of that class (`classes * 2d`
    /// values: d first moments, then d second moments), each image's code z clipped to L2
    /// norm R first. `images` holds `labels.len()` images of the code's pixel count, and every
    /// label is below `classes` (the caller's own, validated data).
    pub fn class_sums(&self, images: &[u8], labels: &[u8], classes: usize) -> Vec<f64> {
        let d = self.dim as usize;
        let p = self.mean.len();
        let r = self.clip as f64;
        let mut sums = vec![0f64; classes * 2 * d];
        let mut z = vec![0f64; d];
        for (img, &y) in images.chunks_exact(p).zip(labels) {
            z.iter_mut().for_each(|v| *v = 0.0);
            for (i, &px) in img.iter().enumerate() {
                let x = (px as f32 / 127.5 - 1.0 - self.mean[i]) as f64;
                for (zk, b) in z.iter_mut().zip(&self.basis[i * d..(i + 1) * d]) {
                    *zk += x * *b as f64;
                }
            }
            for (zk, s) in z.iter_mut().zip(&self.scale) {
                *zk /= *s as f64;
            }
            let norm = z.iter().map(|v| v * v).sum::<f64>().sqrt();
            let f = if norm > r { 1.0 / norm } else { 1.0 / r };
            let Some(row) = sums.get_mut(y as usize * 2 * d..(y as usize + 1) * 2 * d) else {
                continue;
            };
            for k in 0..d {
                let u = z[k] * f;
                row[k] += u;
                row[d + k] += u * u;
            }
        }
        sums
    }

    /// Checks lengths and values against images of `pixels` pixels.
    pub fn validate(&self, pixels: usize) -> Result<(), ProtocolError> {
        let k = "LatentCode";
        let d = self.dim as usize;
        if d == 0 || d > MAX_LATENT_DIM {
            return Err(invalid(
                k,
                format!("width {d} (allowed 1..={MAX_LATENT_DIM})"),
            ));
        }
        if self.mean.len() != pixels || self.basis.len() != pixels * d || self.scale.len() != d {
            return Err(invalid(
                k,
                format!(
                    "mean {}, basis {}, scale {} values do not fit {pixels} pixels × {d}",
                    self.mean.len(),
                    self.basis.len(),
                    self.scale.len()
                ),
            ));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !(finite(&self.mean) && finite(&self.basis))
            || self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || !(self.clip.is_finite() && self.clip > 0.0)
        {
            return Err(invalid(
                k,
                "non-finite values, or a scale or clip that is not positive".into(),
            ));
        }
        Ok(())
    }
}

impl TeacherTargets {
    /// Checks the teacher against the class count and the round it must precede.
    pub fn validate(&self, classes: usize, current_round: u64) -> Result<(), ProtocolError> {
        let k = "TeacherTargets";
        if self.round == 0 || self.round >= current_round {
            return Err(invalid(
                k,
                format!(
                    "teacher of round {} sent in round {current_round}",
                    self.round
                ),
            ));
        }
        if self.kept.len() > MAX_SAMPLES || self.probs.len() != self.kept.len() * classes {
            return Err(invalid(
                k,
                format!(
                    "{} probabilities for {} kept samples",
                    self.probs.len(),
                    self.kept.len()
                ),
            ));
        }
        if self.kept.windows(2).any(|w| w[0] >= w[1])
            || self.kept.last().is_some_and(|&i| i as usize >= MAX_SAMPLES)
        {
            return Err(invalid(
                k,
                "kept indices must be strictly increasing and in range".into(),
            ));
        }
        for row in self.probs.chunks_exact(classes) {
            let s: f32 = row.iter().sum();
            if row.iter().any(|p| !p.is_finite() || *p < 0.0) || (s - 1.0).abs() > 1e-3 {
                return Err(invalid(
                    k,
                    "a teacher row is not a probability distribution".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod latent_tests {
    use super::*;

    /// A 2-pixel code of width 2: z = ((x − 0) · I) / (0.5, 1).
    fn code(clip: f32) -> LatentCode {
        LatentCode {
            dim: 2,
            mean: vec![0.0, 0.0],
            basis: vec![1.0, 0.0, 0.0, 1.0],
            scale: vec![0.5, 1.0],
            clip,
        }
    }

    #[test]
    fn class_sums_clip_each_code_and_sum_by_class() {
        // Pixels 255 and 0 are x = (1, −1): z = (2, −1), norm √5.
        let images = [255u8, 0, 255, 0, 0, 0];
        let labels = [0u8, 0, 1];
        let s = code(10.0).class_sums(&images, &labels, 2);
        let r = 10.0;
        let want0 = [4.0 / r, -2.0 / r, 2.0 * 4.0 / (r * r), 2.0 * 1.0 / (r * r)];
        for (got, want) in s[..4].iter().zip(want0) {
            assert!((got - want).abs() < 1e-9, "{s:?}");
        }
        // x = (−1, −1): z = (−2, −1).
        let want1 = [-2.0 / r, -1.0 / r, 4.0 / (r * r), 1.0 / (r * r)];
        for (got, want) in s[4..].iter().zip(want1) {
            assert!((got - want).abs() < 1e-9, "{s:?}");
        }
        // With R = 1 every code is scaled onto the unit sphere.
        let s = code(1.0).class_sums(&images[4..], &labels[2..], 2);
        let n = 5f64.sqrt();
        assert!((s[4] + 2.0 / n).abs() < 1e-9 && (s[5] + 1.0 / n).abs() < 1e-9);
        assert!(((s[6] + s[7]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_bad_latent_code_is_refused() {
        assert!(code(1.0).validate(2).is_ok());
        assert!(code(1.0).validate(3).is_err());
        for bad in [
            LatentCode {
                dim: 0,
                ..code(1.0)
            },
            LatentCode {
                scale: vec![0.5, 0.0],
                ..code(1.0)
            },
            LatentCode {
                basis: vec![1.0, 0.0, f32::NAN, 1.0],
                ..code(1.0)
            },
            LatentCode {
                clip: -1.0,
                ..code(1.0)
            },
            LatentCode {
                mean: vec![0.0],
                ..code(1.0)
            },
        ] {
            assert!(bad.validate(2).is_err(), "{bad:?}");
        }
    }
}
