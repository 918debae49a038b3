//! The host's session of one round attempt: the round bookkeeping and the secure-aggregation
//! aggregator in one sans-IO machine. It takes what arrives (a client's packet, an
//! abstention, a departure, a tick, the improved generator, a replica's acknowledgement) and
//! returns what to do; the stage is the aggregator's own.

use std::collections::BTreeMap;

use privacy::secagg::{AggregatorStage, ClientMessage, SecAggAggregator, Step};

use super::policy::{noise_shares, round_params, RoundPolicy};
use crate::refusal::Refusal;
use crate::round::{HostRound, HostStage, RoundError, Unexpected};
use crate::wire::{
    Aggregation, CheckpointTransfer, Participant, PeerBytes, Phase, Request, RoundOffer,
    SecAggPacket, UploadPacket,
};
use crate::{RoundStart, SumCheck, UploadLayout};

/// What the host's session asks the node to do.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEffect {
    /// Send `request` to `to` (which may be this node itself: its own client side).
    Send {
        /// The participant or member.
        to: PeerBytes,
        /// What to send.
        request: Request,
    },
    /// The round entered `phase`: record it and tell the federation.
    Phase {
        /// The phase entered.
        phase: Phase,
        /// Participants still in the round.
        participants: u32,
    },
    /// The secure sum is out: improve the generator from it (a model job).
    Improve {
        /// The round's synthetic set.
        start: Box<RoundStart>,
        /// The sum of the included clients' uploads.
        sum: Vec<f64>,
    },
    /// A majority holds the checkpoint: the round counts (the session is finished; a
    /// [`HostEffect::Phase`] of `Complete` follows).
    Completed,
    /// The round was given up and the session is finished; nothing more is accepted (a
    /// [`HostEffect::Phase`] of `Abandoned` follows).
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// The improved generator's checkpoint, as the host replicates it: to a majority only (the
/// other members fetch it from any holder), as a delta to members that hold the previous
/// round's checkpoint and in full to the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// The full checkpoint.
    pub full: CheckpointTransfer,
    /// The delta from the previous round's checkpoint, when the host holds that.
    pub delta: Option<CheckpointTransfer>,
    /// Connected members to choose the replicas from, each with whether it holds the delta's
    /// base; the holders are chosen first, in the order given.
    pub candidates: Vec<(PeerBytes, bool)>,
}

/// What replication holds while it waits for the majority.
struct Replicating {
    full: CheckpointTransfer,
    delta: Option<CheckpointTransfer>,
    /// Members not yet sent it, in order of preference.
    spares: std::collections::VecDeque<(PeerBytes, bool)>,
    /// Ticks since the checkpoint went out (silent targets get spares at half the deadline).
    ticks: u64,
    topped_up: bool,
}

impl Replicating {
    /// The request that gives `holds_base`'s member the checkpoint: the delta when it can
    /// apply it.
    fn request(&self, holds_base: bool) -> Request {
        match (&self.delta, holds_base) {
            (Some(delta), true) => Request::Checkpoint(delta.clone()),
            _ => Request::Checkpoint(self.full.clone()),
        }
    }
}

/// Everything a host fixes when it opens a round attempt.
#[derive(Debug, Clone)]
pub struct OpenRound {
    /// The host's term.
    pub term: u64,
    /// This attempt's number in the term.
    pub attempt: u32,
    /// The round's synthetic set.
    pub start: Box<RoundStart>,
    /// The participants in secure-aggregation id order (the host among them when it
    /// contributes).
    pub participants: Vec<Participant>,
    /// The host's own PeerId bytes.
    pub host: PeerBytes,
    /// Members of the federation (the host included), for the replication quorum.
    pub members: usize,
    /// Fresh public seed of the round's neighbourhood graph.
    pub graph_seed: [u8; 32],
    /// How the uploads are summed (nodes always use [`Aggregation::Secure`]).
    pub aggregation: Aggregation,
}

/// What sums the uploads.
enum Summer {
    /// Secure aggregation: the host learns only the sum.
    Secure(Box<SecAggAggregator>),
    /// Uploads in the clear, by participant id (the simulation's cheaper stand-in).
    Plain(BTreeMap<u32, Vec<f32>>),
}

/// The host's side of one round attempt (not `Debug`: the aggregator holds key shares).
pub struct HostSession {
    round: HostRound,
    attempt: u32,
    start: Box<RoundStart>,
    summer: Summer,
    /// Fewest inputs a released sum holds.
    threshold: u32,
    dim: usize,
    host: PeerBytes,
    policy: RoundPolicy,
    included: Vec<PeerBytes>,
    /// What the released sum must fit; `contributors` and `noise_sd` are filled in from
    /// who is in it (`noise_sd` holds one contributor's noise until then).
    sum_check: SumCheck,
    /// How the uploads are summed, in words ([`crate::wire::SecAggSpec::describe`]).
    described: String,
    /// The checkpoint on its way to a majority.
    replicating: Option<Replicating>,
}

impl HostSession {
    /// Opens a round attempt: the offer goes to every participant.
    pub fn open(open: OpenRound, policy: RoundPolicy) -> Result<(Self, Vec<HostEffect>), Refusal> {
        let n = open.participants.len() as u32;
        let layout = UploadLayout::of(&open.start);
        let mut spec = policy.secagg_spec(n, layout, open.graph_seed);
        let (summer, resolution) = match open.aggregation {
            Aggregation::Secure => {
                let params = round_params(open.start.round, &spec, n)?;
                let resolution = params.quantizer.resolution();
                let membership = open.participants.iter().map(|p| p.identity).collect();
                let aggregator = SecAggAggregator::new(params, membership)?;
                (Summer::Secure(Box::new(aggregator)), resolution)
            }
            Aggregation::Plain => {
                // The simulation's plain sum needs every upload, the sum its noise is
                // calibrated to.
                spec.threshold = n;
                (Summer::Plain(BTreeMap::new()), 0.0)
            }
        };
        let first_ticks = match &summer {
            Summer::Secure(a) => policy.ticks(a.stage()),
            Summer::Plain(_) => policy.ticks(AggregatorStage::CollectMaskedInputs),
        };
        let (threshold, dim) = (spec.threshold, spec.dim as usize);
        let described = match open.aggregation {
            Aggregation::Secure => spec.describe(n),
            Aggregation::Plain => format!("plain sum of {n} uploads"),
        };
        let host_contributes = open.participants.iter().any(|p| p.peer == open.host);
        let shares = noise_shares(open.aggregation, threshold, host_contributes, n).max(1);
        let sum_check = SumCheck {
            contributors: 0,
            coordinate_bound: f64::from(spec.bound),
            noise_sd: policy.noise_multiplier * policy.clip / f64::from(shares).sqrt(),
            resolution,
        };
        let offer = RoundOffer {
            term: open.term,
            attempt: open.attempt,
            start: (*open.start).clone(),
            participants: open.participants.clone(),
            aggregation: open.aggregation,
            secagg: spec,
        };
        offer.validate()?;
        let peers: Vec<PeerBytes> = open.participants.into_iter().map(|p| p.peer).collect();
        let round = HostRound::new(
            open.term,
            open.start.round,
            peers.clone(),
            first_ticks,
            RoundPolicy::replicas_needed(open.members),
        );
        let request = Request::Offer(Box::new(offer));
        let mut effects: Vec<HostEffect> = peers
            .into_iter()
            .map(|to| HostEffect::Send {
                to,
                request: request.clone(),
            })
            .collect();
        effects.push(HostEffect::Phase {
            phase: Phase::Learn,
            participants: n,
        });
        let session = Self {
            round,
            attempt: open.attempt,
            start: open.start,
            summer,
            threshold,
            dim,
            host: open.host,
            policy,
            included: Vec::new(),
            sum_check,
            described,
            replicating: None,
        };
        Ok((session, effects))
    }

    /// How this attempt sums the uploads, in words (for logs and status).
    pub fn aggregation(&self) -> &str {
        &self.described
    }

    /// The term of this attempt.
    pub fn term(&self) -> u64 {
        self.round.term()
    }

    /// The round number.
    pub fn round(&self) -> u64 {
        self.round.round()
    }

    /// This attempt's number in the term.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Where the round is.
    pub fn stage(&self) -> HostStage {
        self.round.stage()
    }

    /// The secure-aggregation stage (the aggregator's own state); `None` in a plain round.
    pub fn secagg_stage(&self) -> Option<AggregatorStage> {
        match &self.summer {
            Summer::Secure(a) => Some(a.stage()),
            Summer::Plain(_) => None,
        }
    }

    /// The participants whose inputs are in the released sum (empty before it is out).
    pub fn included(&self) -> &[PeerBytes] {
        &self.included
    }

    /// A participant's secure-aggregation message.
    pub fn on_secagg(
        &mut self,
        from: &[u8],
        packet: SecAggPacket,
    ) -> Result<Vec<HostEffect>, Refusal> {
        self.check_attempt(packet.attempt)?;
        let id = self.round.accept(from, packet.term, packet.round)?;
        let Summer::Secure(aggregator) = &mut self.summer else {
            return Err(RoundError::Unexpected(Unexpected::SecAggMessage).into());
        };
        let msg = ClientMessage::decode(&packet.payload, packet.round)?;
        if msg.sender() != id {
            return Err(Refusal::Invalid(format!(
                "message claims sender {} but comes from participant {id}",
                msg.sender()
            )));
        }
        aggregator.receive(msg)?;
        self.round.heard(id);
        Ok(self.close_if_complete())
    }

    /// A participant's upload in the clear (plain rounds only).
    pub fn on_upload(
        &mut self,
        from: &[u8],
        packet: UploadPacket,
    ) -> Result<Vec<HostEffect>, Refusal> {
        self.check_attempt(packet.attempt)?;
        let id = self.round.accept(from, packet.term, packet.round)?;
        let Summer::Plain(uploads) = &mut self.summer else {
            return Err(RoundError::Unexpected(Unexpected::PlainUpload).into());
        };
        let non_finite = packet.values.iter().filter(|v| !v.is_finite()).count();
        if packet.values.len() != self.dim || non_finite > 0 {
            return Err(Refusal::Invalid(format!(
                "upload of {} values, {non_finite} of them not finite, for a round of \
                 dimension {} (all must be finite)",
                packet.values.len(),
                self.dim
            )));
        }
        if uploads.contains_key(&id) {
            return Err(RoundError::AlreadyDone(packet.round).into());
        }
        uploads.insert(id, packet.values);
        self.round.heard(id);
        Ok(self.close_if_complete())
    }

    /// A participant sits the round out (its budget is spent, or it refused or never got the
    /// offer): no stage waits for it.
    pub fn on_abstain(
        &mut self,
        from: &[u8],
        term: u64,
        round: u64,
        attempt: u32,
    ) -> Result<Vec<HostEffect>, Refusal> {
        self.check_attempt(attempt)?;
        self.round.abstain(from, term, round)?;
        Ok(self.close_if_complete())
    }

    /// A participant lost its last connection: secure aggregation treats it as a dropout
    /// instead of waiting for the stage's deadline.
    pub fn on_peer_gone(&mut self, peer: &[u8]) -> Vec<HostEffect> {
        let (term, round) = (self.round.term(), self.round.round());
        if self.round.stage() != HostStage::Aggregate
            || self.round.abstain(peer, term, round).is_err()
        {
            return Vec::new();
        }
        self.close_if_complete()
    }

    /// One clock tick: a stage whose deadline passed closes with whoever was heard;
    /// replication that ran out of time gives the round up.
    pub fn on_tick(&mut self) -> Vec<HostEffect> {
        let mut effects = self.top_up();
        if !self.round.tick() {
            return effects;
        }
        effects.extend(self.on_deadline());
        effects
    }

    /// A stage's deadline passed.
    fn on_deadline(&mut self) -> Vec<HostEffect> {
        match self.round.stage() {
            HostStage::Aggregate => self.advance(),
            HostStage::Replicate => self.abandon("too few members acknowledged the checkpoint"),
            _ => Vec::new(),
        }
    }

    /// The generator was improved and its checkpoint stored: send it to as many members as
    /// make a majority with the host (holders of the delta's base first) and wait for them.
    pub fn on_improved(&mut self, replication: Replication) -> Vec<HostEffect> {
        let Replication {
            full,
            delta,
            mut candidates,
        } = replication;
        if self.round.stage() != HostStage::Improve || full.round != self.round.round() {
            return Vec::new();
        }
        let delta = delta.filter(|d| d.round == full.round && d.hash == full.hash);
        // Holders of the base first (a stable sort keeps the caller's order within each).
        candidates.sort_by_key(|(_, holds_base)| !holds_base);
        let needed = self.round.replicas_missing();
        let spares = candidates.split_off(needed.min(candidates.len()));
        let state = Replicating {
            full,
            delta,
            spares: spares.into(),
            ticks: 0,
            topped_up: false,
        };
        let mut effects = vec![HostEffect::Phase {
            phase: Phase::Replicate,
            participants: self.included.len() as u32,
        }];
        for (to, holds_base) in &candidates {
            effects.push(HostEffect::Send {
                to: to.clone(),
                request: state.request(*holds_base),
            });
        }
        self.round.replicating(
            self.policy.replication_ticks(),
            candidates.into_iter().map(|(p, _)| p),
        );
        self.replicating = Some(state);
        if self.round.stage() == HostStage::Complete {
            effects.extend(self.completed());
        }
        effects
    }

    /// A replica target could not take the checkpoint (it refused, or the request failed):
    /// the next spare member gets it instead.
    pub fn on_replica_failed(&mut self, peer: &[u8]) -> Vec<HostEffect> {
        if self.round.stage() != HostStage::Replicate || self.round.is_replica(peer) {
            return Vec::new();
        }
        self.send_to_spares(1)
    }

    /// At half the replication deadline, members that are still silent are replaced by as
    /// many spares.
    fn top_up(&mut self) -> Vec<HostEffect> {
        let half = self.policy.replication_ticks().div_ceil(2);
        let Some(r) = self.replicating.as_mut() else {
            return Vec::new();
        };
        if self.round.stage() != HostStage::Replicate || r.topped_up {
            return Vec::new();
        }
        r.ticks += 1;
        if r.ticks < half {
            return Vec::new();
        }
        r.topped_up = true;
        let missing = self.round.replicas_missing();
        self.send_to_spares(missing)
    }

    fn send_to_spares(&mut self, count: usize) -> Vec<HostEffect> {
        let Some(r) = self.replicating.as_mut() else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        for _ in 0..count {
            let Some((to, holds_base)) = r.spares.pop_front() else {
                break;
            };
            self.round.add_replica_target(to.clone());
            effects.push(HostEffect::Send {
                request: r.request(holds_base),
                to,
            });
        }
        effects
    }

    /// A member announced that it holds this round's checkpoint (the node checked the hash):
    /// it counts toward the majority like an acknowledgement, whoever sent it the checkpoint
    /// (an acknowledgement lost or late on a loaded network).
    pub fn on_holder(&mut self, from: &[u8], round: u64) -> Vec<HostEffect> {
        if self.round.stage() != HostStage::Replicate || round != self.round.round() {
            return Vec::new();
        }
        self.round.add_replica_target(from.to_vec());
        let term = self.round.term();
        match self.round.replica(from, term, round) {
            Ok(true) => self.completed(),
            _ => Vec::new(),
        }
    }

    /// A member acknowledged holding the checkpoint of (`term`, `round`); only the members
    /// it was sent to count.
    pub fn on_replica(
        &mut self,
        from: &[u8],
        term: u64,
        round: u64,
    ) -> Result<Vec<HostEffect>, RoundError> {
        Ok(if self.round.replica(from, term, round)? {
            self.completed()
        } else {
            Vec::new()
        })
    }

    /// Gives the round up (host change, failed model work, lost quorum).
    pub fn abandon(&mut self, reason: &str) -> Vec<HostEffect> {
        if matches!(
            self.round.stage(),
            HostStage::Complete | HostStage::Abandoned
        ) {
            return Vec::new();
        }
        self.round.abandon();
        self.replicating = None;
        vec![
            HostEffect::Abandoned {
                reason: reason.to_string(),
            },
            HostEffect::Phase {
                phase: Phase::Abandoned,
                participants: 0,
            },
        ]
    }

    fn check_attempt(&self, attempt: u32) -> Result<(), RoundError> {
        if attempt != self.attempt {
            return Err(RoundError::WrongAttempt {
                got: attempt,
                current: self.attempt,
            });
        }
        Ok(())
    }

    fn close_if_complete(&mut self) -> Vec<HostEffect> {
        if self.round.stage_complete() {
            self.advance()
        } else {
            Vec::new()
        }
    }

    fn completed(&mut self) -> Vec<HostEffect> {
        self.replicating = None;
        vec![
            HostEffect::Completed,
            HostEffect::Phase {
                phase: Phase::Complete,
                participants: self.included.len() as u32,
            },
        ]
    }

    /// Closes the current stage: the next secure-aggregation stage, or the sum.
    fn advance(&mut self) -> Vec<HostEffect> {
        let aggregator = match &mut self.summer {
            Summer::Secure(a) => a,
            Summer::Plain(uploads) => {
                let uploads = std::mem::take(uploads);
                return self.plain_sum(uploads);
            }
        };
        let step = match aggregator.advance() {
            Ok(step) => step,
            Err(e) => return self.abandon(&format!("secure aggregation: {e}")),
        };
        let stage = aggregator.stage();
        match step {
            Step::Send(messages) => {
                let ids: Vec<u32> = messages.iter().map(|(id, _)| *id).collect();
                self.round
                    .advance(Some(self.policy.ticks(stage)), ids.iter().copied());
                // The masked inputs are in once the unmask stage opens: learning is over.
                let unmasking = stage == AggregatorStage::CollectUnmask;
                if unmasking {
                    if let Err(e) = self
                        .round
                        .check_contributors(&self.host, ids.iter().copied())
                    {
                        return self.abandon(&format!("not unmasking: {e}"));
                    }
                }
                let (term, round) = (self.round.term(), self.round.round());
                let mut effects = Vec::with_capacity(messages.len() + 1);
                if unmasking {
                    effects.push(HostEffect::Phase {
                        phase: Phase::Aggregate,
                        participants: ids.len() as u32,
                    });
                }
                for (id, msg) in messages {
                    if let Some(to) = self.round.participants().get(id as usize) {
                        effects.push(HostEffect::Send {
                            to: to.clone(),
                            request: Request::SecAgg(SecAggPacket {
                                term,
                                round,
                                attempt: self.attempt,
                                payload: msg.encode(round),
                            }),
                        });
                    }
                }
                effects
            }
            Step::Finished(output) => self.released(output.included, output.values),
        }
    }

    /// Sums a plain round's uploads, if enough arrived and the host could not single one out.
    fn plain_sum(&mut self, uploads: BTreeMap<u32, Vec<f32>>) -> Vec<HostEffect> {
        if uploads.len() < self.threshold as usize {
            return self.abandon(&format!(
                "{} of the {} uploads a sum needs arrived",
                uploads.len(),
                self.threshold
            ));
        }
        if let Err(e) = self
            .round
            .check_contributors(&self.host, uploads.keys().copied())
        {
            return self.abandon(&format!("not summing: {e}"));
        }
        let mut sum = vec![0f64; self.dim];
        for values in uploads.values() {
            for (s, v) in sum.iter_mut().zip(values) {
                *s += f64::from(*v);
            }
        }
        self.released(uploads.into_keys().collect(), sum)
    }

    /// The sum of `included`'s inputs is out: improve the generator from it, unless no set of
    /// that many honest contributors could have produced it (then the round is abandoned and
    /// nothing it said is used).
    fn released(&mut self, included: Vec<u32>, sum: Vec<f64>) -> Vec<HostEffect> {
        let check = SumCheck {
            contributors: included.len(),
            noise_sd: self.sum_check.noise_sd * (included.len() as f64).sqrt(),
            ..self.sum_check
        };
        let layout = UploadLayout::of(&self.start);
        if let Err(e) = check.check(&layout, &sum, &self.start.prompt_class) {
            return self.abandon(&format!("impossible aggregate: {e}"));
        }
        self.round.advance(None, []);
        self.included = included
            .iter()
            .filter_map(|&id| self.round.participants().get(id as usize).cloned())
            .collect();
        vec![
            HostEffect::Phase {
                phase: Phase::Improve,
                participants: self.included.len() as u32,
            },
            HostEffect::Improve {
                start: self.start.clone(),
                sum,
            },
        ]
    }
}
