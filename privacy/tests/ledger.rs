//! The signed hash-chained ledger: tamper detection, budget enforcement, persistence.

use std::path::Path;

use privacy::error::PrivacyError;
use privacy::ledger::{Budget, ChargeContext, Ledger, DB_DIR, KEY_FILE, TREE};
use privacy::mechanism::{GaussianRelease, ReleaseConfig};

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
    assert!((entries[0].cost.charged_noise_multiplier - 3.0 * (0.8f64).sqrt()).abs() < 1e-5);
    // ε of 4 rounds equals the accountant's for the charged noise multiplier.
    let z = entries[0].cost.charged_noise_multiplier;
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
