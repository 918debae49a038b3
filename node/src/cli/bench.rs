//! `fedmmkt bench`: benchmarks of the protocol's building blocks, one subcommand each.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use models::classifier::{Arch, TaskModel};
use models::data::captions::random_captions;
use models::data::DataSource;
use models::dp_sgd::{clipped_sum_by_loop, dp_step, plain_step, DpSgdConfig, StepBatch};
use models::train::ClientTrainConfig;
use privacy::secagg::simulation::{
    keystream_gbps, raw_gbps, simulate, with_threads, DropStage, SimConfig, SimReport,
};
use protocol::messages::{MAX_CLASSES, MAX_SAMPLES};
use protocol::session::policy::{round_params, BOUND_IN_CLIPS};
use protocol::session::Release;
use protocol::wire::MAX_PARTICIPANTS;
use protocol::{RoundStart, UploadLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::EXIT_USAGE;
use crate::simulate::federation::{Federation, RoundEnd};

/// Arguments of `fedmmkt bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub bench: Bench,
}

/// The available benchmarks.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// A full in-process secure-aggregation round (SecAgg+) with real crypto and injected dropouts.
    Secagg(SecaggArgs),
    /// One DP-SGD training step against a plain step of the same loss, per architecture, on one thread.
    ///
    /// Each architecture takes one training step on B private Fashion-MNIST images (with
    /// caption embeddings) next to B synthetic rows (teacher targets and captions, so
    /// distillation and alignment run as in training). Times are medians over repetitions after
    /// a warm-up, on CANDLE_NUM_THREADS threads (set to 1 when unset; RAYON_NUM_THREADS follows
    /// it when unset, since candle's CPU matmul reads that one).
    ///
    /// plain_ms: `plain_step`, the non-private step of the same loss. dp_ms: `dp_step` with
    /// clip 1 and noise multiplier 1 (two-pass per-example clipping, noise, optimiser step).
    /// ratio: dp_ms / plain_ms. loop_ms: `clipped_sum_by_loop` on the same private rows, the
    /// per-example reference (B forward and backward passes of batch 1, clipped and summed; no
    /// synthetic rows, no noise, no optimiser step).
    DpSgd(DpSgdArgs),
    /// One round of the real host and client sessions over the in-memory transport.
    ///
    /// N clients upload random honest-looking vectors of length D (C classes, (D − C)/C
    /// samples) through secure aggregation with the graph the round policy picks (the
    /// complete graph up to 32 clients, SecAgg+ above); round(F·N) of them go silent after
    /// the key exchange. Checks that the released sum is exactly the survivors' sum in the
    /// fixed-point encoding, and reports each party's time inside its session and bytes.
    Round(RoundArgs),
}

/// When the dropped clients go silent.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DropAt {
    /// Before advertising keys.
    BeforeAdvertise,
    /// After advertising keys, before sharing them.
    BeforeShareKeys,
    /// After sharing keys, before the masked input (the aggregator's worst case).
    AfterShareKeys,
    /// After the masked input, before unmasking.
    AfterMaskedInput,
}

impl From<DropAt> for DropStage {
    fn from(d: DropAt) -> Self {
        match d {
            DropAt::BeforeAdvertise => DropStage::BeforeAdvertise,
            DropAt::BeforeShareKeys => DropStage::BeforeShareKeys,
            DropAt::AfterShareKeys => DropStage::AfterShareKeys,
            DropAt::AfterMaskedInput => DropStage::AfterMaskedInput,
        }
    }
}

/// Arguments of `fedmmkt bench secagg`.
#[derive(clap::Args)]
pub struct SecaggArgs {
    /// Number of clients N.
    #[arg(long, default_value_t = 100)]
    pub clients: u32,
    /// Length D of each client's vector.
    #[arg(long, default_value_t = 100_000)]
    pub dim: u32,
    /// Neighbourhood size K (even; ≥ N − 1 runs the original SecAgg).
    #[arg(long, default_value_t = 16)]
    pub neighbors: u32,
    /// Fraction of clients that drop out.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// When they drop.
    #[arg(long, value_enum, default_value_t = DropAt::AfterShareKeys)]
    pub drop_at: DropAt,
    /// Shamir threshold (default: the smallest safe one, ⌊(K+1)/2⌋ + 1).
    #[arg(long)]
    pub threshold: Option<u32>,
    /// Seed of keys, inputs, dropouts and the neighbourhood graph.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads for mask expansion (1 gives the single-threaded figures).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON the benchmark prints.
#[derive(Serialize)]
struct Output {
    clients: u32,
    dim: u32,
    neighbors: u32,
    dropout: f64,
    threads: usize,
    #[serde(flatten)]
    report: SimReport,
    /// Mask-expansion throughput (keystream plus modular add) on this run's thread pool, GB/s.
    keystream_gbps: f64,
    /// Raw single-thread ChaCha20 keystream speed measured in the same process, GB/s.
    raw_chacha20_gbps: f64,
    /// Wall time of the whole simulated round (both sides plus input generation), ms.
    wall_ms: f64,
}

/// Runs `fedmmkt bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.bench {
        Bench::Secagg(a) => secagg(a),
        Bench::DpSgd(a) => dp_sgd(&a),
        Bench::Round(a) => round(&a),
    }
}

fn secagg(a: SecaggArgs) -> anyhow::Result<ExitCode> {
    let cfg = SimConfig {
        clients: a.clients,
        dim: a.dim,
        neighbors: a.neighbors,
        threshold: a.threshold,
        dropout: a.dropout,
        drop_stage: a.drop_at.into(),
        seed: a.seed,
        bound: 1.0,
    };
    let threads = a.threads.max(1);
    let (sim, wall_ms, keystream) = with_threads(threads, || {
        let start = Instant::now();
        let sim = simulate(&cfg, false);
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        // The client's workload: K + 1 masks over one vector (at least 1 MiB so timing is stable).
        let keystream = keystream_gbps(
            (a.dim as usize).max(1 << 18),
            a.neighbors.min(a.clients) as usize + 1,
        );
        (sim, wall_ms, keystream)
    })?;
    let report = sim.context("secure aggregation round failed")?.report;
    let out = Output {
        clients: a.clients,
        dim: a.dim,
        neighbors: report.degree,
        dropout: a.dropout,
        threads,
        keystream_gbps: keystream,
        raw_chacha20_gbps: raw_gbps(),
        wall_ms,
        report,
    };
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let r = &out.report;
        println!(
            "secagg N={} D={} K={} t={} dropout={} threads={}",
            out.clients, out.dim, out.neighbors, r.threshold, out.dropout, out.threads
        );
        println!("  correct            {}", r.correct);
        println!("  included/dropped   {}/{}", r.included, r.dropped);
        println!(
            "  client             {:.2} ms mean, {:.2} ms max ({:.2} ms masking)",
            r.client_ms, r.client_ms_max, r.client_mask_ms
        );
        println!(
            "  aggregator         {:.1} ms ({:.1} ms unmasking)",
            r.aggregator_ms, r.aggregator_unmask_ms
        );
        println!(
            "  bytes per client   {:.0} sent, {:.0} received ({} plain)",
            r.bytes_per_client, r.bytes_received_per_client, r.plain_bytes
        );
        println!("  expansion          {:.4}", r.expansion);
        println!(
            "  keystream          {:.2} GB/s masking, {:.2} GB/s raw ChaCha20 (1 thread)",
            out.keystream_gbps, out.raw_chacha20_gbps
        );
        println!("  wall               {:.0} ms", out.wall_ms);
    }
    Ok(if out.report.correct {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Largest `--batch` of `fedmmkt bench dp-sgd`.
pub const MAX_DP_BATCH: usize = 4096;

/// Which architectures `fedmmkt bench dp-sgd` times.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchArch {
    /// 784-256-128 multilayer perceptron.
    Mlp,
    /// Two strided convolutions (8 and 16 channels) and a 128-unit layer.
    SmallCnn,
    /// Two strided convolutions (16 and 32 channels) and a 192-unit layer.
    WideCnn,
    /// Two convolutions (16 and 32 channels) with 2×2 max pooling and a 128-unit layer.
    PooledCnn,
    /// Each of them in turn.
    All,
}

/// Arguments of `fedmmkt bench dp-sgd`.
#[derive(clap::Args)]
pub struct DpSgdArgs {
    /// Architecture to time.
    #[arg(long, value_enum, default_value_t = BenchArch::All)]
    pub arch: BenchArch,
    /// Private examples B per step (1..=4096); the step carries B synthetic rows too.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub batch: i64,
    /// Print {"results": [{"arch", "batch", "plain_ms", "dp_ms", "ratio", "loop_ms"}]}.
    #[arg(long)]
    pub json: bool,
}

/// One architecture's timings.
#[derive(Serialize)]
struct DpSgdResult {
    arch: &'static str,
    batch: usize,
    plain_ms: f64,
    dp_ms: f64,
    ratio: f64,
    loop_ms: f64,
}

/// Pins candle's CPU ops to CANDLE_NUM_THREADS (1 when unset or invalid) and returns the
/// thread count candle's kernels will use.
///
/// candle 0.11's matmul and convolution size their thread pools from RAYON_NUM_THREADS, not
/// CANDLE_NUM_THREADS; so an unset RAYON_NUM_THREADS is set to the same value. Must run before
/// the first tensor op (the pools are built once).
fn pin_threads() -> usize {
    let parse = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let threads = parse("CANDLE_NUM_THREADS").unwrap_or_else(|| {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        1
    });
    if parse("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    candle_core::utils::get_num_threads()
}

/// Median wall time of `f` in ms: one warm-up call, then at least `min_reps` timed calls and
/// more (up to 15) while under about a second.
fn median_ms(min_reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_reps || (times.len() < 15 && start.elapsed().as_secs_f64() < 1.0) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    Ok(if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    })
}

/// A step of `b` private and `b` synthetic rows from the embedded Fashion-MNIST test images.
fn bench_batch(b: usize, emb_dim: usize) -> anyhow::Result<(StepBatch, usize, usize)> {
    let data = DataSource::embedded()?.test;
    let (p, c, n) = (data.pixels(), data.num_classes(), data.len());
    anyhow::ensure!(n > 0, "the embedded dataset is empty");
    let encoder = crate::world::bow_encoder(&data.classes, emb_dim, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let rows = |range: std::ops::Range<usize>| -> (Vec<u8>, Vec<u8>) {
        let mut px = Vec::with_capacity(range.len() * p);
        let mut labels = Vec::with_capacity(range.len());
        for i in range {
            px.extend_from_slice(data.image(i % n));
            labels.push(data.labels[i % n]);
        }
        (px, labels)
    };
    let (private_pixels, private_labels) = rows(0..b);
    let (public_pixels, public_labels) = rows(b..2 * b);
    let private_emb = encoder.encode(&random_captions(&data.classes, &private_labels, &mut rng))?;
    let public_emb = encoder.encode(&random_captions(&data.classes, &public_labels, &mut rng))?;
    // Teacher targets: a random distribution per synthetic row, peaked on its label.
    let mut teacher = Vec::with_capacity(b * c);
    for &l in &public_labels {
        let mut row: Vec<f32> = (0..c).map(|_| rng.random::<f32>() * 0.2).collect();
        row[l as usize] += 1.0;
        let s: f32 = row.iter().sum();
        teacher.extend(row.iter().map(|v| v / s));
    }
    Ok((
        StepBatch {
            private_pixels,
            private_labels: private_labels.iter().map(|&l| u32::from(l)).collect(),
            private_emb,
            public_pixels,
            teacher,
            public_labels: public_labels.iter().map(|&l| u32::from(l)).collect(),
            public_emb,
        },
        data.rows,
        c,
    ))
}

fn dp_sgd(a: &DpSgdArgs) -> anyhow::Result<ExitCode> {
    let batch = match usize::try_from(a.batch) {
        Ok(b) if (1..=MAX_DP_BATCH).contains(&b) => b,
        _ => {
            eprintln!(
                "error: --batch must lie in 1..={MAX_DP_BATCH}, got {}",
                a.batch
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let threads = pin_threads();
    let archs: Vec<Arch> = match a.arch {
        BenchArch::Mlp => vec![Arch::Mlp],
        BenchArch::SmallCnn => vec![Arch::SmallCnn],
        BenchArch::WideCnn => vec![Arch::WideCnn],
        BenchArch::PooledCnn => vec![Arch::PooledCnn],
        BenchArch::All => Arch::ALL.to_vec(),
    };
    let emb_dim = crate::world::EMB_DIM;
    let (step, side, classes) = bench_batch(batch, emb_dim)?;
    let cfg = ClientTrainConfig::default();
    let dp = DpSgdConfig {
        clip: 1.0,
        noise_multiplier: 1.0,
        sample_rate: 1.0,
        steps: 1,
    };
    if !a.json {
        println!(
            "dp-sgd step: {batch} private + {batch} synthetic rows, {threads} thread{}, median ms",
            if threads == 1 { "" } else { "s" }
        );
        println!(
            "{:<10} {:>10} {:>10} {:>7} {:>10}",
            "arch", "plain ms", "dp ms", "ratio", "loop ms"
        );
    } else {
        eprintln!("bench dp-sgd: {threads} thread(s)");
    }
    let mut results = Vec::new();
    for arch in archs {
        let model = |seed| TaskModel::new(arch, side, classes, emb_dim, 1e-3, seed);
        let mut plain_model = model(1)?;
        let plain_ms = median_ms(5, || {
            plain_step(&mut plain_model, &step, &cfg)?;
            Ok(())
        })?;
        let mut dp_model = model(1)?;
        let mut noise = ChaCha8Rng::seed_from_u64(3);
        let dp_ms = median_ms(5, || {
            dp_step(&mut dp_model, &step, &cfg, &dp, batch as f64, &mut noise)?;
            Ok(())
        })?;
        let loop_model = model(1)?;
        let loop_ms = median_ms(3, || {
            clipped_sum_by_loop(&loop_model, &step, &cfg, dp.clip)?;
            Ok(())
        })?;
        let r = DpSgdResult {
            arch: arch.name(),
            batch,
            plain_ms,
            dp_ms,
            ratio: dp_ms / plain_ms,
            loop_ms,
        };
        tracing::debug!(arch = r.arch, plain_ms, dp_ms, loop_ms, "dp-sgd bench");
        if !a.json {
            println!(
                "{:<10} {:>10.3} {:>10.3} {:>7.2} {:>10.3}",
                r.arch, r.plain_ms, r.dp_ms, r.ratio, r.loop_ms
            );
        }
        results.push(r);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "results": results }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `fedmmkt bench round`.
#[derive(clap::Args, Debug, Clone)]
pub struct RoundArgs {
    /// Number of clients N (3..=1024).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Length D of each upload: samples·classes + classes (5010 is 500 samples of 10 classes).
    #[arg(long, default_value_t = 5010)]
    pub dim: usize,
    /// Classes C of the upload layout (2..=256); D − C must be a positive multiple of C.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Fraction F of the clients (0 ≤ F < 1) that go silent after the key exchange:
    /// round(F·N) of them, drawn from the seed.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub dropout: f64,
    /// Seed of the keys, uploads, dropouts and neighbourhood graph.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One `fedmmkt bench round` run, its arguments checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundBench {
    /// Clients N.
    pub clients: usize,
    /// The upload layout (no moment block).
    pub layout: UploadLayout,
    /// Fraction of the clients that drop out after the key exchange.
    pub dropout: f64,
    /// Seed of everything random.
    pub seed: u64,
}

/// The layout of uploads of length `dim` with `classes` classes: `samples·classes + classes`
/// values with at least one sample; says why not when `dim` does not fit.
pub fn round_layout(dim: usize, classes: usize) -> Result<UploadLayout, String> {
    if !(2..=MAX_CLASSES).contains(&classes) {
        return Err(format!(
            "--classes must lie in 2..={MAX_CLASSES}, got {classes}"
        ));
    }
    let samples = dim.saturating_sub(classes) / classes;
    if samples == 0 || samples * classes + classes != dim {
        let near = if samples == 0 {
            format!("the smallest is {}", 2 * classes)
        } else {
            format!(
                "the nearest are {} and {}",
                samples * classes + classes,
                (samples + 1) * classes + classes
            )
        };
        return Err(format!(
            "--dim {dim} is not samples × {classes} + {classes} with at least one sample \
             ({near})"
        ));
    }
    if samples > MAX_SAMPLES {
        return Err(format!(
            "--dim {dim} means {samples} samples of {classes} classes; at most {MAX_SAMPLES} \
             samples fit a round"
        ));
    }
    Ok(UploadLayout {
        samples,
        classes,
        moments: 0,
    })
}

impl RoundBench {
    /// Checks `fedmmkt bench round`'s arguments; says what is wrong with them.
    pub fn from_args(a: &RoundArgs) -> Result<Self, String> {
        if !(3..=MAX_PARTICIPANTS).contains(&a.clients) {
            return Err(format!(
                "--clients must lie in 3..={MAX_PARTICIPANTS}, got {}",
                a.clients
            ));
        }
        if !(a.dropout.is_finite() && (0.0..1.0).contains(&a.dropout)) {
            return Err(format!(
                "--dropout must lie in [0, 1) (a fraction of the clients), got {}",
                a.dropout
            ));
        }
        Ok(Self {
            clients: a.clients,
            layout: round_layout(a.dim, a.classes)?,
            dropout: a.dropout,
            seed: a.seed,
        })
    }
}

/// What `fedmmkt bench round` measured (its JSON). Client figures are over the clients that
/// stayed to the end (the included ones when the round completes).
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// Clients N.
    pub clients: usize,
    /// Upload length D.
    pub dim: usize,
    /// Synthetic samples of the layout.
    pub samples: usize,
    /// Classes of the layout.
    pub classes: usize,
    /// Fraction of clients asked to drop out.
    pub dropout: f64,
    /// Clients that went silent after the key exchange.
    pub dropped: usize,
    /// Clients whose uploads are in the released sum (0 when the round was abandoned).
    pub included: usize,
    /// Why the host gave the round up, if it did.
    pub abandoned: Option<String>,
    /// How the round summed the uploads, in words.
    pub graph: String,
    /// Neighbours k of each client in the masking graph.
    pub neighbours: u32,
    /// Shamir threshold t.
    pub threshold: u32,
    /// The sum is out, of exactly the survivors, and exact.
    pub correct: bool,
    /// The released sum equals the survivors' quantized uploads summed, level for level.
    pub exact: bool,
    /// Largest |released − Σ survivors' uploads in f64| over the coordinates.
    pub max_abs_error: f64,
    /// What the encoding's rounding allows: half a quantisation level per contributor.
    pub tolerance: f64,
    /// Mean time inside a client's session calls, ms.
    pub client_ms_mean: f64,
    /// Largest time inside one client's session calls, ms.
    pub client_ms_max: f64,
    /// Time inside the host's session calls, ms.
    pub host_ms: f64,
    /// Mean bytes a client sent.
    pub client_bytes_up_mean: f64,
    /// Most bytes one client sent.
    pub client_bytes_up_max: usize,
    /// Mean bytes a client received.
    pub client_bytes_down_mean: f64,
    /// Most bytes one client received.
    pub client_bytes_down_max: usize,
    /// Bytes the host received.
    pub host_bytes_in: usize,
    /// Bytes the host sent.
    pub host_bytes_out: usize,
    /// Mean bytes a client sent and received together.
    pub bytes_per_client: f64,
    /// `bytes_per_client` over D.
    pub bytes_per_client_per_dim: f64,
    /// Wall time of the whole bench (uploads drawn, round run, sum checked), s.
    pub wall_s: f64,
}

/// A random upload as an honest client builds it: a random distribution per sample and
/// random class counts in 0..=20 (not all zero).
fn random_upload(
    layout: &UploadLayout,
    prompts: &[u16],
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Vec<f32>> {
    let c = layout.classes;
    let mut probs = Vec::with_capacity(layout.samples * c);
    let mut row = vec![0f32; c];
    for _ in 0..layout.samples {
        row.iter_mut().for_each(|p| *p = rng.random::<f32>() + 1e-3);
        let total: f32 = row.iter().sum();
        probs.extend(row.iter().map(|p| p / total));
    }
    let mut counts: Vec<f64> = (0..c)
        .map(|_| f64::from(rng.random_range(0..=20u32)))
        .collect();
    if counts.iter().all(|&n| n == 0.0) {
        counts[0] = 1.0;
    }
    Ok(layout.build(&probs, prompts, &counts, None)?)
}

/// Mean and maximum of `values` (0 for none).
fn mean_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut sum, mut n, mut max) = (0.0, 0usize, 0f64);
    for v in values {
        sum += v;
        n += 1;
        max = max.max(v);
    }
    (if n == 0 { 0.0 } else { sum / n as f64 }, max)
}

/// Runs one secure round of `b.clients` real host and client sessions over the in-memory
/// transport with random uploads, dropping round(dropout·N) clients after the key
/// exchange, and checks the released sum against the survivors' uploads.
pub fn bench_round(b: &RoundBench) -> anyhow::Result<RoundReport> {
    let wall = Instant::now();
    let (n, layout) = (b.clients, b.layout);
    let dim = layout.len();
    let mut rng = ChaCha8Rng::seed_from_u64(b.seed);
    let prompts: Vec<u16> = (0..layout.samples)
        .map(|_| rng.random_range(0..layout.classes as u16))
        .collect();
    let start = RoundStart {
        round: 1,
        side: 2,
        classes: u16::try_from(layout.classes)?,
        emb_dim: 1,
        images: vec![0; layout.samples * 4],
        prompt_class: prompts.clone(),
        prompt_template: vec![0; layout.samples],
        text_emb: vec![0.0; layout.samples],
        teacher: None,
        latent: None,
    };
    start.validate()?;
    // Every upload value is a share or a share times a probability, in [0, 1]: an encoding
    // bound of 1 (BOUND_IN_CLIPS clips) holds them all unclamped.
    let clip = 1.0 / f64::from(BOUND_IN_CLIPS);
    let mut fed = Federation::new(n, true, clip, 0.0, b.seed)?;
    let n32 = u32::try_from(n)?;
    let spec = fed.policy().secagg_spec(n32, layout, [0; 32]);
    let quantizer = round_params(1, &spec, n32)?.quantizer;
    let dropping = (b.dropout * n as f64).round() as usize;
    let mut dropped = vec![false; n];
    for k in rand::seq::index::sample(&mut rng, n, dropping.min(n)) {
        dropped[k] = true;
    }

    tracing::info!(clients = n, dim, "bench round: offer and key exchange");
    let t = Instant::now();
    let invited = fed.open(start)?;
    anyhow::ensure!(
        invited.len() == n,
        "{} of {n} clients joined the round",
        invited.len()
    );
    let graph = fed.aggregation().to_string();
    tracing::info!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        %graph,
        "bench round: keys exchanged; {dropping} clients go silent"
    );
    let plans = (0..n)
        .map(|k| fed.plan(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for k in (0..n).filter(|&k| dropped[k]) {
        fed.drop_out(k)?;
    }

    let t = Instant::now();
    let survivors = n - dropping.min(n);
    let mut plain = vec![0f64; dim];
    let mut levels = vec![0i64; dim];
    let mut sent = 0usize;
    for (k, plan) in plans.iter().enumerate() {
        // Every client draws its upload, so the uploads do not depend on who drops.
        let upload = random_upload(&layout, &prompts, &mut rng)?;
        if dropped[k] {
            continue;
        }
        for ((p, l), (&v, q)) in plain
            .iter_mut()
            .zip(levels.iter_mut())
            .zip(upload.iter().zip(quantizer.quantize(&upload)?))
        {
            *p += f64::from(v);
            *l += i64::from(q as i32);
        }
        fed.released(k, plan, Release::Noised(upload))?;
        sent += 1;
        if sent.is_multiple_of((survivors / 4).max(1)) {
            tracing::info!(
                "bench round: {sent} of {survivors} masked inputs in ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let end = fed.end();
    tracing::info!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "bench round: inputs masked, stages closed, sum unmasked"
    );

    let (sum, included, abandoned) = match end {
        Some(RoundEnd::Sum { sum, included }) => (sum, included, None),
        Some(RoundEnd::Abandoned(reason)) => (Vec::new(), 0, Some(reason)),
        None => (Vec::new(), 0, Some("the round did not end".to_string())),
    };
    let exact = sum.len() == dim
        && sum
            .iter()
            .zip(&levels)
            .all(|(&v, &l)| v == l as f64 / quantizer.scale());
    let max_abs_error = sum
        .iter()
        .zip(&plain)
        .map(|(v, p)| (v - p).abs())
        .fold(0.0, f64::max);
    let tolerance = 0.5 * quantizer.resolution() * survivors as f64 + 1e-9;
    let correct =
        abandoned.is_none() && included == survivors && exact && max_abs_error <= tolerance;

    let usage = fed.client_usage();
    let stayed = || {
        usage
            .iter()
            .zip(&dropped)
            .filter(|(_, &d)| !d)
            .map(|(u, _)| u)
    };
    let (client_ms_mean, client_ms_max) = mean_max(stayed().map(|u| u.time.as_secs_f64() * 1e3));
    let (up_mean, up_max) = mean_max(stayed().map(|u| u.sent as f64));
    let (down_mean, down_max) = mean_max(stayed().map(|u| u.received as f64));
    let host = fed.host_usage();
    let bytes_per_client = up_mean + down_mean;
    Ok(RoundReport {
        clients: n,
        dim,
        samples: layout.samples,
        classes: layout.classes,
        dropout: b.dropout,
        dropped: dropping,
        included,
        abandoned,
        graph,
        neighbours: spec.neighbors.min(n32 - 1),
        threshold: spec.threshold,
        correct,
        exact,
        max_abs_error,
        tolerance,
        client_ms_mean,
        client_ms_max,
        host_ms: host.time.as_secs_f64() * 1e3,
        client_bytes_up_mean: up_mean,
        client_bytes_up_max: up_max as usize,
        client_bytes_down_mean: down_mean,
        client_bytes_down_max: down_max as usize,
        host_bytes_in: host.received,
        host_bytes_out: host.sent,
        bytes_per_client,
        bytes_per_client_per_dim: bytes_per_client / dim as f64,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

fn round(a: &RoundArgs) -> anyhow::Result<ExitCode> {
    let b = match RoundBench::from_args(a) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let r = bench_round(&b)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "round N={} D={} ({} samples × {} classes) dropout={} seed={}",
            r.clients, r.dim, r.samples, r.classes, r.dropout, b.seed
        );
        println!("  graph              {}", r.graph);
        println!("  neighbours k, t    {}, {}", r.neighbours, r.threshold);
        println!(
            "  correct            {} (exact: {}, max abs error {:.3e} ≤ {:.3e})",
            r.correct, r.exact, r.max_abs_error, r.tolerance
        );
        if let Some(reason) = &r.abandoned {
            println!("  abandoned          {reason}");
        }
        println!("  included/dropped   {}/{}", r.included, r.dropped);
        println!(
            "  client             {:.2} ms mean, {:.2} ms max",
            r.client_ms_mean, r.client_ms_max
        );
        println!("  host               {:.1} ms", r.host_ms);
        println!(
            "  client bytes       {:.0} up, {:.0} down mean; {} up, {} down max",
            r.client_bytes_up_mean,
            r.client_bytes_down_mean,
            r.client_bytes_up_max,
            r.client_bytes_down_max
        );
        println!(
            "  host bytes         {} in, {} out",
            r.host_bytes_in, r.host_bytes_out
        );
        println!(
            "  bytes per client   {:.0} ({:.2} per coordinate)",
            r.bytes_per_client, r.bytes_per_client_per_dim
        );
        println!("  wall               {:.2} s", r.wall_s);
    }
    Ok(if r.correct {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
