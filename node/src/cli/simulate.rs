//! `fedmmkt simulate`: FedMMKT, baselines and ablations in one process, with a report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use models::data::DataSource;

use crate::report::{write_compare, write_run};
use crate::simulate::{self, Ablation, Method, Setup, SimConfig};

/// Arguments of `fedmmkt simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Number of clients.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Dirichlet concentration of the label skew (smaller = more skewed).
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Rounds.
    #[arg(long, default_value_t = 10)]
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
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long, default_value = "out/simulate")]
    pub out: PathBuf,
    /// Dataset directory (t10k-*/train-* IDX files and classes.txt); default: the full
    /// Fashion-MNIST from Debian's package when installed, else the embedded test split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Synthetic samples per class each round.
    #[arg(long, default_value_t = 50)]
    pub samples_per_class: usize,
    /// Reward threshold θ for keeping a synthetic sample.
    #[arg(long, default_value_t = 0.5)]
    pub keep_threshold: f32,
    /// Local epochs per round.
    #[arg(long, default_value_t = 2)]
    pub local_epochs: usize,
    /// Generator pre-training steps on the host's public set.
    #[arg(long, default_value_t = 1500)]
    pub pretrain_steps: usize,
    /// Generator fine-tuning steps per round.
    #[arg(long, default_value_t = 150)]
    pub finetune_steps: usize,
    /// Hidden width of the generator.
    #[arg(long, default_value_t = 256)]
    pub generator_width: usize,
    /// Width of the generator's PCA latent space (0: flow on pixels).
    #[arg(long, default_value_t = 64)]
    pub latent_dim: usize,
    /// Epochs of oracle training.
    #[arg(long, default_value_t = 25)]
    pub oracle_epochs: usize,
    /// Generated images per class the oracle scores each round.
    #[arg(long, default_value_t = 50)]
    pub eval_per_class: usize,
    /// Threads (clients trained at once).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
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
        cfg.host.pretrain_steps = self.pretrain_steps;
        cfg.host.finetune_steps = self.finetune_steps;
        cfg.host.flow.hidden = self.generator_width;
        cfg.host.flow.latent_dim = self.latent_dim;
        cfg.client.train.epochs = self.local_epochs;
        cfg
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

/// Runs `fedmmkt simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.ablate.is_none() || args.method == Method::Fedmmkt,
        "--ablate applies to --method fedmmkt only"
    );
    let cfg = args.config();
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
    let setup = Setup::build(&cfg, &source, &args.out, &|m| {
        spinner.set_message(m.to_string())
    })?;
    spinner.finish_with_message(format!(
        "setup done: oracle {:.1}% on real test images, generator starts at {:.1}% oracle accuracy",
        100.0 * setup.oracle_acc_real,
        100.0 * setup.gen_start.oracle_acc
    ));
    let runs: Vec<(Method, Option<Ablation>)> = if args.compare {
        let mut v: Vec<_> = [
            Method::Fedmmkt,
            Method::Local,
            Method::Fedavg,
            Method::Fedmd,
        ]
        .into_iter()
        .map(|m| (m, None))
        .collect();
        v.extend(
            [
                Ablation::FrozenGenerator,
                Ablation::NoDistill,
                Ablation::NoAlign,
                Ablation::NoFilter,
            ]
            .into_iter()
            .map(|a| (Method::Fedmmkt, Some(a))),
        );
        v
    } else {
        vec![(args.method, args.ablate)]
    };
    let classes = setup.splits.test.classes.clone();
    let mut reports = BTreeMap::new();
    for (method, ablation) in runs {
        let name = ablation.map_or(method.name(), Ablation::name);
        let bar = ProgressBar::new((cfg.rounds * PHASES) as u64).with_style(
            ProgressStyle::with_template("{prefix:>16} [{bar:30}] round {msg} [{elapsed}<{eta}]")?
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        let progress = |round: usize, phase: &str| {
            bar.set_position(((round - 1) * PHASES) as u64 + phase_index(phase));
            bar.set_message(format!("{round}/{}: {phase}", cfg.rounds));
            if bar.is_hidden() && phase == "generate"
                || bar.is_hidden() && phase == "learn" && method != Method::Fedmmkt
            {
                eprintln!("{name}: round {round}/{}", cfg.rounds);
            }
        };
        let (report, images) = simulate::run(&cfg, &setup, method, ablation, &progress)?;
        let summary = match report.rounds.last() {
            Some(l) => format!(
                "{}/{} done: clients {:.1}% mean / {:.1}% worst{}",
                l.round,
                cfg.rounds,
                100.0 * l.client_acc_mean,
                100.0 * l.client_acc_min,
                l.gen_oracle_acc
                    .map_or(String::new(), |g| format!(", generator {:.1}%", 100.0 * g))
            ),
            None => "no rounds".into(),
        };
        if bar.is_hidden() {
            eprintln!("{name}: {summary}");
        }
        bar.finish_with_message(summary);
        let dir = if args.compare {
            args.out.join(name)
        } else {
            args.out.clone()
        };
        write_run(&dir, &report, &images, &classes)?;
        reports.insert(name.to_string(), report);
    }
    if args.compare {
        write_compare(&args.out, &reports)?;
        println!("{}", crate::report::compare_markdown(&reports));
        eprintln!("report: {}", args.out.join("compare.md").display());
    } else if let Some(r) = reports.values().next() {
        println!("{}", crate::report::run_markdown(r, &classes));
        eprintln!("report: {}", args.out.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}
