//! `fedmmkt privacy`: the accountant (ε for a noise level, noise for a target ε), the node's
//! budget ledger (audit, cap) and an empirical canary audit of DP-SGD training.
//!
//! Exit codes: 0 success; 1 runtime error (I/O, storage, ...); 2 bad arguments; 3 the ledger's
//! hash chain or signatures do not verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use privacy::accountant::{epsilon_for, noise_multiplier_for};
use privacy::error::PrivacyError;
use privacy::ledger::{AuditReport, Budget, Ledger};

use super::EXIT_USAGE;
use crate::audit::canary::{self, CanaryConfig, InvalidAudit};
/// Exit code when the ledger does not verify.
const EXIT_CHAIN_BROKEN: u8 = 3;

/// Arguments of `fedmmkt privacy`.
#[derive(clap::Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    command: PrivacyCommand,
}

#[derive(clap::Subcommand)]
enum PrivacyCommand {
    /// ε after T rounds of the Poisson-subsampled Gaussian (RDP accountant, Balle et al. 2020).
    Epsilon(EpsilonArgs),
    /// Smallest noise multiplier that keeps ε within a target over T rounds.
    Noise(NoiseArgs),
    /// Every ledger entry with cumulative ε, the remaining budget, and chain verification.
    Audit(AuditArgs),
    /// Set the node's privacy budget (ε_max at δ); releases beyond it are refused.
    Budget(BudgetArgs),
    /// One-run canary audit of record-level DP-SGD: an empirical lower bound on its ε.
    ///
    /// Trains a task model with `models::dp_sgd::train_private` on real embedded Fashion-MNIST
    /// records plus M canaries (random-pixel images with random labels, each included with
    /// probability 1/2), scores every canary by the log-probability of its label, guesses "in"
    /// for the k = max(1, M/10) highest scores and "out" for the k lowest, and turns the
    /// correct guesses into a lower bound on ε at 95 % confidence and the run's δ (Steinke,
    /// Nasr & Jagielski 2023). A bound above the claimed ε means the training leaks more than
    /// its accounting says.
    CanaryAudit(CanaryAuditArgs),
}

#[derive(clap::Args)]
struct EpsilonArgs {
    /// Noise multiplier z: noise std of the aggregate divided by the clip (L2 sensitivity).
    #[arg(long, allow_negative_numbers = true)]
    noise_multiplier: f64,
    /// Probability q in (0, 1] that a client takes part in a round (1 = every round).
    #[arg(long, allow_negative_numbers = true)]
    sample_rate: f64,
    /// Number of rounds T ≥ 1.
    #[arg(long)]
    rounds: u64,
    /// δ in (0, 1).
    #[arg(long, allow_negative_numbers = true)]
    delta: f64,
    /// Print one JSON object: {"epsilon": ..., "order": ...}.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct NoiseArgs {
    /// Target ε > 0.
    #[arg(long, allow_negative_numbers = true)]
    epsilon: f64,
    /// δ in (0, 1).
    #[arg(long, allow_negative_numbers = true)]
    delta: f64,
    /// Probability q in (0, 1] that a client takes part in a round.
    #[arg(long, allow_negative_numbers = true)]
    sample_rate: f64,
    /// Number of rounds T ≥ 1.
    #[arg(long)]
    rounds: u64,
    /// Print one JSON object: {"noise_multiplier": ...}.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// Node data directory [default: $XDG_DATA_HOME/fedmmkt, ~/.local/share/fedmmkt or ./fedmmkt-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the whole audit as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BudgetArgs {
    /// Cap ε_max > 0 on the node's total spend.
    #[arg(long, allow_negative_numbers = true)]
    epsilon: f64,
    /// δ in (0, 1) at which the cap is measured.
    #[arg(long, allow_negative_numbers = true)]
    delta: f64,
    /// Node data directory [default: $XDG_DATA_HOME/fedmmkt, ~/.local/share/fedmmkt or ./fedmmkt-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Arguments of `fedmmkt privacy canary-audit`.
#[derive(clap::Args)]
struct CanaryAuditArgs {
    /// Claimed ε > 0 of the run: z is calibrated so training is (ε, δ)-DP per record.
    #[arg(long, default_value_t = 8.0, allow_negative_numbers = true)]
    epsilon: f64,
    /// δ in (0, 1) of the claim and of the bound.
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    delta: f64,
    /// Number M ≥ 2 of canaries.
    #[arg(long, default_value_t = 1000)]
    canaries: usize,
    /// Real Fashion-MNIST records in the private set (1..=10000).
    #[arg(long, default_value_t = 3000)]
    records: usize,
    /// Passes over the private set.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Expected private batch size (Poisson rate q = batch / n).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Per-example clip C.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    clip: f64,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 2e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Task model architecture.
    #[arg(long, value_enum, default_value_t = AuditArch::Mlp)]
    arch: AuditArch,
    /// Train without clipping or noise (no privacy: the audit should then find a large ε).
    #[arg(long)]
    no_noise: bool,
    /// Seed of canaries, inclusion, records, model, sampling and noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object: {"epsilon_claimed" (null with --no-noise),
    /// "epsilon_lower_bound", "canaries", "guesses", "correct"}.
    #[arg(long)]
    json: bool,
}

/// Architectures `canary-audit` can train.
#[derive(Clone, Copy, clap::ValueEnum)]
enum AuditArch {
    /// 784-256-128 multilayer perceptron.
    Mlp,
    /// Two strided convolutions (8 and 16 channels).
    SmallCnn,
    /// Two strided convolutions (16 and 32 channels).
    WideCnn,
}

impl From<AuditArch> for models::classifier::Arch {
    fn from(a: AuditArch) -> Self {
        match a {
            AuditArch::Mlp => Self::Mlp,
            AuditArch::SmallCnn => Self::SmallCnn,
            AuditArch::WideCnn => Self::WideCnn,
        }
    }
}

/// Runs `fedmmkt privacy`.
pub fn run(args: PrivacyArgs) -> anyhow::Result<ExitCode> {
    let result = match args.command {
        PrivacyCommand::Epsilon(a) => epsilon(&a),
        PrivacyCommand::Noise(a) => noise(&a),
        PrivacyCommand::Audit(a) => audit(&a),
        PrivacyCommand::Budget(a) => budget(&a),
        PrivacyCommand::CanaryAudit(a) => canary_audit(&a),
    };
    match result {
        Err(err) if is_usage_error(&err) => {
            eprintln!("error: {err:#}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        other => other,
    }
}

/// The node's default data directory: `$XDG_DATA_HOME/fedmmkt`, `$HOME/.local/share/fedmmkt`,
/// or `./fedmmkt-data` when neither variable is set.
pub fn default_data_dir() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(xdg) = from("XDG_DATA_HOME") {
        xdg.join("fedmmkt")
    } else if let Some(home) = from("HOME") {
        home.join(".local").join("share").join("fedmmkt")
    } else {
        PathBuf::from("fedmmkt-data")
    }
}

fn is_usage_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<PrivacyError>()
        .is_some_and(PrivacyError::is_invalid_argument)
        || err.downcast_ref::<InvalidAudit>().is_some()
}

fn epsilon(a: &EpsilonArgs) -> anyhow::Result<ExitCode> {
    let e = epsilon_for(a.noise_multiplier, a.sample_rate, a.rounds, a.delta)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "epsilon": e.epsilon, "order": e.order })
        );
    } else {
        println!(
            "ε = {:.6} at δ = {:e} (best RDP order α = {})",
            e.epsilon, a.delta, e.order
        );
        println!(
            "  Poisson-subsampled Gaussian, noise multiplier z = {}, sample rate q = {}, {} rounds",
            a.noise_multiplier, a.sample_rate, a.rounds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn noise(a: &NoiseArgs) -> anyhow::Result<ExitCode> {
    let z = noise_multiplier_for(a.epsilon, a.delta, a.sample_rate, a.rounds)?;
    if a.json {
        println!("{}", serde_json::json!({ "noise_multiplier": z }));
    } else {
        let got = epsilon_for(z, a.sample_rate, a.rounds, a.delta)?;
        println!("noise multiplier z = {z:.6}");
        println!(
            "  smallest z with ε ≤ {} at δ = {:e} over {} rounds at q = {} (it gives ε = {:.6})",
            a.epsilon, a.delta, a.rounds, a.sample_rate, got.epsilon
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn audit(a: &AuditArgs) -> anyhow::Result<ExitCode> {
    let written = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let path = crate::paths::UserPath::from_cwd("--data-dir", &written)?;
    let mut dir = path.resolved().to_path_buf();
    // A node's data directory keeps its ledger in `ledger/`: either directory may be named.
    let in_node_dir = dir.join(crate::store::LEDGER_DIR);
    if !Ledger::db_path(&dir).exists() && Ledger::db_path(&in_node_dir).exists() {
        dir = in_node_dir;
    }
    if !Ledger::db_path(&dir).exists() {
        anyhow::bail!(
            "no privacy ledger in --data-dir {path} (set a budget with `fedmmkt privacy budget` or run the node first)"
        );
    }
    let report = match Ledger::open_existing(&dir) {
        Ok(ledger) => ledger.audit()?,
        // A running node holds the database (sled allows one process): ask the node instead.
        Err(PrivacyError::Storage(e)) if crate::store::is_lock_error(&e) => {
            audit_from_running_node(&dir)?.with_context(|| {
                format!("{e}; is a node running on it? its admin endpoint did not answer")
            })?
        }
        Err(e) => {
            return Err(anyhow::Error::from(e))
                .with_context(|| format!("opening the ledger in {}", dir.display()))
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_audit(&dir, &report);
    }
    Ok(if report.chain.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHAIN_BROKEN)
    })
}

/// The audit from the admin endpoint of a node running on `ledger_dir/..` (or `ledger_dir`).
fn audit_from_running_node(ledger_dir: &Path) -> anyhow::Result<Option<AuditReport>> {
    for node_dir in [ledger_dir.parent(), Some(ledger_dir)]
        .into_iter()
        .flatten()
    {
        if crate::store::DataDir::new(node_dir).admin_addr().is_file() {
            if let Some(v) = crate::admin::query(node_dir, "audit")? {
                return Ok(Some(serde_json::from_value(v)?));
            }
        }
    }
    Ok(None)
}

fn print_audit(dir: &Path, r: &AuditReport) {
    println!("ledger  {}", Ledger::db_path(dir).display());
    println!("key     {}", r.public_key);
    println!(
        "{:>4} {:>6} {:<20} {:<6} {:<17} {:>6} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8} {:>6} {:>12}  dataset",
        "seq",
        "round",
        "time (UTC)",
        "unit",
        "mechanism",
        "clip",
        "z",
        "z charged",
        "q",
        "n/m",
        "dim",
        "records",
        "steps",
        "ε cumul."
    );
    for e in &r.entries {
        // Release-only and training-only columns read "-" on the other kind of row.
        let n_m = match (e.expected_participants, e.min_participants) {
            (Some(n), Some(m)) => format!("{n}/{m}"),
            _ => "-".into(),
        };
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:>4} {:>6} {:<20} {:<6} {:<17} {:>6} {:>8.4} {:>9.4} {:>7} {:>7} {:>7} {:>8} {:>6} {:>12.6}  {}",
            e.seq,
            e.round,
            utc(e.time_unix_ms),
            e.unit.as_str(),
            e.mechanism.as_str(),
            e.clip,
            e.noise_multiplier,
            e.charged_noise_multiplier,
            e.sample_rate,
            n_m,
            or_dash(e.dimension.map(|d| d.to_string())),
            or_dash(e.records.map(|n| n.to_string())),
            or_dash(e.steps.map(|t| t.to_string())),
            e.epsilon_cumulative,
            e.dataset_id
        );
    }
    println!(
        "spent   ε = {:.6} at δ = {:e} (order α = {}) over {} entries",
        r.epsilon_spent,
        r.delta,
        r.order,
        r.entries.len()
    );
    match (r.budget, r.remaining) {
        (Some(b), Some(left)) => println!(
            "budget  ε ≤ {} at δ = {:e}; remaining ε = {:.6}",
            b.epsilon, b.delta, left
        ),
        _ => println!("budget  none set (ε reported at δ = {:e})", r.delta),
    }
    if r.chain.valid {
        println!("chain   verified ({} entries)", r.chain.verified_entries);
    } else {
        println!(
            "chain   DOES NOT VERIFY: {} ({} of {} stored entries verify; only those are listed)",
            r.chain.problem.as_deref().unwrap_or("unknown problem"),
            r.chain.verified_entries,
            r.chain.stored_entries
        );
    }
}

fn budget(a: &BudgetArgs) -> anyhow::Result<ExitCode> {
    let budget = Budget::new(a.epsilon, a.delta)?;
    let dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let ledger =
        Ledger::open(&dir).with_context(|| format!("opening the ledger in {}", dir.display()))?;
    ledger.set_budget(budget)?;
    let spent = ledger.epsilon_spent(budget.delta)?.epsilon;
    println!(
        "budget set in {}: ε ≤ {} at δ = {:e}; spent so far ε = {:.6}, remaining ε = {:.6}",
        dir.display(),
        budget.epsilon,
        budget.delta,
        spent,
        (budget.epsilon - spent).max(0.0)
    );
    if spent > budget.epsilon {
        eprintln!("warning: the node has already spent more than this cap; it will abstain from every further release");
    }
    if !ledger.verify()?.valid {
        eprintln!("warning: this ledger does not verify (see `fedmmkt privacy audit`); the node will refuse to release");
    }
    Ok(ExitCode::SUCCESS)
}

fn canary_audit(a: &CanaryAuditArgs) -> anyhow::Result<ExitCode> {
    let cfg = CanaryConfig {
        epsilon: (!a.no_noise).then_some(a.epsilon),
        delta: a.delta,
        canaries: a.canaries,
        records: a.records,
        epochs: a.epochs,
        batch: a.batch,
        clip: a.clip,
        lr: a.lr,
        arch: a.arch.into(),
        seed: a.seed,
    };
    if a.no_noise && !(a.epsilon.is_finite() && a.epsilon > 0.0) {
        return Err(InvalidAudit(format!(
            "--epsilon must be finite and > 0, got {}",
            a.epsilon
        ))
        .into());
    }
    cfg.validate()?;
    let bar = ProgressBar::new(cfg.epochs as u64).with_style(
        ProgressStyle::with_template(
            "canary audit [{bar:30}] epoch {pos}/{len} {msg} [{elapsed}<{eta}]",
        )?
        .progress_chars("=> "),
    );
    let report = canary::run(&cfg, &|epoch, _, loss| {
        bar.set_position(epoch as u64);
        bar.set_message(format!("loss {loss:.3}"));
    })?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "epsilon_claimed": report.epsilon_claimed,
                "epsilon_lower_bound": report.epsilon_lower_bound,
                "canaries": report.canaries,
                "guesses": report.guesses,
                "correct": report.correct,
            })
        );
    } else {
        let claimed = report
            .epsilon_claimed
            .map_or("∞ (no clipping, no noise)".to_string(), |e| {
                format!("{e} at δ = {:e}", cfg.delta)
            });
        println!("canary audit of record-level DP-SGD ({:?})", cfg.arch);
        println!("  claimed       ε = {claimed}");
        println!(
            "  lower bound   ε ≥ {:.3} at 95 % confidence (δ = {:e})",
            report.epsilon_lower_bound, cfg.delta
        );
        println!(
            "  guesses       {} of {} correct ({} canaries, {} trained on)",
            report.correct, report.guesses, report.canaries, report.included
        );
        println!(
            "  training      {} records, q = {:.4}, {} steps, z = {:.4}, C = {}",
            report.private_records,
            report.sample_rate,
            report.steps,
            report.noise_multiplier,
            report.clip
        );
        println!(
            "  scores        mean log p(label): {:.3} in, {:.3} out",
            report.mean_score_in, report.mean_score_out
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC from ms since the epoch (civil-from-days, proleptic Gregorian).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
    }
}
