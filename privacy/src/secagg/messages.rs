//! The messages of a round and their wire encoding (bounded, versioned, round-bound).
//!
//! Encoding: `[version u8][kind u8][round u64 LE][body]`, integers little-endian, lists as a
//! u32 count then items. Decoding checks every count against a protocol bound before allocating.

use super::error::SecAggError;
use super::keys::{KEY_LEN, SIGNATURE_LEN, TAG_LEN};
use super::shamir::{Share, SHARE_LEN};
use super::{ClientId, MAX_DIM};

/// Wire format version.
pub const WIRE_VERSION: u8 = 1;
/// Plaintext of one encrypted share pair: the self-mask-seed share then the masking-key share.
pub const SHARE_PLAINTEXT_LEN: usize = 2 * SHARE_LEN;
/// Length of one encrypted share pair.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + TAG_LEN;
/// Bound on every per-neighbour list (neighbours plus the client itself).
pub const MAX_LIST: usize = 256;
/// Bytes of the header in front of every message.
pub const HEADER_LEN: usize = 1 + 1 + 8;

/// Round 0 (advertise keys): a client's two X25519 public keys, signed with its identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// The advertising client.
    pub sender: ClientId,
    /// Public key for share encryption.
    pub enc_public: [u8; KEY_LEN],
    /// Public key for pairwise masks.
    pub mask_public: [u8; KEY_LEN],
    /// Ed25519 signature over (round context, sender, both keys).
    pub signature: [u8; SIGNATURE_LEN],
}

/// Aggregator → client: the advertised keys of the client's live neighbours (and its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDirectory {
    /// One entry per live neighbour, plus the recipient's own.
    pub entries: Vec<AdvertiseKeys>,
}

/// One AEAD-encrypted share pair, addressed by the other end of the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// The receiver (client → aggregator) or the original sender (aggregator → client).
    pub peer: ClientId,
    /// ChaCha20-Poly1305 ciphertext of the two shares.
    pub ciphertext: Vec<u8>,
}

/// Round 1 (share keys): a client's encrypted shares, one per live neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShares {
    /// The client whose secrets are shared.
    pub sender: ClientId,
    /// One ciphertext per receiving neighbour.
    pub shares: Vec<EncryptedShare>,
}

/// Aggregator → client: the ciphertexts addressed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDelivery {
    /// One ciphertext per neighbour that completed the share-keys stage.
    pub shares: Vec<EncryptedShare>,
}

/// Round 2 (masked input): the quantized input plus self mask plus pairwise masks, mod 2^32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The client.
    pub sender: ClientId,
    /// The masked vector.
    pub masked: Vec<u32>,
}

/// Aggregator → client: which neighbours sent a masked input and which dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Neighbours whose masked input arrived: reveal their self-mask-seed shares.
    pub survivors: Vec<ClientId>,
    /// Neighbours that dropped after sharing: reveal their masking-key shares.
    pub dropped: Vec<ClientId>,
}

/// A share revealed at unmask time, labelled by whose secret it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealedShare {
    /// The client whose secret this is a share of.
    pub owner: ClientId,
    /// The share.
    pub share: Share,
}

/// Round 3 (unmask): the revealed shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The responding client.
    pub sender: ClientId,
    /// Shares of surviving neighbours' self-mask seeds.
    pub self_mask_shares: Vec<RevealedShare>,
    /// Shares of dropped neighbours' masking keys.
    pub key_shares: Vec<RevealedShare>,
}

/// Anything a client sends to the aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Stage 0.
    Advertise(AdvertiseKeys),
    /// Stage 1.
    Shares(EncryptedShares),
    /// Stage 2.
    Masked(MaskedInput),
    /// Stage 3.
    Unmask(UnmaskResponse),
}

/// Anything the aggregator sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// Answers stage 0.
    Keys(KeyDirectory),
    /// Answers stage 1.
    Shares(ShareDelivery),
    /// Answers stage 2.
    Unmask(UnmaskRequest),
}

impl ClientMessage {
    /// A short name for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Advertise(_) => "advertise-keys",
            ClientMessage::Shares(_) => "encrypted-shares",
            ClientMessage::Masked(_) => "masked-input",
            ClientMessage::Unmask(_) => "unmask-response",
        }
    }

    /// The client that sent it.
    pub fn sender(&self) -> ClientId {
        match self {
            ClientMessage::Advertise(m) => m.sender,
            ClientMessage::Shares(m) => m.sender,
            ClientMessage::Masked(m) => m.sender,
            ClientMessage::Unmask(m) => m.sender,
        }
    }

    /// Encodes the message for `round`.
    pub fn encode(&self, round: u64) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        match self {
            ClientMessage::Advertise(m) => {
                w.header(0x01, round);
                write_advert(&mut w, m);
            }
            ClientMessage::Shares(m) => {
                w.header(0x02, round);
                w.u32(m.sender);
                write_shares(&mut w, &m.shares);
            }
            ClientMessage::Masked(m) => {
                w.header(0x03, round);
                w.u32(m.sender);
                w.u32(m.masked.len() as u32);
                for x in &m.masked {
                    w.u32(*x);
                }
            }
            ClientMessage::Unmask(m) => {
                w.header(0x04, round);
                w.u32(m.sender);
                write_revealed(&mut w, &m.self_mask_shares);
                write_revealed(&mut w, &m.key_shares);
            }
        }
        w.0
    }

    /// The length of `encode`'s output, without encoding (for byte accounting).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                ClientMessage::Advertise(_) => ADVERT_LEN,
                ClientMessage::Shares(m) => 4 + shares_len(&m.shares),
                ClientMessage::Masked(m) => 4 + 4 + 4 * m.masked.len(),
                ClientMessage::Unmask(m) => {
                    4 + 4
                        + m.self_mask_shares.len() * (4 + SHARE_LEN)
                        + 4
                        + m.key_shares.len() * (4 + SHARE_LEN)
                }
            }
    }

    /// Decodes a message, rejecting other rounds, bad lengths and trailing bytes.
    pub fn decode(bytes: &[u8], round: u64) -> Result<Self, SecAggError> {
        let mut r = Reader::new(bytes);
        let kind = r.header(round)?;
        let msg = match kind {
            0x01 => ClientMessage::Advertise(read_advert(&mut r)?),
            0x02 => ClientMessage::Shares(EncryptedShares {
                sender: r.u32()?,
                shares: read_shares(&mut r)?,
            }),
            0x03 => {
                let sender = r.u32()?;
                let n = r.count("masked vector", MAX_DIM as usize, 4)?;
                let mut masked = Vec::with_capacity(n);
                for _ in 0..n {
                    masked.push(r.u32()?);
                }
                ClientMessage::Masked(MaskedInput { sender, masked })
            }
            0x04 => ClientMessage::Unmask(UnmaskResponse {
                sender: r.u32()?,
                self_mask_shares: read_revealed(&mut r)?,
                key_shares: read_revealed(&mut r)?,
            }),
            other => {
                return Err(SecAggError::Malformed(format!(
                    "unknown client message kind {other:#04x}"
                )))
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

impl ServerMessage {
    /// A short name for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Keys(_) => "key-directory",
            ServerMessage::Shares(_) => "share-delivery",
            ServerMessage::Unmask(_) => "unmask-request",
        }
    }

    /// Encodes the message for `round`.
    pub fn encode(&self, round: u64) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        match self {
            ServerMessage::Keys(m) => {
                w.header(0x81, round);
                w.u32(m.entries.len() as u32);
                for e in &m.entries {
                    write_advert(&mut w, e);
                }
            }
            ServerMessage::Shares(m) => {
                w.header(0x82, round);
                write_shares(&mut w, &m.shares);
            }
            ServerMessage::Unmask(m) => {
                w.header(0x83, round);
                for list in [&m.survivors, &m.dropped] {
                    w.u32(list.len() as u32);
                    for id in list {
                        w.u32(*id);
                    }
                }
            }
        }
        w.0
    }

    /// The length of `encode`'s output.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                ServerMessage::Keys(m) => 4 + m.entries.len() * ADVERT_LEN,
                ServerMessage::Shares(m) => shares_len(&m.shares),
                ServerMessage::Unmask(m) => 8 + 4 * (m.survivors.len() + m.dropped.len()),
            }
    }

    /// Decodes a message, rejecting other rounds, bad lengths and trailing bytes.
    pub fn decode(bytes: &[u8], round: u64) -> Result<Self, SecAggError> {
        let mut r = Reader::new(bytes);
        let kind = r.header(round)?;
        let msg = match kind {
            0x81 => {
                let n = r.count("key directory", MAX_LIST, ADVERT_LEN)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(read_advert(&mut r)?);
                }
                ServerMessage::Keys(KeyDirectory { entries })
            }
            0x82 => ServerMessage::Shares(ShareDelivery {
                shares: read_shares(&mut r)?,
            }),
            0x83 => {
                let mut lists = [Vec::new(), Vec::new()];
                for list in &mut lists {
                    let n = r.count("unmask request", MAX_LIST, 4)?;
                    for _ in 0..n {
                        list.push(r.u32()?);
                    }
                }
                let [survivors, dropped] = lists;
                ServerMessage::Unmask(UnmaskRequest { survivors, dropped })
            }
            other => {
                return Err(SecAggError::Malformed(format!(
                    "unknown server message kind {other:#04x}"
                )))
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

const ADVERT_LEN: usize = 4 + 2 * KEY_LEN + SIGNATURE_LEN;

fn shares_len(shares: &[EncryptedShare]) -> usize {
    4 + shares
        .iter()
        .map(|s| 4 + 4 + s.ciphertext.len())
        .sum::<usize>()
}

fn write_advert(w: &mut Writer, m: &AdvertiseKeys) {
    w.u32(m.sender);
    w.bytes(&m.enc_public);
    w.bytes(&m.mask_public);
    w.bytes(&m.signature);
}

fn read_advert(r: &mut Reader<'_>) -> Result<AdvertiseKeys, SecAggError> {
    Ok(AdvertiseKeys {
        sender: r.u32()?,
        enc_public: r.array()?,
        mask_public: r.array()?,
        signature: r.array()?,
    })
}

fn write_shares(w: &mut Writer, shares: &[EncryptedShare]) {
    w.u32(shares.len() as u32);
    for s in shares {
        w.u32(s.peer);
        w.u32(s.ciphertext.len() as u32);
        w.bytes(&s.ciphertext);
    }
}

fn read_shares(r: &mut Reader<'_>) -> Result<Vec<EncryptedShare>, SecAggError> {
    let n = r.count("encrypted shares", MAX_LIST, 8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let peer = r.u32()?;
        let len = r.count("share ciphertext", SHARE_CIPHERTEXT_LEN, 1)?;
        out.push(EncryptedShare {
            peer,
            ciphertext: r.take(len)?.to_vec(),
        });
    }
    Ok(out)
}

fn write_revealed(w: &mut Writer, shares: &[RevealedShare]) {
    w.u32(shares.len() as u32);
    for s in shares {
        w.u32(s.owner);
        w.bytes(&s.share);
    }
}

fn read_revealed(r: &mut Reader<'_>) -> Result<Vec<RevealedShare>, SecAggError> {
    let n = r.count("revealed shares", MAX_LIST, 4 + SHARE_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(RevealedShare {
            owner: r.u32()?,
            share: r.array()?,
        });
    }
    Ok(out)
}

/// Appends little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn header(&mut self, kind: u8, round: u64) {
        self.0.push(WIRE_VERSION);
        self.0.push(kind);
        self.0.extend_from_slice(&round.to_le_bytes());
    }
    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

/// Reads little-endian fields, never past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SecAggError> {
        if self.rest.len() < n {
            return Err(SecAggError::Malformed(format!(
                "truncated: needed {n} more bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SecAggError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SecAggError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn header(&mut self, round: u64) -> Result<u8, SecAggError> {
        let [version, kind] = self.array()?;
        if version != WIRE_VERSION {
            return Err(SecAggError::Malformed(format!(
                "wire version {version}, expected {WIRE_VERSION}"
            )));
        }
        let got = u64::from_le_bytes(self.array()?);
        if got != round {
            return Err(SecAggError::Malformed(format!(
                "message for round {got}, this is round {round}"
            )));
        }
        Ok(kind)
    }

    /// A count bounded by `max` and by the bytes left (`min_item` bytes per item at least).
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item: usize,
    ) -> Result<usize, SecAggError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(SecAggError::TooMany { what, max, got: n });
        }
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(SecAggError::Malformed(format!(
                "{what}: {n} items cannot fit in {} bytes",
                self.rest.len()
            )));
        }
        Ok(n)
    }

    fn finish(&self) -> Result<(), SecAggError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(SecAggError::Malformed(format!(
                "{} trailing bytes",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> (Vec<ClientMessage>, Vec<ServerMessage>) {
        let advert = AdvertiseKeys {
            sender: 3,
            enc_public: [1; 32],
            mask_public: [2; 32],
            signature: [3; 64],
        };
        let share = EncryptedShare {
            peer: 9,
            ciphertext: vec![7; SHARE_CIPHERTEXT_LEN],
        };
        let client = vec![
            ClientMessage::Advertise(advert.clone()),
            ClientMessage::Shares(EncryptedShares {
                sender: 3,
                shares: vec![share.clone(), share.clone()],
            }),
            ClientMessage::Masked(MaskedInput {
                sender: 3,
                masked: vec![1, 2, u32::MAX],
            }),
            ClientMessage::Unmask(UnmaskResponse {
                sender: 3,
                self_mask_shares: vec![RevealedShare {
                    owner: 1,
                    share: [5; SHARE_LEN],
                }],
                key_shares: vec![],
            }),
        ];
        let server = vec![
            ServerMessage::Keys(KeyDirectory {
                entries: vec![advert.clone(), advert],
            }),
            ServerMessage::Shares(ShareDelivery {
                shares: vec![share],
            }),
            ServerMessage::Unmask(UnmaskRequest {
                survivors: vec![1, 2],
                dropped: vec![4],
            }),
        ];
        (client, server)
    }

    #[test]
    fn round_trip_and_lengths() {
        let (client, server) = samples();
        for m in client {
            let bytes = m.encode(11);
            assert_eq!(bytes.len(), m.encoded_len());
            assert_eq!(ClientMessage::decode(&bytes, 11).unwrap(), m);
            assert!(
                ClientMessage::decode(&bytes, 12).is_err(),
                "other round accepted"
            );
            for cut in 0..bytes.len() {
                assert!(ClientMessage::decode(&bytes[..cut], 11).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(ClientMessage::decode(&long, 11).is_err());
        }
        for m in server {
            let bytes = m.encode(11);
            assert_eq!(bytes.len(), m.encoded_len());
            assert_eq!(ServerMessage::decode(&bytes, 11).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(ServerMessage::decode(&bytes[..cut], 11).is_err());
            }
        }
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let mut bytes = vec![WIRE_VERSION, 0x03];
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ClientMessage::decode(&bytes, 0),
            Err(SecAggError::TooMany { .. })
        ));
        let mut keys = vec![WIRE_VERSION, 0x81];
        keys.extend_from_slice(&0u64.to_le_bytes());
        keys.extend_from_slice(&200u32.to_le_bytes());
        assert!(matches!(
            ServerMessage::decode(&keys, 0),
            Err(SecAggError::Malformed(_))
        ));
        assert!(ServerMessage::decode(&[WIRE_VERSION, 0x99, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
        assert!(ServerMessage::decode(&[2, 0x81, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
    }
}
