//! Text encoders: captions to unit-length embedding vectors the generator and clients share.

mod bow;
mod minilm;

pub use bow::BowTextEncoder;
pub use minilm::MiniLmEncoder;

use crate::error::Result;

/// Maps captions to fixed-size unit vectors; frozen (never trained by fedmmkt).
pub trait TextEncoder: Send + Sync {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// Embeds each text; returns `texts.len() * dim()` values, one unit vector per text.
    fn encode(&self, texts: &[String]) -> Result<Vec<f32>>;
    /// A short name for reports.
    fn name(&self) -> String;
}
