//! The node's Ed25519 identity key (ring, PKCS#8), kept in the data directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::error::{PrivacyError, Result};

/// File name of the node key inside the data directory.
pub const KEY_FILE: &str = "node_key.pk8";

/// The node's signing key; signs every ledger entry so edits without the key are detected.
#[derive(Debug)]
pub struct NodeKey {
    pair: Ed25519KeyPair,
}

impl NodeKey {
    /// Loads `<dir>/node_key.pk8`, or creates it (mode 0600, atomically) if it does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => Self::from_pkcs8(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(dir, &path),
            Err(source) => Err(PrivacyError::Io { path, source }),
        }
    }

    /// Loads an existing key file; never creates one.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|source| PrivacyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pkcs8(&bytes, path)
    }

    /// A fresh in-memory key (for simulations and tests that keep no identity on disk).
    pub fn generate() -> Result<Self> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| PrivacyError::Key("could not generate an Ed25519 key".into()))?;
        Self::from_pkcs8(doc.as_ref(), Path::new("<generated>"))
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }

    fn from_pkcs8(bytes: &[u8], path: &Path) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(|e| PrivacyError::Malformed {
            what: "node key",
            reason: format!("{} is not an Ed25519 PKCS#8 v2 key: {e}", path.display()),
        })?;
        Ok(Self { pair })
    }

    fn create(dir: &Path, path: &Path) -> Result<Self> {
        let io = |p: &Path| {
            let p: PathBuf = p.to_path_buf();
            move |source| PrivacyError::Io { path: p, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| PrivacyError::Key("could not generate an Ed25519 key".into()))?;
        let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(io(&tmp))?;
            file.write_all(doc.as_ref()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        // hard_link fails if the key appeared meanwhile: then the other writer's key wins.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Self::from_pkcs8(doc.as_ref(), path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(PrivacyError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Checks an Ed25519 signature under a raw 32-byte public key.
pub(crate) fn verify_signature(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}
