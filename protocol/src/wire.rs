//! What nodes send each other over the network: one versioned request enum for the bulk,
//! directed traffic (request-response) and one for announcements (gossip), each kind with
//! its own size limit checked before a byte of the body is read.

use serde::{Deserialize, Serialize};

use crate::election::ElectionMessage;
use crate::error::ProtocolError;
use crate::messages::{AbstainReason, RoundStart, PROTOCOL_VERSION};
use crate::refusal::Refusal;

/// A member's id on the wire: its libp2p PeerId bytes.
pub type PeerBytes = Vec<u8>;

/// Longest PeerId accepted (an Ed25519 identity multihash is 38 bytes).
pub const MAX_PEER_ID_BYTES: usize = 64;
/// Most participants a round may declare.
pub const MAX_PARTICIPANTS: usize = 1024;

/// The kind of a request, sent before its body so the receiver can bound the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// Election traffic (votes, acks).
    Election = 1,
    /// A host's round offer with the synthetic set.
    Offer = 2,
    /// One secure-aggregation message, either direction.
    SecAgg = 3,
    /// A client sits the round out.
    Abstain = 4,
    /// A generator checkpoint.
    Checkpoint = 5,
    /// A client's upload in the clear (rounds with [`Aggregation::Plain`] only).
    Upload = 6,
    /// A member asks a holder for a checkpoint by its hash.
    Fetch = 7,
}

impl Kind {
    /// The kind named by a tag byte, if any.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Kind::Election,
            2 => Kind::Offer,
            3 => Kind::SecAgg,
            4 => Kind::Abstain,
            5 => Kind::Checkpoint,
            6 => Kind::Upload,
            7 => Kind::Fetch,
            _ => return None,
        })
    }

    /// Every kind, in tag order.
    pub const ALL: [Kind; 7] = [
        Kind::Election,
        Kind::Offer,
        Kind::SecAgg,
        Kind::Abstain,
        Kind::Checkpoint,
        Kind::Upload,
        Kind::Fetch,
    ];

    /// The largest body any kind accepts.
    pub fn largest_limit() -> usize {
        Self::ALL.iter().map(|k| k.limit()).max().unwrap_or(0)
    }

    /// Largest body accepted for this kind.
    pub fn limit(self) -> usize {
        match self {
            Kind::Election => 4 << 10,
            Kind::Offer => 32 << 20,
            Kind::SecAgg => 16 << 20,
            Kind::Abstain => 1 << 10,
            Kind::Checkpoint => 64 << 20,
            Kind::Upload => 16 << 20,
            Kind::Fetch => 1 << 10,
        }
    }
}

/// Largest response body (responses are acknowledgements).
pub const MAX_RESPONSE_BYTES: usize = 4 << 10;

/// The secure-aggregation parameters a host fixes for a round (see `privacy::secagg::RoundParams`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggSpec {
    /// Public seed of the neighbourhood graph, fresh for every round attempt.
    pub graph_seed: [u8; 32],
    /// Neighbourhood size k.
    pub neighbors: u32,
    /// Shamir threshold t (also the fewest uploads whose sum is released).
    pub threshold: u32,
    /// Upload length.
    pub dim: u32,
    /// Per-coordinate bound of the fixed-point encoding (clipped, noised uploads are clamped to it).
    pub bound: f32,
    /// The encoding's headroom in clients.
    pub max_clients: u32,
}

impl SecAggSpec {
    /// How a round of `n` participants is aggregated, in words for logs and `fedmmkt status`:
    /// "SecAgg (complete graph, t = 3 of 4)" or "SecAgg+ (k = 30 neighbours, t = 16, N = 1000)".
    pub fn describe(&self, n: u32) -> String {
        if self.neighbors + 1 >= n {
            format!("SecAgg (complete graph, t = {} of {n})", self.threshold)
        } else {
            format!(
                "SecAgg+ (k = {} neighbours, t = {}, N = {n})",
                self.neighbors, self.threshold
            )
        }
    }
}

/// How a round's uploads are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Secure aggregation with the offer's [`SecAggSpec`]: the host sees only the sum.
    Secure,
    /// Uploads in the clear, summed by the host once `threshold` arrived. For the in-process
    /// simulation only (which models what secure aggregation guarantees without its cost):
    /// a node refuses such an offer.
    Plain,
}

/// One round participant: its PeerId and its Ed25519 identity key (which must derive that PeerId).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// libp2p PeerId bytes.
    pub peer: PeerBytes,
    /// Ed25519 public key that signs its secure-aggregation keys.
    pub identity: [u8; 32],
}

/// The host's invitation to round `start.round` of `term`: the synthetic set and how to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundOffer {
    /// The host's term.
    pub term: u64,
    /// Which attempt at this round in this term (a host retries a round it had to abandon).
    pub attempt: u32,
    /// Round r's synthetic set (its `round` field is the round number).
    pub start: RoundStart,
    /// The round's participants in secure-aggregation id order.
    pub participants: Vec<Participant>,
    /// How the uploads are summed.
    pub aggregation: Aggregation,
    /// Secure-aggregation parameters (a plain round uses its dimension, bound and threshold).
    pub secagg: SecAggSpec,
}

/// One secure-aggregation message of a round attempt (encoded by `privacy::secagg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggPacket {
    /// The host's term.
    pub term: u64,
    /// Round number.
    pub round: u64,
    /// The attempt (see [`RoundOffer::attempt`]).
    pub attempt: u32,
    /// The encoded client or server message.
    pub payload: Vec<u8>,
}

/// A client's upload in the clear, in a round with [`Aggregation::Plain`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadPacket {
    /// The host's term.
    pub term: u64,
    /// Round number.
    pub round: u64,
    /// The attempt.
    pub attempt: u32,
    /// The privatised upload.
    pub values: Vec<f32>,
}

/// A host's generator checkpoint after a completed round, replicated so a successor resumes:
/// from the host to a majority, or from any holder to a member that asked for it
/// ([`Request::Fetch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointTransfer {
    /// The host's term (the holder's own view of it, when a holder answers a fetch).
    pub term: u64,
    /// The round the checkpoint completes.
    pub round: u64,
    /// SHA-256 of the full checkpoint (its content address; verified on receipt, after a
    /// delta is applied).
    pub hash: [u8; 32],
    /// `None`: `bytes` is the full checkpoint. `Some(base)`: `bytes` is a delta from the
    /// checkpoint whose hash is `base` (what changed: the generator, the new memory rows).
    pub base: Option<[u8; 32]>,
    /// The checkpoint, or the delta.
    pub bytes: Vec<u8>,
}

/// A member asks a holder for the checkpoint with hash `want`; the holder answers with an
/// acknowledgement and then sends it as a [`Request::Checkpoint`], as a delta from `have`
/// when it holds that too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The content address of the checkpoint wanted.
    pub want: [u8; 32],
    /// The newest checkpoint the asking member holds, if any (the base of a delta).
    pub have: Option<[u8; 32]>,
}

/// A directed request between members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Election traffic.
    Election(ElectionMessage<PeerBytes>),
    /// Host → client: a round offer.
    Offer(Box<RoundOffer>),
    /// Either direction: a secure-aggregation message.
    SecAgg(SecAggPacket),
    /// Client → host: no upload this round.
    Abstain {
        /// The host's term.
        term: u64,
        /// Round number.
        round: u64,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: AbstainReason,
    },
    /// Host → a majority of the members, or a holder → a member that asked: the checkpoint
    /// of a completed round.
    Checkpoint(CheckpointTransfer),
    /// Member → a holder: send me this checkpoint.
    Fetch(FetchRequest),
    /// Client → host: an upload in the clear (plain rounds only).
    Upload(UploadPacket),
}

impl Request {
    /// The request's kind (and so its size limit).
    pub fn kind(&self) -> Kind {
        match self {
            Request::Election(_) => Kind::Election,
            Request::Offer(_) => Kind::Offer,
            Request::SecAgg(_) => Kind::SecAgg,
            Request::Abstain { .. } => Kind::Abstain,
            Request::Checkpoint(_) => Kind::Checkpoint,
            Request::Upload(_) => Kind::Upload,
            Request::Fetch(_) => Kind::Fetch,
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Accepted.
    Ack,
    /// Refused, with the reason (also logged by the refuser).
    Rejected(Refusal),
}

/// Round phases as announced to the federation (progress displays, `status`), in the order a
/// round runs them. Serialized by name in JSON (`"learn"`), by variant index with postcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The host samples the synthetic set.
    Generate,
    /// Clients train on their data and the synthetic set.
    Learn,
    /// Clients judge the synthetic set and privatise their uploads.
    Judge,
    /// Secure aggregation of the uploads.
    Aggregate,
    /// The host improves its generator from the sum.
    Improve,
    /// The checkpoint is replicated.
    Replicate,
    /// The round is complete.
    Complete,
    /// The round was given up (too few uploads, host change).
    Abandoned,
}

impl Phase {
    /// Lower-case name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Generate => "generate",
            Phase::Learn => "learn",
            Phase::Judge => "judge",
            Phase::Aggregate => "aggregate",
            Phase::Improve => "improve",
            Phase::Replicate => "replicate",
            Phase::Complete => "complete",
            Phase::Abandoned => "abandoned",
        }
    }

    /// Every phase, in the order a round runs them (the order of `Ord`).
    pub const ALL: [Phase; 8] = [
        Phase::Generate,
        Phase::Learn,
        Phase::Judge,
        Phase::Aggregate,
        Phase::Improve,
        Phase::Replicate,
        Phase::Complete,
        Phase::Abandoned,
    ];
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase name that is none of [`Phase::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown round phase {0:?}")]
pub struct UnknownPhase(pub String);

impl std::str::FromStr for Phase {
    type Err = UnknownPhase;

    /// Parses a [`Phase::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPhase(s.to_string()))
    }
}

/// Small announcements over gossip, best effort: liveness and round notices. (Election
/// messages go to each member as requests: they must not be lost silently.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Announcement {
    /// Every node, every second: what it offers as a host and the last round it holds.
    Alive {
        /// GPU and memory (the host election prefers the best).
        capability: crate::election::Capability,
        /// The last round whose checkpoint this node holds.
        last_completed_round: u64,
        /// That checkpoint's hash (members fetch a checkpoint they miss from its holders;
        /// the host's word says which hash the newest round has).
        checkpoint: Option<[u8; 32]>,
    },
    /// The host's round progress.
    Round {
        /// The host's term.
        term: u64,
        /// Round number.
        round: u64,
        /// Phase entered.
        phase: Phase,
        /// Participants of the round.
        participants: u32,
    },
}

/// Largest gossip message accepted.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 4 << 10;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

/// Encodes a value in the versioned envelope.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, ProtocolError> {
    postcard::to_allocvec(&Envelope {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// The length of [`encode`]'s output, without building it (for byte counts).
pub fn encoded_len<T: Serialize>(body: &T) -> Result<usize, ProtocolError> {
    postcard::serialize_with_flavor(
        &Envelope {
            version: PROTOCOL_VERSION,
            body,
        },
        postcard::ser_flavors::Size::default(),
    )
    .map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes bytes from a peer: size-checked before parsing, version-checked after.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, ProtocolError> {
    if bytes.len() > limit {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let env: Envelope<T> =
        postcard::from_bytes(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if env.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            got: env.version,
            want: PROTOCOL_VERSION,
        });
    }
    Ok(env.body)
}

impl RoundOffer {
    /// Checks everything a client can check before acting on the offer.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.start.validate()?;
        let bad = |reason: String| {
            Err(ProtocolError::Invalid {
                kind: "round offer",
                reason,
            })
        };
        let n = self.participants.len();
        if !(3..=MAX_PARTICIPANTS).contains(&n) {
            return bad(format!("{n} participants, need 3..={MAX_PARTICIPANTS}"));
        }
        if self
            .participants
            .iter()
            .any(|p| p.peer.is_empty() || p.peer.len() > MAX_PEER_ID_BYTES)
        {
            return bad("a participant id has an invalid length".into());
        }
        let mut ids: Vec<&PeerBytes> = self.participants.iter().map(|p| &p.peer).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != n {
            return bad("duplicate participant".into());
        }
        let s = &self.secagg;
        let want = crate::UploadLayout::of(&self.start).len();
        if s.dim as usize != want {
            return bad(format!(
                "upload dimension {} does not match the synthetic set ({want})",
                s.dim
            ));
        }
        if !(s.bound.is_finite() && s.bound > 0.0) {
            return bad(format!("bound {} must be positive", s.bound));
        }
        if s.threshold < 2 || s.threshold as usize > n || s.max_clients < n as u32 {
            return bad(format!(
                "threshold {} / max_clients {} do not fit {n} participants",
                s.threshold, s.max_clients
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_limits_and_version() {
        let req = Request::Abstain {
            term: 2,
            round: 5,
            attempt: 0,
            reason: AbstainReason::BudgetExhausted,
        };
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes, 1024).unwrap(), req);
        assert!(matches!(
            decode::<Request>(&bytes, 2),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut other = bytes.clone();
        other[0] = 9; // version varint
        assert!(matches!(
            decode::<Request>(&other, 1024),
            Err(ProtocolError::Version { got: 9, .. })
        ));
        assert!(decode::<Request>(&bytes[..bytes.len() - 1], 1024).is_err());
        assert_eq!(req.kind(), Kind::Abstain);
        assert_eq!(
            Kind::from_tag(Kind::Checkpoint as u8),
            Some(Kind::Checkpoint)
        );
        assert_eq!(Kind::from_tag(0), None);
    }

    #[test]
    fn phase_names_order_and_encodings() {
        assert!(
            Phase::ALL.windows(2).all(|w| w[0] < w[1]),
            "ALL is in Ord order"
        );
        for (i, p) in Phase::ALL.into_iter().enumerate() {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
            assert_eq!(
                serde_json::from_str::<Phase>(&format!("\"{p}\"")).unwrap(),
                p
            );
            // On the wire a phase stays one byte, its variant index.
            assert_eq!(postcard::to_allocvec(&p).unwrap(), vec![i as u8]);
        }
        assert_eq!(
            "Learn".parse::<Phase>(),
            Err(UnknownPhase("Learn".to_string()))
        );
    }
}
