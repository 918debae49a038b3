//! A running node: the libp2p swarm, the host election, the round (as host or client), the
//! model thread, the durable store and ledger, and the admin endpoint, driven by one loop.
//!
//! Everything a peer sends is checked by the sans-IO machines in `protocol` (election, round)
//! before it touches state; anything refused is answered with a reason and logged.

mod client;
mod host;
pub mod ml;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
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
use crate::net::rate::RateWindow;
use crate::net::{self, Behaviour, BehaviourEvent, NetConfig};
use crate::paths::UserPath;
use crate::store::{self, DataDir, NodeStore, PeerRecord, PhaseRecord};
use crate::world::World;
use host::HostSide;
use ml::{Ml, Outcome};

/// The election clock.
pub const TICK: Duration = Duration::from_millis(100);

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

/// What this node knows about a connected or remembered peer.
#[derive(Debug, Clone)]
struct Peer {
    addrs: Vec<Multiaddr>,
    connected: bool,
    /// Ed25519 key from identify, checked against the PeerId.
    identity: Option<[u8; 32]>,
    gpu: bool,
    memory_mb: u64,
    last_completed_round: u64,
    last_seen: Option<Instant>,
    /// Requests in the current one-second window (rate limit).
    window: RateWindow,
}

impl Peer {
    fn new() -> Self {
        Self {
            addrs: Vec::new(),
            connected: false,
            identity: None,
            gpu: false,
            memory_mb: 0,
            last_completed_round: 0,
            last_seen: None,
            window: RateWindow::new(Instant::now()),
        }
    }
}

/// The ledger as the admin endpoint shows it (ε spent, budget, audit), read when it changes.
#[derive(Debug, Clone, Default)]
struct LedgerView {
    spent: f64,
    budget: f64,
    audit: Option<serde_json::Value>,
}

/// What an outbound request was for, to act on its response.
#[derive(Debug, Clone)]
enum Pending {
    Offer {
        peer: PeerId,
        term: u64,
        round: u64,
        attempt: u32,
    },
    Checkpoint {
        peer: PeerId,
        term: u64,
        round: u64,
    },
    Other,
}

/// A request between this node's own host and client sides (the host is a participant of its
/// own rounds): carried out by the event loop after the current event, never over the network.
#[derive(Debug)]
enum Local {
    /// From the host side to this node's client side; the response goes to `Pending`.
    ToClient(Request, Pending),
    /// From the client side to this node's host side.
    ToHost(Request),
}

/// The running node.
pub struct Node {
    swarm: Swarm<Behaviour>,
    me: PeerId,
    me_bytes: Vec<u8>,
    cfg: NodeConfig,
    dir: DataDir,
    store: NodeStore,
    ledger: Ledger,
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
    admin: watch::Sender<AdminState>,
    last_metrics: Option<crate::metrics::RoundMetrics>,
    ledger_view: LedgerView,
    bootstrap: Vec<Multiaddr>,
    ticks: u64,
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

/// The Ed25519 key behind a PeerId-bearing public key, if it is one.
fn ed25519_bytes(key: &libp2p::identity::PublicKey) -> Option<[u8; 32]> {
    key.clone().try_into_ed25519().ok().map(|k| k.to_bytes())
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
    let ledger = Ledger::open(&dir.ledger())?;
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
    let quic = !members.is_empty();
    let net_cfg = NetConfig {
        psk,
        members: members.clone(),
        quic,
        mdns: cfg.network.mdns,
        max_connections: cfg.network.max_connections,
        max_connections_per_peer: cfg.network.max_connections_per_peer,
        request_timeout: Duration::from_secs(cfg.round.stage_timeout_secs.max(5) * 2),
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
    let ml = Ml::spawn(
        world,
        cfg.host_config(),
        cfg.client_config(),
        cfg.round.seed,
        ml_tx,
    )?;
    let (admin_tx, admin_rx) = watch::channel(AdminState::default());
    let (_, admin_task) = admin::start(dir.root(), admin_rx).await?;

    let releaser = Releaser::new(PrivacyPlan {
        epsilon: cfg.privacy.epsilon,
        delta: cfg.privacy.delta,
        clip: cfg.privacy.clip,
        planned_rounds: cfg.privacy.planned_rounds,
    });
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
        admin: admin_tx,
        last_metrics: None,
        ledger_view: LedgerView::default(),
        bootstrap,
        ticks: 0,
    };
    node.last_metrics = node.store.metrics()?;
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
    /// One election/round clock tick.
    fn on_tick(&mut self) -> anyhow::Result<()> {
        self.ticks += 1;
        let actions = self.election.tick();
        self.apply(actions)?;
        self.host_tick()?;
        if self.ticks.is_multiple_of(10) {
            self.publish_admin();
            let alive = Announcement::Alive {
                capability: self.capability,
                last_completed_round: self.election.last_completed_round(),
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

    fn redial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            });
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "cannot dial bootstrap peer: {e}");
            }
        }
    }

    /// Carries out what the election decided: persist first, then send.
    fn apply(&mut self, actions: Vec<Action<Vec<u8>>>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Persist(p) => self.store.set_election(p.term, p.voted_for.as_deref())?,
                Action::Send { to, msg } => {
                    if let Ok(peer) = PeerId::from_bytes(&to) {
                        self.request(peer, Request::Election(msg), Pending::Other);
                    }
                }
                Action::Broadcast(msg) => self.broadcast(msg),
                Action::BecameLeader { term } => {
                    tracing::info!(term, "elected generator host");
                    self.store.record_host(term, &self.me.to_string())?;
                    self.client_abandon("this node became host")?;
                    self.become_host(term)?;
                }
                Action::SteppedDown { term } => {
                    tracing::info!(term, "no longer the generator host");
                    self.stop_hosting("stepped down")?;
                }
                Action::LeaderChanged { term, leader } => {
                    if let Some(leader) = leader.as_ref().and_then(|l| PeerId::from_bytes(l).ok()) {
                        tracing::info!(term, host = %leader, "host known");
                        self.store.record_host(term, &leader.to_string())?;
                    }
                    if self.client.engaged().is_some_and(|(t, _, _)| t != term) {
                        self.client_abandon("the host changed")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends an election broadcast over gossip, falling back to direct requests when gossip
    /// has no subscribed peers yet.
    fn broadcast(&mut self, msg: ElectionMessage<Vec<u8>>) {
        let ann = Announcement::Election(msg.clone());
        let sent = protocol::wire::encode(&ann).ok().and_then(|bytes| {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes)
                .ok()
        });
        if sent.is_some() {
            return;
        }
        let targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, info)| info.connected && self.is_member(p))
            .map(|(p, _)| *p)
            .collect();
        for peer in targets {
            self.request(peer, Request::Election(msg.clone()), Pending::Other);
        }
    }

    /// Announces the round's progress (best effort).
    fn announce(&mut self, term: u64, round: u64, phase: Phase, participants: u32) {
        self.publish(&Announcement::Round {
            term,
            round,
            phase,
            participants,
        });
    }

    /// Publishes an announcement (best effort: gossip may have no subscribed peer yet).
    fn publish(&mut self, ann: &Announcement) {
        if let Ok(bytes) = protocol::wire::encode(ann) {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes);
        }
    }

    /// Records this node's phase durably (for `status` and for restarts) and shows it on the
    /// admin endpoint at once.
    fn set_phase(&self, term: u64, round: u64, phase: Phase, role: &str) -> anyhow::Result<()> {
        tracing::info!(term, round, phase = phase.name(), role, "round phase");
        self.store.set_phase(&PhaseRecord {
            round,
            term,
            phase,
            role: role.to_string(),
            updated_unix_ms: now_ms(),
        })?;
        self.publish_admin();
        Ok(())
    }

    /// Sends a request to `peer`; one addressed to this node goes to its own client side.
    fn request(&mut self, peer: PeerId, req: Request, pending: Pending) {
        if peer == self.me {
            self.local.push_back(Local::ToClient(req, pending));
            return;
        }
        let id = self.swarm.behaviour_mut().rr.send_request(&peer, req);
        self.pending.insert(id, pending);
    }

    /// Sends a client-side request to the round's host, which may be this node itself.
    fn request_host(&mut self, host: PeerId, req: Request) {
        if host == self.me {
            self.local.push_back(Local::ToHost(req));
        } else {
            self.request(host, req, Pending::Other);
        }
    }

    /// Carries out the requests between this node's own host and client sides, as a peer's
    /// would be (each may queue more: the secure-aggregation stages follow one another).
    fn drain_local(&mut self) -> anyhow::Result<()> {
        let me = self.me;
        while let Some(local) = self.local.pop_front() {
            match local {
                Local::ToClient(req, pending) => {
                    let result = match req {
                        Request::Offer(offer) => self.on_offer(me, *offer),
                        Request::SecAgg(packet) => self.client_secagg(me, packet),
                        other => Err(Refusal::WrongRole(other.kind())),
                    };
                    let response = match result {
                        Ok(()) => Response::Ack,
                        Err(reason) => {
                            tracing::warn!(
                                "this node's client side refused its own host: {reason}"
                            );
                            Response::Rejected(reason)
                        }
                    };
                    self.settle(me, pending, response)?;
                }
                Local::ToHost(req) => {
                    let result = match req {
                        Request::SecAgg(packet) => self.host_secagg(me, packet),
                        Request::Abstain {
                            term,
                            round,
                            attempt,
                            ..
                        } => self.host_abstain(me, term, round, attempt),
                        Request::Upload(packet) => self.host_upload(me, packet),
                        other => Err(Refusal::WrongRole(other.kind())),
                    };
                    if let Err(reason) = result {
                        tracing::warn!("this node's host side refused its own client: {reason}");
                    }
                }
            }
        }
        Ok(())
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, res: Response) {
        let _ = self.swarm.behaviour_mut().rr.send_response(channel, res);
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        if self.open_membership {
            return true;
        }
        self.members.contains(peer)
    }

    fn peer_mut(&mut self, peer: PeerId) -> &mut Peer {
        self.peers.entry(peer).or_insert_with(Peer::new)
    }

    /// Adds a newly seen peer to an open membership (rebuilding the election with its
    /// persisted term and vote).
    fn grow_membership(&mut self, peer: PeerId) -> anyhow::Result<()> {
        if !self.open_membership || self.election.members().contains(&peer.to_bytes()) {
            return Ok(());
        }
        let mut members: Vec<Vec<u8>> = self.election.members().iter().cloned().collect();
        members.push(peer.to_bytes());
        members.sort();
        let (term, voted_for) = self.store.election()?;
        let was_leader = self.election.is_leader();
        let mut election = Election::new(
            self.me_bytes.clone(),
            self.capability,
            members,
            Persistent { term, voted_for },
            ElectionConfig::default(),
            self.cfg.round.seed ^ self.ticks,
        )?;
        election.set_last_completed_round(self.store.last_completed_round()?);
        self.election = election;
        if was_leader {
            self.stop_hosting("membership grew")?;
        }
        Ok(())
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                println!("listening on {address}/p2p/{}", self.me);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if !self.is_member(&peer_id) {
                    tracing::warn!(peer = %peer_id, "refusing a peer that is not a member");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return Ok(());
                }
                let addr = endpoint.get_remote_address().clone();
                let p = self.peer_mut(peer_id);
                p.connected = true;
                p.last_seen = Some(Instant::now());
                if endpoint.is_dialer() && !p.addrs.contains(&addr) {
                    p.addrs.push(addr);
                }
                tracing::info!(peer = %peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connected = false;
                }
                tracing::info!(peer = %peer_id, "disconnected");
                self.participant_gone(peer_id)?;
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::warn!(from = %send_back_addr, "refused incoming connection: {error}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, "outgoing connection failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event)?,
            _ => {}
        }
        Ok(())
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) -> anyhow::Result<()> {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.public_key.to_peer_id() != peer_id
                    || info.protocol_version != net::IDENTIFY_VERSION
                {
                    tracing::warn!(peer = %peer_id, version = %info.protocol_version, "identify does not match the peer or our version: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return Ok(());
                }
                let identity = ed25519_bytes(&info.public_key);
                let first = self
                    .peers
                    .get(&peer_id)
                    .is_none_or(|p| p.identity.is_none());
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let p = self.peer_mut(peer_id);
                p.identity = identity;
                for addr in info.listen_addrs.into_iter().take(8) {
                    if !p.addrs.contains(&addr) {
                        p.addrs.push(addr);
                    }
                }
                p.addrs.truncate(8);
                self.remember(peer_id)?;
                self.grow_membership(peer_id)?;
                if first {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })
                if peer != self.me && !self.swarm.is_connected(&peer) && self.is_member(&peer) =>
            {
                let _ = self.swarm.dial(peer);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let Some(source) = message.source else {
                    return Ok(());
                };
                if !self.is_member(&source) {
                    tracing::warn!(peer = %source, "ignoring gossip from a non-member");
                    return Ok(());
                }
                match protocol::wire::decode::<Announcement>(
                    &message.data,
                    protocol::wire::MAX_ANNOUNCEMENT_BYTES,
                ) {
                    Ok(Announcement::Election(msg)) => self.on_election(source, msg)?,
                    Ok(Announcement::Alive {
                        capability,
                        last_completed_round,
                    }) => self.on_alive(source, capability, last_completed_round)?,
                    Ok(Announcement::Round { .. }) => {}
                    Err(e) => tracing::warn!(peer = %source, "bad announcement: {e}"),
                }
            }
            BehaviourEvent::Rr(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_request(peer, request, channel)?,
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_response(peer, request_id, response)?,
                }
            }
            BehaviourEvent::Rr(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                let pending = self.pending.remove(&request_id);
                tracing::debug!(peer = %peer, "request failed: {error}");
                if let Some(Pending::Offer {
                    peer,
                    term,
                    round,
                    attempt,
                }) = pending
                {
                    self.offer_refused(peer, term, round, attempt, &error.to_string())?;
                }
            }
            BehaviourEvent::Rr(request_response::Event::InboundFailure { peer, error, .. }) => {
                tracing::warn!(peer = %peer, "inbound request failed: {error}");
            }
            _ => {}
        }
        Ok(())
    }

    /// Persists what we know of `peer` (for `peers` and restarts).
    fn remember(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let Some(p) = self.peers.get(&peer) else {
            return Ok(());
        };
        self.store.upsert_peer(&PeerRecord {
            peer_id: peer.to_string(),
            addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
            gpu: p.gpu,
            memory_mb: p.memory_mb,
            last_completed_round: p.last_completed_round,
            last_seen_unix_ms: now_ms(),
        })?;
        Ok(())
    }

    /// Records a member's capability and progress (persisted when they change).
    fn note_peer(&mut self, from: PeerId, cap: Capability, round: u64) -> anyhow::Result<()> {
        let p = self.peer_mut(from);
        let changed =
            p.gpu != cap.gpu || p.memory_mb != cap.memory_mb || p.last_completed_round != round;
        p.gpu = cap.gpu;
        p.memory_mb = cap.memory_mb;
        p.last_completed_round = round;
        p.last_seen = Some(Instant::now());
        if changed {
            self.remember(from)?;
        }
        Ok(())
    }

    /// A member's liveness announcement: what the election ranks it by.
    fn on_alive(
        &mut self,
        from: PeerId,
        capability: Capability,
        last_completed_round: u64,
    ) -> anyhow::Result<()> {
        self.note_peer(from, capability, last_completed_round)?;
        if let Err(e) = self
            .election
            .observe(&from.to_bytes(), capability, last_completed_round)
        {
            tracing::debug!(peer = %from, "liveness announcement ignored: {e}");
        }
        Ok(())
    }

    fn on_election(&mut self, from: PeerId, msg: ElectionMessage<Vec<u8>>) -> anyhow::Result<()> {
        if let Some((cap, round)) = msg.advertised() {
            self.note_peer(from, cap, round)?;
        }
        match self.election.handle(&from.to_bytes(), msg) {
            Ok(actions) => self.apply(actions),
            Err(e) => {
                tracing::warn!(peer = %from, "election message refused: {e}");
                Ok(())
            }
        }
    }

    /// Per-peer request rate limit; true when the request may proceed.
    fn within_rate(&mut self, peer: PeerId) -> bool {
        let limit = self.cfg.network.requests_per_second.max(1);
        self.peer_mut(peer).window.allow(Instant::now(), limit)
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) -> anyhow::Result<()> {
        if !self.is_member(&peer) {
            tracing::warn!(peer = %peer, kind = ?request.kind(), "request from a non-member refused");
            self.respond(channel, Response::Rejected(Refusal::NotMember));
            return Ok(());
        }
        if !self.within_rate(peer) {
            tracing::warn!(peer = %peer, "rate limit exceeded: request refused");
            self.respond(channel, Response::Rejected(Refusal::RateLimited));
            return Ok(());
        }
        let result = match request {
            Request::Election(msg) => {
                self.on_election(peer, msg)?;
                Ok(())
            }
            Request::Offer(offer) => self.on_offer(peer, *offer),
            Request::SecAgg(packet) => {
                if self.host.is_some() {
                    self.host_secagg(peer, packet)
                } else {
                    self.client_secagg(peer, packet)
                }
            }
            Request::Abstain { .. } if self.host.is_none() => {
                Err(Refusal::WrongRole(Kind::Abstain))
            }
            Request::Upload(packet) => match self.host {
                Some(_) => self.host_upload(peer, packet),
                None => Err(Refusal::WrongRole(Kind::Upload)),
            },
            Request::Abstain {
                term,
                round,
                attempt,
                ..
            } => self.host_abstain(peer, term, round, attempt),
            Request::Checkpoint(transfer) => self.on_checkpoint(peer, transfer),
        };
        match result {
            Ok(()) => self.respond(channel, Response::Ack),
            Err(reason) => {
                tracing::warn!(peer = %peer, "request refused: {reason}");
                self.respond(channel, Response::Rejected(reason));
            }
        }
        Ok(())
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    ) -> anyhow::Result<()> {
        let pending = self.pending.remove(&id).unwrap_or(Pending::Other);
        self.settle(peer, pending, response)
    }

    /// Acts on `from`'s response (a peer's, or this node's own client side) to a request made
    /// for `pending`.
    fn settle(&mut self, from: PeerId, pending: Pending, response: Response) -> anyhow::Result<()> {
        match (pending, response) {
            (Pending::Checkpoint { peer, term, round }, Response::Ack) => {
                self.host_replica(peer, term, round)
            }
            (
                Pending::Offer {
                    peer,
                    term,
                    round,
                    attempt,
                },
                Response::Rejected(reason),
            ) => self.offer_refused(peer, term, round, attempt, &reason.to_string()),
            (_, Response::Rejected(reason)) => {
                tracing::debug!(peer = %from, "peer refused a request: {reason}");
                Ok(())
            }
            _ => Ok(()),
        }
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
                seconds,
            } => self.client_judged((term, round, attempt), upload, test_acc, seconds),
            other => self.host_ml(other),
        }
    }

    /// Re-reads the ledger (verifying its chain) for the admin endpoint; called when it changed,
    /// so the per-second status refresh never re-verifies every entry.
    fn refresh_ledger_view(&mut self) {
        let delta = self.cfg.privacy.delta;
        self.ledger_view = LedgerView {
            spent: self
                .ledger
                .epsilon_spent(delta)
                .map(|e| e.epsilon)
                .unwrap_or(f64::NAN),
            budget: self
                .ledger
                .budget()
                .ok()
                .flatten()
                .map(|b| b.epsilon)
                .unwrap_or(self.cfg.privacy.epsilon),
            audit: self
                .ledger
                .audit()
                .ok()
                .and_then(|a| serde_json::to_value(a).ok()),
        };
    }

    /// Refreshes what the admin endpoint answers.
    fn publish_admin(&self) {
        let delta = self.cfg.privacy.delta;
        let phase = self.store.phase().ok().flatten().map(|p| p.phase);
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let mut peers: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| PeerInfo {
                peer_id: id.to_string(),
                addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                gpu: p.gpu,
                memory_mb: p.memory_mb,
                last_completed_round: p.last_completed_round,
                connected: connected.contains(id),
                last_seen_unix_ms: now_ms().saturating_sub(
                    p.last_seen
                        .map(|t| t.elapsed().as_millis() as u64)
                        .unwrap_or(u64::MAX / 2),
                ),
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let status = StatusReport {
            peer_id: self.me.to_string(),
            running: true,
            term: self.election.term(),
            host: self
                .election
                .leader()
                .and_then(|l| PeerId::from_bytes(l).ok())
                .map(|p| p.to_string()),
            round: self.store.last_completed_round().unwrap_or(0),
            phase,
            peers: peers
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.peer_id.clone())
                .collect(),
            epsilon_spent: self.ledger_view.spent,
            epsilon_budget: self.ledger_view.budget,
            delta,
            last_metrics: self.last_metrics.clone(),
            preparing: self.ml.preparing().map(|p| p.label().to_string()),
        };
        let _ = self.admin.send(AdminState {
            status,
            peers,
            audit: self.ledger_view.audit.clone(),
        });
    }

    /// Who a host invites: this node itself (the host contributes to its own rounds) and the
    /// connected members with a verified identity key, heard from recently.
    fn live_contributors(&self) -> BTreeMap<PeerId, [u8; 32]> {
        let fresh = Duration::from_secs(self.cfg.round.stage_timeout_secs.max(5));
        let mut live: BTreeMap<PeerId, [u8; 32]> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.connected
                    && self.is_member(id)
                    && p.last_seen.is_some_and(|t| t.elapsed() < fresh)
            })
            .filter_map(|(id, p)| p.identity.map(|k| (*id, k)))
            .collect();
        live.insert(self.me, self.identity);
        live
    }

    /// Fewest contributors, this node included, a round is offered to.
    fn min_contributors(&self) -> usize {
        (self.cfg.round.min_contributors as usize).max(protocol::round::MIN_CONTRIBUTORS)
    }
}
