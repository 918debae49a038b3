//! The aggregator's view does not determine an individual input.
//!
//! Two worlds with the same sum: client 0 holds x₀ and client 1 holds x₁ in world A, and x₀ + δ,
//! x₁ − δ in world B. With all clients alive the aggregator learns every self-mask seed, so the most
//! it can compute about client 0 is z₀ = y₀ − PRG(b₀) = x₀ + (pairwise masks). Over many rounds
//! z₀ must be distributed alike in both worlds, while x₀ itself (no masks) is told apart at once.

mod secagg_common;

use privacy::secagg::masking::expand;
use privacy::secagg::shamir;
use privacy::secagg::{ClientMessage, Step};
use secagg_common::*;

const DIM: usize = 8;
const TRIALS: u64 = 300;
const BINS: usize = 8;
/// χ² critical value for 7 degrees of freedom at p = 0.001.
const CHI2_CRIT: f64 = 24.32;

/// Runs one round with the given inputs; returns the aggregator's view and the released sum.
fn round(seed: u64, inputs: [Vec<f32>; 3]) -> (Vec<ClientMessage>, Vec<u32>) {
    let cfg = config(3, 2, Some(2), DIM as u32, seed);
    let mut net = setup(&cfg);
    net.inputs = inputs.to_vec();
    let mut view = std::mem::take(&mut net.adverts);
    for m in view.clone() {
        net.agg.receive(m).unwrap();
    }
    loop {
        match net.agg.advance().unwrap() {
            Step::Send(out) => {
                let replies = answer(&mut net, out, &[true; 3]);
                for r in replies {
                    view.push(r.clone());
                    net.agg.receive(r).unwrap();
                }
            }
            Step::Finished(o) => return (view, o.sum),
        }
    }
}

/// What the aggregator can compute about client 0 from its view: y₀ − PRG(b₀).
fn unmasked_client0(view: &[ClientMessage]) -> Vec<u32> {
    let mut y0 = None;
    let mut b0_shares = Vec::new();
    for m in view {
        match m {
            ClientMessage::Masked(x) if x.sender == 0 => y0 = Some(x.masked.clone()),
            ClientMessage::Unmask(r) => b0_shares.extend(
                r.self_mask_shares
                    .iter()
                    .filter(|s| s.owner == 0)
                    .map(|s| s.share),
            ),
            _ => {}
        }
    }
    let b0 = shamir::combine(&b0_shares, 2).unwrap();
    let mask = expand(&b0, DIM);
    y0.unwrap()
        .iter()
        .zip(mask)
        .map(|(y, m)| y.wrapping_sub(m))
        .collect()
}

/// χ² statistic of homogeneity between two histograms.
fn chi2(a: &[u64; BINS], b: &[u64; BINS]) -> f64 {
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let n = na + nb;
    let mut stat = 0.0;
    for i in 0..BINS {
        let col = (a[i] + b[i]) as f64;
        for (obs, row) in [(a[i] as f64, na), (b[i] as f64, nb)] {
            let e = row * col / n;
            if e > 0.0 {
                stat += (obs - e).powi(2) / e;
            }
        }
    }
    stat
}

#[test]
fn changing_one_input_with_the_sum_fixed_leaves_the_view_distribution_unchanged() {
    let cfg = config(3, 2, Some(2), DIM as u32, 0);
    let q = setup(&cfg).params.quantizer;
    // Inputs a few quantization levels apart (small values, so f32 holds them exactly enough);
    // δ = 5 levels moves the low bits of client 0's quantized input.
    let levels = |l: f64| vec![(l / q.scale()) as f32; DIM];
    let world_a = [levels(0.0), levels(100.0), levels(-40.0)];
    let world_b = [levels(5.0), levels(95.0), levels(-40.0)];
    let (mut ha, mut hb) = ([0u64; BINS], [0u64; BINS]);
    let (mut raw_a, mut raw_b) = ([0u64; BINS], [0u64; BINS]);
    for trial in 0..TRIALS {
        let (view_a, sum_a) = round(1000 + trial, world_a.clone());
        let (view_b, sum_b) = round(1000 + trial, world_b.clone());
        // The released sum is the same in both worlds.
        assert_eq!(sum_a, sum_b);
        for (z, h) in [
            (unmasked_client0(&view_a), &mut ha),
            (unmasked_client0(&view_b), &mut hb),
        ] {
            for w in z {
                h[(w as usize) % BINS] += 1;
            }
        }
        // Negative control: the unmasked quantized input itself.
        for (x, h) in [(&world_a[0], &mut raw_a), (&world_b[0], &mut raw_b)] {
            for w in q.quantize(x).unwrap() {
                h[(w as usize) % BINS] += 1;
            }
        }
    }
    let masked = chi2(&ha, &hb);
    let unmasked = chi2(&raw_a, &raw_b);
    assert!(
        masked < CHI2_CRIT,
        "view distinguishes the worlds: chi2 = {masked}, {ha:?} vs {hb:?}"
    );
    assert!(
        unmasked > 100.0 * CHI2_CRIT,
        "the test has no power: chi2 = {unmasked}"
    );
    // And z₀ is spread over all residues (it is not the input in disguise).
    assert!(ha.iter().all(|&c| c > 0) && hb.iter().all(|&c| c > 0));
}
