//! The running node's admin endpoint: HTTP on `admin.listen` (loopback by default), its
//! address in `DIR/admin.addr`. `fedmmkt status`, `peers` and `privacy audit` ask its routes
//! while the node runs (sled lets only one process open the node's databases); Prometheus
//! scrapes `/metrics`; a person opens the live page `/`.
//!
//! Routes (GET): `/status`, `/peers`, `/audit`, `/history` (JSON), `/metrics` (Prometheus
//! text), `/grid.png` (the host's latest synthetic images) and `/` (the page). Off loopback,
//! or with `admin.require_token`, every route but `/metrics` (unless `admin.metrics_token`)
//! needs `Authorization: Bearer <DIR/admin.token>`. Limits: [`http::MAX_HEAD`] bytes of
//! request head, no request bodies, [`http::MAX_CONNECTIONS`] connections at once,
//! [`http::HEAD_TIMEOUT`] to send a request and [`http::CONNECTION_LIFETIME`] per
//! connection. The node publishes what to answer through a `tokio::sync::watch` channel.

mod client;
mod exposition;
pub mod http;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::wire::Phase;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::metrics::{RoundMetrics, RoundPoint};
use crate::store::{write_atomic, DataDir, PeerRecord, StoreError};

#[doc(hidden)]
pub use client::parse_reply_for_fuzzing;
pub use client::{query, query_peers, query_status, MAX_RESPONSE, QUERY_TIMEOUT};
pub use exposition::metrics_text;
pub use http::Access;

/// What can go wrong reaching the admin endpoint or publishing its address.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A file could not be read or written, or the listener could not be bound.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing `admin.addr` failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `admin.addr` does not hold an `ip:port`.
    #[error("{}: not an admin address: {text:?}", path.display())]
    BadAddrFile {
        /// The address file.
        path: PathBuf,
        /// Its content.
        text: String,
    },
    /// Connecting, sending or receiving failed (other than "nothing listens there").
    #[error("admin endpoint {addr}: {source}")]
    Connection {
        /// The endpoint.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The endpoint's answer is not the expected JSON.
    #[error("admin endpoint {addr} sent an invalid answer: {reason}")]
    BadReply {
        /// The endpoint.
        addr: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("the running node answered {status}: {message}")]
    Remote {
        /// The HTTP status code.
        status: u16,
        /// Its `error` text.
        message: String,
    },
    /// The route is not a plain path (`status`, `audit`, ...).
    #[error("invalid admin route {0:?}")]
    BadRequest(String),
    /// The bearer token file is missing, unreadable, too short or readable by others.
    #[error(transparent)]
    Token(#[from] token::TokenError),
}

/// The node's state as `fedmmkt status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node's libp2p id.
    pub peer_id: String,
    /// True when the report comes from a running node.
    pub running: bool,
    /// Current election term.
    pub term: u64,
    /// The generator host of the current (or last recorded) term.
    pub host: Option<String>,
    /// Last completed round.
    pub round: u64,
    /// Phase of the round in progress.
    pub phase: Option<Phase>,
    /// Peer ids of the known (running: connected) peers.
    pub peers: Vec<String>,
    /// ε spent so far, at `delta`.
    pub epsilon_spent: f64,
    /// The ledger's cap on ε.
    pub epsilon_budget: f64,
    /// δ at which ε is measured.
    pub delta: f64,
    /// What the privacy budget protects ("record" or "client").
    #[serde(default)]
    pub privacy_unit: privacy::PrivacyUnit,
    /// How the last round's learning used the private records: "dp-sgd", "budget-spent"
    /// (synthetic samples only, at no cost), "already-trained", "plain".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_training: Option<crate::learn::PrivateUse>,
    /// Metrics of the last completed round.
    pub last_metrics: Option<RoundMetrics>,
    /// What the host does before its first round, while it does it: "pre-training",
    /// "pre-training (cached)" or "resuming".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparing: Option<String>,
    /// How the last round this node joined summed its uploads: SecAgg's complete graph or
    /// SecAgg+'s k neighbours, with the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<String>,
    /// Bytes of checkpoints this node sent to members that asked for them, since it started.
    #[serde(default)]
    pub checkpoint_bytes_served: u64,
}

/// A peer and its capabilities, as `fedmmkt peers` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's libp2p id.
    pub peer_id: String,
    /// Multiaddrs it was seen at.
    pub addrs: Vec<String>,
    /// It has a usable GPU.
    pub gpu: bool,
    /// Memory it reports, MiB.
    pub memory_mb: u64,
    /// Last round it reports as completed.
    pub last_completed_round: u64,
    /// Connected right now (always false when read from the store).
    pub connected: bool,
    /// Last time it was heard from, ms since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// Offences counted against it (requests refused for its own fault).
    #[serde(default)]
    pub offences: u64,
    /// While it is banned: until when, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_until_unix_ms: Option<u64>,
    /// Its latest offence, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offence: Option<String>,
}

impl PeerInfo {
    /// The stored record of a peer, with its connection state.
    pub fn from_record(record: PeerRecord, connected: bool) -> Self {
        Self {
            peer_id: record.peer_id,
            addrs: record.addrs,
            gpu: record.gpu,
            memory_mb: record.memory_mb,
            last_completed_round: record.last_completed_round,
            connected,
            last_seen_unix_ms: record.last_seen_unix_ms,
            offences: record.offences,
            banned_until_unix_ms: record.banned_until_unix_ms,
            last_offence: record.last_offence,
        }
    }
}

/// The host's latest synthetic images, as the live page shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// The round they were sampled for.
    pub round: u64,
    /// A PNG, one row per class.
    pub png: Vec<u8>,
}

/// Everything the endpoint answers with; the node replaces it through the watch channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminState {
    /// Answer to `/status`.
    pub status: StatusReport,
    /// Answer to `/peers`.
    pub peers: Vec<PeerInfo>,
    /// Answer to `/audit`: the ledger's `privacy::ledger::AuditReport` as JSON.
    pub audit: Option<Value>,
    /// Answer to `/history`: ε spent and accuracy per round, oldest first.
    #[serde(default)]
    pub history: Vec<RoundPoint>,
    /// Request-response bytes sent since the node started.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Request-response bytes received since the node started.
    #[serde(default)]
    pub bytes_received: u64,
    /// The host's latest synthetic images (`/grid.png`).
    #[serde(skip)]
    pub grid: Option<Arc<Grid>>,
}

/// Binds `listen`, writes `DIR/admin.addr` (a loopback address when `listen` is unspecified,
/// so the CLI reaches it) and spawns [`http::serve`]; returns the address and the server task
/// (abort it, then call [`remove_addr`], on shutdown).
pub async fn start(
    dir: &Path,
    listen: SocketAddr,
    access: Access,
    state: watch::Receiver<AdminState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let bind_err = |source| AdminError::Io {
        path: PathBuf::from(listen.to_string()),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_err)?;
    let mut addr = listener.local_addr().map_err(bind_err)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    write_addr(dir, addr)?;
    Ok((addr, tokio::spawn(http::serve(listener, access, state))))
}

/// Publishes the endpoint's address in `DIR/admin.addr` (atomically).
pub fn write_addr(dir: &Path, addr: SocketAddr) -> Result<(), AdminError> {
    let path = DataDir::new(dir).admin_addr();
    write_atomic(&path, format!("{addr}\n").as_bytes(), false)?;
    Ok(())
}

/// Removes `DIR/admin.addr` (no error when it is already gone).
pub fn remove_addr(dir: &Path) -> Result<(), AdminError> {
    let path = DataDir::new(dir).admin_addr();
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AdminError::Io { path, source }),
    }
}
