//! Checkpoints between members: taking one in (from the host's replication, or from a holder
//! this node asked), serving one to a member that asks for it by content address, and the
//! catch-up that asks (`protocol::session::CatchUp` decides whom). A transfer may carry a
//! delta from a checkpoint the receiver holds; the full checkpoint it makes must hash to the
//! transfer's content address before anything is kept.

use protocol::session::{CatchUpPolicy, Fetch};
use protocol::wire::{CheckpointTransfer, FetchRequest, Kind};
use rand::Rng;

use super::*;
use crate::learn::synthesizer::{apply_checkpoint_delta, checkpoint_delta};
use crate::store::sha256;

/// Ticks between two catch-up steps (one a second).
const CATCH_UP_EVERY: u64 = 10;

/// How long a member waits for a holder other than the host (3 s), and for a holder to
/// deliver (a request's timeout, as the network sets it, and 2 s more), in catch-up steps.
pub(super) fn catch_up_policy(cfg: &NodeConfig) -> CatchUpPolicy {
    CatchUpPolicy {
        patience: 3,
        timeout: request_timeout(cfg).as_secs() + 2,
    }
}

impl Node {
    /// A checkpoint transfer: from the host (a replica of the round just finished), or from
    /// the holder this node asked. Verify it, keep it, and count its round.
    pub(super) fn on_checkpoint(
        &mut self,
        peer: PeerId,
        t: CheckpointTransfer,
    ) -> Result<(), Refusal> {
        let from = peer.to_bytes();
        if self.catch_up.solicited(&from, &t.hash) {
            let (round, base, size) = (t.round, t.base, t.bytes.len());
            let kept = self.materialise(t).and_then(|(full, hash)| {
                self.hold_checkpoint(round, &full, hash)?;
                Ok(full.len())
            });
            return match kept {
                Ok(full) => {
                    tracing::info!(
                        round,
                        from = %peer,
                        bytes = size,
                        full,
                        delta = base.is_some(),
                        "checkpoint fetched"
                    );
                    self.fetched(round).map_err(Refusal::local)
                }
                Err(e) => {
                    tracing::warn!(round, from = %peer, "fetched checkpoint refused: {e}");
                    self.catch_up.on_failed(&from);
                    Err(e)
                }
            };
        }
        // A copy of a checkpoint this node holds already (a fetch answered after the host's
        // replica arrived, or the reverse) changes nothing, whoever sent it.
        if self.host.is_none()
            && self
                .store
                .checkpoint_round(&t.hash)
                .map_err(Refusal::local)?
                .is_some_and(|round| round == t.round)
        {
            tracing::debug!(round = t.round, from = %peer, "a checkpoint this node holds");
            return Ok(());
        }
        if self.host.is_some() {
            return Err(Refusal::WrongRole(Kind::Checkpoint));
        }
        let view = client::client_view(&self.me_bytes, &self.election, &self.store)?;
        self.client.check_checkpoint(&from, t.term, t.round, view)?;
        let (term, round, base, size) = (t.term, t.round, t.base, t.bytes.len());
        let (full, hash) = self.materialise(t)?;
        self.hold_checkpoint(round, &full, hash)?;
        tracing::info!(
            round,
            bytes = size,
            full = full.len(),
            delta = base.is_some(),
            "checkpoint replicated: round complete"
        );
        self.set_phase(term, round, Phase::Complete, "client")
            .map_err(Refusal::local)?;
        self.client.leave_round(round);
        Ok(())
    }

    /// The full checkpoint a transfer makes (its delta applied to the base this node holds)
    /// and its hash, if that is the transfer's content address.
    fn materialise(&self, t: CheckpointTransfer) -> Result<(Vec<u8>, [u8; 32]), Refusal> {
        let full = match t.base {
            None => t.bytes,
            Some(base) => {
                if self
                    .store
                    .checkpoint_round(&base)
                    .map_err(Refusal::local)?
                    .is_none()
                {
                    return Err(Refusal::MissingBase);
                }
                let base = self.store.get_checkpoint(&base).map_err(Refusal::local)?;
                apply_checkpoint_delta(&base, &t.bytes)
                    .map_err(|e| Refusal::Invalid(format!("checkpoint delta: {e}")))?
            }
        };
        if sha256(&full) != t.hash {
            return Err(Refusal::CheckpointHash);
        }
        Ok((full, t.hash))
    }

    /// The delta that turns the stored checkpoint `base` into `full`, when this node holds
    /// `base` and `full` continues it (what the host replicates and a holder serves).
    pub(super) fn delta_from(&self, base: [u8; 32], full: &[u8]) -> Option<Vec<u8>> {
        let base = self.store.get_checkpoint(&base).ok()?;
        checkpoint_delta(&base, full).ok()?
    }

    /// Keeps a verified checkpoint of `round`; this node now holds that round.
    fn hold_checkpoint(&mut self, round: u64, full: &[u8], hash: [u8; 32]) -> Result<(), Refusal> {
        self.room_for(full.len() as u64)
            .map_err(|e| Refusal::local(format!("storage full: {e}")))?;
        let stored = self
            .store
            .put_checkpoint(round, full)
            .map_err(Refusal::local)?;
        if stored != hash {
            return Err(Refusal::local("stored checkpoint does not match its hash"));
        }
        let held = self.store.last_completed_round().map_err(Refusal::local)?;
        if round > held {
            self.store
                .set_last_completed_round(round)
                .map_err(Refusal::local)?;
            self.election.set_last_completed_round(round);
        }
        self.catch_up.on_held(round.max(held));
        Ok(())
    }

    /// A fetched checkpoint is kept: the round this node was still in (if it was that one)
    /// is over for it.
    fn fetched(&mut self, round: u64) -> anyhow::Result<()> {
        if let Some((term, r, _)) = self.client.engaged() {
            if r <= round {
                self.set_phase(term, r, Phase::Complete, "client")?;
                self.client.leave_round(r);
            }
        }
        self.publish_admin();
        Ok(())
    }

    /// A member asks for a checkpoint by content address: acknowledge, then send it (as a
    /// delta from the one it holds, when this node holds that too and the delta is smaller).
    pub(super) fn serve_fetch(&mut self, peer: PeerId, f: FetchRequest) -> Result<(), Refusal> {
        if self.serving.contains(&peer) {
            return Err(Refusal::RateLimited);
        }
        let Some(round) = self
            .store
            .checkpoint_round(&f.want)
            .map_err(Refusal::local)?
        else {
            return Err(Refusal::NotHeld);
        };
        let full = self.store.get_checkpoint(&f.want).map_err(Refusal::local)?;
        let delta = f.have.filter(|have| *have != f.want).and_then(|have| {
            let delta = self.delta_from(have, &full)?;
            (delta.len() < full.len()).then_some((have, delta))
        });
        let (base, bytes) = match delta {
            Some((have, delta)) => (Some(have), delta),
            None => (None, full),
        };
        tracing::info!(
            round,
            to = %peer,
            bytes = bytes.len(),
            delta = base.is_some(),
            "serving a checkpoint"
        );
        let transfer = CheckpointTransfer {
            term: self.election.term(),
            round,
            hash: f.want,
            base,
            bytes,
        };
        let request = Request::Checkpoint(transfer);
        self.served_bytes += protocol::wire::encoded_len(&request).unwrap_or(0) as u64;
        self.serving.insert(peer);
        self.request(peer, request, Pending::Served { peer });
        Ok(())
    }

    /// A member's liveness announcement named the checkpoint it holds: the host's says which
    /// checkpoint is the newest, and this node catches up to it if it lacks it.
    pub(super) fn note_held_checkpoint(
        &mut self,
        from: PeerId,
        round: u64,
        checkpoint: Option<[u8; 32]>,
    ) -> anyhow::Result<()> {
        self.peer_mut(from).checkpoint = checkpoint;
        if self.host.is_some() {
            return self.host_holder(from, round, checkpoint);
        }
        let from_host = self.election.leader().map(Vec::as_slice) == Some(&from.to_bytes()[..]);
        if let (true, Some(hash), None) = (from_host, checkpoint, &self.host) {
            let held = self.store.last_completed_round()?;
            self.catch_up.on_host_checkpoint(round, hash, held);
        }
        Ok(())
    }

    /// One catch-up step: ask a holder for the newest checkpoint, if one is due.
    pub(super) fn catch_up_tick(&mut self) -> anyhow::Result<()> {
        if !self.ticks.is_multiple_of(CATCH_UP_EVERY) || self.host.is_some() {
            return Ok(());
        }
        let Some((_, want)) = self.catch_up.target() else {
            return Ok(());
        };
        let Some(host) = self.election.leader().cloned() else {
            return Ok(());
        };
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let holders: Vec<Vec<u8>> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.checkpoint == Some(want) && connected.contains(id) && self.is_member(id)
            })
            .map(|(id, _)| id.to_bytes())
            .collect();
        let pick = rand::rng().random::<u64>();
        let Some(Fetch { from, round, want }) = self.catch_up.on_tick(&holders, &host, pick) else {
            return Ok(());
        };
        let Ok(peer) = PeerId::from_bytes(&from) else {
            self.catch_up.on_failed(&from);
            return Ok(());
        };
        let held = self.store.last_completed_round()?;
        let have = self.store.checkpoint_hash(held)?;
        tracing::info!(round, from = %peer, "fetching a checkpoint this node misses");
        self.request(
            peer,
            Request::Fetch(FetchRequest { want, have }),
            Pending::Fetch { peer },
        );
        Ok(())
    }
}
