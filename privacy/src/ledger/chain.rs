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
    let meta = tree.get(META_KEY)?;
    let entries = tree
        .scan_prefix(ENTRY_PREFIX)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let head = tree.get(HEAD_KEY)?;
    Ok(verify_records(
        meta.as_deref(),
        entries.iter().map(|(k, v)| (&k[..], &v[..])),
        head.as_deref(),
        expected_key,
    ))
}

/// Verifies a ledger's raw records as [`load_and_verify`] reads them from the store: the
/// metadata, the `e:`-keyed entries in key order and the head, each absent or raw bytes.
pub(crate) fn verify_records<'a>(
    meta: Option<&[u8]>,
    entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    head: Option<&[u8]>,
    expected_key: &[u8],
) -> Loaded {
    let mut loaded = Loaded {
        meta: None,
        entries: Vec::new(),
        head_hash: GENESIS_HASH,
        report: ChainReport {
            valid: true,
            verified_entries: 0,
            stored_entries: entries.len(),
            problem: None,
        },
    };
    if let Err(problem) = verify_into(meta, entries, head, expected_key, &mut loaded) {
        loaded.report.valid = false;
        loaded.report.problem = Some(problem);
    }
    loaded.report.verified_entries = loaded.entries.len();
    loaded
}

/// Verifies a ledger's raw records without a database, exactly as [`super::Ledger::verify`]
/// does: `entries` are (sequence number, stored value) in order; a skipped number is a
/// deleted entry. For fuzzing and offline checks of a copied ledger.
pub fn verify_raw(
    meta: Option<&[u8]>,
    entries: &[(u64, &[u8])],
    head: Option<&[u8]>,
    expected_key: &[u8],
) -> ChainReport {
    let keyed: Vec<(Vec<u8>, &[u8])> = entries
        .iter()
        .map(|(seq, value)| ([ENTRY_PREFIX, &seq.to_be_bytes()[..]].concat(), *value))
        .collect();
    verify_records(
        meta,
        keyed.iter().map(|(k, v)| (&k[..], *v)),
        head,
        expected_key,
    )
    .report
}

/// The verification walk; the error is the first integrity problem.
fn verify_into<'a>(
    meta: Option<&[u8]>,
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    head: Option<&[u8]>,
    expected_key: &[u8],
    loaded: &mut Loaded,
) -> std::result::Result<(), String> {
    let Some(meta_bytes) = meta else {
        return Err("the ledger metadata is missing".into());
    };
    let meta = decode_meta(meta_bytes)?;
    let Some(public_key) = from_hex(&meta.public_key) else {
        return Err("the ledger's public key is not hex".into());
    };
    if public_key != expected_key {
        return Err(format!(
            "the ledger was signed by key {} but this node's key is {}",
            meta.public_key,
            to_hex(expected_key)
        ));
    }
    let n_orders = meta.orders.len();
    loaded.meta = Some(meta);

    let mut prev = GENESIS_HASH;
    for (expected_seq, (key, value)) in (0u64..).zip(entries) {
        let Some(seq) = key
            .get(ENTRY_PREFIX.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
        else {
            return Err(format!("a record has a malformed key {key:?}"));
        };
        if seq != expected_seq {
            return Err(format!(
                "entry {expected_seq} is missing (the next stored entry is {seq}): deleted"
            ));
        }
        let record: StoredRecord = serde_json::from_slice(value)
            .map_err(|e| format!("entry {seq} does not decode: {e}"))?;
        let (entry, hash) =
            open_record(&record, &public_key).map_err(|why| format!("entry {seq}: {why}"))?;
        if entry.seq != seq {
            return Err(format!(
                "entry stored at position {seq} says it is entry {}: reordered",
                entry.seq
            ));
        }
        if entry.prev_hash != to_hex(&prev) {
            return Err(format!(
                "entry {seq} does not link to entry {}: reordered or replaced",
                seq.wrapping_sub(1)
            ));
        }
        if entry.rdp.len() != n_orders || entry.rdp.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err(format!("entry {seq} has a malformed RDP curve"));
        }
        if let Err(e) = entry.cost.validate() {
            return Err(format!("entry {seq} records invalid parameters: {e}"));
        }
        if matches!(entry.cost, Spend::Training(_)) && entry.unit != PrivacyUnit::Record {
            return Err(format!(
                "entry {seq} records training under unit {}; training is record-level",
                entry.unit
            ));
        }
        prev = hash;
        loaded.entries.push(entry);
        loaded.head_hash = hash;
    }

    let head = match head {
        Some(bytes) => serde_json::from_slice::<Head>(bytes)
            .map_err(|e| format!("the head record does not decode: {e}"))?,
        None => return Err("the signed head record is missing: deleted".into()),
    };
    let sig = from_hex(&head.signature).unwrap_or_default();
    let Some(head_hash) = from_hex(&head.hash).and_then(|v| <[u8; 32]>::try_from(v).ok()) else {
        return Err("the head's hash is malformed".into());
    };
    if !verify_signature(&public_key, &head_message(head.count, &head_hash), &sig) {
        return Err("the head's signature does not verify".into());
    }
    let count = loaded.entries.len() as u64;
    if head.count != count || head_hash != prev {
        return Err(format!(
            "the signed head says the chain has {} entries but {count} are stored and linked: \
             entries deleted",
            head.count
        ));
    }
    Ok(())
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
