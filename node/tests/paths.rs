//! Paths as a user means them: `fedmmkt init`, `run` and `status` started from another
//! working directory with relative `--data-dir` and `--dataset`, a dataset named relative to
//! the node's config file, and errors that name a missing path as written and as resolved.
//!
//! Traffic stays on 127.0.0.1; mDNS is off.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use node::config::NodeConfig;
use serde_json::Value;

const PSK: &str = "5f3c1a9e0b7d2468ace013579bdf02468ace013579bdf02468ace013579bdf01";

/// `fedmmkt ARGS` run in `cwd`.
fn fedmmkt(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the fedmmkt binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `fedmmkt run ARGS` in `cwd`, waits until it listens and its status answers through
/// `fedmmkt status` with the same relative `--data-dir`, stops it, and returns its log.
fn run_until_up(cwd: &Path, args: &[&str], peer: &str) -> String {
    let log_path = cwd.join(format!("run-{}.log", args.len()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .current_dir(cwd)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines.any(|l| l.is_ok_and(|l| l.starts_with("listening on ")));
    std::thread::spawn(move || for _ in lines {});
    let t0 = Instant::now();
    let status = loop {
        let out = fedmmkt(cwd, &["status", "--data-dir", "node", "--json"]);
        let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(v) = v.filter(|v| v["running"] == Value::Bool(true)) {
            break Some(v);
        }
        if t0.elapsed() > Duration::from_secs(30) || !listening {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(listening, "the node never listened: {log}");
    let status = status.unwrap_or_else(|| panic!("status never answered: {log}"));
    assert_eq!(status["peer_id"], Value::String(peer.to_string()));
    log
}

#[test]
fn relative_paths_mean_the_working_directory_and_the_config_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = tmp.path().join("lab");
    std::fs::create_dir_all(&lab).unwrap();
    let lab = lab.canonicalize().unwrap();
    std::fs::write(lab.join("swarm.hex"), PSK).unwrap();
    let embedded = models::data::DataSource::embedded().unwrap().test;
    let mine = embedded.subset(&(0..300).collect::<Vec<_>>());
    models::data::idx::write_dataset_dir(&lab.join("data"), &mine).unwrap();

    // init: relative to where it was typed.
    let out = fedmmkt(
        &lab,
        &[
            "init",
            "--data-dir",
            "node",
            "--psk-file",
            "swarm.hex",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["data_dir"],
        Value::String(lab.join("node").display().to_string())
    );
    let peer = v["peer_id"].as_str().unwrap().to_string();
    let missing = fedmmkt(
        &lab,
        &["init", "--data-dir", "other", "--psk-file", "nope.hex"],
    );
    assert_eq!(missing.status.code(), Some(2));
    let err = stderr(&missing);
    assert!(
        err.contains(&format!(
            "--psk-file nope.hex (resolved: {})",
            lab.join("nope.hex").display()
        )),
        "{err}"
    );

    let config = lab.join("node").join("config.toml");
    let mut cfg = NodeConfig::load(&config).unwrap();
    cfg.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg.model.tiny = true;
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    // run --dataset: relative to where it was typed.
    let log = run_until_up(&lab, &["--data-dir", "node", "--dataset", "data"], &peer);
    assert!(
        log.contains(&format!("data={}", lab.join("data").display())),
        "{log}"
    );

    // node.dataset in the config: relative to the config file's directory.
    cfg.node.dataset = Some("../data".into());
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let log = run_until_up(&lab, &["--data-dir", "node"], &peer);
    assert!(
        log.contains(&format!("data={}", lab.join("node/../data").display())),
        "{log}"
    );

    // A path that names nothing: the error shows it as written and as resolved.
    let out = fedmmkt(&lab, &["run", "--data-dir", "node", "--dataset", "nope"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--dataset nope (resolved: {}): no such directory",
            lab.join("nope").display()
        )),
        "{err}"
    );
    cfg.node.dataset = Some("gone".into());
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let out = fedmmkt(&lab, &["run", "--data-dir", "node"]);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "gone (resolved: {}): no such directory",
                lab.join("node/gone").display()
            )),
        "{err}"
    );
    let out = fedmmkt(&lab, &["status", "--data-dir", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "--data-dir nowhere (resolved: {})",
            lab.join("nowhere").display()
        )),
        "{}",
        stderr(&out)
    );
}
