//! fedmmkt node: the round roles, the in-process simulation, reports and the CLI.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
/// Every decoder fed by a peer or a file, behind one entry point for the fuzz targets.
pub mod fuzzing;
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
