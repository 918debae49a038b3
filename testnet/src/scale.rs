//! `fedmmkt-testnet scale`: the same short run at several federation sizes, summed up as how
//! a round's cost at the host grows with N: seconds per phase, the host's egress and ingress
//! per round, and the checkpoint bytes any one member served. Writes `scale.json`,
//! `scale.csv`, `scale.md` and two charts next to the runs' own reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use node::report::plots::{line_chart, Series};
use protocol::wire::Phase;
use serde::{Deserialize, Serialize};

use crate::record::TestnetReport;

/// One federation size's run, summed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Nodes N.
    pub nodes: usize,
    /// Rounds asked for and completed.
    pub rounds_requested: u64,
    /// Rounds completed.
    pub rounds_completed: u64,
    /// Contributors in round 1's sum (N when the whole federation was there).
    pub round1_participants: Option<usize>,
    /// Mean contributors per completed round.
    pub participants_mean: f64,
    /// Mean host seconds per phase over the completed rounds.
    pub phase_seconds: BTreeMap<Phase, f64>,
    /// Mean host seconds per round (sampling to a majority holding the checkpoint).
    pub round_seconds: f64,
    /// Mean bytes the host sent per round.
    pub host_bytes_sent: f64,
    /// Mean bytes the host received per round.
    pub host_bytes_received: f64,
    /// Mean bytes the host sent in the replicate phase per round (the checkpoint's egress).
    pub host_checkpoint_bytes: f64,
    /// Most checkpoint bytes any one member served to members that asked, over the run.
    pub max_checkpoint_bytes_served: u64,
    /// Rounds counted twice (must be 0).
    pub double_counted_rounds: usize,
    /// Every ledger verifies.
    pub ledgers_verified: bool,
    /// Every invariant held and every round completed.
    pub ok: bool,
    /// Wall seconds of the run.
    pub wall_seconds: f64,
}

/// The summary of one run.
pub fn summarize(r: &TestnetReport) -> ScalePoint {
    let n = r.rounds.len().max(1) as f64;
    let mean = |f: &dyn Fn(&crate::record::RoundRecord) -> f64| -> f64 {
        r.rounds.iter().map(f).sum::<f64>() / n
    };
    let mut phase_seconds: BTreeMap<Phase, f64> = BTreeMap::new();
    for round in &r.rounds {
        for (p, s) in &round.phase_seconds {
            *phase_seconds.entry(*p).or_default() += s / n;
        }
    }
    ScalePoint {
        nodes: r.nodes,
        rounds_requested: r.rounds_requested,
        rounds_completed: r.rounds_completed,
        round1_participants: r
            .rounds
            .iter()
            .find(|x| x.round == 1)
            .map(|x| x.participants),
        participants_mean: mean(&|x| x.participants as f64),
        phase_seconds,
        round_seconds: mean(&|x| x.seconds),
        host_bytes_sent: mean(&|x| x.bytes_sent as f64),
        host_bytes_received: mean(&|x| x.bytes_received as f64),
        host_checkpoint_bytes: mean(&|x| {
            x.phase_bytes.get(&Phase::Replicate).copied().unwrap_or(0) as f64
        }),
        max_checkpoint_bytes_served: r
            .peers
            .iter()
            .map(|p| p.checkpoint_bytes_served)
            .max()
            .unwrap_or(0),
        double_counted_rounds: r.double_counted_rounds,
        ledgers_verified: r.ledgers_verified,
        ok: r.ok,
        wall_seconds: r.wall_seconds,
    }
}

fn mb(b: f64) -> f64 {
    b / 1e6
}

/// The phases any point has, in round order.
fn phases(points: &[ScalePoint]) -> Vec<Phase> {
    Phase::ALL
        .into_iter()
        .filter(|p| points.iter().any(|x| x.phase_seconds.contains_key(p)))
        .collect()
}

/// The Markdown table of the points.
pub fn markdown(points: &[ScalePoint]) -> String {
    let phases = phases(points);
    let mut s = String::from("# Rounds against federation size\n\n");
    let _ = writeln!(
        s,
        "Means over each run's completed rounds, at the host. Egress and ingress count what \
         crossed the network; `checkpoint` is the host's egress in the replicate phase; \
         `served` is the most checkpoint bytes any one member sent to members that asked.\n"
    );
    let names: Vec<String> = phases.iter().map(|p| format!("{} s", p.name())).collect();
    let _ = writeln!(
        s,
        "| N | rounds | round 1 contributors | contributors | {} | round s | host MB out | host MB in | checkpoint MB | served MB (max) | double-counted | ledgers | ok |",
        names.join(" | ")
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|{}---|---|---|---|---|---|---|---|",
        "---|".repeat(phases.len())
    );
    for x in points {
        let cells: Vec<String> = phases
            .iter()
            .map(|p| {
                x.phase_seconds
                    .get(p)
                    .map_or("–".into(), |v| format!("{v:.2}"))
            })
            .collect();
        // Means over no completed rounds are not numbers.
        let mean = |v: f64, digits: usize| {
            if x.rounds_completed == 0 {
                "–".to_string()
            } else {
                format!("{v:.digits$}")
            }
        };
        let _ = writeln!(
            s,
            "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            x.nodes,
            x.rounds_completed,
            x.rounds_requested,
            x.round1_participants.map_or("–".into(), |p| p.to_string()),
            mean(x.participants_mean, 1),
            cells.join(" | "),
            mean(x.round_seconds, 2),
            mean(mb(x.host_bytes_sent), 3),
            mean(mb(x.host_bytes_received), 3),
            mean(mb(x.host_checkpoint_bytes), 3),
            mb(x.max_checkpoint_bytes_served as f64),
            x.double_counted_rounds,
            if x.ledgers_verified {
                "verified"
            } else {
                "FAILED"
            },
            if x.ok { "yes" } else { "no" },
        );
    }
    let _ = writeln!(s, "\n![seconds per phase](scale_seconds.png)\n");
    let _ = writeln!(s, "![host bytes per round](scale_bytes.png)");
    s
}

/// Writes scale.json, scale.csv, scale.md and the two charts into `dir`.
pub fn write(dir: &Path, points: &[ScalePoint]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let json = dir.join("scale.json");
    std::fs::write(&json, serde_json::to_string_pretty(points)?)?;
    written.push(json);

    let phases = phases(points);
    let mut csv = String::from("nodes,rounds_completed,round1_participants,participants_mean,");
    for p in &phases {
        let _ = write!(csv, "{}_seconds,", p.name());
    }
    csv.push_str(
        "round_seconds,host_bytes_sent,host_bytes_received,host_checkpoint_bytes,max_checkpoint_bytes_served,double_counted_rounds,ledgers_verified,ok\n",
    );
    for x in points {
        let _ = write!(
            csv,
            "{},{},{},{:.3},",
            x.nodes,
            x.rounds_completed,
            x.round1_participants
                .map_or(String::new(), |p| p.to_string()),
            x.participants_mean
        );
        for p in &phases {
            let _ = write!(
                csv,
                "{},",
                x.phase_seconds
                    .get(p)
                    .map_or(String::new(), |v| format!("{v:.4}"))
            );
        }
        let _ = writeln!(
            csv,
            "{:.4},{:.0},{:.0},{:.0},{},{},{},{}",
            x.round_seconds,
            x.host_bytes_sent,
            x.host_bytes_received,
            x.host_checkpoint_bytes,
            x.max_checkpoint_bytes_served,
            x.double_counted_rounds,
            x.ledgers_verified,
            x.ok
        );
    }
    let path = dir.join("scale.csv");
    std::fs::write(&path, csv)?;
    written.push(path);

    let path = dir.join("scale.md");
    std::fs::write(&path, markdown(points))?;
    written.push(path);

    let xs = |f: &dyn Fn(&ScalePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|x| f(x).map(|y| (x.nodes as f64, y)))
            .collect()
    };
    let mut seconds: Vec<Series> = phases
        .iter()
        .map(|p| Series::line(p.name(), xs(&|x| x.phase_seconds.get(p).copied())))
        .collect();
    seconds.push(Series::reference("round", xs(&|x| Some(x.round_seconds))));
    let path = dir.join("scale_seconds.png");
    line_chart(
        &path,
        "Host seconds per round, by phase",
        "nodes N",
        "seconds",
        &seconds,
    )?;
    written.push(path);
    let bytes = vec![
        Series::line("host out", xs(&|x| Some(mb(x.host_bytes_sent)))),
        Series::line("host in", xs(&|x| Some(mb(x.host_bytes_received)))),
        Series::line("checkpoint out", xs(&|x| Some(mb(x.host_checkpoint_bytes)))),
    ];
    let path = dir.join("scale_bytes.png");
    line_chart(&path, "Host bytes per round", "nodes N", "MB", &bytes)?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{NodeSummary, RoundRecord};

    fn run(nodes: usize, participants: usize) -> TestnetReport {
        let round = |r: u64| RoundRecord {
            round: r,
            participants,
            seconds: 2.0 * r as f64,
            bytes_sent: 1_000_000 * nodes as u64,
            bytes_received: 500_000,
            phase_seconds: [(Phase::Learn, r as f64), (Phase::Aggregate, 0.5)].into(),
            phase_bytes: [(Phase::Replicate, 200_000)].into(),
            ..RoundRecord::default()
        };
        TestnetReport {
            nodes,
            rounds_requested: 2,
            rounds_completed: 2,
            rounds: vec![round(1), round(2)],
            peers: (0..nodes)
                .map(|i| NodeSummary {
                    index: i,
                    peer_id: format!("p{i}"),
                    images: 0,
                    epsilon_spent: 0.0,
                    epsilon_budget: 1.0,
                    ledger_verified: true,
                    ledger_entries: 0,
                    kills: 0,
                    restarts: 0,
                    running_at_end: true,
                    checkpoint_bytes_served: 1000 * i as u64,
                })
                .collect(),
            ledgers_verified: true,
            ok: true,
            ..TestnetReport::default()
        }
    }

    #[test]
    fn a_run_is_summed_up_per_round_and_the_table_and_charts_are_written() {
        let p = summarize(&run(4, 4));
        assert_eq!(p.round1_participants, Some(4));
        assert_eq!(p.round_seconds, 3.0);
        assert_eq!(p.phase_seconds[&Phase::Learn], 1.5);
        assert_eq!(p.host_bytes_sent, 4e6);
        assert_eq!(p.host_checkpoint_bytes, 2e5);
        assert_eq!(p.max_checkpoint_bytes_served, 3000);
        let points = vec![p, summarize(&run(16, 15))];
        let md = markdown(&points);
        assert!(md.contains("| learn s | aggregate s |"), "{md}");
        assert!(
            md.contains("| 16 | 2/2 | 15 | 15.0 | 1.50 | 0.50 | 3.00 | 16.000 | 0.500 | 0.200 | 0.015 | 0 | verified | yes |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), &points).unwrap();
        assert_eq!(written.len(), 5);
        let csv = std::fs::read_to_string(dir.path().join("scale.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        for png in ["scale_seconds.png", "scale_bytes.png"] {
            let bytes = std::fs::read(dir.path().join(png)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{png}");
        }
    }
}
