//! Reference values and properties of the RDP accountant.

use privacy::accountant::{
    default_orders, epsilon_for, epsilon_from_rdp, noise_multiplier_for, subsampled_gaussian_curve,
    RdpAccountant,
};

/// Relative tolerance the issue asks for.
const TOL: f64 = 0.005;

fn assert_close(got: f64, want: f64, what: &str) {
    let rel = (got - want).abs() / want.abs();
    assert!(
        rel <= TOL,
        "{what}: got {got}, want {want} (relative error {rel:.2e})"
    );
    eprintln!("{what}: got {got:.8e}, want {want:.8e}, relative error {rel:.2e}");
}

#[test]
fn tf_privacy_mnist_60000_batch_150() {
    // q = 150/60000, σ = 1.3, 15 epochs = 6000 steps, δ = 1e-5 → ε = 0.7242.
    let e = epsilon_for(1.3, 150.0 / 60000.0, 6000, 1e-5).unwrap();
    assert_close(
        e.epsilon,
        0.7242,
        "TF Privacy N=60000 b=150 σ=1.3 15 epochs",
    );
}

#[test]
fn tf_privacy_100000_batch_100() {
    // q = 0.001, σ = 1.0, 30 epochs = 30000 steps, δ = 1e-7 → ε = 1.4155.
    let e = epsilon_for(1.0, 0.001, 30000, 1e-7).unwrap();
    assert_close(
        e.epsilon,
        1.4155,
        "TF Privacy N=100000 b=100 σ=1.0 30 epochs",
    );
}

/// The issue lists 6.70579741e-4 at α = 1.5, but dp_accounting's own test
/// (`rdp_privacy_accountant_test.py`, rtol 1e-4) asserts 6.5007e-4, and direct numerical
/// integration of E_{μ0}[(μ/μ0)^1.5] gives 6.50071e-4: the value is a typo, so the
/// published dp_accounting value is checked here (and the typo must stay out of reach).
#[test]
fn dp_accounting_rdp_at_orders() {
    let orders = [1.5, 2.5, 5.0, 50.0, 100.0];
    let want = [
        6.5007e-4,
        1.08548710e-3,
        2.18075656e-3,
        2.38460375e-2,
        1.67416308e2,
    ];
    let got = subsampled_gaussian_curve(0.01, 2.5, 50, &orders).unwrap();
    for ((a, g), w) in orders.iter().zip(&got).zip(&want) {
        assert_close(
            *g,
            *w,
            &format!("dp_accounting RDP q=0.01 σ=2.5 50 steps α={a}"),
        );
    }
    let typo = 6.70579741e-4;
    assert!(
        (got[0] - typo).abs() / typo > 0.02,
        "α = 1.5 unexpectedly matches the typo"
    );
}

/// TF Privacy `rdp_accountant_test.py::test_compute_rdp_scalar`:
/// `compute_rdp(0.1, 2, 10, 5)` = 0.07737 to 5 decimal places.
#[test]
fn tf_privacy_compute_rdp_scalar() {
    let got = subsampled_gaussian_curve(0.1, 2.0, 10, &[5.0]).unwrap()[0];
    assert!(
        (got - 0.07737).abs() < 0.5e-5,
        "TF Privacy compute_rdp(0.1, 2, 10, 5): got {got}, want 0.07737"
    );
}

/// TF Privacy `rdp_accountant_test.py::test_compute_rdp_sequence`:
/// `compute_rdp(0.01, 2.5, 50, [1.5, 2.5, 5, 50, 100])`, asserted there with absolute delta 1e-5.
#[test]
fn tf_privacy_compute_rdp_sequence() {
    let orders = [1.5, 2.5, 5.0, 50.0, 100.0];
    let want = [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307];
    let got = subsampled_gaussian_curve(0.01, 2.5, 50, &orders).unwrap();
    for ((a, g), w) in orders.iter().zip(&got).zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5,
            "TF Privacy compute_rdp(0.01, 2.5, 50) at α = {a}: got {g}, want {w}"
        );
    }
}

/// TF Privacy `rdp_accountant_test.py::test_check_composition`: q = 1e-4, σ = 0.4, 40000 steps
/// composed with q = 0.1, σ = 2, 100 steps, on TF's 21 orders, δ = 1e-5. TF asserts ε ≤ 8.509656,
/// the value of the old conversion ε = RDP(α) − log δ / (α − 1) (at α = 2.5); reproduce that
/// value with the old conversion, and check the Balle et al. conversion is below it.
#[test]
fn tf_privacy_check_composition() {
    let orders = [
        1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28., 32.,
        64., 256.,
    ];
    let mut acc = RdpAccountant::with_orders(orders.to_vec()).unwrap();
    acc.compose_subsampled_gaussian(1e-4, 0.4, 40000).unwrap();
    acc.compose_subsampled_gaussian(0.1, 2.0, 100).unwrap();
    let delta: f64 = 1e-5;
    let (old_eps, old_order) = orders
        .iter()
        .zip(acc.rdp())
        .map(|(&a, &r)| (r - delta.ln() / (a - 1.0), a))
        .fold(
            (f64::INFINITY, 0.0),
            |best, x| if x.0 < best.0 { x } else { best },
        );
    assert!(
        (old_eps - 8.509656).abs() < 1e-5,
        "TF Privacy composition (old conversion): got {old_eps}, want 8.509656"
    );
    assert_eq!(old_order, 2.5);
    let ours = acc.epsilon(delta).unwrap().epsilon;
    assert!(
        ours <= 8.509656,
        "Balle et al. conversion gives {ours} > 8.509656"
    );
}

/// Opacus `opacus/tests/accountants_test.py::test_rdp_accountant`: z = 1.5, q = 0.04,
/// int(90 / 0.04) = 2250 steps, δ = 1e-5 → ε = 7.32911117143 (asserted to 7 places there).
/// Opacus converts with the same Balle et al. 2020 formula but on its own order grid
/// (`RDPAccountant.DEFAULT_ALPHAS`: 1.1, 1.2, ..., 10.9 and 12, ..., 63), so that grid and
/// formula are reproduced here to compare like with like.
#[test]
fn opacus_rdp_accountant() {
    let (z, q, steps, delta) = (1.5, 0.04, 2250, 1e-5);
    let orders: Vec<f64> = (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect();
    let curve = subsampled_gaussian_curve(q, z, steps, &orders).unwrap();
    let opacus = opacus_epsilon(&orders, &curve, delta);
    // assertAlmostEqual's default: equal when rounded to 7 decimal places.
    assert!(
        (opacus - 7.32911117143).abs() < 5e-8,
        "Opacus RDP accountant: got {opacus}, want 7.32911117143"
    );
    // Our own conversion on the same grid is the same formula...
    let same_grid = epsilon_from_rdp(&orders, &curve, delta).unwrap().epsilon;
    assert!(
        (same_grid - opacus).abs() < 1e-12,
        "{same_grid} vs {opacus}"
    );
    // ... and on our dense grid it can only be tighter.
    let ours = epsilon_for(z, q, steps, delta).unwrap().epsilon;
    assert!(
        ours <= opacus + 1e-12,
        "dense grid ε {ours} > Opacus ε {opacus}"
    );
    eprintln!("Opacus ε = {opacus:.10}, ours (dense grid) = {ours:.10}");
}

/// Opacus's RDP → (ε, δ) conversion (`get_privacy_spent`, Balle et al. 2020, Theorem 21):
/// ε = min over α of RDP(α) − (log δ + log α)/(α − 1) + log((α − 1)/α).
fn opacus_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> f64 {
    orders
        .iter()
        .zip(rdp)
        .map(|(&a, &r)| r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln())
        .fold(f64::INFINITY, f64::min)
}

/// Independent check of the fractional-order series: trapezoidal quadrature of
/// A_α = ∫ μ0(z) ((1 − q) + q e^{(2z − 1)/(2σ²)})^α dz at several (q, σ, α).
#[test]
fn fractional_orders_match_quadrature() {
    for &(q, s, a) in &[
        (0.01, 2.5, 1.5),
        (0.1, 1.0, 2.7),
        (0.3, 2.0, 3.3),
        (0.02, 0.8, 7.25),
        (0.001, 0.3, 1.46),
        (0.4, 0.9, 1.9),
    ] {
        let (lo, hi, n) = (-40.0 * s, 60.0 * s, 200_000);
        let h = (hi - lo) / n as f64;
        let mut total = 0.0;
        for i in 0..=n {
            let z = lo + h * i as f64;
            let w = if i == 0 || i == n { 0.5 } else { 1.0 };
            let m0 = (-z * z / (2.0 * s * s)).exp() / ((2.0 * std::f64::consts::PI).sqrt() * s);
            total += w * m0 * ((1.0 - q) + q * ((2.0 * z - 1.0) / (2.0 * s * s)).exp()).powf(a);
        }
        let quad = (total * h).ln() / (a - 1.0);
        let got = subsampled_gaussian_curve(q, s, 1, &[a]).unwrap()[0];
        assert!(
            (got - quad).abs() / quad < 1e-5,
            "q={q} σ={s} α={a}: series {got} vs quadrature {quad}"
        );
    }
}

#[test]
fn dp_accounting_plain_gaussian_one_step() {
    let e = epsilon_for(4.530877117, 1.0, 1, 1e-6).unwrap();
    assert_close(
        e.epsilon,
        1.0,
        "dp_accounting Gaussian σ=4.530877117 δ=1e-6",
    );
}

#[test]
fn inverse_recovers_reference_noise() {
    // Inverting the dp_accounting reference: ε = 1 at δ = 1e-6 for one full-participation step.
    let z = noise_multiplier_for(1.0, 1e-6, 1.0, 1).unwrap();
    assert_close(z, 4.530877117, "noise multiplier for ε=1 δ=1e-6");
    let e = epsilon_for(z, 1.0, 1, 1e-6).unwrap();
    assert!(e.epsilon <= 1.0, "inverse overshoots: ε = {}", e.epsilon);
}

#[test]
fn grid_is_sorted_dense_and_valid() {
    let orders = default_orders();
    assert!(orders.len() > 300);
    assert!(orders.windows(2).all(|w| w[0] < w[1]));
    assert!(orders[0] > 1.0 && orders[0] < 1.05);
}

#[test]
fn invalid_arguments_are_rejected() {
    assert!(epsilon_for(-1.0, 0.1, 10, 1e-5).is_err());
    assert!(epsilon_for(1.0, 0.0, 10, 1e-5).is_err());
    assert!(epsilon_for(1.0, 1.5, 10, 1e-5).is_err());
    assert!(epsilon_for(1.0, 0.1, 0, 1e-5).is_err());
    assert!(epsilon_for(1.0, 0.1, 10, 1.0).is_err());
    assert!(noise_multiplier_for(0.0, 1e-5, 0.1, 10).is_err());
    assert!(noise_multiplier_for(f64::INFINITY, 1e-5, 0.1, 10).is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn epsilon_is_non_negative_and_grows_with_rounds(
            z in 0.3f64..20.0, q in 0.001f64..1.0, t in 1u64..500, extra in 1u64..500,
            log_delta in -12.0f64..-2.0,
        ) {
            let delta = 10f64.powf(log_delta);
            let a = epsilon_for(z, q, t, delta).unwrap().epsilon;
            let b = epsilon_for(z, q, t + extra, delta).unwrap().epsilon;
            prop_assert!(a >= 0.0);
            prop_assert!(b >= a * (1.0 - 1e-12), "ε({t}) = {a} > ε({}) = {b}", t + extra);
        }

        #[test]
        fn epsilon_grows_with_sample_rate(
            z in 0.3f64..20.0, q in 0.001f64..0.99, factor in 1.01f64..10.0, t in 1u64..300,
        ) {
            let q2 = (q * factor).min(1.0);
            let a = epsilon_for(z, q, t, 1e-5).unwrap().epsilon;
            let b = epsilon_for(z, q2, t, 1e-5).unwrap().epsilon;
            prop_assert!(b >= a * (1.0 - 1e-12), "ε(q={q}) = {a} > ε(q={q2}) = {b}");
        }

        #[test]
        fn epsilon_shrinks_with_noise(
            z in 0.3f64..20.0, factor in 1.01f64..5.0, q in 0.001f64..1.0, t in 1u64..300,
        ) {
            let a = epsilon_for(z, q, t, 1e-5).unwrap().epsilon;
            let b = epsilon_for(z * factor, q, t, 1e-5).unwrap().epsilon;
            prop_assert!(b <= a * (1.0 + 1e-12), "ε(z={z}) = {a} < ε(z={}) = {b}", z * factor);
        }

        #[test]
        fn rdp_is_non_decreasing_in_order(z in 0.3f64..20.0, q in 0.001f64..1.0) {
            let orders = default_orders();
            let curve = subsampled_gaussian_curve(q, z, 1, &orders).unwrap();
            for (w, a) in curve.windows(2).zip(orders.windows(2)) {
                prop_assert!(w[0] >= 0.0);
                prop_assert!(w[1] >= w[0] * (1.0 - 1e-9) - 1e-300,
                    "RDP drops from {} at α={} to {} at α={}", w[0], a[0], w[1], a[1]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

        #[test]
        fn noise_for_target_never_overshoots(
            target in 0.1f64..20.0, q in 0.005f64..1.0, t in 1u64..200,
            log_delta in -10.0f64..-3.0,
        ) {
            let delta = 10f64.powf(log_delta);
            let z = noise_multiplier_for(target, delta, q, t).unwrap();
            let eps = epsilon_for(z, q, t, delta).unwrap().epsilon;
            prop_assert!(eps <= target, "z = {z} gives ε = {eps} > target {target}");
            // ... and is tight: 0.1 % less noise already overshoots.
            let below = epsilon_for(z * 0.999, q, t, delta).unwrap().epsilon;
            prop_assert!(below > target, "z = {z} is not minimal: ε(0.999 z) = {below}");
        }
    }
}
