//! Ledgers written before entries named their unit and before training was recorded: their
//! signed bodies must still decode (as client-level releases) and their chains still verify.

use serde::Serialize;

use super::entry::{entry_hash, seal_head, to_hex, StoredRecord, GENESIS_HASH};
use super::{entry_key, ChargeContext, Ledger, NodeKey, Spend, TrainingCost, HEAD_KEY, KEY_FILE};
use crate::accountant::RdpAccountant;
use crate::mechanism::{NoiseSpec, ReleaseConfig, ReleaseCost};
use crate::unit::PrivacyUnit;

/// The entry body exactly as it was serialized before this change: no `unit`, `cost` a bare
/// [`ReleaseCost`].
#[derive(Serialize)]
struct OldEntry {
    seq: u64,
    prev_hash: String,
    round: u64,
    time_unix_ms: u64,
    dataset_id: String,
    cost: ReleaseCost,
    rdp: Vec<f64>,
}

fn old_cost() -> ReleaseCost {
    let config = ReleaseConfig {
        clip: 1.0,
        noise_multiplier: 3.0,
        expected_participants: 5,
        min_participants: 4,
        sample_rate: 1.0,
        dimension: 16,
    };
    let spec = NoiseSpec::Gaussian {
        granularity_exp: -30,
    };
    ReleaseCost::compute(&config, spec).unwrap()
}

#[test]
fn old_client_level_entry_parses_and_its_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join(KEY_FILE);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let ledger = Ledger::with_db(db.clone(), NodeKey::load_or_create(dir.path()).unwrap()).unwrap();
    let signer = NodeKey::load(&key_path).unwrap();

    // Write one entry in the old shape, signed and linked the way the old code did it.
    let cost = old_cost();
    let curve = cost.rdp_curve(ledger.orders()).unwrap();
    let old = OldEntry {
        seq: 0,
        prev_hash: to_hex(&GENESIS_HASH),
        round: 3,
        time_unix_ms: 1_700_000_000_000,
        dataset_id: "before-units".into(),
        cost: cost.clone(),
        rdp: curve.clone(),
    };
    let body = serde_json::to_string(&old).unwrap();
    assert!(!body.contains("\"unit\""), "{body}");
    let hash = entry_hash(body.as_bytes());
    let record = StoredRecord {
        body,
        hash: to_hex(&hash),
        signature: to_hex(&signer.sign(&hash)),
    };
    let head = seal_head(1, &hash, &signer);
    ledger
        .tree
        .insert(entry_key(0), serde_json::to_vec(&record).unwrap())
        .unwrap();
    ledger
        .tree
        .insert(HEAD_KEY, serde_json::to_vec(&head).unwrap())
        .unwrap();
    drop(ledger);

    let ledger = Ledger::with_db(db, NodeKey::load(&key_path).unwrap()).unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(report.verified_entries, 1);
    let entries = ledger.entries().unwrap();
    assert_eq!(entries[0].unit, PrivacyUnit::Client);
    // serde_json (without `float_roundtrip`) may read a float back one ulp off, so compare the
    // floats to a tolerance and everything else exactly.
    let Spend::Release(read) = &entries[0].cost else {
        panic!("an old entry decoded as {:?}", entries[0].cost);
    };
    assert_eq!(
        (read.mechanism, read.spec, &read.config),
        (cost.mechanism, cost.spec, &cost.config)
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(read.aggregate_rho, cost.aggregate_rho));
    assert!(close(
        read.charged_noise_multiplier,
        cost.charged_noise_multiplier
    ));
    assert_eq!(entries[0].rdp.len(), curve.len());
    assert!(entries[0]
        .rdp
        .iter()
        .zip(&curve)
        .all(|(a, b)| close(*a, *b)));
    let audit = ledger.audit().unwrap();
    assert_eq!(audit.entries[0].unit, PrivacyUnit::Client);

    // Its cost still counts, and the chain grows from it with new, unit-labelled entries.
    let mut want = RdpAccountant::with_orders(ledger.orders().to_vec()).unwrap();
    want.compose_curve(&curve).unwrap();
    let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!(close(spent, want.epsilon(1e-5).unwrap().epsilon));
    let training = TrainingCost {
        records: 600,
        sample_rate: 0.1,
        noise_multiplier: 1.2,
        clip: 1.0,
        steps: 20,
    };
    let ctx = ChargeContext {
        round: 4,
        dataset_id: "after-units".into(),
        unit: PrivacyUnit::Record,
    };
    assert_eq!(ledger.charge_training(&training, &ctx).unwrap(), 1);
    let report = ledger.verify().unwrap();
    assert!(report.valid && report.verified_entries == 2, "{report:?}");
}
