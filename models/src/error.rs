//! The models crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading data, building models or training them.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, bad checkpoint, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// An IDX file is malformed, truncated or does not match its partner.
    #[error("{path}: invalid IDX data: {reason}")]
    Idx {
        /// The file concerned (or `<embedded>`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A dataset directory lacks files or holds inconsistent ones.
    #[error("dataset: {0}")]
    Dataset(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
