//! A client's side of a round: check the offer, learn and judge on the model thread, charge
//! the ledger, noise, mask, and answer each secure-aggregation stage; keep the checkpoint.

use std::collections::HashMap;

use libp2p::identity::{ed25519, PublicKey};
use libp2p::PeerId;
use privacy::ledger::ChargeContext;
use privacy::mechanism::{calibrate_noise_multiplier, GaussianRelease, NoiseSpec, ReleaseConfig};
use privacy::secagg::{SecAggClient, ServerMessage};
use protocol::election::Election;
use protocol::round::client::ClientView;
use protocol::round::{ClientRound, OfferDecision, SecAggDelivery};
use protocol::wire::{CheckpointTransfer, Phase, Request, RoundOffer, SecAggPacket};
use protocol::AbstainReason;

use super::host::round_params;
use super::ml::Job;
use super::Node;
use crate::store::NodeStore;

/// The client role's state across round attempts.
#[derive(Default)]
pub(super) struct ClientSide {
    machine: ClientRound,
    secagg: Option<SecAggClient>,
    /// The attempt in progress: its host, size, DP noise shares, dimension and bound.
    attempt: Option<Attempt>,
    /// Calibrated noise multipliers by (participants, noise shares unknown to the host).
    noise: HashMap<(u32, u32), f64>,
}

struct Attempt {
    host: PeerId,
    attempt: u32,
    participants: u32,
    /// Noise shares of a released sum the host does not know (what the noise is calibrated to).
    noise_shares: u32,
    dim: usize,
    bound: f32,
}

impl ClientSide {
    /// The term of the attempt in progress.
    pub(super) fn engaged_term(&self) -> Option<u64> {
        self.machine.engaged().map(|(term, _, _)| term)
    }

    /// Leaves the attempt in progress (its spend, if any, stays in the ledger).
    pub(super) fn abandon(&mut self, store: &NodeStore, reason: &str) -> anyhow::Result<()> {
        if let Some((term, round, _)) = self.machine.engaged() {
            tracing::info!(term, round, "leaving the round: {reason}");
            store.set_phase(&crate::store::PhaseRecord {
                round,
                term,
                phase: Phase::Abandoned,
                role: "client".into(),
                updated_unix_ms: super::now_ms(),
            })?;
        }
        self.leave();
        Ok(())
    }

    /// Round `round` completed or was abandoned: leave it if this node took part.
    pub(super) fn leave_round(&mut self, round: u64) {
        if self.machine.engaged().is_some_and(|(_, r, _)| r == round) {
            self.leave();
        }
    }

    fn leave(&mut self) {
        self.machine.leave();
        self.secagg = None;
        self.attempt = None;
    }
}

/// What an offer or checkpoint is checked against: this node, its election's view, its store.
fn client_view<'a>(
    me: &'a [u8],
    election: &'a Election<Vec<u8>>,
    store: &NodeStore,
) -> Result<ClientView<'a>, String> {
    Ok(ClientView {
        me,
        leader: election.leader().map(|l| l.as_slice()),
        term: election.term(),
        last_completed: store.last_completed_round().map_err(|e| e.to_string())?,
    })
}

/// True when `identity` is the Ed25519 key of `peer`.
fn identity_matches(peer: &[u8], identity: &[u8; 32]) -> bool {
    let Ok(key) = ed25519::PublicKey::try_from_bytes(identity) else {
        return false;
    };
    PublicKey::from(key).to_peer_id().to_bytes() == peer
}

impl Node {
    /// A host's round offer.
    pub(super) fn on_offer(&mut self, peer: PeerId, offer: RoundOffer) -> Result<(), String> {
        if self.host.is_some() && peer != self.me {
            return Err("this node is the host".into());
        }
        offer.validate().map_err(|e| e.to_string())?;
        if let Some(p) = offer
            .participants
            .iter()
            .find(|p| !identity_matches(&p.peer, &p.identity))
        {
            return Err(format!(
                "participant key does not match its id {:?}",
                PeerId::from_bytes(&p.peer).map(|p| p.to_string())
            ));
        }
        let (term, round) = (offer.term, offer.start.round);
        let answered = self
            .store
            .answered(term, round, offer.attempt)
            .map_err(|e| e.to_string())?;
        let view = client_view(&self.me_bytes, &self.election, &self.store)?;
        let decision = self
            .client
            .machine
            .offer(&peer.to_bytes(), &offer, view, answered)
            .map_err(|e| e.to_string())?;
        let OfferDecision::Join { id } = decision else {
            return Ok(());
        };
        let n = offer.participants.len() as u32;
        let params = round_params(round, &offer.secagg, n).map_err(|e| format!("{e:#}"))?;
        let membership: Vec<[u8; 32]> = offer.participants.iter().map(|p| p.identity).collect();
        let (secagg, advert) =
            SecAggClient::new(params, id, &self.signing, &membership, &mut rand::rng())
                .map_err(|e| e.to_string())?;
        self.client.secagg = Some(secagg);
        self.client.attempt = Some(Attempt {
            host: peer,
            attempt: offer.attempt,
            participants: n,
            noise_shares: protocol::round::noise_shares_unknown_to_host(
                offer.secagg.threshold,
                offer.participants.iter().any(|p| p.peer == peer.to_bytes()),
            )
            .min(n),
            dim: offer.secagg.dim as usize,
            bound: offer.secagg.bound,
        });
        self.request_host(
            peer,
            Request::SecAgg(SecAggPacket {
                term,
                round,
                attempt: offer.attempt,
                payload: advert.encode(round),
            }),
        );
        self.client_phase(term, round, Phase::Learn)
            .map_err(|e| format!("{e:#}"))?;
        self.ml.send(Job::Learn {
            term,
            attempt: offer.attempt,
            start: Box::new(offer.start),
        });
        Ok(())
    }

    /// A host's secure-aggregation message.
    pub(super) fn client_secagg(
        &mut self,
        peer: PeerId,
        packet: SecAggPacket,
    ) -> Result<(), String> {
        if self.client.machine.attempt() != Some(packet.attempt) {
            return Err(format!(
                "message of attempt {} is not this node's",
                packet.attempt
            ));
        }
        let msg =
            ServerMessage::decode(&packet.payload, packet.round).map_err(|e| e.to_string())?;
        let needs_input = matches!(msg, ServerMessage::Shares(_));
        let delivery = self
            .client
            .machine
            .secagg(
                &peer.to_bytes(),
                packet.term,
                packet.round,
                packet.payload,
                needs_input,
            )
            .map_err(|e| e.to_string())?;
        if let SecAggDelivery::Now(payloads) = delivery {
            self.deliver(packet.term, packet.round, payloads)?;
        }
        Ok(())
    }

    /// Hands host messages to the secure-aggregation client and sends its replies.
    fn deliver(&mut self, term: u64, round: u64, payloads: Vec<Vec<u8>>) -> Result<(), String> {
        let Some((host, attempt)) = self.client.attempt.as_ref().map(|a| (a.host, a.attempt))
        else {
            return Err("no round in progress".into());
        };
        for payload in payloads {
            let msg = ServerMessage::decode(&payload, round).map_err(|e| e.to_string())?;
            let Some(secagg) = self.client.secagg.as_mut() else {
                return Err("no round in progress".into());
            };
            let reply = secagg.handle(msg).map_err(|e| e.to_string())?;
            self.request_host(
                host,
                Request::SecAgg(SecAggPacket {
                    term,
                    round,
                    attempt,
                    payload: reply.encode(round),
                }),
            );
        }
        Ok(())
    }

    /// The model thread finished learning and judging: charge, noise, mask.
    pub(super) fn client_judged(
        &mut self,
        (term, round, attempt): (u64, u64, u32),
        upload: Vec<f32>,
        test_acc: f64,
        seconds: f64,
    ) -> anyhow::Result<()> {
        let engaged = self
            .client
            .machine
            .engaged()
            .map(|(t, r, _)| (t, r, self.client.machine.attempt()));
        if engaged != Some((term, round, Some(attempt))) {
            tracing::debug!(term, round, "judged a round this node already left");
            return Ok(());
        }
        if self.host.is_some() {
            // The host's metrics of the round carry its own accuracy when the round completes.
            self.own_contribution(round, test_acc);
        } else {
            let metrics = crate::metrics::RoundMetrics::Client {
                round,
                term,
                test_acc,
                learn_seconds: seconds,
            };
            self.store.set_metrics(&metrics)?;
            self.last_metrics = Some(metrics);
        }
        tracing::info!(round, test_acc, seconds, "learned and judged");
        self.client_phase(term, round, Phase::Judge)?;
        let Some(a) = self.client.attempt.as_ref() else {
            return Ok(());
        };
        let (host, n, t, dim, bound) = (a.host, a.participants, a.noise_shares, a.dim, a.bound);
        anyhow::ensure!(
            upload.len() == dim,
            "upload of {} values for a round of dimension {dim}",
            upload.len()
        );
        let p = &self.cfg.privacy;
        let shape = ReleaseConfig {
            clip: p.clip,
            noise_multiplier: 1.0,
            expected_participants: n,
            min_participants: t,
            sample_rate: 1.0,
            dimension: dim,
        };
        let z = match self.client.noise.get(&(n, t)) {
            Some(z) => *z,
            None => {
                let spec = NoiseSpec::Gaussian {
                    granularity_exp: GaussianRelease::DEFAULT_GRANULARITY_EXP,
                };
                let z = calibrate_noise_multiplier(
                    p.epsilon,
                    p.delta,
                    u64::from(p.planned_rounds.max(1)),
                    &shape,
                    spec,
                )?;
                self.client.noise.insert((n, t), z);
                z
            }
        };
        let release = GaussianRelease::new(&ReleaseConfig {
            noise_multiplier: z,
            ..shape
        })?;
        let ctx = ChargeContext {
            round,
            dataset_id: format!("{}-term-{term}-attempt-{attempt}", self.me),
        };
        // Durable before anything leaves: the ledger entry, then the "answered" mark.
        let charged = match self.ledger.charge(release, &ctx) {
            Ok(charged) => charged,
            Err(e) if e.is_budget_exceeded() => {
                tracing::info!(round, "privacy budget exhausted: sitting the round out");
                self.store.mark_answered(term, round, attempt)?;
                self.request_host(
                    host,
                    Request::Abstain {
                        term,
                        round,
                        attempt,
                        reason: AbstainReason::BudgetExhausted,
                    },
                );
                return self.client.abandon(&self.store, "budget exhausted");
            }
            Err(e) => return Err(e.into()),
        };
        self.store.mark_answered(term, round, attempt)?;
        self.refresh_ledger_view();
        let noised: Vec<f32> = charged
            .noise_f32(&upload)?
            .into_iter()
            .map(|v| v.clamp(-bound, bound))
            .collect();
        if let Some(secagg) = self.client.secagg.as_mut() {
            secagg.set_input(&noised)?;
        }
        let held = self.client.machine.input_ready(term, round);
        self.client_phase(term, round, Phase::Aggregate)?;
        if let Err(e) = self.deliver(term, round, held) {
            tracing::warn!(round, "secure aggregation failed: {e}");
            self.client
                .abandon(&self.store, "secure aggregation failed")?;
        }
        Ok(())
    }

    /// The host's checkpoint of a completed round: verify, keep, and count the round.
    pub(super) fn on_checkpoint(
        &mut self,
        peer: PeerId,
        t: CheckpointTransfer,
    ) -> Result<(), String> {
        if self.host.is_some() {
            return Err("this node is the host".into());
        }
        let view = client_view(&self.me_bytes, &self.election, &self.store)?;
        self.client
            .machine
            .checkpoint(&peer.to_bytes(), t.term, t.round, view)
            .map_err(|e| e.to_string())?;
        if crate::store::sha256(&t.bytes) != t.hash {
            return Err("checkpoint does not match its hash".into());
        }
        let stored = self
            .store
            .put_checkpoint(t.round, &t.bytes)
            .map_err(|e| e.to_string())?;
        if stored != t.hash {
            return Err("stored checkpoint does not match its hash".into());
        }
        self.store
            .set_last_completed_round(t.round)
            .map_err(|e| e.to_string())?;
        self.election.set_last_completed_round(t.round);
        tracing::info!(
            round = t.round,
            bytes = t.bytes.len(),
            "checkpoint replicated: round complete"
        );
        self.set_phase(t.term, t.round, Phase::Complete, "client")
            .map_err(|e| format!("{e:#}"))?;
        self.client.leave_round(t.round);
        Ok(())
    }

    /// Records the client side's phase; on the host, whose own phase describes the round, the
    /// client side's is only logged.
    fn client_phase(&self, term: u64, round: u64, phase: Phase) -> anyhow::Result<()> {
        if self.host.is_some() {
            tracing::debug!(term, round, phase = phase.name(), "own contribution");
            return Ok(());
        }
        self.set_phase(term, round, phase, "client")
    }
}
