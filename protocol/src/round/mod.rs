//! Sans-IO bookkeeping of one round over the network: which messages a host or client accepts
//! (term, round, sender), which stage it is in, and when a stage may close. The node feeds it
//! events and carries out what it decides; the secure-aggregation crypto lives in `privacy`.

pub mod client;
pub mod host;

pub use client::{ClientRound, OfferDecision, SecAggDelivery};
pub use host::{HostRound, HostStage};

/// Why a round message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundError {
    /// The sender is not the current host / not a participant of this round.
    #[error("sender is not {0}")]
    WrongSender(&'static str),
    /// The message belongs to another term.
    #[error("message of term {got}, current term is {current}")]
    WrongTerm {
        /// Term in the message.
        got: u64,
        /// The receiver's term.
        current: u64,
    },
    /// The message belongs to another round (a replay or a stale message).
    #[error("message of round {got}, expected round {expected}")]
    WrongRound {
        /// Round in the message.
        got: u64,
        /// Round the receiver is in.
        expected: u64,
    },
    /// The round was already completed or uploaded to: never twice.
    #[error("round {0} was already completed or answered")]
    AlreadyDone(u64),
    /// The receiver is not in a state that accepts this message.
    #[error("unexpected {0} in this state")]
    Unexpected(&'static str),
}
