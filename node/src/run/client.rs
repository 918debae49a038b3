//! The client role in the node: the durable checks an offer needs (answered before?), the
//! learning job, the release through the ledger, and keeping the host's checkpoint. What the
//! round accepts and sends is decided by `protocol::session::ClientSession`; this module
//! carries out its effects.

use libp2p::identity::{ed25519, PublicKey};
use libp2p::PeerId;
use protocol::election::Election;
use protocol::round::client::ClientView;
use protocol::session::release::Release;
use protocol::session::ClientEffect;
use protocol::wire::{Kind, Phase, RoundOffer, SecAggPacket};
use protocol::{AbstainReason, Refusal};

use super::ml::Job;
use super::{Node, LEDGER_WRITE_BYTES};
use crate::store::NodeStore;

/// What an offer or checkpoint is checked against: this node, its election's view, its store.
pub(super) fn client_view<'a>(
    me: &'a [u8],
    election: &'a Election<Vec<u8>>,
    store: &NodeStore,
) -> Result<ClientView<'a>, Refusal> {
    Ok(ClientView {
        me,
        leader: election.leader().map(|l| l.as_slice()),
        term: election.term(),
        last_completed: store.last_completed_round().map_err(Refusal::local)?,
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
    pub(super) fn on_offer(&mut self, peer: PeerId, offer: RoundOffer) -> Result<(), Refusal> {
        if self.host.is_some() && peer != self.me {
            return Err(Refusal::WrongRole(Kind::Offer));
        }
        if offer
            .participants
            .iter()
            .any(|p| !identity_matches(&p.peer, &p.identity))
        {
            return Err(Refusal::ForeignIdentity);
        }
        // A round this node could not release in (its ledger entry would not become durable)
        // is declined up front; the host goes on without it.
        if let Err(full) = self.room_for(LEDGER_WRITE_BYTES) {
            tracing::warn!(round = offer.start.round, "declining the round: {full}");
            return Err(Refusal::local(format!("storage full: {full}")));
        }
        let answered = self
            .store
            .answered(offer.term, offer.start.round, offer.attempt)
            .map_err(Refusal::local)?;
        let view = client_view(&self.me_bytes, &self.election, &self.store)?;
        let aggregation = offer.secagg.describe(offer.participants.len() as u32);
        let round = offer.start.round;
        let effects = self.client.on_offer(
            &peer.to_bytes(),
            offer,
            view,
            answered,
            &self.signing,
            &mut rand::rng(),
        )?;
        if !effects.is_empty() {
            tracing::info!(round, "joining the round: {aggregation}");
            self.secure_aggregation = Some(aggregation);
        }
        self.client_effects(effects).map_err(Refusal::local)
    }

    /// A host's secure-aggregation message.
    pub(super) fn client_secagg(
        &mut self,
        peer: PeerId,
        packet: SecAggPacket,
    ) -> Result<(), Refusal> {
        let effects = self.client.on_secagg(&peer.to_bytes(), packet)?;
        self.client_effects(effects).map_err(Refusal::local)
    }

    /// The model thread finished learning and judging: release the upload through the
    /// ledger, then mask it.
    pub(super) fn client_judged(
        &mut self,
        (term, round, attempt): (u64, u64, u32),
        upload: Vec<f32>,
        test_acc: f64,
        seconds: f64,
    ) -> anyhow::Result<()> {
        let Some(plan) = self.client.release_plan(term, round, attempt) else {
            tracing::debug!(term, round, "judged a round this node already left");
            return Ok(());
        };
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
            self.note_round(round, |p| p.test_acc = Some(test_acc));
        }
        tracing::info!(round, test_acc, seconds, "learned and judged");
        self.client_phase(term, round, Phase::Judge)?;
        let dataset_id = format!("{}-term-{term}-attempt-{attempt}", self.me);
        // Nothing is released whose ledger entry might not become durable: with the disk
        // this full, sit the round out (and write nothing more than the phase).
        if let Err(full) = self.room_for(LEDGER_WRITE_BYTES) {
            tracing::error!(
                round,
                "not releasing this round's upload: its ledger entry could not be made durable: {full}"
            );
            let effects = self.client.sit_out(&plan, AbstainReason::StorageFull);
            return self.client_effects(effects);
        }
        // Durable before anything leaves: the ledger entry, then the "answered" mark. Under
        // record-level DP the upload is post-processing of training already paid for.
        let release = match self.cfg.privacy.unit {
            privacy::PrivacyUnit::Client => {
                self.releaser
                    .release(&self.ledger, &plan, dataset_id, &upload)?
            }
            privacy::PrivacyUnit::Record => Release::Noised(upload),
        };
        self.store.mark_answered(term, round, attempt)?;
        self.refresh_ledger_view();
        let effects = match release {
            Release::Noised(noised) => match self.client.on_released(&plan, &noised) {
                Ok(effects) => effects,
                Err(e) => {
                    tracing::warn!(round, "secure aggregation failed: {e}");
                    return self.client_abandon("secure aggregation failed");
                }
            },
            Release::BudgetExhausted => {
                tracing::info!(round, "privacy budget exhausted: sitting the round out");
                self.client.sit_out(&plan, AbstainReason::BudgetExhausted)
            }
        };
        self.client_effects(effects)
    }

    /// Leaves the attempt in progress (its spend, if any, stays in the ledger).
    pub(super) fn client_abandon(&mut self, reason: &str) -> anyhow::Result<()> {
        if let Some((term, round)) = self.client.leave() {
            tracing::info!(term, round, "leaving the round: {reason}");
            self.client_phase(term, round, Phase::Abandoned)?;
        }
        Ok(())
    }

    /// Carries out what the client's session decided, in order.
    fn client_effects(&mut self, effects: Vec<ClientEffect>) -> anyhow::Result<()> {
        for effect in effects {
            match effect {
                ClientEffect::Send { to, request } => {
                    if let Ok(host) = PeerId::from_bytes(&to) {
                        self.request_host(host, request);
                    }
                }
                ClientEffect::Phase { term, round, phase } => {
                    self.client_phase(term, round, phase)?;
                }
                ClientEffect::Learn {
                    term,
                    attempt,
                    start,
                } => self.ml.send(Job::Learn {
                    term,
                    attempt,
                    start,
                }),
            }
        }
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
