//! Protocol errors: what a peer (or a caller) did wrong, never a panic.

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The encoded message is larger than allowed for its kind.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// The bytes are not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported (this node speaks {want})")]
    Version {
        /// Version in the message.
        got: u16,
        /// Version this build speaks.
        want: u16,
    },
    /// The message decoded but its fields are inconsistent or out of range.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}
