//! The two roles of a FedMMKT round as plain functions over protocol messages: the host
//! (generate, aggregate, improve) and the client (learn, judge). The simulation and the
//! network node drive the same code.

pub mod client;
pub mod host;
pub mod pretrain_cache;

pub use client::{Client, ClientConfig};
pub use host::{Host, HostConfig, RoundOutcome};
pub use pretrain_cache::{pretrained_host, PretrainCache, Pretraining};
