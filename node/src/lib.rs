//! fedmmkt node: the round roles, the in-process simulation, reports and the CLI.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod learn;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod report;
pub mod run;
pub mod simulate;
pub mod store;
pub mod world;
