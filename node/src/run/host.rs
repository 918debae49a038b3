//! The host's side of a round: sample, invite, run secure aggregation to the sum, improve
//! the generator, replicate the checkpoint to a majority, and only then count the round.

use std::collections::BTreeMap;
use std::time::Instant;

use libp2p::PeerId;
use privacy::secagg::{ClientMessage, ClipBound, Quantizer, RoundParams, SecAggAggregator, Step};
use protocol::round::{HostRound, HostStage};
use protocol::wire::{
    CheckpointTransfer, Participant, Phase, Request, RoundOffer, SecAggPacket, SecAggSpec,
};
use protocol::RoundStart;
use rand::RngCore;

use super::ml::{Job, Outcome};
use super::{Node, Pending, TICK};

/// The per-coordinate bound of the fixed-point encoding, in units of the DP clip: clipped
/// uploads plus their share of Gaussian noise stay inside it except with negligible probability.
const BOUND_IN_CLIPS: f32 = 16.0;

/// Seconds and bytes of a round, per phase as the host sees it.
#[derive(Debug, Clone)]
struct PhaseClock {
    phase: Phase,
    since: Instant,
    seconds: BTreeMap<Phase, f64>,
    bytes: BTreeMap<Phase, u64>,
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
        }
    }

    /// Closes the current phase and opens `next`.
    fn enter(&mut self, next: Phase) {
        *self.seconds.entry(self.phase).or_default() += self.since.elapsed().as_secs_f64();
        self.phase = next;
        self.since = Instant::now();
    }

    /// Counts `n` bytes sent or received in `phase`.
    fn count(&mut self, phase: Phase, n: usize) {
        *self.bytes.entry(phase).or_default() += n as u64;
    }

    fn total_bytes(&self) -> u64 {
        self.bytes.values().sum()
    }
}

/// A round attempt in progress.
pub(super) struct ActiveRound {
    machine: HostRound,
    attempt: u32,
    start: Box<RoundStart>,
    aggregator: SecAggAggregator,
    started: Instant,
    clock: PhaseClock,
    included: Vec<String>,
    generated_in: f64,
    /// (hash, kept samples, mean reward) once the generator was improved.
    checkpoint: Option<([u8; 32], usize, f32)>,
    /// This node's own test accuracy after learning in this round (it contributes too).
    own_test_acc: Option<f64>,
}

/// The host role: present while this node holds the term's leadership.
pub(super) struct HostSide {
    term: u64,
    /// Attempts made so far in this term (each offer gets the next number).
    attempts: u32,
    /// Seconds the last synthetic set took to sample.
    generated_in: f64,
    ready: bool,
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

    /// Gives up the round in progress; clients' spends stay recorded in their ledgers.
    pub(super) fn abandon_round(&mut self, reason: &str) -> anyhow::Result<()> {
        let interval = self.round_interval();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        host.busy = false;
        host.next_start = Instant::now() + interval;
        if let Some(mut active) = host.round.take() {
            active.machine.abandon();
            let (term, round) = (active.machine.term(), active.machine.round());
            tracing::warn!(term, round, "round abandoned: {reason}");
            self.client.leave_round(round);
            self.set_phase(term, round, Phase::Abandoned, "host")?;
            self.announce(term, round, Phase::Abandoned, 0);
        }
        Ok(())
    }

    fn round_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cfg.round.round_interval_secs)
    }

    fn stage_ticks(&self) -> u64 {
        (self.cfg.round.stage_timeout_secs * 1000 / TICK.as_millis() as u64).max(1)
    }

    /// Starts the next round when due; closes a stage whose deadline passed.
    pub(super) fn host_tick(&mut self) -> anyhow::Result<()> {
        let last = self.store.last_completed_round()?;
        let limit = self.cfg.round.rounds;
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        if let Some(active) = host.round.as_mut() {
            if active.machine.tick() {
                match active.machine.stage() {
                    HostStage::Aggregate(_) => return self.advance_stage(),
                    HostStage::Replicate => {
                        return self.abandon_round("too few members acknowledged the checkpoint")
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if !host.ready || host.busy || Instant::now() < host.next_start {
            return Ok(());
        }
        if limit > 0 && last >= limit {
            return Ok(());
        }
        let live = self.live_contributors().len();
        let min = self.min_contributors();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        if live < min {
            if self.ticks.is_multiple_of(50) {
                tracing::info!(
                    live,
                    min,
                    "waiting for enough contributors (this node and {} other members)",
                    min - 1
                );
            }
            return Ok(());
        }
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
                host.busy = false;
                host.next_start = Instant::now() + interval;
                Ok(())
            }
            Outcome::Generated { start, seconds } => {
                tracing::info!(round = start.round, seconds, "synthetic set sampled");
                host.generated_in = seconds;
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

    /// Invites the live clients to the round just sampled.
    fn open_round(&mut self, start: Box<RoundStart>) -> anyhow::Result<()> {
        let interval = self.round_interval();
        let stage = self.stage_ticks();
        let clients = self.live_contributors();
        let min = self.min_contributors();
        let members = self.election.members().len();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        let term = host.term;
        host.busy = false;
        if clients.len() < min {
            tracing::info!(
                round = start.round,
                live = clients.len(),
                min,
                "waiting for enough contributors"
            );
            host.next_start = Instant::now() + interval.max(std::time::Duration::from_secs(1));
            return Ok(());
        }
        let n = clients.len() as u32;
        let participants: Vec<Participant> = clients
            .iter()
            .map(|(peer, identity)| Participant {
                peer: peer.to_bytes(),
                identity: *identity,
            })
            .collect();
        let mut graph_seed = [0u8; 32];
        rand::rng().fill_bytes(&mut graph_seed);
        // The complete graph (the original SecAgg) for small federations.
        let neighbors = (n - 1).next_multiple_of(2);
        let threshold = RoundParams::min_threshold(n - 1).max(2);
        let max_clients = n.next_power_of_two().max(8);
        let spec = SecAggSpec {
            graph_seed,
            neighbors,
            threshold,
            dim: (start.samples() * start.classes as usize + start.classes as usize) as u32,
            bound: BOUND_IN_CLIPS * self.cfg.privacy.clip as f32,
            max_clients,
        };
        let params = round_params(start.round, &spec, n)?;
        let membership: Vec<[u8; 32]> = participants.iter().map(|p| p.identity).collect();
        let aggregator = SecAggAggregator::new(params, membership)?;
        let attempt = host.attempts;
        host.attempts += 1;
        let offer = RoundOffer {
            term,
            attempt,
            start: (*start).clone(),
            participants: participants.clone(),
            secagg: spec,
        };
        offer.validate()?;
        let round = start.round;
        // Learning happens while the masked-input stage is open: give it four stages' time.
        let ticks = [stage, stage, stage * 4, stage];
        let machine = HostRound::new(
            term,
            round,
            participants.iter().map(|p| p.peer.clone()).collect(),
            ticks,
            members / 2,
        );
        let request = Request::Offer(Box::new(offer));
        let size = protocol::wire::encode(&request)
            .map(|b| b.len())
            .unwrap_or(0) as u64;
        let mut clock = PhaseClock::new(Phase::Learn, host.generated_in);
        clock.count(Phase::Generate, size as usize * n as usize);
        host.round = Some(ActiveRound {
            machine,
            attempt,
            start,
            aggregator,
            started: Instant::now(),
            clock,
            included: Vec::new(),
            generated_in: host.generated_in,
            checkpoint: None,
            own_test_acc: None,
        });
        for peer in clients.keys() {
            self.request(
                *peer,
                request.clone(),
                Pending::Offer {
                    peer: *peer,
                    term,
                    round,
                    attempt,
                },
            );
        }
        tracing::info!(term, round, participants = n, threshold, "round offered");
        self.set_phase(term, round, Phase::Learn, "host")?;
        self.announce(term, round, Phase::Learn, n);
        Ok(())
    }

    /// This node's own client side learned in round `round` and reached `test_acc`.
    pub(super) fn own_contribution(&mut self, round: u64, test_acc: f64) {
        if let Some(active) = self.host.as_mut().and_then(|h| h.round.as_mut()) {
            if active.machine.round() == round {
                active.own_test_acc = Some(test_acc);
            }
        }
    }

    /// A client's secure-aggregation message.
    pub(super) fn host_secagg(&mut self, peer: PeerId, packet: SecAggPacket) -> Result<(), String> {
        let ready = {
            let Some(active) = self.host.as_mut().and_then(|h| h.round.as_mut()) else {
                return Err("no round in progress".into());
            };
            if packet.attempt != active.attempt {
                return Err(format!(
                    "message of attempt {} (current {})",
                    packet.attempt, active.attempt
                ));
            }
            let id = active
                .machine
                .accept(&peer.to_bytes(), packet.term, packet.round)
                .map_err(|e| e.to_string())?;
            let msg =
                ClientMessage::decode(&packet.payload, packet.round).map_err(|e| e.to_string())?;
            if msg.sender() != id {
                return Err(format!(
                    "message claims sender {} but comes from {id}",
                    msg.sender()
                ));
            }
            let phase = active.clock.phase;
            active.clock.count(phase, packet.payload.len());
            active.aggregator.receive(msg).map_err(|e| e.to_string())?;
            active.machine.heard(id);
            active.machine.stage_complete()
        };
        if ready {
            self.advance_stage().map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// A client sits the round out (budget spent) or refused the offer.
    pub(super) fn host_abstain(
        &mut self,
        peer: PeerId,
        term: u64,
        round: u64,
        attempt: u32,
    ) -> Result<(), String> {
        let ready = {
            let Some(active) = self.host.as_mut().and_then(|h| h.round.as_mut()) else {
                return Err("no round in progress".into());
            };
            if attempt != active.attempt {
                return Err(format!(
                    "abstention from attempt {attempt} (current {})",
                    active.attempt
                ));
            }
            active
                .machine
                .abstain(&peer.to_bytes(), term, round)
                .map_err(|e| e.to_string())?;
            tracing::info!(peer = %peer, round, "client sits the round out");
            active.machine.stage_complete()
        };
        if ready {
            self.advance_stage().map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// A participant lost its last connection: the round stops waiting for it (secure
    /// aggregation treats it as a dropout) instead of running into the stage deadline.
    pub(super) fn participant_gone(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let Some(active) = self.host.as_mut().and_then(|h| h.round.as_mut()) else {
            return Ok(());
        };
        let (term, round) = (active.machine.term(), active.machine.round());
        if !matches!(active.machine.stage(), HostStage::Aggregate(_))
            || active
                .machine
                .abstain(&peer.to_bytes(), term, round)
                .is_err()
        {
            return Ok(());
        }
        tracing::warn!(peer = %peer, round, "a participant disconnected: not waiting for it");
        if active.machine.stage_complete() {
            self.advance_stage()?;
        }
        Ok(())
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

    /// Closes the current secure-aggregation stage.
    fn advance_stage(&mut self) -> anyhow::Result<()> {
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        let Some(active) = host.round.as_mut() else {
            return Ok(());
        };
        let (term, round, attempt) = (
            active.machine.term(),
            active.machine.round(),
            active.attempt,
        );
        match active.aggregator.advance() {
            Ok(Step::Send(messages)) => {
                let ids: Vec<u32> = messages.iter().map(|(id, _)| *id).collect();
                active.machine.advance(ids.iter().copied());
                // The masked inputs are in once the unmask stage opens: learning is over.
                let unmasking = active.machine.stage() == HostStage::Aggregate(3);
                if unmasking {
                    if let Err(e) = active.machine.check_contributors(&self.me_bytes, ids) {
                        return self.abandon_round(&format!("not unmasking: {e}"));
                    }
                    active.clock.enter(Phase::Aggregate);
                }
                let phase = active.clock.phase;
                let participants = active.machine.participants().to_vec();
                let mut out = Vec::new();
                for (id, msg) in messages {
                    let payload = msg.encode(round);
                    active.clock.count(phase, payload.len());
                    if let Some(peer) = participants
                        .get(id as usize)
                        .and_then(|p| PeerId::from_bytes(p).ok())
                    {
                        out.push((peer, payload));
                    }
                }
                let n = out.len() as u32;
                for (peer, payload) in out {
                    self.request(
                        peer,
                        Request::SecAgg(SecAggPacket {
                            term,
                            round,
                            attempt,
                            payload,
                        }),
                        Pending::Other,
                    );
                }
                if unmasking {
                    self.set_phase(term, round, Phase::Aggregate, "host")?;
                    self.announce(term, round, Phase::Aggregate, n);
                }
                Ok(())
            }
            Ok(Step::Finished(output)) => {
                active.machine.advance([]);
                active.clock.enter(Phase::Improve);
                let participants = active.machine.participants();
                active.included = output
                    .included
                    .iter()
                    .filter_map(|&id| participants.get(id as usize))
                    .filter_map(|p| PeerId::from_bytes(p).ok())
                    .map(|p| p.to_string())
                    .collect();
                tracing::info!(
                    round,
                    included = output.included.len(),
                    "secure sum released"
                );
                let start = active.start.clone();
                host.busy = true;
                self.set_phase(term, round, Phase::Improve, "host")?;
                self.announce(term, round, Phase::Improve, output.included.len() as u32);
                self.ml.send(Job::Improve {
                    start,
                    sum: output.values,
                });
                Ok(())
            }
            Err(e) => self.abandon_round(&format!("secure aggregation: {e}")),
        }
    }

    /// Stores the new checkpoint and sends it to every connected member.
    fn replicate(
        &mut self,
        round: u64,
        checkpoint: Vec<u8>,
        kept: usize,
        mean_reward: f32,
    ) -> anyhow::Result<()> {
        let stage = self.stage_ticks();
        let hash = self.store.put_checkpoint(round, &checkpoint)?;
        let targets: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .copied()
            .filter(|p| self.is_member(p))
            .collect();
        let Some(host) = self.host.as_mut() else {
            return Ok(());
        };
        host.busy = false;
        let Some(active) = host.round.as_mut() else {
            return Ok(());
        };
        if active.machine.round() != round {
            return Ok(());
        }
        let term = active.machine.term();
        active.machine.replicating(stage);
        active.clock.enter(Phase::Replicate);
        active
            .clock
            .count(Phase::Replicate, checkpoint.len() * targets.len());
        active.checkpoint = Some((hash, kept, mean_reward));
        let done = active.machine.stage() == HostStage::Complete;
        self.set_phase(term, round, Phase::Replicate, "host")?;
        for peer in targets {
            self.request(
                peer,
                Request::Checkpoint(CheckpointTransfer {
                    term,
                    round,
                    hash,
                    bytes: checkpoint.clone(),
                }),
                Pending::Checkpoint { peer, term, round },
            );
        }
        if done {
            self.complete_round()?;
        }
        Ok(())
    }

    /// A member holds the checkpoint.
    pub(super) fn host_replica(
        &mut self,
        peer: PeerId,
        term: u64,
        round: u64,
    ) -> anyhow::Result<()> {
        let Some(active) = self.host.as_mut().and_then(|h| h.round.as_mut()) else {
            return Ok(());
        };
        match active.machine.replica(&peer.to_bytes(), term, round) {
            Ok(true) => self.complete_round(),
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::debug!(peer = %peer, "late checkpoint ack: {e}");
                Ok(())
            }
        }
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
        let (term, round) = (active.machine.term(), active.machine.round());
        active.clock.enter(Phase::Complete);
        let seconds = active.started.elapsed().as_secs_f64() + active.generated_in;
        let bytes = active.clock.total_bytes();
        self.store.set_last_completed_round(round)?;
        self.election.set_last_completed_round(round);
        self.client.leave_round(round);
        let (hash, kept, mean_reward) = active.checkpoint.unwrap_or(([0; 32], 0, 0.0));
        let metrics = crate::metrics::RoundMetrics::Host {
            round,
            term,
            participants: active.included.clone(),
            kept,
            mean_reward,
            seconds,
            bytes,
            phase_seconds: active.clock.seconds,
            phase_bytes: active.clock.bytes,
            checkpoint: crate::store::to_hex(&hash),
            test_acc: active.own_test_acc,
        };
        self.store.set_metrics(&metrics)?;
        self.last_metrics = Some(metrics);
        tracing::info!(term, round, seconds, bytes, "round complete");
        self.set_phase(term, round, Phase::Complete, "host")?;
        self.announce(term, round, Phase::Complete, active.included.len() as u32);
        Ok(())
    }
}

/// The secure-aggregation parameters of a round from the offer's spec.
pub(super) fn round_params(round: u64, spec: &SecAggSpec, n: u32) -> anyhow::Result<RoundParams> {
    Ok(RoundParams {
        round,
        graph_seed: spec.graph_seed,
        num_clients: n,
        neighbors: spec.neighbors,
        threshold: spec.threshold,
        dim: spec.dim,
        quantizer: Quantizer::new(ClipBound::LInf(spec.bound), spec.max_clients)?,
    })
}
