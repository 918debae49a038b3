//! Real nodes on loopback: `fedmmkt run` processes that find each other from one bootstrap
//! address, elect a host, run FedMMKT rounds with DP and secure aggregation, survive a client
//! SIGKILL + restart and a host SIGKILL, and keep two kinds of intruder out; three nodes (the
//! smallest federation, the host contributing like the others) complete rounds on their own.
//!
//! Traffic stays on 127.0.0.1; mDNS is off.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use node::admin::StatusReport;
use node::metrics::RoundMetrics;
use protocol::wire::Phase;
use serde_json::Value;
use support::{configure, init, round_of, wait_for, Proc, OTHER_PSK, PSK};

#[test]
fn nodes_elect_a_host_run_private_rounds_survive_kills_and_refuse_intruders() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let other_psk = tmp.path().join("other.hex");
    std::fs::write(&other_psk, OTHER_PSK).unwrap();
    let n = 5;
    let rounds = 4;
    let dirs: Vec<PathBuf> = (0..n).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    // Two intruders: one without the key, one with the key but not on the member list.
    let stranger = tmp.path().join("stranger");
    let stranger_id = init(&stranger, &other_psk);
    let insider = tmp.path().join("insider");
    let insider_id = init(&insider, &psk);

    configure(&dirs[0], &ids, None, rounds);
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure(d, &ids, Some(&boot), rounds);
        procs.push(Proc::start(d));
    }
    configure(&stranger, &ids, Some(&boot), rounds);
    let stranger_proc = Proc::start(&stranger);
    let mut insider_members = ids.clone();
    insider_members.push(insider_id.clone());
    configure(&insider, &insider_members, Some(&boot), rounds);
    let insider_proc = Proc::start(&insider);

    // Everyone finds everyone from the one bootstrap address, and one host is elected.
    wait_for("full mesh and a host", Duration::from_secs(30), || {
        procs.iter().all(|p| {
            p.status()
                .is_some_and(|s| s.peers.len() == n - 1 && s.host.is_some())
        })
    });
    let statuses: Vec<StatusReport> = procs.iter().map(|p| p.status().unwrap()).collect();
    let host = statuses[0].host.clone().unwrap();
    assert!(statuses
        .iter()
        .all(|s| s.host.as_deref() == Some(host.as_str())));
    wait_for("round 1", Duration::from_secs(40), || {
        procs.iter().all(|p| round_of(p) >= 1)
    });

    // A client is SIGKILLed during round 2 and restarted from its data directory.
    let victim = (0..n).find(|&i| ids[i] != host).unwrap();
    wait_for("the victim in round 2", Duration::from_secs(30), || {
        procs[victim].status().is_some_and(|s| {
            s.round == 1
                && matches!(
                    s.phase,
                    Some(Phase::Learn | Phase::Judge | Phase::Aggregate)
                )
        })
    });
    procs[victim].sigkill();
    procs[victim] = Proc::start(&dirs[victim]);
    // On a loaded machine the restarted client may miss round 2 and catch up only with a later
    // checkpoint, so only the host's progress is awaited here; the end checks the client's.
    let h = ids.iter().position(|id| *id == host).unwrap();
    wait_for(
        "round 2 after the client restart",
        Duration::from_secs(60),
        || round_of(&procs[h]) >= 2,
    );

    // The host is SIGKILLed in the middle of a later round (round 3, or round 4 if round 3 went
    // by between two polls): a new host resumes from the replicated checkpoint.
    wait_for("the host in round 3", Duration::from_secs(60), || {
        procs[h].status().is_some_and(|s| {
            (2..rounds).contains(&s.round)
                && !matches!(s.phase, Some(Phase::Complete | Phase::Abandoned))
        })
    });
    let killed_at = Instant::now();
    procs[h].sigkill();
    let alive: Vec<usize> = (0..n).filter(|&i| i != h).collect();
    wait_for("a new host", Duration::from_secs(15), || {
        alive.iter().all(|&i| {
            procs[i]
                .status()
                .is_some_and(|s| s.host.as_ref().is_some_and(|x| *x != host))
        })
    });
    let reelected = killed_at.elapsed();
    wait_for("all rounds", Duration::from_secs(90), || {
        alive.iter().all(|&i| round_of(&procs[i]) >= rounds)
    });

    // Every ledger verifies, stays within budget, and charged each attempt at most once.
    for &i in &alive {
        let audit = procs[i].audit();
        assert_eq!(
            audit["chain"]["valid"],
            Value::Bool(true),
            "node {i}: {audit}"
        );
        let spent = audit["epsilon_spent"].as_f64().unwrap();
        let budget = audit["budget"]["epsilon"].as_f64().unwrap();
        assert!(spent <= budget + 1e-9, "node {i} spent {spent} > {budget}");
        // One spend per kind per round attempt (record-level: one DP-SGD training per round,
        // the class counts once).
        let mut attempts: Vec<(u64, String, String)> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["round"].as_u64().unwrap(),
                    e["dataset_id"].as_str().unwrap().to_string(),
                    e["mechanism"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let total = attempts.len();
        attempts.sort();
        attempts.dedup();
        assert_eq!(attempts.len(), total, "node {i} answered an attempt twice");
        // Every node contributes, the hosts of either term included.
        assert!(total >= 1, "node {i} never released anything");
    }
    // The restarted client rejoined and took part again after its restart.
    let s = procs[victim].status().unwrap();
    assert!(
        s.running && s.round >= rounds && s.peers.len() >= n - 2,
        "{s:?}"
    );

    // Neither intruder got in.
    for (name, p, id) in [
        ("stranger", &stranger_proc, &stranger_id),
        ("insider", &insider_proc, &insider_id),
    ] {
        let s = p.status().unwrap();
        assert!(s.peers.is_empty(), "{name} connected to {:?}", s.peers);
        assert_eq!(s.round, 0, "{name} completed a round");
        for &i in &alive {
            let peers = procs[i].status().unwrap().peers;
            assert!(!peers.contains(id), "node {i} lists the {name}");
        }
    }
    eprintln!(
        "{rounds} rounds on {n} nodes with a client restart and a host kill in {:.1} s; new host after {:.2} s",
        t0.elapsed().as_secs_f64(),
        reelected.as_secs_f64()
    );
}

#[test]
fn three_nodes_elect_one_host_and_every_node_contributes_to_each_round() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let n = 3;
    let rounds = 2;
    let dirs: Vec<PathBuf> = (0..n).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    configure(&dirs[0], &ids, None, rounds);
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure(d, &ids, Some(&boot), rounds);
        procs.push(Proc::start(d));
    }
    wait_for("all rounds", Duration::from_secs(90), || {
        procs.iter().all(|p| round_of(p) >= rounds)
    });
    let statuses: Vec<StatusReport> = procs.iter().map(|p| p.status().unwrap()).collect();
    let host = statuses[0].host.clone().unwrap();
    assert!(
        statuses.iter().all(|s| s.host.as_deref() == Some(&*host)),
        "one host: {statuses:?}"
    );
    let h = ids.iter().position(|id| *id == host).unwrap();
    // The host's last round summed all three uploads, its own included, and it learned too.
    let metrics = statuses[h].last_metrics.clone().unwrap();
    let RoundMetrics::Host {
        mut participants,
        test_acc,
        ..
    } = metrics.clone()
    else {
        panic!("the host reports client metrics: {metrics:?}");
    };
    participants.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(participants, all, "{metrics:?}");
    assert!(test_acc.is_some(), "{metrics:?}");
    // Each node, the host too, charged its own ledger once per round before its upload left.
    for (i, p) in procs.iter().enumerate() {
        let audit = p.audit();
        assert_eq!(audit["chain"]["valid"], Value::Bool(true), "node {i}");
        let entries = audit["entries"].as_array().unwrap();
        let mut charged: Vec<u64> = entries
            .iter()
            .map(|e| e["round"].as_u64().unwrap())
            .collect();
        charged.dedup();
        assert_eq!(
            charged,
            (1..=rounds).collect::<Vec<_>>(),
            "node {i}: {audit}"
        );
    }
    eprintln!(
        "{rounds} rounds on {n} nodes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
