//! The node processes of a testnet: initialised, configured and started through the real
//! `fedmmkt` binary, watched through their admin endpoints, killed and restarted on demand,
//! and always shut down (SIGTERM, then SIGKILL) when the cluster is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use node::admin::{self, StatusReport};
use node::config::NodeConfig;

/// How every node of the testnet is configured.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Rounds the federation runs.
    pub rounds: u64,
    /// Per-node ε budget.
    pub epsilon: f64,
    /// What the budget protects.
    pub unit: privacy::PrivacyUnit,
    /// δ.
    pub delta: f64,
    /// Releases the noise is calibrated for.
    pub planned_rounds: u32,
    /// Seed.
    pub seed: u64,
    /// Tiny models.
    pub tiny: bool,
    /// Stage timeout in seconds.
    pub stage_timeout_secs: u64,
    /// The pre-training cache every node shares (absolute: nodes resolve it from their dir).
    pub cache_dir: PathBuf,
    /// Share of the members the first round waits for (`round.start_share`).
    pub start_share: f64,
    /// Seconds the first round waits for that share (`round.start_timeout_secs`).
    pub start_timeout_secs: u64,
}

/// One node process.
pub struct NodeProc {
    /// Index in the testnet.
    pub index: usize,
    /// Data directory.
    pub dir: PathBuf,
    /// PeerId.
    pub peer_id: String,
    /// Its TCP listen address with `/p2p/<id>`, once started.
    pub addr: Option<String>,
    child: Option<Child>,
    log: PathBuf,
    /// Times SIGKILLed.
    pub kills: usize,
    /// Times started after a kill.
    pub restarts: usize,
}

impl NodeProc {
    fn new(index: usize, dir: PathBuf, peer_id: String, log: PathBuf) -> Self {
        Self {
            index,
            dir,
            peer_id,
            addr: None,
            child: None,
            log,
            kills: 0,
            restarts: 0,
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's status from its admin endpoint (None when it does not answer).
    pub fn status(&self) -> Option<StatusReport> {
        self.child.as_ref()?;
        admin::query_status(&self.dir).ok().flatten()
    }

    /// SIGKILL, as a crash would.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The testnet's nodes.
pub struct Cluster {
    bin: PathBuf,
    /// Member nodes.
    pub nodes: Vec<NodeProc>,
    /// The intruder, if any.
    pub intruder: Option<NodeProc>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn fedmmkt(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "`fedmmkt {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `fedmmkt init` into `dir` with the PSK file; returns the PeerId.
fn init(bin: &Path, dir: &Path, psk: &Path, epsilon: f64, delta: f64) -> anyhow::Result<String> {
    let out = fedmmkt(
        bin,
        &[
            "init",
            "--json",
            "--data-dir",
            &dir.to_string_lossy(),
            "--psk-file",
            &psk.to_string_lossy(),
            "--epsilon",
            &epsilon.to_string(),
            "--delta",
            &delta.to_string(),
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    v["peer_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("init printed no peer id"))
}

/// Writes a node's config: loopback TCP + QUIC, the members, its dataset, the settings.
fn configure(
    dir: &Path,
    members: &[String],
    bootstrap: Option<&str>,
    dataset: Option<&Path>,
    s: &NodeSettings,
) -> anyhow::Result<()> {
    let path = dir.join("config.toml");
    let mut cfg = NodeConfig::load(&path)?;
    cfg.network.listen = vec![
        "/ip4/127.0.0.1/tcp/0".into(),
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
    ];
    cfg.network.members = members.to_vec();
    cfg.network.bootstrap = bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default();
    cfg.network.mdns = false;
    cfg.node.dataset = dataset.map(|d| d.to_string_lossy().into_owned());
    cfg.node.gpu = "off".into();
    cfg.node.cache_dir = Some(s.cache_dir.to_string_lossy().into_owned());
    cfg.model.tiny = s.tiny;
    cfg.round.rounds = s.rounds;
    cfg.round.seed = s.seed;
    cfg.round.stage_timeout_secs = s.stage_timeout_secs;
    cfg.round.round_interval_secs = 1;
    cfg.round.start_share = s.start_share;
    cfg.round.start_timeout_secs = s.start_timeout_secs;
    cfg.privacy.unit = s.unit;
    if s.unit == privacy::PrivacyUnit::Record {
        // What `fedmmkt simulate` uses under record-level DP (chosen on the validation split).
        cfg.model.host.prompt_mix = node::cli::simulate::RECORD_PROMPT_MIX;
    }
    cfg.privacy.epsilon = s.epsilon;
    cfg.privacy.delta = s.delta;
    cfg.privacy.planned_rounds = s.planned_rounds;
    cfg.validate()?;
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    Ok(())
}

impl Cluster {
    /// Initialises `datasets.len()` member nodes under `root/nK` (plus an intruder with another
    /// key when asked) with the shared key in `psk`.
    pub fn init(
        bin: &Path,
        root: &Path,
        psk: &Path,
        intruder_psk: Option<&Path>,
        datasets: &[PathBuf],
        s: &NodeSettings,
    ) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for (index, _) in datasets.iter().enumerate() {
            let dir = root.join(format!("n{index}"));
            let peer_id = init(bin, &dir, psk, s.epsilon, s.delta)?;
            nodes.push(NodeProc::new(
                index,
                dir,
                peer_id,
                root.join(format!("n{index}.log")),
            ));
        }
        let members: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
        for (n, ds) in nodes.iter().zip(datasets) {
            configure(&n.dir, &members, None, Some(ds), s)?;
        }
        let intruder = match intruder_psk {
            Some(key) => {
                let dir = root.join("intruder");
                let peer_id = init(bin, &dir, key, s.epsilon, s.delta)?;
                configure(
                    &dir,
                    &members,
                    None,
                    datasets.first().map(|d| d.as_path()),
                    s,
                )?;
                Some(NodeProc::new(
                    usize::MAX,
                    dir,
                    peer_id,
                    root.join("intruder.log"),
                ))
            }
            None => None,
        };
        Ok(Self {
            bin: bin.to_path_buf(),
            nodes,
            intruder,
        })
    }

    /// Starts node 0, then every other member (and the intruder) with node 0 as bootstrap.
    /// Nodes in `later` are configured but left for [`Cluster::start`].
    pub fn start_all(&mut self, later: &[usize]) -> anyhow::Result<()> {
        self.start(0)?;
        let boot = self.nodes[0]
            .addr
            .clone()
            .ok_or_else(|| anyhow::anyhow!("node 0 has no address"))?;
        let members: Vec<String> = self.nodes.iter().map(|n| n.peer_id.clone()).collect();
        let bin = self.bin.clone();
        let mut starting = Vec::new();
        for n in self.nodes.iter_mut().skip(1).chain(self.intruder.as_mut()) {
            let path = n.dir.join("config.toml");
            let mut cfg = NodeConfig::load(&path)?;
            cfg.network.bootstrap = vec![boot.clone()];
            cfg.network.members = members.clone();
            std::fs::write(&path, toml::to_string(&cfg)?)?;
            if !later.contains(&n.index) {
                starting.push(n);
            }
        }
        // All at once: one after another, each start waits on the cores the running nodes
        // keep busy (at 64 tiny nodes on 2 cores the last one listened 6.5 min after the first).
        // The processes are spawned from this thread (their parent-death signal fires when
        // the spawning thread ends); only the waits for their addresses run in parallel.
        let launched = starting
            .into_iter()
            .map(|n| launch(&bin, n).map(|child| (n, child)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        std::thread::scope(|scope| {
            let handles: Vec<_> = launched
                .into_iter()
                .map(|(n, child)| scope.spawn(move || await_listening(n, child)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("waiting for a node's address panicked"))?
            })
        })
    }

    /// Starts (or restarts) member `i`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let n = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no node {i}"))?;
        if n.kills > 0 {
            n.restarts += 1;
        }
        spawn(&bin, n)
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s).
    pub fn shutdown(&mut self) {
        for n in self.nodes.iter_mut().chain(self.intruder.as_mut()) {
            n.terminate(Duration::from_secs(5));
        }
    }
}

/// Spawns `fedmmkt run` for `n`, logging to its log file, and waits for its TCP address.
fn spawn(bin: &Path, n: &mut NodeProc) -> anyhow::Result<()> {
    let child = launch(bin, n)?;
    await_listening(n, child)
}

/// Spawns `fedmmkt run` for `n`, logging to its log file.
fn launch(bin: &Path, n: &NodeProc) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&n.log)?;
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--gpu", "off", "--data-dir"])
        .arg(&n.dir)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGTERM the node if
        // the testnet dies without shutting it down (no orphans even after a SIGKILL of ours).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Waits (60 s at most) for the node `child` of `n` to print its TCP address.
fn await_listening(n: &mut NodeProc, mut child: Child) -> anyhow::Result<()> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            anyhow::bail!(
                "node {} exited before listening; see {}",
                n.index,
                n.log.display()
            );
        };
        if let Some(addr) = line.strip_prefix("listening on ") {
            if addr.contains("/tcp/") {
                break addr.to_string();
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("node {} did not listen within 60 s", n.index);
        }
    };
    // Drain stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    n.addr = Some(addr);
    n.child = Some(child);
    Ok(())
}

/// Finds the `fedmmkt` node binary next to `near` (an executable of this workspace); under
/// `cargo run`/`cargo test` it is built first with the same profile, so it is never stale.
pub fn node_binary(explicit: Option<PathBuf>, near: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("FEDMMKT_BIN").map(PathBuf::from)) {
        anyhow::ensure!(p.is_file(), "{} is not a file", p.display());
        return Ok(p);
    }
    let me = near;
    let sibling = me.with_file_name(format!("fedmmkt{}", std::env::consts::EXE_SUFFIX));
    // Under `cargo run` the node binary may be missing or stale: build it with our profile.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = me
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "node", "--bin", "fedmmkt"]);
        if release {
            cmd.arg("--release");
        }
        eprintln!("building the fedmmkt node binary ...");
        let status = cmd.status().context("running cargo build")?;
        anyhow::ensure!(status.success(), "cargo build of the fedmmkt binary failed");
    }
    anyhow::ensure!(
        sibling.is_file(),
        "no fedmmkt binary at {} (build it with `cargo build --release --bin fedmmkt`, or pass --fedmmkt PATH)",
        sibling.display()
    );
    Ok(sibling)
}
