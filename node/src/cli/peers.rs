//! `fedmmkt peers`: the peers a node knows and their capabilities — from its admin endpoint
//! while it runs (with live connection state), from its store otherwise.
//!
//! Exit codes: 0 success; 1 runtime error; 2 the directory is not an initialised node.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin::{query_peers, PeerInfo};
use crate::store::NodeStore;

/// Arguments of `fedmmkt peers`.
#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    /// The node's data directory (made by `fedmmkt init`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print one JSON object: {"running": bool, "peers": [{peer_id, addrs, gpu, memory_mb,
    /// last_completed_round, connected, last_seen_unix_ms, offences, banned_until_unix_ms?,
    /// last_offence?}, ...]}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fedmmkt peers`.
pub fn run(args: PeersArgs) -> anyhow::Result<ExitCode> {
    let data = match super::initialised_dir(&args.data_dir) {
        Ok(data) => data,
        Err(code) => return Ok(code),
    };
    let (running, peers) = match query_peers(data.root())? {
        Some(peers) => (true, peers),
        None => {
            let store = NodeStore::open_existing(data.root())?;
            let peers = store.peers()?;
            (
                false,
                peers
                    .into_iter()
                    .map(|p| PeerInfo::from_record(p, false))
                    .collect(),
            )
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "running": running, "peers": peers })
        );
    } else {
        print_table(running, &peers);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(running: bool, peers: &[PeerInfo]) {
    if peers.is_empty() {
        println!(
            "no known peers{}",
            if running { "" } else { " (node not running)" }
        );
        return;
    }
    let width = peers
        .iter()
        .map(|p| p.peer_id.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<width$}  {:<9}  {:<3}  {:>9}  {:>5}  {:<13}  {:>8}  {:<16}  addrs",
        "peer id", "connected", "gpu", "memory", "round", "last seen", "offences", "banned"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for p in peers {
        let connected = if !running {
            "?"
        } else if p.connected {
            "yes"
        } else {
            "no"
        };
        let seen = if p.last_seen_unix_ms == 0 {
            "never".to_string()
        } else {
            format!("{} ago", ago(now_ms.saturating_sub(p.last_seen_unix_ms)))
        };
        let banned = match p.banned_until_unix_ms {
            Some(until) if until > now_ms => {
                format!("{} more", ago(until - now_ms))
            }
            _ => "no".to_string(),
        };
        println!(
            "{:<width$}  {:<9}  {:<3}  {:>6} MB  {:>5}  {:<13}  {:>8}  {:<16}  {}",
            p.peer_id,
            connected,
            if p.gpu { "yes" } else { "no" },
            p.memory_mb,
            p.last_completed_round,
            seen,
            p.offences,
            banned,
            p.addrs.join(" ")
        );
    }
    for p in peers {
        if let (Some(until), Some(why)) = (p.banned_until_unix_ms, &p.last_offence) {
            if until > now_ms {
                println!("{} is banned; its latest offence: {why}", p.peer_id);
            }
        }
    }
}

/// `1h 02m`, `3m 05s` or `42s` for a duration in ms.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn ago_formats_durations() {
        assert_eq!(ago(42_000), "42s");
        assert_eq!(ago(185_000), "3m 05s");
        assert_eq!(ago(3_720_000), "1h 02m");
    }
}
