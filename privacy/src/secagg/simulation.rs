//! An in-process round with real crypto over a lossless fake network: drives clients and the
//! aggregator through every stage, injects dropouts, checks the result and times both sides.
//!
//! Used by the integration tests and by `fedmmkt bench secagg`.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;

use super::aggregator::{AggregateOutput, SecAggAggregator, Step};
use super::client::SecAggClient;
use super::error::SecAggError;
use super::masking::{apply_masks, raw_chacha20_gbps, Mask, MaskSign};
use super::messages::{ClientMessage, ServerMessage};
use super::quantize::{ClipBound, Quantizer};
use super::{ClientId, RoundParams};

/// The stage after which the dropped clients go silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DropStage {
    /// They never advertise keys.
    BeforeAdvertise,
    /// They advertise keys but never send shares.
    BeforeShareKeys,
    /// They send shares but never a masked input (the costliest case for the aggregator).
    AfterShareKeys,
    /// They send a masked input but never answer the unmask request.
    AfterMaskedInput,
}

/// One simulated round.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of clients n.
    pub clients: u32,
    /// Vector length.
    pub dim: u32,
    /// Neighbourhood size k (≥ n − 1 for the original SecAgg).
    pub neighbors: u32,
    /// Shamir threshold; `None` picks ⌊k/2⌋ + 1 (at least 2).
    pub threshold: Option<u32>,
    /// Fraction of clients that drop.
    pub dropout: f64,
    /// When they drop.
    pub drop_stage: DropStage,
    /// Seed of everything random in the round (keys, inputs, dropouts, graph).
    pub seed: u64,
    /// The declared L∞ bound on inputs; inputs are drawn uniformly within it.
    pub bound: f32,
}

/// What happened in a simulated round and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The released sum equals the exact sum of the included clients' quantized inputs.
    pub correct: bool,
    /// Largest |released − true f64 sum| over coordinates.
    pub max_abs_error: f64,
    /// Clients whose inputs are in the sum.
    pub included: usize,
    /// Clients that dropped.
    pub dropped: usize,
    /// Shamir threshold used.
    pub threshold: u32,
    /// Neighbourhood size actually used (k clamped to n − 1).
    pub degree: u32,
    /// Mean compute time of one surviving client over all its stages, in ms.
    pub client_ms: f64,
    /// Largest such time, in ms.
    pub client_ms_max: f64,
    /// Mean time of one surviving client's masking step alone, in ms.
    pub client_mask_ms: f64,
    /// Total aggregator compute time over all stages, in ms.
    pub aggregator_ms: f64,
    /// Aggregator time in the final unmask stage (reconstruction and mask removal), in ms.
    pub aggregator_unmask_ms: f64,
    /// Mean bytes a surviving client sends over the whole round (encoded messages).
    pub bytes_per_client: f64,
    /// Mean bytes a surviving client receives.
    pub bytes_received_per_client: f64,
    /// Bytes of the plain quantized vector (4 · dim).
    pub plain_bytes: usize,
    /// bytes_per_client / plain_bytes.
    pub expansion: f64,
}

/// Runs `f` on a rayon pool of `threads` threads (the pool mask expansion uses).
pub fn with_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> T + Send,
) -> Result<T, SecAggError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| SecAggError::InvalidParams(format!("cannot build a thread pool: {e}")))?;
    Ok(pool.install(f))
}

/// Mask-expansion throughput in GB/s of keystream: `masks` masks applied to a `dim`-word vector
/// on the current rayon pool (the same code path clients and aggregator use).
pub fn keystream_gbps(dim: usize, masks: usize) -> f64 {
    let mut acc = vec![0u32; dim];
    let ms: Vec<Mask> = (0..masks.max(1))
        .map(|i| Mask {
            seed: [i as u8; 32],
            sign: if i % 2 == 0 {
                MaskSign::Add
            } else {
                MaskSign::Sub
            },
        })
        .collect();
    apply_masks(&mut acc, &ms[..1]);
    let start = Instant::now();
    apply_masks(&mut acc, &ms);
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    (ms.len() * dim * 4) as f64 / secs.max(1e-9) / 1e9
}

/// Single-thread raw ChaCha20 speed (GB/s) over a 64 MiB buffer, for comparison.
pub fn raw_gbps() -> f64 {
    raw_chacha20_gbps(64 << 20)
}

/// The deterministic identity key of client `c` in a simulation seeded with `seed`.
pub fn identity(seed: u64, c: ClientId) -> Result<Ed25519KeyPair, SecAggError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1d_e471_7700);
    rng.set_stream(u64::from(c) + 1);
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    Ed25519KeyPair::from_seed_unchecked(&secret)
        .map_err(|_| SecAggError::Crypto("Ed25519 key from seed"))
}

/// Client `c`'s input in a simulation: uniform in [−bound, bound]^dim, reproducible from the seed.
pub fn input(seed: u64, c: ClientId, dim: u32, bound: f32) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1a_9b7);
    rng.set_stream(u64::from(c) + 1);
    (0..dim).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// The round parameters a simulation uses.
pub fn params(cfg: &SimConfig) -> Result<RoundParams, SecAggError> {
    let k = cfg.neighbors.min(cfg.clients.saturating_sub(1));
    let mut graph_seed = [0u8; 32];
    ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x67_7261_7068).fill(&mut graph_seed);
    Ok(RoundParams {
        round: cfg.seed,
        graph_seed,
        num_clients: cfg.clients,
        neighbors: cfg.neighbors,
        threshold: cfg
            .threshold
            .unwrap_or_else(|| RoundParams::min_threshold(k).max(2)),
        dim: cfg.dim,
        quantizer: Quantizer::new(ClipBound::LInf(cfg.bound), cfg.clients)?,
    })
}

/// Everything one simulated round produced.
pub struct SimOutcome {
    /// Timings, sizes and the correctness verdict.
    pub report: SimReport,
    /// The aggregator's output.
    pub output: AggregateOutput,
    /// Every message the aggregator received, in order (only when asked for).
    pub view: Vec<ClientMessage>,
}

/// Which clients drop: the first ⌊dropout · n⌋ of a seeded permutation.
pub fn dropped_set(cfg: &SimConfig) -> Vec<bool> {
    let n = cfg.clients as usize;
    let count = ((cfg.dropout.clamp(0.0, 1.0) * n as f64).floor() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0xd7_0b);
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let mut dropped = vec![false; n];
    for &c in order.iter().take(count) {
        dropped[c] = true;
    }
    dropped
}

/// Runs one full round in-process; `record_view` keeps every message the aggregator received.
pub fn simulate(cfg: &SimConfig, record_view: bool) -> Result<SimOutcome, SecAggError> {
    let params = params(cfg)?;
    let quantizer = params.quantizer;
    let n = cfg.clients as usize;
    let dim = cfg.dim as usize;
    let dropped = dropped_set(cfg);
    let identities = (0..cfg.clients)
        .map(|c| identity(cfg.seed, c))
        .collect::<Result<Vec<_>, _>>()?;
    let membership: Vec<[u8; 32]> = identities
        .iter()
        .map(|k| {
            let mut pk = [0u8; 32];
            pk.copy_from_slice(k.public_key().as_ref());
            pk
        })
        .collect();

    let mut client_secs = vec![0f64; n];
    let mut mask_secs = vec![0f64; n];
    let mut sent = vec![0usize; n];
    let mut received = vec![0usize; n];
    let mut agg_secs = 0f64;
    let mut view = Vec::new();

    let start = Instant::now();
    let mut agg = SecAggAggregator::new(params.clone(), membership.clone())?;
    agg_secs += start.elapsed().as_secs_f64();

    let silent = |c: usize, stage: DropStage| dropped[c] && cfg.drop_stage == stage;

    // Stage 0: advertise.
    let mut clients: Vec<Option<SecAggClient>> = Vec::with_capacity(n);
    let mut inbox = Vec::new();
    for (c, identity) in identities.iter().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        rng.set_stream(c as u64 + 1);
        let t = Instant::now();
        let (client, msg) = SecAggClient::new(
            params.clone(),
            c as ClientId,
            identity,
            &membership,
            &mut rng,
        )?;
        client_secs[c] += t.elapsed().as_secs_f64();
        if silent(c, DropStage::BeforeAdvertise) {
            clients.push(None);
            continue;
        }
        clients.push(Some(client));
        inbox.push(msg);
    }
    let deliver = |agg: &mut SecAggAggregator,
                   msgs: Vec<ClientMessage>,
                   sent: &mut [usize],
                   view: &mut Vec<ClientMessage>,
                   agg_secs: &mut f64|
     -> Result<(), SecAggError> {
        for m in msgs {
            if let Some(s) = sent.get_mut(m.sender() as usize) {
                *s += m.encoded_len();
            }
            if record_view {
                view.push(m.clone());
            }
            let t = Instant::now();
            agg.receive(m)?;
            *agg_secs += t.elapsed().as_secs_f64();
        }
        Ok(())
    };
    deliver(&mut agg, inbox, &mut sent, &mut view, &mut agg_secs)?;

    let mut expected = vec![0i64; dim];
    let mut truth = vec![0f64; dim];
    let mut included = vec![false; n];
    let mut output = None;
    let mut unmask_secs = 0.0;
    for stage in [
        DropStage::BeforeShareKeys,
        DropStage::AfterShareKeys,
        DropStage::AfterMaskedInput,
        // The last advance releases the sum.
        DropStage::BeforeAdvertise,
    ] {
        let t = Instant::now();
        let step = agg.advance()?;
        let el = t.elapsed().as_secs_f64();
        agg_secs += el;
        let outgoing = match step {
            Step::Send(out) => out,
            Step::Finished(out) => {
                unmask_secs = el;
                output = Some(out);
                break;
            }
        };
        for (c, msg) in outgoing {
            let ci = c as usize;
            if let Some(r) = received.get_mut(ci) {
                *r += msg.encoded_len();
            }
            let Some(client) = clients.get_mut(ci).and_then(Option::as_mut) else {
                continue;
            };
            if silent(ci, stage) {
                continue;
            }
            let reply = if let ServerMessage::Shares(_) = msg {
                let x = input(cfg.seed, c, cfg.dim, cfg.bound);
                let t = Instant::now();
                client.set_input(&x)?;
                let reply = client.handle(msg)?;
                let el = t.elapsed().as_secs_f64();
                client_secs[ci] += el;
                mask_secs[ci] += el;
                // Ground truth for the clients whose masked input reaches the aggregator.
                let q = quantizer.quantize(&x)?;
                for i in 0..dim {
                    expected[i] += i64::from(q[i] as i32);
                    truth[i] += f64::from(x[i]);
                }
                included[ci] = true;
                reply
            } else {
                let t = Instant::now();
                let reply = client.handle(msg)?;
                client_secs[ci] += t.elapsed().as_secs_f64();
                reply
            };
            // Deliver at once so masked vectors never pile up in memory.
            deliver(&mut agg, vec![reply], &mut sent, &mut view, &mut agg_secs)?;
        }
    }
    let output = output.ok_or(SecAggError::Aborted("round did not finish".into()))?;

    let included_ids: Vec<ClientId> = (0..n)
        .filter(|&c| included[c])
        .map(|c| c as ClientId)
        .collect();
    let correct = output.included == included_ids && quantizer.decode_sum(&output.sum) == expected;
    let max_abs_error = output
        .values
        .iter()
        .zip(&truth)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let full: Vec<usize> = (0..n).filter(|&c| !dropped[c]).collect();
    let mean = |v: &[f64]| full.iter().map(|&c| v[c]).sum::<f64>() / full.len().max(1) as f64;
    let sent_f: Vec<f64> = sent.iter().map(|&b| b as f64).collect();
    let recv_f: Vec<f64> = received.iter().map(|&b| b as f64).collect();
    let bytes_per_client = mean(&sent_f);
    let report = SimReport {
        correct,
        max_abs_error,
        included: included_ids.len(),
        dropped: dropped.iter().filter(|d| **d).count(),
        threshold: params.threshold,
        degree: params.neighbors.min(cfg.clients - 1),
        client_ms: mean(&client_secs) * 1e3,
        client_ms_max: full.iter().map(|&c| client_secs[c]).fold(0.0, f64::max) * 1e3,
        client_mask_ms: mean(&mask_secs) * 1e3,
        aggregator_ms: agg_secs * 1e3,
        aggregator_unmask_ms: unmask_secs * 1e3,
        bytes_per_client,
        bytes_received_per_client: mean(&recv_f),
        plain_bytes: 4 * dim,
        expansion: bytes_per_client / (4 * dim) as f64,
    };
    Ok(SimOutcome {
        report,
        output,
        view,
    })
}
