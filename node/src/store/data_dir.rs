//! The node's data directory on disk: where each file lives, the node identity, and atomic,
//! durable file writes.

use super::*;

/// Paths inside a node data directory (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (nothing is touched).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `DIR/identity.key`.
    pub fn identity(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// `DIR/swarm.key`.
    pub fn swarm_key(&self) -> PathBuf {
        self.root.join(SWARM_KEY_FILE)
    }

    /// `DIR/ledger`: pass it to `privacy::ledger::Ledger::open`.
    pub fn ledger(&self) -> PathBuf {
        self.root.join(LEDGER_DIR)
    }

    /// `DIR/state`.
    pub fn state(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// `DIR/checkpoints`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINT_DIR)
    }

    /// `DIR/admin.addr`.
    pub fn admin_addr(&self) -> PathBuf {
        self.root.join(ADMIN_ADDR_FILE)
    }

    /// `DIR/admin.token`.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join(ADMIN_TOKEN_FILE)
    }

    /// True when `init` has run here (identity and store present).
    pub fn is_initialised(&self) -> bool {
        self.identity().is_file() && self.state().is_dir()
    }

    /// True when anything `init` creates is already here.
    pub fn has_any_node_file(&self) -> bool {
        self.identity().exists() || self.config().exists() || self.state().exists()
    }
}

/// Creates `DIR/identity.key` with a fresh ed25519 keypair (mode 0600); refuses to overwrite.
pub fn create_identity(dir: &Path) -> Result<Keypair> {
    let path = DataDir::new(dir).identity();
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| StoreError::Malformed {
            what: "identity key",
            reason: e.to_string(),
        })?;
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            StoreError::AlreadyExists { path: path.clone() }
        } else {
            io(e)
        }
    })?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_dir(dir)?;
    Ok(keypair)
}

/// Loads `DIR/identity.key`.
pub fn load_identity(dir: &Path) -> Result<Keypair> {
    let path = DataDir::new(dir).identity();
    let bytes = fs::read(&path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| StoreError::Malformed {
        what: "identity key",
        reason: format!("{}: {e}", path.display()),
    })
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory),
/// with mode 0600 on unix when `private`.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = fs::File::open(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        d.sync_all().map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
