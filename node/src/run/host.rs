//! The host role in the node: when to start a round, the model jobs (sample, improve), the
//! checkpoint store, and the clock and byte counts of each phase. What the round accepts and
//! what it sends is decided by `protocol::session::HostSession`; this module carries out its
//! effects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use protocol::session::{HostEffect, HostSession, OpenRound, Replication, RoundPolicy, StartRule};
use protocol::wire::{
    Aggregation, CheckpointTransfer, Participant, Phase, Request, SecAggPacket, UploadPacket,
};
use protocol::{Refusal, RoundStart};
use rand::seq::SliceRandom;
use rand::RngCore;

use super::ml::{Job, Outcome};
use super::{Node, Pending, TICK};

/// Seconds and bytes of a round, per phase as the host sees it (bytes over the network
/// only: what the host's own client side exchanges with it never leaves the process).
#[derive(Debug, Clone)]
struct PhaseClock {
    phase: Phase,
    since: Instant,
    seconds: BTreeMap<Phase, f64>,
    bytes: BTreeMap<Phase, u64>,
    sent: u64,
    received: u64,
}

impl PhaseClock {
    fn new(phase: Phase, already: f64) -> Self {
        let mut seconds = BTreeMap::new();
        seconds.insert(Phase::Generate, already);
        Self {
            phase,
            since: Instant::now(),
            seconds,
            bytes: BTreeMap::new(),
            sent: 0,
            received: 0,
        }
    }

    /// Closes the current phase and opens `next`.
    fn enter(&mut self, next: Phase) {
        *self.seconds.entry(self.phase).or_default() += self.since.elapsed().as_secs_f64();
        self.phase = next;
        self.since = Instant::now();
    }

    /// Counts `n` bytes sent (`sent`) or received in the current phase.
    fn count(&mut self, n: usize, sent: bool) {
        *self.bytes.entry(self.phase).or_default() += n as u64;
        if sent {
            self.sent += n as u64;
        } else {
            self.received += n as u64;
        }
    }

    fn total_bytes(&self) -> u64 {
        self.bytes.values().sum()
    }
}

/// A round attempt in progress.
pub(super) struct ActiveRound {
    session: HostSession,
    started: Instant,
    clock: PhaseClock,
    generated_in: f64,
    /// (hash, kept samples, mean reward) once the generator was improved.
    checkpoint: Option<([u8; 32], usize, f32)>,
    /// This node's own test accuracy after learning in this round (it contributes too).
    own_test_acc: Option<f64>,
    /// The session's clock, on wall time.
    wall: WallTicks,
}

/// Counts [`TICK`]s of wall time. A starved event loop runs its ticker late (64 nodes on
/// 2 cores ran 50 ticks in 18.5 s, not 5), and counting the loop's ticks stretched every stage
/// deadline with it: a 16 s stage lasted a minute, and round 1 sat in its first stages for
/// 7 minutes.
#[derive(Debug, Clone, Copy)]
struct WallTicks {
    /// Wall time up to which ticks have been counted.
    to: Instant,
}

impl WallTicks {
    fn new(now: Instant) -> Self {
        Self { to: now }
    }

    /// Whole ticks since the last call (the remainder carries over to the next).
    fn due(&mut self, now: Instant) -> u32 {
        let due = now.saturating_duration_since(self.to).as_nanos() / TICK.as_nanos();
        let due = u32::try_from(due).unwrap_or(u32::MAX);
        self.to = self.to.checked_add(TICK.saturating_mul(due)).unwrap_or(now);
        due
    }
}

/// The host role: present while this node holds the term's leadership.
pub(super) struct HostSide {
    term: u64,
    /// Attempts made so far in this term (each offer gets the next number).
    attempts: u32,
    /// Seconds the last synthetic set took to sample.
    generated_in: f64,
    ready: bool,
    /// When the generator became ready: the first round's wait for the members runs from here.
    ready_at: Option<Instant>,
    /// This host is to start the federation's first round: it waits for the members
    /// ([`StartRule`]) until its first offer goes out.
    first_round: bool,
    /// What the next round waits for, while it waits (for `status` and the testnet's line).
    pub(super) waiting: Option<String>,
    busy: bool,
    next_start: Instant,
    round: Option<ActiveRound>,
}

impl Node {
    /// Takes up the host role for `term`: resume from the newest checkpoint this node holds.
    pub(super) fn become_host(&mut self, term: u64) -> anyhow::Result<()> {
        let checkpoint = match self.store.latest_checkpoint()? {
            Some((round, hash)) => Some((round, self.store.get_checkpoint(&hash)?)),
            None => None,
        };
        // No round was ever tried here: this host starts the federation. A host elected after
        // a failover, or after a first attempt, has a phase on record and goes with who is live.
        let first_round = self.store.last_completed_round()? == 0 && self.store.phase()?.is_none();
        if let Some((round, _)) = &checkpoint {
            tracing::info!(
                term,
                round,
                "resuming the generator from the checkpoint of round {round}"
            );
        }
        self.host = Some(HostSide {
            term,
            attempts: 0,
            generated_in: 0.0,
            ready: false,
            ready_at: None,
            first_round,
            waiting: None,
            busy: true,
            next_start: Instant::now(),
            round: None,
        });
        let round = self.store.last_completed_round()? + 1;
        self.set_phase(term, round, Phase::Generate, "host")?;
        self.ml.send(Job::HostInit {
            checkpoint,
            cache_dir: self.cfg.cache_path(self.dir.root()),
        });
        Ok(())
    }

    /// Leaves the host role (a round in progress is abandoned).
    pub(super) fn stop_hosting(&mut self, reason: &str) -> anyhow::Result<()> {
        if self.host.is_some() {
            self.abandon_round(reason)?;
            self.host = None;
            self.ml.send(Job::DropHost);
        }
        Ok(())
    }

    /// A round whose checkpoint could not be stored does not count: abandon it, and reload the
    /// generator from the last stored checkpoint so the next attempt starts from history.
    fn checkpoint_not_stored(&mut self, round: u64, why: &str) -> anyhow::Result<()> {
        tracing::error!(
            round,
            "the round does not count: its checkpoint could not be stored: {why}"
        );
        self.abandon_round(&format!("its checkpoint could not be stored: {why}"))?;
        match self.host.as_ref().map(|h| h.term) {
            Some(term) => self.become_host(term),
            None => Ok(()),
        }
    }

    /// Gives up the round in progress; clients' spends stay recorded in their ledgers.
    pub(super) fn abandon_round(&mut self, reason: &str) -> anyhow::Result<()> {
        let effects = match self.active_mut() {
            Some(active) => active.session.abandon(reason),
            None => Vec::new(),
        };
        self.host_effects(effects)
    }

    fn active_mut(&mut self) -> Option<&mut ActiveRound> {
        self.host.as_mut().and_then(|h| h.round.as_mut())
    }

    fn round_interval(&self) -> Duration {
        Duration::from_secs(self.cfg.round.round_interval_secs)
    }

    /// Whether `live` contributors (this node included) may start the next round: at least
    /// `round.min_contributors`, and for the federation's first round the start rule's share
    /// of the members. While they may not, says what the round waits for, in the log now and
    /// then and in `status` at once.
    fn enough_contributors(&mut self, live: usize) -> bool {
        let members = self.election.members().len();
        let rule = self.start_rule();
        let floor = self.min_contributors();
        let mut min = floor;
        let log_now = self.ticks.is_multiple_of(50);
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        let waited = host.ready_at.map_or(Duration::ZERO, |t| t.elapsed());
        if host.first_round {
            min = min.max(rule.needed(members, waited));
        }
        if live >= min {
            if host.waiting.take().is_some() {
                tracing::info!(live, members, "starting: {live} of {members} members live");
                self.publish_admin();
            }
            return true;
        }
        let line = if host.first_round && waited < rule.timeout {
            format!(
                "waiting for members: {live} of {members} live, the first round starts at {min} \
                 (or a majority, {}, after {} s)",
                rule.needed(members, rule.timeout).max(floor),
                rule.timeout.as_secs()
            )
        } else {
            format!("waiting for members: {live} of {members} live, a round needs {min}")
        };
        let changed = host.waiting.as_ref() != Some(&line);
        if log_now || host.waiting.is_none() {
            tracing::info!(live, members, min, "{line}");
        }
        if changed {
            host.waiting = Some(line);
            self.publish_admin();
        }
        false
    }

    /// When the federation's first round starts (`round.start_share`, `round.start_timeout_secs`).
    fn start_rule(&self) -> StartRule {
        StartRule {
            share: self.cfg.round.start_share,
            timeout: Duration::from_secs(self.cfg.round.start_timeout_secs),
        }
    }

    /// The protocol's round policy with this node's clock, clip and noise.
    fn policy(&self) -> RoundPolicy {
        RoundPolicy {
            stage_ticks: (self.cfg.round.stage_timeout_secs * 1000 / TICK.as_millis() as u64)
                .max(1),
            clip: self.cfg.privacy.clip,
            noise_multiplier: self.noise_multiplier,
        }
    }

    /// Starts the next round when due; closes a stage whose deadline passed.
    pub(super) fn host_tick(&mut self) -> anyhow::Result<()> {
        let last = self.store.last_completed_round()?;
        let limit = self.cfg.round.rounds;
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        if let Some(active) = host.round.as_mut() {
            // The round's deadlines run on wall time, whatever this loop's tick rate; the
            // election stays on loop ticks (a starved follower that ran a burst of missed
            // ticks before reading the heartbeats waiting for it would stand for nothing).
            let mut effects = Vec::new();
            for _ in 0..active.wall.due(Instant::now()) {
                effects.extend(active.session.on_tick());
            }
            return self.host_effects(effects);
        }
        if !host.ready || host.busy || Instant::now() < host.next_start {
            return Ok(());
        }
        if limit > 0 && last >= limit {
            return Ok(());
        }
        let live = self.live_contributors().len();
        if !self.enough_contributors(live) {
            return Ok(());
        }
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        host.busy = true;
        let term = host.term;
        self.set_phase(term, last + 1, Phase::Generate, "host")?;
        self.announce(term, last + 1, Phase::Generate, 0);
        self.ml.send(Job::Generate { round: last + 1 });
        Ok(())
    }

    /// Results of the host's model work.
    pub(super) fn host_ml(&mut self, outcome: Outcome) -> anyhow::Result<()> {
        let interval = self.round_interval();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        match outcome {
            Outcome::HostReady {
                resumed_from,
                cached,
                seconds,
            } => {
                tracing::info!(resumed_from, cached, seconds, "generator ready");
                host.ready = true;
                host.ready_at = Some(Instant::now());
                host.busy = false;
                host.next_start = Instant::now() + interval;
                Ok(())
            }
            Outcome::Generated { start, seconds } => {
                tracing::info!(round = start.round, seconds, "synthetic set sampled");
                host.generated_in = seconds;
                self.show_samples(&start);
                self.open_round(start)
            }
            Outcome::Improved {
                round,
                checkpoint,
                kept,
                mean_reward,
                seconds,
            } => {
                tracing::info!(round, kept, mean_reward, seconds, "generator improved");
                self.replicate(round, checkpoint, kept, mean_reward)
            }
            _ => Ok(()),
        }
    }

    /// Invites the live contributors (this node among them) to the round just sampled.
    fn open_round(&mut self, start: Box<RoundStart>) -> anyhow::Result<()> {
        let interval = self.round_interval();
        let policy = self.policy();
        let clients = self.live_contributors();
        // Members may have gone (or, on a loaded machine, fallen silent) while it sampled.
        let enough = self.enough_contributors(clients.len());
        let members = self.election.members().len();
        let host_bytes = self.me_bytes.clone();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        host.busy = false;
        if !enough {
            host.next_start = Instant::now() + interval.max(Duration::from_secs(1));
            return Ok(());
        }
        host.first_round = false;
        let participants: Vec<Participant> = clients
            .iter()
            .map(|(peer, identity)| Participant {
                peer: peer.to_bytes(),
                identity: *identity,
            })
            .collect();
        let mut graph_seed = [0u8; 32];
        rand::rng().fill_bytes(&mut graph_seed);
        let attempt = host.attempts;
        host.attempts += 1;
        let (term, round) = (host.term, start.round);
        let open = OpenRound {
            term,
            attempt,
            start,
            participants,
            host: host_bytes,
            members,
            graph_seed,
            aggregation: Aggregation::Secure,
        };
        let (session, effects) = HostSession::open(open, policy)?;
        tracing::info!(
            term,
            round,
            participants = clients.len(),
            "round offered: {}",
            session.aggregation()
        );
        host.round = Some(ActiveRound {
            session,
            started: Instant::now(),
            clock: PhaseClock::new(Phase::Generate, host.generated_in),
            generated_in: host.generated_in,
            checkpoint: None,
            own_test_acc: None,
            wall: WallTicks::new(Instant::now()),
        });
        self.host_effects(effects)
    }

    /// This node's own client side learned in round `round` and reached `test_acc`.
    pub(super) fn own_contribution(&mut self, round: u64, test_acc: f64) {
        if let Some(active) = self.active_mut() {
            if active.session.round() == round {
                active.own_test_acc = Some(test_acc);
            }
        }
    }

    /// A participant's secure-aggregation message, `size` bytes as it was encoded.
    pub(super) fn host_secagg(
        &mut self,
        peer: PeerId,
        packet: SecAggPacket,
        size: usize,
    ) -> Result<(), Refusal> {
        let remote = peer != self.me;
        let Some(active) = self.active_mut() else {
            return Err(Refusal::NoRound);
        };
        let effects = active.session.on_secagg(&peer.to_bytes(), packet)?;
        if remote {
            active.clock.count(size, false);
        }
        self.host_effects(effects).map_err(Refusal::local)
    }

    /// An upload in the clear: the node's rounds are securely aggregated, so the session
    /// refuses it (counted as the sender's offence).
    pub(super) fn host_upload(
        &mut self,
        peer: PeerId,
        packet: UploadPacket,
    ) -> Result<(), Refusal> {
        let Some(active) = self.active_mut() else {
            return Err(Refusal::NoRound);
        };
        let effects = active.session.on_upload(&peer.to_bytes(), packet)?;
        self.host_effects(effects).map_err(Refusal::local)
    }

    /// A participant sits the round out (budget spent) or refused the offer.
    pub(super) fn host_abstain(
        &mut self,
        peer: PeerId,
        term: u64,
        round: u64,
        attempt: u32,
    ) -> Result<(), Refusal> {
        let Some(active) = self.active_mut() else {
            return Err(Refusal::NoRound);
        };
        let effects = active
            .session
            .on_abstain(&peer.to_bytes(), term, round, attempt)?;
        tracing::info!(peer = %peer, round, "participant sits the round out");
        self.host_effects(effects).map_err(Refusal::local)
    }

    /// A participant lost its last connection: the round stops waiting for it.
    pub(super) fn participant_gone(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let Some(active) = self.active_mut() else {
            return Ok(());
        };
        let effects = active.session.on_peer_gone(&peer.to_bytes());
        if !effects.is_empty() {
            tracing::warn!(peer = %peer, "a participant disconnected: not waiting for it");
        }
        self.host_effects(effects)
    }

    /// An offer was refused or could not be delivered.
    pub(super) fn offer_refused(
        &mut self,
        peer: PeerId,
        term: u64,
        round: u64,
        attempt: u32,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(peer = %peer, round, "offer not taken: {reason}");
        if let Err(e) = self.host_abstain(peer, term, round, attempt) {
            tracing::debug!("offer refusal ignored: {e}");
        }
        Ok(())
    }

    /// Stores the new checkpoint and sends it to every connected member.
    fn replicate(
        &mut self,
        round: u64,
        checkpoint: Vec<u8>,
        kept: usize,
        mean_reward: f32,
    ) -> anyhow::Result<()> {
        // A round counts only once its checkpoint is stored here (and then on a majority).
        let stored = self
            .room_for(checkpoint.len() as u64)
            .map_err(|full| full.to_string())
            .and_then(|()| {
                (self.store.put_checkpoint(round, &checkpoint)).map_err(|e| e.to_string())
            });
        let hash = match stored {
            Ok(hash) => hash,
            Err(why) => return self.checkpoint_not_stored(round, &why),
        };
        // The delta from the previous round's checkpoint, for the members that hold that one.
        let previous = self.store.checkpoint_hash(round.saturating_sub(1))?;
        let delta = previous.and_then(|base| Some((base, self.delta_from(base, &checkpoint)?)));
        let mut candidates: Vec<(Vec<u8>, bool)> = self
            .swarm
            .connected_peers()
            .filter(|p| self.is_member(p))
            .map(|p| {
                let holds =
                    previous.is_some() && self.peers.get(p).and_then(|s| s.checkpoint) == previous;
                (p.to_bytes(), holds)
            })
            .collect();
        // Spread the replicas (and so the later fetches) over the members.
        candidates.shuffle(&mut rand::rng());
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        host.busy = false;
        let Some(active) = host.round.as_mut() else {
            return Ok(());
        };
        let term = active.session.term();
        let full = CheckpointTransfer {
            term,
            round,
            hash,
            base: None,
            bytes: checkpoint,
        };
        let delta = delta.map(|(base, bytes)| CheckpointTransfer {
            term,
            round,
            hash,
            base: Some(base),
            bytes,
        });
        tracing::info!(
            round,
            full = full.bytes.len(),
            delta = delta.as_ref().map(|d| d.bytes.len()),
            "replicating the checkpoint to a majority"
        );
        let effects = active.session.on_improved(Replication {
            full,
            delta,
            candidates,
        });
        if !effects.is_empty() {
            active.checkpoint = Some((hash, kept, mean_reward));
        }
        self.host_effects(effects)
    }

    /// A replica target could not take the checkpoint: a spare member gets it.
    pub(super) fn host_replica_failed(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let Some(active) = self.active_mut() else {
            return Ok(());
        };
        let effects = active.session.on_replica_failed(&peer.to_bytes());
        self.host_effects(effects)
    }

    /// A member announced the checkpoint it holds: if that is the one this host replicates,
    /// it counts as a replica.
    pub(super) fn host_holder(
        &mut self,
        peer: PeerId,
        round: u64,
        checkpoint: Option<[u8; 32]>,
    ) -> anyhow::Result<()> {
        let Some(active) = self.active_mut() else {
            return Ok(());
        };
        let replicating = active.checkpoint.map(|(hash, _, _)| hash);
        if checkpoint.is_none() || checkpoint != replicating || round != active.session.round() {
            return Ok(());
        }
        let effects = active.session.on_holder(&peer.to_bytes(), round);
        self.host_effects(effects)
    }

    /// A member holds the checkpoint.
    pub(super) fn host_replica(
        &mut self,
        peer: PeerId,
        term: u64,
        round: u64,
    ) -> anyhow::Result<()> {
        let Some(active) = self.active_mut() else {
            return Ok(());
        };
        match active.session.on_replica(&peer.to_bytes(), term, round) {
            Ok(effects) => self.host_effects(effects),
            Err(e) => {
                tracing::debug!(peer = %peer, "late checkpoint ack: {e}");
                Ok(())
            }
        }
    }

    /// Carries out what the host's session decided, in order.
    fn host_effects(&mut self, effects: Vec<HostEffect>) -> anyhow::Result<()> {
        // Every effect of one batch belongs to the round in progress (a terminal effect may
        // end it part-way through the batch).
        let Some((term, round)) = self
            .active_mut()
            .map(|a| (a.session.term(), a.session.round()))
        else {
            return Ok(());
        };
        for effect in effects {
            match effect {
                HostEffect::Send { to, request } => {
                    let me = self.me_bytes.as_slice() == to.as_slice();
                    if let (Some(active), false) = (self.active_mut(), me) {
                        let size = protocol::wire::encoded_len(&request).unwrap_or(0);
                        active.clock.count(size, true);
                    }
                    let Ok(peer) = PeerId::from_bytes(&to) else {
                        continue;
                    };
                    let pending = match &request {
                        Request::Offer(offer) => Pending::Offer {
                            peer,
                            term,
                            round,
                            attempt: offer.attempt,
                        },
                        Request::Checkpoint(_) => Pending::Checkpoint { peer, term, round },
                        _ => Pending::Other,
                    };
                    self.request(peer, request, pending);
                }
                HostEffect::Phase {
                    phase,
                    participants,
                } => {
                    if let Some(active) = self.active_mut() {
                        active.clock.enter(phase);
                    }
                    self.set_phase(term, round, phase, "host")?;
                    self.announce(term, round, phase, participants);
                }
                HostEffect::Improve { start, sum } => {
                    tracing::info!(round, "secure sum released");
                    if let Some(host) = self.host.as_mut() {
                        host.busy = true;
                    }
                    self.ml.send(Job::Improve { start, sum });
                }
                HostEffect::Completed => self.complete_round()?,
                HostEffect::Abandoned { reason } => {
                    tracing::warn!(term, round, "round abandoned: {reason}");
                    let interval = self.round_interval();
                    if let Some(host) = self.host.as_mut() {
                        host.round = None;
                        host.busy = false;
                        host.next_start = Instant::now() + interval;
                    }
                    self.client.leave_round(round);
                }
            }
        }
        Ok(())
    }

    /// The round counts: a majority holds its checkpoint.
    fn complete_round(&mut self) -> anyhow::Result<()> {
        let interval = self.round_interval();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        let Some(mut active) = host.round.take() else {
            return Ok(());
        };
        host.next_start = Instant::now() + interval;
        let (term, round) = (active.session.term(), active.session.round());
        active.clock.enter(Phase::Complete);
        let seconds = active.started.elapsed().as_secs_f64() + active.generated_in;
        let bytes = active.clock.total_bytes();
        self.store.set_last_completed_round(round)?;
        self.election.set_last_completed_round(round);
        self.client.leave_round(round);
        let (hash, kept, mean_reward) = active.checkpoint.unwrap_or(([0; 32], 0, 0.0));
        let participants: Vec<String> = active
            .session
            .included()
            .iter()
            .filter_map(|p| PeerId::from_bytes(p).ok())
            .map(|p| p.to_string())
            .collect();
        let metrics = crate::metrics::RoundMetrics::Host {
            round,
            term,
            participants,
            kept,
            mean_reward,
            seconds,
            bytes,
            bytes_sent: active.clock.sent,
            bytes_received: active.clock.received,
            phase_seconds: active.clock.seconds,
            phase_bytes: active.clock.bytes,
            checkpoint: crate::store::to_hex(&hash),
            test_acc: active.own_test_acc,
        };
        self.store.set_metrics(&metrics)?;
        if let Some(acc) = active.own_test_acc {
            self.note_round(round, |p| p.test_acc = Some(acc));
        }
        self.last_metrics = Some(metrics);
        tracing::info!(term, round, seconds, bytes, "round complete");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_ticks_count_whole_ticks_of_wall_time_and_carry_the_rest() {
        let t0 = Instant::now();
        let mut wall = WallTicks::new(t0);
        assert_eq!(wall.due(t0 + TICK / 2), 0);
        // A late loop gets every tick it missed at once, and keeps the fraction.
        assert_eq!(wall.due(t0 + TICK * 3 + TICK / 2), 3);
        assert_eq!(wall.due(t0 + TICK * 4), 1);
        assert_eq!(wall.due(t0 + TICK * 4), 0);
        // Time never runs backwards for it.
        assert_eq!(wall.due(t0), 0);
        assert_eq!(wall.due(t0 + TICK * 5), 1);
    }
}
