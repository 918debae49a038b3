//! Election wire messages, the durable state, and the actions the machine asks its driver for.

use serde::{Deserialize, Serialize};

use super::capability::Capability;

/// A message between members during host election; every variant carries the sender's term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionMessage<N> {
    /// Candidate → all: vote for me in `term`; carries what voters need to judge me.
    RequestVote {
        /// Term the candidate stands in.
        term: u64,
        /// The candidate; must equal the sender.
        candidate: N,
        /// The candidate's hosting capability, for the preference rule.
        capability: Capability,
        /// Last FL round whose checkpoint the candidate holds, for the up-to-date rule.
        last_completed_round: u64,
    },
    /// Voter → candidate: the answer to a `RequestVote` (or the voter's newer term).
    Vote {
        /// The voter's current term.
        term: u64,
        /// The voter; must equal the sender.
        voter: N,
        /// Whether the vote was given to the candidate.
        granted: bool,
    },
    /// Leader → all, every `heartbeat_ticks`: I host `term`; keeps followers from standing.
    Heartbeat {
        /// The leader's term.
        term: u64,
        /// The leader; must equal the sender.
        leader: N,
        /// The leader's capability, so followers keep it fresh in their view.
        capability: Capability,
        /// Last FL round whose checkpoint the leader holds.
        last_completed_round: u64,
    },
    /// Follower → leader: reply to a heartbeat, so the leader can check it still has a quorum.
    HeartbeatAck {
        /// The follower's current term (higher than the heartbeat's if that leader is stale).
        term: u64,
        /// The follower; must equal the sender.
        from: N,
        /// The follower's capability, so the leader learns its peers.
        capability: Capability,
        /// Last FL round whose checkpoint the follower holds.
        last_completed_round: u64,
    },
    /// Would-be candidate → all (Raft §9.6 pre-vote): would you vote for me in `term`? Asked
    /// before standing, so a node that cannot win never raises anyone's term, its own included.
    PreVote {
        /// The term the sender would stand in: its current term plus one.
        term: u64,
        /// The would-be candidate; must equal the sender.
        candidate: N,
        /// Its hosting capability, for the preference rule.
        capability: Capability,
        /// Last FL round whose checkpoint it holds, for the up-to-date rule.
        last_completed_round: u64,
    },
    /// Voter → would-be candidate: the answer to a `PreVote`; changes neither side's term or vote.
    PreVoteReply {
        /// The term the pre-vote asked about (echoed, never adopted by the receiver).
        term: u64,
        /// The voter; must equal the sender.
        voter: N,
        /// Whether the voter would grant its vote in `term`.
        granted: bool,
    },
}

impl<N> ElectionMessage<N> {
    /// The term the message is about: the sender's, or for pre-votes the one it would stand in.
    pub fn term(&self) -> u64 {
        match self {
            Self::RequestVote { term, .. }
            | Self::Vote { term, .. }
            | Self::Heartbeat { term, .. }
            | Self::HeartbeatAck { term, .. }
            | Self::PreVote { term, .. }
            | Self::PreVoteReply { term, .. } => *term,
        }
    }

    /// The node the message says it is from; the machine checks it against the transport's sender.
    pub fn claimed_sender(&self) -> &N {
        match self {
            Self::RequestVote { candidate, .. } => candidate,
            Self::Vote { voter, .. } => voter,
            Self::Heartbeat { leader, .. } => leader,
            Self::HeartbeatAck { from, .. } => from,
            Self::PreVote { candidate, .. } => candidate,
            Self::PreVoteReply { voter, .. } => voter,
        }
    }

    /// The sender's advertised capability and last completed round (every kind but `Vote`).
    pub fn advertised(&self) -> Option<(Capability, u64)> {
        match self {
            Self::RequestVote {
                capability,
                last_completed_round,
                ..
            }
            | Self::Heartbeat {
                capability,
                last_completed_round,
                ..
            }
            | Self::HeartbeatAck {
                capability,
                last_completed_round,
                ..
            }
            | Self::PreVote {
                capability,
                last_completed_round,
                ..
            } => Some((*capability, *last_completed_round)),
            Self::Vote { .. } | Self::PreVoteReply { .. } => None,
        }
    }
}

/// State that must survive restarts, or a restarted node could vote twice in one term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persistent<N> {
    /// Latest term this node has seen.
    pub term: u64,
    /// Whom this node voted for in `term`, if anyone.
    pub voted_for: Option<N>,
}

impl<N> Default for Persistent<N> {
    fn default() -> Self {
        Self {
            term: 0,
            voted_for: None,
        }
    }
}

/// What the machine asks its driver to do; carry them out in order.
///
/// Ordering contract: when a call changed the term or the vote, its returned `Vec` starts with
/// exactly one [`Action::Persist`], and the driver must have written it durably before it
/// carries out any `Send`/`Broadcast` that follows; otherwise a crash could let this node
/// vote twice in one term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<N> {
    /// Write this state durably before carrying out any later action of the same `Vec`.
    Persist(Persistent<N>),
    /// Send `msg` to one member.
    Send {
        /// The recipient.
        to: N,
        /// The message.
        msg: ElectionMessage<N>,
    },
    /// Send the message to every member except this node.
    Broadcast(ElectionMessage<N>),
    /// This node now hosts `term`: start (or resume) the generator from the last completed round.
    BecameLeader {
        /// The term this node leads.
        term: u64,
    },
    /// This node hosted `term` and no longer does: stop hosting now.
    SteppedDown {
        /// The term this node led.
        term: u64,
    },
    /// This node's view of the host changed (`None`: no known host in `term` yet).
    LeaderChanged {
        /// The node's current term.
        term: u64,
        /// The host of `term` as far as this node knows.
        leader: Option<N>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_postcard() {
        let msgs = vec![
            ElectionMessage::RequestVote {
                term: 7,
                candidate: 3u32,
                capability: Capability::new(true, 24_000),
                last_completed_round: 12,
            },
            ElectionMessage::Vote {
                term: 7,
                voter: 1,
                granted: true,
            },
            ElectionMessage::Heartbeat {
                term: u64::MAX,
                leader: 3,
                capability: Capability::default(),
                last_completed_round: 0,
            },
            ElectionMessage::HeartbeatAck {
                term: 8,
                from: 2,
                capability: Capability::new(false, 8_000),
                last_completed_round: 11,
            },
            ElectionMessage::PreVote {
                term: 9,
                candidate: 4,
                capability: Capability::new(true, 16_000),
                last_completed_round: 11,
            },
            ElectionMessage::PreVoteReply {
                term: 9,
                voter: 1,
                granted: false,
            },
        ];
        for m in msgs {
            let bytes = postcard::to_allocvec(&m).unwrap();
            let back: ElectionMessage<u32> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, m);
        }
        let p = Persistent {
            term: 4,
            voted_for: Some("peer-a".to_string()),
        };
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(
            postcard::from_bytes::<Persistent<String>>(&bytes).unwrap(),
            p
        );
    }

    #[test]
    fn garbage_bytes_do_not_decode_into_a_message() {
        assert!(postcard::from_bytes::<ElectionMessage<u32>>(&[0xff, 0xff, 0xff]).is_err());
        assert!(postcard::from_bytes::<ElectionMessage<u32>>(&[]).is_err());
    }
}
