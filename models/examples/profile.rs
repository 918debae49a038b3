//! Times one training step of the generator and of each client architecture (CPU).
//! `cargo run --release -p models --example profile`

use std::time::Instant;

use candle_core::{Device, Tensor};
use models::classifier::{Arch, TaskModel};
use models::generator::{FlowConfig, FlowGenerator, Generator, WeightedSet};
use models::losses::cross_entropy;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for hidden in [256, 512] {
        let cfg = FlowConfig {
            hidden,
            ..Default::default()
        };
        let mut g = FlowGenerator::new(cfg, 0)?;
        let set = WeightedSet {
            images: vec![100u8; 512 * 784],
            emb: vec![0.1; 512 * 32],
            weights: vec![1.0; 512],
        };
        g.train(&set, 3, &mut rng)?;
        let t = Instant::now();
        g.train(&set, 30, &mut rng)?;
        println!(
            "generator hidden {hidden}: {:.1} ms/step (batch {})",
            t.elapsed().as_secs_f64() * 1000.0 / 30.0,
            cfg.batch
        );
        let emb = vec![0.1f32; 500 * 32];
        let t = Instant::now();
        g.sample(&emb, 500, &mut rng)?;
        println!(
            "generator hidden {hidden}: sample 500 in {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    for arch in Arch::ALL {
        let mut m = TaskModel::new(arch, 28, 10, 32, 1e-3, 0)?;
        let x = Tensor::zeros((64, 784), candle_core::DType::F32, &Device::Cpu)?;
        let y = Tensor::zeros(64, candle_core::DType::U32, &Device::Cpu)?;
        for _ in 0..3 {
            let l = cross_entropy(&m.forward(&x)?.logits, &y)?;
            m.step(&l)?;
        }
        let t = Instant::now();
        for _ in 0..30 {
            let l = cross_entropy(&m.forward(&x)?.logits, &y)?;
            m.step(&l)?;
        }
        println!(
            "{arch:?}: {:.1} ms/step at batch 64",
            t.elapsed().as_secs_f64() * 1000.0 / 30.0
        );
    }
    Ok(())
}
