//! What the admin endpoint shows: the durable phase record, the ledger view and the status
//! report, refreshed when they change.

use super::*;
use crate::metrics::RoundPoint;

/// Images of each class the live page's grid shows.
const GRID_PER_CLASS: usize = 8;

/// The ledger as the admin endpoint shows it (ε spent, budget, audit), read when it changes.
#[derive(Debug, Clone, Default)]
pub(super) struct LedgerView {
    pub(super) spent: f64,
    pub(super) budget: f64,
    pub(super) audit: Option<serde_json::Value>,
}

impl Node {
    /// Records this node's phase durably (for `status` and for restarts) and shows it on the
    /// admin endpoint at once.
    pub(super) fn set_phase(
        &self,
        term: u64,
        round: u64,
        phase: Phase,
        role: &str,
    ) -> anyhow::Result<()> {
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

    /// Re-reads the ledger (verifying its chain) for the admin endpoint; called when it changed,
    /// so the per-second status refresh never re-verifies every entry. The round of the
    /// ledger's newest entry gets the ε spent now as its point in the history.
    pub(super) fn refresh_ledger_view(&mut self) {
        let delta = self.cfg.privacy.delta;
        let audit = self.ledger.audit().ok();
        let spent = self
            .ledger
            .epsilon_spent(delta)
            .map(|e| e.epsilon)
            .unwrap_or(f64::NAN);
        if let Some(round) = audit
            .as_ref()
            .and_then(|a| a.entries.last())
            .map(|e| e.round)
        {
            if spent.is_finite() {
                self.note_round(round, |p| p.epsilon_spent = Some(spent));
            }
        }
        self.ledger_view = LedgerView {
            spent,
            budget: self
                .ledger
                .budget()
                .ok()
                .flatten()
                .map(|b| b.epsilon)
                .unwrap_or(self.cfg.privacy.epsilon),
            audit: audit.and_then(|a| serde_json::to_value(a).ok()),
        };
    }

    /// Updates round `round`'s point in this node's history (kept in the store too).
    pub(super) fn note_round(&mut self, round: u64, note: impl FnOnce(&mut RoundPoint)) {
        let i = match self.history.binary_search_by_key(&round, |p| p.round) {
            Ok(i) => i,
            Err(i) => {
                self.history.insert(
                    i,
                    RoundPoint {
                        round,
                        ..RoundPoint::default()
                    },
                );
                i
            }
        };
        let Some(point) = self.history.get_mut(i) else {
            return;
        };
        note(point);
        if let Err(e) = self.store.set_round_point(point) {
            tracing::warn!(round, "could not record the round in the history: {e}");
        }
    }

    /// Keeps the host's newly sampled synthetic set as the page's image grid (at most
    /// [`GRID_PER_CLASS`] images of each class).
    pub(super) fn show_samples(&mut self, start: &protocol::messages::RoundStart) {
        let side = start.side as usize;
        let mut taken = vec![0usize; start.classes as usize];
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for (i, &class) in start.prompt_class.iter().enumerate() {
            let (Some(count), Some(image)) = (
                taken.get_mut(class as usize),
                start.images.get(i * side * side..(i + 1) * side * side),
            ) else {
                continue;
            };
            if *count < GRID_PER_CLASS {
                *count += 1;
                pixels.extend_from_slice(image);
                labels.push(class as u8);
            }
        }
        match crate::report::grid::encode_grid(&pixels, &labels, taken.len(), side, 3) {
            Ok(png) => {
                self.grid = Some(Arc::new(admin::Grid {
                    round: start.round,
                    png,
                }))
            }
            Err(e) => tracing::debug!("no image grid for the page: {e}"),
        }
    }

    /// Refreshes what the admin endpoint answers.
    pub(super) fn publish_admin(&self) {
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
                offences: p.offences.total(),
                banned_until_unix_ms: p.offences.banned_until(Instant::now()).map(unix_ms_at),
                last_offence: p.offences.last().map(str::to_string),
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
            privacy_unit: self.cfg.privacy.unit,
            private_training: self.private_use,
            epsilon_budget: self.ledger_view.budget,
            delta,
            last_metrics: self.last_metrics.clone(),
            preparing: (self.ml.preparing().map(|p| p.label().to_string()))
                .or_else(|| self.host.as_ref().and_then(|h| h.waiting.clone())),
            secure_aggregation: self.secure_aggregation.clone(),
            checkpoint_bytes_served: self.served_bytes,
        };
        let _ = self.admin.send(AdminState {
            status,
            peers,
            audit: self.ledger_view.audit.clone(),
            history: self.history.clone(),
            bytes_sent: self.traffic.sent(),
            bytes_received: self.traffic.received(),
            grid: self.grid.clone(),
        });
    }
}
