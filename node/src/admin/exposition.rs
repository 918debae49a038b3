//! `/metrics`: the node's state in the Prometheus (OpenMetrics) text format, encoded by
//! `prometheus-client` from the same snapshot the other routes answer with.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use protocol::wire::Phase;

use super::AdminState;
use crate::metrics::RoundMetrics;

type FloatGauge = Gauge<f64, AtomicU64>;
type Labelled<M> = Family<Vec<(String, String)>, M>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn labelled<
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, impl FnOnce(&M))>,
) {
    let family = Labelled::<M>::default();
    let mut any = false;
    for (value, set) in values {
        set(&family.get_or_create(&vec![(label.to_string(), value)]));
        any = true;
    }
    // A family without samples is left out (some parsers refuse one).
    if any {
        registry.register(name, help, family);
    }
}

/// The exposition of `state` (every metric prefixed `fedmmkt_`).
pub fn metrics_text(state: &AdminState) -> String {
    let s = &state.status;
    let mut r = Registry::with_prefix("fedmmkt");
    gauge(
        &mut r,
        "round_completed",
        "Last round this node knows completed",
        s.round as f64,
    );
    gauge(&mut r, "term", "Current election term", s.term as f64);
    let is_host = s.host.as_deref() == Some(s.peer_id.as_str());
    gauge(
        &mut r,
        "is_host",
        "1 while this node is the generator host",
        f64::from(u8::from(is_host)),
    );
    labelled::<FloatGauge>(
        &mut r,
        "phase",
        "1 for the phase of the round in progress (or the last one), 0 for the others",
        "phase",
        Phase::ALL.map(|p| {
            let on = s.phase == Some(p);
            (p.name().to_string(), move |g: &FloatGauge| {
                g.set(f64::from(u8::from(on)));
            })
        }),
    );
    gauge(
        &mut r,
        "peers_connected",
        "Peers connected right now",
        s.peers.len() as f64,
    );
    gauge(
        &mut r,
        "peers_banned",
        "Peers this node bans right now",
        state
            .peers
            .iter()
            .filter(|p| p.banned_until_unix_ms.is_some())
            .count() as f64,
    );
    gauge(
        &mut r,
        "epsilon_spent",
        "Privacy budget spent (epsilon at the node's delta)",
        s.epsilon_spent,
    );
    gauge(
        &mut r,
        "epsilon_budget",
        "The privacy ledger's cap on epsilon",
        s.epsilon_budget,
    );
    gauge(
        &mut r,
        "delta",
        "Delta at which epsilon is measured",
        s.delta,
    );
    let seconds: Vec<(String, f64)> = match &s.last_metrics {
        Some(RoundMetrics::Host { phase_seconds, .. }) => phase_seconds
            .iter()
            .map(|(p, v)| (p.name().to_string(), *v))
            .collect(),
        Some(RoundMetrics::Client { learn_seconds, .. }) => {
            vec![(Phase::Learn.name().to_string(), *learn_seconds)]
        }
        None => Vec::new(),
    };
    labelled::<FloatGauge>(
        &mut r,
        "round_seconds",
        "Seconds each phase of the last completed round took at this node",
        "phase",
        seconds.into_iter().map(|(p, v)| {
            (p, move |g: &FloatGauge| {
                g.set(v);
            })
        }),
    );
    if let Some(acc) = s.last_metrics.as_ref().and_then(RoundMetrics::test_acc) {
        gauge(
            &mut r,
            "client_accuracy",
            "This node's test accuracy after learning in its last round",
            acc,
        );
    }
    labelled::<Counter>(
        &mut r,
        "bytes",
        "Request-response bytes since the node started",
        "direction",
        [
            ("sent".to_string(), state.bytes_sent),
            ("received".to_string(), state.bytes_received),
        ]
        .map(|(d, v)| {
            (d, move |c: &Counter| {
                c.inc_by(v);
            })
        }),
    );
    let served = Counter::<u64>::default();
    served.inc_by(s.checkpoint_bytes_served);
    r.register(
        "checkpoint_served_bytes",
        "Checkpoint bytes sent to members that asked, since the node started",
        served,
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        return format!("# could not encode the metrics: {e}\n# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::StatusReport;

    #[test]
    fn the_exposition_carries_the_state() {
        let state = AdminState {
            status: StatusReport {
                peer_id: "me".into(),
                host: Some("me".into()),
                term: 4,
                round: 7,
                phase: Some(Phase::Aggregate),
                peers: vec!["a".into(), "b".into()],
                epsilon_spent: 2.5,
                epsilon_budget: 8.0,
                ..StatusReport::default()
            },
            bytes_sent: 1234,
            bytes_received: 99,
            ..AdminState::default()
        };
        let text = metrics_text(&state);
        for line in [
            "fedmmkt_round_completed 7.0",
            "fedmmkt_term 4.0",
            "fedmmkt_is_host 1.0",
            "fedmmkt_phase{phase=\"aggregate\"} 1.0",
            "fedmmkt_phase{phase=\"learn\"} 0.0",
            "fedmmkt_peers_connected 2.0",
            "fedmmkt_epsilon_spent 2.5",
            "fedmmkt_epsilon_budget 8.0",
            "fedmmkt_bytes_total{direction=\"sent\"} 1234",
            "fedmmkt_bytes_total{direction=\"received\"} 99",
            "# TYPE fedmmkt_bytes counter",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("client_accuracy"), "no round, no accuracy");
    }

    /// A sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// Every sample of `text`, when it parses as OpenMetrics.
    fn parse(text: &str) -> Vec<Sample> {
        let (rest, families) = nom_openmetrics::parser::openmetrics(text)
            .unwrap_or_else(|e| panic!("not OpenMetrics: {e}\n{text}"));
        assert!(rest.is_empty(), "left over: {rest:?}");
        families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| {
                let labels = s
                    .labels()
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.clone()))
                    .collect();
                (s.name().to_string(), labels, s.number())
            })
            .collect()
    }

    #[test]
    fn the_exposition_parses_before_and_after_a_round() {
        let fresh = parse(&metrics_text(&AdminState::default()));
        assert!(fresh
            .iter()
            .any(|(n, _, v)| n == "fedmmkt_round_completed" && *v == 0.0));
        let state = AdminState {
            status: StatusReport {
                peer_id: "me".into(),
                last_metrics: Some(RoundMetrics::Client {
                    round: 2,
                    term: 1,
                    test_acc: 0.625,
                    learn_seconds: 1.5,
                }),
                checkpoint_bytes_served: 77,
                ..StatusReport::default()
            },
            ..AdminState::default()
        };
        let samples = parse(&metrics_text(&state));
        let value = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
                })
                .map(|s| s.2)
        };
        assert_eq!(value("fedmmkt_client_accuracy", None), Some(0.625));
        assert_eq!(
            value("fedmmkt_round_seconds", Some(("phase", "learn"))),
            Some(1.5)
        );
        assert_eq!(
            value("fedmmkt_checkpoint_served_bytes_total", None),
            Some(77.0)
        );
        assert_eq!(value("fedmmkt_is_host", None), Some(0.0));
    }
}
