//! A content-addressed cache of the host's pre-trained generator: pre-training depends only on
//! the host's config, its seed, the public set and the caption encoder, so a second run with
//! the same inputs loads the result instead of spending half a minute recomputing it.
//!
//! An entry is the [`Host::checkpoint`] taken right after [`Host::pretrain`], stored under a
//! SHA-256 key of everything pre-training reads; its file carries the key and the hash of the
//! checkpoint, so a truncated or corrupt entry is detected on load and pre-training runs again.
//! Both paths end in [`Host::restore`] of the same bytes on a fresh [`Host::new`], so a cache
//! hit and a fresh pre-training give a host in exactly the same state (RNG included).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::data::Dataset;
use models::text::TextEncoder;
use sha2::{Digest, Sha256};

use super::synthesizer::{Synthesizer, SynthesizerConfig};
use crate::store::{write_atomic, StoreError};

/// Bump when pre-training, the generator or the checkpoint format changes, so old entries
/// are never mistaken for what the new code would compute.
const VERSION: u32 = 1;
/// The first bytes of every entry file.
const MAGIC: &[u8; 8] = b"FMMKTPT1";
/// Magic, key and payload hash.
const HEADER: usize = MAGIC.len() + 32 + 32;

/// What can go wrong reading or writing a cache entry.
#[derive(Debug, thiserror::Error)]
pub enum PretrainCacheError {
    /// The entry or the cache directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing the entry failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host config could not be encoded for the key.
    #[error("encoding the host config for the cache key: {0}")]
    Encode(#[from] postcard::Error),
    /// The entry is not what was stored under its key.
    #[error("{}: corrupt pre-training cache entry: {reason}", path.display())]
    Corrupt {
        /// The entry file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The SHA-256 of everything pre-training depends on (see [`CacheKey::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of pre-training a [`Host::new`]`(cfg, _, public, seed)` whose caption encoder
    /// embeds the public captions as `emb` (the embeddings stand for the encoder itself).
    pub fn new(
        cfg: &SynthesizerConfig,
        seed: u64,
        public: &Dataset,
        emb: &[f32],
    ) -> Result<Self, PretrainCacheError> {
        let cfg = postcard::to_allocvec(cfg)?;
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"fedmmkt pre-training cache");
        field(&VERSION.to_le_bytes());
        field(env!("CARGO_PKG_VERSION").as_bytes());
        field(&cfg);
        field(&seed.to_le_bytes());
        field(&(public.rows as u64).to_le_bytes());
        field(&(public.cols as u64).to_le_bytes());
        field(&public.images);
        field(&public.labels);
        field(&(public.classes.len() as u64).to_le_bytes());
        for class in &public.classes {
            field(class.as_bytes());
        }
        let emb: Vec<u8> = emb.iter().flat_map(|x| x.to_le_bytes()).collect();
        field(&emb);
        Ok(Self(h.finalize().into()))
    }

    /// The key in hex (the entry's file name).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A directory of pre-trained host states, one file per [`CacheKey`].
#[derive(Debug, Clone)]
pub struct PretrainCache {
    dir: PathBuf,
}

impl PretrainCache {
    /// The cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory it lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `key`'s entry.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("pretrain-{}.bin", key.hex()))
    }

    /// The checkpoint stored under `key`, `None` when there is none; an entry that does not
    /// carry `key` or whose content does not match its hash is an error.
    pub fn load(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, PretrainCacheError> {
        let path = self.entry_path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PretrainCacheError::Io { path, source }),
        };
        let corrupt = |reason| PretrainCacheError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a cache entry"));
        }
        let (stored_key, rest) = bytes[MAGIC.len()..].split_at(32);
        let (hash, payload) = rest.split_at(32);
        if stored_key != key.0 {
            return Err(corrupt("stored under another key"));
        }
        if hash != crate::store::sha256(payload) {
            return Err(corrupt("content does not match its hash"));
        }
        Ok(Some(payload.to_vec()))
    }

    /// Stores `checkpoint` under `key`, atomically (a reader sees the old entry or the new).
    pub fn store(&self, key: &CacheKey, checkpoint: &[u8]) -> Result<(), PretrainCacheError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| PretrainCacheError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut bytes = Vec::with_capacity(HEADER + checkpoint.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&key.0);
        bytes.extend_from_slice(&crate::store::sha256(checkpoint));
        bytes.extend_from_slice(checkpoint);
        write_atomic(&self.entry_path(key), &bytes, false)?;
        Ok(())
    }
}

/// A host being pre-trained: [`Pretraining::start`] looks the cache up (so the caller can
/// say which it will be), [`Pretraining::finish`] loads or pre-trains.
pub struct Pretraining<'a> {
    cfg: SynthesizerConfig,
    encoder: Arc<dyn TextEncoder>,
    public: &'a Dataset,
    seed: u64,
    cache: Option<&'a PretrainCache>,
    key: CacheKey,
    host: Synthesizer,
    hit: Option<Vec<u8>>,
}

impl<'a> Pretraining<'a> {
    /// A fresh [`Host::new`] with these arguments and its cache entry, if `cache` holds a
    /// sound one (a corrupt or unreadable entry is logged and treated as missing).
    pub fn start(
        cfg: SynthesizerConfig,
        encoder: Arc<dyn TextEncoder>,
        public: &'a Dataset,
        seed: u64,
        cache: Option<&'a PretrainCache>,
    ) -> anyhow::Result<Self> {
        let host = Synthesizer::new(cfg, encoder.clone(), public, seed)?;
        let key = CacheKey::new(&cfg, seed, public, host.public_embeddings())?;
        let hit = cache.and_then(|c| match c.load(&key) {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!("{e}; pre-training instead");
                None
            }
        });
        Ok(Self {
            cfg,
            encoder,
            public,
            seed,
            cache,
            key,
            host,
            hit,
        })
    }

    /// True when the cache holds this pre-training.
    pub fn cached(&self) -> bool {
        self.hit.is_some()
    }

    /// The pre-trained host: restored from the cache entry, or pre-trained, stored in the
    /// cache (a failed store is logged) and restored from its own checkpoint the same way.
    pub fn finish(self) -> anyhow::Result<Synthesizer> {
        let Self {
            cfg,
            encoder,
            public,
            seed,
            cache,
            key,
            mut host,
            hit,
        } = self;
        if let Some(state) = hit {
            match host.restore(&state) {
                Ok(()) => return Ok(host),
                Err(e) => {
                    tracing::warn!(
                        "pre-training cache entry unusable ({e:#}); pre-training instead"
                    );
                    host = Synthesizer::new(cfg, encoder.clone(), public, seed)?;
                }
            }
        }
        host.pretrain()?;
        let state = host.checkpoint()?;
        if let Some(cache) = cache {
            if let Err(e) = cache.store(&key, &state) {
                tracing::warn!("could not store the pre-training in the cache: {e}");
            }
        }
        let mut host = Synthesizer::new(cfg, encoder, public, seed)?;
        host.restore(&state)?;
        Ok(host)
    }
}

/// [`Pretraining::start`] then [`Pretraining::finish`]; also says whether the cache had it.
pub fn pretrained_synthesizer(
    cfg: SynthesizerConfig,
    encoder: Arc<dyn TextEncoder>,
    public: &Dataset,
    seed: u64,
    cache: Option<&PretrainCache>,
) -> anyhow::Result<(Synthesizer, bool)> {
    let prep = Pretraining::start(cfg, encoder, public, seed, cache)?;
    let cached = prep.cached();
    Ok((prep.finish()?, cached))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::synthesizer::fixtures::{config, encoder, public};

    /// Everything a host's next two rounds produce, and its checkpoint after them.
    fn trajectory(mut host: Synthesizer) -> (Vec<protocol::RoundStart>, Vec<u8>) {
        let first = host.start_round(1).unwrap();
        let rows = [[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.1, 0.9]];
        let mut sum: Vec<f64> = rows.iter().flatten().copied().collect();
        sum.extend([1.0, 1.0]);
        // No client shared latent moments (a zero moment block).
        sum.resize(protocol::UploadLayout::of(&first).len(), 0.0);
        host.finish_round(&first, &sum).unwrap();
        let second = host.start_round(2).unwrap();
        (vec![first, second], host.checkpoint().unwrap())
    }

    fn prepare(
        cache: Option<&PretrainCache>,
        seed: u64,
        cfg: SynthesizerConfig,
    ) -> (Synthesizer, bool) {
        pretrained_synthesizer(cfg, encoder(0), &public(), seed, cache).unwrap()
    }

    #[test]
    fn a_cache_hit_continues_exactly_like_a_fresh_pretraining() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = PretrainCache::new(tmp.path().join("cache"));
        let (uncached, hit) = prepare(None, 1, config());
        assert!(!hit);
        let (stored, hit) = prepare(Some(&cache), 1, config());
        assert!(!hit, "an empty cache cannot hit");
        let (loaded, hit) = prepare(Some(&cache), 1, config());
        assert!(hit, "the second preparation must come from the cache");
        let want = trajectory(uncached);
        assert_eq!(trajectory(stored), want);
        assert_eq!(trajectory(loaded), want);
    }

    #[test]
    fn a_changed_seed_config_encoder_or_public_set_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = PretrainCache::new(tmp.path());
        prepare(Some(&cache), 1, config());
        let hit =
            |cfg: SynthesizerConfig, enc: Arc<dyn TextEncoder>, public: &Dataset, seed: u64| {
                Pretraining::start(cfg, enc, public, seed, Some(&cache))
                    .unwrap()
                    .cached()
            };
        assert!(hit(config(), encoder(0), &public(), 1));
        assert!(!hit(config(), encoder(0), &public(), 2), "seed");
        let mut steps = config();
        steps.pretrain_steps += 1;
        assert!(!hit(steps, encoder(0), &public(), 1), "pre-training steps");
        let mut width = config();
        width.flow.hidden += 1;
        assert!(!hit(width, encoder(0), &public(), 1), "generator shape");
        assert!(!hit(config(), encoder(7), &public(), 1), "caption encoder");
        let mut images = public();
        images.images[100] ^= 1;
        assert!(!hit(config(), encoder(0), &images, 1), "public images");
        let mut labels = public();
        labels.labels.swap(0, 1);
        assert!(!hit(config(), encoder(0), &labels, 1), "public labels");
        let mut classes = public();
        classes.classes[1] = "c".into();
        assert!(!hit(config(), encoder(0), &classes, 1), "class names");
    }

    #[test]
    fn a_corrupt_entry_is_detected_and_pre_trained_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = PretrainCache::new(tmp.path());
        let want = trajectory(prepare(Some(&cache), 1, config()).0);
        let key = Pretraining::start(config(), encoder(0), &public(), 1, None)
            .unwrap()
            .key;
        let path = cache.entry_path(&key);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        let mut moved = good.clone();
        moved[MAGIC.len()] ^= 1;
        // Right header and hash, but a payload that is no checkpoint: fails on restore.
        let mut garbage = good[..MAGIC.len() + 32].to_vec();
        garbage.extend_from_slice(&crate::store::sha256(b"not a checkpoint"));
        garbage.extend_from_slice(b"not a checkpoint");
        for (what, bytes, detected_on_load) in [
            ("flipped bit", flipped, true),
            ("truncated", good[..good.len() / 2].to_vec(), true),
            ("empty", Vec::new(), true),
            ("another key", moved, true),
            ("not a checkpoint", garbage, false),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                matches!(cache.load(&key), Err(PretrainCacheError::Corrupt { .. })),
                detected_on_load,
                "{what}"
            );
            let (host, hit) = prepare(Some(&cache), 1, config());
            assert_eq!(hit, !detected_on_load, "{what}");
            assert_eq!(trajectory(host), want, "{what}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "{what}: entry rewritten"
            );
        }
        // An unreadable entry (a directory in its place) is a warning too, not an error.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            cache.load(&key),
            Err(PretrainCacheError::Io { .. })
        ));
        let (host, hit) = prepare(Some(&cache), 1, config());
        assert!(!hit);
        assert_eq!(trajectory(host), want);
    }
}
