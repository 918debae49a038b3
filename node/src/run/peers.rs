//! What this node knows of its peers and the election: membership, capabilities and
//! progress, the election's actions, and who may contribute to a round.

use super::*;

/// What this node knows about a connected or remembered peer.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) addrs: Vec<Multiaddr>,
    pub(super) connected: bool,
    /// Ed25519 key from identify, checked against the PeerId.
    pub(super) identity: Option<[u8; 32]>,
    pub(super) gpu: bool,
    pub(super) memory_mb: u64,
    pub(super) last_completed_round: u64,
    /// The hash of that round's checkpoint, as it announced (whom to fetch it from).
    pub(super) checkpoint: Option<[u8; 32]>,
    pub(super) last_seen: Option<Instant>,
    /// Requests in the current one-second window (rate limit).
    pub(super) window: RateWindow,
    /// Its offences and ban.
    pub(super) offences: OffenceRecord,
    /// When each of its open connections last delivered a whole request frame: a request
    /// that stalls while its connection carries others is the sender's doing, not the link's.
    pub(super) frames: HashMap<ConnectionId, Instant>,
}

impl Peer {
    pub(super) fn new() -> Self {
        Self {
            addrs: Vec::new(),
            connected: false,
            identity: None,
            gpu: false,
            memory_mb: 0,
            last_completed_round: 0,
            checkpoint: None,
            last_seen: None,
            window: RateWindow::new(Instant::now()),
            offences: OffenceRecord::default(),
            frames: HashMap::new(),
        }
    }
}

/// One line for an election message in the debug log (ids shortened to their PeerId's tail).
fn describe(msg: &ElectionMessage<Vec<u8>>) -> String {
    let who = |id: &Vec<u8>| {
        PeerId::from_bytes(id).map_or_else(
            |_| "?".into(),
            |p| {
                let s = p.to_string();
                s.get(s.len().saturating_sub(6)..).unwrap_or(&s).to_string()
            },
        )
    };
    match msg {
        ElectionMessage::PreVote {
            term,
            candidate,
            last_completed_round,
            ..
        } => format!(
            "pre-vote for {} in term {term} (round {last_completed_round})",
            who(candidate)
        ),
        ElectionMessage::PreVoteReply {
            term,
            voter,
            granted,
        } => format!(
            "pre-vote reply from {} in term {term}: granted {granted}",
            who(voter)
        ),
        ElectionMessage::RequestVote {
            term,
            candidate,
            last_completed_round,
            ..
        } => format!(
            "vote request from {} in term {term} (round {last_completed_round})",
            who(candidate)
        ),
        ElectionMessage::Vote {
            term,
            voter,
            granted,
        } => format!("vote from {} in term {term}: granted {granted}", who(voter)),
        ElectionMessage::Heartbeat { term, .. } => format!("heartbeat of term {term}"),
        ElectionMessage::HeartbeatAck { term, .. } => format!("heartbeat ack of term {term}"),
    }
}

/// The Ed25519 key behind a PeerId-bearing public key, if it is one.
pub(super) fn ed25519_bytes(key: &libp2p::identity::PublicKey) -> Option<[u8; 32]> {
    key.clone().try_into_ed25519().ok().map(|k| k.to_bytes())
}

impl Node {
    pub(super) fn is_member(&self, peer: &PeerId) -> bool {
        if self.open_membership {
            return true;
        }
        self.members.contains(peer)
    }

    pub(super) fn peer_mut(&mut self, peer: PeerId) -> &mut Peer {
        self.peers.entry(peer).or_insert_with(Peer::new)
    }

    /// Adds a newly seen peer to an open membership (rebuilding the election with its
    /// persisted term and vote).
    pub(super) fn grow_membership(&mut self, peer: PeerId) -> anyhow::Result<()> {
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

    /// Persists what we know of `peer` (for `peers` and restarts).
    pub(super) fn remember(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let Some(p) = self.peers.get(&peer) else {
            return Ok(());
        };
        let banned_until = p.offences.banned_until(Instant::now());
        self.store.upsert_peer(&PeerRecord {
            peer_id: peer.to_string(),
            addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
            gpu: p.gpu,
            memory_mb: p.memory_mb,
            last_completed_round: p.last_completed_round,
            last_seen_unix_ms: now_ms(),
            offences: p.offences.total(),
            banned_until_unix_ms: banned_until.map(unix_ms_at),
            last_offence: p.offences.last().map(str::to_string),
        })?;
        Ok(())
    }

    /// The ban policy of this node's config.
    fn ban_policy(&self) -> BanPolicy {
        let n = &self.cfg.network;
        BanPolicy {
            threshold: n.ban_after_offences,
            window: Duration::from_secs(n.offence_window_secs),
            ban: Duration::from_secs(n.ban_secs),
        }
    }

    /// Counts an offence by `peer` (a request refused for its own fault, an undecodable or
    /// stalled body, a bad election message or announcement, a flood). Past the policy's
    /// threshold the peer is disconnected and refused at connection time until the ban ends.
    pub(super) fn offence(&mut self, peer: PeerId, what: &str) -> anyhow::Result<()> {
        if peer == self.me {
            return Ok(());
        }
        let policy = self.ban_policy();
        let now = Instant::now();
        let record = &mut self.peer_mut(peer).offences;
        if !record.offend(now, what, &policy) {
            tracing::debug!(peer = %peer, offences = record.total(), "offence: {what}");
            return Ok(());
        }
        let total = record.total();
        tracing::warn!(
            peer = %peer,
            offences = total,
            ban_secs = policy.ban.as_secs(),
            "banned: {} offences within {} s, the latest: {what}",
            policy.threshold,
            policy.window.as_secs()
        );
        self.swarm.behaviour_mut().banned.block_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.remember(peer)
    }

    /// Restores bans that outlive a restart, from the peers' stored records.
    pub(super) fn restore_bans(&mut self, records: &[PeerRecord]) {
        let (now, now_unix) = (Instant::now(), now_ms());
        for rec in records {
            let (Ok(peer), Some(until)) = (rec.peer_id.parse::<PeerId>(), rec.banned_until_unix_ms)
            else {
                continue;
            };
            if until <= now_unix {
                continue;
            }
            let left = Duration::from_millis(until - now_unix);
            let why = rec.last_offence.clone().unwrap_or_default();
            tracing::warn!(peer = %peer, left_secs = left.as_secs(), "still banned: {why}");
            self.peer_mut(peer).offences.ban_until(now + left, why);
            self.swarm.behaviour_mut().banned.block_peer(peer);
        }
    }

    /// Lifts the bans that have run out (called from the tick).
    pub(super) fn expire_bans(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let ended: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter_map(|(id, p)| p.offences.expire(now).then_some(*id))
            .collect();
        for peer in ended {
            tracing::info!(peer = %peer, "ban ended");
            self.swarm.behaviour_mut().banned.unblock_peer(peer);
            self.remember(peer)?;
        }
        Ok(())
    }

    /// Records a member's capability and progress (persisted when they change).
    pub(super) fn note_peer(
        &mut self,
        from: PeerId,
        cap: Capability,
        round: u64,
    ) -> anyhow::Result<()> {
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
    pub(super) fn on_alive(
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

    pub(super) fn on_election(
        &mut self,
        from: PeerId,
        msg: ElectionMessage<Vec<u8>>,
    ) -> anyhow::Result<()> {
        if let Some((cap, round)) = msg.advertised() {
            self.note_peer(from, cap, round)?;
        }
        if !matches!(
            msg,
            ElectionMessage::Heartbeat { .. } | ElectionMessage::HeartbeatAck { .. }
        ) {
            tracing::debug!(peer = %from, role = ?self.election.role(), "election: {}", describe(&msg));
        }
        match self.election.handle(&from.to_bytes(), msg) {
            Ok(actions) => self.apply(actions),
            Err(e) => {
                tracing::warn!(peer = %from, "election message refused: {e}");
                self.offence(from, &format!("election message refused: {e}"))
            }
        }
    }

    /// Who a host invites: this node itself (the host contributes to its own rounds) and the
    /// connected members with a verified identity key, heard from within two stage timeouts
    /// (at least 10 s: on a loaded machine a member's one-second liveness gossip arrives late,
    /// and one stage timeout left 22 of 32 testnet nodes on 2 cores out of round 1).
    pub(super) fn live_contributors(&self) -> BTreeMap<PeerId, [u8; 32]> {
        let fresh = Duration::from_secs((2 * self.cfg.round.stage_timeout_secs).max(10));
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
    pub(super) fn min_contributors(&self) -> usize {
        (self.cfg.round.min_contributors as usize).max(protocol::round::MIN_CONTRIBUTORS)
    }

    /// Carries out what the election decided: persist first, then send.
    pub(super) fn apply(&mut self, actions: Vec<Action<Vec<u8>>>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Persist(p) => self.store.set_election(p.term, p.voted_for.as_deref())?,
                Action::Send { to, msg } => {
                    if let Ok(peer) = PeerId::from_bytes(&to) {
                        self.request(peer, Request::Election(msg), Pending::Other);
                    }
                }
                Action::Broadcast(msg) => {
                    if !matches!(msg, ElectionMessage::Heartbeat { .. }) {
                        tracing::debug!("election: broadcasting {}", describe(&msg));
                    }
                    self.broadcast(msg)
                }
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
}
