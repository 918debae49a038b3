//! Fixed-point quantization of f32 uploads into Z_{2^32} with a scale that makes wrap-around impossible.
//!
//! Each coordinate x with |x| ≤ B maps to the integer q = round(x · s) with |q| ≤ M, where
//! M = ⌊(2^31 − 1) / n_max⌋ and s = M / B. The sum of up to n_max such integers lies in
//! [−(2^31 − 1), 2^31 − 1], so its residue mod 2^32 read as an i32 is the exact integer sum.
//! Values outside the declared bound are rejected, never clipped: clipping (and DP noise)
//! belongs to the caller, before quantization.

use serde::{Deserialize, Serialize};

use super::error::SecAggError;

/// The declared bound on a client's upload, which fixes the quantization scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ClipBound {
    /// Every coordinate satisfies |x_i| ≤ bound.
    LInf(f32),
    /// The vector satisfies ‖x‖₂ ≤ bound (hence also every |x_i| ≤ bound).
    L2(f32),
}

impl ClipBound {
    /// The per-coordinate bound implied by this bound.
    pub fn coordinate_bound(&self) -> f32 {
        match *self {
            ClipBound::LInf(b) | ClipBound::L2(b) => b,
        }
    }
}

/// Maps f32 vectors to Z_{2^32} and sums back to f64, exactly for up to `max_clients` summands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    bound: ClipBound,
    max_clients: u32,
    max_level: u32,
    scale: f64,
}

impl Quantizer {
    /// Builds the quantizer for inputs within `bound` summed over at most `max_clients` clients.
    pub fn new(bound: ClipBound, max_clients: u32) -> Result<Self, SecAggError> {
        let b = bound.coordinate_bound();
        if !(b.is_finite() && b > 0.0) {
            return Err(SecAggError::InvalidParams(format!(
                "clip bound must be finite and positive, got {b}"
            )));
        }
        if max_clients == 0 {
            return Err(SecAggError::InvalidParams(
                "max_clients must be at least 1".into(),
            ));
        }
        let max_level = (i32::MAX as u32) / max_clients;
        if max_level == 0 {
            return Err(SecAggError::InvalidParams(format!(
                "max_clients {max_clients} leaves no room for any quantization level"
            )));
        }
        Ok(Self {
            bound,
            max_clients,
            max_level,
            scale: f64::from(max_level) / f64::from(b),
        })
    }

    /// The declared bound.
    pub fn bound(&self) -> ClipBound {
        self.bound
    }

    /// The largest number of clients whose sum is guaranteed not to wrap.
    pub fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// The largest |q| a single quantized coordinate can take.
    pub fn max_level(&self) -> u32 {
        self.max_level
    }

    /// Quantization levels per unit of input (q = round(x · scale)).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The input difference one quantization level stands for (the worst rounding error is half of it).
    pub fn resolution(&self) -> f64 {
        1.0 / self.scale
    }

    /// Checks `input` against the declared bound without quantizing it.
    pub fn check(&self, input: &[f32]) -> Result<(), SecAggError> {
        let b = self.bound.coordinate_bound();
        let mut sq = 0.0f64;
        for (index, &value) in input.iter().enumerate() {
            if !value.is_finite() {
                return Err(SecAggError::NotFinite(index));
            }
            if value.abs() > b {
                return Err(SecAggError::OutOfBound {
                    index,
                    value,
                    bound: b,
                });
            }
            sq += f64::from(value) * f64::from(value);
        }
        if let ClipBound::L2(bound) = self.bound {
            let norm = sq.sqrt();
            if norm > f64::from(bound) {
                return Err(SecAggError::NormExceeded { norm, bound });
            }
        }
        Ok(())
    }

    /// Quantizes one value already known to be within bound, as a signed level.
    fn level(&self, value: f32) -> i32 {
        let m = f64::from(self.max_level);
        // |value| ≤ B gives |value·s| ≤ M up to float rounding; the clamp only absorbs that rounding.
        (f64::from(value) * self.scale).round().clamp(-m, m) as i32
    }

    /// Checks the bound, then quantizes `input` into residues mod 2^32 (two's complement).
    pub fn quantize(&self, input: &[f32]) -> Result<Vec<u32>, SecAggError> {
        self.check(input)?;
        Ok(input.iter().map(|&x| self.level(x) as u32).collect())
    }

    /// Reads a sum mod 2^32 of at most `max_clients` quantized vectors back as exact integers.
    pub fn decode_sum(&self, sum: &[u32]) -> Vec<i64> {
        sum.iter().map(|&w| i64::from(w as i32)).collect()
    }

    /// Reads a sum mod 2^32 of at most `max_clients` quantized vectors back as real numbers.
    pub fn dequantize_sum(&self, sum: &[u32]) -> Vec<f64> {
        sum.iter()
            .map(|&w| f64::from(w as i32) / self.scale)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_configuration() {
        assert!(Quantizer::new(ClipBound::LInf(0.0), 10).is_err());
        assert!(Quantizer::new(ClipBound::LInf(f32::NAN), 10).is_err());
        assert!(Quantizer::new(ClipBound::L2(1.0), 0).is_err());
        assert!(Quantizer::new(ClipBound::L2(1.0), u32::MAX).is_err());
    }

    #[test]
    fn rejects_out_of_bound_instead_of_clipping() {
        let q = Quantizer::new(ClipBound::LInf(1.0), 4).unwrap();
        assert_eq!(
            q.quantize(&[0.5, 1.5]),
            Err(SecAggError::OutOfBound {
                index: 1,
                value: 1.5,
                bound: 1.0
            })
        );
        assert_eq!(q.quantize(&[f32::NAN]), Err(SecAggError::NotFinite(0)));
        let q2 = Quantizer::new(ClipBound::L2(1.0), 4).unwrap();
        assert!(matches!(
            q2.quantize(&[0.8, 0.8]),
            Err(SecAggError::NormExceeded { .. })
        ));
        assert!(q2.quantize(&[0.6, 0.79]).is_ok());
    }

    #[test]
    fn extreme_sums_do_not_wrap() {
        let n = 7u32;
        let q = Quantizer::new(ClipBound::LInf(2.0), n).unwrap();
        for v in [2.0f32, -2.0] {
            let one = q.quantize(&[v]).unwrap();
            let sum = (0..n).fold(0u32, |acc, _| acc.wrapping_add(one[0]));
            let dec = q.decode_sum(&[sum]);
            assert_eq!(dec[0], i64::from(n) * i64::from(one[0] as i32));
            assert!((q.dequantize_sum(&[sum])[0] - f64::from(n) * f64::from(v)).abs() < 1e-6);
        }
    }

    fn vectors(n: usize, dim: usize, b: f32) -> impl Strategy<Value = Vec<Vec<f32>>> {
        prop::collection::vec(prop::collection::vec(-b..=b, dim), 1..=n)
    }

    proptest! {
        #[test]
        fn sum_of_in_bound_inputs_is_exact(
            n_max in 1u32..2000,
            bound in 0.01f32..1000.0,
            seed_vectors in vectors(12, 5, 1.0),
        ) {
            let q = Quantizer::new(ClipBound::LInf(bound), n_max).unwrap();
            let clients = seed_vectors.len().min(n_max as usize);
            let mut acc = vec![0u32; 5];
            let mut exact = vec![0i64; 5];
            let mut real = [0f64; 5];
            for v in seed_vectors.iter().take(clients) {
                let scaled: Vec<f32> = v.iter().map(|x| x * bound).collect();
                let qv = q.quantize(&scaled).unwrap();
                for i in 0..5 {
                    prop_assert!((qv[i] as i32).unsigned_abs() <= q.max_level());
                    acc[i] = acc[i].wrapping_add(qv[i]);
                    exact[i] += i64::from(qv[i] as i32);
                    real[i] += f64::from(scaled[i]);
                }
            }
            prop_assert_eq!(q.decode_sum(&acc), exact);
            let deq = q.dequantize_sum(&acc);
            for i in 0..5 {
                let tol = clients as f64 * (0.5 * q.resolution() + f64::from(bound) * 1e-6);
                prop_assert!((deq[i] - real[i]).abs() <= tol, "{} vs {}", deq[i], real[i]);
            }
        }

        #[test]
        fn worst_case_sum_of_n_max_clients_never_wraps(n_max in 1u32..100_000, neg in any::<bool>()) {
            let q = Quantizer::new(ClipBound::L2(3.0), n_max).unwrap();
            let v = if neg { -3.0 } else { 3.0 };
            let level = q.quantize(&[v]).unwrap()[0];
            let total = (level as i32 as i64) * i64::from(n_max);
            prop_assert!(total.abs() <= i64::from(i32::MAX));
            let wrapped = level.wrapping_mul(n_max);
            prop_assert_eq!(q.decode_sum(&[wrapped])[0], total);
        }

        #[test]
        fn out_of_bound_is_always_rejected(bound in 0.01f32..100.0, excess in 1.0001f32..10.0, idx in 0usize..4) {
            let q = Quantizer::new(ClipBound::LInf(bound), 10).unwrap();
            let mut v = vec![0.0f32; 4];
            v[idx] = bound * excess;
            prop_assume!(v[idx] > bound);
            let rejected = matches!(q.quantize(&v), Err(SecAggError::OutOfBound { .. }));
            prop_assert!(rejected);
            let l2 = Quantizer::new(ClipBound::L2(bound), 10).unwrap();
            let spread = vec![bound * excess / 2.0f32.sqrt() * 1.001; 2];
            prop_assert!(l2.quantize(&spread).is_err());
        }
    }
}
