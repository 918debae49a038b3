//! Subcommands of the `fedmmkt` binary, one module each.

pub mod bench;
pub mod init;
pub mod peers;
pub mod privacy;
pub mod run;
pub mod simulate;
pub mod status;

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays machine-readable.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
