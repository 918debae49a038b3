//! A small testnet end to end: 4 real node processes on loopback, 2 rounds of tiny models with
//! DP and secure aggregation, the host SIGKILLed in round 2, an intruder without the key.

use std::path::Path;
use std::time::Duration;

use testnet::cluster::node_binary;
use testnet::faults::Fault;
use testnet::up::{up, UpConfig};

#[test]
fn a_host_kill_and_an_intruder_leave_every_invariant_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = node_binary(None, Path::new(env!("CARGO_BIN_EXE_fedmmkt-testnet"))).unwrap();
    let cfg = UpConfig {
        nodes: 4,
        rounds: 2,
        alpha: 0.5,
        seed: 3,
        epsilon: 8.0,
        delta: 1e-5,
        // Client-level: local training is plain, so round 1 (no teacher yet) must equal the
        // (non-private) local-only reference below. Record-level runs are the README command's.
        unit: privacy::PrivacyUnit::Client,
        out: tmp.path().join("out"),
        tiny: true,
        faults: vec![Fault::KillHost { round: 2 }],
        intruder: true,
        timeout: Duration::from_secs(100),
        bin,
        progress: false,
        baseline: false,
        tolerance: 0.05,
        dashboard: None,
    };
    let report = up(&cfg).unwrap();
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!((report.rounds_requested, report.rounds_completed), (2, 2));
    assert!(report.ledgers_verified && !report.budget_exceeded);
    assert_eq!(report.double_counted_rounds, 0);
    assert_eq!(report.double_answered_attempts, 0);
    assert_eq!(report.intruder_refused, Some(true));
    // The kill happened, a different node hosted a later term and completed round 2.
    assert_eq!(report.faults.len(), 1);
    assert!(report.terms.len() >= 2, "{:?}", report.terms);
    let r1 = &report.rounds[0];
    let r2 = &report.rounds[1];
    assert_ne!(r1.host, r2.host, "round 2 was completed by the new host");
    assert!(r2.term > r1.term);
    assert!(report.reelection_seconds.is_some() && report.host_kill_recovery_seconds.is_some());
    // Every round has its numbers, and each client took part in a secure sum.
    for r in &report.rounds {
        assert!(
            r.participants >= 2 && r.bytes > 0 && r.seconds > 0.0,
            "{r:?}"
        );
        assert!(r.client_acc_mean.is_some() && r.gen_oracle_acc.is_some());
    }
    // The local-only reference: every node's model on its own data alone, every round.
    let local_secs = report.local_only_seconds.unwrap();
    assert!(local_secs > 0.0 && local_secs < 60.0, "{local_secs}");
    for r in &report.rounds {
        assert_eq!(r.local_acc.len(), 4, "{r:?}");
        assert!(
            r.local_acc.values().all(|a| (0.0..=1.0).contains(a)),
            "{r:?}"
        );
        let (mean, min) = (r.local_acc_mean.unwrap(), r.local_acc_min.unwrap());
        assert!(min <= mean && mean <= 1.0, "{r:?}");
    }
    // Round 1 has no teacher yet, so a client learns in it exactly what it learns alone: the
    // reference must reproduce the node's own measurement (it trains the same model).
    let r1 = &report.rounds[0];
    assert!(
        r1.client_acc
            .iter()
            .any(|(n, a)| r1.local_acc.get(n).is_some_and(|l| (l - a).abs() < 1e-12)),
        "round 1: nodes {:?}, local only {:?}",
        r1.client_acc,
        r1.local_acc
    );
    let killed = report.peers.iter().find(|p| p.kills == 1).unwrap();
    assert_eq!(killed.restarts, 1);
    assert!(report
        .peers
        .iter()
        .all(|p| p.running_at_end && p.ledger_verified));
    // The report a person reads, and the machine-readable one.
    let out = tmp.path().join("out");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in [
        "nodes",
        "rounds_requested",
        "rounds_completed",
        "terms",
        "rounds",
        "ledgers_verified",
        "budget_exceeded",
        "double_counted_rounds",
        "intruder_refused",
        "local_only_seconds",
    ] {
        assert!(json.get(key).is_some(), "report.json lacks {key}");
    }
    for key in ["local_acc_mean", "local_acc_min", "local_acc"] {
        assert!(
            json["rounds"][0].get(key).is_some(),
            "rounds[0] lacks {key}"
        );
    }
    for png in [
        "client_accuracy.png",
        "generator_accuracy.png",
        "epsilon.png",
        "grid_round_2.png",
    ] {
        assert!(out.join(png).is_file(), "{png} missing");
    }
    // Every node shut down cleanly: no admin endpoint is left behind.
    for p in 0..4 {
        let dir = out.join("nodes").join(format!("n{p}"));
        assert!(!dir.join("admin.addr").exists(), "n{p} left its admin.addr");
    }
}
