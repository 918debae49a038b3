//! The running node's local admin endpoint: a TCP listener on loopback whose address is in
//! `DIR/admin.addr`; `fedmmkt status`, `peers` and `privacy audit` ask it while the node runs
//! (sled lets only one process open the node's databases).
//!
//! Protocol: one request per connection, a line `status`, `peers` or `audit` (at most
//! [`MAX_REQUEST`] bytes), answered by one JSON line; anything else gets `{"error": ...}`.
//! Each connection has [`CONNECTION_TIMEOUT`] to finish and at most [`MAX_CONNECTIONS`] are
//! served at once. The node publishes what to answer through a `tokio::sync::watch` channel.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::wire::Phase;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::metrics::RoundMetrics;
use crate::store::{write_atomic, DataDir, PeerRecord, StoreError};

/// Longest request line, newline excluded.
pub const MAX_REQUEST: usize = 64;
/// Time a connection has to send its request and receive the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 16;
/// Timeout of [`query`]'s connect, write and read.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer [`query`] reads.
pub const MAX_RESPONSE: u64 = 16 << 20;

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
    /// `admin.addr` names a non-loopback address; the endpoint only ever binds loopback.
    #[error("{}: {addr} is not a loopback address; refusing to connect", path.display())]
    NotLoopback {
        /// The address file.
        path: PathBuf,
        /// The address it holds.
        addr: SocketAddr,
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
    /// The node answered with an error.
    #[error("the running node answered: {0}")]
    Remote(String),
    /// The request is not one line of at most [`MAX_REQUEST`] bytes.
    #[error("invalid admin request {0:?}")]
    BadRequest(String),
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

/// Everything the endpoint answers with; the node replaces it through the watch channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminState {
    /// Answer to `status`.
    pub status: StatusReport,
    /// Answer to `peers`.
    pub peers: Vec<PeerInfo>,
    /// Answer to `audit`: the ledger's `privacy::ledger::AuditReport` as JSON.
    pub audit: Option<Value>,
}

/// Binds `127.0.0.1:0`, writes `DIR/admin.addr` and spawns [`serve`]; returns the address
/// and the server task (abort it, then call [`remove_addr`], on shutdown).
pub async fn start(
    dir: &Path,
    state: watch::Receiver<AdminState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let bind_err = |source| AdminError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    write_addr(dir, addr)?;
    Ok((addr, tokio::spawn(serve(listener, state))))
}

/// Serves admin requests on `listener` until the watch channel's sender is dropped.
pub async fn serve(listener: TcpListener, mut state: watch::Receiver<AdminState>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !peer.ip().is_loopback() {
                        tracing::warn!("admin endpoint: refused a connection from {peer}");
                        continue;
                    }
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!("admin endpoint: too many connections, dropped one");
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, state)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!("admin endpoint: connection failed: {e}"),
                            Err(_) => tracing::debug!("admin endpoint: connection timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("admin endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn handle(stream: TcpStream, state: watch::Receiver<AdminState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut request = Vec::with_capacity(MAX_REQUEST + 1);
    reader.read_until(b'\n', &mut request).await?;
    let answer = {
        let current = state.borrow();
        answer(&request, &current)
    };
    let mut line = answer.to_string();
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    write.shutdown().await?;
    // Read (a bounded amount of) what the client sent beyond the request, so closing the
    // socket with unread input does not reset the connection before it reads the answer.
    let mut rest = reader.into_inner().into_inner().take(4096);
    tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
    Ok(())
}

/// The JSON answer to one raw request line (newline optional) given the node's state.
pub fn answer(request: &[u8], state: &AdminState) -> Value {
    let error = |msg: String| serde_json::json!({ "error": msg });
    let line = request.strip_suffix(b"\n").unwrap_or(request);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_REQUEST || line.contains(&b'\n') {
        return error(format!("request longer than {MAX_REQUEST} bytes"));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return error("request is not UTF-8".into());
    };
    let value = match text.trim() {
        "status" => serde_json::to_value(&state.status),
        "peers" => serde_json::to_value(&state.peers),
        "audit" => match &state.audit {
            Some(audit) => Ok(audit.clone()),
            None => return error("no privacy audit available yet".into()),
        },
        other => {
            return error(format!(
                "unknown request {other:?}: expected status, peers or audit"
            ))
        }
    };
    value.unwrap_or_else(|e| error(format!("could not encode the answer: {e}")))
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

/// Asks the node running on `dir` (blocking, [`QUERY_TIMEOUT`]); `Ok(None)` when no node
/// runs there (no `admin.addr`, or nothing listens at it).
pub fn query(dir: &Path, what: &str) -> Result<Option<Value>, AdminError> {
    if what.is_empty() || what.len() > MAX_REQUEST || what.contains(['\n', '\r']) {
        return Err(AdminError::BadRequest(what.into()));
    }
    let path = DataDir::new(dir).admin_addr();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AdminError::Io { path, source }),
    };
    let addr: SocketAddr = text.trim().parse().map_err(|_| AdminError::BadAddrFile {
        path: path.clone(),
        text: text.trim().chars().take(100).collect(),
    })?;
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback { path, addr });
    }
    let conn = |source| AdminError::Connection { addr, source };
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, QUERY_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(conn(e)),
    };
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).map_err(conn)?;
    stream
        .set_write_timeout(Some(QUERY_TIMEOUT))
        .map_err(conn)?;
    stream
        .write_all(format!("{what}\n").as_bytes())
        .map_err(conn)?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut reply)
        .map_err(conn)?;
    let value: Value = serde_json::from_slice(&reply).map_err(|e| AdminError::BadReply {
        addr,
        reason: e.to_string(),
    })?;
    if let Some(obj) = value.as_object() {
        if obj.len() == 1 {
            if let Some(msg) = obj.get("error") {
                return Err(AdminError::Remote(
                    msg.as_str().map_or_else(|| msg.to_string(), str::to_string),
                ));
            }
        }
    }
    Ok(Some(value))
}

/// [`query`] for `status`, decoded.
pub fn query_status(dir: &Path) -> Result<Option<StatusReport>, AdminError> {
    query_typed(dir, "status")
}

/// [`query`] for `peers`, decoded.
pub fn query_peers(dir: &Path) -> Result<Option<Vec<PeerInfo>>, AdminError> {
    query_typed(dir, "peers")
}

fn query_typed<T: serde::de::DeserializeOwned>(
    dir: &Path,
    what: &str,
) -> Result<Option<T>, AdminError> {
    let Some(value) = query(dir, what)? else {
        return Ok(None);
    };
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| AdminError::BadReply {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            reason: format!("{what}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AdminState {
        AdminState {
            status: StatusReport {
                peer_id: "me".into(),
                running: true,
                term: 3,
                round: 2,
                ..StatusReport::default()
            },
            peers: vec![PeerInfo {
                peer_id: "other".into(),
                connected: true,
                ..PeerInfo::default()
            }],
            audit: None,
        }
    }

    #[test]
    fn answers_known_requests_and_errors_on_the_rest() {
        let s = state();
        assert_eq!(answer(b"status\n", &s)["term"], 3);
        assert_eq!(answer(b" peers \r\n", &s)[0]["peer_id"], "other");
        assert!(answer(b"audit\n", &s)["error"].is_string());
        assert!(answer(b"shutdown\n", &s)["error"]
            .as_str()
            .unwrap()
            .contains("unknown request"));
        assert!(answer(&[b'x'; 65], &s)["error"].is_string());
        assert!(answer(&[0xff, 0xfe], &s)["error"].is_string());
        assert!(answer(b"status\nstatus\n", &s)["error"].is_string());
    }

    #[test]
    fn query_without_a_node_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(query(dir.path(), "status").unwrap().is_none());
        // A stale address (nothing listens there any more) also means "not running".
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        write_addr(dir.path(), addr).unwrap();
        assert!(query(dir.path(), "status").unwrap().is_none());
        remove_addr(dir.path()).unwrap();
        remove_addr(dir.path()).unwrap();
        assert!(query(dir.path(), "bad\nrequest").is_err());
        std::fs::write(DataDir::new(dir.path()).admin_addr(), "10.0.0.1:80").unwrap();
        assert!(matches!(
            query(dir.path(), "status"),
            Err(AdminError::NotLoopback { .. })
        ));
    }

    #[test]
    fn serve_answers_over_tcp_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, rx) = watch::channel(state());
        let (addr, task) = rt.block_on(start(dir.path(), rx)).unwrap();
        // A client that sends an oversized request without a newline gets an error line.
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.write_all(&[b'a'; 200]).unwrap();
        let mut reply = String::new();
        raw.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("error"), "{reply}");
        let status = query_status(dir.path()).unwrap().unwrap();
        assert_eq!(status, state().status);
        tx.send_modify(|s| s.audit = Some(serde_json::json!({"entries": []})));
        assert_eq!(
            query(dir.path(), "audit").unwrap().unwrap()["entries"],
            serde_json::json!([])
        );
        assert!(matches!(
            query(dir.path(), "nope"),
            Err(AdminError::Remote(_))
        ));
        drop(tx);
        rt.block_on(task).unwrap();
    }
}
