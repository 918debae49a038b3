//! The node's configuration, `DIR/config.toml`: network, privacy, round, model and node
//! sections, with defaults, validation and a documented TOML rendering for `fedmmkt init`.
//!
//! Every section is optional in the file and every field has a default, so a config may
//! name only what it changes; unknown fields are rejected (a typo is an error, not a no-op).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::paths::UserPath;
use crate::round::{ClientConfig, HostConfig};

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// The two PSK file formats `fedmmkt init --psk-file` accepts, for error messages.
pub const PSK_FORMATS: &str = "libp2p's swarm.key format (three lines: `/key/swarm/psk/1.0.0/`, \
     `/base16/`, 64 hex digits) or 64 hex digits alone";

/// What can be wrong with a config or a pre-shared key file.
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
    /// A pre-shared key is in neither accepted format.
    #[error("{origin}: not a pre-shared key ({reason}); expected {PSK_FORMATS}")]
    Psk {
        /// The file (or `<text>`) the key came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config could not be rendered as TOML.
    #[error("could not render the config as TOML: {0}")]
    Render(String),
}

/// The node's whole configuration (`DIR/config.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Transport, discovery, membership and limits.
    pub network: NetworkConfig,
    /// The node's privacy budget and the DP of its uploads.
    pub privacy: PrivacyConfig,
    /// The federation's rounds.
    pub round: RoundConfig,
    /// Model sizes and training knobs.
    pub model: ModelConfig,
    /// Local resources: GPU and dataset.
    pub node: NodeSettings,
}

/// `[network]`: transport, discovery, membership and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs (ending in `/p2p/<peer id>`) of peers to dial at start.
    pub bootstrap: Vec<String>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// PeerId allowlist; empty admits any holder of the PSK. When non-empty it is also the
    /// election membership.
    pub members: Vec<String>,
    /// Most connections in total.
    pub max_connections: u32,
    /// Most connections per peer.
    pub max_connections_per_peer: u32,
    /// Per-peer rate limit on inbound requests.
    pub requests_per_second: u32,
    /// The private-network pre-shared key file (relative to the config file's directory).
    pub psk_file: Option<String>,
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
            max_connections: 64,
            max_connections_per_peer: 2,
            requests_per_second: 50,
            psk_file: None,
        }
    }
}

/// `[privacy]`: the budget and the DP of uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Total ε the node may spend (the ledger's cap).
    pub epsilon: f64,
    /// δ of the (ε, δ) guarantee.
    pub delta: f64,
    /// L2 bound every upload is clipped to.
    pub clip: f64,
    /// Releases the noise is calibrated for: this many spend the budget.
    pub planned_rounds: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            epsilon: 8.0,
            delta: 1e-5,
            // `fedmmkt simulate --dp-clip`'s default.
            clip: 5.0,
            planned_rounds: 10,
        }
    }
}

/// `[round]`: the federation's rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundConfig {
    /// Rounds the federation runs (0 = no limit).
    pub rounds: u64,
    /// Fewest contributors a round starts with, the host included (at least 3: the host and
    /// two others, so a sum never exposes one node's upload to the host).
    #[serde(alias = "min_clients")]
    pub min_contributors: u32,
    /// Seconds a stage may take before the round is aborted.
    pub stage_timeout_secs: u64,
    /// Seconds between the end of a round and the start of the next.
    pub round_interval_secs: u64,
    /// Seed of the federation's random draws.
    pub seed: u64,
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            rounds: 10,
            min_contributors: 3,
            stage_timeout_secs: 30,
            round_interval_secs: 2,
            seed: 0,
        }
    }
}

/// `[model]`: the host's generator and the clients' training (see [`HostConfig`] and
/// [`ClientConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Synthetic samples per class each round (host).
    pub samples_per_class: usize,
    /// Generator pre-training steps on the host's public set.
    pub pretrain_steps: usize,
    /// Generator fine-tuning steps per round (0: improve through the critic only).
    pub finetune_steps: usize,
    /// Critic training steps per round.
    pub critic_steps: usize,
    /// Strength of the critic's guidance when sampling (0: no critic).
    pub guidance_scale: f64,
    /// Weight of the critic's entropy when guiding the clients' synthetic set.
    pub guidance_entropy: f64,
    /// Reward threshold θ for keeping a synthetic sample.
    pub keep_threshold: f64,
    /// Hidden width of the generator's flow.
    pub flow_hidden: usize,
    /// Residual blocks of the flow.
    pub flow_blocks: usize,
    /// Width of the flow's PCA latent space (0: flow on pixels).
    pub latent_dim: usize,
    /// Euler steps when sampling.
    pub sample_steps: usize,
    /// Local epochs per round (client).
    pub local_epochs: usize,
    /// Private samples per training step (client).
    pub batch_size: usize,
    /// Learning rate of local training (client).
    pub lr: f64,
    /// Rounds of kept synthetic samples a client distils from (1: the last round's).
    pub distill_rounds: usize,
    /// Replace every size above with a tiny preset (seconds per round; tests and smoke runs).
    pub tiny: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let host = HostConfig::default();
        let client = ClientConfig::default();
        Self {
            samples_per_class: host.samples_per_class,
            pretrain_steps: host.pretrain_steps,
            finetune_steps: host.finetune_steps,
            critic_steps: host.critic_steps,
            guidance_scale: host.guidance_scale,
            guidance_entropy: host.guidance_entropy,
            keep_threshold: short_f64(host.keep_threshold),
            flow_hidden: host.flow.hidden,
            flow_blocks: host.flow.blocks,
            latent_dim: host.flow.latent_dim,
            sample_steps: host.flow.sample_steps,
            local_epochs: client.train.epochs,
            batch_size: client.train.batch,
            lr: client.lr,
            distill_rounds: client.distill_rounds,
            tiny: false,
        }
    }
}

impl ModelConfig {
    /// The host's knobs this section describes (the tiny preset when `tiny`).
    pub fn host_config(&self) -> HostConfig {
        let mut cfg = HostConfig {
            samples_per_class: self.samples_per_class,
            pretrain_steps: self.pretrain_steps,
            finetune_steps: self.finetune_steps,
            critic_steps: self.critic_steps,
            guidance_scale: self.guidance_scale,
            guidance_entropy: self.guidance_entropy,
            keep_threshold: self.keep_threshold as f32,
            ..HostConfig::default()
        };
        cfg.flow.hidden = self.flow_hidden;
        cfg.flow.blocks = self.flow_blocks;
        cfg.flow.latent_dim = self.latent_dim;
        cfg.flow.sample_steps = self.sample_steps;
        if self.tiny {
            // The sizes of the end-to-end simulation tests (node/tests/simulate.rs).
            cfg.samples_per_class = 4;
            cfg.pretrain_steps = 10;
            cfg.finetune_steps = 3;
            cfg.critic_steps = 5;
            cfg.flow.hidden = 32;
            cfg.flow.blocks = 1;
            cfg.flow.latent_dim = 8;
            cfg.flow.sample_steps = 4;
        }
        cfg
    }

    /// The clients' knobs this section describes (the tiny preset when `tiny`).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig {
            lr: self.lr,
            distill_rounds: self.distill_rounds,
            ..ClientConfig::default()
        };
        cfg.train.epochs = self.local_epochs;
        cfg.train.batch = self.batch_size;
        if self.tiny {
            cfg.train.epochs = 1;
        }
        cfg
    }
}

/// The f64 written the way `x` prints (0.7, not 0.699999988079071), for readable TOML.
fn short_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `[node]`: local resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// `"auto"` uses a GPU when one is found; `"off"` never does.
    pub gpu: String,
    /// Directory with IDX files and classes.txt, relative to the config file's directory
    /// (none: a shard of the embedded data chosen from the peer id).
    pub dataset: Option<String>,
    /// Shards the embedded data is split into when no dataset is given.
    pub embedded_shards: u32,
    /// Dirichlet concentration α of the embedded shards' label skew.
    pub alpha: f64,
    /// Directory of the pre-training cache (none: `cache` in the data directory).
    pub cache_dir: Option<String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            gpu: "auto".into(),
            dataset: None,
            embedded_shards: 10,
            alpha: 0.5,
            cache_dir: None,
        }
    }
}

impl NodeSettings {
    /// True unless the GPU is switched off (`gpu = "off"`).
    pub fn gpu_allowed(&self) -> bool {
        self.gpu != "off"
    }
}

/// The documentation line written above each field by [`NodeConfig::to_toml_documented`].
const FIELD_DOCS: &[(&str, &[(&str, &str)])] = &[
    (
        "network",
        &[
            ("listen", "Multiaddrs to listen on (TCP and QUIC; port 0 picks a free port)."),
            ("bootstrap", "Multiaddrs of peers to dial at start, each ending in /p2p/<peer id>."),
            ("mdns", "Discover peers on the local network with mDNS."),
            ("members", "PeerId allowlist; empty admits any holder of the PSK. When non-empty it is also the election membership."),
            ("max_connections", "Most connections in total."),
            ("max_connections_per_peer", "Most connections per peer."),
            ("requests_per_second", "Per-peer rate limit on inbound requests; a peer above it is refused."),
            ("psk_file", "Private-network pre-shared key file; a relative path is relative to this file's directory (unset: no PSK)."),
        ],
    ),
    (
        "privacy",
        &[
            ("epsilon", "Total ε this node may spend; the ledger refuses releases beyond it."),
            ("delta", "δ of the (ε, δ) guarantee, in (0, 1)."),
            ("clip", "L2 bound every upload is clipped to."),
            ("planned_rounds", "Releases the noise is calibrated for: this many uploads spend the whole budget."),
        ],
    ),
    (
        "round",
        &[
            ("rounds", "Rounds the federation runs (0 = no limit)."),
            ("min_contributors", "Fewest contributors a round starts with, the host included (at least 3: the host and two others, so a sum never exposes one node's upload to the host)."),
            ("stage_timeout_secs", "Seconds a round stage may take before the round is aborted."),
            ("round_interval_secs", "Seconds between the end of one round and the start of the next."),
            ("seed", "Seed of the federation's random draws."),
        ],
    ),
    (
        "model",
        &[
            ("samples_per_class", "Synthetic samples per class the host generates each round."),
            ("pretrain_steps", "Generator pre-training steps on the host's public set."),
            ("finetune_steps", "Generator fine-tuning steps per round (0: improve through the critic only)."),
            ("critic_steps", "Critic training steps per round."),
            ("guidance_scale", "Strength of the critic's guidance when sampling (0: no critic)."),
            ("guidance_entropy", "Weight of the critic's entropy when guiding the clients' synthetic set (0: plain guidance; > 0: samples nearer the class boundaries)."),
            ("keep_threshold", "Reward threshold θ in [0, 1] for keeping a synthetic sample."),
            ("flow_hidden", "Hidden width of the generator's flow network."),
            ("flow_blocks", "Residual blocks of the flow network."),
            ("latent_dim", "Width of the flow's PCA latent space (0: flow on pixels)."),
            ("sample_steps", "Euler steps when sampling the generator."),
            ("local_epochs", "Local training epochs per round on each client."),
            ("batch_size", "Private samples per local training step."),
            ("lr", "Learning rate of local training."),
            ("distill_rounds", "Rounds of kept synthetic samples a client distils from (1: the last round's)."),
            ("tiny", "Replace every size above with a tiny preset (seconds per round; for tests and smoke runs)."),
        ],
    ),
    (
        "node",
        &[
            ("gpu", "\"auto\" uses a GPU when one is found; \"off\" never does."),
            ("dataset", "Directory with IDX image/label files and classes.txt; a relative path is relative to this file's directory (unset: a shard of the embedded data chosen from the peer id)."),
            ("embedded_shards", "Shards the embedded data is split into when no dataset is set."),
            ("alpha", "Dirichlet concentration α of the embedded shards' label skew (smaller = more skewed)."),
            ("cache_dir", "Directory of the host's pre-training cache, relative to the data directory (unset: <data dir>/cache)."),
        ],
    ),
];

/// An example value written (commented out) for optional fields that are unset.
fn example_for(section: &str, field: &str) -> Option<&'static str> {
    match (section, field) {
        ("network", "psk_file") => Some("\"swarm.key\""),
        ("node", "dataset") => Some("\"/path/to/dataset\""),
        ("node", "cache_dir") => Some("\"cache\""),
        _ => None,
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
        if let Some(f) = &n.psk_file {
            ensure(!f.trim().is_empty(), "network.psk_file", || {
                "must not be empty (remove the line for no PSK)".into()
            })?;
        }
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
            r.stage_timeout_secs >= 1,
            "round.stage_timeout_secs",
            || "must be at least 1".into(),
        )?;
        let m = &self.model;
        for (value, field) in [
            (m.samples_per_class, "model.samples_per_class"),
            (m.flow_hidden, "model.flow_hidden"),
            (m.flow_blocks, "model.flow_blocks"),
            (m.sample_steps, "model.sample_steps"),
            (m.local_epochs, "model.local_epochs"),
            (m.batch_size, "model.batch_size"),
            (m.distill_rounds, "model.distill_rounds"),
        ] {
            ensure(value >= 1, field, || "must be at least 1".into())?;
        }
        ensure(
            (0.0..=1.0).contains(&m.keep_threshold),
            "model.keep_threshold",
            || format!("must lie in [0, 1], got {}", m.keep_threshold),
        )?;
        ensure(
            m.guidance_scale.is_finite() && m.guidance_scale >= 0.0,
            "model.guidance_scale",
            || format!("must be a finite number ≥ 0, got {}", m.guidance_scale),
        )?;
        ensure(
            m.guidance_entropy.is_finite() && m.guidance_entropy >= 0.0,
            "model.guidance_entropy",
            || format!("must be a finite number ≥ 0, got {}", m.guidance_entropy),
        )?;
        ensure(m.lr.is_finite() && m.lr > 0.0, "model.lr", || {
            format!("must be a finite number > 0, got {}", m.lr)
        })?;
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
    /// directory of the config file).
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

    /// The host's knobs (see [`ModelConfig::host_config`]).
    pub fn host_config(&self) -> HostConfig {
        self.model.host_config()
    }

    /// The clients' knobs (see [`ModelConfig::client_config`]).
    pub fn client_config(&self) -> ClientConfig {
        self.model.client_config()
    }

    /// This config as TOML with a comment line above every field (what `init` writes).
    pub fn to_toml_documented(&self) -> Result<String, ConfigError> {
        let value = toml::Value::try_from(self).map_err(|e| ConfigError::Render(e.to_string()))?;
        let root = value
            .as_table()
            .ok_or_else(|| ConfigError::Render("the config is not a table".into()))?;
        let mut out = String::from(
            "# fedmmkt node configuration (written by `fedmmkt init`).\n\
             # Every field is optional; a missing field takes the default shown here.\n",
        );
        for (section, fields) in FIELD_DOCS {
            let table = root
                .get(*section)
                .and_then(toml::Value::as_table)
                .ok_or_else(|| ConfigError::Render(format!("section [{section}] missing")))?;
            out.push_str(&format!("\n[{section}]\n"));
            for (field, doc) in *fields {
                out.push_str(&format!("# {doc}\n"));
                match (table.get(*field), example_for(section, field)) {
                    (Some(v), _) => out.push_str(&format!("{field} = {v}\n")),
                    (None, Some(example)) => out.push_str(&format!("# {field} = {example}\n")),
                    (None, None) => {
                        return Err(ConfigError::Render(format!(
                            "{section}.{field} has no value and no example"
                        )))
                    }
                }
            }
            if let Some(extra) = table.keys().find(|k| !fields.iter().any(|(f, _)| f == k)) {
                return Err(ConfigError::Render(format!(
                    "{section}.{extra} has no documentation line"
                )));
            }
        }
        Ok(out)
    }
}

/// Reads a pre-shared key file in either accepted format (see [`parse_psk`]).
pub fn load_psk(path: &Path) -> Result<PreSharedKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_psk(&text).map_err(|e| match e {
        ConfigError::Psk { reason, .. } => ConfigError::Psk {
            origin: path.display().to_string(),
            reason,
        },
        other => other,
    })
}

/// Parses a pre-shared key: libp2p's swarm.key format or 64 hex digits, surrounding
/// whitespace (and `\r\n` line ends) allowed.
pub fn parse_psk(text: &str) -> Result<PreSharedKey, ConfigError> {
    let bad = |reason: String| ConfigError::Psk {
        origin: "<text>".into(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.starts_with('/') {
        let normalised: Vec<&str> = trimmed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if normalised.len() != 3 {
            return Err(bad(format!(
                "a swarm.key file has 3 lines, this one has {}",
                normalised.len()
            )));
        }
        return PreSharedKey::from_str(&normalised.join("\n")).map_err(|e| bad(e.to_string()));
    }
    if trimmed.len() != 64 {
        return Err(bad(format!(
            "{} characters where 64 hex digits were expected",
            trimmed.chars().count()
        )));
    }
    let mut key = [0u8; 32];
    for (i, pair) in trimmed.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => key[i] = (h * 16 + l) as u8,
            _ => return Err(bad(format!("not a hex digit near position {}", 2 * i))),
        }
    }
    Ok(PreSharedKey::new(key))
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
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

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
            |c| c.network.listen.clear(),
            |c| c.network.listen = vec!["not an addr".into()],
            |c| c.network.bootstrap = vec!["/ip4/1.2.3.4/tcp/x".into()],
            |c| c.network.members = vec!["12D3KooWnotapeer".into()],
            |c| c.round.min_contributors = 2,
            |c| c.node.gpu = "cuda".into(),
            |c| c.model.keep_threshold = 1.5,
        ];
        for (i, f) in bad.into_iter().enumerate() {
            let mut c = NodeConfig::default();
            f(&mut c);
            assert!(c.validate().is_err(), "case {i} accepted");
        }
        let mut c = NodeConfig::default();
        c.network.members = vec![PeerId::random().to_string()];
        c.validate().unwrap();
        assert_eq!(c.member_ids().unwrap().len(), 1);
    }

    #[test]
    fn tiny_shrinks_the_models() {
        let mut m = ModelConfig::default();
        assert_eq!(
            m.host_config().samples_per_class,
            HostConfig::default().samples_per_class
        );
        assert_eq!(m.client_config().lr, ClientConfig::default().lr);
        m.tiny = true;
        assert!(m.host_config().flow.hidden < HostConfig::default().flow.hidden);
        assert_eq!(m.client_config().train.epochs, 1);
    }

    #[test]
    fn psk_in_both_formats_and_errors() {
        let plain = parse_psk(&format!("  {HEX}\n")).unwrap();
        let file = parse_psk(&format!("/key/swarm/psk/1.0.0/\r\n/base16/\r\n{HEX}\r\n")).unwrap();
        assert_eq!(plain.to_string(), file.to_string());
        assert_eq!(
            parse_psk(&plain.to_string()).unwrap().to_string(),
            plain.to_string()
        );
        for bad in [
            "",
            "abc",
            &HEX.replace('0', "g"),
            "/key/swarm/psk/1.0.0/\n/base64/\nxx",
        ] {
            let err = parse_psk(bad).unwrap_err().to_string();
            assert!(err.contains("swarm.key format"), "{err}");
        }
    }
}
