//! Criterion benchmarks of secure aggregation: mask expansion against raw ChaCha20, and full rounds.

use std::hint::black_box;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use privacy::secagg::masking::{apply_masks, Mask, MaskSign};
use privacy::secagg::simulation::{simulate, DropStage, SimConfig};

/// Keystream generation: raw ChaCha20 versus the masking path (which also adds mod 2^32).
fn expansion(c: &mut Criterion) {
    let dim = 100_000usize;
    let mut g = c.benchmark_group("expansion");
    g.throughput(Throughput::Bytes((dim * 4) as u64));
    g.bench_function("raw_chacha20_400KB", |b| {
        let mut buf = vec![0u8; dim * 4];
        b.iter(|| {
            let mut cipher = ChaCha20::new(&[1u8; 32].into(), &[0u8; 12].into());
            cipher.apply_keystream(&mut buf);
            black_box(&buf);
        })
    });
    g.bench_function("apply_mask_100k_words", |b| {
        let mut acc = vec![0u32; dim];
        let mask = [Mask {
            seed: [1u8; 32],
            sign: MaskSign::Add,
        }];
        b.iter(|| {
            apply_masks(&mut acc, &mask);
            black_box(&acc);
        })
    });
    g.finish();
}

/// A full in-process round with real crypto at small sizes (the CLI covers the large ones).
fn rounds(c: &mut Criterion) {
    let mut g = c.benchmark_group("round");
    g.sample_size(10);
    for (n, dim, k) in [(20u32, 10_000u32, 8u32), (50, 10_000, 16)] {
        let cfg = SimConfig {
            clients: n,
            dim,
            neighbors: k,
            threshold: None,
            dropout: 0.1,
            drop_stage: DropStage::AfterShareKeys,
            seed: 1,
            bound: 1.0,
        };
        g.bench_with_input(
            BenchmarkId::new("n_dim_k", format!("{n}x{dim}x{k}")),
            &cfg,
            |b, cfg| {
                b.iter(|| {
                    let out = simulate(cfg, false).expect("round completes");
                    assert!(out.report.correct);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, expansion, rounds);
criterion_main!(benches);
