//! The admin endpoint's bearer token, `DIR/admin.token`: written by `fedmmkt init` (mode
//! 0600), checked by the node when it serves off loopback (or is told to), sent by the CLI.

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{to_hex, write_atomic, DataDir, StoreError};

/// Fewest characters a token may have (`init` writes 64 hex digits: 256 bits).
pub const MIN_TOKEN_CHARS: usize = 32;
/// Longest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// What is wrong with the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// There is no token file.
    #[error(
        "{}: no admin token. `fedmmkt init` writes one; for a data directory made before, \
         create it with `(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {})`",
        path.display(),
        path.display()
    )]
    Missing {
        /// The token file.
        path: PathBuf,
    },
    /// It could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The token file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It is shorter than [`MIN_TOKEN_CHARS`] (or longer than 4 KiB, or not text).
    #[error("{}: the admin token must be {MIN_TOKEN_CHARS} to 4096 printable characters", path.display())]
    Malformed {
        /// The token file.
        path: PathBuf,
    },
    /// Group or others may read it.
    #[error("{}: the admin token is readable by group or others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The system's random source failed.
    #[error("no randomness for the admin token")]
    Random,
}

/// Writes a fresh token (256 random bits, hex) to `DIR/admin.token` with mode 0600.
pub fn generate(dir: &Path) -> Result<PathBuf, TokenError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let path = DataDir::new(dir).admin_token();
    write_atomic(&path, to_hex(&bytes).as_bytes(), true)?;
    Ok(path)
}

/// The token the node checks requests against: the file must exist, hold a token, and be
/// private to its owner.
pub fn load(dir: &Path) -> Result<String, TokenError> {
    let path = DataDir::new(dir).admin_token();
    let token = read(&path)?.ok_or_else(|| TokenError::Missing { path: path.clone() })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|source| TokenError::Io {
                path: path.clone(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed { path, mode });
        }
    }
    Ok(token)
}

/// The token the CLI sends, if the data directory has one.
pub fn load_if_present(dir: &Path) -> Result<Option<String>, TokenError> {
    read(&DataDir::new(dir).admin_token())
}

fn read(path: &Path) -> Result<Option<String>, TokenError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let malformed = || TokenError::Malformed {
        path: path.to_path_buf(),
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_CHARS
        || text.len() as u64 > MAX_TOKEN_BYTES
        || !token.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(malformed());
    }
    Ok(Some(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_load_and_bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Err(TokenError::Missing { .. })));
        assert_eq!(load_if_present(dir.path()).unwrap(), None);
        let path = generate(dir.path()).unwrap();
        let token = load(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(load_if_present(dir.path()).unwrap(), Some(token.clone()));
        generate(dir.path()).unwrap();
        assert_ne!(load(dir.path()).unwrap(), token, "every token is fresh");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(TokenError::Malformed { .. })
        ));
        std::fs::write(&path, "a b".repeat(20)).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(TokenError::Malformed { .. })
        ));
    }
}
