//! `fedmmkt-testnet`: a local federation of real `fedmmkt` node processes on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use testnet::cluster::node_binary;
use testnet::faults::{AtRound, Fault};
use testnet::up::{install_signal_handlers, up, UpConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A local fedmmkt testnet: nodes, faults, invariants, a report.
#[derive(Parser)]
#[command(name = "fedmmkt-testnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start N nodes on loopback, run FedMMKT rounds (with DP and secure aggregation), inject
    /// faults, verify the invariants and write DIR/report.md + report.json + PNGs.
    Up(UpArgs),
    /// Run `up` once per federation size (into OUT/n<N>) and write OUT/scale.md, scale.json,
    /// scale.csv and charts: seconds per phase and the host's bytes per round against N.
    Scale(ScaleArgs),
}

/// Arguments of `fedmmkt-testnet scale`.
#[derive(Debug, Args)]
struct ScaleArgs {
    /// Federation sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [4usize, 16, 32, 64])]
    sizes: Vec<usize>,
    /// Everything else, as for `up` (its --nodes is replaced by each size).
    #[command(flatten)]
    up: UpArgs,
}

/// Arguments of `fedmmkt-testnet up`.
#[derive(Debug, Clone, Args)]
struct UpArgs {
    /// Node processes (one is elected host; every node, the host too, contributes its own data; at least 3).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// FedMMKT rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Dirichlet α of the label skew across nodes.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Seed of the data partition, models and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-node privacy budget ε (at δ = --dp-delta), in the unit of --privacy-unit.
    #[arg(long, default_value_t = 8.0)]
    dp_epsilon: f64,
    /// What the budget protects: `record` (every private record, by DP-SGD in local
    /// training) or `client` (each node's whole upload per round; pays only with hundreds
    /// of contributors per round).
    #[arg(long, default_value = "record")]
    privacy_unit: privacy::PrivacyUnit,
    /// δ of the privacy guarantee.
    #[arg(long, default_value_t = 1e-5)]
    dp_delta: f64,
    /// Output directory (report, node directories and logs).
    #[arg(long, default_value = "out/testnet")]
    out: PathBuf,
    /// Tiny models (seconds per round; for smoke runs and tests).
    #[arg(long)]
    tiny: bool,
    /// SIGKILL the host during round R.
    #[arg(long, value_name = "R")]
    kill_host_at: Option<u64>,
    /// SIGKILL K clients during round R's secure aggregation (K@R; repeatable).
    #[arg(long, value_name = "K@R")]
    drop: Vec<AtRound>,
    /// SIGKILL node NODE during round R and restart it (NODE@R; repeatable).
    #[arg(long, value_name = "NODE@R")]
    restart: Vec<AtRound>,
    /// Start node NODE (a member from the start) only when round R is due, so it must catch
    /// up on the checkpoints it missed (NODE@R; repeatable; not node 0).
    #[arg(long, value_name = "NODE@R")]
    join: Vec<AtRound>,
    /// Start an extra node without the pre-shared key that tries to join.
    #[arg(long)]
    intruder: bool,
    /// Give up after this many seconds (default: from the nodes, rounds and model size).
    #[arg(long)]
    timeout: Option<u64>,
    /// Serve a live page of the whole testnet while it runs, and print its URL (on ADDR, a
    /// loopback ip:port; default 127.0.0.1 with a free port).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    dashboard: Option<std::net::SocketAddr>,
    /// Run the same config without faults first (into OUT/baseline) and check that the final
    /// accuracies agree within --tolerance.
    #[arg(long)]
    baseline: bool,
    /// Largest difference of final accuracies, in percentage points, that counts as noise.
    #[arg(long, default_value_t = 5.0)]
    tolerance: f64,
    /// The `fedmmkt` binary (default: next to this one, built first when run through cargo).
    #[arg(long)]
    fedmmkt: Option<PathBuf>,
}

/// What `up` runs with these arguments.
fn up_config(a: &UpArgs) -> anyhow::Result<UpConfig> {
    let mut faults = Vec::new();
    if let Some(round) = a.kill_host_at {
        anyhow::ensure!(round >= 1, "--kill-host-at: rounds start at 1");
        faults.push(Fault::KillHost { round });
    }
    faults.extend(a.drop.iter().map(|d| Fault::Drop {
        count: d.what,
        round: d.round,
    }));
    faults.extend(a.restart.iter().map(|r| Fault::Restart {
        node: r.what,
        round: r.round,
    }));
    faults.extend(a.join.iter().map(|r| Fault::Join {
        node: r.what,
        round: r.round,
    }));
    // Each round's learning shares this machine's cores among all N nodes, and its stages
    // last longer with N (see `up`): at 64 tiny nodes on 2 cores rounds took 149–231 s.
    let n = a.nodes as u64;
    let per_round = if a.tiny {
        45 + 5 * n
    } else {
        (30 * n).max(240)
    };
    // Starting a node takes a few seconds of the shared cores.
    let start = 120 + 5 * n;
    Ok(UpConfig {
        nodes: a.nodes,
        rounds: a.rounds,
        alpha: a.alpha,
        seed: a.seed,
        epsilon: a.dp_epsilon,
        delta: a.dp_delta,
        unit: a.privacy_unit,
        out: a.out.clone(),
        tiny: a.tiny,
        faults,
        intruder: a.intruder,
        timeout: Duration::from_secs(a.timeout.unwrap_or(start + per_round * a.rounds)),
        bin: node_binary(a.fedmmkt.clone(), &std::env::current_exe()?)?,
        progress: true,
        baseline: a.baseline,
        tolerance: a.tolerance / 100.0,
        dashboard: a.dashboard,
    })
}

fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    let cfg = up_config(&a)?;
    install_signal_handlers();
    let report = up(&cfg)?;
    println!(
        "{} rounds of {} completed on {} nodes in {:.1} s: {}",
        report.rounds_completed,
        report.rounds_requested,
        report.nodes,
        report.wall_seconds,
        if report.ok { "OK" } else { "FAILED" }
    );
    for f in &report.failures {
        println!("  failed: {f}");
    }
    println!("report: {}", a.out.join("report.md").display());
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn scale(a: ScaleArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!a.sizes.is_empty(), "--sizes names no federation size");
    install_signal_handlers();
    let mut points = Vec::new();
    for &nodes in &a.sizes {
        let args = UpArgs {
            nodes,
            out: a.up.out.join(format!("n{nodes}")),
            ..a.up.clone()
        };
        let cfg = up_config(&args)?;
        eprintln!(
            "{nodes} nodes, {} rounds ({})",
            cfg.rounds,
            cfg.out.display()
        );
        let report = up(&cfg)?;
        println!(
            "{nodes} nodes: {} of {} rounds in {:.1} s: {}",
            report.rounds_completed,
            report.rounds_requested,
            report.wall_seconds,
            if report.ok { "OK" } else { "FAILED" }
        );
        points.push(testnet::scale::summarize(&report));
    }
    testnet::scale::write(&a.up.out, &points)?;
    println!("{}", testnet::scale::markdown(&points));
    println!("scale report: {}", a.up.out.join("scale.md").display());
    Ok(if points.iter().all(|p| p.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init("warn");
    let result = match cli.command {
        Command::Up(args) => run(args),
        Command::Scale(args) => scale(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
