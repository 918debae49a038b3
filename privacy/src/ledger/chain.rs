//! Verification of the whole chain: metadata, every entry's hash, signature, order and link,
//! and the signed head (so edits, deletions, reordering and truncation are all detected).

use serde::{Deserialize, Serialize};

use super::entry::{
    from_hex, head_message, meta_message, open_record, to_hex, Head, LedgerEntry, MetaBody,
    StoredMeta, StoredRecord, GENESIS_HASH,
};
use super::key::verify_signature;
use super::spend::Spend;
use super::{ENTRY_PREFIX, HEAD_KEY, META_KEY};
use crate::error::Result;
use crate::unit::PrivacyUnit;

/// Outcome of verifying a ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// True when metadata, every entry and the head verify.
    pub valid: bool,
    /// Entries that verified, from the start of the chain up to the first problem.
    pub verified_entries: usize,
    /// Entry records present in the store.
    pub stored_entries: usize,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

/// What a verification pass read: the metadata, the verified prefix of entries and the report.
pub(crate) struct Loaded {
    pub meta: Option<MetaBody>,
    pub entries: Vec<LedgerEntry>,
    pub head_hash: [u8; 32],
    pub report: ChainReport,
}

/// Reads and verifies everything in `tree`; `expected_key` is the node's public key.
///
/// Only storage failures are errors; integrity problems land in the report.
pub(crate) fn load_and_verify(tree: &sled::Tree, expected_key: &[u8]) -> Result<Loaded> {
    let stored_entries = tree.scan_prefix(ENTRY_PREFIX).count();
    let mut loaded = Loaded {
        meta: None,
        entries: Vec::new(),
        head_hash: GENESIS_HASH,
        report: ChainReport {
            valid: true,
            verified_entries: 0,
            stored_entries,
            problem: None,
        },
    };
    if let Err(problem) = verify_into(tree, expected_key, &mut loaded)? {
        loaded.report.valid = false;
        loaded.report.problem = Some(problem);
    }
    loaded.report.verified_entries = loaded.entries.len();
    Ok(loaded)
}

/// The verification walk; the inner `Err(String)` is the first integrity problem.
fn verify_into(
    tree: &sled::Tree,
    expected_key: &[u8],
    loaded: &mut Loaded,
) -> Result<std::result::Result<(), String>> {
    let Some(meta_bytes) = tree.get(META_KEY)? else {
        return Ok(Err("the ledger metadata is missing".into()));
    };
    let meta = match decode_meta(&meta_bytes) {
        Ok(m) => m,
        Err(p) => return Ok(Err(p)),
    };
    let Some(public_key) = from_hex(&meta.public_key) else {
        return Ok(Err("the ledger's public key is not hex".into()));
    };
    if public_key != expected_key {
        return Ok(Err(format!(
            "the ledger was signed by key {} but this node's key is {}",
            meta.public_key,
            to_hex(expected_key)
        )));
    }
    let n_orders = meta.orders.len();
    loaded.meta = Some(meta);

    let mut prev = GENESIS_HASH;
    for (expected_seq, item) in (0u64..).zip(tree.scan_prefix(ENTRY_PREFIX)) {
        let (key, value) = item?;
        let Some(seq) = key
            .get(ENTRY_PREFIX.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
        else {
            return Ok(Err(format!("a record has a malformed key {key:?}")));
        };
        if seq != expected_seq {
            return Ok(Err(format!(
                "entry {expected_seq} is missing (the next stored entry is {seq}): deleted"
            )));
        }
        let record: StoredRecord = match serde_json::from_slice(&value) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("entry {seq} does not decode: {e}"))),
        };
        let (entry, hash) = match open_record(&record, &public_key) {
            Ok(x) => x,
            Err(why) => return Ok(Err(format!("entry {seq}: {why}"))),
        };
        if entry.seq != seq {
            return Ok(Err(format!(
                "entry stored at position {seq} says it is entry {}: reordered",
                entry.seq
            )));
        }
        if entry.prev_hash != to_hex(&prev) {
            return Ok(Err(format!(
                "entry {seq} does not link to entry {}: reordered or replaced",
                seq.wrapping_sub(1)
            )));
        }
        if entry.rdp.len() != n_orders || entry.rdp.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Ok(Err(format!("entry {seq} has a malformed RDP curve")));
        }
        if let Err(e) = entry.cost.validate() {
            return Ok(Err(format!("entry {seq} records invalid parameters: {e}")));
        }
        if matches!(entry.cost, Spend::Training(_)) && entry.unit != PrivacyUnit::Record {
            return Ok(Err(format!(
                "entry {seq} records training under unit {}; training is record-level",
                entry.unit
            )));
        }
        prev = hash;
        loaded.entries.push(entry);
        loaded.head_hash = hash;
    }

    let head = match tree.get(HEAD_KEY)? {
        Some(bytes) => match serde_json::from_slice::<Head>(&bytes) {
            Ok(h) => h,
            Err(e) => return Ok(Err(format!("the head record does not decode: {e}"))),
        },
        None => return Ok(Err("the signed head record is missing: deleted".into())),
    };
    let sig = from_hex(&head.signature).unwrap_or_default();
    let Some(head_hash) = from_hex(&head.hash).and_then(|v| <[u8; 32]>::try_from(v).ok()) else {
        return Ok(Err("the head's hash is malformed".into()));
    };
    if !verify_signature(&public_key, &head_message(head.count, &head_hash), &sig) {
        return Ok(Err("the head's signature does not verify".into()));
    }
    let count = loaded.entries.len() as u64;
    if head.count != count || head_hash != prev {
        return Ok(Err(format!(
            "the signed head says the chain has {} entries but {count} are stored and linked: \
             entries deleted",
            head.count
        )));
    }
    Ok(Ok(()))
}

/// Decodes and checks the signed metadata (its own key signs it).
fn decode_meta(bytes: &[u8]) -> std::result::Result<MetaBody, String> {
    let stored: StoredMeta =
        serde_json::from_slice(bytes).map_err(|e| format!("the metadata does not decode: {e}"))?;
    let meta: MetaBody = serde_json::from_str(&stored.body)
        .map_err(|e| format!("the metadata body does not decode: {e}"))?;
    let key = from_hex(&meta.public_key).ok_or("the metadata key is not hex")?;
    let sig = from_hex(&stored.signature).ok_or("the metadata signature is not hex")?;
    if !verify_signature(&key, &meta_message(stored.body.as_bytes()), &sig) {
        return Err("the metadata signature does not verify".into());
    }
    if meta.orders.is_empty() || meta.orders.iter().any(|a| !(a.is_finite() && *a > 1.0)) {
        return Err("the metadata's order grid is malformed".into());
    }
    Ok(meta)
}
