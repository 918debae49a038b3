//! The round as sans-IO sessions, one per role: [`HostSession`] (the round bookkeeping and
//! the secure-aggregation aggregator) and [`ClientSession`] (the client bookkeeping, the
//! secure-aggregation client and the attempt). Each takes events and returns effects; the node
//! carries them out over libp2p and the simulation over an in-memory transport, so both run
//! this one round. [`policy`] holds the timing and quorum rules, [`release`] the one path by
//! which a client's upload leaves it (charge, noise, clamp), [`training`] the one path by
//! which its private records are trained on under record-level DP, [`catch_up`] how a member
//! the host did not send a checkpoint to fetches it from a holder.

pub mod catch_up;
pub mod client;
pub mod host;
pub mod policy;
pub mod release;
pub mod training;

pub use catch_up::{CatchUp, CatchUpPolicy, Fetch};
pub use client::{ClientEffect, ClientSession, ReleasePlan};
pub use host::{HostEffect, HostSession, OpenRound, Replication};
pub use policy::{neighbours, RoundPolicy, StartRule, COMPLETE_GRAPH_UP_TO};
pub use release::{PrivacyPlan, Release, Releaser};
pub use training::{Permit, RecordPlan, RecordTrainer};
