//! fedmmkt node: the round roles, the in-process simulation, reports and the CLI.

pub mod cli;
pub mod report;
pub mod round;
pub mod simulate;
