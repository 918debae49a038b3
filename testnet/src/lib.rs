//! The local fedmmkt testnet: N real `fedmmkt` node processes on loopback, with injected
//! faults, invariant checks and a report (`fedmmkt-testnet up`).

pub mod cluster;
pub mod evaluate;
pub mod faults;
pub mod record;
pub mod report;
pub mod up;
