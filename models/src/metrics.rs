//! Fréchet distance between two sets of feature vectors (the FID formula, in any feature space).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{ModelError, Result};

fn mean_cov(x: &[f32], dim: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.len() / dim;
    let m = DMatrix::from_row_iterator(n, dim, x.iter().map(|&v| v as f64));
    let mean = DVector::from_iterator(dim, m.column_iter().map(|c| c.mean()));
    let centered = DMatrix::from_fn(n, dim, |i, j| m[(i, j)] - mean[j]);
    let cov = centered.transpose() * &centered / ((n.max(2) - 1) as f64);
    (mean, cov)
}

fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let vals = eig.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&vals) * eig.eigenvectors.transpose()
}

/// ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½) between feature sets `a` and `b` (`dim` wide).
pub fn frechet_distance(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    if dim == 0
        || a.is_empty()
        || b.is_empty()
        || !a.len().is_multiple_of(dim)
        || !b.len().is_multiple_of(dim)
    {
        return Err(ModelError::Config(format!(
            "Fréchet distance needs non-empty feature sets of width {dim} (got {} and {} values)",
            a.len(),
            b.len()
        )));
    }
    let (m1, s1) = mean_cov(a, dim);
    let (m2, s2) = mean_cov(b, dim);
    let r1 = sqrt_psd(&s1);
    let inner = &r1 * &s2 * &r1;
    let tr_sqrt: f64 = SymmetricEigen::new((&inner + inner.transpose()) * 0.5)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    let d = (m1 - m2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_sqrt;
    Ok(d.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_of_known_gaussians() {
        // Identical sets: 0.
        let a: Vec<f32> = (0..200).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        assert!(frechet_distance(&a, &a, 2).unwrap() < 1e-6);
        // Shift every coordinate by c: distance d·c².
        let b: Vec<f32> = a.iter().map(|v| v + 3.0).collect();
        assert!((frechet_distance(&a, &b, 2).unwrap() - 18.0).abs() < 1e-6);
        // 1-D: (μ₁−μ₂)² + (σ₁−σ₂)²; scaling by 2 doubles σ.
        let x: Vec<f32> = vec![-1.0, 1.0, -1.0, 1.0];
        let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        let var = 4.0 / 3.0f64; // unbiased variance of x
        let want = (2.0 * var.sqrt() - var.sqrt()).powi(2);
        assert!((frechet_distance(&x, &y, 1).unwrap() - want).abs() < 1e-9);
        assert!(frechet_distance(&x, &y, 0).is_err());
        assert!(frechet_distance(&x, &[1.0, 2.0, 3.0], 2).is_err());
    }
}
