//! Paths as a user means them: a path typed on the command line is relative to the directory
//! the command was typed in; a path inside a node's `config.toml` is relative to the directory
//! of that file. Errors name the path as written and as resolved.

use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with a path a user gave.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path could not be made absolute (the current directory is gone, or it is empty).
    #[error("{what} {written:?}: cannot resolve it: {source}")]
    Resolve {
        /// What the path names (e.g. `--dataset`).
        what: String,
        /// The path as written.
        written: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path names nothing.
    #[error("{what} {path}: no such directory")]
    Missing {
        /// What the path names.
        what: String,
        /// The path as written and as resolved.
        path: UserPath,
    },
    /// The path names something that is not a directory.
    #[error("{what} {path}: not a directory")]
    NotADirectory {
        /// What the path names.
        what: String,
        /// The path as written and as resolved.
        path: UserPath,
    },
}

/// A path as the user wrote it, and the absolute path it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPath {
    written: PathBuf,
    resolved: PathBuf,
}

impl UserPath {
    /// A path typed on the command line: relative to the current directory.
    pub fn from_cwd(what: &str, written: &Path) -> Result<Self, PathError> {
        let resolved = std::path::absolute(written).map_err(|source| PathError::Resolve {
            what: what.to_string(),
            written: written.to_path_buf(),
            source,
        })?;
        Ok(Self {
            written: written.to_path_buf(),
            resolved,
        })
    }

    /// A path written in a file in directory `base` (absolute): relative to `base`.
    pub fn relative_to(base: &Path, written: &Path) -> Self {
        Self {
            written: written.to_path_buf(),
            resolved: base.join(written),
        }
    }

    /// The absolute path.
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }

    /// The resolved path, or an error naming both forms when it is not an existing directory.
    pub fn existing_dir(&self, what: &str) -> Result<&Path, PathError> {
        match std::fs::metadata(&self.resolved) {
            Ok(m) if m.is_dir() => Ok(&self.resolved),
            Ok(_) => Err(PathError::NotADirectory {
                what: what.to_string(),
                path: self.clone(),
            }),
            Err(_) => Err(PathError::Missing {
                what: what.to_string(),
                path: self.clone(),
            }),
        }
    }
}

impl fmt::Display for UserPath {
    /// `written`, followed by `(resolved: …)` when that differs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.written.display())?;
        if self.written != self.resolved {
            write!(f, " (resolved: {})", self.resolved.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_paths_resolve_against_the_current_directory() {
        let cwd = std::env::current_dir().unwrap();
        let p = UserPath::from_cwd("--dataset", Path::new("some/dir")).unwrap();
        assert_eq!(p.resolved(), cwd.join("some/dir"));
        assert_eq!(
            p.to_string(),
            format!("some/dir (resolved: {})", cwd.join("some/dir").display())
        );
        let abs = UserPath::from_cwd("--dataset", &cwd).unwrap();
        assert_eq!(abs.to_string(), cwd.display().to_string(), "no repetition");
    }

    #[test]
    fn config_paths_resolve_against_the_config_directory() {
        let p = UserPath::relative_to(Path::new("/srv/node"), Path::new("../data"));
        assert_eq!(p.resolved(), Path::new("/srv/node/../data"));
        let abs = UserPath::relative_to(Path::new("/srv/node"), Path::new("/data/lab"));
        assert_eq!(abs.resolved(), Path::new("/data/lab"));
    }

    #[test]
    fn a_missing_directory_is_named_as_written_and_as_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let p = UserPath::relative_to(tmp.path(), Path::new("nope"));
        let err = p.existing_dir("node.dataset").unwrap_err().to_string();
        assert!(err.starts_with("node.dataset nope (resolved: "), "{err}");
        assert!(err.contains(&tmp.path().join("nope").display().to_string()));
        assert!(err.ends_with("no such directory"), "{err}");
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let f = UserPath::relative_to(tmp.path(), Path::new("file"));
        assert!(matches!(
            f.existing_dir("--dataset"),
            Err(PathError::NotADirectory { .. })
        ));
        assert_eq!(
            UserPath::relative_to(tmp.path(), Path::new("."))
                .existing_dir("x")
                .unwrap(),
            tmp.path().join(".")
        );
    }
}
