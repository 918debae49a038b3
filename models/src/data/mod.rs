//! Datasets: IDX parsing, the embedded default, deterministic splits and captions.

pub mod captions;
pub mod dataset;
pub mod idx;
pub mod split;

pub use dataset::{DataSource, Dataset};
pub use split::{dirichlet_partition, SplitConfig, Splits};
