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

    /// Ticks the host waits for a majority to hold a new checkpoint: two stages, since the
    /// host sends ⌊N/2⌋ copies one after another (spares get theirs at half of it).
    pub fn replication_ticks(&self) -> u64 {
        2 * self.stage_ticks.max(1)
    }

    /// Acknowledgements (besides the host's own copy) that make a round count with `members`
    /// members: the host plus these are a majority.
    pub fn replicas_needed(members: usize) -> usize {
        members / 2
    }

    /// The secure-aggregation parameters of a round with `n` participants whose uploads have
    /// `layout`: the graph [`neighbours`] picks and its smallest safe threshold.
    pub fn secagg_spec(&self, n: u32, layout: UploadLayout, graph_seed: [u8; 32]) -> SecAggSpec {
        let k = neighbours(n);
        SecAggSpec {
            graph_seed,
            neighbors: k,
            threshold: RoundParams::min_threshold(k.min(n.saturating_sub(1))).max(2),
            dim: layout.len() as u32,
            bound: BOUND_IN_CLIPS * self.clip as f32,
            max_clients: n.next_power_of_two().max(8),
        }
    }
}

/// When the host starts the federation's first round: once a share of the members is live,
/// or, after waiting `timeout` for that, once a majority is. Later rounds invite whoever is
/// live. Without it a host elected while the federation assembles starts with the few
/// members that were up first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRule {
    /// Share of the members, in (0, 1], that must be live (1: all of them).
    pub share: f64,
    /// How long to wait for that share before a majority is enough.
    pub timeout: std::time::Duration,
}

impl StartRule {
    /// Live members, the host among them, that the first round of a federation of `members`
    /// waits for, once the host has waited `waited`.
    pub fn needed(&self, members: usize, waited: std::time::Duration) -> usize {
        let share = (self.share * members as f64).ceil() as usize;
        let share = share.clamp(1, members.max(1));
        if waited >= self.timeout {
            share.min(members / 2 + 1)
        } else {
            share
        }
    }
}

/// The largest round that uses the complete graph (the original SecAgg). Up to here every
/// client masks against every other, which costs each client at most 31 key agreements and
/// mask expansions (milliseconds at this federation's upload sizes, `fedmmkt bench round`)
/// and needs no assumption about how colluders sit in a random graph. Above it the
/// per-client cost of the complete graph grows with N while SecAgg+ stays at O(log N).
pub const COMPLETE_GRAPH_UP_TO: u32 = 32;

/// Neighbours per client in a round of `n`: every other client up to
/// [`COMPLETE_GRAPH_UP_TO`], then SecAgg+'s sparse random graph (Bell et al. 2020) with
/// k = 3·⌈log2 n⌉ rounded up to even (18 at 64, 30 at 1000). With the threshold at
/// k/2 + 1, colluders must hold more than half of one honest client's neighbourhood to learn
/// its input: at a tenth of the clients colluding that is a binomial tail of about 4·10⁻⁹
/// per client at n = 1000 (k = 30, t = 16), and each client tolerates k/2 − 1 dropped
/// neighbours.
pub fn neighbours(n: u32) -> u32 {
    let complete = n.saturating_sub(1).next_multiple_of(2);
    if n <= COMPLETE_GRAPH_UP_TO {
        return complete;
    }
    let log2 = u32::BITS - (n - 1).leading_zeros();
    (3 * log2).next_multiple_of(2).min(complete)
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
    fn the_first_round_waits_for_the_share_then_a_majority() {
        use std::time::Duration;
        let all = StartRule {
            share: 1.0,
            timeout: Duration::from_secs(60),
        };
        assert_eq!(all.needed(32, Duration::ZERO), 32);
        assert_eq!(all.needed(32, Duration::from_secs(59)), 32);
        assert_eq!(all.needed(32, Duration::from_secs(60)), 17);
        assert_eq!(all.needed(4, Duration::from_secs(61)), 3);
        let most = StartRule {
            share: 0.75,
            timeout: Duration::from_secs(10),
        };
        assert_eq!(most.needed(10, Duration::ZERO), 8, "⌈7.5⌉");
        assert_eq!(most.needed(10, Duration::from_secs(10)), 6);
        // A share below a majority is not raised by the timeout.
        let few = StartRule {
            share: 0.25,
            timeout: Duration::ZERO,
        };
        assert_eq!(few.needed(16, Duration::ZERO), 4);
        assert_eq!(few.needed(0, Duration::ZERO), 1);
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
        let spec = p.secagg_spec(COMPLETE_GRAPH_UP_TO, layout, [0; 32]);
        assert_eq!(
            spec.neighbors, COMPLETE_GRAPH_UP_TO,
            "31 others, rounded up to even"
        );
        assert_eq!(spec.threshold, 17);
    }

    #[test]
    fn large_federations_use_secagg_plus_with_logarithmic_neighbourhoods() {
        let p = RoundPolicy {
            stage_ticks: 1,
            clip: 1.0,
            noise_multiplier: 0.0,
        };
        let layout = UploadLayout {
            samples: 500,
            classes: 10,
            moments: 0,
        };
        for (n, k, t) in [(33, 18, 10), (64, 18, 10), (100, 22, 12), (1000, 30, 16)] {
            let spec = p.secagg_spec(n, layout, [1; 32]);
            assert_eq!((spec.neighbors, spec.threshold), (k, t), "n = {n}");
            let params = round_params(1, &spec, n).unwrap();
            let graph = params.validate().unwrap();
            assert!((0..n).all(|c| graph.neighbors(c).len() == k as usize));
        }
        // Doubling N adds a constant number of neighbours.
        assert_eq!(neighbours(2048) - neighbours(1024), 4);
    }
}
