//! `fedmmkt bench round`: the real host and client sessions over the in-memory transport
//! release exactly the survivors' sum under SecAgg+ with dropouts, per-client traffic grows
//! with the neighbourhood rather than with N, and the command's JSON and usage errors.

mod support;

use support::fedmmkt;

use node::cli::bench::{bench_round, round_layout, RoundBench, RoundReport};
use node::simulate::federation::{Federation, RoundEnd};
use protocol::session::{neighbours, Release};
use protocol::{RoundStart, UploadLayout};

/// 5 samples of 10 classes: D = 60.
const LAYOUT: UploadLayout = UploadLayout {
    samples: 5,
    classes: 10,
    moments: 0,
};
const PROMPTS: [u16; 5] = [0, 3, 7, 9, 2];

fn start() -> RoundStart {
    RoundStart {
        round: 1,
        side: 2,
        classes: 10,
        emb_dim: 1,
        images: vec![0; 5 * 4],
        prompt_class: PROMPTS.to_vec(),
        prompt_template: vec![0; 5],
        text_emb: vec![0.0; 5],
        teacher: None,
        latent: None,
    }
}

/// Client `k`'s upload, built as honest clients build theirs: half its data in class k mod 10
/// and half in class (k + 3) mod 10, and a prediction per sample that depends on k.
fn upload(k: usize) -> Vec<f32> {
    let mut counts = vec![0.0; 10];
    counts[k % 10] += 8.0;
    counts[(k + 3) % 10] += 8.0;
    let mut preds = Vec::new();
    for j in 0..LAYOUT.samples {
        let mut row = vec![0f32; 10];
        row[(k + j) % 10] = 0.75;
        row[(k * 7 + j + 1) % 10] += 0.25;
        preds.extend(row);
    }
    LAYOUT.build(&preds, &PROMPTS, &counts, None).unwrap()
}

fn sum_of(clients: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut sum = vec![0f64; LAYOUT.len()];
    for k in clients {
        for (s, v) in sum.iter_mut().zip(upload(k)) {
            *s += f64::from(v);
        }
    }
    sum
}

fn bench(clients: usize, dim: usize, dropout: f64) -> RoundReport {
    let report = bench_round(&RoundBench {
        clients,
        layout: round_layout(dim, 10).unwrap(),
        dropout,
        seed: 5,
    })
    .unwrap();
    assert!(report.correct, "N = {clients}: {report:?}");
    report
}

#[test]
fn a_secagg_plus_round_with_dropouts_releases_exactly_the_survivors_sum() {
    let n = 40;
    assert_eq!(neighbours(n as u32), 18);
    let mut fed = Federation::new(n, true, 1.0 / 16.0, 0.0, 11).unwrap();
    assert_eq!(fed.open(start()).unwrap().len(), n);
    assert!(
        fed.aggregation().starts_with("SecAgg+ (k = 18 neighbours"),
        "{}",
        fed.aggregation()
    );
    let plans: Vec<_> = (0..n).map(|k| fed.plan(k).unwrap()).collect();
    // A tenth of the clients go silent after the key exchange.
    let gone = [2, 13, 27, 39];
    for k in gone {
        fed.drop_out(k).unwrap();
    }
    let survivors: Vec<usize> = (0..n).filter(|k| !gone.contains(k)).collect();
    for &k in &survivors {
        fed.released(k, &plans[k], Release::Noised(upload(k)))
            .unwrap();
    }
    let Some(RoundEnd::Sum { sum, included }) = fed.end() else {
        panic!("no sum");
    };
    assert_eq!(included, 36);
    let want = sum_of(survivors.iter().copied());
    let everyone = sum_of(0..n);
    // The encoding rounds each input by at most half a level of about 3·10⁻⁸ (bound 1 over
    // 64 clients' worth of levels).
    for (j, (s, w)) in sum.iter().zip(&want).enumerate() {
        assert!((s - w).abs() < 1e-6, "coordinate {j}: {s} vs {w}");
    }
    let differ = want
        .iter()
        .zip(&everyone)
        .filter(|(w, a)| (*w - *a).abs() > 0.1);
    assert!(
        differ.count() > 10,
        "the dropped clients' uploads must matter"
    );
    // The dropped clients sent their keys and shares, then nothing.
    let usage = fed.client_usage();
    let least = |f: fn(&node::simulate::federation::Usage) -> usize| {
        survivors.iter().map(|&k| f(&usage[k])).min().unwrap()
    };
    for k in gone {
        assert!(usage[k].sent > 0 && usage[k].received > 0);
        assert!(usage[k].sent < least(|u| u.sent), "{:?}", usage[k]);
        assert!(usage[k].received < least(|u| u.received), "{:?}", usage[k]);
    }
    let host = fed.host_usage();
    assert_eq!(usage.iter().map(|u| u.sent).sum::<usize>(), host.received);
    assert_eq!(usage.iter().map(|u| u.received).sum::<usize>(), host.sent);
}

#[test]
fn the_bench_checks_a_secagg_plus_round_with_dropouts() {
    let r = bench(40, 60, 0.1);
    assert_eq!((r.dropped, r.included), (4, 36));
    assert_eq!((r.neighbours, r.threshold), (18, 10));
    assert!(
        r.neighbours < 39 && r.graph.starts_with("SecAgg+"),
        "{}",
        r.graph
    );
    assert!(r.exact && r.max_abs_error <= r.tolerance && r.tolerance < 1e-5);
    assert!(r.abandoned.is_none());
    assert_eq!((r.samples, r.classes, r.dim), (5, 10, 60));
    assert!(r.client_ms_mean > 0.0 && r.client_ms_max >= r.client_ms_mean && r.host_ms > 0.0);
    // The host got every byte the clients sent, the survivors' and the dropped ones'.
    assert!(r.host_bytes_in as f64 > 36.0 * r.client_bytes_up_mean);
    assert!(r.client_bytes_up_max as f64 >= r.client_bytes_up_mean);
    // Too many dropouts for the threshold: the round is given up, and the bench says so.
    let r = bench_round(&RoundBench {
        clients: 40,
        layout: LAYOUT,
        dropout: 0.8,
        seed: 5,
    })
    .unwrap();
    assert!(!r.correct && r.abandoned.is_some(), "{r:?}");
}

#[test]
fn per_client_bytes_grow_with_the_neighbourhood_not_with_n() {
    // SecAgg+: 18 neighbours at N = 40, 22 at N = 80.
    let (a, b) = (bench(40, 60, 0.0), bench(80, 60, 0.0));
    assert_eq!((a.neighbours, b.neighbours), (18, 22));
    // The complete graph: 15 neighbours at N = 16, 31 at N = 32.
    let (c, d) = (bench(16, 60, 0.0), bench(32, 60, 0.0));
    assert_eq!((c.neighbours, d.neighbours), (15, 31));
    let growth = |from: &RoundReport, to: &RoundReport| {
        (
            to.bytes_per_client / from.bytes_per_client,
            to.client_bytes_up_mean / from.client_bytes_up_mean,
        )
    };
    // What a client sends (keys, a share per neighbour, its masked input, its unmasking
    // shares) grows with k; what it receives also holds the offer, whose participant list
    // grows with N under any graph.
    let (plus, plus_up) = growth(&a, &b);
    assert!(
        plus < 1.4,
        "SecAgg+ per-client bytes grew {plus:.2}× from N = 40 to 80"
    );
    assert!(
        plus_up < 1.25,
        "SecAgg+ bytes sent grew {plus_up:.2}× from N = 40 to 80"
    );
    let (complete, complete_up) = growth(&c, &d);
    assert!(
        complete > 1.7 && complete_up > 1.7,
        "complete-graph per-client bytes grew only {complete:.2}× ({complete_up:.2}× sent) \
         from N = 16 to 32"
    );
    // The host's traffic is the clients' together, so it grows with N.
    assert!(b.host_bytes_in > a.host_bytes_in * 2);
}

#[test]
fn the_command_prints_one_json_report_and_refuses_bad_arguments() {
    let out = fedmmkt(&[
        "bench",
        "round",
        "--clients",
        "40",
        "--dim",
        "60",
        "--dropout",
        "0.1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["correct"], true, "{v}");
    assert_eq!(v["included"], 36, "{v}");
    assert_eq!(v["dropped"], 4, "{v}");
    assert_eq!(v["neighbours"], 18, "{v}");
    assert_eq!(v["threshold"], 10, "{v}");
    for k in [
        "client_ms_mean",
        "client_ms_max",
        "host_ms",
        "client_bytes_up_mean",
        "client_bytes_down_mean",
        "bytes_per_client_per_dim",
        "wall_s",
    ] {
        let x = v[k].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }

    let human = fedmmkt(&["bench", "round", "--clients", "8", "--dim", "30"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    assert!(text.contains("SecAgg (complete graph"), "{text}");
    assert!(text.contains("included/dropped   8/0"), "{text}");

    for (args, says) in [
        (&["--dim", "7"][..], "--dim 7"),
        (&["--dim", "65"][..], "--dim 65"),
        (&["--dim", "60", "--dropout", "1.5"][..], "--dropout"),
        (&["--dim", "60", "--dropout", "-0.1"][..], "--dropout"),
        (&["--dim", "60", "--clients", "2"][..], "--clients"),
    ] {
        let mut all = vec!["bench", "round", "--json"];
        all.extend_from_slice(args);
        let out = fedmmkt(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
