//! A testnet run's report: `report.json`, a Markdown page a person reads, line charts and
//! image grids.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use node::report::grid::write_grid;
use node::report::plots::{line_chart, Series};
use protocol::wire::Phase;

use crate::record::{RoundRecord, TestnetReport};

/// Images sampled from the generator at one round, for a grid.
pub struct GridImages {
    /// Round after which they were sampled (0: the pre-trained generator).
    pub round: u64,
    /// `labels.len()` images of `side`×`side` grey bytes.
    pub pixels: Vec<u8>,
    /// Class of each image.
    pub labels: Vec<u8>,
    /// Number of classes (rows of the grid).
    pub classes: usize,
    /// Image side in pixels.
    pub side: usize,
}

/// One chart to draw: file name, title, axis labels and its lines.
struct Chart {
    file: &'static str,
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<Series>,
}

/// Writes report.json, report.md and the PNGs into `dir`; returns the paths written.
pub fn write_report(
    dir: &Path,
    report: &TestnetReport,
    class_names: &[String],
    grids: &[GridImages],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();

    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    written.push(json);

    let grid_rounds: Vec<u64> = grids.iter().map(|g| g.round).collect();
    let md = dir.join("report.md");
    std::fs::write(&md, render(report, class_names, &grid_rounds))
        .with_context(|| format!("writing {}", md.display()))?;
    written.push(md);

    for chart in charts(report) {
        let path = dir.join(chart.file);
        line_chart(
            &path,
            chart.title,
            chart.x_label,
            chart.y_label,
            &chart.series,
        )
        .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }

    for g in grids {
        let path = dir.join(grid_file(g.round));
        write_grid(&path, &g.pixels, &g.labels, g.classes, g.side, 2)
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The Markdown report.
///
/// It links the charts the report has data for but no image grids; `write_report` adds those.
pub fn markdown(report: &TestnetReport, class_names: &[String]) -> String {
    render(report, class_names, &[])
}

fn grid_file(round: u64) -> String {
    format!("grid_round_{round}.png")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), pct)
}

/// A difference of two accuracies in percentage points, signed.
fn points(diff: f64) -> String {
    format!("{:+.1} points", 100.0 * diff)
}

fn opt_f2(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn check(good: bool) -> &'static str {
    if good {
        "✓"
    } else {
        "✗"
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `12D3Ko…abcdef` for long peer ids, the id itself when short, "–" when empty.
fn short_peer(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    match chars.len() {
        0 => "–".into(),
        n if n <= 14 => id.into(),
        n => {
            let head: String = chars[..6].iter().collect();
            let tail: String = chars[n - 6..].iter().collect();
            format!("{head}…{tail}")
        }
    }
}

fn node_name(index: Option<usize>) -> String {
    index.map_or_else(|| "–".into(), |i| format!("n{i}"))
}

/// Phases present in any round, in the order a round runs them ([`Phase::ALL`]).
fn phase_names(rounds: &[RoundRecord]) -> Vec<Phase> {
    let present: BTreeSet<Phase> = rounds
        .iter()
        .flat_map(|r| r.phase_seconds.keys().chain(r.phase_bytes.keys()))
        .copied()
        .collect();
    Phase::ALL
        .into_iter()
        .filter(|p| present.contains(p))
        .collect()
}

/// Per-round points of `f`, sorted by round.
fn per_round(rounds: &[RoundRecord], f: impl Fn(&RoundRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = rounds
        .iter()
        .filter_map(|r| f(r).map(|y| (r.round as f64, y)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// The charts that have data, in the order the report links them.
fn charts(report: &TestnetReport) -> Vec<Chart> {
    let rounds = &report.rounds;
    let mut out = Vec::new();
    let non_empty = |series: Vec<Series>| -> Option<Vec<Series>> {
        let series: Vec<Series> = series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        (!series.is_empty()).then_some(series)
    };
    let last_round = rounds.iter().map(|r| r.round).max().unwrap_or(0) as f64;

    if let Some(series) = non_empty(vec![
        Series::line(
            "mean",
            per_round(rounds, |r| r.client_acc_mean.map(|a| 100.0 * a)),
        ),
        Series::line(
            "worst",
            per_round(rounds, |r| r.client_acc_min.map(|a| 100.0 * a)),
        ),
        Series::reference(
            "local only (mean)",
            per_round(rounds, |r| r.local_acc_mean.map(|a| 100.0 * a)),
        ),
    ]) {
        out.push(Chart {
            file: "client_accuracy.png",
            title: "Client accuracy on real test images",
            x_label: "round",
            y_label: "accuracy (%)",
            series,
        });
    }

    let gen_acc = per_round(rounds, |r| r.gen_oracle_acc.map(|a| 100.0 * a));
    if !gen_acc.is_empty() {
        let mut points: Vec<(f64, f64)> = report
            .gen_start
            .iter()
            .map(|g| (0.0, 100.0 * g.oracle_acc))
            .collect();
        points.extend(gen_acc);
        let mut series = vec![Series::line("generated (oracle)", points)];
        if let Some(real) = report.oracle_acc_real {
            let x0 = if report.gen_start.is_some() {
                0.0
            } else {
                rounds.iter().map(|r| r.round).min().unwrap_or(0) as f64
            };
            series.push(Series::reference(
                "oracle on real images",
                vec![(x0, 100.0 * real), (last_round, 100.0 * real)],
            ));
        }
        out.push(Chart {
            file: "generator_accuracy.png",
            title: "Generator conditional accuracy (oracle)",
            x_label: "round",
            y_label: "accuracy (%)",
            series,
        });
    }

    let gen_fd = per_round(rounds, |r| r.gen_frechet);
    if !gen_fd.is_empty() {
        let mut points: Vec<(f64, f64)> =
            report.gen_start.iter().map(|g| (0.0, g.frechet)).collect();
        points.extend(gen_fd);
        out.push(Chart {
            file: "generator_frechet.png",
            title: "Fréchet distance in oracle feature space",
            x_label: "round",
            y_label: "Fréchet distance",
            series: vec![Series::line("generated vs real test", points)],
        });
    }

    let eps_nodes: BTreeSet<usize> = rounds
        .iter()
        .flat_map(|r| r.epsilon.keys().copied())
        .collect();
    if !eps_nodes.is_empty() {
        let mut series: Vec<Series> = eps_nodes
            .iter()
            .map(|&n| {
                Series::line(
                    format!("n{n}"),
                    per_round(rounds, |r| r.epsilon.get(&n).copied()),
                )
            })
            .collect();
        if report.dp_epsilon > 0.0 {
            let first = rounds.iter().map(|r| r.round).min().unwrap_or(0) as f64;
            series.push(Series::reference(
                "budget",
                vec![(first, report.dp_epsilon), (last_round, report.dp_epsilon)],
            ));
        }
        out.push(Chart {
            file: "epsilon.png",
            title: "Privacy spent per node (ε)",
            x_label: "round",
            y_label: "ε spent",
            series,
        });
    }

    let phases = phase_names(rounds);
    if let Some(series) = non_empty(
        phases
            .iter()
            .map(|p| {
                Series::line(
                    p.name(),
                    per_round(rounds, |r| r.phase_seconds.get(p).copied()),
                )
            })
            .collect(),
    ) {
        out.push(Chart {
            file: "phase_seconds.png",
            title: "Seconds per phase",
            x_label: "round",
            y_label: "seconds",
            series,
        });
    }
    if let Some(series) = non_empty(
        phases
            .iter()
            .map(|p| {
                Series::line(
                    p.name(),
                    per_round(rounds, |r| r.phase_bytes.get(p).map(|&b| mb(b))),
                )
            })
            .collect(),
    ) {
        out.push(Chart {
            file: "phase_bytes.png",
            title: "Traffic per phase at the host",
            x_label: "round",
            y_label: "MB",
            series,
        });
    }
    out
}

/// The Markdown page, linking grids for `grid_rounds`.
fn render(r: &TestnetReport, class_names: &[String], grid_rounds: &[u64]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# fedmmkt testnet\n");
    let _ = writeln!(
        s,
        "{} nodes · {}/{} rounds · seed {} · α = {} · ε = {} (δ = {}){} · wall {:.2} s · **{}**\n",
        r.nodes,
        r.rounds_completed,
        r.rounds_requested,
        r.seed,
        r.alpha,
        r.dp_epsilon,
        r.delta,
        if r.tiny { " · tiny models" } else { "" },
        r.wall_seconds,
        if r.ok { "OK" } else { "FAILED" }
    );

    let _ = writeln!(s, "## Invariants\n");
    let _ = writeln!(s, "| invariant | value | |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| rounds completed | {}/{} | {} |",
        r.rounds_completed,
        r.rounds_requested,
        check(r.rounds_completed >= r.rounds_requested)
    );
    let _ = writeln!(
        s,
        "| ledgers verified | {} | {} |",
        yes_no(r.ledgers_verified),
        check(r.ledgers_verified)
    );
    let _ = writeln!(
        s,
        "| budget exceeded | {} | {} |",
        yes_no(r.budget_exceeded),
        check(!r.budget_exceeded)
    );
    let _ = writeln!(
        s,
        "| double-counted rounds | {} | {} |",
        r.double_counted_rounds,
        check(r.double_counted_rounds == 0)
    );
    let _ = writeln!(
        s,
        "| double-answered attempts | {} | {} |",
        r.double_answered_attempts,
        check(r.double_answered_attempts == 0)
    );
    let _ = writeln!(
        s,
        "| intruder refused | {} | {} |",
        r.intruder_refused.map_or("n/a", yes_no),
        r.intruder_refused.map_or("–", check)
    );

    if !r.failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {f}");
        }
    }

    if !r.terms.is_empty() {
        let _ = writeln!(s, "\n## Hosts\n");
        let _ = writeln!(s, "| term | host | peer id |\n|---|---|---|");
        for t in &r.terms {
            let _ = writeln!(
                s,
                "| {} | {} | `{}` |",
                t.term,
                node_name(t.host_index),
                short_peer(&t.host)
            );
        }
    }

    let _ = writeln!(s, "\n## Rounds\n");
    if r.rounds.is_empty() {
        let _ = writeln!(s, "No round completed.");
    } else {
        let _ = writeln!(
            s,
            "| round | term | host | participants | client acc mean | client acc worst | local only mean | generator oracle acc | Fréchet | seconds | host MB out / in | kept |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for x in &r.rounds {
            let nodes: Vec<String> = x
                .participant_nodes
                .iter()
                .map(|n| format!("n{n}"))
                .collect();
            let participants = if nodes.is_empty() {
                x.participants.to_string()
            } else {
                format!("{} ({})", x.participants, nodes.join(", "))
            };
            let host = match x.host_index {
                Some(i) => format!("n{i}"),
                None => short_peer(&x.host),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} / {:.2} | {} |",
                x.round,
                x.term,
                host,
                participants,
                opt_pct(x.client_acc_mean),
                opt_pct(x.client_acc_min),
                opt_pct(x.local_acc_mean),
                opt_pct(x.gen_oracle_acc),
                opt_f2(x.gen_frechet),
                x.seconds,
                mb(x.bytes_sent),
                mb(x.bytes_received),
                x.kept
            );
        }
        if let Some((last, local)) = r
            .rounds
            .iter()
            .rev()
            .find_map(|x| x.local_acc_mean.map(|l| (x, l)))
        {
            let _ = writeln!(
                s,
                "\nLocal only: each node's model trained on its own data alone, with the same local steps for as many rounds and no federation{}. After round {}: {} local only against {} in the federation ({}).",
                r.local_only_seconds
                    .map_or_else(String::new, |t| format!(" (trained after the nodes stopped, in {t:.1} s)")),
                last.round,
                pct(local),
                opt_pct(last.client_acc_mean),
                last.client_acc_mean
                    .map_or_else(|| "–".into(), |m| points(m - local)),
            );
        }
        if let Some(g) = r.gen_start {
            let _ = writeln!(
                s,
                "\nGenerator before round 1: oracle accuracy {}, Fréchet {:.2}.",
                pct(g.oracle_acc),
                g.frechet
            );
        }
        if let Some(real) = r.oracle_acc_real {
            let _ = writeln!(s, "\nOracle accuracy on real test images: {}.", pct(real));
        }
    }

    let phases = phase_names(&r.rounds);
    if !phases.is_empty() {
        let _ = writeln!(s, "\n## Phases\n");
        let _ = writeln!(s, "Seconds / MB at the host.\n");
        let names: Vec<&str> = phases.iter().map(|p| p.name()).collect();
        let _ = writeln!(s, "| round | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(phases.len()));
        for x in &r.rounds {
            let cells: Vec<String> = phases
                .iter()
                .map(|p| {
                    let secs = x
                        .phase_seconds
                        .get(p)
                        .map_or_else(|| "–".into(), |v| format!("{v:.2} s"));
                    let bytes = x
                        .phase_bytes
                        .get(p)
                        .map_or_else(|| "–".into(), |&b| format!("{:.2} MB", mb(b)));
                    format!("{secs} / {bytes}")
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", x.round, cells.join(" | "));
        }
    }

    if !r.peers.is_empty() {
        let _ = writeln!(s, "\n## Privacy\n");
        let _ = writeln!(
            s,
            "| node | ε spent / budget | ledger entries | verified |\n|---|---|---|---|"
        );
        for p in &r.peers {
            let over = p.epsilon_spent > p.epsilon_budget;
            let _ = writeln!(
                s,
                "| n{} | {:.2} / {:.2}{} | {} | {} |",
                p.index,
                p.epsilon_spent,
                p.epsilon_budget,
                if over { " ✗" } else { "" },
                p.ledger_entries,
                check(p.ledger_verified)
            );
        }

        let _ = writeln!(s, "\n## Nodes\n");
        let _ = writeln!(
            s,
            "Client accuracy in the last round each node learned in, next to the same model trained on its own data alone for as many rounds (local only).\n"
        );
        let _ = writeln!(
            s,
            "| node | peer id | images | client acc | local only | gain | kills | restarts | running at end | checkpoints served MB |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in &r.peers {
            let last = r
                .rounds
                .iter()
                .rev()
                .find_map(|x| x.client_acc.get(&p.index).map(|&a| (x, a)));
            let (acc, local, gain) = match last {
                Some((x, acc)) => {
                    let local = x.local_acc.get(&p.index).copied();
                    (
                        format!("{} (round {})", pct(acc), x.round),
                        opt_pct(local),
                        local.map_or_else(|| "–".into(), |l| points(acc - l)),
                    )
                }
                None => ("–".into(), "–".into(), "–".into()),
            };
            let _ = writeln!(
                s,
                "| n{} | `{}` | {} | {acc} | {local} | {gain} | {} | {} | {} | {:.2} |",
                p.index,
                short_peer(&p.peer_id),
                p.images,
                p.kills,
                p.restarts,
                yes_no(p.running_at_end),
                mb(p.checkpoint_bytes_served)
            );
        }
    }

    if !r.faults.is_empty() {
        let _ = writeln!(s, "\n## Faults\n");
        let _ = writeln!(
            s,
            "| kind | round | nodes | at s | outcome |\n|---|---|---|---|---|"
        );
        for f in &r.faults {
            let nodes: Vec<String> = f.nodes.iter().map(|n| format!("n{n}")).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {} |",
                f.kind,
                f.round,
                if nodes.is_empty() {
                    "–".into()
                } else {
                    nodes.join(", ")
                },
                f.at_seconds,
                f.outcome.replace('|', "\\|").replace('\n', " ")
            );
        }
    }

    if r.host_kill_recovery_seconds.is_some() || r.reelection_seconds.is_some() {
        let _ = writeln!(s, "\n## Recovery\n");
        let _ = writeln!(
            s,
            "- Host SIGKILL → next completed round: {}",
            r.host_kill_recovery_seconds
                .map_or_else(|| "–".into(), |v| format!("{v:.2} s"))
        );
        let _ = writeln!(
            s,
            "- Host SIGKILL → every live node knows a new host (re-election): {}",
            r.reelection_seconds
                .map_or_else(|| "–".into(), |v| format!("{v:.2} s"))
        );
    }

    if let Some(b) = &r.baseline {
        let _ = writeln!(s, "\n## Against a fault-free run of the same seed\n");
        let _ = writeln!(s, "| | fault-free | this run | difference | |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (name, base, this) in [
            (
                "final client accuracy (mean)",
                b.client_acc_mean,
                b.run_client_acc_mean,
            ),
            (
                "final generator oracle accuracy",
                b.gen_oracle_acc,
                b.run_gen_oracle_acc,
            ),
        ] {
            let diff = match (base, this) {
                (Some(x), Some(y)) => format!("{:+.1} points", 100.0 * (y - x)),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {diff} | |",
                base.map_or_else(|| "–".into(), |v| format!("{:.1}%", 100.0 * v)),
                this.map_or_else(|| "–".into(), |v| format!("{:.1}%", 100.0 * v)),
            );
        }
        let _ = writeln!(
            s,
            "\nWithin noise (±{:.1} points): {}",
            100.0 * b.tolerance,
            if b.within_noise { "✓" } else { "✗" }
        );
    }

    if !grid_rounds.is_empty() {
        let _ = writeln!(s, "\n## Generated images\n");
        if !class_names.is_empty() {
            let _ = writeln!(s, "One row per class: {}.\n", class_names.join(", "));
        }
        let links: Vec<String> = grid_rounds
            .iter()
            .map(|&round| format!("![round {round}]({})", grid_file(round)))
            .collect();
        let _ = writeln!(s, "{}", links.join(" "));
    }

    let charts = charts(r);
    if !charts.is_empty() {
        let _ = writeln!(s, "\n## Charts\n");
        for c in &charts {
            let _ = writeln!(s, "![{}]({})\n", c.title, c.file);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FaultRecord, GenPoint, NodeSummary, TermRecord};

    /// The phases a host's clock times.
    const HOST_PHASES: [Phase; 5] = [
        Phase::Generate,
        Phase::Learn,
        Phase::Aggregate,
        Phase::Improve,
        Phase::Replicate,
    ];

    const PEERS: [&str; 4] = [
        "12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000",
        "12D3KooWBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb111111",
        "12D3KooWCccccccccccccccccccccccccccccccccccccccc222222",
        "12D3KooWDddddddddddddddddddddddddddddddddddddddd333333",
    ];

    fn synthetic(ok: bool) -> TestnetReport {
        let peers = (0..4)
            .map(|i| NodeSummary {
                index: i,
                peer_id: PEERS[i].into(),
                images: 100 + i,
                epsilon_spent: 1.5,
                epsilon_budget: 8.0,
                ledger_verified: true,
                ledger_entries: 3,
                kills: usize::from(i == 0),
                restarts: 0,
                running_at_end: i != 0,
                checkpoint_bytes_served: 0,
            })
            .collect();
        let rounds = (1..=3u64)
            .map(|round| {
                let (term, host) = if round == 1 { (1, 0) } else { (2, 1) };
                let participant_nodes: Vec<usize> = (0..4).filter(|&n| n != host).collect();
                RoundRecord {
                    round,
                    term,
                    host: PEERS[host].into(),
                    host_index: Some(host),
                    participants: participant_nodes.len(),
                    client_acc: participant_nodes
                        .iter()
                        .map(|&n| (n, 0.5 + 0.05 * round as f64))
                        .collect(),
                    participant_nodes,
                    client_acc_mean: Some(0.5 + 0.1 * round as f64),
                    client_acc_min: Some(0.4 + 0.1 * round as f64),
                    local_acc_mean: Some(0.4 + 0.05 * round as f64),
                    local_acc_min: Some(0.3 + 0.05 * round as f64),
                    local_acc: (0..4).map(|n| (n, 0.4 + 0.05 * round as f64)).collect(),
                    gen_oracle_acc: Some(0.3 + 0.1 * round as f64),
                    gen_frechet: Some(20.0 - round as f64),
                    kept: 50,
                    mean_reward: 0.7,
                    seconds: 10.0 + round as f64,
                    bytes: 2_500_000,
                    bytes_sent: 2_000_000,
                    bytes_received: 500_000,
                    phase_seconds: HOST_PHASES.iter().map(|&p| (p, 1.25)).collect(),
                    phase_bytes: HOST_PHASES.iter().map(|&p| (p, 500_000)).collect(),
                    epsilon: (0..4).map(|n| (n, 0.5 * round as f64)).collect(),
                    checkpoint: format!("{round:064x}"),
                }
            })
            .collect();
        TestnetReport {
            nodes: 4,
            rounds_requested: 3,
            rounds_completed: 3,
            seed: 7,
            alpha: 0.5,
            dp_epsilon: 8.0,
            privacy_unit: privacy::PrivacyUnit::Record,
            delta: 1e-5,
            tiny: true,
            peers,
            terms: vec![
                TermRecord {
                    term: 1,
                    host: PEERS[0].into(),
                    host_index: Some(0),
                },
                TermRecord {
                    term: 2,
                    host: PEERS[1].into(),
                    host_index: Some(1),
                },
            ],
            rounds,
            gen_start: Some(GenPoint {
                oracle_acc: 0.2,
                frechet: 25.0,
            }),
            oracle_acc_real: Some(0.95),
            local_only_seconds: Some(4.5),
            faults: vec![FaultRecord {
                kind: "kill-host".into(),
                round: 2,
                nodes: vec![0],
                at_seconds: 21.5,
                outcome: "n1 elected in term 2".into(),
            }],
            host_kill_recovery_seconds: Some(14.25),
            reelection_seconds: Some(3.5),
            ledgers_verified: true,
            budget_exceeded: false,
            double_counted_rounds: 0,
            double_answered_attempts: 0,
            intruder_refused: Some(true),
            baseline: Some(crate::record::Baseline {
                client_acc_mean: Some(0.62),
                gen_oracle_acc: Some(0.80),
                run_client_acc_mean: Some(0.60),
                run_gen_oracle_acc: Some(0.81),
                tolerance: 0.05,
                within_noise: true,
            }),
            wall_seconds: 61.0,
            ok,
            failures: if ok {
                vec![]
            } else {
                vec!["round 3 was completed by two hosts".into()]
            },
        }
    }

    fn classes() -> Vec<String> {
        (0..10).map(|c| format!("digit {c}")).collect()
    }

    fn grid(round: u64) -> GridImages {
        let (classes, side, per) = (10usize, 8usize, 2usize);
        let labels: Vec<u8> = (0..classes * per).map(|i| (i % classes) as u8).collect();
        let pixels = (0..labels.len() * side * side)
            .map(|i| (i % 256) as u8)
            .collect();
        GridImages {
            round,
            pixels,
            labels,
            classes,
            side,
        }
    }

    const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    #[test]
    fn writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = synthetic(false);
        let written = write_report(dir.path(), &report, &classes(), &[grid(0), grid(3)]).unwrap();
        let pngs = [
            "client_accuracy.png",
            "generator_accuracy.png",
            "generator_frechet.png",
            "epsilon.png",
            "phase_seconds.png",
            "phase_bytes.png",
            "grid_round_0.png",
            "grid_round_3.png",
        ];
        for name in pngs {
            let path = dir.path().join(name);
            assert!(written.contains(&path), "{name} not reported as written");
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.len() > PNG_MAGIC.len(), "{name} is empty");
            assert_eq!(bytes[..8], PNG_MAGIC, "{name} is not a PNG");
        }
        assert_eq!(written.len(), pngs.len() + 2);

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["nodes"], 4);
        assert_eq!(json["rounds_requested"], 3);
        assert_eq!(json["rounds_completed"], 3);
        assert_eq!(json["terms"].as_array().unwrap().len(), 2);
        assert_eq!(json["terms"][1]["host_index"], 1);
        assert_eq!(json["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(json["rounds"][2]["round"], 3);
        assert_eq!(json["ledgers_verified"], true);
        assert_eq!(json["budget_exceeded"], false);
        assert_eq!(json["double_counted_rounds"], 0);
        assert_eq!(json["intruder_refused"], true);
        let back: TestnetReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.rounds.len(), 3);
        // Phases are keyed by name in report.json and read back as the same phases.
        assert_eq!(json["rounds"][0]["phase_seconds"]["learn"], 1.25);
        assert_eq!(json["rounds"][0]["phase_bytes"]["replicate"], 500_000);
        assert_eq!(back.rounds[0].phase_seconds, report.rounds[0].phase_seconds);

        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| 1 | n0 | `12D3Ko…000000` |"), "{md}");
        assert!(md.contains("| 2 | n1 | `12D3Ko…111111` |"), "{md}");
        assert!(md.contains("**FAILED**"), "{md}");
        assert!(
            md.contains("| final client accuracy (mean) | 62.0% | 60.0% | -2.0 points | |"),
            "{md}"
        );
        assert!(md.contains("## Failures"), "{md}");
        assert!(md.contains("- round 3 was completed by two hosts"), "{md}");
        assert!(md.contains("![round 0](grid_round_0.png)"), "{md}");
        assert!(md.contains("![round 3](grid_round_3.png)"), "{md}");
        assert!(md.contains("(client_accuracy.png)"), "{md}");
        assert!(md.contains("| kill-host | 2 | n0 | 21.50 | n1 elected in term 2 |"));
        assert!(md.contains("14.25 s"), "{md}");
        // The phase table runs in round order.
        assert!(
            md.contains("| round | generate | learn | aggregate | improve | replicate |"),
            "{md}"
        );
        // Round 3: mean 80.0%, worst 70.0%, local only 55.0%, generator 60.0%, Fréchet 17.00,
        // 13.00 s, 2.00 MB out and 0.50 MB in.
        assert!(
            md.contains("| 3 | 2 | n1 | 3 (n0, n2, n3) | 80.0% | 70.0% | 55.0% | 60.0% | 17.00 | 13.00 | 2.00 / 0.50 | 50 |"),
            "{md}"
        );
        assert!(md.contains("| intruder refused | yes | ✓ |"), "{md}");
        // The local-only reference: a sentence, and per node next to its last client accuracy
        // (n1 hosted rounds 2–3, so its last is round 1).
        assert!(
            md.contains(
                "After round 3: 55.0% local only against 80.0% in the federation (+25.0 points)."
            ),
            "{md}"
        );
        assert!(
            md.contains("(trained after the nodes stopped, in 4.5 s)"),
            "{md}"
        );
        assert!(
            md.contains("| n0 | `12D3Ko…000000` | 100 | 65.0% (round 3) | 55.0% | +10.0 points |"),
            "{md}"
        );
        assert!(
            md.contains("| n1 | `12D3Ko…111111` | 101 | 55.0% (round 1) | 45.0% | +10.0 points |"),
            "{md}"
        );
        let r3 = &json["rounds"][2];
        assert!((r3["local_acc_mean"].as_f64().unwrap() - 0.55).abs() < 1e-12);
        assert!((r3["local_acc_min"].as_f64().unwrap() - 0.45).abs() < 1e-12);
        assert_eq!(r3["local_acc"].as_object().unwrap().len(), 4);
        assert_eq!(json["local_only_seconds"], 4.5);
    }

    #[test]
    fn client_chart_draws_local_only_as_a_dashed_reference() {
        let report = synthetic(true);
        let charts = super::charts(&report);
        let client = charts
            .iter()
            .find(|c| c.file == "client_accuracy.png")
            .unwrap();
        let dashed: Vec<&Series> = client.series.iter().filter(|s| s.dashed).collect();
        assert_eq!(dashed.len(), 1);
        assert_eq!(dashed[0].label, "local only (mean)");
        let ys: Vec<f64> = dashed[0].points.iter().map(|p| p.1).collect();
        for (y, want) in ys.iter().zip([45.0, 50.0, 55.0]) {
            assert!((y - want).abs() < 1e-9, "{ys:?}");
        }
        // Without the reference (an older report.json) the chart has no dashed line.
        let mut old = synthetic(true);
        for r in &mut old.rounds {
            r.local_acc_mean = None;
        }
        let charts = super::charts(&old);
        assert!(charts[0].series.iter().all(|s| !s.dashed));
    }

    #[test]
    fn ok_report_has_no_failures() {
        let md = markdown(&synthetic(true), &classes());
        assert!(md.contains("**OK**"));
        assert!(!md.contains("## Failures"));
        assert!(md.contains("## Hosts"));
    }

    #[test]
    fn zero_rounds_still_writes_json_and_md() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = synthetic(false);
        report.rounds.clear();
        report.rounds_completed = 0;
        report.intruder_refused = None;
        let written = write_report(dir.path(), &report, &classes(), &[]).unwrap();
        assert_eq!(
            written,
            vec![dir.path().join("report.json"), dir.path().join("report.md")]
        );
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("No round completed."));
        assert!(md.contains("| intruder refused | n/a | – |"), "{md}");
        assert!(md.contains("0/3 rounds"));
        assert!(!dir.path().join("client_accuracy.png").exists());

        let empty = write_report(
            &dir.path().join("empty"),
            &TestnetReport::default(),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(empty.len(), 2);
    }

    #[test]
    fn short_peer_ids() {
        assert_eq!(short_peer(""), "–");
        assert_eq!(short_peer("abc"), "abc");
        assert_eq!(short_peer(PEERS[0]), "12D3Ko…000000");
    }
}
