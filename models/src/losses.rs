//! Losses of the FedMMKT client: cross-entropy, temperature-scaled distillation and the
//! CLIP-style image–caption alignment loss.

use candle_core::{DType, Tensor, D};
use candle_nn::ops::log_softmax;

use crate::error::Result;

/// Mean cross-entropy of `logits` `[B, C]` against class indices `labels` `[B]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Mean over rows of KL(teacher ‖ softmax(student/τ)), scaled by τ² (Hinton et al.) so the
/// gradient size does not depend on τ. `teacher` rows are probability vectors.
pub fn kl_distill(student_logits: &Tensor, teacher: &Tensor, tau: f64) -> Result<Tensor> {
    let log_p = log_softmax(&(student_logits / tau)?, D::Minus1)?;
    let log_q = teacher.clamp(1e-12f32, 1f32)?.log()?;
    let kl = (teacher * (log_q - log_p)?)?.sum(D::Minus1)?;
    Ok((kl.mean_all()? * (tau * tau))?)
}

/// Symmetric contrastive loss between image embeddings and caption embeddings `[B, E]`: each
/// image should match the captions of its own class (all same-class pairs are positives).
pub fn alignment(
    img_emb: &Tensor,
    txt_emb: &Tensor,
    labels: &[u32],
    temperature: f64,
) -> Result<Tensor> {
    let img = l2_normalize(img_emb)?;
    let txt = l2_normalize(txt_emb)?;
    let logits = (img.matmul(&txt.t()?)? / temperature)?;
    let b = labels.len();
    let mut target = vec![0f32; b * b];
    for i in 0..b {
        let positives = labels.iter().filter(|&&l| l == labels[i]).count() as f32;
        for j in 0..b {
            if labels[j] == labels[i] {
                target[i * b + j] = 1.0 / positives;
            }
        }
    }
    // The positive relation is symmetric, so the same target serves both directions.
    let target = Tensor::from_vec(target, (b, b), logits.device())?;
    let i2t = soft_cross_entropy(&logits, &target)?;
    let t2i = soft_cross_entropy(&logits.t()?, &target)?;
    Ok(((i2t + t2i)? * 0.5)?)
}

/// Mean cross-entropy of `logits` against soft targets (rows summing to one).
pub fn soft_cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let lp = log_softmax(logits, D::Minus1)?;
    Ok((target * lp)?.sum(D::Minus1)?.mean_all()?.neg()?)
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-8f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Scalar value of a 0-d tensor.
pub fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], r: usize, c: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (r, c), &Device::Cpu).unwrap()
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        // logits [0, ln 3] → p = [1/4, 3/4]; CE for label 1 = -ln(3/4).
        let logits = t(&[0.0, 3f32.ln()], 1, 2);
        let y = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let l = scalar(&cross_entropy(&logits, &y).unwrap()).unwrap();
        assert!((l - (4.0f32 / 3.0).ln()).abs() < 1e-6);
    }

    #[test]
    fn kl_matches_hand_computation() {
        // student logits [0, 0] at τ=2 → p = [1/2, 1/2]; teacher [0.9, 0.1].
        let s = t(&[0.0, 0.0], 1, 2);
        let q = t(&[0.9, 0.1], 1, 2);
        let want = 4.0 * (0.9f32 * (0.9f32 / 0.5).ln() + 0.1 * (0.1f32 / 0.5).ln());
        let got = scalar(&kl_distill(&s, &q, 2.0).unwrap()).unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Zero when the student matches the teacher.
        let s = t(&[0.0, 0.0], 1, 2);
        let q = t(&[0.5, 0.5], 1, 2);
        assert!(scalar(&kl_distill(&s, &q, 1.0).unwrap()).unwrap().abs() < 1e-6);
    }

    #[test]
    fn alignment_matches_hand_computation() {
        // Two orthogonal classes, images equal to their captions: logits = I/τ.
        let img = t(&[1.0, 0.0, 0.0, 2.0], 2, 2);
        let txt = t(&[3.0, 0.0, 0.0, 1.0], 2, 2);
        let tau = 0.5;
        let got = scalar(&alignment(&img, &txt, &[0, 1], tau).unwrap()).unwrap();
        let e = (1.0f32 / tau as f32).exp();
        let want = -(e / (e + 1.0)).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Same class twice: both captions are positives, target 1/2 each.
        let got = scalar(&alignment(&img, &txt, &[0, 0], tau).unwrap()).unwrap();
        let lse = (e + 1.0).ln();
        let want = 0.5 * ((lse - 1.0 / tau as f32) + (lse - 0.0));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
