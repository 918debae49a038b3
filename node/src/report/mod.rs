//! Reports a person reads (Markdown, PNG plots and image grids) next to the same numbers as JSON.

pub mod grid;
pub mod plots;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plots::{line_chart, Series};

use crate::simulate::{Method, RoundReport, RunImages, RunReport};

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("–".into(), pct)
}

/// A difference of two accuracies in percentage points, signed.
fn points(diff: f64) -> String {
    format!("{:+.1} points", 100.0 * diff)
}

/// (round, value) of every round where `f` has a value.
fn per_round(report: &RunReport, f: &dyn Fn(&RoundReport) -> Option<f64>) -> Vec<(f64, f64)> {
    report
        .rounds
        .iter()
        .filter_map(|r| f(r).map(|y| (r.round as f64, y)))
        .collect()
}

/// The lines of the client accuracy chart: mean, worst and, dashed, the local-only mean.
fn client_series(report: &RunReport) -> Vec<Series> {
    let xs = |f: &dyn Fn(&RoundReport) -> Option<f64>| per_round(report, f);
    let mut series = vec![
        Series::line("mean", xs(&|r| Some(r.client_acc_mean))),
        Series::line("worst", xs(&|r| Some(r.client_acc_min))),
    ];
    let local = xs(&|r| r.local_acc_mean);
    if !local.is_empty() {
        series.push(Series::reference("local only (mean)", local));
    }
    series
}

/// Writes `report.json`, `report.md`, the plots and the image grids of one run into `dir`.
pub fn write_run(
    dir: &Path,
    report: &RunReport,
    images: &RunImages,
    classes: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let xs = |f: &dyn Fn(&RoundReport) -> Option<f64>| per_round(report, f);
    line_chart(
        &dir.join("client_accuracy.png"),
        &format!("{}: client accuracy on real test images", report.method),
        "round",
        "accuracy",
        &client_series(report),
    )?;
    if report.rounds.iter().any(|r| r.gen_oracle_acc.is_some()) {
        let mut acc = vec![(0.0, report.gen_oracle_acc_start)];
        acc.extend(xs(&|r| r.gen_oracle_acc));
        let mut fd = vec![(0.0, report.gen_frechet_start)];
        fd.extend(xs(&|r| r.gen_frechet));
        line_chart(
            &dir.join("generator_oracle_accuracy.png"),
            &format!("{}: generator conditional accuracy (oracle)", report.method),
            "round",
            "oracle accuracy",
            &[
                Series::line("generated", acc),
                Series::reference(
                    "oracle on real images",
                    vec![
                        (0.0, report.oracle_acc_real),
                        (report.rounds.len() as f64, report.oracle_acc_real),
                    ],
                ),
            ],
        )?;
        line_chart(
            &dir.join("generator_frechet.png"),
            &format!(
                "{}: Fréchet distance in oracle feature space",
                report.method
            ),
            "round",
            "Fréchet distance",
            &[Series::line("generated vs real test", fd)],
        )?;
    }
    for (name, set) in [
        ("generated_start.png", &images.start),
        ("generated_end.png", &images.end),
    ] {
        if let Some((px, labels)) = set {
            grid::write_grid(
                &dir.join(name),
                px,
                labels,
                classes.len(),
                report.image_side,
                2,
            )?;
        }
    }
    std::fs::write(dir.join("report.md"), run_markdown(report, classes))?;
    Ok(())
}

/// The Markdown report of one run.
pub fn run_markdown(r: &RunReport, classes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# fedmmkt simulate: {}\n", r.method);
    let _ = writeln!(
        s,
        "{} clients, Dirichlet α = {}, {} rounds, seed {}, data: {}. Total {:.1} s.\n",
        r.config.clients, r.config.alpha, r.config.rounds, r.seed, r.data, r.total_seconds
    );
    let _ = writeln!(s, "Oracle accuracy on real test images: {}. Generator before round 1: oracle accuracy {}, Fréchet {:.2}.\n", pct(r.oracle_acc_real), pct(r.gen_oracle_acc_start), r.gen_frechet_start);
    let has_local = r.rounds.iter().any(|x| x.local_acc_mean.is_some());
    if let Some((last, local)) = r
        .rounds
        .last()
        .and_then(|l| l.local_acc_mean.map(|m| (l, m)))
    {
        let _ = writeln!(
            s,
            "Local-only reference (the same clients trained on their own data alone for as many rounds: method local, same config and seed): {} mean / {} worst after round {}; {} adds {} to the mean client accuracy.\n",
            pct(local),
            opt_pct(last.local_acc_min),
            last.round,
            r.method,
            points(last.client_acc_mean - local)
        );
    }
    let local_head = if has_local { " local only mean |" } else { "" };
    let _ = writeln!(s, "| round | client acc mean | client acc worst |{local_head} generator oracle acc | Fréchet | kept | mean ρ | seconds | down MB | up MB |");
    let _ = writeln!(
        s,
        "|---|---|---|{}---|---|---|---|---|---|---|",
        if has_local { "---|" } else { "" }
    );
    for x in &r.rounds {
        let local = if has_local {
            format!(" {} |", opt_pct(x.local_acc_mean))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} |{local} {} | {} | {} | {} | {:.1} | {:.2} | {:.2} |",
            x.round,
            pct(x.client_acc_mean),
            pct(x.client_acc_min),
            opt_pct(x.gen_oracle_acc),
            x.gen_frechet.map_or("–".into(), |v| format!("{v:.2}")),
            x.kept.map_or("–".into(), |v| v.to_string()),
            x.mean_reward.map_or("–".into(), |v| format!("{v:.3}")),
            x.seconds,
            x.downlink_bytes as f64 / 1e6,
            x.uplink_bytes as f64 / 1e6
        );
    }
    if let Some(last) = r.rounds.last() {
        let _ = writeln!(s, "\n## Clients after round {}\n", last.round);
        match &last.local_acc {
            Some(_) => {
                let _ = writeln!(
                    s,
                    "| client | architecture | private images | accuracy | local only | gain |\n|---|---|---|---|---|---|"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| client | architecture | private images | accuracy |\n|---|---|---|---|"
                );
            }
        }
        for (k, acc) in last.client_acc.iter().enumerate() {
            let local = last.local_acc.as_ref().map_or(String::new(), |l| {
                l.get(k).map_or(" – | – |".into(), |v| {
                    format!(" {} | {} |", pct(*v), points(acc - v))
                })
            });
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} |{local}",
                r.client_archs
                    .get(k)
                    .map_or("–".into(), |a| format!("{a:?}")),
                r.client_sizes.get(k).map_or("–".into(), usize::to_string),
                pct(*acc)
            );
        }
        if let Some(end) = &last.gen_per_class_acc {
            let _ = writeln!(s, "\n## Generator conditional accuracy per class\n\n| class | before round 1 | after round {} |\n|---|---|---|", last.round);
            for (c, name) in classes.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} |",
                    r.gen_per_class_acc_start
                        .get(c)
                        .map_or("–".into(), |v| pct(*v)),
                    end.get(c).map_or("–".into(), |v| pct(*v))
                );
            }
            let _ = writeln!(
                s,
                "\n![start](generated_start.png) ![end](generated_end.png)"
            );
        }
    }
    let _ = writeln!(s, "\n![client accuracy](client_accuracy.png)");
    s
}

/// Writes `compare.json`, `compare.md` and `compare.png` for several runs of one config.
pub fn write_compare(dir: &Path, runs: &BTreeMap<String, RunReport>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({ "runs": runs });
    std::fs::write(
        dir.join("compare.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let series: Vec<Series> = runs
        .iter()
        .map(|(name, r)| {
            let points = r
                .rounds
                .iter()
                .map(|x| (x.round as f64, x.client_acc_mean))
                .collect();
            // The local-only run is every other run's reference.
            if r.method == Method::Local.name() {
                Series::reference(name.clone(), points)
            } else {
                Series::line(name.clone(), points)
            }
        })
        .collect();
    line_chart(
        &dir.join("compare.png"),
        "mean client accuracy per round",
        "round",
        "accuracy",
        &series,
    )?;
    let gen: Vec<Series> = runs
        .iter()
        .filter(|(_, r)| r.rounds.iter().any(|x| x.gen_oracle_acc.is_some()))
        .map(|(name, r)| {
            let mut points = vec![(0.0, r.gen_oracle_acc_start)];
            points.extend(
                r.rounds
                    .iter()
                    .filter_map(|x| x.gen_oracle_acc.map(|a| (x.round as f64, a))),
            );
            Series::line(name.clone(), points)
        })
        .collect();
    line_chart(
        &dir.join("compare_generator.png"),
        "generator oracle accuracy per round",
        "round",
        "oracle accuracy",
        &gen,
    )?;
    std::fs::write(dir.join("compare.md"), compare_markdown(runs))?;
    Ok(())
}

/// The comparison table: final-round numbers of every run.
pub fn compare_markdown(runs: &BTreeMap<String, RunReport>) -> String {
    let mut s = String::from("# fedmmkt simulate --compare\n\n");
    if let Some(r) = runs.values().next() {
        let _ = writeln!(
            s,
            "{} clients, α = {}, {} rounds, seed {}, data: {}. Oracle on real test images: {}.\n",
            r.config.clients,
            r.config.alpha,
            r.config.rounds,
            r.seed,
            r.data,
            pct(r.oracle_acc_real)
        );
    }
    let _ = writeln!(s, "| run | client acc mean | client acc worst | vs local only | generator oracle acc (start → end) | Fréchet (start → end) | seconds |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (name, r) in runs {
        let Some(last) = r.rounds.last() else {
            continue;
        };
        let gen = last.gen_oracle_acc.map_or("–".into(), |a| {
            format!("{} → {}", pct(r.gen_oracle_acc_start), pct(a))
        });
        let fd = last.gen_frechet.map_or("–".into(), |f| {
            format!("{:.2} → {f:.2}", r.gen_frechet_start)
        });
        let vs_local = last
            .local_acc_mean
            .map_or("–".into(), |l| points(last.client_acc_mean - l));
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {vs_local} | {gen} | {fd} | {:.0} |",
            pct(last.client_acc_mean),
            pct(last.client_acc_min),
            r.total_seconds
        );
    }
    let _ = writeln!(
        s,
        "\n\"vs local only\": final mean client accuracy minus that of the same clients (architectures, seeds, data) trained on their own data alone: the local run (dashed in compare.png), or for FedAvg a local run of its one architecture.\n\n![compare](compare.png) ![generator](compare_generator.png)"
    );
    s
}

/// Writes `privacy_utility.json` and `.md`: final accuracies of FedMMKT per privacy budget.
pub fn write_privacy_utility(dir: &Path, runs: &BTreeMap<String, RunReport>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rows: Vec<serde_json::Value> = runs
        .values()
        .filter_map(|r| {
            let last = r.rounds.last()?;
            Some(serde_json::json!({
                "unit": r.config.dp.map(|d| d.unit),
                "epsilon": r.config.dp.map(|d| d.epsilon),
                "delta": r.config.dp.map(|d| d.delta),
                "noise_multiplier": r.dp_noise_multiplier,
                "epsilon_spent_max": last.epsilon.as_ref().map(|e| e.iter().copied().fold(0.0, f64::max)),
                "client_acc_mean": last.client_acc_mean,
                "client_acc_min": last.client_acc_min,
                "gen_oracle_acc": last.gen_oracle_acc,
                "gen_oracle_acc_start": r.gen_oracle_acc_start,
                "ledgers_verified": r.ledgers_verified,
            }))
        })
        .collect();
    std::fs::write(
        dir.join("privacy_utility.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "runs": rows }))?,
    )?;
    std::fs::write(
        dir.join("privacy_utility.md"),
        privacy_utility_markdown(runs),
    )?;
    // Client mean and worst accuracy and the generator's gain against ε, one line per unit
    // (ε = ∞ drawn at twice the largest finite ε, as the non-private end of each line).
    let finite = runs
        .values()
        .filter_map(|r| r.config.dp.map(|d| d.epsilon))
        .fold(1.0, f64::max);
    let mut series = Vec::new();
    for unit in privacy::PrivacyUnit::ALL {
        let mut points: Vec<(f64, &RunReport)> = runs
            .values()
            .filter(|r| r.config.dp.is_none_or(|d| d.unit == unit))
            .map(|r| (r.config.dp.map_or(2.0 * finite, |d| d.epsilon), r))
            .collect();
        if points.iter().all(|(_, r)| r.config.dp.is_none()) {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line = |f: &dyn Fn(&RunReport) -> Option<f64>| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter_map(|(e, r)| Some((*e, f(r)?)))
                .collect()
        };
        let last = |r: &RunReport| r.rounds.last().cloned();
        series.push(Series::line(
            format!("{unit}: client mean"),
            line(&|r| last(r).map(|l| l.client_acc_mean)),
        ));
        series.push(Series::line(
            format!("{unit}: client worst"),
            line(&|r| last(r).map(|l| l.client_acc_min)),
        ));
        series.push(Series::line(
            format!("{unit}: generator gain"),
            line(&|r| Some(last(r)?.gen_oracle_acc? - r.gen_oracle_acc_start)),
        ));
    }
    line_chart(
        &dir.join("privacy_utility.png"),
        "FedMMKT privacy–utility (ε = ∞ at the right end)",
        "ε per client over the run",
        "accuracy / gain",
        &series,
    )?;
    Ok(())
}

/// The privacy–utility table.
pub fn privacy_utility_markdown(runs: &BTreeMap<String, RunReport>) -> String {
    let mut s = String::from("# FedMMKT privacy–utility\n\n");
    let _ = writeln!(s, "| unit | ε budget | δ | noise multiplier z | max ε spent | client acc mean | client acc worst | generator oracle acc (start → end) | generator gain | ledgers verify |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<&RunReport> = runs.values().collect();
    rows.sort_by(|a, b| {
        let e = |r: &RunReport| r.config.dp.map_or(f64::INFINITY, |d| d.epsilon);
        let u = |r: &RunReport| r.config.dp.map(|d| d.unit.as_str());
        u(a).cmp(&u(b)).then(e(a).total_cmp(&e(b)))
    });
    for r in rows {
        let Some(last) = r.rounds.last() else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.config.dp.map_or("–", |d| d.unit.as_str()),
            r.config.dp.map_or("∞".into(), |d| d.epsilon.to_string()),
            r.config.dp.map_or("–".into(), |d| d.delta.to_string()),
            r.dp_noise_multiplier
                .map_or("–".into(), |z| format!("{z:.3}")),
            last.epsilon.as_ref().map_or("–".into(), |e| format!(
                "{:.3}",
                e.iter().copied().fold(0.0, f64::max)
            )),
            pct(last.client_acc_mean),
            pct(last.client_acc_min),
            last.gen_oracle_acc.map_or("–".into(), |a| format!(
                "{} → {}",
                pct(r.gen_oracle_acc_start),
                pct(a)
            )),
            last.gen_oracle_acc.map_or("–".into(), |a| format!(
                "{:+.1} points",
                100.0 * (a - r.gen_oracle_acc_start)
            )),
            r.ledgers_verified.map_or("–".into(), |v| if v {
                "yes".into()
            } else {
                "NO".to_string()
            }),
        );
    }
    s
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// A run's name and its (column, (mean, sd)) pairs.
type SeedRow = (String, Vec<(&'static str, (f64, f64))>);

/// Every run's numbers at `round` (None: its last), as mean and sample standard deviation
/// over seeds.
fn seeds_rows(
    all: &BTreeMap<u64, BTreeMap<String, RunReport>>,
    round: Option<usize>,
) -> Vec<SeedRow> {
    let at = |r: &RunReport| -> Option<RoundReport> {
        match round {
            Some(n) => r.rounds.iter().find(|x| x.round == n).cloned(),
            None => r.rounds.last().cloned(),
        }
    };
    let names: std::collections::BTreeSet<&String> = all.values().flat_map(|m| m.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let runs: Vec<&RunReport> = all.values().filter_map(|m| m.get(name)).collect();
            let last = |f: &dyn Fn(&RunReport) -> Option<f64>| -> Vec<f64> {
                runs.iter().filter_map(|r| f(r)).collect()
            };
            let mut cols = vec![
                (
                    "client_acc_mean",
                    mean_sd(&last(&|r| at(r).map(|x| x.client_acc_mean))),
                ),
                (
                    "client_acc_min",
                    mean_sd(&last(&|r| at(r).map(|x| x.client_acc_min))),
                ),
            ];
            let gen = last(&|r| at(r).and_then(|x| x.gen_oracle_acc));
            if !gen.is_empty() {
                cols.push((
                    "gen_oracle_acc_start",
                    mean_sd(&last(&|r| Some(r.gen_oracle_acc_start))),
                ));
                cols.push(("gen_oracle_acc", mean_sd(&gen)));
                cols.push((
                    "gen_oracle_acc_gain",
                    mean_sd(&last(&|r| {
                        at(r)
                            .and_then(|x| x.gen_oracle_acc)
                            .map(|a| a - r.gen_oracle_acc_start)
                    })),
                ));
                cols.push((
                    "gen_frechet_start",
                    mean_sd(&last(&|r| Some(r.gen_frechet_start))),
                ));
                cols.push((
                    "gen_frechet",
                    mean_sd(&last(&|r| at(r).and_then(|x| x.gen_frechet))),
                ));
            }
            cols.push((
                "oracle_acc_real",
                mean_sd(&last(&|r| Some(r.oracle_acc_real))),
            ));
            if round.is_none() {
                cols.push(("total_seconds", mean_sd(&last(&|r| Some(r.total_seconds)))));
            }
            (name.clone(), cols)
        })
        .collect()
}

/// The `seeds.json` object of one table: run name → column → {mean, sd}.
fn seeds_json(rows: Vec<SeedRow>) -> serde_json::Value {
    let rows: serde_json::Map<String, serde_json::Value> = rows
        .into_iter()
        .map(|(name, cols)| {
            let obj: serde_json::Map<String, serde_json::Value> = cols
                .into_iter()
                .map(|(k, (m, sd))| (k.to_string(), serde_json::json!({ "mean": m, "sd": sd })))
                .collect();
            (name, serde_json::Value::Object(obj))
        })
        .collect();
    serde_json::Value::Object(rows)
}

/// Writes `seeds.json` and `seeds.md`: every run's final numbers, mean ± sd over seeds, and
/// the same at each round of `at` (`at_round` in the JSON, keyed by round).
pub fn write_seeds(
    dir: &Path,
    all: &BTreeMap<u64, BTreeMap<String, RunReport>>,
    at: &[usize],
) -> anyhow::Result<()> {
    let at_round: serde_json::Map<String, serde_json::Value> = at
        .iter()
        .map(|&n| (n.to_string(), seeds_json(seeds_rows(all, Some(n)))))
        .collect();
    let json = serde_json::json!({
        "seeds": all.keys().collect::<Vec<_>>(),
        "runs": seeds_json(seeds_rows(all, None)),
        "at_round": at_round,
    });
    std::fs::write(dir.join("seeds.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(dir.join("seeds.md"), seeds_markdown(all, at))?;
    Ok(())
}

/// The multi-seed tables (mean ± sample standard deviation): the final round, then each
/// round of `at`.
pub fn seeds_markdown(all: &BTreeMap<u64, BTreeMap<String, RunReport>>, at: &[usize]) -> String {
    let seeds: Vec<String> = all.keys().map(u64::to_string).collect();
    let mut s = format!(
        "# fedmmkt simulate over seeds {}\n\nMean ± sample standard deviation over {} seeds.\n",
        seeds.join(", "),
        seeds.len()
    );
    let _ = write!(s, "\n## Final round\n\n{}", seeds_table(all, None));
    for &n in at {
        let _ = write!(s, "\n## Round {n}\n\n{}", seeds_table(all, Some(n)));
    }
    s
}

/// One multi-seed table at `round` (None: the last).
fn seeds_table(all: &BTreeMap<u64, BTreeMap<String, RunReport>>, round: Option<usize>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| run | client acc mean | client acc worst | generator oracle acc start → end | gain (points) | Fréchet start → end | seconds |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let f = |cols: &[(&str, (f64, f64))], key: &str, scale: f64, digits: usize| -> Option<String> {
        cols.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, (m, sd))| format!("{:.*} ± {:.*}", digits, m * scale, digits, sd * scale))
    };
    let rows = seeds_rows(all, round);
    for (name, cols) in &rows {
        let na = || "–".to_string();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            f(cols, "client_acc_mean", 100.0, 1).unwrap_or_else(na),
            f(cols, "client_acc_min", 100.0, 1).unwrap_or_else(na),
            match (
                f(cols, "gen_oracle_acc_start", 100.0, 1),
                f(cols, "gen_oracle_acc", 100.0, 1)
            ) {
                (Some(a), Some(b)) => format!("{a} → {b}"),
                _ => na(),
            },
            f(cols, "gen_oracle_acc_gain", 100.0, 1).unwrap_or_else(na),
            match (
                f(cols, "gen_frechet_start", 1.0, 2),
                f(cols, "gen_frechet", 1.0, 2)
            ) {
                (Some(a), Some(b)) => format!("{a} → {b}"),
                _ => na(),
            },
            f(cols, "total_seconds", 1.0, 0).unwrap_or_else(na),
        );
    }
    if let Some(o) = rows
        .first()
        .and_then(|(_, c)| f(c, "oracle_acc_real", 100.0, 1))
    {
        let _ = writeln!(s, "\nOracle accuracy on real test images: {o}.");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::run::PhaseSeconds;
    use crate::simulate::SimConfig;
    use models::classifier::Arch;

    /// A 2-round, 2-client run; `local` adds a local-only reference 20 points below.
    fn report(method: &str, local: bool) -> RunReport {
        let rounds = (1..=2)
            .map(|round| {
                let acc = vec![0.5 + 0.1 * round as f64, 0.3 + 0.1 * round as f64];
                let reference: Vec<f64> = acc.iter().map(|a| a - 0.2).collect();
                RoundReport {
                    round,
                    client_acc_mean: (acc[0] + acc[1]) / 2.0,
                    client_acc_min: acc[1],
                    client_acc: acc,
                    gen_oracle_acc: None,
                    gen_frechet: None,
                    gen_per_class_acc: None,
                    kept: None,
                    mean_reward: None,
                    seconds: 1.0,
                    phases: PhaseSeconds::default(),
                    downlink_bytes: 0,
                    uplink_bytes: 0,
                    participants: 2,
                    abstained: 0,
                    epsilon: None,
                    local_acc_mean: local.then(|| (reference[0] + reference[1]) / 2.0),
                    local_acc_min: local.then_some(reference[1]),
                    local_acc: local.then_some(reference),
                }
            })
            .collect();
        RunReport {
            method: method.into(),
            seed: 0,
            rounds,
            gen_oracle_acc_start: 0.5,
            gen_frechet_start: 10.0,
            gen_per_class_acc_start: vec![],
            oracle_acc_real: 0.9,
            client_archs: vec![Arch::Mlp, Arch::SmallCnn],
            client_sizes: vec![100, 200],
            data: "test".into(),
            image_side: 28,
            config: SimConfig::default(),
            total_seconds: 3.0,
            dp_noise_multiplier: None,
            privacy_unit: None,
            private_use: Vec::new(),
            ledgers_verified: None,
        }
    }

    #[test]
    fn the_local_only_reference_is_a_column_a_gain_and_a_dashed_line() {
        let md = run_markdown(&report("fedmmkt", true), &[]);
        // Round 2: mean 60.0%, worst 50.0%, local-only mean 40.0%.
        assert!(
            md.contains("| client acc worst | local only mean |"),
            "{md}"
        );
        assert!(md.contains("| 2 | 60.0% | 50.0% | 40.0% | – |"), "{md}");
        assert!(md.contains("fedmmkt adds +20.0 points"), "{md}");
        // Client 0 after round 2: 70.0% federated, 50.0% alone.
        assert!(
            md.contains("| 0 | Mlp | 100 | 70.0% | 50.0% | +20.0 points |"),
            "{md}"
        );
        let series = client_series(&report("fedmmkt", true));
        let dashed: Vec<&Series> = series.iter().filter(|s| s.dashed).collect();
        assert_eq!(dashed.len(), 1);
        let want = [(1.0, 0.3), (2.0, 0.4)];
        assert_eq!(dashed[0].points.len(), want.len());
        for (got, want) in dashed[0].points.iter().zip(want) {
            assert!(got.0 == want.0 && (got.1 - want.1).abs() < 1e-12, "{got:?}");
        }

        let plain = run_markdown(&report("local", false), &[]);
        assert!(!plain.contains("local only"), "{plain}");
        assert!(plain.contains("| 2 | 60.0% | 50.0% | – |"), "{plain}");
        assert!(client_series(&report("local", false))
            .iter()
            .all(|s| !s.dashed));

        let dir = tempfile::tempdir().unwrap();
        let images = RunImages {
            start: None,
            end: None,
        };
        write_run(dir.path(), &report("fedmmkt", true), &images, &[]).unwrap();
        assert!(dir.path().join("client_accuracy.png").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        let r2 = &json["rounds"][1];
        assert!((r2["local_acc_mean"].as_f64().unwrap() - 0.4).abs() < 1e-12);
        assert!((r2["local_acc_min"].as_f64().unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(r2["local_acc"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn compare_shows_each_run_against_local_only() {
        let runs: BTreeMap<String, RunReport> = [
            ("fedmmkt".to_string(), report("fedmmkt", true)),
            ("local".to_string(), report("local", false)),
        ]
        .into_iter()
        .collect();
        let md = compare_markdown(&runs);
        assert!(
            md.contains("| fedmmkt | 60.0% | 50.0% | +20.0 points |"),
            "{md}"
        );
        assert!(md.contains("| local | 60.0% | 50.0% | – |"), "{md}");
    }
}
