//! `fedmmkt bench`: benchmarks of the protocol's building blocks, one subcommand each.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use privacy::secagg::simulation::{
    keystream_gbps, raw_gbps, simulate, with_threads, DropStage, SimConfig, SimReport,
};
use serde::Serialize;

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
