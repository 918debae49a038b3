//! Mask expansion: a 256-bit seed becomes a vector in Z_{2^32}^D by the ChaCha20 keystream.
//!
//! Work is cut into chunks of the output vector; each chunk seeks every seed's keystream to its
//! offset and adds or subtracts it while the chunk stays in cache. Chunks run in parallel on the
//! current rayon pool, so the caller picks the thread count with `ThreadPool::install`.

use std::time::Instant;

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use rayon::prelude::*;

/// Nonce used for every mask stream; seeds are never reused across masks, so a fixed nonce is safe.
const MASK_NONCE: [u8; 12] = *b"fedmmkt-mask";
/// Words per chunk (32 KiB of output): large enough to amortise cipher setup, small enough for L1/L2.
const CHUNK_WORDS: usize = 8192;

/// Whether a mask is added to or subtracted from the vector (mod 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSign {
    /// Add the expanded mask.
    Add,
    /// Subtract the expanded mask.
    Sub,
}

/// A mask to apply: its 256-bit ChaCha20 key and its sign.
#[derive(Clone, PartialEq, Eq)]
pub struct Mask {
    /// The full 256-bit seed (ChaCha20 key).
    pub seed: [u8; 32],
    /// Add or subtract.
    pub sign: MaskSign,
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mask")
            .field("seed", &"<secret>")
            .field("sign", &self.sign)
            .finish()
    }
}

/// Adds (or subtracts) every mask's keystream to `acc`, in parallel over chunks of `acc`.
pub fn apply_masks(acc: &mut [u32], masks: &[Mask]) {
    if masks.is_empty() {
        return;
    }
    acc.par_chunks_mut(CHUNK_WORDS)
        .enumerate()
        .for_each(|(index, chunk)| {
            let mut buf = vec![0u8; chunk.len() * 4];
            let offset = (index * CHUNK_WORDS * 4) as u64;
            for mask in masks {
                buf.fill(0);
                let mut cipher = ChaCha20::new(&mask.seed.into(), &MASK_NONCE.into());
                cipher.seek(offset);
                cipher.apply_keystream(&mut buf);
                add_words(chunk, &buf, mask.sign);
            }
        });
}

/// `chunk[i] ± le_u32(bytes[4i..4i+4])`, wrapping.
fn add_words(chunk: &mut [u32], bytes: &[u8], sign: MaskSign) {
    let words = bytes.chunks_exact(4).map(|w| {
        let mut b = [0u8; 4];
        b.copy_from_slice(w);
        u32::from_le_bytes(b)
    });
    match sign {
        MaskSign::Add => chunk
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_add(w)),
        MaskSign::Sub => chunk
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_sub(w)),
    }
}

/// The mask a seed expands to, as a fresh vector (for tests and inspection).
pub fn expand(seed: &[u8; 32], dim: usize) -> Vec<u32> {
    let mut v = vec![0u32; dim];
    apply_masks(
        &mut v,
        &[Mask {
            seed: *seed,
            sign: MaskSign::Add,
        }],
    );
    v
}

/// Raw single-thread ChaCha20 keystream speed in GB/s over `bytes` bytes (the physical reference).
pub fn raw_chacha20_gbps(bytes: usize) -> f64 {
    let mut buf = vec![0u8; bytes.max(64)];
    let mut cipher = ChaCha20::new(&[7u8; 32].into(), &MASK_NONCE.into());
    // One warm-up pass so page faults are not timed.
    cipher.apply_keystream(&mut buf);
    let start = Instant::now();
    cipher.apply_keystream(&mut buf);
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(&buf);
    buf.len() as f64 / secs.max(1e-9) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_matches_a_plain_keystream_and_chunks_line_up() {
        let seed = [42u8; 32];
        let dim = CHUNK_WORDS * 2 + 17;
        let mut plain = vec![0u8; dim * 4];
        ChaCha20::new(&seed.into(), &MASK_NONCE.into()).apply_keystream(&mut plain);
        let want: Vec<u32> = plain
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        assert_eq!(expand(&seed, dim), want);
        // A prefix of a longer expansion is the shorter expansion.
        assert_eq!(expand(&seed, 5), want[..5].to_vec());
    }

    #[test]
    fn add_then_subtract_cancels_and_seeds_differ() {
        let mut v: Vec<u32> = (0..20_000).collect();
        let orig = v.clone();
        let a = Mask {
            seed: [1; 32],
            sign: MaskSign::Add,
        };
        let b = Mask {
            seed: [1; 32],
            sign: MaskSign::Sub,
        };
        apply_masks(&mut v, std::slice::from_ref(&a));
        assert_ne!(v, orig);
        apply_masks(&mut v, &[b]);
        assert_eq!(v, orig);
        assert_ne!(expand(&[1; 32], 8), expand(&[2; 32], 8));
        // Changing the last seed byte changes the stream: all 256 bits are used.
        let mut s = [1u8; 32];
        s[31] = 0;
        assert_ne!(expand(&[1; 32], 8), expand(&s, 8));
    }
}
