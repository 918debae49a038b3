//! One-run privacy auditing (Steinke, Nasr and Jagielski 2023): the ε lower bound and the guesses.

use privacy::audit::{
    epsilon_lower_bound, epsilon_lower_bound_with_delta, guesses_from_scores, p_value,
    DEFAULT_CONFIDENCE, MAX_EPSILON,
};

#[test]
fn no_guesses_give_no_bound() {
    assert_eq!(epsilon_lower_bound(0, 0, DEFAULT_CONFIDENCE).unwrap(), 0.0);
    assert_eq!(epsilon_lower_bound(50, 0, DEFAULT_CONFIDENCE).unwrap(), 0.0);
}

#[test]
fn chance_accuracy_gives_no_bound() {
    for r in [1u64, 2, 10, 101, 1000, 100_000] {
        for v in [r / 4, r / 2] {
            let eps = epsilon_lower_bound(r, v, DEFAULT_CONFIDENCE).unwrap();
            assert_eq!(eps, 0.0, "r = {r}, v = {v}");
        }
    }
}

#[test]
fn all_correct_matches_the_closed_form() {
    // P[Bin(r, p) ≥ r] = p^r, so the bound solves p^r = β: p = β^(1/r), ε = ln(p / (1 − p)).
    let (r, beta) = (100u64, 0.05f64);
    let p = beta.powf(1.0 / r as f64);
    let want = (p / (1.0 - p)).ln();
    let got = epsilon_lower_bound(r, r, 1.0 - beta).unwrap();
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
    // The δ form with δ = 0 is the same bound.
    let same = epsilon_lower_bound_with_delta(1000, r, r, 1.0 - beta, 0.0).unwrap();
    assert!((same - want).abs() < 1e-9, "got {same}, want {want}");
}

#[test]
fn bound_grows_with_correct_guesses_and_with_guesses_at_fixed_accuracy() {
    let r = 1000;
    let mut last = 0.0;
    for v in [550u64, 600, 700, 800, 900, 1000] {
        let eps = epsilon_lower_bound(r, v, DEFAULT_CONFIDENCE).unwrap();
        assert!(eps > last, "v = {v}: {eps} ≤ {last}");
        last = eps;
    }
    // 80 % accuracy on ever more guesses: more evidence, a larger bound, approaching ln 4.
    let mut last = 0.0;
    // (At r = 10, 8 right is still not significant: P[Bin(10, 1/2) ≥ 8] ≈ 0.055.)
    assert_eq!(epsilon_lower_bound(10, 8, DEFAULT_CONFIDENCE).unwrap(), 0.0);
    for r in [20u64, 100, 1000, 10_000, 100_000] {
        let eps = epsilon_lower_bound(r, r * 4 / 5, DEFAULT_CONFIDENCE).unwrap();
        assert!(eps > last && eps < 4f64.ln(), "r = {r}: {eps}");
        last = eps;
    }
    assert!(last > 0.98 * 4f64.ln(), "{last}");
}

#[test]
fn the_bound_is_where_the_p_value_crosses_beta() {
    let (m, r, v) = (10_000u64, 2000u64, 1500u64);
    let eps = epsilon_lower_bound(r, v, DEFAULT_CONFIDENCE).unwrap();
    let at = p_value(m, r, v, eps, 0.0).unwrap();
    let above = p_value(m, r, v, eps + 1e-6, 0.0).unwrap();
    assert!(at < 0.05 && above >= 0.05, "{at} {above}");
}

#[test]
fn delta_lowers_the_bound() {
    let (m, r, v) = (1000u64, 1000u64, 900u64);
    let pure = epsilon_lower_bound(r, v, DEFAULT_CONFIDENCE).unwrap();
    let mut last = pure;
    for delta in [1e-8, 1e-6, 1e-5, 1e-4] {
        let eps = epsilon_lower_bound_with_delta(m, r, v, DEFAULT_CONFIDENCE, delta).unwrap();
        assert!(eps <= last && eps > 0.0, "δ = {delta}: {eps} > {last}");
        last = eps;
    }
    assert!(last < pure);
    // With 2mδ ≥ 1 the δ term alone can explain every guess: no bound at all.
    let eps = epsilon_lower_bound_with_delta(m, r, v, DEFAULT_CONFIDENCE, 0.5).unwrap();
    assert_eq!(eps, 0.0);
}

#[test]
fn large_audits_stay_finite_and_capped() {
    let eps = epsilon_lower_bound(100_000, 100_000, DEFAULT_CONFIDENCE).unwrap();
    assert!(eps.is_finite() && eps > 10.0 && eps < MAX_EPSILON, "{eps}");
    let eps = epsilon_lower_bound(100_000, 60_000, 0.99).unwrap();
    assert!(eps > 0.3 && eps < (1.5f64).ln(), "{eps}");
    let eps =
        epsilon_lower_bound_with_delta(200_000, 100_000, 60_000, DEFAULT_CONFIDENCE, 1e-5).unwrap();
    assert!(eps.is_finite() && eps >= 0.0, "{eps}");
}

#[test]
fn invalid_inputs_are_rejected() {
    assert!(epsilon_lower_bound(10, 11, 0.95)
        .unwrap_err()
        .is_invalid_argument());
    for c in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(epsilon_lower_bound(10, 5, c)
            .unwrap_err()
            .is_invalid_argument());
    }
    assert!(epsilon_lower_bound_with_delta(5, 10, 5, 0.95, 1e-5).is_err());
    assert!(epsilon_lower_bound_with_delta(50, 10, 5, 0.95, -1e-5).is_err());
    assert!(epsilon_lower_bound_with_delta(50, 10, 5, 0.95, 1.0).is_err());
    assert!(p_value(50, 10, 5, -1.0, 0.0).is_err());
}

#[test]
fn guesses_from_scores_on_a_hand_example() {
    let scores = [0.9, 0.1, 0.5, 0.8, 0.2, 0.5];
    let included = [true, false, true, false, false, true];
    // Order: 0 (0.9), 3 (0.8), 2 (0.5), 5 (0.5; tie, higher index), 4 (0.2), 1 (0.1).
    // In: {0, 3} → 1 right; out: {4, 1} → 2 right.
    assert_eq!(
        guesses_from_scores(&scores, &included, 2, 2).unwrap(),
        (4, 3)
    );
    // The tie at 0.5 goes to the lower index: in = {0, 3, 2} → 2 right.
    assert_eq!(
        guesses_from_scores(&scores, &included, 3, 0).unwrap(),
        (3, 2)
    );
    // ... and out of the tie the higher index comes last: out = {5, 4, 1} → 2 right.
    assert_eq!(
        guesses_from_scores(&scores, &included, 0, 3).unwrap(),
        (3, 2)
    );
    // Overlapping requests shrink the "out" side; nothing is guessed twice:
    // in = {0, 3, 2, 5, 4} → 3 right, out = {1} → 1 right.
    assert_eq!(
        guesses_from_scores(&scores, &included, 5, 5).unwrap(),
        (6, 4)
    );
    assert_eq!(guesses_from_scores(&[], &[], 3, 3).unwrap(), (0, 0));
    assert!(guesses_from_scores(&scores, &included[..5], 1, 1).is_err());
    assert!(guesses_from_scores(&[0.1, f64::NAN], &[true, false], 1, 1).is_err());
}
