//! `fedmmkt privacy` end to end: accountant commands, budget, audit, tamper detection, exit codes.

use std::path::Path;
use std::process::{Command, Output};

use privacy::ledger::{ChargeContext, Ledger, TrainingCost, DB_DIR, TREE};
use privacy::mechanism::{GaussianRelease, ReleaseConfig};
use privacy::PrivacyUnit;

fn fedmmkt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn epsilon_reproduces_the_tf_privacy_reference() {
    let out = fedmmkt(&[
        "privacy",
        "epsilon",
        "--noise-multiplier",
        "1.3",
        "--sample-rate",
        "0.0025",
        "--rounds",
        "6000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let v = stdout_json(&out);
    let eps = v["epsilon"].as_f64().unwrap();
    assert!((eps - 0.7242).abs() / 0.7242 < 0.005, "{eps}");
    assert!(v["order"].as_f64().unwrap() > 1.0);
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[test]
fn noise_inverts_epsilon() {
    let out = fedmmkt(&[
        "privacy",
        "noise",
        "--epsilon",
        "1",
        "--delta",
        "1e-6",
        "--sample-rate",
        "1",
        "--rounds",
        "1",
        "--json",
    ]);
    let z = stdout_json(&out)["noise_multiplier"].as_f64().unwrap();
    assert!((z - 4.530877117).abs() / 4.530877117 < 0.005, "{z}");
    // Human output mentions the achieved ε.
    let out = fedmmkt(&[
        "privacy",
        "noise",
        "--epsilon",
        "1",
        "--delta",
        "1e-6",
        "--sample-rate",
        "1",
        "--rounds",
        "1",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("noise multiplier z = 4.53"));
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "-1",
                "--sample-rate",
                "0.1",
                "--rounds",
                "10",
                "--delta",
                "1e-5",
            ],
            "noise multiplier",
        ),
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "1.5",
                "--rounds",
                "10",
                "--delta",
                "1e-5",
            ],
            "sample rate",
        ),
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0",
                "--rounds",
                "10",
                "--delta",
                "1e-5",
            ],
            "sample rate",
        ),
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0.1",
                "--rounds",
                "10",
                "--delta",
                "1",
            ],
            "delta",
        ),
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0.1",
                "--rounds",
                "0",
                "--delta",
                "1e-5",
            ],
            "rounds",
        ),
        (
            &[
                "privacy",
                "noise",
                "--epsilon",
                "-2",
                "--delta",
                "1e-5",
                "--sample-rate",
                "0.1",
                "--rounds",
                "10",
            ],
            "epsilon",
        ),
        (
            &[
                "privacy",
                "budget",
                "--epsilon",
                "4",
                "--delta",
                "2",
                "--data-dir",
                "/nonexistent/never-created",
            ],
            "delta",
        ),
        (
            &[
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "abc",
                "--sample-rate",
                "0.1",
                "--rounds",
                "10",
                "--delta",
                "1e-5",
            ],
            "invalid value",
        ),
    ];
    for (args, needle) in cases {
        let out = fedmmkt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!Path::new("/nonexistent/never-created").exists());
}

/// Records `n` releases in the ledger of `dir` the way a node would; returns the still-open
/// ledger (sled releases its file lock only some time after a drop, so a test that goes on
/// writing keeps this one instead of reopening it).
fn record(dir: &Path, n: u64) -> Ledger {
    let ledger = Ledger::open(dir).unwrap();
    for round in 0..n {
        let release = GaussianRelease::new(&ReleaseConfig {
            clip: 1.0,
            noise_multiplier: 4.0,
            expected_participants: 10,
            min_participants: 8,
            sample_rate: 1.0,
            dimension: 32,
        })
        .unwrap();
        let ctx = ChargeContext {
            round,
            dataset_id: "cli-test".into(),
            unit: PrivacyUnit::Client,
        };
        ledger
            .charge(release, &ctx)
            .unwrap()
            .noise_f32(&[0.1; 32])
            .unwrap();
    }
    ledger
}

#[test]
fn audit_takes_the_node_data_directory_too() {
    // A node keeps its ledger in DIR/ledger; naming DIR is enough.
    let dir = tempfile::tempdir().unwrap();
    record(&dir.path().join("ledger"), 2);
    let v = stdout_json(&fedmmkt(&[
        "privacy",
        "audit",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["chain"]["valid"], true);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    // A directory with neither is still refused with the reason.
    let empty = tempfile::tempdir().unwrap();
    let out = fedmmkt(&[
        "privacy",
        "audit",
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no privacy ledger"));
}

#[test]
fn audit_shows_units_and_training_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    {
        let ledger = record(dir.path(), 1);
        let cost = TrainingCost {
            records: 600,
            sample_rate: 0.1,
            noise_multiplier: 1.2,
            clip: 1.0,
            steps: 20,
        };
        let ctx = ChargeContext {
            round: 1,
            dataset_id: "cli-train".into(),
            unit: PrivacyUnit::Record,
        };
        assert_eq!(ledger.charge_training(&cost, &ctx).unwrap(), 1);
    }
    let v = stdout_json(&fedmmkt(&["privacy", "audit", "--data-dir", d, "--json"]));
    assert_eq!(v["chain"]["valid"], true);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries[0]["unit"], "client");
    assert_eq!(entries[0]["steps"], serde_json::Value::Null);
    assert_eq!(entries[1]["unit"], "record");
    assert_eq!(entries[1]["mechanism"], "dp_sgd");
    assert_eq!(entries[1]["steps"], 20);
    assert_eq!(entries[1]["records"], 600);
    assert_eq!(entries[1]["dimension"], serde_json::Value::Null);

    let human = fedmmkt(&["privacy", "audit", "--data-dir", d]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("unit") && text.contains("steps"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("cli-train"))
        .unwrap_or_default();
    assert!(
        row.contains("record") && row.contains("dp_sgd") && row.contains(" 600 "),
        "{text}"
    );
    assert!(text.contains("over 2 entries"), "{text}");
}

#[test]
fn budget_then_audit_then_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // Auditing a directory without a ledger is an error, not an empty success.
    let out = fedmmkt(&["privacy", "audit", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no privacy ledger"));

    let out = fedmmkt(&[
        "privacy",
        "budget",
        "--epsilon",
        "8",
        "--delta",
        "1e-5",
        "--data-dir",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ε ≤ 8"));

    record(dir.path(), 3);
    let v = stdout_json(&fedmmkt(&["privacy", "audit", "--data-dir", d, "--json"]));
    assert_eq!(v["chain"]["valid"], true);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let last = entries[2]["epsilon_cumulative"].as_f64().unwrap();
    let spent = v["epsilon_spent"].as_f64().unwrap();
    assert!((last - spent).abs() < 1e-12 && spent > 0.0);
    assert!((v["remaining"].as_f64().unwrap() - (8.0 - spent)).abs() < 1e-9);
    assert_eq!(v["budget"]["epsilon"], 8.0);

    let human = fedmmkt(&["privacy", "audit", "--data-dir", d]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("chain   verified (3 entries)"), "{text}");
    assert!(text.contains("cli-test"));

    // Delete the middle entry behind the node's back: audit must fail with exit 3.
    {
        let db = sled::open(dir.path().join(DB_DIR)).unwrap();
        let mut key = b"e:".to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        db.open_tree(TREE).unwrap().remove(key).unwrap();
        db.flush().unwrap();
    }
    let out = fedmmkt(&["privacy", "audit", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOES NOT VERIFY"));
    let out = fedmmkt(&["privacy", "audit", "--data-dir", d, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chain"]["valid"], false);

    // Auditing never creates a key: with the key gone it is an error and nothing is written.
    std::fs::remove_file(dir.path().join(privacy::ledger::KEY_FILE)).unwrap();
    let out = fedmmkt(&["privacy", "audit", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_key.pk8"));
    assert!(!dir.path().join(privacy::ledger::KEY_FILE).exists());
}
