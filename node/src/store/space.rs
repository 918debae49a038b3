//! Free space on the filesystem that holds the data directory: checked before anything is
//! made durable that must not half-fail (a ledger entry before a release, a host checkpoint),
//! since sled stops every later write once one of its own writes hits a full disk.

use std::path::{Path, PathBuf};

/// Not enough room to make a write durable with the reserve kept free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the disk holding {} has {} MiB free, and {} MiB are needed (this write plus the {} MiB \
     `node.min_free_mb` reserve)",
    path.display(),
    available >> 20,
    (needed + reserve).div_ceil(1 << 20),
    reserve >> 20
)]
pub struct DiskFull {
    /// The directory whose filesystem is full.
    pub path: PathBuf,
    /// Bytes free to this process.
    pub available: u64,
    /// Bytes the write needs.
    pub needed: u64,
    /// Bytes kept free for the node's small bookkeeping writes.
    pub reserve: u64,
}

/// Bytes free to an unprivileged writer on the filesystem holding `path` (None: unknown).
pub fn available_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(path).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Ok when `needed` bytes fit on `path`'s filesystem with `reserve` bytes left over (or when
/// the free space cannot be read: the write itself is then the check).
pub fn ensure_room(path: &Path, needed: u64, reserve: u64) -> Result<(), DiskFull> {
    match available_bytes(path) {
        Some(available) if available < needed.saturating_add(reserve) => Err(DiskFull {
            path: path.to_path_buf(),
            available,
            needed,
            reserve,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_statvfs_reports_less_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).expect("statvfs works on a tempdir");
        assert!(free > 0);
        ensure_room(dir.path(), 1, 0).unwrap();
        let err = ensure_room(dir.path(), free, 1 << 20).unwrap_err();
        assert_eq!(
            (err.available <= free, err.needed, err.reserve),
            (true, free, 1 << 20)
        );
        assert!(err.to_string().contains("node.min_free_mb"), "{err}");
        assert!(
            ensure_room(dir.path(), u64::MAX, u64::MAX).is_err(),
            "no overflow"
        );
    }
}
