//! The node's configuration, `DIR/config.toml`: network, privacy, round, model and node
//! sections, with defaults, validation and a documented TOML rendering for `fedmmkt init`.
//!
//! Every section is optional in the file and every field has a default, so a config may
//! name only what it changes; unknown fields are rejected (a typo is an error, not a no-op).
//! The `[model]` knobs are the host's and the clients' own configs ([`SynthesizerConfig`],
//! [`LearnerConfig`]), and every field's doc comment is also its comment in the documented
//! file ([`models::knobs!`]).

mod documented;

use std::path::{Path, PathBuf};

use libp2p::{Multiaddr, PeerId};
use models::knobs::{Documented, Field, FieldKind};
use serde::{Deserialize, Serialize};

use crate::learn::{LearnerConfig, SynthesizerConfig};
use crate::paths::UserPath;

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// What can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config (the message names line and column).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's description, with the line and a caret under the offending spot.
        message: String,
    },
    /// A field of a config file holds a value out of its range.
    #[error("{}: {field}: {reason}", path.display())]
    InvalidFile {
        /// The config file.
        path: PathBuf,
        /// `section.field` as written in the file.
        field: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A field holds a value out of its range.
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// `section.field` as written in the file.
        field: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// The config could not be rendered as TOML.
    #[error("could not render the config as TOML: {0}")]
    Render(String),
}

models::knobs! {
    /// The node's whole configuration (`DIR/config.toml`).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct NodeConfig {
        /// Transport, discovery, membership and limits.
        #[knob(table)]
        pub network: NetworkConfig,
        /// The node's privacy budget and the differential privacy of its uploads.
        #[knob(table)]
        pub privacy: PrivacyConfig,
        /// The federation's rounds.
        #[knob(table)]
        pub round: RoundConfig,
        /// The host's generator and the clients' training.
        #[knob(table)]
        pub model: ModelConfig,
        /// Local resources: GPU, dataset and cache.
        #[knob(table)]
        pub node: NodeSettings,
        /// The HTTP admin endpoint: status, Prometheus metrics and the live page.
        #[knob(table)]
        pub admin: AdminConfig,
    }
}

models::knobs! {
    /// `[admin]`: the HTTP admin endpoint (`/status`, `/peers`, `/audit`, `/history`,
    /// `/metrics`, `/grid.png` and the live page `/`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct AdminConfig {
        /// Address it listens on, `ip:port` (port 0 picks a free one; the address is written
        /// to `admin.addr`). Any address but loopback requires the bearer token in
        /// `admin.token` on every request.
        pub listen: String,
        /// Require the bearer token even on loopback.
        pub require_token: bool,
        /// Whether `/metrics` needs the token too when one is required (Prometheus sends it
        /// with `authorization: { credentials_file: ... }`).
        pub metrics_token: bool,
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            require_token: false,
            metrics_token: true,
        }
    }
}

impl AdminConfig {
    /// The address to listen on (validated by [`NodeConfig::validate`]).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.listen
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid {
                field: "admin.listen".into(),
                reason: format!("not an ip:port address: {:?}", self.listen),
            })
    }

    /// Whether requests need the bearer token: off loopback always, else when asked.
    pub fn token_required(&self) -> bool {
        self.require_token || self.listen_addr().map_or(true, |a| !a.ip().is_loopback())
    }
}

models::knobs! {
    /// `[network]`: transport, discovery, membership and limits.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct NetworkConfig {
        /// Multiaddrs to listen on (TCP and QUIC; port 0 picks a free port; only `/memory/N`
        /// addresses: in-process channels instead of sockets, for tests).
        pub listen: Vec<String>,
        /// Multiaddrs of peers to dial at start, each ending in `/p2p/<peer id>`.
        pub bootstrap: Vec<String>,
        /// Discover peers on the local network with mDNS.
        pub mdns: bool,
        /// PeerId allowlist; empty admits any holder of the PSK. When non-empty it is also the
        /// election membership.
        pub members: Vec<String>,
        /// Most connections in total (a member may hold a TCP and a QUIC connection to each
        /// other member: 64 members need up to 126).
        pub max_connections: u32,
        /// Most connections per peer.
        pub max_connections_per_peer: u32,
        /// Per-peer rate limit on inbound requests; a peer above it is refused (and each second
        /// it floods counts as one offence).
        pub requests_per_second: u32,
        /// Offences (requests refused for the sender's fault, undecodable bodies, bodies stalled
        /// while their connection carried other requests, bad election messages or
        /// announcements, flooding) within `offence_window_secs` that get a member
        /// disconnected and banned.
        pub ban_after_offences: u32,
        /// How far back offences count, in seconds.
        pub offence_window_secs: u64,
        /// How long a ban lasts, in seconds (it survives restarts of this node).
        pub ban_secs: u64,
        /// Most inbound request bytes being read at once, in MiB, across every peer and stream:
        /// what members that stall mid-body can make this node hold.
        pub max_inflight_mb: u32,
        /// Private-network pre-shared key file; a relative path is relative to this file's
        /// directory (unset: no PSK).
        pub psk_file: Option<String>,
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            members: Vec::new(),
            max_connections: 256,
            max_connections_per_peer: 2,
            requests_per_second: 50,
            ban_after_offences: 20,
            offence_window_secs: 60,
            ban_secs: 600,
            max_inflight_mb: 256,
            psk_file: None,
        }
    }
}

models::knobs! {
    /// `[privacy]`: the budget and what it protects.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct PrivacyConfig {
        /// What is protected: "record" (every private record, by DP-SGD in local training;
        /// the uploads are post-processing) or "client" (the node's whole upload per round,
        /// clipped and noised; pays only with hundreds of contributors per round).
        pub unit: privacy::PrivacyUnit,
        /// Total ε this node may spend; the ledger refuses spends beyond it.
        pub epsilon: f64,
        /// δ of the (ε, δ) guarantee, in (0, 1).
        pub delta: f64,
        /// L2 bound every upload is clipped to (client unit), and the bound secure
        /// aggregation's encoding is sized for (both units).
        pub clip: f64,
        /// Per-example gradient clip C of DP-SGD (record unit).
        pub example_clip: f64,
        /// Rounds the noise is calibrated for: this many rounds spend the whole budget.
        pub planned_rounds: u32,
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            unit: privacy::PrivacyUnit::Record,
            epsilon: 8.0,
            delta: 1e-5,
            // `fedmmkt simulate --privacy-unit client --dp-clip`'s default.
            clip: 5.0,
            // `fedmmkt simulate --privacy-unit record --dp-clip`'s default.
            example_clip: 1.0,
            planned_rounds: 10,
        }
    }
}

models::knobs! {
    /// `[round]`: the federation's rounds.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct RoundConfig {
        /// Rounds the federation runs (0 = no limit).
        pub rounds: u64,
        /// Fewest contributors a round starts with, the host included (at least 3: the host
        /// and two others, so a sum never exposes one node's upload to the host).
        #[serde(alias = "min_clients")]
        pub min_contributors: u32,
        /// Seconds a round stage may take before the round is aborted.
        pub stage_timeout_secs: u64,
        /// Seconds between the end of one round and the start of the next.
        pub round_interval_secs: u64,
        /// Share of the members (in (0, 1]; 1 = all) that must be live before the host starts
        /// the federation's first round; later rounds invite every live member.
        pub start_share: f64,
        /// Seconds the host waits for `start_share` of the members before a majority (and at
        /// least `min_contributors`) is enough to start the first round.
        pub start_timeout_secs: u64,
        /// Seed of the federation's random draws.
        pub seed: u64,
    }
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            rounds: 10,
            min_contributors: 3,
            stage_timeout_secs: 30,
            round_interval_secs: 2,
            start_share: 1.0,
            start_timeout_secs: 60,
            seed: 0,
        }
    }
}

models::knobs! {
    /// `[model]`: the host's knobs and the clients' side by side, their generator shape in
    /// `[model.flow]` and local objective in `[model.train]`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(from = "ModelFile")]
    pub struct ModelConfig {
        /// The host's knobs.
        #[serde(flatten)]
        #[knob(flatten)]
        pub host: SynthesizerConfig,
        /// The clients' knobs.
        #[serde(flatten)]
        #[knob(flatten)]
        pub client: LearnerConfig,
        /// Replace every size with the tiny preset's (seconds per round; for tests and smoke
        /// runs).
        pub tiny: bool,
    }
}

/// `[model]` as read: a [`ModelConfig`] and the keys of earlier releases that have since
/// moved into `[model.flow]` and `[model.train]`; a moved key, when given, wins.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelFile {
    #[serde(flatten)]
    host: SynthesizerConfig,
    #[serde(flatten)]
    client: LearnerConfig,
    tiny: bool,
    /// Now `[model.flow] hidden`.
    flow_hidden: Option<usize>,
    /// Now `[model.flow] blocks`.
    flow_blocks: Option<usize>,
    /// Now `[model.flow] latent_dim`.
    latent_dim: Option<usize>,
    /// Now `[model.flow] sample_steps`.
    sample_steps: Option<usize>,
    /// Now `[model.train] epochs`.
    local_epochs: Option<usize>,
    /// Now `[model.train] batch`.
    batch_size: Option<usize>,
}

impl From<ModelFile> for ModelConfig {
    fn from(f: ModelFile) -> Self {
        let (mut host, mut client) = (f.host, f.client);
        for (moved, knob) in [
            (f.flow_hidden, &mut host.flow.hidden),
            (f.flow_blocks, &mut host.flow.blocks),
            (f.latent_dim, &mut host.flow.latent_dim),
            (f.sample_steps, &mut host.flow.sample_steps),
            (f.local_epochs, &mut client.train.epochs),
            (f.batch_size, &mut client.train.batch),
        ] {
            if let Some(v) = moved {
                *knob = v;
            }
        }
        Self {
            host,
            client,
            tiny: f.tiny,
        }
    }
}

impl ModelConfig {
    /// The host's knobs this section describes (shrunk to the tiny preset when `tiny`).
    pub fn host_config(&self) -> SynthesizerConfig {
        if self.tiny {
            self.host.tiny()
        } else {
            self.host
        }
    }

    /// The clients' knobs this section describes (shrunk to the tiny preset when `tiny`).
    pub fn client_config(&self) -> LearnerConfig {
        if self.tiny {
            self.client.tiny()
        } else {
            self.client
        }
    }
}

models::knobs! {
    /// `[node]`: local resources.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct NodeSettings {
        /// "auto" uses a GPU when one is found; "off" never does.
        pub gpu: String,
        /// Directory with IDX image/label files and classes.txt; a relative path is relative
        /// to this file's directory (unset: a shard of the embedded data chosen from the peer
        /// id).
        pub dataset: Option<String>,
        /// Shards the embedded data is split into when no dataset is set.
        pub embedded_shards: u32,
        /// Dirichlet concentration α of the embedded shards' label skew (smaller = more
        /// skewed).
        pub alpha: f64,
        /// Directory of the host's pre-training cache, relative to the data directory (unset:
        /// `<data dir>/cache`).
        pub cache_dir: Option<String>,
        /// MiB kept free on the data directory's disk: below it this node takes no round and
        /// releases nothing (its ledger entry might not become durable), and as host it does
        /// not count a round whose checkpoint would not fit. 0 checks only that a write fits.
        pub min_free_mb: u64,
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            gpu: "auto".into(),
            dataset: None,
            embedded_shards: 10,
            alpha: 0.5,
            cache_dir: None,
            min_free_mb: 64,
        }
    }
}

impl NodeSettings {
    /// True unless the GPU is switched off (`gpu = "off"`).
    pub fn gpu_allowed(&self) -> bool {
        self.gpu != "off"
    }
}

impl NodeConfig {
    /// Reads, parses and validates `path`; errors name the file (and the line for syntax).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid { field, reason } => ConfigError::InvalidFile {
                path: path.to_path_buf(),
                field,
                reason,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses TOML text without validating; the error is toml's (line, column, caret).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every range a user could get wrong; the first problem is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.network;
        ensure(!n.listen.is_empty(), "network.listen", || {
            "needs at least one multiaddr".into()
        })?;
        for (i, a) in n.listen.iter().enumerate() {
            parse_multiaddr(a, &format!("network.listen[{i}]"))?;
        }
        for (i, a) in n.bootstrap.iter().enumerate() {
            parse_multiaddr(a, &format!("network.bootstrap[{i}]"))?;
        }
        for (i, p) in n.members.iter().enumerate() {
            parse_peer_id(p, &format!("network.members[{i}]"))?;
        }
        ensure(n.max_connections >= 1, "network.max_connections", || {
            "must be at least 1".into()
        })?;
        ensure(
            n.max_connections_per_peer >= 1,
            "network.max_connections_per_peer",
            || "must be at least 1".into(),
        )?;
        ensure(
            n.requests_per_second >= 1,
            "network.requests_per_second",
            || "must be at least 1".into(),
        )?;
        ensure(
            n.ban_after_offences >= 1,
            "network.ban_after_offences",
            || "must be at least 1".into(),
        )?;
        ensure(
            n.offence_window_secs >= 1,
            "network.offence_window_secs",
            || "must be at least 1".into(),
        )?;
        // The largest request must fit, or some message could never be read.
        let largest_mb = protocol::wire::Kind::largest_limit().div_ceil(1 << 20) as u32 + 1;
        ensure(
            n.max_inflight_mb >= largest_mb,
            "network.max_inflight_mb",
            || format!("must be at least {largest_mb} (the largest request, plus one read chunk)"),
        )?;
        if let Some(f) = &n.psk_file {
            ensure(!f.trim().is_empty(), "network.psk_file", || {
                "must not be empty (remove the line for no PSK)".into()
            })?;
        }
        self.admin.listen_addr()?;
        let p = &self.privacy;
        ensure(
            p.epsilon.is_finite() && p.epsilon > 0.0,
            "privacy.epsilon",
            || format!("must be a finite number > 0, got {}", p.epsilon),
        )?;
        ensure(p.delta > 0.0 && p.delta < 1.0, "privacy.delta", || {
            format!("must lie in (0, 1), got {}", p.delta)
        })?;
        ensure(p.clip.is_finite() && p.clip > 0.0, "privacy.clip", || {
            format!("must be a finite number > 0, got {}", p.clip)
        })?;
        ensure(
            p.example_clip.is_finite() && p.example_clip > 0.0,
            "privacy.example_clip",
            || format!("must be finite and > 0, got {}", p.example_clip),
        )?;
        ensure(p.planned_rounds >= 1, "privacy.planned_rounds", || {
            "must be at least 1".into()
        })?;
        let r = &self.round;
        ensure(
            r.min_contributors as usize >= protocol::round::MIN_CONTRIBUTORS,
            "round.min_contributors",
            || {
                format!(
                    "a round needs at least {} contributors (the host and two others), got {}",
                    protocol::round::MIN_CONTRIBUTORS,
                    r.min_contributors
                )
            },
        )?;
        ensure(
            r.start_share > 0.0 && r.start_share <= 1.0,
            "round.start_share",
            || format!("must lie in (0, 1], got {}", r.start_share),
        )?;
        ensure(
            r.stage_timeout_secs >= 1,
            "round.stage_timeout_secs",
            || "must be at least 1".into(),
        )?;
        let (h, c) = (&self.model.host, &self.model.client);
        for (value, field) in [
            (h.samples_per_class, "model.samples_per_class"),
            (h.flow.hidden, "model.flow.hidden"),
            (h.flow.blocks, "model.flow.blocks"),
            (h.flow.sample_steps, "model.flow.sample_steps"),
            (h.flow.batch, "model.flow.batch"),
            (c.train.epochs, "model.train.epochs"),
            (c.train.batch, "model.train.batch"),
            (c.train.distill_batch, "model.train.distill_batch"),
            (c.distill_rounds, "model.distill_rounds"),
        ] {
            ensure(value >= 1, field, || "must be at least 1".into())?;
        }
        for (value, field) in [
            (h.keep_threshold, "model.keep_threshold"),
            (h.prompt_mix, "model.prompt_mix"),
            (h.flow.uncond_prob, "model.flow.uncond_prob"),
            (h.moment_strength, "model.moment_strength"),
            (h.moment_at, "model.moment_at"),
        ] {
            ensure((0.0..=1.0).contains(&value), field, || {
                format!("must lie in [0, 1], got {value}")
            })?;
        }
        for (value, field) in [
            (h.guidance_scale, "model.guidance_scale"),
            (h.guidance_entropy, "model.guidance_entropy"),
        ] {
            ensure(value.is_finite() && value >= 0.0, field, || {
                format!("must be a finite number ≥ 0, got {value}")
            })?;
        }
        ensure((0.0..1.0).contains(&c.momentum), "model.momentum", || {
            format!("must lie in [0, 1), got {}", c.momentum)
        })?;
        ensure(
            h.moment_clip.is_finite() && h.moment_clip > 0.0,
            "model.moment_clip",
            || format!("must be a finite number > 0, got {}", h.moment_clip),
        )?;
        for (value, field) in [
            (c.lr, "model.lr"),
            (h.finetune_lr, "model.finetune_lr"),
            (h.flow.lr, "model.flow.lr"),
        ] {
            ensure(value.is_finite() && value > 0.0, field, || {
                format!("must be a finite number > 0, got {value}")
            })?;
        }
        let s = &self.node;
        ensure(s.gpu == "auto" || s.gpu == "off", "node.gpu", || {
            format!("must be \"auto\" or \"off\", got {:?}", s.gpu)
        })?;
        if let Some(d) = &s.dataset {
            ensure(!d.trim().is_empty(), "node.dataset", || {
                "must not be empty (remove the line for the embedded data)".into()
            })?;
        }
        ensure(s.embedded_shards >= 1, "node.embedded_shards", || {
            "must be at least 1".into()
        })?;
        ensure(s.alpha.is_finite() && s.alpha > 0.0, "node.alpha", || {
            format!("must be a finite number > 0, got {}", s.alpha)
        })?;
        Ok(())
    }

    /// The listen multiaddrs, parsed.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        (self.network.listen.iter().enumerate())
            .map(|(i, a)| parse_multiaddr(a, &format!("network.listen[{i}]")))
            .collect()
    }

    /// The bootstrap multiaddrs, parsed.
    pub fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        (self.network.bootstrap.iter().enumerate())
            .map(|(i, a)| parse_multiaddr(a, &format!("network.bootstrap[{i}]")))
            .collect()
    }

    /// The member allowlist, parsed (empty: anyone holding the PSK).
    pub fn member_ids(&self) -> Result<Vec<PeerId>, ConfigError> {
        (self.network.members.iter().enumerate())
            .map(|(i, p)| parse_peer_id(p, &format!("network.members[{i}]")))
            .collect()
    }

    /// Path of the PSK file, if one is set (a relative path is relative to `data_dir`, the
    /// directory of the config file); [`crate::net::psk::load_psk`] reads it.
    pub fn psk_path(&self, data_dir: &Path) -> Option<UserPath> {
        (self.network.psk_file.as_ref()).map(|f| UserPath::relative_to(data_dir, Path::new(f)))
    }

    /// Path of the dataset directory, if set (a relative path is relative to `data_dir`, the
    /// directory of the config file).
    pub fn dataset_path(&self, data_dir: &Path) -> Option<UserPath> {
        (self.node.dataset.as_ref()).map(|d| UserPath::relative_to(data_dir, Path::new(d)))
    }

    /// Directory of the pre-training cache (relative paths are relative to `data_dir`;
    /// unset: `data_dir/cache`).
    pub fn cache_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.node.cache_dir.as_deref().unwrap_or("cache"))
    }

    /// The host's knobs (see [`ModelConfig::host_config`]); under record-level DP the host
    /// does not ask for the clients' latent moments, which have no DP release yet and which
    /// every record-level client withholds.
    pub fn host_config(&self) -> SynthesizerConfig {
        let mut h = self.model.host_config();
        if self.privacy.unit == privacy::PrivacyUnit::Record {
            h.moment_strength = 0.0;
        }
        h
    }

    /// The clients' knobs (see [`ModelConfig::client_config`]).
    pub fn client_config(&self) -> LearnerConfig {
        self.model.client_config()
    }
}

fn ensure(ok: bool, field: &str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field: field.into(),
            reason: reason(),
        })
    }
}

fn parse_multiaddr(text: &str, field: &str) -> Result<Multiaddr, ConfigError> {
    text.parse().map_err(|e| ConfigError::Invalid {
        field: field.into(),
        reason: format!("{text:?} is not a multiaddr: {e}"),
    })
}

fn parse_peer_id(text: &str, field: &str) -> Result<PeerId, ConfigError> {
    text.parse().map_err(|e| ConfigError::Invalid {
        field: field.into(),
        reason: format!("{text:?} is not a peer id: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::documented::render_table;
    use super::*;

    #[test]
    fn documented_toml_round_trips_and_documents_every_field() {
        let mut cfg = NodeConfig::default();
        cfg.network.psk_file = Some("swarm.key".into());
        cfg.privacy.epsilon = 3.5;
        cfg.network.bootstrap = vec!["/ip4/127.0.0.1/tcp/4001".into()];
        for c in [NodeConfig::default(), cfg] {
            let text = c.to_toml_documented().unwrap();
            let back = NodeConfig::from_toml(&text).unwrap();
            assert_eq!(back, c, "{text}");
            back.validate().unwrap();
            // Every field line is preceded by a comment line.
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.contains(" = ") && !l.starts_with('#') {
                    assert!(lines[i - 1].starts_with("# "), "undocumented: {l}");
                }
            }
        }
    }

    #[test]
    fn partial_files_take_defaults_and_typos_are_errors() {
        let cfg = NodeConfig::from_toml("[privacy]\nepsilon = 2.0\n").unwrap();
        assert_eq!(cfg.privacy.epsilon, 2.0);
        assert_eq!(cfg.privacy.delta, 1e-5);
        assert_eq!(cfg.network, NetworkConfig::default());
        let err = NodeConfig::from_toml("[privacy]\nepsilonn = 2.0\n").unwrap_err();
        assert!(err.contains("epsilonn") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn load_names_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "[round]\nrounds = \"ten\"\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("line 2"),
            "{err}"
        );
        std::fs::write(&path, "[privacy]\ndelta = 1.5\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("privacy.delta") && err.contains("config.toml"),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad: Vec<fn(&mut NodeConfig)> = vec![
            |c| c.privacy.epsilon = 0.0,
            |c| c.privacy.delta = 1.0,
            |c| c.privacy.example_clip = 0.0,
            |c| c.network.listen.clear(),
            |c| c.network.listen = vec!["not an addr".into()],
            |c| c.network.bootstrap = vec!["/ip4/1.2.3.4/tcp/x".into()],
            |c| c.network.members = vec!["12D3KooWnotapeer".into()],
            |c| c.round.min_contributors = 2,
            |c| c.round.start_share = 0.0,
            |c| c.round.start_share = f64::NAN,
            |c| c.round.start_share = 1.5,
            |c| c.node.gpu = "cuda".into(),
            |c| c.model.host.keep_threshold = 1.5,
            |c| c.model.host.flow.hidden = 0,
            |c| c.model.client.train.batch = 0,
            |c| c.model.client.lr = f64::NAN,
            |c| c.model.client.momentum = 1.0,
            |c| c.network.ban_after_offences = 0,
            |c| c.network.offence_window_secs = 0,
            |c| c.network.max_inflight_mb = 64,
            |c| c.admin.listen = "localhost".into(),
            |c| c.admin.listen = "127.0.0.1".into(),
        ];
        for (i, f) in bad.into_iter().enumerate() {
            let mut c = NodeConfig::default();
            f(&mut c);
            assert!(c.validate().is_err(), "case {i} accepted");
        }
        let mut c = NodeConfig::default();
        assert!(
            !c.admin.token_required(),
            "loopback needs no token by default"
        );
        c.admin.listen = "0.0.0.0:9100".into();
        assert!(c.admin.token_required(), "off loopback it does");
        c.admin.listen = "[::1]:0".into();
        assert!(!c.admin.token_required());
        c.admin.require_token = true;
        assert!(c.admin.token_required());
        c.network.members = vec![PeerId::random().to_string()];
        c.validate().unwrap();
        assert_eq!(c.member_ids().unwrap().len(), 1);
    }

    #[test]
    fn tiny_shrinks_the_models() {
        let mut m = ModelConfig::default();
        assert_eq!(m.host_config(), SynthesizerConfig::default());
        assert_eq!(m.client_config(), LearnerConfig::default());
        m.tiny = true;
        assert_eq!(m.host_config(), SynthesizerConfig::default().tiny());
        assert_eq!(m.client_config(), LearnerConfig::default().tiny());
        assert!(m.host_config().flow.hidden < SynthesizerConfig::default().flow.hidden);
        assert_eq!(m.client_config().train.epochs, 1);
        // The preset shrinks sizes only: the file's other knobs stay.
        m.host.guidance_scale = 0.5;
        m.client.lr = 0.01;
        assert_eq!(m.host_config().guidance_scale, 0.5);
        assert_eq!(m.client_config().lr, 0.01);
    }

    #[test]
    fn model_keys_are_the_host_and_client_knobs() {
        let cfg = NodeConfig::from_toml(
            "[model]\nsamples_per_class = 7\nkeep_threshold = 0.5\nlr = 0.01\n\
             distill_rounds = 2\nprompt_mix = 0.25\ntiny = true\n\
             [model.flow]\nhidden = 16\n[model.train]\nepochs = 3\nbatch = 8\n",
        )
        .unwrap();
        let (h, c) = (&cfg.model.host, &cfg.model.client);
        assert_eq!(
            (h.samples_per_class, h.keep_threshold, h.prompt_mix),
            (7, 0.5, 0.25)
        );
        assert_eq!(
            (h.flow.hidden, h.flow.blocks),
            (16, SynthesizerConfig::default().flow.blocks)
        );
        assert_eq!((c.lr, c.distill_rounds), (0.01, 2));
        assert_eq!((c.train.epochs, c.train.batch), (3, 8));
        assert!(cfg.model.tiny);
        // Typos are errors in the flattened section and in its subtables alike.
        for typo in [
            "[model]\nsampels_per_class = 7\n",
            "[model.flow]\nhiden = 16\n",
            "[model.train]\nepoch = 3\n",
        ] {
            assert!(NodeConfig::from_toml(typo).is_err(), "{typo}");
        }
        // The keys of earlier releases that moved into a subtable still work.
        let old = NodeConfig::from_toml(
            "[model]\nflow_hidden = 24\nflow_blocks = 2\nlatent_dim = 0\nsample_steps = 3\n\
             local_epochs = 5\nbatch_size = 16\nlr = 0.01\n",
        )
        .unwrap();
        let (h, c) = (&old.model.host, &old.model.client);
        assert_eq!(
            (h.flow.hidden, h.flow.blocks, h.flow.latent_dim),
            (24, 2, 0)
        );
        assert_eq!(h.flow.sample_steps, 3);
        assert_eq!((c.train.epochs, c.train.batch, c.lr), (5, 16, 0.01));
        let mut want = NodeConfig::default();
        want.model.host.flow = h.flow;
        want.model.client = *c;
        assert_eq!(old, want);
    }

    #[test]
    fn documented_toml_writes_f32_knobs_short_and_every_doc_line() {
        let text = NodeConfig::default().to_toml_documented().unwrap();
        assert!(text.contains("\nkeep_threshold = 0.7\n"), "{text}");
        assert!(text.contains("\nuncond_prob = 0.1\n"), "{text}");
        // Multi-line doc comments keep every line, and sections carry their struct's doc.
        assert!(text.contains("# Fewest contributors a round starts with, the host included (at least 3: the host\n# and two others"), "{text}");
        assert!(
            text.contains("\n# The generator's shape and optimiser.\n[model.flow]\n"),
            "{text}"
        );
        for field in ["flow_hidden", "local_epochs", "batch_size"] {
            assert!(!text.contains(&format!("\n{field} =")), "{field}");
        }
    }

    #[test]
    fn an_undocumented_field_is_a_render_error() {
        let mut out = String::new();
        let mut table = toml::Table::try_from(PrivacyConfig::default()).unwrap();
        render_table(&mut out, "privacy", PrivacyConfig::FIELDS, &table).unwrap();
        table.insert("stray".into(), toml::Value::Integer(1));
        let err = render_table(&mut out, "privacy", PrivacyConfig::FIELDS, &table).unwrap_err();
        assert!(
            err.to_string()
                .contains("privacy.stray has no documentation line"),
            "{err}"
        );
    }
}
