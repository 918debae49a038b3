//! The one tracing setup of the `fedmmkt` and `fedmmkt-testnet` binaries: logs go to stderr,
//! filtered by `RUST_LOG`, in colour only on a terminal and only without `NO_COLOR`, so
//! `fedmmkt run > node.log 2>&1` writes plain text.

use std::ffi::OsStr;
use std::io::IsTerminal;

/// True when log lines should carry ANSI colour: the stream is a terminal and `NO_COLOR` is
/// unset or empty (<https://no-color.org>).
pub fn use_color(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the stderr subscriber, filtered by `RUST_LOG` (else `default_filter`, e.g. `info`);
/// a second call keeps the first subscriber.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let color = use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))));
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some(OsStr::new("1"))));
    }
}
