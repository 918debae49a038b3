//! Host election: which member runs the FedMMKT generator, with at most one host per term.
//!
//! This is Raft's leader election (Ongaro & Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", USENIX ATC 2014): numbered terms, at most one persisted vote per term,
//! and a majority quorum of the fixed, known membership (§5.2), so two hosts of one term would
//! need two disjoint majorities. The up-to-date restriction (§5.4.1) compares
//! `last_completed_round` instead of the log: a voter refuses a candidate that holds an older
//! generator checkpoint than its own, so a new host holds the checkpoint of the last round an
//! old host counted complete (it counts a round complete only once a majority holds it).
//! Check-quorum (Ongaro's PhD thesis, 2014, §6): a leader that hears acks from no majority
//! within an election timeout steps down, so a host cut off in a minority stops hosting.
//! Pre-vote (§9.6): a node whose timer fires first asks whether a majority would vote for it,
//! without changing any term, and stands only if so; leader stickiness (§4.2.3): a node that
//! hears a live host ignores newer terms. Together a member that restarts, is partitioned away
//! or lies cannot depose a live, reachable host by inflating terms: a term is adopted only
//! once a majority would grant the vote. Terms more than `max_term_jump` ahead are refused.
//!
//! Capability preference (GPU, then memory, then id: [`rank`]) is layered on through the two
//! freedoms Raft leaves open, so safety never depends on it: *when* a node stands (its election
//! timeout grows by `rank_step_ticks` per fresh, better-ranked member, so the best node usually
//! times out first) and *whether* a voter grants (refusing is always safe). A voter refuses a
//! candidate while it knows a different member (itself included) that ranks strictly higher
//! and holds at least the candidate's round, heard from within `stale_ticks`. Knowledge of a
//! dead member goes stale, so a dead best node delays failover by at most `stale_ticks`.
//! Split votes: a candidate that sees a rival stand in its own term, and outranks it, stands
//! again at once instead of waiting out a timeout (a node may start an election at any time
//! without endangering safety; only the better rival does, so the two do not race).
//!
//! Sans-IO: the driver calls [`Election::tick`] at a fixed period, [`Election::handle`] for
//! each message and [`Election::observe`] for capability announcements heard by other means,
//! and carries out the returned [`Action`]s in order, persisting [`Action::Persist`] first.

mod capability;
mod messages;
mod state;

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use capability::{rank, Capability};
pub use messages::{Action, ElectionMessage, Persistent};
pub use state::{Election, ElectionConfig, PeerStatus, Role};

/// What a node id must support: ordered (for rank tie-breaks), hashable, and serializable.
pub trait NodeId: Clone + Ord + Eq + Hash + Debug + Serialize + DeserializeOwned {}

impl<T: Clone + Ord + Eq + Hash + Debug + Serialize + DeserializeOwned> NodeId for T {}

/// Why an election input was rejected; the machine's state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    /// The sender (or observed peer) is not in the fixed membership.
    #[error("sender is not a member of this election")]
    NotAMember,
    /// The membership given at construction is empty.
    #[error("the membership is empty")]
    EmptyMembership,
    /// This node's own id is missing from the membership given at construction.
    #[error("this node is not in the membership it was given")]
    SelfNotAMember,
    /// A message arrived "from" this node itself, which no correct transport delivers.
    #[error("a message claims to come from this node itself")]
    FromSelf,
    /// The id inside the message differs from the sender the transport authenticated.
    #[error("the message names a different node than the one that sent it")]
    SenderMismatch,
    /// Term 0 precedes every election, so no correct member sends a message in it.
    #[error("election messages in term 0 are invalid")]
    ZeroTerm,
    /// The message's term is further ahead of ours than `max_term_jump` (a liar's inflated term).
    #[error("term {term} is implausibly far ahead of this node's term {current}")]
    TermTooFar {
        /// The term the message carries.
        term: u64,
        /// This node's current term.
        current: u64,
    },
    /// Another member claims to lead the term this node leads (a bug or a misbehaving peer).
    #[error("another member claims to lead term {term}, which this node leads")]
    ConflictingLeader {
        /// The contested term.
        term: u64,
    },
    /// The configuration cannot work (see the message).
    #[error("invalid election config: {0}")]
    InvalidConfig(&'static str),
}
