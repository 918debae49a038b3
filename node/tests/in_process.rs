//! Three nodes in one process, over in-memory channels instead of sockets: the node's run
//! loop itself (election, the host's and clients' sessions carried out as effects, the host
//! contributing through its local queue, the ledgers, replication) without a process per
//! node. Only the admin endpoints use loopback TCP, to read each node's status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node::admin::{self, StatusReport};
use node::cli::init::{self, InitArgs};
use node::config::NodeConfig;
use node::metrics::RoundMetrics;
use node::paths::UserPath;
use node::run::{self, RunOptions};
use serde_json::Value;

const PSK: &str = "5f3c1a9e0b7d2468ace013579bdf02468ace013579bdf02468ace013579bdf01";

fn status(dir: &Path) -> Option<StatusReport> {
    admin::query_status(dir).ok().flatten()
}

#[test]
fn three_nodes_in_one_process_elect_a_host_and_every_node_contributes_to_each_round() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let rounds = 2u64;
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    for d in &dirs {
        let code = init::run(InitArgs {
            data_dir: d.clone(),
            psk_file: Some(psk.clone()),
            epsilon: None,
            delta: None,
            json: false,
        })
        .unwrap();
        assert_eq!(code, std::process::ExitCode::SUCCESS);
    }
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| {
            node::store::load_identity(d)
                .unwrap()
                .public()
                .to_peer_id()
                .to_string()
        })
        .collect();
    // Memory ports are process-wide: draw them so parallel tests do not collide.
    let base = 1 + rand::random::<u64>() % (1 << 40);
    for (i, d) in dirs.iter().enumerate() {
        let path = d.join("config.toml");
        let mut cfg = NodeConfig::load(&path).unwrap();
        cfg.network.listen = vec![format!("/memory/{}", base + i as u64)];
        cfg.network.members = ids.clone();
        if i > 0 {
            cfg.network.bootstrap = vec![format!("/memory/{base}/p2p/{}", ids[0])];
        }
        cfg.model.tiny = true;
        cfg.round.rounds = rounds;
        cfg.round.stage_timeout_secs = 6;
        cfg.round.round_interval_secs = 1;
        cfg.privacy.planned_rounds = rounds as u32 + 2;
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let nodes: Vec<_> = dirs
        .iter()
        .map(|d| {
            let opts = RunOptions {
                data_dir: UserPath::from_cwd("--data-dir", d).unwrap(),
                listen: Vec::new(),
                bootstrap: Vec::new(),
                mdns: false,
                dataset: None,
                gpu: false,
            };
            let mut stopped = stopped.clone();
            rt.spawn(run::run(opts, async move {
                let _ = stopped.changed().await;
            }))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(150);
    while !dirs
        .iter()
        .all(|d| status(d).is_some_and(|s| s.round >= rounds))
    {
        assert!(
            Instant::now() < deadline,
            "rounds not completed: {:?}",
            dirs.iter().map(|d| status(d)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let statuses: Vec<StatusReport> = dirs.iter().map(|d| status(d).unwrap()).collect();
    let host = statuses[0].host.clone().unwrap();
    assert!(statuses.iter().all(|s| s.host.as_deref() == Some(&*host)));
    let h = ids.iter().position(|id| *id == host).unwrap();
    // The host's last round holds every node's upload, its own included.
    let Some(RoundMetrics::Host { participants, .. }) = &statuses[h].last_metrics else {
        panic!("no host metrics: {:?}", statuses[h]);
    };
    let mut got = participants.clone();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    // Record-level DP (the default): every node paid for each round's private training
    // exactly once (a retry after a host change is not trained again), released its class
    // counts once, stayed within budget, and its chain verifies.
    for d in &dirs {
        let audit: Value = admin::query(d, "audit").unwrap().unwrap();
        assert_eq!(audit["chain"]["valid"], Value::Bool(true), "{audit}");
        let entries = audit["entries"].as_array().unwrap();
        assert!(entries.iter().all(|e| e["unit"] == "record"), "{audit}");
        let training: Vec<u64> = entries
            .iter()
            .filter(|e| e["mechanism"] == "dp_sgd")
            .map(|e| e["round"].as_u64().unwrap())
            .collect();
        let mut distinct = training.clone();
        distinct.dedup();
        assert_eq!(distinct, training, "a round trained twice: {audit}");
        for round in 1..=rounds {
            assert!(
                training.contains(&round),
                "round {round} never charged: {audit}"
            );
        }
        let shares = entries
            .iter()
            .filter(|e| e["mechanism"] == "gaussian")
            .count();
        assert_eq!(shares, 1, "class counts released once: {audit}");
        let spent = audit["epsilon_spent"].as_f64().unwrap();
        assert!(spent <= audit["budget"]["epsilon"].as_f64().unwrap() + 1e-9);
    }

    stop.send(true).unwrap();
    for n in nodes {
        rt.block_on(n).unwrap().unwrap();
    }
    eprintln!(
        "{rounds} rounds on 3 in-process nodes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
