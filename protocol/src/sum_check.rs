//! The host's check that a released sum is one honest contributors could have produced.
//!
//! Inside secure aggregation a hostile contributor can add anything mod 2³² and nobody sees
//! its input. What the host can still see is the sum, and an honest upload has a shape (see
//! [`crate::upload`]): every prediction row is `w_{k,y}·p` with `p` a distribution, so it sums
//! to the client's share `w_{k,y}` of the prompted class; the shares lie in [0, 1] and sum to
//! at most 1; a moment weight is the class's share or 0; the first moments of clipped codes
//! lie in [−1, 1] and the second in [0, 1]. Clipping the whole upload to an L2 norm scales all
//! of it alike and keeps every one of these. A sum of n such uploads keeps them n-fold, up
//! to the contributors' Gaussian noise (client-level DP), the encoding's rounding, and the
//! clamp of every released coordinate to the encoding's bound B.
//!
//! A sum outside those lines cannot come from n honest contributors (noise aside, with a
//! probability below 10⁻⁸ per check at 6 standard deviations), and the host refuses it: the
//! round is abandoned and nothing it said reaches the generator or the clients. This is not
//! input validation: a hostile contributor who stays inside the lines (say, predictions that
//! favour the wrong class) passes, as it would without secure aggregation. Zero-knowledge range
//! proofs on each input (RoFL, ACORN) would bound each input; this bounds only the sum.

use crate::error::ProtocolError;
use crate::upload::UploadLayout;

/// Standard deviations of the sum's noise an honest sum may stray by in one check.
pub const NOISE_SDS: f64 = 6.0;

/// What an honest sum of a round may stray from its lines by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SumCheck {
    /// Uploads in the sum.
    pub contributors: usize,
    /// The encoding's per-coordinate bound B: each released coordinate is clamped to ±B.
    pub coordinate_bound: f64,
    /// Standard deviation of the Gaussian noise on each coordinate of the sum (0: the uploads
    /// carry none, as without DP or under record-level DP).
    pub noise_sd: f64,
    /// The encoding's rounding: one quantisation level (each contributor rounds by at most
    /// half of it per coordinate).
    pub resolution: f64,
}

impl SumCheck {
    /// How far a sum over `terms` coordinates of the aggregate may stray from its honest
    /// value: the noise at [`NOISE_SDS`] standard deviations, every contributor's rounding,
    /// and f32 arithmetic in the uploads.
    fn slack(&self, terms: usize) -> f64 {
        let n = self.contributors as f64;
        let t = terms as f64;
        NOISE_SDS * self.noise_sd * t.sqrt() + n * t * (0.5 * self.resolution + 1e-5)
    }

    /// Refuses `sum` if no `contributors` honest uploads of `layout` answering prompts
    /// `prompt_class` could have produced it; says which line it crossed.
    pub fn check(
        &self,
        layout: &UploadLayout,
        sum: &[f64],
        prompt_class: &[u16],
    ) -> Result<(), ProtocolError> {
        let refuse = |reason: String| {
            Err(ProtocolError::Invalid {
                kind: "aggregate",
                reason,
            })
        };
        let (s, c, d) = (layout.samples, layout.classes, layout.moments);
        if sum.len() != layout.len() || prompt_class.len() != s {
            return refuse(format!(
                "{} values and {} prompts for a layout of {} values and {s} samples",
                sum.len(),
                prompt_class.len(),
                layout.len()
            ));
        }
        let n = self.contributors as f64;
        let reach = n * self.coordinate_bound + self.slack(1);
        if let Some(i) = sum.iter().position(|v| !v.is_finite() || v.abs() > reach) {
            return refuse(format!(
                "coordinate {i} is {}, beyond ±n·B = ±{reach:.3} for {} contributors",
                sum[i], self.contributors
            ));
        }
        let one = self.slack(1);
        let within = |v: f64, lo: f64, hi: f64| v >= lo * n - one && v <= hi * n + one;
        let (rows, rest) = sum.split_at(s * c);
        let (shares, moments) = rest.split_at(c);
        let unit_blocks = [("prediction", rows), ("class share", shares)];
        for (what, block) in unit_blocks {
            if let Some(i) = block.iter().position(|&v| !within(v, 0.0, 1.0)) {
                return refuse(format!(
                    "{what} {i} is {:.4}, outside [0, {n}] for {n} contributors",
                    block[i]
                ));
            }
        }
        let total: f64 = shares.iter().sum();
        let tol = self.slack(c);
        if total < -tol || total > n + tol {
            return refuse(format!(
                "the class shares sum to {total:.4}; {n} contributors' sum to at most {n} \
                 (± {tol:.4})"
            ));
        }
        let tol = self.slack(c + 1);
        for (j, (row, &y)) in rows.chunks_exact(c).zip(prompt_class).enumerate() {
            let Some(&w) = shares.get(usize::from(y)) else {
                return refuse(format!("prompt class {y} of sample {j} is out of range"));
            };
            let mass: f64 = row.iter().sum();
            if (mass - w).abs() > tol {
                return refuse(format!(
                    "sample {j}'s predictions sum to {mass:.4}, not to the share {w:.4} of its \
                     prompted class (± {tol:.4})"
                ));
            }
        }
        if d > 0 {
            let (weights, rows) = moments.split_at(c);
            let tol = self.slack(2);
            for (k, (&mw, &w)) in weights.iter().zip(shares).enumerate() {
                if !within(mw, 0.0, 1.0) || mw > w + tol {
                    return refuse(format!(
                        "moment weight {mw:.4} of class {k} is not between 0 and its share {w:.4}"
                    ));
                }
            }
            for (k, row) in rows.chunks_exact(2 * d).enumerate() {
                let (first, second) = row.split_at(d);
                if let Some(i) = first.iter().position(|&v| !within(v, -1.0, 1.0)) {
                    return refuse(format!(
                        "first moment {i} of class {k} is {:.4}, outside ±{n}",
                        first[i]
                    ));
                }
                if let Some(i) = second.iter().position(|&v| !within(v, 0.0, 1.0)) {
                    return refuse(format!(
                        "second moment {i} of class {k} is {:.4}, outside [0, {n}]",
                        second[i]
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const LAYOUT: UploadLayout = UploadLayout {
        samples: 6,
        classes: 3,
        moments: 2,
    };
    const PROMPTS: [u16; 6] = [0, 1, 2, 0, 1, 2];

    /// An honest upload: random predictions, class counts and codes, built as clients do.
    fn honest(rng: &mut ChaCha8Rng) -> Vec<f32> {
        let c = LAYOUT.classes;
        let mut preds = Vec::new();
        for _ in 0..LAYOUT.samples {
            let raw: Vec<f32> = (0..c).map(|_| rng.random::<f32>() + 1e-3).collect();
            let total: f32 = raw.iter().sum();
            preds.extend(raw.iter().map(|v| v / total));
        }
        // Some clients lack a class entirely.
        let counts: Vec<f64> = (0..c)
            .map(|_| f64::from(rng.random_range(0u32..4) * 5))
            .collect();
        let counts = if counts.iter().sum::<f64>() == 0.0 {
            vec![1.0; c]
        } else {
            counts
        };
        // Per class Σ z/R then Σ (z/R)² over its records, each |z/R| ≤ 1 per coordinate.
        let mut sums = Vec::new();
        for &n in &counts {
            let zs: Vec<f64> = (0..LAYOUT.moments)
                .map(|_| n * rng.random_range(-0.7..0.7))
                .collect();
            let z2: Vec<f64> = zs.iter().map(|z| z.abs() * 0.7).collect();
            sums.extend(zs);
            sums.extend(z2);
        }
        LAYOUT
            .build(&preds, &PROMPTS, &counts, Some(&sums))
            .unwrap()
    }

    fn check(n: usize, noise_sd: f64) -> SumCheck {
        SumCheck {
            contributors: n,
            coordinate_bound: 16.0,
            noise_sd,
            resolution: 1e-6,
        }
    }

    fn sum_of(uploads: &[Vec<f32>]) -> Vec<f64> {
        let mut sum = vec![0f64; LAYOUT.len()];
        for u in uploads {
            for (s, v) in sum.iter_mut().zip(u) {
                *s += f64::from(*v);
            }
        }
        sum
    }

    #[test]
    fn honest_sums_pass_with_and_without_noise_and_clipping() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for trial in 0..200 {
            let n = 3 + trial % 8;
            let mut uploads: Vec<Vec<f32>> = (0..n).map(|_| honest(&mut rng)).collect();
            // Half the trials clip every upload to an L2 norm of 1, as client-level DP does.
            if trial % 2 == 1 {
                for u in &mut uploads {
                    let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt();
                    u.iter_mut().for_each(|v| *v /= norm.max(1.0));
                }
            }
            let exact = sum_of(&uploads);
            check(n, 0.0)
                .check(&LAYOUT, &exact, &PROMPTS)
                .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            // Gaussian noise of sd 0.3 on every coordinate of the sum.
            let sd = 0.3;
            let noised: Vec<f64> = exact
                .iter()
                .map(|v| {
                    let g: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                    v + sd * g
                })
                .collect();
            check(n, sd)
                .check(&LAYOUT, &noised, &PROMPTS)
                .unwrap_or_else(|e| panic!("trial {trial}, noised: {e}"));
        }
    }

    #[test]
    fn sums_no_honest_contributors_could_produce_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 5;
        let uploads: Vec<Vec<f32>> = (0..n).map(|_| honest(&mut rng)).collect();
        let good = sum_of(&uploads);
        let c = LAYOUT.classes;
        let share0 = LAYOUT.samples * c;
        let moments = share0 + c;
        type Attack = Box<dyn Fn(&mut Vec<f64>)>;
        let attacks: Vec<(&str, Attack)> = vec![
            // A wrapped coordinate: far beyond what n clamped inputs can reach.
            ("beyond ±n·B", Box::new(|s| s[4] = 8.0 * 16.0 * 5.0)),
            ("beyond ±n·B", Box::new(|s| s[0] = f64::NAN)),
            // A prediction inflated by one contributor's whole range and more.
            ("prediction", Box::new(|s| s[1] = 6.5)),
            ("prediction", Box::new(|s| s[2] = -0.5)),
            // Shares pushed past n together, each still within [0, n].
            ("sum to", Box::new(move |s| s[share0..share0 + 3].fill(4.9))),
            // A row that does not sum to its prompted class's share: a boosted class.
            ("not to the share", Box::new(|s| s[0] += 0.4)),
            // A moment weight above its class's share.
            (
                "moment weight",
                Box::new(move |s| s[moments] = s[share0] + 0.5),
            ),
            // A first moment beyond what n clipped codes reach.
            ("first moment", Box::new(move |s| s[moments + c] = -5.5)),
            (
                "second moment",
                Box::new(move |s| s[moments + c + 2] = -0.3),
            ),
        ];
        for (says, attack) in attacks {
            let mut sum = good.clone();
            attack(&mut sum);
            match check(n, 0.0).check(&LAYOUT, &sum, &PROMPTS) {
                Err(e) => assert!(e.to_string().contains(says), "{says}: {e}"),
                Ok(()) => panic!("{says}: an impossible sum passed"),
            }
        }
        // The same small boost passes once the sum carries noise it could be.
        let mut boosted = good.clone();
        boosted[0] += 0.4;
        check(n, 0.2).check(&LAYOUT, &boosted, &PROMPTS).unwrap();
        // Shapes that do not fit are refused, not indexed.
        assert!(check(n, 0.0).check(&LAYOUT, &good[1..], &PROMPTS).is_err());
        assert!(check(n, 0.0)
            .check(&LAYOUT, &good, &[0, 1, 2, 0, 1, 9])
            .is_err());
    }
}
