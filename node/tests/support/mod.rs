//! What the tests that run real `fedmmkt run` processes share: data directories made with
//! `fedmmkt init`, tiny configs, node processes that are killed when dropped (printing the end
//! of their log when a test fails), and waiting on their admin endpoints.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use node::admin::{self, StatusReport};
use node::config::NodeConfig;
use protocol::upload::UploadLayout;
use protocol::wire::{Aggregation, Participant, RoundOffer, SecAggSpec};
use protocol::RoundStart;
use serde_json::Value;

/// The federation's pre-shared key (hex).
pub const PSK: &str = "5f3c1a9e0b7d2468ace013579bdf02468ace013579bdf02468ace013579bdf01";
/// Another federation's key.
pub const OTHER_PSK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The `fedmmkt` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
}

/// `fedmmkt ARGS` run to completion, logging warnings only (for one-shot commands).
pub fn fedmmkt(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the fedmmkt binary runs")
}

/// `fedmmkt init` with a PSK; returns the peer id.
pub fn init(dir: &Path, psk: &Path) -> String {
    let out = bin()
        .args(["init", "--json", "--data-dir"])
        .arg(dir)
        .arg("--psk-file")
        .arg(psk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["peer_id"].as_str().unwrap().to_string()
}

/// Tiny models, short timeouts, this federation's members and bootstrap peer.
pub fn configure(dir: &Path, members: &[String], bootstrap: Option<&str>, rounds: u64) {
    configure_with(dir, members, bootstrap, rounds, |_| {});
}

/// [`configure`], then `tweak` before the file is written.
pub fn configure_with(
    dir: &Path,
    members: &[String],
    bootstrap: Option<&str>,
    rounds: u64,
    tweak: impl FnOnce(&mut NodeConfig),
) {
    let path = dir.join("config.toml");
    let mut cfg = NodeConfig::load(&path).unwrap();
    cfg.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg.network.members = members.to_vec();
    cfg.network.bootstrap = bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default();
    cfg.model.tiny = true;
    cfg.round.rounds = rounds;
    cfg.round.stage_timeout_secs = 6;
    cfg.round.round_interval_secs = 1;
    cfg.privacy.planned_rounds = rounds as u32 + 2;
    tweak(&mut cfg);
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
}

/// A running node process; killed when dropped.
pub struct Proc {
    pub dir: PathBuf,
    pub child: Child,
    pub addr: String,
}

impl Proc {
    /// Starts `fedmmkt run` and waits for its first listen address.
    pub fn start(dir: &Path) -> Proc {
        Proc::start_with(dir, bin())
    }

    /// Starts `fedmmkt run` through `launcher` (the binary itself, or `ip netns exec NS` with
    /// the binary as its next argument) and waits for its first listen address. The node logs
    /// at `info` unless `FEDMMKT_TEST_LOG` gives another filter (e.g. `debug,libp2p=warn`).
    pub fn start_with(dir: &Path, mut launcher: Command) -> Proc {
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = launcher
            .args(["run", "--gpu", "off", "--data-dir"])
            .arg(dir)
            .env(
                "RUST_LOG",
                std::env::var("FEDMMKT_TEST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("node exited before listening").unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc {
            dir: dir.to_path_buf(),
            child,
            addr,
        }
    }

    pub fn status(&self) -> Option<StatusReport> {
        admin::query_status(&self.dir).ok().flatten()
    }

    pub fn audit(&self) -> Value {
        admin::query(&self.dir, "audit").unwrap().unwrap()
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    /// Kills the node; when the test is failing, prints the end of its log so CI shows why.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {} ---\n{tail}", self.dir.display());
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn round_of(p: &Proc) -> u64 {
    p.status().map_or(0, |s| s.round)
}

/// A well-formed round offer of a tiny 2-class round with three made-up participants: what a
/// host would send, for tests that send it from somewhere else or feed it to a decoder.
pub fn round_offer(term: u64, round: u64) -> RoundOffer {
    let start = RoundStart {
        round,
        side: 4,
        classes: 2,
        emb_dim: 2,
        images: (0..32).collect(),
        prompt_class: vec![0, 1],
        prompt_template: vec![0, 1],
        text_emb: vec![0.5, -0.5, 0.25, 1.0],
        teacher: None,
        latent: None,
    };
    let dim = UploadLayout::of(&start).len() as u32;
    RoundOffer {
        term,
        attempt: 0,
        participants: (1..=3u8)
            .map(|i| Participant {
                peer: vec![i; 38],
                identity: [i; 32],
            })
            .collect(),
        start,
        aggregation: Aggregation::Secure,
        secagg: SecAggSpec {
            graph_seed: [9; 32],
            neighbors: 2,
            threshold: 2,
            dim,
            bound: 1.0,
            max_clients: 3,
        },
    }
}
