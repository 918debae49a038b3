//! fedmmkt models: data (IDX, splits, captions), the frozen text encoder, the text-to-image
//! generator, heterogeneous client task models, losses, training loops and metrics.

pub mod classifier;
pub mod data;
pub mod dp_sgd;
pub mod error;
pub mod generator;
pub mod init;
pub mod knobs;
pub mod losses;
pub mod metrics;
pub mod oracle;
pub mod text;
pub mod train;

pub use error::{ModelError, Result};
