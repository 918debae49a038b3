//! The node's data directory and its durable state: election term and vote, round progress,
//! known peers, last metrics, per-round history and content-addressed generator checkpoints.
//!
//! # Data directory layout
//!
//! ```text
//! DIR/config.toml            the node's config (`fedmmkt init` writes it with every field documented)
//! DIR/identity.key           libp2p ed25519 keypair, protobuf encoding, mode 0600; the peer id
//! DIR/swarm.key              private-network pre-shared key (libp2p format), when init got one
//! DIR/ledger/                the privacy ledger: `node_key.pk8` (signing key) and `db/` (sled);
//!                            audit it with `fedmmkt privacy audit --data-dir DIR/ledger`
//! DIR/state/                 sled database of this module's [`NodeStore`]
//! DIR/checkpoints/<sha256>.bin  generator checkpoints, named by the SHA-256 of their bytes;
//!                            the newest 3 rounds' are kept
//! DIR/admin.addr             `ip:port` of a running node's HTTP admin endpoint (see
//!                            [`crate::admin`]); removed on clean shutdown
//! DIR/admin.token            the admin endpoint's bearer token, mode 0600 (written by init)
//! ```
//!
//! Every write to the store is flushed to disk before the call returns: callers rely on
//! "written before sent" (a client marks a round uploaded *before* its upload leaves).

mod data_dir;

pub mod space;

pub use data_dir::{create_identity, load_identity, write_atomic, DataDir};

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use protocol::wire::Phase;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::CONFIG_FILE;
use crate::metrics::{RoundMetrics, RoundPoint};

/// Identity key file name.
pub const IDENTITY_FILE: &str = "identity.key";
/// Pre-shared key file name written by `init`.
pub const SWARM_KEY_FILE: &str = "swarm.key";
/// Privacy ledger directory name.
pub const LEDGER_DIR: &str = "ledger";
/// Node store (sled) directory name.
pub const STATE_DIR: &str = "state";
/// Checkpoint directory name.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Admin endpoint address file name.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";
/// File name of the admin endpoint's bearer token (mode 0600), written by `init`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Checkpoints kept on disk (the newest rounds').
pub const KEEP_CHECKPOINTS: usize = 3;

const ELECTION_KEY: &[u8] = b"election";
const LAST_ROUND_KEY: &[u8] = b"last_completed_round";
const PHASE_KEY: &[u8] = b"phase";
const METRICS_KEY: &[u8] = b"metrics";
const UPLOADED_TREE: &str = "uploaded";
const HOSTS_TREE: &str = "hosts";
const PEERS_TREE: &str = "peers";
const CHECKPOINTS_TREE: &str = "checkpoints";
const HISTORY_TREE: &str = "history";

/// What can go wrong with the data directory or the node store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory has no node store: `fedmmkt init` was not run there.
    #[error("{} is not an initialised fedmmkt data directory (run `fedmmkt init --data-dir {}` first)", dir.display(), dir.display())]
    NotInitialised {
        /// The data directory.
        dir: PathBuf,
    },
    /// `init` would overwrite an existing identity.
    #[error("{} already exists: refusing to overwrite the node's identity", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Another process (a running node) holds the database.
    #[error("{} is locked by another process (is a node running on this data directory?)", path.display())]
    Locked {
        /// The sled database directory.
        path: PathBuf,
    },
    /// sled failed.
    #[error("node store: {0}")]
    Sled(#[from] sled::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("malformed {what} in the node store: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// A checkpoint file's bytes do not hash to its name.
    #[error("checkpoint {} is corrupt: expected SHA-256 {expected}, content hashes to {actual}", path.display())]
    CheckpointCorrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// The hash it is stored under.
        expected: String,
        /// The hash of its content.
        actual: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// True when sled failed because another process holds the database's lock.
pub fn is_lock_error(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

/// The host's round progress as last persisted by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Round in progress.
    pub round: u64,
    /// Election term it runs under.
    pub term: u64,
    /// Round phase (its JSON form is the lower-case name, e.g. `"judge"`).
    pub phase: Phase,
    /// This node's role in it (`host` or `client`).
    pub role: String,
    /// When it was recorded, ms since the Unix epoch.
    pub updated_unix_ms: u64,
}

/// What this node knows about a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's libp2p id.
    pub peer_id: String,
    /// Multiaddrs it was seen at.
    pub addrs: Vec<String>,
    /// It has a usable GPU (preferred as generator host).
    pub gpu: bool,
    /// Memory it reports, MiB.
    pub memory_mb: u64,
    /// Last round it reports as completed.
    pub last_completed_round: u64,
    /// Last time it was heard from, ms since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// Offences this node counted against it (requests refused for its own fault).
    #[serde(default)]
    pub offences: u64,
    /// While it is banned: until when, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_until_unix_ms: Option<u64>,
    /// Its latest offence, in words (why it is banned, while it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offence: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ElectionRecord {
    term: u64,
    voted_for: Option<Vec<u8>>,
}

/// The node's durable state in `DIR/state` (sled) and `DIR/checkpoints`.
#[derive(Debug, Clone)]
pub struct NodeStore {
    db: sled::Db,
    uploaded: sled::Tree,
    hosts: sled::Tree,
    peers: sled::Tree,
    checkpoints: sled::Tree,
    history: sled::Tree,
    checkpoint_dir: PathBuf,
}

impl NodeStore {
    /// Opens (or creates) the store of data directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let data = DataDir::new(dir);
        let checkpoint_dir = data.checkpoints();
        fs::create_dir_all(&checkpoint_dir).map_err(|source| StoreError::Io {
            path: checkpoint_dir.clone(),
            source,
        })?;
        let state = data.state();
        let db = sled::open(&state).map_err(|e| {
            if is_lock_error(&e) {
                StoreError::Locked {
                    path: state.clone(),
                }
            } else {
                StoreError::Sled(e)
            }
        })?;
        Ok(Self {
            uploaded: db.open_tree(UPLOADED_TREE)?,
            hosts: db.open_tree(HOSTS_TREE)?,
            peers: db.open_tree(PEERS_TREE)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE)?,
            history: db.open_tree(HISTORY_TREE)?,
            db,
            checkpoint_dir,
        })
    }

    /// Opens the store of an initialised data directory; never creates one.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !DataDir::new(dir).state().is_dir() {
            return Err(StoreError::NotInitialised {
                dir: dir.to_path_buf(),
            });
        }
        Self::open(dir)
    }

    /// Flushes every pending write to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Current election term and the peer (id bytes) voted for in it.
    pub fn election(&self) -> Result<(u64, Option<Vec<u8>>)> {
        Ok(self
            .get_json::<ElectionRecord>(ELECTION_KEY, "election record")?
            .map_or((0, None), |r| (r.term, r.voted_for)))
    }

    /// Persists the term and vote (durable before returning).
    pub fn set_election(&self, term: u64, voted_for: Option<&[u8]>) -> Result<()> {
        let record = ElectionRecord {
            term,
            voted_for: voted_for.map(<[u8]>::to_vec),
        };
        self.put_json(&self.db, ELECTION_KEY, &record, "election record")
    }

    /// Last round this node saw complete (0: none).
    pub fn last_completed_round(&self) -> Result<u64> {
        match self.db.get(LAST_ROUND_KEY)? {
            None => Ok(0),
            Some(v) => decode_u64(&v, "last completed round"),
        }
    }

    /// Persists the last completed round (durable before returning).
    pub fn set_last_completed_round(&self, round: u64) -> Result<()> {
        self.db.insert(LAST_ROUND_KEY, &round.to_be_bytes())?;
        self.flush()
    }

    /// The round phase last recorded.
    pub fn phase(&self) -> Result<Option<PhaseRecord>> {
        self.get_json(PHASE_KEY, "phase record")
    }

    /// Records the current round phase (durable before returning).
    pub fn set_phase(&self, phase: &PhaseRecord) -> Result<()> {
        self.put_json(&self.db, PHASE_KEY, phase, "phase record")
    }

    /// True when this node has (or may have) answered round `round` of host term `term`
    /// (uploaded or abstained). A new host's fresh attempt at the same round number is a new round.
    pub fn answered(&self, term: u64, round: u64, attempt: u32) -> Result<bool> {
        Ok(self
            .uploaded
            .contains_key(attempt_key(term, round, attempt))?)
    }

    /// Marks the attempt answered; call it *before* sending, so a restart never answers twice.
    pub fn mark_answered(&self, term: u64, round: u64, attempt: u32) -> Result<()> {
        self.uploaded
            .insert(attempt_key(term, round, attempt), &[])?;
        self.flush()
    }

    /// Every recorded generator host, by term, oldest first.
    pub fn hosts(&self) -> Result<Vec<(u64, String)>> {
        self.hosts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let term = decode_u64(&k, "host term")?;
                let peer = String::from_utf8(v.to_vec()).map_err(|e| StoreError::Malformed {
                    what: "host peer id",
                    reason: e.to_string(),
                })?;
                Ok((term, peer))
            })
            .collect()
    }

    /// The host of the newest recorded term.
    pub fn last_host(&self) -> Result<Option<(u64, String)>> {
        Ok(self.hosts()?.pop())
    }

    /// Records `peer` as the host of `term` (durable before returning).
    pub fn record_host(&self, term: u64, peer: &str) -> Result<()> {
        self.hosts.insert(term.to_be_bytes(), peer.as_bytes())?;
        self.flush()
    }

    /// Inserts or replaces the record of `peer.peer_id` (durable before returning).
    pub fn upsert_peer(&self, peer: &PeerRecord) -> Result<()> {
        self.put_json(&self.peers, peer.peer_id.as_bytes(), peer, "peer record")
    }

    /// Every known peer, ordered by peer id.
    pub fn peers(&self) -> Result<Vec<PeerRecord>> {
        self.peers
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode_json(&v, "peer record")
            })
            .collect()
    }

    /// Records the last round's metrics (durable before returning).
    pub fn set_metrics(&self, metrics: &RoundMetrics) -> Result<()> {
        self.put_json(&self.db, METRICS_KEY, metrics, "metrics")
    }

    /// The last round's metrics, if any.
    pub fn metrics(&self) -> Result<Option<RoundMetrics>> {
        self.get_json(METRICS_KEY, "metrics")
    }

    /// Records (or replaces) one round of this node's history, durably.
    pub fn set_round_point(&self, point: &RoundPoint) -> Result<()> {
        self.put_json(
            &self.history,
            &point.round.to_be_bytes(),
            point,
            "round history",
        )
    }

    /// This node's history, oldest round first.
    pub fn round_points(&self) -> Result<Vec<RoundPoint>> {
        self.history
            .iter()
            .map(|kv| decode_json(&kv?.1, "round history"))
            .collect()
    }

    /// Stores the checkpoint of `round` as `checkpoints/<sha256>.bin` (atomically) and indexes
    /// it; keeps only the newest rounds' files. Returns its SHA-256.
    pub fn put_checkpoint(&self, round: u64, bytes: &[u8]) -> Result<[u8; 32]> {
        let hash = sha256(bytes);
        let path = self.checkpoint_path(&hash);
        write_atomic(&path, bytes, false)?;
        self.checkpoints.insert(round.to_be_bytes(), &hash)?;
        self.flush()?;
        self.prune_checkpoints()?;
        Ok(hash)
    }

    /// Reads the checkpoint with SHA-256 `hash`, verifying its content against the hash.
    pub fn get_checkpoint(&self, hash: &[u8; 32]) -> Result<Vec<u8>> {
        let path = self.checkpoint_path(hash);
        let bytes = fs::read(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let actual = sha256(&bytes);
        if &actual != hash {
            return Err(StoreError::CheckpointCorrupt {
                path,
                expected: to_hex(hash),
                actual: to_hex(&actual),
            });
        }
        Ok(bytes)
    }

    /// The newest indexed checkpoint: its round and hash.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, [u8; 32])>> {
        match self.checkpoints.last()? {
            None => Ok(None),
            Some((k, v)) => Ok(Some((
                decode_u64(&k, "checkpoint round")?,
                decode_hash(&v)?,
            ))),
        }
    }

    /// The hash of `round`'s checkpoint, if it is still kept.
    pub fn checkpoint_hash(&self, round: u64) -> Result<Option<[u8; 32]>> {
        self.checkpoints
            .get(round.to_be_bytes())?
            .map(|v| decode_hash(&v))
            .transpose()
    }

    /// The round of the kept checkpoint with SHA-256 `hash`, if this node holds it (a member
    /// serves fetches by content address).
    pub fn checkpoint_round(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        for kv in self.checkpoints.iter().rev() {
            let (k, v) = kv?;
            if decode_hash(&v)? == *hash {
                return Ok(Some(decode_u64(&k, "checkpoint round")?));
            }
        }
        Ok(None)
    }

    /// Path of the checkpoint file with SHA-256 `hash`.
    pub fn checkpoint_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.checkpoint_dir.join(format!("{}.bin", to_hex(hash)))
    }

    /// Drops index entries beyond the newest [`KEEP_CHECKPOINTS`] and deletes every
    /// checkpoint file no kept entry names.
    fn prune_checkpoints(&self) -> Result<()> {
        let mut keep = Vec::new();
        let mut drop_keys = Vec::new();
        for kv in self.checkpoints.iter().rev() {
            let (k, v) = kv?;
            if keep.len() < KEEP_CHECKPOINTS {
                keep.push(decode_hash(&v)?);
            } else {
                drop_keys.push(k);
            }
        }
        for k in &drop_keys {
            self.checkpoints.remove(k)?;
        }
        if !drop_keys.is_empty() {
            self.flush()?;
        }
        let keep_names: Vec<String> = keep.iter().map(|h| format!("{}.bin", to_hex(h))).collect();
        let entries = fs::read_dir(&self.checkpoint_dir).map_err(|source| StoreError::Io {
            path: self.checkpoint_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_checkpoint = name.len() == 68 && name.ends_with(".bin");
            if is_checkpoint && !keep_names.contains(&name) {
                let path = entry.path();
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("could not remove old checkpoint {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    fn get_json<T: DeserializeOwned>(&self, key: &[u8], what: &'static str) -> Result<Option<T>> {
        self.db.get(key)?.map(|v| decode_json(&v, what)).transpose()
    }

    fn put_json<T: Serialize + ?Sized>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Malformed {
            what,
            reason: e.to_string(),
        })?;
        tree.insert(key, bytes)?;
        self.flush()
    }
}

/// Key of one round attempt: (term, round, attempt), big-endian so keys sort in that order.
fn attempt_key(term: u64, round: u64, attempt: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..8].copy_from_slice(&term.to_be_bytes());
    key[8..16].copy_from_slice(&round.to_be_bytes());
    key[16..].copy_from_slice(&attempt.to_be_bytes());
    key
}

/// SHA-256 of `bytes` (ring).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Malformed {
        what,
        reason: e.to_string(),
    })
}

fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Malformed {
        what,
        reason: format!("{} bytes where 8 were expected", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn decode_hash(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| StoreError::Malformed {
        what: "checkpoint hash",
        reason: format!("{} bytes where 32 were expected", bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, round: u64) -> PeerRecord {
        PeerRecord {
            peer_id: id.into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            gpu: round.is_multiple_of(2),
            memory_mb: 1024,
            last_completed_round: round,
            last_seen_unix_ms: 1_700_000_000_000 + round,
            ..PeerRecord::default()
        }
    }

    #[test]
    fn reopen_after_drop_keeps_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let phase = PhaseRecord {
            round: 4,
            term: 2,
            phase: Phase::Judge,
            role: "client".into(),
            updated_unix_ms: 123,
        };
        let metrics = RoundMetrics::Host {
            round: 3,
            term: 2,
            participants: vec!["peer-a".into(), "peer-b".into()],
            kept: 40,
            mean_reward: 0.625,
            seconds: 9.5,
            bytes: 1 << 20,
            bytes_sent: 3 << 18,
            bytes_received: 1 << 18,
            phase_seconds: [(Phase::Learn, 4.0), (Phase::Replicate, 0.5)].into(),
            phase_bytes: [(Phase::Aggregate, 1 << 19), (Phase::Replicate, 1 << 19)].into(),
            checkpoint: to_hex(&sha256(b"generator weights")),
            test_acc: Some(0.75),
        };
        let hash = {
            let s = NodeStore::open(dir.path()).unwrap();
            assert_eq!(s.election().unwrap(), (0, None));
            assert_eq!(s.last_completed_round().unwrap(), 0);
            assert!(s.phase().unwrap().is_none() && s.metrics().unwrap().is_none());
            assert!(s.latest_checkpoint().unwrap().is_none());
            s.set_election(2, Some(b"peer-b")).unwrap();
            s.set_last_completed_round(3).unwrap();
            s.set_phase(&phase).unwrap();
            s.mark_answered(2, 4, 0).unwrap();
            s.record_host(1, "peer-a").unwrap();
            s.record_host(2, "peer-b").unwrap();
            s.upsert_peer(&peer("peer-b", 1)).unwrap();
            s.upsert_peer(&peer("peer-a", 2)).unwrap();
            s.upsert_peer(&peer("peer-b", 3)).unwrap();
            s.set_metrics(&metrics).unwrap();
            s.put_checkpoint(3, b"generator weights").unwrap()
        };
        let s = NodeStore::open_existing(dir.path()).unwrap();
        assert_eq!(s.election().unwrap(), (2, Some(b"peer-b".to_vec())));
        assert_eq!(s.last_completed_round().unwrap(), 3);
        assert_eq!(s.phase().unwrap(), Some(phase));
        assert!(
            s.answered(2, 4, 0).unwrap()
                && !s.answered(2, 3, 0).unwrap()
                && !s.answered(3, 4, 0).unwrap()
        );
        assert_eq!(
            s.hosts().unwrap(),
            vec![(1, "peer-a".to_string()), (2, "peer-b".to_string())]
        );
        assert_eq!(s.last_host().unwrap(), Some((2, "peer-b".to_string())));
        assert_eq!(
            s.peers().unwrap(),
            vec![peer("peer-a", 2), peer("peer-b", 3)]
        );
        assert_eq!(s.metrics().unwrap(), Some(metrics));
        assert_eq!(s.latest_checkpoint().unwrap(), Some((3, hash)));
        assert_eq!(s.checkpoint_round(&hash).unwrap(), Some(3));
        assert_eq!(s.checkpoint_round(&[0; 32]).unwrap(), None);
        assert_eq!(s.get_checkpoint(&hash).unwrap(), b"generator weights");
        assert_eq!(to_hex(&hash), to_hex(&sha256(b"generator weights")));
    }

    #[test]
    fn records_written_before_the_typed_phase_and_metrics_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeStore::open(dir.path()).unwrap();
        // The bytes the node stored when the phase was a string and the metrics a `json!` object.
        let old_phase =
            br#"{"round":4,"term":2,"phase":"abandoned","role":"client","updated_unix_ms":123}"#;
        s.db.insert(PHASE_KEY, &old_phase[..]).unwrap();
        s.db.insert(METRICS_KEY, crate::metrics::OLD_HOST.as_bytes())
            .unwrap();
        assert_eq!(s.phase().unwrap().map(|p| p.phase), Some(Phase::Abandoned));
        let Some(RoundMetrics::Host {
            round,
            participants,
            phase_seconds,
            checkpoint,
            ..
        }) = s.metrics().unwrap()
        else {
            panic!("host metrics expected");
        };
        assert_eq!((round, participants.len()), (3, 3));
        assert_eq!(phase_seconds.get(&Phase::Learn), Some(&4.0));
        assert_eq!(checkpoint.len(), 64);
        s.db.insert(METRICS_KEY, crate::metrics::OLD_CLIENT.as_bytes())
            .unwrap();
        assert!(matches!(
            s.metrics().unwrap(),
            Some(RoundMetrics::Client { round: 3, .. })
        ));
        // A metrics record of another shape is a typed error, not zeros.
        s.db.insert(METRICS_KEY, &br#"{"round": 3, "accuracy": 0.5}"#[..])
            .unwrap();
        assert!(matches!(
            s.metrics(),
            Err(StoreError::Malformed {
                what: "metrics",
                ..
            })
        ));
    }

    #[test]
    fn open_existing_refuses_an_uninitialised_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = NodeStore::open_existing(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotInitialised { .. }), "{err}");
        assert!(err.to_string().contains("fedmmkt init"));
    }

    #[test]
    fn uploaded_is_per_round() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeStore::open(dir.path()).unwrap();
        assert!(!s.answered(1, 7, 0).unwrap());
        s.mark_answered(1, 7, 0).unwrap();
        s.mark_answered(1, 7, 0).unwrap();
        assert!(s.answered(1, 7, 0).unwrap());
        assert!(!s.answered(1, 8, 0).unwrap() && !s.answered(1, 6, 0).unwrap());
        assert!(
            !s.answered(2, 7, 0).unwrap(),
            "a new term's attempt is a new round"
        );
        assert!(
            !s.answered(1, 7, 1).unwrap(),
            "so is a retry within the term"
        );
    }

    #[test]
    fn corrupt_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeStore::open(dir.path()).unwrap();
        let hash = s.put_checkpoint(1, b"weights of round one").unwrap();
        fs::write(s.checkpoint_path(&hash), b"weights of round 0ne").unwrap();
        let err = s.get_checkpoint(&hash).unwrap_err();
        assert!(matches!(err, StoreError::CheckpointCorrupt { .. }), "{err}");
        assert!(err.to_string().contains(&to_hex(&hash)));
        let missing = s.get_checkpoint(&[7u8; 32]).unwrap_err();
        assert!(matches!(missing, StoreError::Io { .. }), "{missing}");
    }

    #[test]
    fn only_the_newest_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeStore::open(dir.path()).unwrap();
        let hashes: Vec<[u8; 32]> = (1..=5u64)
            .map(|r| {
                s.put_checkpoint(r, format!("round {r}").as_bytes())
                    .unwrap()
            })
            .collect();
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(s.checkpoint_path(h).exists(), i >= 2, "round {}", i + 1);
        }
        assert_eq!(s.checkpoint_hash(2).unwrap(), None);
        assert_eq!(s.checkpoint_hash(4).unwrap(), Some(hashes[3]));
        assert_eq!(s.latest_checkpoint().unwrap(), Some((5, hashes[4])));
        let files = fs::read_dir(DataDir::new(dir.path()).checkpoints())
            .unwrap()
            .count();
        assert_eq!(files, KEEP_CHECKPOINTS);
    }

    #[test]
    fn identity_is_created_once_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let key = create_identity(dir.path()).unwrap();
        let again = create_identity(dir.path()).unwrap_err();
        assert!(matches!(again, StoreError::AlreadyExists { .. }), "{again}");
        let loaded = load_identity(dir.path()).unwrap();
        assert_eq!(loaded.public().to_peer_id(), key.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(DataDir::new(dir.path()).identity())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
