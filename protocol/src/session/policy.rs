//! The protocol's timing, quorum and secure-aggregation policy for one round: how long each
//! stage may last, how many replicas make a round count, and the secure-aggregation
//! parameters a host offers. Both the node and the simulation read it from here.

use privacy::secagg::{AggregatorStage, ClipBound, Quantizer, RoundParams};

use crate::round::noise_shares_unknown_to_host;
use crate::wire::{Aggregation, SecAggSpec};
use crate::UploadLayout;

/// The per-coordinate bound of the fixed-point encoding, in units of the DP clip: clipped
/// uploads plus their share of Gaussian noise stay inside it except with negligible probability.
pub const BOUND_IN_CLIPS: f32 = 16.0;

/// How a host runs its rounds: the clock and the clip the encoding is sized for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundPolicy {
    /// Ticks a secure-aggregation stage may last (the masked-input stage gets four times
    /// this: the clients learn and judge while it is open).
    pub stage_ticks: u64,
    /// The L2 clip of a client's upload (the encoding's bound is [`BOUND_IN_CLIPS`] × this).
    pub clip: f64,
    /// The noise multiplier z of the clients' Gaussian noise under client-level DP (0: the
    /// uploads carry none, as under record-level DP): the sum's noise, z·clip per coordinate
    /// over the noise shares, is what an honest sum may stray by ([`crate::SumCheck`]).
    pub noise_multiplier: f64,
}

impl RoundPolicy {
    /// Ticks the aggregator's `stage` may stay open.
    pub fn ticks(&self, stage: AggregatorStage) -> u64 {
        let s = self.stage_ticks.max(1);
        match stage {
            AggregatorStage::CollectMaskedInputs => s * 4,
            _ => s,
        }
    }

    /// Ticks the host waits for a majority to hold a new checkpoint.
    pub fn replication_ticks(&self) -> u64 {
        self.stage_ticks.max(1)
    }

    /// Acknowledgements (besides the host's own copy) that make a round count with `members`
    /// members: the host plus these are a majority.
    pub fn replicas_needed(members: usize) -> usize {
        members / 2
    }

    /// The secure-aggregation parameters of a round with `n` participants whose uploads have
    /// `layout`: the complete graph (the original SecAgg) and its smallest safe threshold.
    pub fn secagg_spec(&self, n: u32, layout: UploadLayout, graph_seed: [u8; 32]) -> SecAggSpec {
        SecAggSpec {
            graph_seed,
            neighbors: n.saturating_sub(1).next_multiple_of(2),
            threshold: RoundParams::min_threshold(n.saturating_sub(1)).max(2),
            dim: layout.len() as u32,
            bound: BOUND_IN_CLIPS * self.clip as f32,
            max_clients: n.next_power_of_two().max(8),
        }
    }
}

/// Noise shares a released sum of `n` participants' uploads holds that the host does not
/// know, which is what each client's share of the noise is calibrated to: every upload in a
/// plain round; in a secure one, the threshold less the host's own share when it contributes.
pub fn noise_shares(
    aggregation: Aggregation,
    threshold: u32,
    host_contributes: bool,
    n: u32,
) -> u32 {
    let shares = match aggregation {
        Aggregation::Plain => threshold,
        Aggregation::Secure => noise_shares_unknown_to_host(threshold, host_contributes),
    };
    shares.min(n)
}

/// The secure-aggregation parameters of round `round` from an offer's `spec` for `n` clients.
pub fn round_params(
    round: u64,
    spec: &SecAggSpec,
    n: u32,
) -> Result<RoundParams, privacy::secagg::SecAggError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_input_stage_covers_learning_and_a_majority_makes_a_round_count() {
        let p = RoundPolicy {
            stage_ticks: 60,
            clip: 1.0,
            noise_multiplier: 0.0,
        };
        assert_eq!(p.ticks(AggregatorStage::CollectKeys), 60);
        assert_eq!(p.ticks(AggregatorStage::CollectMaskedInputs), 240);
        assert_eq!(p.ticks(AggregatorStage::CollectUnmask), 60);
        // With the host's own copy: 3 of 5, 2 of 3, 3 of 4.
        assert_eq!(RoundPolicy::replicas_needed(5), 2);
        assert_eq!(RoundPolicy::replicas_needed(3), 1);
        assert_eq!(RoundPolicy::replicas_needed(4), 2);
    }

    #[test]
    fn small_federations_use_the_complete_graph() {
        let p = RoundPolicy {
            stage_ticks: 1,
            clip: 2.0,
            noise_multiplier: 0.0,
        };
        let layout = UploadLayout {
            samples: 4,
            classes: 2,
            moments: 0,
        };
        let spec = p.secagg_spec(5, layout, [7; 32]);
        assert_eq!(spec.neighbors, 4, "every other client");
        assert_eq!(spec.threshold, 3);
        assert_eq!(spec.dim, 10);
        assert_eq!(spec.bound, 32.0);
        assert_eq!(spec.max_clients, 8);
        assert_eq!(p.secagg_spec(3, layout, [0; 32]).threshold, 2);
        assert!(round_params(1, &spec, 5).unwrap().validate().is_ok());
    }
}
