//! The in-process simulation: every node's role run in one process over the same round code
//! the network node uses, for methods, baselines and ablations, with reports.

pub mod baselines;
pub mod config;
pub mod dp;
pub mod fedavg;
pub mod federation;
pub mod run;
pub mod setup;

pub use config::{
    run_name, Ablation, DpConfig, FedAvgConfig, Method, SimConfig, TextEncoderKind, COMPARE_RUNS,
};
pub use run::{
    client_archs, client_data, learner_config, local_reference, run, RoundReport, RunImages,
    RunReport,
};
pub use setup::Setup;
