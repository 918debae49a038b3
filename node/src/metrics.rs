//! What a node records about its last round: one typed shape shared by the node that writes
//! it, the store that keeps it, the admin endpoint that shows it and the testnet that reads it.
//!
//! The JSON form is an object tagged by `role` (`"host"` or `"client"`); per-phase maps are
//! keyed by [`Phase`] names (`"learn"`). Stores written before this type existed parse as is.

use std::collections::BTreeMap;

use protocol::wire::Phase;
use serde::{Deserialize, Serialize};

/// A node's metrics of its last round, by the role it had in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum RoundMetrics {
    /// The host's view of a completed round (its checkpoint is on a majority).
    Host {
        /// Round number.
        round: u64,
        /// Election term the round ran under.
        term: u64,
        /// Peer ids whose uploads entered the sum.
        participants: Vec<String>,
        /// Synthetic samples kept by the reward filter.
        kept: usize,
        /// Mean reward of the kept samples.
        mean_reward: f32,
        /// Wall seconds from sampling to the replicated checkpoint.
        seconds: f64,
        /// Bytes the host sent and received over the network for the round.
        bytes: u64,
        /// Of those, the bytes it sent (offers, secure-aggregation messages, checkpoints).
        #[serde(default)]
        bytes_sent: u64,
        /// Of those, the bytes it received (the clients' secure-aggregation messages).
        #[serde(default)]
        bytes_received: u64,
        /// Seconds spent in each phase.
        phase_seconds: BTreeMap<Phase, f64>,
        /// Bytes sent and received over the network in each phase.
        phase_bytes: BTreeMap<Phase, u64>,
        /// SHA-256 of the round's checkpoint, hex.
        checkpoint: String,
        /// The host's own test accuracy after learning in the round (it contributes too).
        test_acc: Option<f64>,
    },
    /// A client's view of a round it learned and judged in.
    Client {
        /// Round number.
        round: u64,
        /// Election term of the round's host.
        term: u64,
        /// Test accuracy after learning.
        test_acc: f64,
        /// Seconds learning and judging took.
        learn_seconds: f64,
    },
}

impl RoundMetrics {
    /// Round number.
    pub fn round(&self) -> u64 {
        match self {
            RoundMetrics::Host { round, .. } | RoundMetrics::Client { round, .. } => *round,
        }
    }

    /// Election term of the round.
    pub fn term(&self) -> u64 {
        match self {
            RoundMetrics::Host { term, .. } | RoundMetrics::Client { term, .. } => *term,
        }
    }

    /// This node's test accuracy after learning in the round, when it learned.
    pub fn test_acc(&self) -> Option<f64> {
        match self {
            RoundMetrics::Host { test_acc, .. } => *test_acc,
            RoundMetrics::Client { test_acc, .. } => Some(*test_acc),
        }
    }
}

/// One round of a node's history, as its live page charts it: the ε it had spent once the
/// round's charges were recorded, and its accuracy after learning in the round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundPoint {
    /// Round number.
    pub round: u64,
    /// ε spent (at the node's δ) after the round's ledger entries, when it recorded any.
    pub epsilon_spent: Option<f64>,
    /// Test accuracy after learning in the round, when it learned.
    pub test_acc: Option<f64>,
}

/// What `complete_round` wrote before this type: a `json!` object, keys sorted, the `f32`
/// mean reward widened to `f64`.
#[cfg(test)]
pub(crate) const OLD_HOST: &str = r#"{"bytes":2523904,"checkpoint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","kept":48,"mean_reward":0.699999988079071,"participants":["12D3KooWA","12D3KooWB","12D3KooWC"],"phase_bytes":{"aggregate":1048576,"generate":1400000,"replicate":75328},"phase_seconds":{"aggregate":0.75,"generate":2.5,"improve":1.25,"learn":4.0,"replicate":0.125},"role":"host","round":3,"seconds":8.625,"term":2,"test_acc":0.8125}"#;
/// What `client_judged` wrote before this type.
#[cfg(test)]
pub(crate) const OLD_CLIENT: &str =
    r#"{"learn_seconds":3.5,"role":"client","round":3,"term":2,"test_acc":0.75}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> RoundMetrics {
        RoundMetrics::Host {
            round: 3,
            term: 2,
            participants: vec!["12D3KooWA".into(), "12D3KooWB".into(), "12D3KooWC".into()],
            kept: 48,
            mean_reward: 0.7,
            seconds: 8.625,
            bytes: 2_523_904,
            // Metrics written before the split read as zero.
            bytes_sent: 0,
            bytes_received: 0,
            phase_seconds: [
                (Phase::Aggregate, 0.75),
                (Phase::Generate, 2.5),
                (Phase::Improve, 1.25),
                (Phase::Learn, 4.0),
                (Phase::Replicate, 0.125),
            ]
            .into(),
            phase_bytes: [
                (Phase::Aggregate, 1_048_576),
                (Phase::Generate, 1_400_000),
                (Phase::Replicate, 75_328),
            ]
            .into(),
            checkpoint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            test_acc: Some(0.8125),
        }
    }

    #[test]
    fn old_format_json_parses_to_the_same_metrics() {
        let old: RoundMetrics = serde_json::from_str(OLD_HOST).unwrap();
        assert_eq!(old, host());
        let client: RoundMetrics = serde_json::from_str(OLD_CLIENT).unwrap();
        assert_eq!(
            client,
            RoundMetrics::Client {
                round: 3,
                term: 2,
                test_acc: 0.75,
                learn_seconds: 3.5,
            }
        );
        assert_eq!((client.round(), client.term()), (3, 2));
        assert_eq!(client.test_acc(), Some(0.75));
        // A host whose own learning had not finished wrote `"test_acc": null`.
        let no_acc = OLD_HOST.replace(r#""test_acc":0.8125"#, r#""test_acc":null"#);
        let no_acc: RoundMetrics = serde_json::from_str(&no_acc).unwrap();
        assert_eq!(no_acc.test_acc(), None);
    }

    #[test]
    fn the_json_keeps_every_old_key_and_value() {
        // Same keys and values as before, whatever their order, and the split of the bytes
        // into sent and received beside them.
        let mut new = serde_json::to_value(host()).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_HOST).unwrap();
        let added = new.as_object_mut().unwrap();
        assert_eq!(added.remove("bytes_sent"), Some(0.into()));
        assert_eq!(added.remove("bytes_received"), Some(0.into()));
        assert_eq!(new, old);
        let client = RoundMetrics::Client {
            round: 3,
            term: 2,
            test_acc: 0.75,
            learn_seconds: 3.5,
        };
        let old: serde_json::Value = serde_json::from_str(OLD_CLIENT).unwrap();
        assert_eq!(serde_json::to_value(client).unwrap(), old);
    }

    #[test]
    fn the_simulations_phase_seconds_are_named_for_protocol_phases() {
        let v = serde_json::to_value(crate::simulate::run::PhaseSeconds::default()).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{v}");
        for k in keys.into_iter().filter(|k| *k != "evaluate") {
            assert!(k.parse::<Phase>().is_ok(), "{k} is not a phase name");
        }
    }

    #[test]
    fn a_renamed_or_missing_key_is_an_error_not_a_zero() {
        for (from, to) in [
            (r#""kept""#, r#""kept_samples""#),
            (r#""role":"host""#, r#""role":"leader""#),
            (r#""generate""#, r#""sample""#),
        ] {
            let renamed = OLD_HOST.replace(from, to);
            assert!(
                serde_json::from_str::<RoundMetrics>(&renamed).is_err(),
                "{renamed}"
            );
        }
    }
}
