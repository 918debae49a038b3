//! Why a node refused a peer's request: one typed reason, sent back in
//! [`crate::wire::Response::Rejected`], logged by the refuser and countable per peer.

use serde::{Deserialize, Serialize};

use crate::round::RoundError;
use crate::wire::Kind;
use crate::ProtocolError;

/// Longest free-text detail a refusal carries (responses are small and bounded).
pub const MAX_DETAIL_CHARS: usize = 240;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The sender is not on the member list.
    #[error("not a member")]
    NotMember,
    /// The sender exceeded its request rate.
    #[error("rate limited")]
    RateLimited,
    /// This node's role does not take this kind of request (e.g. an offer sent to the host).
    #[error("a {0:?} request is not for this node's role")]
    WrongRole(Kind),
    /// No round is in progress that the request could belong to.
    #[error("no round in progress")]
    NoRound,
    /// The round bookkeeping refused it (sender, term, round, attempt, state).
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The message is malformed or inconsistent.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// Secure aggregation refused the message.
    #[error("secure aggregation: {0}")]
    SecAgg(String),
    /// An offer lists a participant whose identity key does not derive its PeerId.
    #[error("a participant's identity key does not match its PeerId")]
    ForeignIdentity,
    /// A checkpoint whose bytes do not hash to its content address.
    #[error("checkpoint does not match its hash")]
    CheckpointHash,
    /// A checkpoint delta whose base this node does not hold (the sender's view of it was
    /// stale; not an offence: the sender falls back to another member or the full checkpoint).
    #[error("this node does not hold the delta's base checkpoint")]
    MissingBase,
    /// A fetch for a checkpoint this node does not hold (the asker's view was stale).
    #[error("this node does not hold that checkpoint")]
    NotHeld,
    /// This node failed to act on a valid request (its store, its model); not the peer's fault.
    #[error("this node could not act on it: {0}")]
    Local(String),
}

impl Refusal {
    /// True when the refusal is the sender's fault (what a per-peer offence count counts).
    pub fn is_offence(&self) -> bool {
        !matches!(
            self,
            Refusal::Local(_) | Refusal::RateLimited | Refusal::MissingBase | Refusal::NotHeld
        )
    }

    /// A local failure, with its message cut to [`MAX_DETAIL_CHARS`].
    pub fn local(e: impl std::fmt::Display) -> Self {
        Refusal::Local(detail(e))
    }
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal::Invalid(detail(e))
    }
}

impl From<privacy::secagg::SecAggError> for Refusal {
    fn from(e: privacy::secagg::SecAggError) -> Self {
        Refusal::SecAgg(detail(e))
    }
}

/// `e`'s message, cut at a character boundary to [`MAX_DETAIL_CHARS`].
fn detail(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    match s.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::Sender;
    use crate::wire::{self, Response, MAX_RESPONSE_BYTES};

    #[test]
    fn every_refusal_round_trips_within_the_response_limit() {
        let long = "x".repeat(10_000);
        for r in [
            Refusal::NotMember,
            Refusal::RateLimited,
            Refusal::WrongRole(Kind::Offer),
            Refusal::NoRound,
            Refusal::Round(RoundError::WrongSender(Sender::CurrentHost)),
            Refusal::Round(RoundError::WrongAttempt { got: 2, current: 1 }),
            Refusal::from(ProtocolError::Malformed(long.clone())),
            Refusal::local(&long),
            Refusal::CheckpointHash,
        ] {
            let resp = Response::Rejected(r.clone());
            let bytes = wire::encode(&resp).unwrap();
            assert!(bytes.len() <= MAX_RESPONSE_BYTES, "{} bytes", bytes.len());
            assert_eq!(
                wire::decode::<Response>(&bytes, MAX_RESPONSE_BYTES).unwrap(),
                resp
            );
        }
        assert!(Refusal::NotMember.is_offence() && !Refusal::local("disk").is_offence());
    }
}
