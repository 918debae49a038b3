//! Versioned, size-limited encoding of protocol messages (postcard).

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::messages::{Abstain, ClientUpload, RoundStart, PROTOCOL_VERSION};

/// Largest encoded message accepted (a round's synthetic set is the biggest, ~10 MB at most).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Every message that crosses the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Host → clients.
    RoundStart(RoundStart),
    /// Client → host.
    Upload(ClientUpload),
    /// Client → host: no upload this round.
    Abstain(Abstain),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u16,
    message: Message,
}

/// Encodes `message` with the current protocol version.
pub fn encode(message: &Message) -> Result<Vec<u8>, ProtocolError> {
    let env = Envelope {
        version: PROTOCOL_VERSION,
        message: message.clone(),
    };
    postcard::to_allocvec(&env).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes bytes from a peer: size-checked before parsing, version-checked after.
pub fn decode(bytes: &[u8], limit: usize) -> Result<Message, ProtocolError> {
    let limit = limit.min(MAX_MESSAGE_BYTES);
    if bytes.len() > limit {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let env: Envelope =
        postcard::from_bytes(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if env.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            got: env.version,
            want: PROTOCOL_VERSION,
        });
    }
    Ok(env.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let m = Message::Upload(ClientUpload {
            round: 3,
            values: vec![1.0, -2.5],
        });
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes, 1024).unwrap(), m);
        assert!(matches!(
            decode(&bytes, 4),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], 1024),
            Err(ProtocolError::Malformed(_))
        ));
        let mut other = bytes.clone();
        other[0] = 9; // version varint
        assert!(matches!(
            decode(&other, 1024),
            Err(ProtocolError::Version { got: 9, .. })
        ));
        let notice = Message::Abstain(crate::messages::Abstain {
            round: 4,
            reason: crate::messages::AbstainReason::BudgetExhausted,
        });
        assert_eq!(decode(&encode(&notice).unwrap(), 64).unwrap(), notice);
    }
}
