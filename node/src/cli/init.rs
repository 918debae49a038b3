//! `fedmmkt init`: creates a node's data directory (identity, config, PSK, privacy ledger with
//! its budget, node store, admin token); see [`crate::store`] for the layout.
//!
//! Exit codes: 0 success; 1 runtime error (I/O, storage, ...); 2 bad arguments or the
//! directory is already initialised.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use privacy::ledger::{Budget, Ledger};

use crate::config::{ConfigError, NodeConfig};
use crate::net::psk::{load_psk, PskError};
use crate::paths::UserPath;
use crate::store::{create_identity, write_atomic, DataDir, NodeStore, StoreError, SWARM_KEY_FILE};

use super::EXIT_USAGE;

/// Arguments of `fedmmkt init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Data directory to create (or fill, if it exists but holds no node yet).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Private-network pre-shared key: libp2p's swarm.key format or 64 hex digits; copied to
    /// DIR/swarm.key.
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Privacy budget ε_max of this node [default: the config's, 8].
    #[arg(long, allow_negative_numbers = true)]
    pub epsilon: Option<f64>,
    /// δ of the budget, in (0, 1) [default: the config's, 1e-5].
    #[arg(long, allow_negative_numbers = true)]
    pub delta: Option<f64>,
    /// Print one JSON object: {"peer_id", "data_dir", "config", "psk_fingerprint",
    /// "admin_token"} (the token's path).
    #[arg(long)]
    pub json: bool,
}

/// Runs `fedmmkt init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let usage = |msg: String| {
        eprintln!("error: {msg}");
        Ok(ExitCode::from(EXIT_USAGE))
    };
    let dir = match UserPath::from_cwd("--data-dir", &args.data_dir) {
        Ok(p) => p,
        Err(e) => return usage(e.to_string()),
    };
    let data = DataDir::new(dir.resolved());
    if data.has_any_node_file() {
        return usage(format!(
            "{} is already initialised (it holds a node's identity, config or store); \
             refusing to overwrite it: choose another --data-dir",
            args.data_dir.display()
        ));
    }
    // Check every input before creating anything, so a mistake leaves no half-made node.
    let mut cfg = NodeConfig::default();
    if let Some(e) = args.epsilon {
        cfg.privacy.epsilon = e;
    }
    if let Some(d) = args.delta {
        cfg.privacy.delta = d;
    }
    let psk = match &args.psk_file {
        None => None,
        Some(f) => {
            let path = match UserPath::from_cwd("--psk-file", f) {
                Ok(p) => p,
                Err(e) => return usage(e.to_string()),
            };
            match load_psk(path.resolved()) {
                Ok(k) => Some(k),
                Err(PskError::Io { source, .. }) => {
                    return usage(format!("--psk-file {path}: {source}"))
                }
                Err(e) => return usage(e.to_string()),
            }
        }
    };
    if psk.is_some() {
        cfg.network.psk_file = Some(SWARM_KEY_FILE.into());
    }
    match cfg.validate() {
        Ok(()) => {}
        Err(ConfigError::Invalid { field, reason }) => {
            let flag = match field.as_str() {
                "privacy.epsilon" => "--epsilon",
                "privacy.delta" => "--delta",
                other => other,
            };
            return usage(format!("{flag}: {reason}"));
        }
        Err(e) => return Err(e.into()),
    }
    let budget = Budget::new(cfg.privacy.epsilon, cfg.privacy.delta)?;
    let config_text = cfg.to_toml_documented()?;

    let root = data.root();
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let keypair = match create_identity(root) {
        Ok(k) => k,
        Err(e @ StoreError::AlreadyExists { .. }) => return usage(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let peer_id = keypair.public().to_peer_id();
    if let Some(k) = psk {
        write_atomic(&data.swarm_key(), k.to_key_file().as_bytes(), true)?;
    }
    write_atomic(&data.config(), config_text.as_bytes(), false)?;
    let ledger_dir = data.ledger();
    let ledger = Ledger::open(&ledger_dir)
        .with_context(|| format!("creating the privacy ledger in {}", ledger_dir.display()))?;
    ledger.set_budget(budget)?;
    drop(ledger);
    NodeStore::open(root)?.flush()?;
    let token = crate::admin::token::generate(root)?;

    let fingerprint = psk.map(|k| k.fingerprint().to_string());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "peer_id": peer_id.to_string(),
                "data_dir": root.display().to_string(),
                "config": data.config().display().to_string(),
                "psk_fingerprint": fingerprint,
                "admin_token": token.display().to_string(),
            })
        );
    } else {
        println!("{peer_id}");
        eprintln!("initialised {}", root.display());
        eprintln!("  peer id   {peer_id}");
        eprintln!("  config    {}", data.config().display());
        match &fingerprint {
            Some(f) => eprintln!(
                "  psk       {} (fingerprint {f})",
                data.swarm_key().display()
            ),
            None => eprintln!("  psk       none (any peer may connect; see network.members)"),
        }
        eprintln!(
            "  admin     {} (bearer token of the HTTP admin endpoint off loopback; mode 0600)",
            token.display()
        );
        eprintln!(
            "  ledger    {} (budget ε ≤ {} at δ = {:e}; audit: fedmmkt privacy audit --data-dir {})",
            ledger_dir.display(),
            budget.epsilon,
            budget.delta,
            ledger_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
