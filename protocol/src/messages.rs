//! The messages of one FedMMKT round, as they travel between host and clients.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Version of the wire format; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 2;

/// Most synthetic samples one round may carry.
pub const MAX_SAMPLES: usize = 8192;
/// Most classes a round may declare.
pub const MAX_CLASSES: usize = 256;
/// Widest caption embedding accepted.
pub const MAX_EMB_DIM: usize = 1024;
/// Largest image side accepted.
pub const MAX_SIDE: usize = 256;

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
