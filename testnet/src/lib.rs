//! The local fedmmkt testnet: N real `fedmmkt` node processes on loopback, with injected
//! faults, invariant checks, a report and an optional live dashboard (`fedmmkt-testnet up`),
//! and the same run at several sizes (`fedmmkt-testnet scale`).

pub mod cluster;
pub mod dashboard;
pub mod evaluate;
pub mod faults;
pub mod record;
pub mod report;
pub mod scale;
pub mod up;
