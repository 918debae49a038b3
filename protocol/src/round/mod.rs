//! Sans-IO bookkeeping of one round over the network: which messages a host or client accepts
//! (term, round, sender), which stage it is in, and when a stage may close. The node feeds it
//! events and carries out what it decides; the secure-aggregation crypto lives in `privacy`.

pub mod client;
pub mod host;

pub use client::{ClientRound, OfferDecision, SecAggDelivery};
pub use host::{HostRound, HostStage};

use serde::{Deserialize, Serialize};

/// Fewest contributors besides the host whose inputs a released sum must hold: with one, the
/// host could subtract its own input and read that one node's upload.
pub const MIN_OTHER_CONTRIBUTORS: usize = 2;

/// Fewest contributors (the host included) a round is offered to.
pub const MIN_CONTRIBUTORS: usize = MIN_OTHER_CONTRIBUTORS + 1;

/// Fewest noise shares in a released sum that the host does not know, for a round with
/// secure-aggregation `threshold`: a sum holds at least `threshold` inputs, and a host that
/// contributes knows its own share, but the host releases no sum with fewer than
/// [`MIN_OTHER_CONTRIBUTORS`] others. Distributed noise is calibrated to this many shares.
pub fn noise_shares_unknown_to_host(threshold: u32, host_contributes: bool) -> u32 {
    let others = MIN_OTHER_CONTRIBUTORS as u32;
    if host_contributes {
        threshold.saturating_sub(1).max(others)
    } else {
        threshold.max(others)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contributing_host_knows_its_own_noise_share() {
        // 3 contributors, threshold 2: the host plus at least two others are in every sum.
        assert_eq!(noise_shares_unknown_to_host(2, true), 2);
        assert_eq!(noise_shares_unknown_to_host(3, true), 2);
        assert_eq!(noise_shares_unknown_to_host(6, true), 5);
        assert_eq!(noise_shares_unknown_to_host(6, false), 6);
        assert_eq!(noise_shares_unknown_to_host(2, false), 2);
    }
}

/// Who a round message had to come from (see [`RoundError::WrongSender`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sender {
    /// The host this node's election recognises.
    CurrentHost,
    /// The host of the round this node is in.
    RoundHost,
    /// A participant of the round.
    Participant,
    /// A host whose offer lists this node.
    InvitingHost,
    /// A member the host sent the round's checkpoint to.
    CheckpointTarget,
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sender::CurrentHost => "the current host",
            Sender::RoundHost => "the host of this round",
            Sender::Participant => "a participant of this round",
            Sender::InvitingHost => "a host that invited this node",
            Sender::CheckpointTarget => "a member the checkpoint was sent to",
        })
    }
}

/// What arrived in a state that does not accept it (see [`RoundError::Unexpected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unexpected {
    /// A secure-aggregation message after the aggregation closed.
    SecAggMessage,
    /// A secure-aggregation message while this client is in no round.
    SecAggOutsideRound,
    /// More held messages than a host sends in a round.
    HeldFlood,
    /// An upload in the clear in a round that uses secure aggregation.
    PlainUpload,
}

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unexpected::SecAggMessage => "secure-aggregation message",
            Unexpected::SecAggOutsideRound => "secure-aggregation message outside a round",
            Unexpected::HeldFlood => "flood of held messages",
            Unexpected::PlainUpload => "upload in the clear",
        })
    }
}

/// Why a round message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RoundError {
    /// The sender is not the current host / not a participant of this round.
    #[error("sender is not {0}")]
    WrongSender(Sender),
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
    /// The message belongs to another attempt at this round (the host retried it).
    #[error("message of attempt {got}, current attempt is {current}")]
    WrongAttempt {
        /// Attempt in the message.
        got: u32,
        /// The receiver's attempt.
        current: u32,
    },
    /// The round was already completed or uploaded to: never twice.
    #[error("round {0} was already completed or answered")]
    AlreadyDone(u64),
    /// Too few inputs besides the host's reached the sum: unmasking it would expose one node.
    #[error("only {others} contributor(s) besides the host sent a masked input; at least {MIN_OTHER_CONTRIBUTORS} are needed to release a sum")]
    TooFewContributors {
        /// Contributors other than the host whose masked input arrived.
        others: usize,
    },
    /// The receiver is not in a state that accepts this message.
    #[error("unexpected {0} in this state")]
    Unexpected(Unexpected),
}
