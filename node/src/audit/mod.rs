//! Empirical privacy audits of the node's training pipeline.

pub mod canary;
