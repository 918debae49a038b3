//! Ledger records: the signed entry per spend, the signed head and the signed metadata.

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use super::key::{verify_signature, NodeKey};
use super::spend::Spend;
use crate::error::{PrivacyError, Result};
use crate::unit::PrivacyUnit;

/// Domain separator of entry hashes.
const ENTRY_TAG: &[u8] = b"fedmmkt-ledger-entry-v1\0";
/// Domain separator of the head signature.
const HEAD_TAG: &[u8] = b"fedmmkt-ledger-head-v1\0";
/// Domain separator of the metadata signature.
const META_TAG: &[u8] = b"fedmmkt-ledger-meta-v1\0";

/// The hash that precedes entry 0.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// One spend as recorded: what was released or trained, under which parameters, at what cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Hex SHA-256 of the previous entry (zeros for entry 0).
    pub prev_hash: String,
    /// Federation round the release belongs to.
    pub round: u64,
    /// Wall-clock time of recording, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// Which local dataset the upload was computed from.
    pub dataset_id: String,
    /// What the entry protects; absent from entries written before units were recorded, which
    /// were all client-level.
    #[serde(default = "unit_of_unlabelled_entries")]
    pub unit: PrivacyUnit,
    /// The release (mechanism, parameters, OpenDP's ρ) or the training (DP-SGD parameters).
    pub cost: Spend,
    /// This release's RDP at the ledger's orders (what the accountant composes).
    pub rdp: Vec<f64>,
}

/// The unit of entries that do not name one: every entry before units were recorded was a
/// client-level release.
fn unit_of_unlabelled_entries() -> PrivacyUnit {
    PrivacyUnit::Client
}

/// How an entry sits in sled: the body's exact JSON bytes, its hash and signature.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub body: String,
    pub hash: String,
    pub signature: String,
}

/// The signed pointer to the chain's end (written at creation with count 0), so truncating the
/// tail, or deleting every entry, is detected.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    /// Number of entries in the chain.
    pub count: u64,
    /// Hash of the last entry (zeros when empty).
    pub hash: String,
    pub signature: String,
}

/// Ledger-wide settings fixed at creation: signer and order grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetaBody {
    pub version: u32,
    pub public_key: String,
    pub orders: Vec<f64>,
    pub created_unix_ms: u64,
}

/// Signed metadata as stored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    pub body: String,
    pub signature: String,
}

/// SHA-256 of an entry body (domain-separated).
pub(crate) fn entry_hash(body: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(ENTRY_TAG.len() + body.len());
    buf.extend_from_slice(ENTRY_TAG);
    buf.extend_from_slice(body);
    let d = digest(&SHA256, &buf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The message a head signature covers.
pub(crate) fn head_message(count: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = HEAD_TAG.to_vec();
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// The message a metadata signature covers.
pub(crate) fn meta_message(body: &[u8]) -> Vec<u8> {
    let mut m = META_TAG.to_vec();
    m.extend_from_slice(body);
    m
}

/// Serializes, hashes and signs an entry.
pub(crate) fn seal_entry(entry: &LedgerEntry, key: &NodeKey) -> Result<(StoredRecord, [u8; 32])> {
    let body = serde_json::to_string(entry).map_err(|e| PrivacyError::Malformed {
        what: "ledger entry",
        reason: e.to_string(),
    })?;
    let hash = entry_hash(body.as_bytes());
    let signature = to_hex(&key.sign(&hash));
    Ok((
        StoredRecord {
            body,
            hash: to_hex(&hash),
            signature,
        },
        hash,
    ))
}

/// Signs the head pointer for a chain of `count` entries ending in `hash`.
pub(crate) fn seal_head(count: u64, hash: &[u8; 32], key: &NodeKey) -> Head {
    Head {
        count,
        hash: to_hex(hash),
        signature: to_hex(&key.sign(&head_message(count, hash))),
    }
}

/// Checks a stored record's hash and signature, then decodes its body.
pub(crate) fn open_record(
    record: &StoredRecord,
    public_key: &[u8],
) -> Result<(LedgerEntry, [u8; 32]), String> {
    let hash = entry_hash(record.body.as_bytes());
    if record.hash != to_hex(&hash) {
        return Err("its hash does not match its contents (edited)".into());
    }
    let sig = from_hex(&record.signature).ok_or("its signature is not hex")?;
    if !verify_signature(public_key, &hash, &sig) {
        return Err("its signature does not verify under the ledger key".into());
    }
    let entry: LedgerEntry =
        serde_json::from_str(&record.body).map_err(|e| format!("its body does not decode: {e}"))?;
    Ok((entry, hash))
}

/// Lower-case hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses lower- or upper-case hex; `None` on any bad digit or odd length.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(*pair.first()?).to_digit(16)?;
            let lo = char::from(*pair.get(1)?).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001abff").unwrap(), bytes);
        assert_eq!(from_hex("0001ABFF").unwrap(), bytes);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
