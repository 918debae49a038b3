//! The node's data directory from the command line: `fedmmkt init`, `status`, `peers`, the
//! admin endpoint, and `privacy audit` on an initialised node's ledger.

mod support;

use std::path::Path;
use std::process::Output;
use support::fedmmkt;

use libp2p::PeerId;
use node::admin::{self, AdminState, PeerInfo, StatusReport};
use node::config::NodeConfig;
use node::metrics::RoundMetrics;
use node::net::psk::load_psk;
use node::store::{DataDir, NodeStore, PeerRecord};
use protocol::wire::Phase;
use serde_json::Value;

const HEX: &str = "5f3c1a9e0b7d2468ace013579bdf02468ace013579bdf02468ace013579bdf01";

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args`, asserts success and parses stdout as one JSON value.
fn json(args: &[&str]) -> Value {
    let out = fedmmkt(args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON value ({e}): {}", stdout(&out)))
}

/// `fedmmkt init --json` into `dir` with extra arguments; returns the peer id.
fn init(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["init", "--data-dir", path(dir), "--json"];
    args.extend_from_slice(extra);
    let v = json(&args);
    v["peer_id"].as_str().expect("peer_id").to_string()
}

#[test]
fn init_creates_everything_and_prints_a_peer_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node-a");
    let out = fedmmkt(&["init", "--data-dir", path(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let peer: PeerId = stdout(&out).trim().parse().expect("stdout is a peer id");
    let data = DataDir::new(&dir);
    assert!(data.is_initialised());
    for p in [data.config(), data.identity()] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    for p in [data.state(), data.checkpoints(), data.ledger().join("db")] {
        assert!(p.is_dir(), "{} missing", p.display());
    }
    assert!(data.ledger().join("node_key.pk8").is_file());
    assert!(!data.swarm_key().exists(), "no PSK was given");
    assert!(!data.admin_addr().exists());
    let key = node::store::load_identity(&dir).unwrap();
    assert_eq!(key.public().to_peer_id(), peer);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.identity())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "identity.key must be private");
    }
    let cfg = NodeConfig::load(&data.config()).unwrap();
    assert_eq!(cfg, NodeConfig::default());
    let text = std::fs::read_to_string(data.config()).unwrap();
    assert!(text.contains("# Total ε this node may spend"), "{text}");

    // --json, with a budget.
    let other = tmp.path().join("node-b");
    let v = json(&[
        "init",
        "--data-dir",
        path(&other),
        "--epsilon",
        "2.5",
        "--delta",
        "1e-6",
        "--json",
    ]);
    let b: PeerId = v["peer_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(b, peer);
    assert_eq!(v["data_dir"], path(&other));
    assert!(v["config"].as_str().unwrap().ends_with("config.toml"));
    let cfg = NodeConfig::load(&other.join("config.toml")).unwrap();
    assert_eq!((cfg.privacy.epsilon, cfg.privacy.delta), (2.5, 1e-6));
}

#[test]
fn second_init_refuses_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), &[]);
    let before = std::fs::read(tmp.path().join("identity.key")).unwrap();
    let out = fedmmkt(&["init", "--data-dir", path(tmp.path())]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already initialised"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(tmp.path().join("identity.key")).unwrap(),
        before
    );
    // A bad budget is a usage error too, and creates nothing.
    let fresh = tmp.path().join("fresh");
    let out = fedmmkt(&["init", "--data-dir", path(&fresh), "--epsilon", "-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--epsilon"), "{}", stderr(&out));
    assert!(!fresh.join("identity.key").exists());
}

#[test]
fn psk_file_in_both_formats_and_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.hex");
    std::fs::write(&plain, format!("\n  {HEX}  \n")).unwrap();
    let libp2p_format = tmp.path().join("swarm.key");
    std::fs::write(
        &libp2p_format,
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{HEX}\n"),
    )
    .unwrap();
    let mut fingerprints = Vec::new();
    for (name, file) in [("a", &plain), ("b", &libp2p_format)] {
        let dir = tmp.path().join(name);
        let v = json(&[
            "init",
            "--data-dir",
            path(&dir),
            "--psk-file",
            path(file),
            "--json",
        ]);
        fingerprints.push(v["psk_fingerprint"].as_str().unwrap().to_string());
        let copied = load_psk(&dir.join("swarm.key")).unwrap();
        assert_eq!(copied.fingerprint().to_string(), fingerprints[0]);
        let text = std::fs::read_to_string(dir.join("swarm.key")).unwrap();
        assert!(
            text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
            "{text}"
        );
        let cfg = NodeConfig::load(&dir.join("config.toml")).unwrap();
        assert_eq!(cfg.network.psk_file.as_deref(), Some("swarm.key"));
        assert_eq!(
            cfg.psk_path(&dir).map(|p| p.resolved().to_path_buf()),
            Some(dir.join("swarm.key"))
        );
    }
    assert_eq!(fingerprints[0], fingerprints[1]);

    let bad = tmp.path().join("bad.key");
    std::fs::write(&bad, "not a key at all\n").unwrap();
    let dir = tmp.path().join("c");
    let out = fedmmkt(&["init", "--data-dir", path(&dir), "--psk-file", path(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bad.key") && err.contains("swarm.key format") && err.contains("64 hex"),
        "{err}"
    );
    assert!(
        !dir.join("identity.key").exists(),
        "a rejected PSK must leave nothing behind"
    );
}

#[test]
fn status_of_a_stopped_node() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = init(tmp.path(), &["--epsilon", "3.5"]);
    let v = json(&["status", "--data-dir", path(tmp.path()), "--json"]);
    for key in [
        "peer_id",
        "running",
        "term",
        "host",
        "round",
        "phase",
        "peers",
        "epsilon_spent",
        "epsilon_budget",
    ] {
        assert!(v.get(key).is_some(), "status --json lacks {key}: {v}");
    }
    assert_eq!(v["peer_id"], peer.as_str());
    assert_eq!(v["running"], false);
    assert_eq!(v["term"], 0);
    assert_eq!(v["round"], 0);
    assert!(v["host"].is_null() && v["phase"].is_null());
    assert_eq!(v["peers"], serde_json::json!([]));
    assert_eq!(v["epsilon_spent"].as_f64(), Some(0.0));
    assert_eq!(v["epsilon_budget"].as_f64(), Some(3.5));

    // What the store holds shows up in status and peers.
    {
        let store = NodeStore::open_existing(tmp.path()).unwrap();
        store.set_election(4, Some(b"x")).unwrap();
        store.record_host(4, "host-peer").unwrap();
        store.set_last_completed_round(2).unwrap();
        store
            .upsert_peer(&PeerRecord {
                peer_id: "host-peer".into(),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
                gpu: true,
                memory_mb: 4096,
                last_completed_round: 2,
                last_seen_unix_ms: 1,
                ..PeerRecord::default()
            })
            .unwrap();
        // A member this node banned (until the year 2286), with why.
        store
            .upsert_peer(&PeerRecord {
                peer_id: "liar-peer".into(),
                offences: 20,
                banned_until_unix_ms: Some(9_999_999_999_999),
                last_offence: Some("undecodable request: unknown kind 99".into()),
                ..PeerRecord::default()
            })
            .unwrap();
    }
    let v = json(&["status", "--data-dir", path(tmp.path()), "--json"]);
    assert_eq!(
        (v["term"].as_u64(), v["round"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(v["host"], "host-peer");
    let out = fedmmkt(&["status", "--data-dir", path(tmp.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("running  no") && table.contains(&peer),
        "{table}"
    );
    let p = json(&["peers", "--data-dir", path(tmp.path()), "--json"]);
    assert_eq!(p["running"], false);
    assert_eq!(p["peers"][0]["peer_id"], "host-peer");
    assert_eq!(p["peers"][0]["gpu"], true);
    assert_eq!(p["peers"][0]["connected"], false);
    assert_eq!(p["peers"][0]["offences"], 0);
    assert_eq!(p["peers"][1]["peer_id"], "liar-peer");
    assert_eq!(p["peers"][1]["offences"], 20);
    assert_eq!(p["peers"][1]["banned_until_unix_ms"], 9_999_999_999_999u64);
    let out = fedmmkt(&["peers", "--data-dir", path(tmp.path())]);
    let table = stdout(&out);
    assert!(
        out.status.success() && table.contains("host-peer"),
        "{table}"
    );
    assert!(
        table.contains(
            "liar-peer is banned; its latest offence: undecodable request: unknown kind 99"
        ),
        "{table}"
    );
}

#[test]
fn status_and_peers_on_an_uninitialised_dir_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["status", "peers"] {
        let out = fedmmkt(&[cmd, "--data-dir", path(tmp.path()), "--json"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not an initialised fedmmkt data directory"),
            "{cmd}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn admin_endpoint_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = init(tmp.path(), &[]);
    let state = AdminState {
        status: StatusReport {
            peer_id: peer.clone(),
            running: true,
            term: 7,
            host: Some(peer.clone()),
            round: 5,
            phase: Some(Phase::Judge),
            peers: vec!["p1".into(), "p2".into()],
            epsilon_spent: 1.25,
            epsilon_budget: 8.0,
            delta: 1e-5,
            privacy_unit: privacy::PrivacyUnit::Record,
            private_training: Some(node::learn::PrivateUse::BudgetSpent),
            last_metrics: Some(RoundMetrics::Client {
                round: 5,
                term: 7,
                test_acc: 0.7,
                learn_seconds: 2.5,
            }),
            preparing: Some("pre-training (cached)".into()),
            secure_aggregation: Some("SecAgg (complete graph, t = 3 of 4)".into()),
            checkpoint_bytes_served: 1234,
        },
        peers: vec![PeerInfo {
            peer_id: "p1".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            gpu: false,
            memory_mb: 512,
            last_completed_round: 5,
            connected: true,
            last_seen_unix_ms: 1,
            ..PeerInfo::default()
        }],
        audit: None,
        ..AdminState::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(state.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    admin::write_addr(tmp.path(), addr).unwrap();
    let server = rt.spawn(admin::http::serve(listener, admin::Access::default(), rx));

    let got = admin::query(tmp.path(), "status").unwrap().unwrap();
    let got: StatusReport = serde_json::from_value(got).unwrap();
    assert_eq!(got, state.status);
    assert_eq!(
        admin::query_peers(tmp.path()).unwrap().unwrap(),
        state.peers
    );
    // The CLI asks the endpoint while the node runs.
    let v = json(&["status", "--data-dir", path(tmp.path()), "--json"]);
    assert_eq!(v["running"], true);
    assert_eq!(v["term"], 7);
    assert_eq!(v["phase"], "judge");
    assert_eq!(v["last_metrics"]["role"], "client");
    assert_eq!(v["last_metrics"]["test_acc"].as_f64(), Some(0.7));
    assert_eq!(v["preparing"], "pre-training (cached)");
    assert_eq!(v["privacy_unit"], "record");
    assert_eq!(v["private_training"], "budget-spent");
    let text = stdout(&fedmmkt(&["status", "--data-dir", path(tmp.path())]));
    assert!(
        text.contains("record-level")
            && text.contains("synthetic samples only")
            && text.contains(&format!("admin    http://{addr}/")),
        "{text}"
    );
    let p = json(&["peers", "--data-dir", path(tmp.path()), "--json"]);
    assert_eq!(p["running"], true);
    assert_eq!(p["peers"][0]["connected"], true);
    // Updates through the watch channel are visible at once.
    tx.send_modify(|s| s.status.round = 6);
    assert_eq!(admin::query_status(tmp.path()).unwrap().unwrap().round, 6);
    assert!(matches!(
        admin::query(tmp.path(), "reboot"),
        Err(admin::AdminError::Remote { status: 404, .. })
    ));

    // Clean shutdown: sender dropped, server ends, address removed, status reads the store.
    drop(tx);
    rt.block_on(server).unwrap();
    admin::remove_addr(tmp.path()).unwrap();
    assert!(admin::query(tmp.path(), "status").unwrap().is_none());
    let v = json(&["status", "--data-dir", path(tmp.path()), "--json"]);
    assert_eq!(v["running"], false);
}

#[test]
fn privacy_audit_of_an_initialised_node() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), &["--epsilon", "4", "--delta", "1e-6"]);
    let ledger_dir = tmp.path().join("ledger");
    let v = json(&[
        "privacy",
        "audit",
        "--data-dir",
        path(&ledger_dir),
        "--json",
    ]);
    assert_eq!(v["budget"]["epsilon"].as_f64(), Some(4.0));
    assert_eq!(v["budget"]["delta"].as_f64(), Some(1e-6));
    assert_eq!(v["epsilon_spent"].as_f64(), Some(0.0));
    assert_eq!(v["entries"], serde_json::json!([]));
    assert_eq!(v["chain"]["valid"], true);
    let out = fedmmkt(&["privacy", "audit", "--data-dir", path(&ledger_dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("budget  ε ≤ 4"), "{}", stdout(&out));

    // While a node holds the ledger, the audit comes from its admin endpoint.
    let ledger = privacy::ledger::Ledger::open_existing(&ledger_dir).unwrap();
    let audit = serde_json::to_value(ledger.audit().unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(AdminState {
        audit: Some(audit),
        ..AdminState::default()
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    admin::write_addr(tmp.path(), listener.local_addr().unwrap()).unwrap();
    let server = rt.spawn(admin::http::serve(listener, admin::Access::default(), rx));
    let from_node = json(&[
        "privacy",
        "audit",
        "--data-dir",
        path(&ledger_dir),
        "--json",
    ]);
    assert_eq!(from_node["public_key"], v["public_key"]);
    assert_eq!(from_node["budget"], v["budget"]);
    drop(tx);
    rt.block_on(server).unwrap();
    admin::remove_addr(tmp.path()).unwrap();
    // Locked and no endpoint: a clear error, not a hang.
    let out = fedmmkt(&["privacy", "audit", "--data-dir", path(&ledger_dir)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin endpoint"), "{}", stderr(&out));
    drop(ledger);
}
