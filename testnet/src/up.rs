//! `fedmmkt-testnet up`: partition the data, start the nodes, watch the rounds, inject the
//! faults, stop everything, verify the invariants, score the generator, and write the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use node::admin::StatusReport;
use node::config::ModelConfig;
use node::learn::PretrainCache;
use node::metrics::RoundMetrics;
use node::world::{federation_splits, partition};
use privacy::ledger::Ledger;
use protocol::wire::Phase;
use rand::RngCore;

use crate::cluster::{Cluster, NodeSettings};
use crate::dashboard::{Dashboard, NodeView, RoundView, View};
use crate::evaluate::{local_only_all, Evaluator};
use crate::faults::Fault;
use crate::record::{Baseline, FaultRecord, NodeSummary, RoundRecord, TermRecord, TestnetReport};
use crate::report::{write_report, GridImages};

/// What to run.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Member nodes.
    pub nodes: usize,
    /// Rounds.
    pub rounds: u64,
    /// Dirichlet α of the partition.
    pub alpha: f64,
    /// Seed.
    pub seed: u64,
    /// Per-node ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// What the budget protects.
    pub unit: privacy::PrivacyUnit,
    /// Output directory.
    pub out: PathBuf,
    /// Tiny models.
    pub tiny: bool,
    /// Faults to inject.
    pub faults: Vec<Fault>,
    /// Start an intruder without the key.
    pub intruder: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// The `fedmmkt` binary.
    pub bin: PathBuf,
    /// Show a progress bar (off in tests).
    pub progress: bool,
    /// Also run the same config without faults (into `out/baseline`) and compare.
    pub baseline: bool,
    /// Serve a live page of the whole testnet on this (loopback) address while it runs.
    pub dashboard: Option<std::net::SocketAddr>,
    /// Largest difference of final accuracies (fraction) that counts as noise.
    pub tolerance: f64,
}

/// Set by SIGINT/SIGTERM; the run stops, shuts its nodes down and still writes a report.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes Ctrl-C and SIGTERM to [`INTERRUPTED`].
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// A fault's progress.
#[derive(Debug, Clone)]
struct Armed {
    fault: Fault,
    fired_at: Option<Instant>,
    /// Nodes killed by it that still await a restart.
    down: Vec<usize>,
    /// The host it killed (kill-host).
    killed_host: Option<String>,
    record: Option<FaultRecord>,
    done: bool,
    /// Kill-host: seconds until every live node knew a new host.
    reelection: Option<f64>,
    /// Kill-host: seconds until the next completed round.
    recovery: Option<f64>,
    /// Join: the newest round completed when the late member started (what it catches up to).
    caught_up_to: u64,
}

/// Everything observed while the nodes run.
#[derive(Default)]
struct Observed {
    terms: BTreeMap<u64, String>,
    rounds: BTreeMap<u64, RoundRecord>,
    double_counted: BTreeSet<u64>,
    client_acc: BTreeMap<u64, BTreeMap<usize, f64>>,
    checkpoints: BTreeMap<u64, PathBuf>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Runs a testnet; returns its report (also written to `cfg.out`).
pub fn up(cfg: &UpConfig) -> anyhow::Result<TestnetReport> {
    // Every path handed to a node (its data directory, dataset, key) is absolute, so it means
    // the same from the node's working directory as from the one the testnet was started in.
    let cfg = &UpConfig {
        out: std::path::absolute(&cfg.out)
            .with_context(|| format!("resolving --out {}", cfg.out.display()))?,
        ..cfg.clone()
    };
    anyhow::ensure!(
        cfg.nodes >= protocol::round::MIN_CONTRIBUTORS,
        "a testnet needs at least {} nodes (the host and two others contribute to every round), got {}",
        protocol::round::MIN_CONTRIBUTORS,
        cfg.nodes
    );
    anyhow::ensure!(cfg.rounds >= 1, "rounds must be at least 1");
    for f in &cfg.faults {
        anyhow::ensure!(
            f.round() <= cfg.rounds,
            "{} at round {} is after the last round {}",
            f.kind(),
            f.round(),
            cfg.rounds
        );
        if let Fault::Restart { node, .. } = f {
            anyhow::ensure!(
                *node < cfg.nodes,
                "--restart names node {node} of {}",
                cfg.nodes
            );
        }
        if let Fault::Join { node, .. } = f {
            anyhow::ensure!(
                (1..cfg.nodes).contains(node),
                "--join names node {node}: it must be one of 1..{} (node 0 is every node's \
                 bootstrap peer)",
                cfg.nodes
            );
        }
        if let Fault::Drop { count, .. } = f {
            anyhow::ensure!(
                *count < cfg.nodes - 1,
                "--drop {count} would leave no node besides the host"
            );
        }
    }
    let baseline = if cfg.baseline && (!cfg.faults.is_empty() || cfg.intruder) {
        let clean = UpConfig {
            faults: Vec::new(),
            intruder: false,
            baseline: false,
            dashboard: None,
            out: cfg.out.join("baseline"),
            ..cfg.clone()
        };
        if cfg.progress {
            eprintln!("fault-free baseline run first ({})", clean.out.display());
        }
        Some(up(&clean)?)
    } else {
        None
    };
    let t0 = Instant::now();
    let out = &cfg.out;
    if out.join("nodes").exists() {
        std::fs::remove_dir_all(out.join("nodes"))
            .with_context(|| format!("clearing {}", out.join("nodes").display()))?;
    }
    std::fs::create_dir_all(out.join("nodes"))?;
    std::fs::create_dir_all(out.join("checkpoints"))?;

    let bar = if cfg.progress {
        ProgressBar::new(cfg.rounds)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] round {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let dashboard = cfg.dashboard.map(Dashboard::start).transpose()?;
    if let Some(d) = &dashboard {
        // Printed whether or not the progress bar draws (it is hidden off a terminal).
        bar.suspend(|| eprintln!("dashboard: {}", d.url));
    }

    // Data: one Dirichlet shard per node, written as a dataset directory it loads like any lab's.
    bar.set_message("partitioning the data");
    let splits = federation_splits(cfg.seed)?;
    let parts = partition(&splits, cfg.nodes, cfg.alpha, cfg.seed)?;
    let mut datasets = Vec::new();
    let mut images = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let dir = out.join("nodes").join(format!("data-{i}"));
        models::data::idx::write_dataset_dir(&dir, &splits.pool.subset(part))?;
        datasets.push(dir);
        images.push(part.len());
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let psk = out.join("nodes").join("swarm.key.hex");
    std::fs::write(&psk, hex(&key))?;
    let intruder_psk = if cfg.intruder {
        rand::rng().fill_bytes(&mut key);
        let p = out.join("nodes").join("intruder.key.hex");
        std::fs::write(&p, hex(&key))?;
        Some(p)
    } else {
        None
    };
    // Nodes that join late are members from the start: the first round waits for the others.
    let late: Vec<usize> = cfg
        .faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Join { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    anyhow::ensure!(
        cfg.nodes - late.len() >= protocol::round::MIN_CONTRIBUTORS,
        "--join leaves {} nodes for the first round; it needs {}",
        cfg.nodes - late.len(),
        protocol::round::MIN_CONTRIBUTORS
    );
    let settings = NodeSettings {
        start_share: (cfg.nodes - late.len()) as f64 / cfg.nodes as f64,
        // N processes on one machine take a while to all be up and heard from.
        start_timeout_secs: (2 * cfg.nodes as u64).max(60),
        rounds: cfg.rounds,
        epsilon: cfg.epsilon,
        delta: cfg.delta,
        unit: cfg.unit,
        // Client-level: every fault can cost one abandoned attempt (clients' spends stay
        // charged). Record-level: a retried round is not trained (or charged) again.
        planned_rounds: match cfg.unit {
            privacy::PrivacyUnit::Client => (cfg.rounds + cfg.faults.len() as u64) as u32,
            privacy::PrivacyUnit::Record => cfg.rounds.max(1) as u32,
        },
        seed: cfg.seed,
        tiny: cfg.tiny,
        // Every node shares this machine's cores: with many nodes each one is scheduled less,
        // and the host's offers and each stage's messages take longer to go round (at 64 tiny
        // nodes on 2 cores the offers alone took 19 s to reach every member, and 32 s unmask
        // stages closed with 8 of the 10 shares a client needed).
        stage_timeout_secs: if cfg.tiny {
            (cfg.nodes as u64).max(5)
        } else {
            (cfg.nodes as u64 / 2).max(20)
        },
        cache_dir: std::path::absolute(out.join("cache"))?,
    };
    bar.set_message("initialising nodes");
    let mut cluster = Cluster::init(
        &cfg.bin,
        &out.join("nodes"),
        &psk,
        intruder_psk.as_deref(),
        &datasets,
        &settings,
    )?;
    bar.set_message("starting nodes");
    cluster.start_all(&late)?;
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.peer_id.clone()).collect();
    let index_of = |peer: &str| ids.iter().position(|p| p == peer);

    let mut armed: Vec<Armed> = cfg
        .faults
        .iter()
        .map(|&fault| Armed {
            fault,
            fired_at: None,
            down: Vec::new(),
            killed_host: None,
            record: None,
            done: false,
            reelection: None,
            recovery: None,
            caught_up_to: 0,
        })
        .collect();
    let mut seen = Observed::default();
    let mut failures = Vec::new();
    let deadline = t0 + cfg.timeout;
    let mut statuses: Vec<Option<StatusReport>>;
    loop {
        statuses = cluster.nodes.iter().map(|n| n.status()).collect();
        observe(&mut seen, &statuses, &cluster, out, &index_of)?;
        let completed = seen.rounds.keys().copied().max().unwrap_or(0);
        bar.set_position(completed.min(cfg.rounds));
        let progress = progress_line(&statuses, &seen, &index_of);
        if let Some(d) = &dashboard {
            d.show(view(
                &statuses,
                &seen,
                &cluster,
                &index_of,
                progress.clone(),
                cfg,
                t0,
            ));
        }
        bar.set_message(progress);
        if completed >= cfg.rounds && armed.iter().all(|a| a.done) {
            break;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            failures.push("interrupted (Ctrl-C / SIGTERM)".to_string());
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "timed out after {:.0} s with {completed}/{} rounds",
                cfg.timeout.as_secs_f64(),
                cfg.rounds
            ));
            break;
        }
        for a in armed.iter_mut().filter(|a| !a.done) {
            step_fault(a, &mut cluster, &statuses, &seen, t0)?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The intruder: refused when no member ever listed it and it never completed a round.
    let intruder_refused = match cluster.intruder.as_ref() {
        Some(intruder) => {
            let st = intruder.status();
            let listed = statuses
                .iter()
                .flatten()
                .any(|s| s.peers.contains(&intruder.peer_id));
            let alone = st
                .as_ref()
                .is_none_or(|s| s.peers.is_empty() && s.round == 0);
            Some(!listed && alone)
        }
        None => None,
    };
    let running: Vec<bool> = cluster.nodes.iter_mut().map(|n| n.running()).collect();
    bar.set_message("stopping nodes");
    cluster.shutdown();
    if let Some(d) = &dashboard {
        let mut last = view(
            &statuses,
            &seen,
            &cluster,
            &index_of,
            String::new(),
            cfg,
            t0,
        );
        last.progress = "the nodes have stopped; the report follows".into();
        last.finished = true;
        d.show(last);
    }

    // Ledgers, read from disk now that the nodes are down.
    let mut peers = Vec::new();
    let mut ledgers_verified = true;
    let mut budget_exceeded = false;
    let mut double_answered = 0;
    for (i, n) in cluster.nodes.iter().enumerate() {
        let ledger = Ledger::open_existing(&n.dir.join("ledger"))?;
        let audit = ledger.audit()?;
        let budget = audit.budget.map(|b| b.epsilon).unwrap_or(f64::NAN);
        let verified = audit.chain.valid;
        ledgers_verified &= verified;
        if audit.epsilon_spent > budget + 1e-9 {
            budget_exceeded = true;
        }
        // One spend per kind per round attempt: a client-level release per attempt, or
        // (record-level) one DP-SGD training per round, the class counts once.
        let mut attempts: Vec<(u64, String, &str)> = audit
            .entries
            .iter()
            .map(|e| (e.round, e.dataset_id.clone(), e.mechanism.as_str()))
            .collect();
        let total = attempts.len();
        attempts.sort();
        attempts.dedup();
        double_answered += total - attempts.len();
        peers.push(NodeSummary {
            index: i,
            peer_id: n.peer_id.clone(),
            images: images.get(i).copied().unwrap_or(0),
            epsilon_spent: audit.epsilon_spent,
            epsilon_budget: budget,
            ledger_verified: verified,
            ledger_entries: total,
            kills: n.kills,
            restarts: n.restarts,
            running_at_end: running.get(i).copied().unwrap_or(false),
            checkpoint_bytes_served: statuses
                .get(i)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.checkpoint_bytes_served),
        });
    }

    // Every node's model trained on its own data alone: the reference for its accuracy. Not
    // alongside the scoring: both feed candle's one thread pool, and the reference's many
    // small steps then queue behind the oracle's (tiny mode, loaded 2 cores: 13.5 s before
    // the scoring, 48 s alongside it).
    let node_dirs: Vec<PathBuf> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
    let trained = seen.rounds.keys().copied().max().unwrap_or(0);
    let t_local = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local_curves = local_only_all(&node_dirs, trained, threads, &|done| {
        bar.set_message(format!(
            "local-only reference: {done}/{} nodes trained",
            node_dirs.len()
        ))
    })?;
    let local_only_seconds = t_local.elapsed().as_secs_f64();

    bar.set_message("scoring the generator");
    let model = ModelConfig {
        tiny: cfg.tiny,
        ..ModelConfig::default()
    };
    let evaluator = Evaluator::new(splits, model, cfg.seed, cfg.tiny)?
        .with_cache(PretrainCache::new(&settings.cache_dir));
    let (start, first_grid) = evaluator.score(0, None)?;
    let mut grids: Vec<GridImages> = vec![first_grid];
    let last = seen.rounds.keys().copied().max();
    for (round, path) in &seen.checkpoints {
        bar.set_message(format!("scoring the generator after round {round}"));
        let bytes = std::fs::read(path)?;
        let (score, grid) = evaluator.score(*round, Some(&bytes))?;
        if let Some(r) = seen.rounds.get_mut(round) {
            r.gen_oracle_acc = Some(score.oracle_acc);
            r.gen_frechet = Some(score.frechet);
        }
        if Some(*round) == last {
            grids.push(grid);
        }
    }
    for (round, accs) in &seen.client_acc {
        if let Some(r) = seen.rounds.get_mut(round) {
            if let Some((mean, worst)) = mean_and_worst(accs) {
                r.client_acc_mean = Some(mean);
                r.client_acc_min = Some(worst);
            }
            r.client_acc = accs.clone();
        }
    }
    for r in seen.rounds.values_mut() {
        r.set_local_only(&local_curves);
    }
    bar.finish_and_clear();

    let rounds_completed = seen.rounds.keys().copied().max().unwrap_or(0);
    let last_of = |r: &TestnetReport| -> (Option<f64>, Option<f64>) {
        r.rounds
            .last()
            .map_or((None, None), |l| (l.client_acc_mean, l.gen_oracle_acc))
    };
    let final_run = seen
        .rounds
        .values()
        .next_back()
        .map_or((None, None), |l| (l.client_acc_mean, l.gen_oracle_acc));
    let baseline = baseline.map(|b| {
        let (client, gen) = last_of(&b);
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= cfg.tolerance,
            _ => false,
        };
        Baseline {
            client_acc_mean: client,
            gen_oracle_acc: gen,
            run_client_acc_mean: final_run.0,
            run_gen_oracle_acc: final_run.1,
            tolerance: cfg.tolerance,
            within_noise: close(client, final_run.0) && close(gen, final_run.1),
        }
    });
    if baseline.as_ref().is_some_and(|b| !b.within_noise) {
        failures.push(format!(
            "final metrics differ from the fault-free run by more than {:.1} points",
            100.0 * cfg.tolerance
        ));
    }
    if rounds_completed < cfg.rounds && failures.is_empty() {
        failures.push(format!(
            "only {rounds_completed}/{} rounds completed",
            cfg.rounds
        ));
    }
    if !ledgers_verified {
        failures.push("a ledger failed verification".into());
    }
    if budget_exceeded {
        failures.push("a node spent beyond its budget".into());
    }
    if !seen.double_counted.is_empty() {
        failures.push(format!("rounds counted twice: {:?}", seen.double_counted));
    }
    if double_answered > 0 {
        failures.push(format!("{double_answered} round attempts charged twice"));
    }
    if intruder_refused == Some(false) {
        failures.push("the intruder got in".into());
    }
    for a in &armed {
        if !a.done {
            failures.push(format!(
                "{} at round {} never fired",
                a.fault.kind(),
                a.fault.round()
            ));
        }
    }
    let report = TestnetReport {
        nodes: cfg.nodes,
        rounds_requested: cfg.rounds,
        rounds_completed,
        seed: cfg.seed,
        alpha: cfg.alpha,
        dp_epsilon: cfg.epsilon,
        delta: cfg.delta,
        privacy_unit: cfg.unit,
        tiny: cfg.tiny,
        peers,
        terms: seen
            .terms
            .iter()
            .map(|(&term, host)| TermRecord {
                term,
                host: host.clone(),
                host_index: index_of(host),
            })
            .collect(),
        rounds: seen.rounds.values().cloned().collect(),
        gen_start: Some(start),
        oracle_acc_real: Some(evaluator.oracle_acc_real()?),
        local_only_seconds: Some(local_only_seconds),
        faults: armed.iter().filter_map(|a| a.record.clone()).collect(),
        host_kill_recovery_seconds: armed.iter().find_map(|a| a.recovery),
        reelection_seconds: armed.iter().find_map(|a| a.reelection),
        ledgers_verified,
        budget_exceeded,
        double_counted_rounds: seen.double_counted.len(),
        double_answered_attempts: double_answered,
        intruder_refused,
        baseline,
        wall_seconds: t0.elapsed().as_secs_f64(),
        ok: failures.is_empty(),
        failures,
    };
    write_report(out, &report, evaluator.classes(), &grids)?;
    Ok(report)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads what the nodes report: terms and hosts, completed rounds (from the host's metrics),
/// client accuracies, ε; copies each round's checkpoint while it is still on disk.
fn observe(
    seen: &mut Observed,
    statuses: &[Option<StatusReport>],
    cluster: &Cluster,
    out: &Path,
    index_of: &dyn Fn(&str) -> Option<usize>,
) -> anyhow::Result<()> {
    for (i, s) in statuses.iter().enumerate() {
        let Some(s) = s else { continue };
        let Some((round, hash)) = seen.read(i, s, statuses, index_of) else {
            continue;
        };
        // Keep the checkpoint (nodes prune all but their newest few).
        let dest = out.join("checkpoints").join(format!("round-{round}.bin"));
        let found = cluster.nodes.iter().find_map(|n| {
            let src = n.dir.join("checkpoints").join(format!("{hash}.bin"));
            std::fs::read(&src).ok()
        });
        if let Some(bytes) = found {
            if node::store::to_hex(&node::store::sha256(&bytes)) == hash {
                std::fs::write(&dest, bytes)?;
                seen.checkpoints.insert(round, dest);
            }
        }
    }
    Ok(())
}

impl Observed {
    /// Takes in node `i`'s status: its term's host, its accuracy and, from a host's metrics, a
    /// completed round. Returns that round and its checkpoint hash when it is seen first.
    fn read(
        &mut self,
        i: usize,
        s: &StatusReport,
        statuses: &[Option<StatusReport>],
        index_of: &dyn Fn(&str) -> Option<usize>,
    ) -> Option<(u64, String)> {
        if let Some(host) = &s.host {
            self.terms.entry(s.term).or_insert_with(|| host.clone());
        }
        let m = s.last_metrics.as_ref()?;
        // Every node learns, the host too: its accuracy comes with the round's host metrics.
        if let Some(acc) = m.test_acc() {
            self.client_acc.entry(m.round()).or_default().insert(i, acc);
        }
        let RoundMetrics::Host {
            round,
            term,
            participants,
            kept,
            mean_reward,
            seconds,
            bytes,
            bytes_sent,
            bytes_received,
            phase_seconds,
            phase_bytes,
            checkpoint,
            ..
        } = m
        else {
            return None;
        };
        if *round == 0 {
            return None;
        }
        if let Some(prev) = self.rounds.get(round) {
            if prev.term != *term {
                self.double_counted.insert(*round);
            }
            return None;
        }
        let participants: Vec<usize> = participants.iter().filter_map(|p| index_of(p)).collect();
        let epsilon = statuses
            .iter()
            .enumerate()
            .filter_map(|(j, s)| s.as_ref().map(|s| (j, s.epsilon_spent)))
            .collect();
        let rec = RoundRecord {
            round: *round,
            term: *term,
            host: s.peer_id.clone(),
            host_index: Some(i),
            participants: participants.len(),
            participant_nodes: participants,
            kept: *kept,
            mean_reward: f64::from(*mean_reward),
            seconds: *seconds,
            bytes: *bytes,
            bytes_sent: *bytes_sent,
            bytes_received: *bytes_received,
            phase_seconds: phase_seconds.clone(),
            phase_bytes: phase_bytes.clone(),
            epsilon,
            checkpoint: checkpoint.clone(),
            ..RoundRecord::default()
        };
        self.rounds.insert(*round, rec);
        Some((*round, checkpoint.clone()))
    }
}

/// The one-line live view: host, round phase, participation, ε.
fn progress_line(
    statuses: &[Option<StatusReport>],
    seen: &Observed,
    index_of: &dyn Fn(&str) -> Option<usize>,
) -> String {
    let up = statuses.iter().flatten().count();
    let host = statuses.iter().flatten().find_map(|s| s.host.clone());
    let Some(host) = host else {
        return format!("{up}/{} nodes up, electing a host", statuses.len());
    };
    let h = index_of(&host);
    // While the host prepares its generator, say how (pre-training, from the cache, resuming).
    let phase = h
        .and_then(|h| statuses.get(h))
        .and_then(|s| s.as_ref())
        .and_then(|s| {
            s.preparing
                .clone()
                .or_else(|| s.phase.map(|p| p.to_string()))
        })
        .unwrap_or_else(|| "–".into());
    let nodes: String = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| letter(s.as_ref(), Some(i) == h))
        .collect();
    let eps = statuses
        .iter()
        .flatten()
        .map(|s| s.epsilon_spent)
        .fold(0.0f64, f64::max);
    let acc = seen
        .client_acc
        .values()
        .next_back()
        .and_then(mean_and_worst)
        .map(|(mean, _)| pct(mean))
        .unwrap_or_else(|| "–".into());
    let last = seen.rounds.values().next_back();
    format!(
        "{up}/{} up · host n{} · {phase} · nodes [{nodes}] · ε max {eps:.2} · client acc {acc}{}",
        statuses.len(),
        h.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
        last.map(|r| format!(" · last round {:.1} s", r.seconds))
            .unwrap_or_default()
    )
}

/// The mean and the worst of the clients' accuracies in a round, when there are any.
fn mean_and_worst(accs: &BTreeMap<usize, f64>) -> Option<(f64, f64)> {
    let worst = accs.values().copied().reduce(f64::min)?;
    Some((accs.values().sum::<f64>() / accs.len() as f64, worst))
}

/// A node's letter in the progress line and on the dashboard: H the host, then the client's
/// phase; x down.
fn letter(status: Option<&StatusReport>, is_host: bool) -> char {
    match status {
        None => 'x',
        Some(_) if is_host => 'H',
        Some(s) => match s.phase {
            Some(Phase::Learn) => 'l',
            Some(Phase::Judge) => 'j',
            Some(Phase::Aggregate) => 'a',
            Some(Phase::Complete) => 'c',
            Some(Phase::Abandoned) => '!',
            _ => '.',
        },
    }
}

/// What the dashboard shows of the testnet now.
fn view(
    statuses: &[Option<StatusReport>],
    seen: &Observed,
    cluster: &Cluster,
    index_of: &dyn Fn(&str) -> Option<usize>,
    progress: String,
    cfg: &UpConfig,
    t0: Instant,
) -> View {
    let host = statuses
        .iter()
        .flatten()
        .find_map(|s| s.host.as_deref())
        .and_then(index_of);
    View {
        rounds_requested: cfg.rounds,
        progress,
        elapsed_seconds: t0.elapsed().as_secs_f64(),
        host,
        nodes: cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let s = statuses.get(i).and_then(Option::as_ref);
                NodeView {
                    index: i,
                    peer_id: n.peer_id.clone(),
                    letter: letter(s, host == Some(i)),
                    round: s.map_or(0, |s| s.round),
                    epsilon_spent: s.map_or(0.0, |s| s.epsilon_spent),
                    epsilon_budget: s.map_or(cfg.epsilon, |s| s.epsilon_budget),
                }
            })
            .collect(),
        rounds: seen
            .rounds
            .values()
            .map(|r| {
                // The records get their accuracies only after the run; the view reads them
                // as they arrive.
                let acc = seen.client_acc.get(&r.round).and_then(mean_and_worst);
                RoundView {
                    round: r.round,
                    participants: r.participants,
                    client_acc_mean: acc.map(|(mean, _)| mean),
                    client_acc_min: acc.map(|(_, worst)| worst),
                    kept: r.kept,
                    mean_reward: r.mean_reward,
                    seconds: r.seconds,
                }
            })
            .collect(),
        finished: false,
    }
}

/// Fires a fault when its round is in progress, and restarts what it killed when due.
fn step_fault(
    a: &mut Armed,
    cluster: &mut Cluster,
    statuses: &[Option<StatusReport>],
    seen: &Observed,
    t0: Instant,
) -> anyhow::Result<()> {
    let completed = seen.rounds.keys().copied().max().unwrap_or(0);
    let round = a.fault.round();
    let host = statuses.iter().flatten().find_map(|s| s.host.clone());
    let host_idx = host
        .as_ref()
        .and_then(|h| cluster.nodes.iter().position(|n| &n.peer_id == h));
    let host_phase = host_idx
        .and_then(|h| statuses.get(h))
        .and_then(|s| s.as_ref())
        .and_then(|s| s.phase);
    let in_round =
        completed + 1 == round && matches!(host_phase, Some(Phase::Learn | Phase::Aggregate));
    if let Fault::Join { node, .. } = a.fault {
        return step_join(a, cluster, node, statuses, completed, t0);
    }
    match a.fired_at {
        None => {
            if !in_round {
                if completed >= round {
                    // The round finished before the fault could land in it.
                    a.done = true;
                    a.record = Some(FaultRecord {
                        kind: a.fault.kind().into(),
                        round,
                        nodes: vec![],
                        at_seconds: t0.elapsed().as_secs_f64(),
                        outcome: "round completed before the fault could fire".into(),
                    });
                }
                return Ok(());
            }
            let Some(h) = host_idx else { return Ok(()) };
            let at = t0.elapsed().as_secs_f64();
            match a.fault {
                Fault::KillHost { .. } => {
                    cluster.nodes[h].sigkill();
                    a.down = vec![h];
                    a.killed_host = host.clone();
                    tracing::info!(node = h, round, "fault: SIGKILL the host");
                }
                Fault::Drop { count, .. } => {
                    let victims: Vec<usize> = (0..cluster.nodes.len())
                        .rev()
                        .filter(|&i| i != h && cluster.nodes[i].running())
                        .take(count)
                        .collect();
                    for &v in &victims {
                        cluster.nodes[v].sigkill();
                    }
                    a.down = victims;
                    tracing::info!(nodes = ?a.down, round, "fault: SIGKILL clients");
                }
                Fault::Restart { node, .. } => {
                    cluster.nodes[node].sigkill();
                    std::thread::sleep(Duration::from_millis(300));
                    cluster.start(node)?;
                    tracing::info!(node, round, "fault: SIGKILL and restart");
                }
                // Handled by `step_join` before this match.
                Fault::Join { .. } => return Ok(()),
            }
            a.fired_at = Some(Instant::now());
            a.record = Some(FaultRecord {
                kind: a.fault.kind().into(),
                round,
                nodes: match a.fault {
                    Fault::Restart { node, .. } => vec![node],
                    _ => a.down.clone(),
                },
                at_seconds: at,
                outcome: String::new(),
            });
            if matches!(a.fault, Fault::Restart { .. }) {
                a.done = true;
                if let Some(r) = a.record.as_mut() {
                    r.outcome = "killed and restarted; ledger checked at the end".into();
                }
            }
            Ok(())
        }
        Some(fired) => match a.fault {
            Fault::KillHost { .. } => {
                let killed = a.killed_host.clone().unwrap_or_default();
                let live: Vec<&StatusReport> = statuses.iter().flatten().collect();
                let new_host = !live.is_empty()
                    && live
                        .iter()
                        .all(|s| s.host.as_ref().is_some_and(|h| *h != killed));
                if !a.down.is_empty() && new_host {
                    let secs = fired.elapsed().as_secs_f64();
                    for &d in &a.down {
                        cluster.start(d)?;
                    }
                    a.down.clear();
                    a.reelection = Some(secs);
                    if let Some(r) = a.record.as_mut() {
                        r.outcome = format!(
                            "new host elected after {secs:.2} s; the killed node restarted as a client"
                        );
                    }
                }
                if a.down.is_empty() && completed >= round {
                    a.done = true;
                    let secs = fired.elapsed().as_secs_f64();
                    a.recovery = Some(secs);
                    if let Some(r) = a.record.as_mut() {
                        r.outcome.push_str(&format!(
                            "; round {round} completed {secs:.2} s after the kill"
                        ));
                    }
                }
                Ok(())
            }
            Fault::Drop { count, .. } => {
                let abandoned = host_phase == Some(Phase::Abandoned);
                if completed >= round || abandoned {
                    for &d in &a.down {
                        cluster.start(d)?;
                    }
                    a.down.clear();
                    a.done = true;
                    let outcome = match seen.rounds.get(&round) {
                        Some(r) => format!(
                            "round {round} completed with {} participants after {count} were killed",
                            r.participants
                        ),
                        None => format!(
                            "round {round}'s attempt aborted below the threshold; the killed clients restarted and the round was retried"
                        ),
                    };
                    if let Some(r) = a.record.as_mut() {
                        r.outcome = outcome;
                    }
                }
                Ok(())
            }
            Fault::Restart { .. } | Fault::Join { .. } => Ok(()),
        },
    }
}

/// A late member: started once its round is due; done when it holds the checkpoint of the
/// newest round completed when it started.
fn step_join(
    a: &mut Armed,
    cluster: &mut Cluster,
    node: usize,
    statuses: &[Option<StatusReport>],
    completed: u64,
    t0: Instant,
) -> anyhow::Result<()> {
    let round = a.fault.round();
    let Some(fired) = a.fired_at else {
        if completed + 1 >= round {
            cluster.start(node)?;
            tracing::info!(node, round, "fault: a late member joins");
            a.fired_at = Some(Instant::now());
            a.record = Some(FaultRecord {
                kind: a.fault.kind().into(),
                round,
                nodes: vec![node],
                at_seconds: t0.elapsed().as_secs_f64(),
                outcome: format!("joined after round {completed}"),
            });
            a.caught_up_to = completed;
        }
        return Ok(());
    };
    let held = statuses
        .get(node)
        .and_then(|s| s.as_ref())
        .map_or(0, |s| s.round);
    if held >= a.caught_up_to {
        a.done = true;
        let secs = fired.elapsed().as_secs_f64();
        if let Some(r) = a.record.as_mut() {
            r.outcome = format!(
                "joined after round {}; held its checkpoint {secs:.1} s after starting",
                a.caught_up_to
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_how_the_host_prepares() {
        let host = |preparing: Option<&str>| StatusReport {
            peer_id: "h".into(),
            host: Some("h".into()),
            phase: Some(Phase::Generate),
            preparing: preparing.map(String::from),
            ..StatusReport::default()
        };
        let index_of = |peer: &str| (peer == "h").then_some(0);
        let line = |s: StatusReport| progress_line(&[Some(s)], &Observed::default(), &index_of);
        assert!(line(host(Some("pre-training (cached)"))).contains(" · pre-training (cached) · "));
        assert!(line(host(Some("pre-training"))).contains(" · pre-training · "));
        assert!(line(host(None)).contains(" · generate · "));
    }

    /// What a host node's admin endpoint showed as `last_metrics` before the metrics were
    /// typed (the node's `json!` object: keys sorted, the `f32` mean reward widened).
    const OLD_HOST_METRICS: &str = r#"{"bytes":2523904,"checkpoint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","kept":48,"mean_reward":0.699999988079071,"participants":["p0","p1","p2","p9"],"phase_bytes":{"aggregate":1048576,"generate":1400000,"replicate":75328},"phase_seconds":{"aggregate":0.75,"generate":2.5,"improve":1.25,"learn":4.0,"replicate":0.125},"role":"host","round":3,"seconds":8.625,"term":2,"test_acc":0.8125}"#;

    #[test]
    fn reads_a_round_from_the_hosts_metrics_and_an_accuracy_from_each_node() {
        let index_of = |peer: &str| match peer {
            "p0" => Some(0),
            "p1" => Some(1),
            "p2" => Some(2),
            _ => None,
        };
        let status = |peer: &str, metrics: RoundMetrics, eps: f64| StatusReport {
            peer_id: peer.into(),
            term: 2,
            host: Some("p1".into()),
            epsilon_spent: eps,
            last_metrics: Some(metrics),
            ..StatusReport::default()
        };
        let host_metrics: RoundMetrics = serde_json::from_str(OLD_HOST_METRICS).unwrap();
        let statuses = vec![
            Some(status(
                "p0",
                RoundMetrics::Client {
                    round: 3,
                    term: 2,
                    test_acc: 0.75,
                    learn_seconds: 3.5,
                },
                1.5,
            )),
            Some(status("p1", host_metrics.clone(), 1.25)),
            None,
        ];
        let mut seen = Observed::default();
        assert_eq!(
            seen.read(0, statuses[0].as_ref().unwrap(), &statuses, &index_of),
            None
        );
        let host = statuses[1].as_ref().unwrap();
        let new = seen.read(1, host, &statuses, &index_of);
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(new, Some((3, hash.to_string())));
        assert_eq!(seen.terms.get(&2).map(String::as_str), Some("p1"));
        assert_eq!(
            seen.client_acc[&3],
            BTreeMap::from([(0, 0.75), (1, 0.8125)])
        );
        let r = &seen.rounds[&3];
        assert_eq!(
            (r.round, r.term, r.host.as_str(), r.host_index),
            (3, 2, "p1", Some(1))
        );
        // The unknown peer p9 is not a testnet node.
        assert_eq!(
            (r.participants, r.participant_nodes.clone()),
            (3, vec![0, 1, 2])
        );
        assert_eq!(r.kept, 48);
        assert_eq!(r.mean_reward, f64::from(0.7f32));
        assert_eq!((r.seconds, r.bytes), (8.625, 2_523_904));
        assert_eq!(r.phase_seconds.get(&Phase::Learn), Some(&4.0));
        assert_eq!(r.phase_seconds.len(), 5);
        assert_eq!(r.phase_bytes.get(&Phase::Replicate), Some(&75_328));
        assert_eq!(r.epsilon, BTreeMap::from([(0, 1.5), (1, 1.25)]));
        assert_eq!(r.checkpoint, hash);

        // Seen again: nothing new; the same round from another term counts twice.
        assert_eq!(seen.read(1, host, &statuses, &index_of), None);
        assert!(seen.double_counted.is_empty());
        let mut other = host.clone();
        if let Some(RoundMetrics::Host { term, .. }) = other.last_metrics.as_mut() {
            *term = 3;
        }
        assert_eq!(seen.read(2, &other, &statuses, &index_of), None);
        assert_eq!(seen.double_counted, BTreeSet::from([3]));
    }
}
