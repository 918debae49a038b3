//! End-to-end: every method and ablation runs rounds in-process on tiny models and data, the
//! report holds what scripts rely on, and one seed gives the same numbers twice.

use models::data::DataSource;
use std::collections::BTreeMap;

use node::report::{write_compare, write_privacy_utility, write_run, write_seeds};
use node::simulate::{
    client_data, run, run_name, Ablation, Method, Setup, SimConfig, COMPARE_RUNS,
};

fn tiny() -> (SimConfig, DataSource) {
    let full = DataSource::embedded().unwrap();
    let idx: Vec<usize> = (0..1400).collect();
    let src = DataSource {
        train: None,
        test: full.test.subset(&idx),
        origin: "tiny".into(),
    };
    let cfg = SimConfig::tiny();
    (cfg, src)
}

#[test]
fn every_method_and_ablation_runs_and_reports() {
    let (cfg, src) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
    assert!(setup.pretrained.is_file());
    assert!((0.0..=1.0).contains(&setup.oracle_acc_real));
    let mut reports = BTreeMap::new();
    for (method, ablation) in COMPARE_RUNS {
        let (report, images) = run(&cfg, &setup, method, ablation, &|_, _| {}).unwrap();
        let name = run_name(method, ablation);
        assert_eq!(report.method, name);
        assert_eq!(report.rounds.len(), cfg.rounds);
        for r in &report.rounds {
            assert_eq!(r.client_acc.len(), cfg.clients);
            assert!(r.client_acc.iter().all(|a| (0.0..=1.0).contains(a)));
            assert!(r.client_acc_min <= r.client_acc_mean);
            let has_generator = method == Method::Fedmmkt;
            assert_eq!(r.gen_oracle_acc.is_some(), has_generator, "{name}");
            if has_generator {
                let kept = r.kept.unwrap();
                assert!(kept <= 10 * cfg.host.samples_per_class);
                assert!(r.downlink_bytes > 0 && r.uplink_bytes > 0);
            }
        }
        if ablation == Some(Ablation::FrozenGenerator) {
            // Evaluation noise is the same every round, so a frozen generator scores exactly
            // its start.
            for r in &report.rounds {
                assert_eq!(r.gen_oracle_acc, Some(report.gen_oracle_acc_start));
                assert_eq!(r.gen_frechet, Some(report.gen_frechet_start));
            }
        }
        if ablation == Some(Ablation::NoFilter) {
            assert!(report
                .rounds
                .iter()
                .all(|r| r.kept == Some(10 * cfg.host.samples_per_class)));
        }
        if method == Method::Fedavg {
            // One global model, of FedAvg's one architecture.
            let r = report.rounds.last().unwrap();
            assert!(r.client_acc.iter().all(|&a| a == r.client_acc[0]));
            assert!(report.client_archs.iter().all(|&a| a == cfg.fedavg.arch));
        }
        let out = dir.path().join(name);
        write_run(&out, &report, &images, &setup.splits.test.classes).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        for key in [
            "method",
            "seed",
            "rounds",
            "gen_oracle_acc_start",
            "gen_frechet_start",
            "oracle_acc_real",
        ] {
            assert!(json.get(key).is_some(), "report.json lacks {key}");
        }
        for key in [
            "round",
            "client_acc_mean",
            "client_acc_min",
            "gen_oracle_acc",
            "gen_frechet",
            "seconds",
        ] {
            assert!(json["rounds"][0].get(key).is_some(), "round lacks {key}");
        }
        assert!(out.join("report.md").is_file() && out.join("client_accuracy.png").is_file());
        if method == Method::Fedmmkt {
            assert!(
                out.join("generated_end.png").is_file()
                    && out.join("generator_oracle_accuracy.png").is_file()
            );
        }
        reports.insert(name.to_string(), report);
    }
    write_compare(dir.path(), &reports).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("compare.json")).unwrap())
            .unwrap();
    for key in [
        "fedmmkt",
        "local",
        "fedavg",
        "fedmd",
        "host-data",
        "frozen-generator",
        "no-distill",
        "no-align",
        "no-filter",
    ] {
        assert!(json["runs"].get(key).is_some(), "compare.json lacks {key}");
    }
    assert_eq!(json["runs"].as_object().unwrap().len(), COMPARE_RUNS.len());
    assert!(dir.path().join("compare.png").is_file() && dir.path().join("compare.md").is_file());
    // Two identical "seeds": the means are the single values and the deviations zero.
    let mut all = BTreeMap::new();
    all.insert(1u64, reports.clone());
    all.insert(2u64, reports.clone());
    write_seeds(dir.path(), &all, &[1]).unwrap();
    let seeds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("seeds.json")).unwrap())
            .unwrap();
    let acc = reports["fedmmkt"].rounds.last().unwrap().client_acc_mean;
    let m = &seeds["runs"]["fedmmkt"]["client_acc_mean"];
    assert!((m["mean"].as_f64().unwrap() - acc).abs() < 1e-12);
    assert_eq!(m["sd"].as_f64().unwrap(), 0.0);
    // A table at round 1 as well, with round 1's numbers.
    let acc1 = reports["host-data"].rounds[0].client_acc_mean;
    let m1 = &seeds["at_round"]["1"]["host-data"]["client_acc_mean"];
    assert!((m1["mean"].as_f64().unwrap() - acc1).abs() < 1e-12);
    let md = std::fs::read_to_string(dir.path().join("seeds.md")).unwrap();
    assert!(md.contains("## Final round") && md.contains("## Round 1"));
    write_privacy_utility(dir.path(), &reports).unwrap();
    assert!(dir.path().join("privacy_utility.md").is_file());
}

#[test]
fn same_seed_same_numbers() {
    let (cfg, src) = tiny();
    let dir = tempfile::tempdir().unwrap();
    for method in [Method::Fedmmkt, Method::Fedavg, Method::HostData] {
        let once = || {
            let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
            run(&cfg, &setup, method, None, &|_, _| {}).unwrap().0
        };
        let (a, b) = (once(), once());
        for (x, y) in a.rounds.iter().zip(&b.rounds) {
            assert_eq!(x.client_acc, y.client_acc, "{}", method.name());
            assert_eq!(x.gen_oracle_acc, y.gen_oracle_acc);
            assert_eq!(x.kept, y.kept);
        }
    }
    let a = {
        let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
        run(&cfg, &setup, Method::Fedmmkt, None, &|_, _| {})
            .unwrap()
            .0
    };
    let mut other = cfg.clone();
    other.seed = 8;
    let setup = Setup::build(&other, &src, dir.path(), &|_| {}).unwrap();
    let c = run(&other, &setup, Method::Fedmmkt, None, &|_, _| {})
        .unwrap()
        .0;
    assert_ne!(a.rounds[0].client_acc, c.rounds[0].client_acc);
}

#[test]
fn host_data_clients_see_their_own_data_and_exactly_the_host_public_set() {
    let (cfg, src) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
    let host = &setup.splits.host;
    assert!(!host.is_empty());
    for k in 0..cfg.clients {
        let own = setup.client_data(k);
        let data = client_data(&setup, k, Method::HostData);
        assert_eq!(data.len(), own.len() + host.len());
        // Its own images first, then every image of the host's set with its label, in order.
        assert_eq!(data.images[..own.images.len()], own.images[..]);
        assert_eq!(data.labels[..own.len()], own.labels[..]);
        assert_eq!(data.images[own.images.len()..], host.images[..]);
        assert_eq!(data.labels[own.len()..], host.labels[..]);
        // Every other method trains on the client's own data alone.
        for m in [
            Method::Fedmmkt,
            Method::Local,
            Method::Fedavg,
            Method::Fedmd,
        ] {
            let d = client_data(&setup, k, m);
            assert_eq!(
                (d.images, d.labels),
                (own.images.clone(), own.labels.clone())
            );
        }
    }
    // The shared set is not private: the report counts each client's own images, and the
    // clients learn from the host's set (round 1 already differs from local only).
    let (report, _) = run(&cfg, &setup, Method::HostData, None, &|_, _| {}).unwrap();
    let sizes: Vec<usize> = (0..cfg.clients)
        .map(|k| setup.client_data(k).len())
        .collect();
    assert_eq!(report.client_sizes, sizes);
    let (local, _) = run(&cfg, &setup, Method::Local, None, &|_, _| {}).unwrap();
    assert_ne!(report.rounds[0].client_acc, local.rounds[0].client_acc);
}

#[test]
fn bad_arguments_are_refused() {
    let bin = env!("CARGO_BIN_EXE_fedmmkt");
    let out = std::process::Command::new(bin)
        .args(["simulate", "--clients", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clients"));
    let out = std::process::Command::new(bin)
        .args(["simulate", "--method", "local", "--ablate", "no-align"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    for args in [
        &["simulate", "--compare", "--runs", "fedmmkt,nope"][..],
        &["simulate", "--runs", "fedmmkt"][..],
        &["simulate", "--fedavg-arch", "resnet"][..],
        &["simulate", "--fedavg-optimizer", "adam"][..],
        &["simulate", "--client-optimizer", "adam"][..],
    ] {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--runs")
                || err.contains("--fedavg-arch")
                || err.contains("--fedavg-optimizer")
                || err.contains("--client-optimizer"),
            "{err}"
        );
    }
    for flag in [
        "--fedavg-momentum",
        "--client-momentum",
        "--fedavg-lr",
        "--client-lr",
        "--public-per-class",
    ] {
        let value = if flag.ends_with("momentum") { "1" } else { "0" };
        let out = std::process::Command::new(bin)
            .args(["simulate", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{flag}"
        );
    }
    let out = std::process::Command::new(bin)
        .args(["simulate", "--data", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("classes.txt"));
}

#[test]
fn dp_run_charges_every_client_within_budget() {
    let (mut cfg, src) = tiny();
    cfg.rounds = 3;
    cfg.dp = Some(node::simulate::DpConfig {
        unit: privacy::PrivacyUnit::Client,
        epsilon: 2.0,
        delta: 1e-5,
        clip: 1.0,
        prompt_mix: 0.0,
        calibration_rounds: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
    let (report, _) = run(&cfg, &setup, Method::Fedmmkt, None, &|_, _| {}).unwrap();
    let z = report.dp_noise_multiplier.unwrap();
    assert!(z > 0.0);
    assert_eq!(report.ledgers_verified, Some(true));
    let mut previous = vec![0.0; cfg.clients];
    for r in &report.rounds {
        assert_eq!(r.participants, cfg.clients);
        let eps = r.epsilon.as_ref().unwrap();
        for (k, &e) in eps.iter().enumerate() {
            assert!(e > previous[k], "ε must grow every round");
            assert!(e <= 2.0 + 1e-9, "client {k} spent {e} > budget");
        }
        previous = eps.clone();
    }
    // Calibrated to spend the whole budget in exactly `rounds` releases.
    assert!(previous.iter().all(|&e| e > 1.9), "{previous:?}");
    // The ledgers are on disk, one per client, and audit-able.
    let ledger_dir = dir
        .path()
        .join("ledgers")
        .join("fedmmkt-client-eps-2")
        .join("client-0");
    let ledger = privacy::ledger::Ledger::open_existing(&ledger_dir).unwrap();
    assert_eq!(ledger.len().unwrap(), cfg.rounds as u64);
    assert!(ledger.verify().is_ok());

    // Noise calibrated for 2 of the 3 rounds: every client spends its budget in rounds 1–2,
    // tells the host it abstains in round 3, and no aggregate is released.
    let mut short = cfg.clone();
    if let Some(dp) = short.dp.as_mut() {
        dp.calibration_rounds = Some(2);
    }
    let (report, _) = run(&short, &setup, Method::Fedmmkt, None, &|_, _| {}).unwrap();
    assert_eq!(
        (report.rounds[1].participants, report.rounds[1].abstained),
        (cfg.clients, 0)
    );
    let last = &report.rounds[2];
    assert_eq!(
        (last.participants, last.abstained, last.kept),
        (0, cfg.clients, Some(0))
    );
    assert!(last.uplink_bytes > 0, "abstain notices are sent");
    assert!(last
        .epsilon
        .as_ref()
        .unwrap()
        .iter()
        .all(|&e| e <= 2.0 + 1e-9));
    assert_eq!(report.ledgers_verified, Some(true));
}

#[test]
fn record_level_run_trains_by_dp_sgd_and_keeps_spent_clients_in_the_round() {
    let (mut cfg, src) = tiny();
    cfg.rounds = 3;
    cfg.dp = Some(node::simulate::DpConfig {
        unit: privacy::PrivacyUnit::Record,
        epsilon: 2.0,
        delta: 1e-5,
        clip: 1.0,
        prompt_mix: 0.0,
        calibration_rounds: Some(2),
    });
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::build(&cfg, &src, dir.path(), &|_| {}).unwrap();
    let (report, _) = run(&cfg, &setup, Method::Fedmmkt, None, &|_, _| {}).unwrap();
    assert_eq!(report.privacy_unit, Some(privacy::PrivacyUnit::Record));
    assert!(report.dp_noise_multiplier.is_some_and(|z| z > 0.0));
    assert_eq!(report.ledgers_verified, Some(true));
    // Budget planned for 2 rounds: spent after round 2; round 3 has every client taking part
    // (nobody abstains: the uploads cost nothing), trained on synthetic samples only.
    let eps = |r: usize| report.rounds[r].epsilon.clone().unwrap();
    assert!(
        eps(1).iter().all(|&e| e > 1.9 && e <= 2.0 + 1e-9),
        "{:?}",
        eps(1)
    );
    assert_eq!(
        eps(2),
        eps(1),
        "nothing is charged once the budget is spent"
    );
    let last = &report.rounds[2];
    assert_eq!((last.participants, last.abstained), (cfg.clients, 0));
    assert!(report
        .private_use
        .iter()
        .all(|u| *u == Some(node::learn::PrivateUse::BudgetSpent)));
    // Client 0's ledger: the one-time class-count release and two rounds of training.
    let ledger_dir = dir
        .path()
        .join("ledgers")
        .join("fedmmkt-record-eps-2")
        .join("client-0");
    let ledger = privacy::ledger::Ledger::open_existing(&ledger_dir).unwrap();
    let entries = ledger.entries().unwrap();
    let training = entries
        .iter()
        .filter(|e| matches!(e.cost, privacy::ledger::Spend::Training(_)))
        .count();
    assert_eq!((entries.len(), training), (3, 2));
    assert!(entries
        .iter()
        .all(|e| e.unit == privacy::PrivacyUnit::Record));
    // The same DP-SGD without federation is the DP local-only reference.
    let (local, _) = run(&cfg, &setup, Method::Local, None, &|_, _| {}).unwrap();
    assert_eq!(local.ledgers_verified, Some(true));
    assert!(local.rounds[1]
        .epsilon
        .as_ref()
        .unwrap()
        .iter()
        .all(|&e| e > 1.9));
}
