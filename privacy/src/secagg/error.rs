//! Typed errors of secure aggregation: every rejected input says what was wrong.

use super::ClientId;

/// Everything that can go wrong in a secure-aggregation round, on either side.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecAggError {
    /// The round parameters are inconsistent (checked before any key is generated).
    #[error("invalid round parameters: {0}")]
    InvalidParams(String),
    /// A message arrived in a stage that does not expect it (out of order, late or duplicated stage).
    #[error("{role} in stage {stage} cannot accept a {message} message")]
    UnexpectedMessage {
        /// "client" or "aggregator".
        role: &'static str,
        /// The stage the state machine is in.
        stage: &'static str,
        /// The kind of message that arrived.
        message: &'static str,
    },
    /// The sender or a named client is not a member of this round.
    #[error("client {0} is not a member of this round")]
    UnknownClient(ClientId),
    /// A message from a client that already sent one in this stage.
    #[error("duplicate {what} from client {client}")]
    Duplicate {
        /// The client that sent it twice (or was named twice).
        client: ClientId,
        /// What was duplicated.
        what: &'static str,
    },
    /// A client that did not take part in the previous stage sent a message in this one.
    #[error(
        "client {client} did not complete stage {stage}, so it cannot send a {message} message"
    )]
    NotASurvivor {
        /// The sender.
        client: ClientId,
        /// The earlier stage it missed.
        stage: &'static str,
        /// The message it sent.
        message: &'static str,
    },
    /// A message names a client that is not a neighbour where a neighbour is required.
    #[error("client {peer} is not a neighbour of client {of}")]
    NotNeighbor {
        /// The named client.
        peer: ClientId,
        /// Whose neighbourhood was expected.
        of: ClientId,
    },
    /// The set of recipients of a client's shares is not exactly its live neighbours.
    #[error("shares from client {client}: {detail}")]
    WrongRecipients {
        /// The sender of the shares.
        client: ClientId,
        /// What was missing or extra.
        detail: String,
    },
    /// A request names a client whose shares this client does not hold.
    #[error("client {holder} holds no shares of client {peer}")]
    NoShares {
        /// The client named in the request.
        peer: ClientId,
        /// The client asked.
        holder: ClientId,
    },
    /// An advertised key set whose signature does not verify against the member's identity key.
    #[error("signature on the keys advertised for client {0} does not verify")]
    BadSignature(ClientId),
    /// A client's own advertised keys were replaced in the key directory.
    #[error("the key directory substitutes client {0}'s own keys")]
    KeysSubstituted(ClientId),
    /// A field of fixed size has the wrong length.
    #[error("wrong length of {what}: expected {expected}, got {got}")]
    WrongLength {
        /// The field.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A list is longer than the protocol allows.
    #[error("too many entries in {what}: at most {max}, got {got}")]
    TooMany {
        /// The list.
        what: &'static str,
        /// The bound.
        max: usize,
        /// The length received.
        got: usize,
    },
    /// A share ciphertext failed AEAD authentication (tampered, misrouted or replayed).
    #[error("share ciphertext from client {sender} to client {receiver} failed authentication")]
    DecryptionFailed {
        /// The claimed sender.
        sender: ClientId,
        /// The receiver.
        receiver: ClientId,
    },
    /// A share carries an evaluation point other than the one assigned to its holder.
    #[error("share of client {owner} held by client {holder} has evaluation point {got}, expected {expected}")]
    WrongShareId {
        /// Whose secret the share is of.
        owner: ClientId,
        /// Who held it.
        holder: ClientId,
        /// The point it carries.
        got: u8,
        /// The point assigned to the holder.
        expected: u8,
    },
    /// An X25519 public key is a low-order point (the agreement would be all zeros).
    #[error("client {0}'s public key is a low-order point")]
    NonContributoryKey(ClientId),
    /// The aggregator asked for both the self-mask share and the key share of one client.
    #[error("asked to reveal both the self-mask share and the key share of client {0}: refusing and aborting")]
    RevealBoth(ClientId),
    /// Too few clients are left to continue or to recover a secret: the round aborts.
    #[error("below threshold in stage {stage}: {what} has {have}, needs {need}")]
    BelowThreshold {
        /// The stage at which it was detected.
        stage: &'static str,
        /// What fell short.
        what: String,
        /// How many there are.
        have: usize,
        /// How many are needed.
        need: usize,
    },
    /// An input value is outside the declared L∞ bound (rejected, never clipped).
    #[error("input value {value} at index {index} is outside the declared bound ±{bound}")]
    OutOfBound {
        /// Position in the vector.
        index: usize,
        /// The offending value.
        value: f32,
        /// The declared bound.
        bound: f32,
    },
    /// The input's L2 norm exceeds the declared L2 bound (rejected, never clipped).
    #[error("input L2 norm {norm} exceeds the declared bound {bound}")]
    NormExceeded {
        /// The input's norm.
        norm: f64,
        /// The declared bound.
        bound: f32,
    },
    /// An input value is NaN or infinite.
    #[error("input value at index {0} is not finite")]
    NotFinite(usize),
    /// The client was asked to mask before its input was set.
    #[error("no input was set before the masked-input stage")]
    MissingInput,
    /// Secret sharing failed (bad shares, wrong count).
    #[error("secret sharing: {0}")]
    Shamir(String),
    /// A primitive of the crypto library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// A reconstructed masking key does not match the key its owner advertised.
    #[error("reconstructed masking key of client {0} does not match its advertised key")]
    ReconstructionMismatch(ClientId),
    /// A wire message could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The state machine aborted earlier and accepts nothing more.
    #[error("the round was aborted: {0}")]
    Aborted(String),
}
