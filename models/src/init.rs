//! Seeded parameter initialisation and tensor helpers: candle's CPU generator cannot be seeded,
//! so every random number fedmmkt uses comes from a ChaCha generator the caller seeds.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

/// Re-draws every parameter of `varmap` from `seed`, PyTorch-style: weights and their biases
/// uniform in ±1/sqrt(fan_in); norm scales (`*.gamma`/`*.weight` of 1-D norms) stay as built.
pub fn reinit(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| crate::error::ModelError::Config("parameter store lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let fan_in = if let Some(prefix) = name.strip_suffix(".bias") {
            data.get(&format!("{prefix}.weight"))
                .map(|w| w.dims().iter().skip(1).product::<usize>())
                .unwrap_or(1)
        } else if dims.len() >= 2 {
            dims.iter().skip(1).product::<usize>()
        } else {
            continue;
        };
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// `n` standard normal draws.
pub fn normal_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Converts u8 pixels to a `[n, pixels]` f32 tensor scaled to [-1, 1].
pub fn pixels_to_tensor(pixels: &[u8], n: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
    Ok(Tensor::from_vec(v, (n, pixels.len() / n.max(1)), device)?)
}

/// Converts values in [-1, 1] back to u8 pixels (clamped).
pub fn tensor_to_pixels(t: &Tensor) -> Result<Vec<u8>> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.iter()
        .map(|&x| ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
        .collect())
}
