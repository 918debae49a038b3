//! `fedmmkt status`: the node's term, host, round, phase, peers and privacy spend — from its
//! admin endpoint while it runs, from its data directory (store, ledger, identity) otherwise.
//!
//! Exit codes: 0 success; 1 runtime error; 2 the directory is not an initialised node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use privacy::error::PrivacyError;
use privacy::ledger::Ledger;

use crate::admin::{query_status, StatusReport};
use crate::config::NodeConfig;
use crate::store::{is_lock_error, load_identity, DataDir, NodeStore, StoreError};

/// Arguments of `fedmmkt status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The node's data directory (made by `fedmmkt init`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print exactly one JSON object (the fields of the table, plus `delta` and `last_metrics`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `fedmmkt status`.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let data = match super::initialised_dir(&args.data_dir) {
        Ok(data) => data,
        Err(code) => return Ok(code),
    };
    let report = match query_status(data.root())? {
        Some(report) => report,
        None => offline_report(&data)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
        if report.running {
            if let Ok(addr) = std::fs::read_to_string(data.admin_addr()) {
                println!(
                    "{:<8} http://{}/ (live page, /metrics)",
                    "admin",
                    addr.trim()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The status of a stopped node, read from its data directory.
pub fn offline_report(data: &DataDir) -> anyhow::Result<StatusReport> {
    let root = data.root();
    let peer_id = load_identity(root)?.public().to_peer_id().to_string();
    let store = NodeStore::open_existing(root).map_err(not_answering(root))?;
    let (term, _) = store.election()?;
    let host = store.last_host()?.map(|(_, peer)| peer);
    let ledger_dir = data.ledger();
    let ledger = Ledger::open_existing(&ledger_dir)
        .map_err(|e| match e {
            PrivacyError::Storage(s) if is_lock_error(&s) => {
                not_answering(root)(StoreError::Locked {
                    path: Ledger::db_path(&ledger_dir),
                })
            }
            other => anyhow::Error::from(other),
        })
        .with_context(|| format!("opening the privacy ledger in {}", ledger_dir.display()))?;
    let cfg = NodeConfig::load(&data.config())?;
    let (epsilon_budget, delta) = match ledger.budget()? {
        Some(b) => (b.epsilon, b.delta),
        None => (cfg.privacy.epsilon, cfg.privacy.delta),
    };
    Ok(StatusReport {
        peer_id,
        running: false,
        term,
        host,
        round: store.last_completed_round()?,
        phase: store.phase()?.map(|p| p.phase),
        peers: store.peers()?.into_iter().map(|p| p.peer_id).collect(),
        epsilon_spent: ledger.epsilon_spent(delta)?.epsilon,
        epsilon_budget,
        delta,
        privacy_unit: cfg.privacy.unit,
        private_training: None,
        last_metrics: store.metrics()?,
        preparing: None,
        secure_aggregation: None,
        checkpoint_bytes_served: 0,
    })
}

/// Turns "the database is locked" into "a node runs here but its admin endpoint is silent".
fn not_answering(root: &Path) -> impl Fn(StoreError) -> anyhow::Error + '_ {
    move |e| match e {
        StoreError::Locked { .. } => anyhow::anyhow!(
            "{e}; a node seems to be running on {} but its admin endpoint did not answer \
             (is {} stale?)",
            root.display(),
            DataDir::new(root).admin_addr().display()
        ),
        other => other.into(),
    }
}

fn print_report(r: &StatusReport) {
    let dash = || "-".to_string();
    let rows = [
        ("peer id", r.peer_id.clone()),
        ("running", if r.running { "yes" } else { "no" }.to_string()),
        ("term", r.term.to_string()),
        ("host", r.host.clone().unwrap_or_else(dash)),
        ("round", format!("{} completed", r.round)),
        ("phase", r.phase.map_or_else(dash, |p| p.to_string())),
        (
            "peers",
            if r.peers.is_empty() {
                "0".to_string()
            } else {
                format!("{} ({})", r.peers.len(), r.peers.join(", "))
            },
        ),
        (
            "privacy",
            format!(
                "{}-level: ε {:.6} spent of {} at δ = {:e}; {:.6} left{}",
                r.privacy_unit,
                r.epsilon_spent,
                r.epsilon_budget,
                r.delta,
                (r.epsilon_budget - r.epsilon_spent).max(0.0),
                match r.private_training {
                    Some(crate::learn::PrivateUse::BudgetSpent) => {
                        "; budget spent: taking part on synthetic samples only"
                    }
                    Some(crate::learn::PrivateUse::DpSgd) => "; last round trained by DP-SGD",
                    _ => "",
                }
            ),
        ),
        ("secagg", r.secure_aggregation.clone().unwrap_or_else(dash)),
        (
            "metrics",
            r.last_metrics
                .as_ref()
                .and_then(|m| serde_json::to_string(m).ok())
                .unwrap_or_else(dash),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<8} {v}");
    }
}
