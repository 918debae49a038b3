//! What a testnet run observed, as written to `report.json`.

use std::collections::BTreeMap;

use protocol::wire::Phase;
use serde::{Deserialize, Serialize};

/// One node of the testnet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Index in the testnet (n0, n1, ...).
    pub index: usize,
    /// libp2p PeerId.
    pub peer_id: String,
    /// Private images in its dataset directory.
    pub images: usize,
    /// ε spent at the end (from its ledger).
    pub epsilon_spent: f64,
    /// Its budget ε.
    pub epsilon_budget: f64,
    /// Its ledger's hash chain and signatures verify.
    pub ledger_verified: bool,
    /// Entries in its ledger.
    pub ledger_entries: usize,
    /// Times it was SIGKILLed by a fault.
    pub kills: usize,
    /// Times it was restarted after a kill.
    pub restarts: usize,
    /// Still running at the end.
    pub running_at_end: bool,
    /// Bytes of checkpoints it sent to members that asked for them (its last process).
    #[serde(default)]
    pub checkpoint_bytes_served: u64,
}

/// Who hosted a term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    /// Election term.
    pub term: u64,
    /// The host's PeerId.
    pub host: String,
    /// The host's node index.
    pub host_index: Option<usize>,
}

/// One completed round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: u64,
    /// Term of the host that completed it.
    pub term: u64,
    /// The host's PeerId.
    pub host: String,
    /// The host's node index.
    pub host_index: Option<usize>,
    /// Clients whose uploads are in the secure sum.
    pub participants: usize,
    /// Their node indices.
    pub participant_nodes: Vec<usize>,
    /// Mean accuracy of the clients that learned in this round, on the held-out test split.
    pub client_acc_mean: Option<f64>,
    /// Worst such client.
    pub client_acc_min: Option<f64>,
    /// Accuracy by node index.
    pub client_acc: BTreeMap<usize, f64>,
    /// Local-only reference: mean accuracy of the same nodes as `client_acc_mean` (every
    /// node when none reported) with their models trained on their own data alone, for as
    /// many rounds with the same local steps.
    #[serde(default)]
    pub local_acc_mean: Option<f64>,
    /// Worst of those nodes, local only.
    #[serde(default)]
    pub local_acc_min: Option<f64>,
    /// Local-only accuracy of every node by node index.
    #[serde(default)]
    pub local_acc: BTreeMap<usize, f64>,
    /// Oracle conditional accuracy of the generator's samples after the round.
    pub gen_oracle_acc: Option<f64>,
    /// Fréchet distance of those samples in the oracle's feature space.
    pub gen_frechet: Option<f64>,
    /// Synthetic samples kept by the reward filter.
    pub kept: usize,
    /// Mean reward.
    pub mean_reward: f64,
    /// Wall seconds of the round at the host (sampling to replicated checkpoint).
    pub seconds: f64,
    /// Bytes the host sent and received over the network for the round.
    pub bytes: u64,
    /// Of those, the bytes it sent (its egress).
    #[serde(default)]
    pub bytes_sent: u64,
    /// Of those, the bytes it received (its ingress).
    #[serde(default)]
    pub bytes_received: u64,
    /// Seconds per phase (generate, learn, aggregate, improve, replicate), keyed by name.
    pub phase_seconds: BTreeMap<Phase, f64>,
    /// Bytes per phase, keyed by name.
    pub phase_bytes: BTreeMap<Phase, u64>,
    /// ε spent by each node after the round, by node index.
    pub epsilon: BTreeMap<usize, f64>,
    /// SHA-256 of the round's checkpoint.
    pub checkpoint: String,
}

impl RoundRecord {
    /// Sets the local-only reference of this round from `curves[node][round − 1]` (every
    /// node's accuracy after each round of training on its own data alone).
    pub fn set_local_only(&mut self, curves: &[Vec<f64>]) {
        let Some(at) = (self.round as usize).checked_sub(1) else {
            return;
        };
        self.local_acc = curves
            .iter()
            .enumerate()
            .filter_map(|(node, c)| c.get(at).map(|&a| (node, a)))
            .collect();
        let same: Vec<f64> = if self.client_acc.is_empty() {
            self.local_acc.values().copied().collect()
        } else {
            self.client_acc
                .keys()
                .filter_map(|n| self.local_acc.get(n).copied())
                .collect()
        };
        self.local_acc_mean =
            (!same.is_empty()).then(|| same.iter().sum::<f64>() / same.len() as f64);
        self.local_acc_min = same.iter().copied().reduce(f64::min);
    }
}

/// An injected fault and what followed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill-host`, `drop`, `restart` or `intruder`.
    pub kind: String,
    /// The round it hit.
    pub round: u64,
    /// The nodes it hit.
    pub nodes: Vec<usize>,
    /// Seconds since the start of the run.
    pub at_seconds: f64,
    /// What happened next.
    pub outcome: String,
}

/// Oracle score of the generator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GenPoint {
    /// Conditional accuracy.
    pub oracle_acc: f64,
    /// Fréchet distance.
    pub frechet: f64,
}

/// Final metrics of a fault-free run of the same seed next to this run's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Fault-free final mean client accuracy.
    pub client_acc_mean: Option<f64>,
    /// Fault-free final generator oracle accuracy.
    pub gen_oracle_acc: Option<f64>,
    /// This run's final mean client accuracy.
    pub run_client_acc_mean: Option<f64>,
    /// This run's final generator oracle accuracy.
    pub run_gen_oracle_acc: Option<f64>,
    /// Largest difference (fraction) counted as noise.
    pub tolerance: f64,
    /// Both differences are within the tolerance.
    pub within_noise: bool,
}

/// Everything a run produced; serialised as `report.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestnetReport {
    /// Node processes (intruder excluded).
    pub nodes: usize,
    /// Rounds asked for.
    pub rounds_requested: u64,
    /// Rounds completed (checkpoint held by a majority).
    pub rounds_completed: u64,
    /// Seed.
    pub seed: u64,
    /// Dirichlet α of the data partition.
    pub alpha: f64,
    /// Per-node privacy budget ε.
    pub dp_epsilon: f64,
    /// What the budget protects.
    #[serde(default)]
    pub privacy_unit: privacy::PrivacyUnit,
    /// δ.
    pub delta: f64,
    /// Tiny models (tests, smoke runs).
    pub tiny: bool,
    /// The nodes.
    pub peers: Vec<NodeSummary>,
    /// Who hosted each term.
    pub terms: Vec<TermRecord>,
    /// The completed rounds.
    pub rounds: Vec<RoundRecord>,
    /// The pre-trained generator's score (round 0).
    pub gen_start: Option<GenPoint>,
    /// The oracle's accuracy on real test images.
    pub oracle_acc_real: Option<f64>,
    /// Wall seconds spent training every node's model on its own data alone (the local-only
    /// reference in `rounds[].local_acc*`), after the nodes stopped.
    #[serde(default)]
    pub local_only_seconds: Option<f64>,
    /// Injected faults.
    pub faults: Vec<FaultRecord>,
    /// Seconds from the host's SIGKILL to the next completed round.
    pub host_kill_recovery_seconds: Option<f64>,
    /// Seconds from the host's SIGKILL until every live node knew a new host.
    pub reelection_seconds: Option<f64>,
    /// Every node's ledger verifies.
    pub ledgers_verified: bool,
    /// Some node spent beyond its budget.
    pub budget_exceeded: bool,
    /// Round numbers completed more than once (by hosts of different terms).
    pub double_counted_rounds: usize,
    /// Ledger entries charging one (node, round attempt) twice.
    pub double_answered_attempts: usize,
    /// The intruder was refused (None: no intruder).
    pub intruder_refused: Option<bool>,
    /// The same config without faults, for comparison (`--baseline`).
    pub baseline: Option<Baseline>,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
    /// Every invariant held and every requested round completed.
    pub ok: bool,
    /// What failed, if anything.
    pub failures: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_mean_is_over_the_nodes_that_reported() {
        let curves = vec![vec![0.1, 0.2], vec![0.3, 0.4], vec![0.5, 0.6], vec![0.7]];
        let mut r = RoundRecord {
            round: 2,
            client_acc: [(1, 0.9), (2, 0.8)].into_iter().collect(),
            ..RoundRecord::default()
        };
        r.set_local_only(&curves);
        // Node 3 trained for one round only: no round-2 value.
        let want: BTreeMap<usize, f64> = [(0, 0.2), (1, 0.4), (2, 0.6)].into_iter().collect();
        assert_eq!(r.local_acc, want);
        assert!((r.local_acc_mean.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(r.local_acc_min, Some(0.4));
        // No client accuracy observed: every node counts.
        let mut r = RoundRecord {
            round: 1,
            ..RoundRecord::default()
        };
        r.set_local_only(&curves);
        assert!((r.local_acc_mean.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(r.local_acc_min, Some(0.1));
        // Round 0 and rounds past the curves have no reference.
        let mut r = RoundRecord::default();
        r.set_local_only(&curves);
        assert_eq!((r.local_acc_mean, r.local_acc.len()), (None, 0));
        let mut r = RoundRecord {
            round: 9,
            ..RoundRecord::default()
        };
        r.set_local_only(&curves);
        assert_eq!(r.local_acc_mean, None);
    }
}
