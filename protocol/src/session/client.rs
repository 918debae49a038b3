//! A client's session across round attempts: the client bookkeeping, the secure-aggregation
//! client and the attempt's parameters in one sans-IO machine. It takes the host's offer and
//! packets and the outcomes of its own work (learning, the privatised release) and returns
//! what to do.

use privacy::secagg::{SecAggClient, ServerMessage};
use ring::signature::Ed25519KeyPair;

use super::policy::{noise_shares, round_params};
use crate::messages::AbstainReason;
use crate::refusal::Refusal;
use crate::round::client::ClientView;
use crate::round::{ClientRound, OfferDecision, SecAggDelivery};
use crate::round::{RoundError, Unexpected};
use crate::wire::{Aggregation, PeerBytes, Phase, Request, RoundOffer, SecAggPacket, UploadPacket};
use crate::RoundStart;

/// What a client's session asks the node to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEffect {
    /// Send `request` to the round's host (which may be this node itself).
    Send {
        /// The host.
        to: PeerBytes,
        /// What to send.
        request: Request,
    },
    /// The client side entered `phase` of (`term`, `round`): record it.
    Phase {
        /// The host's term.
        term: u64,
        /// The round.
        round: u64,
        /// The phase entered.
        phase: Phase,
    },
    /// Learn on the synthetic set and judge it (a model job), then answer with
    /// [`ClientSession::release_plan`] and [`ClientSession::on_released`].
    Learn {
        /// The host's term.
        term: u64,
        /// The attempt.
        attempt: u32,
        /// The round's synthetic set.
        start: Box<RoundStart>,
    },
}

/// What the privatised release of this attempt's upload must fit: the parameters the noise
/// is calibrated to and the encoding's bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleasePlan {
    /// The host's term.
    pub term: u64,
    /// The round.
    pub round: u64,
    /// The attempt.
    pub attempt: u32,
    /// Participants invited.
    pub participants: u32,
    /// Noise shares of a released sum the host does not know (what the noise is calibrated to).
    pub noise_shares: u32,
    /// Upload length.
    pub dim: usize,
    /// Per-coordinate bound of the encoding: noised values are clamped to it.
    pub bound: f32,
}

/// What this client holds for the attempt it is in, beyond the bookkeeping's (term, round,
/// attempt, host), which [`ClientRound`] keeps.
struct Attempt {
    participants: u32,
    noise_shares: u32,
    dim: usize,
    bound: f32,
    /// The secure-aggregation client; `None` in a plain round.
    secagg: Option<SecAggClient>,
}

/// A client's side of the rounds it is invited to (not `Debug`: it holds secret keys).
pub struct ClientSession {
    round: ClientRound<ServerMessage>,
    attempt: Option<Attempt>,
    /// Refuse offers whose uploads travel in the clear (every real node does).
    require_secure: bool,
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientSession {
    /// A client in no round that takes part only in securely aggregated rounds.
    pub fn new() -> Self {
        Self {
            round: ClientRound::new(),
            attempt: None,
            require_secure: true,
        }
    }

    /// A client that also takes part in plain rounds (the in-process simulation's).
    pub fn accepting_plain() -> Self {
        Self {
            require_secure: false,
            ..Self::new()
        }
    }

    /// (term, round, attempt) of the attempt this client is in.
    pub fn engaged(&self) -> Option<(u64, u64, u32)> {
        let (term, round, _) = self.round.engaged()?;
        Some((term, round, self.round.attempt()?))
    }

    /// A host's offer. `view` is what it is checked against; `answered` says whether this
    /// node already answered this attempt (from its durable store: a restart must not answer
    /// twice); `identity` signs this node's secure-aggregation keys, drawn from `rng`.
    pub fn on_offer<R: rand::CryptoRng + ?Sized>(
        &mut self,
        from: &[u8],
        offer: RoundOffer,
        view: ClientView<'_>,
        answered: bool,
        identity: &Ed25519KeyPair,
        rng: &mut R,
    ) -> Result<Vec<ClientEffect>, Refusal> {
        offer.validate()?;
        if offer.aggregation == Aggregation::Plain && self.require_secure {
            return Err(Refusal::Invalid(
                "this node sends its upload only through secure aggregation".into(),
            ));
        }
        let OfferDecision::Join { id } = self.round.offer(from, &offer, view, answered)? else {
            return Ok(Vec::new());
        };
        let (term, round, attempt) = (offer.term, offer.start.round, offer.attempt);
        let n = offer.participants.len() as u32;
        let mut effects = Vec::with_capacity(3);
        let secagg = match offer.aggregation {
            Aggregation::Plain => None,
            Aggregation::Secure => {
                let joined = round_params(round, &offer.secagg, n).and_then(|params| {
                    let membership: Vec<[u8; 32]> =
                        offer.participants.iter().map(|p| p.identity).collect();
                    SecAggClient::new(params, id, identity, &membership, rng)
                });
                let (secagg, advert) = match joined {
                    Ok(joined) => joined,
                    Err(e) => {
                        self.leave();
                        return Err(e.into());
                    }
                };
                effects.push(ClientEffect::Send {
                    to: from.to_vec(),
                    request: Request::SecAgg(SecAggPacket {
                        term,
                        round,
                        attempt,
                        payload: advert.encode(round),
                    }),
                });
                Some(secagg)
            }
        };
        let host_contributes = offer.participants.iter().any(|p| p.peer == from);
        let noise_shares = noise_shares(
            offer.aggregation,
            offer.secagg.threshold,
            host_contributes,
            n,
        );
        self.attempt = Some(Attempt {
            participants: n,
            noise_shares,
            dim: offer.secagg.dim as usize,
            bound: offer.secagg.bound,
            secagg,
        });
        effects.extend([
            ClientEffect::Phase {
                term,
                round,
                phase: Phase::Learn,
            },
            ClientEffect::Learn {
                term,
                attempt,
                start: Box::new(offer.start),
            },
        ]);
        Ok(effects)
    }

    /// A host's secure-aggregation message: answered now, or held until the upload is set.
    pub fn on_secagg(
        &mut self,
        from: &[u8],
        packet: SecAggPacket,
    ) -> Result<Vec<ClientEffect>, Refusal> {
        let current = self.engaged().map(|(_, _, a)| a);
        if current != Some(packet.attempt) {
            return Err(match current {
                Some(current) => crate::round::RoundError::WrongAttempt {
                    got: packet.attempt,
                    current,
                }
                .into(),
                None => Refusal::NoRound,
            });
        }
        let msg = ServerMessage::decode(&packet.payload, packet.round)?;
        let needs_input = matches!(msg, ServerMessage::Shares(_));
        match self
            .round
            .secagg(from, packet.term, packet.round, msg, needs_input)?
        {
            SecAggDelivery::Now(messages) => self.deliver(messages),
            SecAggDelivery::Held => Ok(Vec::new()),
        }
    }

    /// What the release of (`term`, `round`, `attempt`)'s upload must fit; `None` when this
    /// client already left that attempt (its learning finished too late).
    pub fn release_plan(&self, term: u64, round: u64, attempt: u32) -> Option<ReleasePlan> {
        let a = self.attempt.as_ref()?;
        (self.engaged()? == (term, round, attempt)).then_some(ReleasePlan {
            term,
            round,
            attempt,
            participants: a.participants,
            noise_shares: a.noise_shares,
            dim: a.dim,
            bound: a.bound,
        })
    }

    /// The privatised upload of the current attempt (charged, noised, clamped): mask it and
    /// answer the messages that waited for it.
    pub fn on_released(
        &mut self,
        plan: &ReleasePlan,
        noised: &[f32],
    ) -> Result<Vec<ClientEffect>, Refusal> {
        if self
            .release_plan(plan.term, plan.round, plan.attempt)
            .as_ref()
            != Some(plan)
        {
            return Err(Refusal::NoRound);
        }
        let Some(a) = self.attempt.as_mut() else {
            return Err(Refusal::NoRound);
        };
        let mut effects = vec![ClientEffect::Phase {
            term: plan.term,
            round: plan.round,
            phase: Phase::Aggregate,
        }];
        match a.secagg.as_mut() {
            Some(secagg) => {
                secagg.set_input(noised)?;
                let held = self.round.input_ready(plan.term, plan.round);
                effects.extend(self.deliver(held)?);
            }
            None => {
                let host = self.round.host().ok_or(Refusal::NoRound)?.to_vec();
                effects.push(ClientEffect::Send {
                    to: host,
                    request: Request::Upload(UploadPacket {
                        term: plan.term,
                        round: plan.round,
                        attempt: plan.attempt,
                        values: noised.to_vec(),
                    }),
                });
            }
        }
        Ok(effects)
    }

    /// This node releases nothing in this attempt (its budget cannot pay, or its disk cannot
    /// hold the ledger entry): tell the host why and leave.
    pub fn sit_out(&mut self, plan: &ReleasePlan, reason: AbstainReason) -> Vec<ClientEffect> {
        if self
            .release_plan(plan.term, plan.round, plan.attempt)
            .as_ref()
            != Some(plan)
        {
            return Vec::new();
        }
        let Some(host) = self.round.host().map(<[u8]>::to_vec) else {
            return Vec::new();
        };
        self.leave();
        vec![
            ClientEffect::Send {
                to: host,
                request: Request::Abstain {
                    term: plan.term,
                    round: plan.round,
                    attempt: plan.attempt,
                    reason,
                },
            },
            ClientEffect::Phase {
                term: plan.term,
                round: plan.round,
                phase: Phase::Abandoned,
            },
        ]
    }

    /// Leaves the attempt in progress (completed, host changed, failed); returns the
    /// (term, round) it was in.
    pub fn leave(&mut self) -> Option<(u64, u64)> {
        let left = self.engaged().map(|(t, r, _)| (t, r));
        self.round.leave();
        self.attempt = None;
        left
    }

    /// Round `round` completed or was abandoned: leave it if this client is in it.
    pub fn leave_round(&mut self, round: u64) {
        if self.engaged().is_some_and(|(_, r, _)| r == round) {
            self.leave();
        }
    }

    /// Checks a checkpoint transfer of (`term`, `round`) from `from`.
    pub fn check_checkpoint(
        &self,
        from: &[u8],
        term: u64,
        round: u64,
        view: ClientView<'_>,
    ) -> Result<(), Refusal> {
        Ok(self.round.checkpoint(from, term, round, view)?)
    }

    fn deliver(&mut self, messages: Vec<ServerMessage>) -> Result<Vec<ClientEffect>, Refusal> {
        let (Some((term, round, attempt)), Some(host)) = (self.engaged(), self.round.host()) else {
            return Err(Refusal::NoRound);
        };
        let host = host.to_vec();
        let Some(a) = self.attempt.as_mut() else {
            return Err(Refusal::NoRound);
        };
        let Some(secagg) = a.secagg.as_mut() else {
            return Err(RoundError::Unexpected(Unexpected::SecAggMessage).into());
        };
        let mut effects = Vec::with_capacity(messages.len());
        for msg in messages {
            let reply = secagg.handle(msg)?;
            effects.push(ClientEffect::Send {
                to: host.clone(),
                request: Request::SecAgg(SecAggPacket {
                    term,
                    round,
                    attempt,
                    payload: reply.encode(round),
                }),
            });
        }
        Ok(effects)
    }
}
