//! The signed hash-chained ledger: tamper detection, budget enforcement, persistence.

use std::path::Path;

use privacy::accountant::{epsilon_for, RdpAccountant};
use privacy::error::PrivacyError;
use privacy::ledger::{Budget, ChargeContext, Ledger, Spend, TrainingCost, DB_DIR, KEY_FILE, TREE};
use privacy::mechanism::{GaussianRelease, MechanismKind, ReleaseConfig};
use privacy::PrivacyUnit;

fn release(z: f64) -> GaussianRelease {
    GaussianRelease::new(&ReleaseConfig {
        clip: 1.0,
        noise_multiplier: z,
        expected_participants: 5,
        min_participants: 4,
        sample_rate: 1.0,
        dimension: 16,
    })
    .unwrap()
}

fn ctx(round: u64) -> ChargeContext {
    ChargeContext {
        round,
        dataset_id: "fashion-mnist/client-3".into(),
        unit: PrivacyUnit::Client,
    }
}

/// A ledger in a fresh directory with `n` releases recorded (and run), then closed.
fn ledger_with(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    for r in 0..n {
        let charged = ledger.charge(release(3.0), &ctx(r)).unwrap();
        assert_eq!(charged.seq(), r);
        charged.noise_f32(&[0.5; 16]).unwrap();
    }
    assert!(ledger.verify().unwrap().valid);
    dir
}

/// Runs `edit` on the raw sled tree of a closed ledger.
fn tamper(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join(DB_DIR)).unwrap();
    let tree = db.open_tree(TREE).unwrap();
    edit(&tree);
    db.flush().unwrap();
}

fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = b"e:".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Opens the tampered ledger, expects a failed verification mentioning `needle`, and checks that
/// the node now refuses to record anything.
fn assert_detected(dir: &Path, needle: &str) {
    let ledger = Ledger::open(dir).unwrap();
    let report = ledger.verify().unwrap();
    assert!(!report.valid, "tampering went unnoticed");
    let problem = report.problem.unwrap_or_default();
    assert!(
        problem.contains(needle),
        "problem {problem:?} lacks {needle:?}"
    );
    let err = ledger.charge(release(3.0), &ctx(99)).unwrap_err();
    assert!(matches!(err, PrivacyError::ChainBroken(_)), "{err}");
    let audit = ledger.audit().unwrap();
    assert!(!audit.chain.valid);
}

#[test]
fn untouched_ledger_verifies_and_survives_reopen() {
    let dir = ledger_with(4);
    let ledger = Ledger::open(dir.path()).unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.valid && report.verified_entries == 4 && report.stored_entries == 4);
    let entries = ledger.entries().unwrap();
    assert_eq!(
        entries.iter().map(|e| e.round).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(entries[2].dataset_id, "fashion-mnist/client-3");
    let charged = entries[0]
        .cost
        .as_release()
        .unwrap()
        .charged_noise_multiplier;
    assert!((charged - 3.0 * (0.8f64).sqrt()).abs() < 1e-5);
    // ε of 4 rounds equals the accountant's for the charged noise multiplier.
    let z = charged;
    let want = privacy::accountant::epsilon_for(z, 1.0, 4, 1e-5)
        .unwrap()
        .epsilon;
    let got = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    // Recording continues the chain after reopening.
    ledger.charge(release(3.0), &ctx(4)).unwrap();
    assert_eq!(ledger.verify().unwrap().verified_entries, 5);
}

#[test]
fn edited_entry_is_detected() {
    let dir = ledger_with(3);
    tamper(dir.path(), |t| {
        let v = t.get(entry_key(1)).unwrap().unwrap();
        let s = String::from_utf8(v.to_vec()).unwrap();
        // Lower the recorded noise multiplier's charge by editing the round number in the body.
        let edited = s.replacen("\\\"round\\\":1", "\\\"round\\\":7", 1);
        assert_ne!(s, edited);
        t.insert(entry_key(1), edited.as_bytes()).unwrap();
    });
    assert_detected(dir.path(), "entry 1: its hash does not match");
}

#[test]
fn entry_rehashed_without_the_key_is_detected() {
    // An attacker with their own key builds a ledger and splices its entry in.
    let dir = ledger_with(3);
    let other = ledger_with(3);
    let foreign = {
        let db = sled::open(other.path().join(DB_DIR)).unwrap();
        db.open_tree(TREE)
            .unwrap()
            .get(entry_key(0))
            .unwrap()
            .unwrap()
    };
    tamper(dir.path(), |t| {
        t.insert(entry_key(0), foreign).unwrap();
    });
    assert_detected(dir.path(), "signature does not verify");
}

#[test]
fn deleted_middle_entry_is_detected() {
    let dir = ledger_with(4);
    tamper(dir.path(), |t| {
        t.remove(entry_key(1)).unwrap();
    });
    assert_detected(dir.path(), "entry 1 is missing");
}

#[test]
fn deleted_last_entry_is_detected() {
    let dir = ledger_with(4);
    tamper(dir.path(), |t| {
        t.remove(entry_key(3)).unwrap();
    });
    assert_detected(dir.path(), "entries deleted");
}

#[test]
fn deleting_everything_but_the_metadata_is_detected() {
    let dir = ledger_with(2);
    tamper(dir.path(), |t| {
        t.remove(entry_key(0)).unwrap();
        t.remove(entry_key(1)).unwrap();
        t.remove(b"m:head").unwrap();
    });
    assert_detected(dir.path(), "head record is missing");
}

#[test]
fn reordered_entries_are_detected() {
    let dir = ledger_with(4);
    tamper(dir.path(), |t| {
        let a = t.get(entry_key(1)).unwrap().unwrap();
        let b = t.get(entry_key(2)).unwrap().unwrap();
        t.insert(entry_key(1), b).unwrap();
        t.insert(entry_key(2), a).unwrap();
    });
    assert_detected(dir.path(), "reordered");
}

#[test]
fn a_different_node_key_is_detected() {
    let dir = ledger_with(2);
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    // Opening creates a fresh key, which did not sign this ledger.
    assert_detected(dir.path(), "signed by key");
}

#[test]
fn budget_refuses_the_release_that_would_exceed_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.set_budget(Budget::new(2.0, 1e-5).unwrap()).unwrap();
    let mut recorded = 0u64;
    let refusal = loop {
        let r = release(5.0);
        let check = ledger.check(r.cost()).unwrap();
        match ledger.charge(r, &ctx(recorded)) {
            Ok(_) => {
                assert!(check.fits && check.after <= 2.0);
                recorded += 1;
            }
            Err(e) => {
                assert!(!check.fits, "check said it fits but charge refused: {e}");
                break e;
            }
        }
        assert!(recorded < 100, "budget never bit");
    };
    assert!(refusal.is_budget_exceeded(), "{refusal}");
    assert!(refusal.to_string().contains("abstaining"));
    assert!(recorded >= 2, "only {recorded} releases fit");
    assert_eq!(
        ledger.len().unwrap(),
        recorded,
        "a refused release was recorded"
    );
    let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!(spent <= 2.0 && spent > 0.0);
    drop(ledger);
    // The cap and the spend persist.
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(
        ledger.budget().unwrap(),
        Some(Budget {
            epsilon: 2.0,
            delta: 1e-5
        })
    );
    assert!(ledger
        .charge(release(5.0), &ctx(50))
        .unwrap_err()
        .is_budget_exceeded());
    let audit = ledger.audit().unwrap();
    assert_eq!(audit.entries.len() as u64, recorded);
    assert!(audit.remaining.unwrap() >= 0.0 && audit.chain.valid);
    assert!(audit
        .entries
        .windows(2)
        .all(|w| w[0].epsilon_cumulative <= w[1].epsilon_cumulative));
}

#[test]
fn invalid_budgets_are_rejected() {
    assert!(Budget::new(0.0, 1e-5).is_err());
    assert!(Budget::new(-1.0, 1e-5).is_err());
    assert!(Budget::new(1.0, 0.0).is_err());
    assert!(Budget::new(1.0, 1.0).is_err());
    assert!(Budget::new(f64::INFINITY, 1e-5).is_err());
}

#[test]
fn corrupt_key_file_is_an_error_not_a_new_key() {
    let dir = ledger_with(1);
    std::fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
    let err = Ledger::open(dir.path()).unwrap_err();
    assert!(matches!(err, PrivacyError::Malformed { .. }), "{err}");
}

/// One round of DP-SGD on a node's 600 records: 20 steps at q = 0.1, z = 1.2, C = 1.
fn training() -> TrainingCost {
    TrainingCost {
        records: 600,
        sample_rate: 0.1,
        noise_multiplier: 1.2,
        clip: 1.0,
        steps: 20,
    }
}

fn record_ctx(round: u64) -> ChargeContext {
    ChargeContext {
        round,
        dataset_id: "coco-captions/node-1".into(),
        unit: PrivacyUnit::Record,
    }
}

/// The one-time release of a node's class shares: a single Gaussian release, record-level.
fn class_shares() -> GaussianRelease {
    GaussianRelease::new(&ReleaseConfig {
        clip: 1.0,
        noise_multiplier: 8.0,
        expected_participants: 1,
        min_participants: 1,
        sample_rate: 1.0,
        dimension: 10,
    })
    .unwrap()
}

#[test]
fn charged_training_is_durable_and_costs_the_composed_subsampled_gaussian() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let check = ledger.check_training(&training()).unwrap();
        assert!(check.fits && check.spent == 0.0 && check.after > 0.0);
        assert_eq!(
            ledger.charge_training(&training(), &record_ctx(1)).unwrap(),
            0
        );
        // Dropped without any further call: the entry must already be on disk.
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.len().unwrap(), 1);
    let entries = ledger.entries().unwrap();
    assert_eq!(entries[0].unit, PrivacyUnit::Record);
    assert_eq!(entries[0].round, 1);
    assert_eq!(entries[0].cost, Spend::Training(training()));
    let want = epsilon_for(1.2, 0.1, 20, 1e-5).unwrap().epsilon;
    let got = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");

    let audit = ledger.audit().unwrap();
    assert!(audit.chain.valid);
    let row = &audit.entries[0];
    assert_eq!(row.unit, PrivacyUnit::Record);
    assert_eq!(row.mechanism, MechanismKind::DpSgd);
    assert_eq!((row.records, row.steps), (Some(600), Some(20)));
    assert_eq!((row.sample_rate, row.noise_multiplier), (0.1, 1.2));
    assert_eq!(row.expected_participants, None);
    assert_eq!(row.aggregate_rho, None);
    let json = serde_json::to_value(row).unwrap();
    assert_eq!(json["unit"], "record");
    assert_eq!(json["mechanism"], "dp_sgd");
    assert!(json["dimension"].is_null() && json["steps"] == 20);
}

#[test]
fn class_shares_and_training_rounds_compose() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let shares = class_shares();
    let mut want = RdpAccountant::new();
    want.compose_curve(&shares.cost().rdp_curve(ledger.orders()).unwrap())
        .unwrap();
    let charged = ledger.charge(shares, &record_ctx(0)).unwrap();
    assert_eq!(charged.seq(), 0);
    charged.noise_f32(&[0.1; 10]).unwrap();
    for round in 1..=3 {
        let predicted = ledger.check_training(&training()).unwrap().after;
        let seq = ledger
            .charge_training(&training(), &record_ctx(round))
            .unwrap();
        assert_eq!(seq, round);
        want.compose_subsampled_gaussian(0.1, 1.2, 20).unwrap();
        let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
        assert!((spent - predicted).abs() < 1e-12, "{spent} vs {predicted}");
    }
    let got = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    let want = want.epsilon(1e-5).unwrap().epsilon;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    // More than training alone: the share release counts.
    assert!(got > epsilon_for(1.2, 0.1, 60, 1e-5).unwrap().epsilon);

    let audit = ledger.audit().unwrap();
    assert!(audit.chain.valid && audit.entries.len() == 4);
    assert!(audit.entries.iter().all(|e| e.unit == PrivacyUnit::Record));
    assert_eq!(audit.entries[0].mechanism, MechanismKind::Gaussian);
    assert_eq!(audit.entries[0].steps, None);
    assert_eq!(audit.entries[0].dimension, Some(10));
    assert!(audit.entries[1..]
        .iter()
        .all(|e| e.mechanism == MechanismKind::DpSgd));
    assert!((audit.entries[3].epsilon_cumulative - got).abs() < 1e-12);
    drop(ledger);
    assert!(Ledger::open(dir.path()).unwrap().verify().unwrap().valid);
}

#[test]
fn training_over_the_budget_is_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let one_round = epsilon_for(1.2, 0.1, 20, 1e-5).unwrap().epsilon;
    // Room for one round of training but not two.
    let cap = one_round * 1.2;
    ledger.set_budget(Budget::new(cap, 1e-5).unwrap()).unwrap();
    ledger.charge_training(&training(), &record_ctx(1)).unwrap();
    let check = ledger.check_training(&training()).unwrap();
    assert!(!check.fits && check.after > cap, "{check:?}");
    let err = ledger
        .charge_training(&training(), &record_ctx(2))
        .unwrap_err();
    assert!(err.is_budget_exceeded(), "{err}");
    assert_eq!(ledger.len().unwrap(), 1);
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.len().unwrap(), 1);
    assert!(ledger.verify().unwrap().valid);
    let spent = ledger.epsilon_spent(1e-5).unwrap().epsilon;
    assert!((spent - one_round).abs() < 1e-9 && spent <= cap);
}

#[test]
fn invalid_training_and_a_client_unit_are_rejected_without_recording() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let bad = TrainingCost {
        steps: 0,
        ..training()
    };
    assert!(ledger
        .check_training(&bad)
        .unwrap_err()
        .is_invalid_argument());
    let err = ledger.charge_training(&bad, &record_ctx(1)).unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
    let client = ChargeContext {
        unit: PrivacyUnit::Client,
        ..record_ctx(1)
    };
    let err = ledger.charge_training(&training(), &client).unwrap_err();
    assert!(
        err.is_invalid_argument() && err.to_string().contains("record"),
        "{err}"
    );
    assert!(ledger.is_empty().unwrap());
}

#[test]
fn tampering_with_a_training_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.charge(release(3.0), &ctx(0)).unwrap();
        ledger.charge_training(&training(), &record_ctx(1)).unwrap();
        ledger.charge_training(&training(), &record_ctx(2)).unwrap();
        assert!(ledger.verify().unwrap().valid);
    }
    tamper(dir.path(), |t| {
        let v = t.get(entry_key(1)).unwrap().unwrap();
        let s = String::from_utf8(v.to_vec()).unwrap();
        // Pretend only 2 of the 20 steps ran, to claw back budget.
        let edited = s.replacen("\\\"steps\\\":20", "\\\"steps\\\":2", 1);
        assert_ne!(s, edited);
        t.insert(entry_key(1), edited.as_bytes()).unwrap();
    });
    assert_detected(dir.path(), "entry 1: its hash does not match");
    let ledger = Ledger::open(dir.path()).unwrap();
    let err = ledger
        .charge_training(&training(), &record_ctx(3))
        .unwrap_err();
    assert!(matches!(err, PrivacyError::ChainBroken(_)), "{err}");
}
