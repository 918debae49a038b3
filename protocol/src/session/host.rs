//! The host's session of one round attempt: the round bookkeeping and the secure-aggregation
//! aggregator in one sans-IO machine. It takes what arrives (a client's packet, an
//! abstention, a departure, a tick, the improved generator, a replica's acknowledgement) and
//! returns what to do; the stage is the aggregator's own.

use privacy::secagg::{AggregatorStage, ClientMessage, SecAggAggregator, Step};

use super::policy::{round_params, RoundPolicy};
use crate::refusal::Refusal;
use crate::round::{HostRound, HostStage, RoundError};
use crate::wire::{
    CheckpointTransfer, Participant, PeerBytes, Phase, Request, RoundOffer, SecAggPacket,
};
use crate::{RoundStart, UploadLayout};

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
}

/// The host's side of one round attempt (not `Debug`: the aggregator holds key shares).
pub struct HostSession {
    round: HostRound,
    attempt: u32,
    start: Box<RoundStart>,
    aggregator: SecAggAggregator,
    host: PeerBytes,
    policy: RoundPolicy,
    included: Vec<PeerBytes>,
}

impl HostSession {
    /// Opens a round attempt: the offer goes to every participant.
    pub fn open(open: OpenRound, policy: RoundPolicy) -> Result<(Self, Vec<HostEffect>), Refusal> {
        let n = open.participants.len() as u32;
        let layout = UploadLayout {
            samples: open.start.samples(),
            classes: open.start.classes as usize,
        };
        let spec = policy.secagg_spec(n, layout, open.graph_seed);
        let params = round_params(open.start.round, &spec, n)?;
        let membership = open.participants.iter().map(|p| p.identity).collect();
        let aggregator = SecAggAggregator::new(params, membership)?;
        let offer = RoundOffer {
            term: open.term,
            attempt: open.attempt,
            start: (*open.start).clone(),
            participants: open.participants.clone(),
            secagg: spec,
        };
        offer.validate()?;
        let peers: Vec<PeerBytes> = open.participants.into_iter().map(|p| p.peer).collect();
        let round = HostRound::new(
            open.term,
            open.start.round,
            peers.clone(),
            policy.ticks(aggregator.stage()),
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
            aggregator,
            host: open.host,
            policy,
            included: Vec::new(),
        };
        Ok((session, effects))
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

    /// The secure-aggregation stage (the aggregator's own state).
    pub fn secagg_stage(&self) -> AggregatorStage {
        self.aggregator.stage()
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
        let msg = ClientMessage::decode(&packet.payload, packet.round)?;
        if msg.sender() != id {
            return Err(Refusal::Invalid(format!(
                "message claims sender {} but comes from participant {id}",
                msg.sender()
            )));
        }
        self.aggregator.receive(msg)?;
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
        if !self.round.tick() {
            return Vec::new();
        }
        match self.round.stage() {
            HostStage::Aggregate => self.advance(),
            HostStage::Replicate => self.abandon("too few members acknowledged the checkpoint"),
            _ => Vec::new(),
        }
    }

    /// The generator was improved and its checkpoint stored: send it to `members` and wait
    /// for a majority to hold it.
    pub fn on_improved(
        &mut self,
        checkpoint: CheckpointTransfer,
        members: Vec<PeerBytes>,
    ) -> Vec<HostEffect> {
        if self.round.stage() != HostStage::Improve || checkpoint.round != self.round.round() {
            return Vec::new();
        }
        self.round
            .replicating(self.policy.replication_ticks(), members.iter().cloned());
        let mut effects = vec![HostEffect::Phase {
            phase: Phase::Replicate,
            participants: self.included.len() as u32,
        }];
        let request = Request::Checkpoint(checkpoint);
        effects.extend(members.into_iter().map(|to| HostEffect::Send {
            to,
            request: request.clone(),
        }));
        if self.round.stage() == HostStage::Complete {
            effects.extend(self.completed());
        }
        effects
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
        vec![
            HostEffect::Completed,
            HostEffect::Phase {
                phase: Phase::Complete,
                participants: self.included.len() as u32,
            },
        ]
    }

    /// Closes the current secure-aggregation stage.
    fn advance(&mut self) -> Vec<HostEffect> {
        let step = match self.aggregator.advance() {
            Ok(step) => step,
            Err(e) => return self.abandon(&format!("secure aggregation: {e}")),
        };
        match step {
            Step::Send(messages) => {
                let stage = self.aggregator.stage();
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
            Step::Finished(output) => {
                self.round.advance(None, []);
                self.included = output
                    .included
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
                        sum: output.values,
                    },
                ]
            }
        }
    }
}
