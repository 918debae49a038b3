//! A client's side of the round: which host messages it acts on, and holding back the
//! message that needs its upload until the upload is ready.

use super::{RoundError, Sender, Unexpected};
use crate::wire::{PeerBytes, RoundOffer};

/// What to do with an offer that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDecision {
    /// Join as secure-aggregation client `id`.
    Join {
        /// This client's id in the round.
        id: u32,
    },
    /// The same offer again (a retransmission): acknowledge, do nothing.
    Duplicate,
}

/// What to do with a host's secure-aggregation message `M`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecAggDelivery<M = Vec<u8>> {
    /// Hand these messages to the secure-aggregation client now, in order.
    Now(Vec<M>),
    /// Held until the upload is ready.
    Held,
}

#[derive(Debug, Clone)]
struct Engaged<M> {
    term: u64,
    round: u64,
    attempt: u32,
    host: PeerBytes,
    id: u32,
    input_ready: bool,
    held: Vec<M>,
}

/// The facts about this node an offer is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    /// This node's PeerId bytes.
    pub me: &'a [u8],
    /// The host this node's election recognises, if any.
    pub leader: Option<&'a [u8]>,
    /// This node's current term.
    pub term: u64,
    /// The last round this node holds a checkpoint of.
    pub last_completed: u64,
}

/// Most held messages (a host sends one message per stage).
const MAX_HELD: usize = 4;

/// A client's bookkeeping across round attempts; it holds the host's messages `M` that must
/// wait for the upload (the decoded messages in a session, their bytes in tests).
#[derive(Debug, Clone)]
pub struct ClientRound<M = Vec<u8>> {
    engaged: Option<Engaged<M>>,
}

impl<M> Default for ClientRound<M> {
    fn default() -> Self {
        Self { engaged: None }
    }
}

impl<M: PartialEq> ClientRound<M> {
    /// A client in no round.
    pub fn new() -> Self {
        Self::default()
    }

    /// (term, round, id) of the attempt this client is in.
    pub fn engaged(&self) -> Option<(u64, u64, u32)> {
        self.engaged.as_ref().map(|e| (e.term, e.round, e.id))
    }

    /// The attempt number of the round this client is in.
    pub fn attempt(&self) -> Option<u32> {
        self.engaged.as_ref().map(|e| e.attempt)
    }

    /// The host of the attempt this client is in.
    pub fn host(&self) -> Option<&[u8]> {
        self.engaged.as_ref().map(|e| e.host.as_slice())
    }

    /// Checks an offer from `from`; `answered` says whether this node already uploaded to or
    /// abstained from this (term, round, attempt) (from its durable store: a restart must not answer twice).
    pub fn offer(
        &mut self,
        from: &[u8],
        offer: &RoundOffer,
        view: ClientView<'_>,
        answered: bool,
    ) -> Result<OfferDecision, RoundError> {
        if view.leader != Some(from) {
            return Err(RoundError::WrongSender(Sender::CurrentHost));
        }
        if offer.term != view.term {
            return Err(RoundError::WrongTerm {
                got: offer.term,
                current: view.term,
            });
        }
        let round = offer.start.round;
        if round <= view.last_completed {
            return Err(RoundError::AlreadyDone(round));
        }
        if let Some(e) = &self.engaged {
            if (e.term, e.round, e.attempt) == (offer.term, round, offer.attempt) {
                return Ok(OfferDecision::Duplicate);
            }
        }
        if answered {
            return Err(RoundError::AlreadyDone(round));
        }
        let id = offer
            .participants
            .iter()
            .position(|p| p.peer.as_slice() == view.me)
            .ok_or(RoundError::WrongSender(Sender::InvitingHost))? as u32;
        self.engaged = Some(Engaged {
            term: offer.term,
            round,
            attempt: offer.attempt,
            host: from.to_vec(),
            id,
            input_ready: false,
            held: Vec::new(),
        });
        Ok(OfferDecision::Join { id })
    }

    /// Checks a host's secure-aggregation message; one that `needs_input` is held until
    /// [`ClientRound::input_ready`].
    pub fn secagg(
        &mut self,
        from: &[u8],
        term: u64,
        round: u64,
        payload: M,
        needs_input: bool,
    ) -> Result<SecAggDelivery<M>, RoundError> {
        let e = self.check(from, term, round)?;
        if needs_input && !e.input_ready {
            if e.held.contains(&payload) {
                // A retransmission of a message already held: deliver it once.
                return Ok(SecAggDelivery::Held);
            }
            if e.held.len() >= MAX_HELD {
                return Err(RoundError::Unexpected(Unexpected::HeldFlood));
            }
            e.held.push(payload);
            return Ok(SecAggDelivery::Held);
        }
        Ok(SecAggDelivery::Now(vec![payload]))
    }

    /// The upload is set: returns the held messages to deliver now.
    pub fn input_ready(&mut self, term: u64, round: u64) -> Vec<M> {
        match &mut self.engaged {
            Some(e) if (e.term, e.round) == (term, round) => {
                e.input_ready = true;
                std::mem::take(&mut e.held)
            }
            _ => Vec::new(),
        }
    }

    /// Checks a checkpoint transfer: only the current host of the current term may send one.
    pub fn checkpoint(
        &self,
        from: &[u8],
        term: u64,
        round: u64,
        view: ClientView<'_>,
    ) -> Result<(), RoundError> {
        if view.leader != Some(from) {
            return Err(RoundError::WrongSender(Sender::CurrentHost));
        }
        if term != view.term {
            return Err(RoundError::WrongTerm {
                got: term,
                current: view.term,
            });
        }
        if round <= view.last_completed {
            return Err(RoundError::AlreadyDone(round));
        }
        Ok(())
    }

    /// Leaves the current attempt (completed, or abandoned after a host change).
    pub fn leave(&mut self) {
        self.engaged = None;
    }

    fn check(&mut self, from: &[u8], term: u64, round: u64) -> Result<&mut Engaged<M>, RoundError> {
        let e = self
            .engaged
            .as_mut()
            .ok_or(RoundError::Unexpected(Unexpected::SecAggOutsideRound))?;
        if e.host.as_slice() != from {
            return Err(RoundError::WrongSender(Sender::RoundHost));
        }
        if e.term != term {
            return Err(RoundError::WrongTerm {
                got: term,
                current: e.term,
            });
        }
        if e.round != round {
            return Err(RoundError::WrongRound {
                got: round,
                expected: e.round,
            });
        }
        Ok(e)
    }
}
