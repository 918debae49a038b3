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
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::EXIT_USAGE;

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
