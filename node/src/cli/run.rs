//! `fedmmkt run`: runs a node until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use libp2p::Multiaddr;

use crate::paths::UserPath;
use crate::run::{self, RunOptions};

/// Whether the node may use a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GpuMode {
    /// Use a CUDA device when this build has the `cuda` feature and one answers.
    Auto,
    /// CPU only.
    Off,
}

/// Arguments of `fedmmkt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node's data directory (from `fedmmkt init`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Listen address (repeatable; default: the config's `network.listen`).
    #[arg(long)]
    pub listen: Vec<Multiaddr>,
    /// A peer to dial at start (repeatable; added to the config's `network.bootstrap`).
    #[arg(long)]
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS (multicasts on the real interface).
    #[arg(long)]
    pub mdns: bool,
    /// Private dataset directory (IDX files + classes.txt); default: the config's, else a
    /// shard of the embedded data chosen from the peer id.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// GPU use.
    #[arg(long, value_enum, default_value = "auto")]
    pub gpu: GpuMode,
}

/// Runs the node on a tokio runtime until Ctrl-C / SIGTERM.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = RunOptions {
        data_dir: UserPath::from_cwd("--data-dir", &args.data_dir)?,
        listen: args.listen,
        bootstrap: args.bootstrap,
        mdns: args.mdns,
        dataset: (args.dataset.as_deref())
            .map(|d| UserPath::from_cwd("--dataset", d))
            .transpose()?,
        gpu: args.gpu == GpuMode::Auto,
    };
    runtime.block_on(run::run(opts, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
