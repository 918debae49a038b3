//! A running node: the libp2p swarm, the host election, the round (as host or client), the
//! model thread, the durable store and ledger, and the admin endpoint, driven by one loop.
//!
//! Everything a peer sends is checked by the sans-IO machines in `protocol` (election, round)
//! before it touches state; anything refused is answered with a reason and logged.

mod checkpoints;
mod client;
mod peers;
mod requests;
mod status;
mod swarm;

use peers::{ed25519_bytes, Peer};
use requests::{Local, Pending};
use status::LedgerView;
mod host;
pub mod ml;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, kad, mdns, Multiaddr, PeerId, Swarm};
use privacy::ledger::Ledger;
use protocol::election::{
    Action, Capability, Election, ElectionConfig, ElectionMessage, Persistent,
};
use protocol::session::release::{PrivacyPlan, Releaser};
use protocol::session::ClientSession;
use protocol::wire::{Announcement, Kind, Phase, Request, Response};
use protocol::Refusal;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, AdminState, PeerInfo, StatusReport};
use crate::config::NodeConfig;
use crate::learn::RecordSettings;
use crate::net::offence::{BanPolicy, OffenceRecord};
use crate::net::rate::RateWindow;
use crate::net::{self, Behaviour, BehaviourEvent, Framed, NetConfig};
use crate::paths::UserPath;
use crate::store::{self, DataDir, NodeStore, PeerRecord, PhaseRecord};
use crate::world::World;
use host::HostSide;
use ml::{Ml, Outcome};

/// The election clock.
pub const TICK: Duration = Duration::from_millis(100);

/// Room one release's ledger entry and the bookkeeping around it need on disk (generous).
const LEDGER_WRITE_BYTES: u64 = 64 << 10;

/// How `fedmmkt run` was invoked (command-line values override the config file).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The node's data directory (from `fedmmkt init`).
    pub data_dir: UserPath,
    /// Listen addresses (empty: the config's).
    pub listen: Vec<Multiaddr>,
    /// Extra bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Enable mDNS (also enabled by the config).
    pub mdns: bool,
    /// Private dataset directory (overrides the config's).
    pub dataset: Option<UserPath>,
    /// Use a GPU when one is usable.
    pub gpu: bool,
}

/// The running node.
pub struct Node {
    swarm: Swarm<Behaviour>,
    me: PeerId,
    me_bytes: Vec<u8>,
    cfg: NodeConfig,
    dir: DataDir,
    store: NodeStore,
    ledger: Arc<Ledger>,
    election: Election<Vec<u8>>,
    capability: Capability,
    members: Vec<PeerId>,
    open_membership: bool,
    signing: ring::signature::Ed25519KeyPair,
    /// This node's Ed25519 public key (its secure-aggregation identity).
    identity: [u8; 32],
    peers: HashMap<PeerId, Peer>,
    pending: HashMap<OutboundRequestId, Pending>,
    /// Requests between this node's host and client sides, in the order they were made.
    local: VecDeque<Local>,
    topic: IdentTopic,
    ml: Ml,
    host: Option<HostSide>,
    client: ClientSession,
    /// Charges and noises this node's uploads (its own client side's one release path).
    releaser: Releaser,
    /// The noise multiplier of client-level uploads under this node's budget (0 under
    /// record-level DP, whose uploads carry no noise): what its host side expects of a sum.
    noise_multiplier: f64,
    admin: watch::Sender<AdminState>,
    last_metrics: Option<crate::metrics::RoundMetrics>,
    ledger_view: LedgerView,
    /// How the last round's learning used the private records.
    private_use: Option<crate::learn::PrivateUse>,
    /// How the last round this node joined is securely aggregated (for `status`).
    secure_aggregation: Option<String>,
    /// Fetching checkpoints this node was not sent.
    catch_up: protocol::session::CatchUp,
    /// Members this node is sending a checkpoint they asked for (one at a time each).
    serving: HashSet<PeerId>,
    /// Bytes of checkpoints sent to members that asked, since this process started.
    served_bytes: u64,
    /// Request-response bytes both ways, since this process started.
    traffic: Arc<net::codec::Traffic>,
    /// ε spent and accuracy per round (durable in the store), for the live page.
    history: Vec<crate::metrics::RoundPoint>,
    /// The host's latest synthetic images, for the live page.
    grid: Option<Arc<admin::Grid>>,
    bootstrap: Vec<Multiaddr>,
    ticks: u64,
}

/// How long a request may take to be answered: two round stages (at least 10 s).
fn request_timeout(cfg: &NodeConfig) -> Duration {
    Duration::from_secs(cfg.round.stage_timeout_secs.max(5) * 2)
}

/// Memory of this machine in MiB (for the host election's ranking).
fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// True when this build has CUDA and a device answers (the `cuda` feature; CPU otherwise).
fn gpu_usable(allowed: bool) -> bool {
    allowed && cfg!(feature = "cuda") && candle_core::Device::new_cuda(0).is_ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `at` (a monotonic instant, past or future) in ms since the Unix epoch.
fn unix_ms_at(at: Instant) -> u64 {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => now_ms().saturating_add(ahead.as_millis() as u64),
        None => now_ms().saturating_sub(now.duration_since(at).as_millis() as u64),
    }
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let dir = DataDir::new(opts.data_dir.resolved());
    anyhow::ensure!(
        dir.is_initialised(),
        "--data-dir {} is not an initialised node directory (run `fedmmkt init --data-dir {}` first)",
        opts.data_dir,
        opts.data_dir.resolved().display()
    );
    let mut cfg = NodeConfig::load(&dir.config())?;
    if opts.mdns {
        cfg.network.mdns = true;
    }
    cfg.validate()?;
    // The admin endpoint's access is settled first: a node that would serve its state
    // unguarded does not start at all.
    let admin_listen = cfg.admin.listen_addr()?;
    let access = admin::Access {
        token: match cfg.admin.token_required() {
            true => Some(admin::token::load(dir.root()).with_context(|| {
                format!(
                    "admin.listen = {admin_listen}{}: every request needs the bearer token",
                    if cfg.admin.require_token {
                        " with admin.require_token"
                    } else {
                        " is not a loopback address"
                    }
                )
            })?),
            false => None,
        },
        metrics_need_token: cfg.admin.metrics_token,
    };
    let key = store::load_identity(dir.root())?;
    let me = key.public().to_peer_id();
    let signing = {
        let ed = key
            .clone()
            .try_into_ed25519()
            .context("the node identity must be an Ed25519 key")?;
        let seed = ed.secret();
        ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|e| anyhow::anyhow!("identity key rejected by ring: {e}"))?
    };
    let identity: [u8; 32] = ring::signature::KeyPair::public_key(&signing)
        .as_ref()
        .try_into()
        .context("an Ed25519 public key has 32 bytes")?;
    let psk =
        match cfg.psk_path(dir.root()) {
            Some(path) => Some(crate::net::psk::load_psk(path.resolved()).with_context(|| {
                format!("network.psk_file {path} in {}", dir.config().display())
            })?),
            None => None,
        };
    let members = cfg.member_ids()?;
    let store = NodeStore::open(dir.root())?;
    let ledger = Arc::new(Ledger::open(&dir.ledger())?);
    // One ledger, one unit: a mix is a clean guarantee of neither (privacy/README.md).
    if let Some(e) = ledger
        .entries()?
        .iter()
        .find(|e| e.unit != cfg.privacy.unit)
    {
        anyhow::bail!(
            "privacy.unit = \"{}\" in {}, but the ledger already holds {}-level spends (entry {}); \
             a ledger mixing units protects neither: keep the unit, or start a new data directory",
            cfg.privacy.unit,
            dir.config().display(),
            e.unit,
            e.seq
        );
    }
    if ledger.budget()?.is_none() {
        ledger.set_budget(privacy::ledger::Budget::new(
            cfg.privacy.epsilon,
            cfg.privacy.delta,
        )?)?;
    }
    let listen = if opts.listen.is_empty() {
        cfg.listen_addrs()?
    } else {
        opts.listen.clone()
    };
    // Memory addresses only: an in-process federation (tests), no sockets for the swarm.
    let memory = !listen.is_empty() && listen.iter().all(net::is_memory);
    let quic = !members.is_empty() && !memory;
    let traffic = Arc::new(net::codec::Traffic::default());
    let net_cfg = NetConfig {
        psk,
        members: members.clone(),
        quic,
        mdns: cfg.network.mdns,
        max_connections: cfg.network.max_connections,
        max_connections_per_peer: cfg.network.max_connections_per_peer,
        request_timeout: request_timeout(&cfg),
        max_inflight_bytes: (cfg.network.max_inflight_mb as usize).saturating_mul(1 << 20),
        memory,
        traffic: traffic.clone(),
    };
    let mut swarm = net::build_swarm(key, &net_cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    for addr in &listen {
        let is_quic = addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1));
        if is_quic && !quic {
            tracing::warn!(
                %addr,
                "not listening on QUIC: the pre-shared key protects TCP only; list `members` in the config to enable QUIC"
            );
            continue;
        }
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    let topic = IdentTopic::new(net::TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| anyhow::anyhow!("gossipsub subscribe: {e}"))?;
    let mut bootstrap = cfg.bootstrap_addrs()?;
    bootstrap.extend(opts.bootstrap.iter().cloned());
    for addr in &bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, "cannot dial bootstrap peer: {e}");
        }
    }

    // Peers remembered from earlier runs are dialled too, so a restarted node rejoins even
    // when its bootstrap peer is gone.
    for rec in store.peers()? {
        let Ok(peer) = rec.peer_id.parse::<PeerId>() else {
            continue;
        };
        let addrs: Vec<Multiaddr> = rec.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        if !addrs.is_empty() && peer != me {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(%peer, "cannot dial a remembered peer: {e}");
            }
        }
    }
    let capability = Capability {
        gpu: gpu_usable(opts.gpu && cfg.node.gpu_allowed()),
        memory_mb: memory_mb(),
    };
    let last_completed = store.last_completed_round()?;
    let open_membership = members.is_empty();
    let mut election_members: Vec<Vec<u8>> = members.iter().map(|p| p.to_bytes()).collect();
    if open_membership {
        for rec in store.peers()? {
            if let Ok(p) = rec.peer_id.parse::<PeerId>() {
                election_members.push(p.to_bytes());
            }
        }
        tracing::warn!(
            "no `members` in the config: the election quorum is the peers seen so far; list members for partition safety"
        );
    }
    election_members.push(me.to_bytes());
    election_members.sort();
    election_members.dedup();
    let (term, voted_for) = store.election()?;
    let mut election = Election::new(
        me.to_bytes(),
        capability,
        election_members,
        Persistent { term, voted_for },
        ElectionConfig::default(),
        cfg.round.seed
            ^ u64::from_le_bytes(
                store::sha256(&me.to_bytes())[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
    )?;
    election.set_last_completed_round(last_completed);

    let dataset = match &opts.dataset {
        Some(path) => Some(path.existing_dir("--dataset")?.to_path_buf()),
        None => match cfg.dataset_path(dir.root()) {
            Some(path) => Some(
                path.existing_dir(&format!("node.dataset in {}", dir.config().display()))?
                    .to_path_buf(),
            ),
            None => None,
        },
    };
    let world = World::build(
        &me.to_bytes(),
        dataset.as_deref(),
        cfg.round.seed,
        cfg.node.embedded_shards as usize,
        cfg.node.alpha,
    )?;
    tracing::info!(
        peer = %me,
        data = %world.private_origin,
        images = world.private.len(),
        gpu = capability.gpu,
        memory_mb = capability.memory_mb,
        last_completed,
        term,
        "node starting"
    );
    let (ml_tx, mut ml_rx) = mpsc::unbounded_channel();
    let record = (cfg.privacy.unit == privacy::PrivacyUnit::Record).then(|| RecordSettings {
        epsilon: cfg.privacy.epsilon,
        delta: cfg.privacy.delta,
        clip: cfg.privacy.example_clip,
        planned_rounds: cfg.privacy.planned_rounds,
        dataset_id: format!("{me}-records"),
        ledger: ledger.clone(),
    });
    let ml = Ml::spawn(
        world,
        cfg.host_config(),
        cfg.client_config(),
        cfg.round.seed,
        record,
        ml_tx,
    )?;
    let (admin_tx, admin_rx) = watch::channel(AdminState::default());
    let guarded = access.token.is_some();
    let (admin_addr, admin_task) = admin::start(dir.root(), admin_listen, access, admin_rx).await?;
    tracing::info!(
        url = %format!("http://{admin_addr}/"),
        token = if guarded { "required (admin.token)" } else { "none (loopback)" },
        "admin endpoint: live page, /status, /peers, /audit, /metrics"
    );

    let mut releaser = Releaser::new(PrivacyPlan {
        epsilon: cfg.privacy.epsilon,
        delta: cfg.privacy.delta,
        clip: cfg.privacy.clip,
        planned_rounds: cfg.privacy.planned_rounds,
    });
    let noise_multiplier = match cfg.privacy.unit {
        privacy::PrivacyUnit::Client => releaser.aggregate_noise_multiplier()?,
        privacy::PrivacyUnit::Record => 0.0,
    };
    let catch_up = protocol::session::CatchUp::new(checkpoints::catch_up_policy(&cfg));
    let mut node = Node {
        swarm,
        me,
        me_bytes: me.to_bytes(),
        cfg,
        dir,
        store,
        ledger,
        election,
        capability,
        members,
        open_membership,
        signing,
        identity,
        peers: HashMap::new(),
        pending: HashMap::new(),
        local: VecDeque::new(),
        topic,
        ml,
        host: None,
        client: ClientSession::new(),
        releaser,
        noise_multiplier,
        admin: admin_tx,
        last_metrics: None,
        ledger_view: LedgerView::default(),
        private_use: None,
        secure_aggregation: None,
        catch_up,
        serving: HashSet::new(),
        served_bytes: 0,
        traffic,
        history: Vec::new(),
        grid: None,
        bootstrap,
        ticks: 0,
    };
    node.restore_bans(&node.store.peers()?);
    node.last_metrics = node.store.metrics()?;
    node.history = node.store.round_points()?;
    node.refresh_ledger_view();
    node.publish_admin();

    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            event = node.swarm.select_next_some() => {
                if let Err(e) = node.on_swarm(event) {
                    break Err(e);
                }
            }
            _ = ticker.tick() => {
                if let Err(e) = node.on_tick() {
                    break Err(e);
                }
            }
            Some(outcome) = ml_rx.recv() => {
                if let Err(e) = node.on_ml(outcome) {
                    break Err(e);
                }
            }
        }
        if let Err(e) = node.drain_local() {
            break Err(e);
        }
    };
    admin_task.abort();
    let _ = admin::remove_addr(node.dir.root());
    node.store.flush()?;
    tracing::info!(peer = %node.me, "node stopped");
    result
}

impl Node {
    /// Ok when `bytes` fit on the data directory's disk with `node.min_free_mb` left free.
    fn room_for(&self, bytes: u64) -> Result<(), store::space::DiskFull> {
        let reserve = self.cfg.node.min_free_mb.saturating_mul(1 << 20);
        store::space::ensure_room(self.dir.root(), bytes, reserve)
    }

    /// One election/round clock tick.
    fn on_tick(&mut self) -> anyhow::Result<()> {
        self.ticks += 1;
        let actions = self.election.tick();
        self.apply(actions)?;
        self.host_tick()?;
        self.catch_up_tick()?;
        if self.ticks.is_multiple_of(10) {
            self.expire_bans()?;
            self.publish_admin();
            let round = self.election.last_completed_round();
            let alive = Announcement::Alive {
                capability: self.capability,
                last_completed_round: round,
                checkpoint: self.store.checkpoint_hash(round)?,
            };
            self.publish(&alive);
        }
        // Bootstrap peers that were not up yet (or went away) are dialled again every 5 s.
        if self.ticks.is_multiple_of(50) {
            self.redial_bootstrap();
        }
        // Kademlia walks the network for peers beyond the bootstrap ones every 30 s.
        if self.ticks % 300 == 20 && self.swarm.connected_peers().next().is_some() {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        Ok(())
    }

    fn on_ml(&mut self, outcome: Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Failed { job, error } => {
                tracing::error!(job, "model work failed: {error}");
                if self.host.is_some() {
                    self.abandon_round("model work failed")?;
                }
                self.client_abandon("model work failed")?;
                Ok(())
            }
            Outcome::Judged {
                term,
                attempt,
                round,
                upload,
                test_acc,
                private_use,
                seconds,
            } => {
                self.private_use = private_use;
                self.client_judged((term, round, attempt), upload, test_acc, seconds)
            }
            other => self.host_ml(other),
        }
    }
}
