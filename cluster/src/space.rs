//! The free-space guard: storage stops writing while its filesystem has less than a reserve
//! free, so the disk never fills under sled.
//!
//! sled 0.34 does not survive `ENOSPC` in the middle of a write: the chaos suite saw a node
//! whose disk filled restart into "Read corrupted data" and stay down. Disks fill over time
//! (recordings, logs, other tenants), so checking before every write and failing stop while
//! some space is left keeps the replica readable; the node comes back once space is freed.
//! Like etcd's backend quota or Elasticsearch's flood-stage watermark, but at the filesystem.

use crate::error::ClusterError;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// Bytes available to an unprivileged process on the filesystem holding `dir` (what `df`
/// calls "Avail").
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes allocated on disk for `path`: a file's blocks, or a directory's and everything
/// under it (what `du` counts). What cannot be read (removed while walking) counts as nothing.
pub fn bytes_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    own + entries
        .flatten()
        .map(|e| bytes_on_disk(&e.path()))
        .sum::<u64>()
}

/// Checks that the filesystem holding `dir` keeps at least `reserve` bytes free.
#[derive(Debug, Clone)]
pub struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
}

impl SpaceGuard {
    /// A guard for `dir` keeping `reserve_mb` MiB free; 0 turns it off.
    pub fn new(dir: &Path, reserve_mb: u64) -> SpaceGuard {
        SpaceGuard {
            dir: dir.to_path_buf(),
            reserve: reserve_mb.saturating_mul(MIB),
        }
    }

    /// Bytes available to this (unprivileged) process on `dir`'s filesystem.
    pub fn free(&self) -> std::io::Result<u64> {
        free_bytes(&self.dir)
    }

    /// `Err(DiskLow)` when less than the reserve is free. A failing `statvfs` (the directory
    /// vanished, a dead mount) is a storage failure too: writes there would fail anyway.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = self.free().map_err(|e| ClusterError::Storage {
            what: format!("checking free space on {}", self.dir.display()),
            source: sled::Error::Io(e),
        })?;
        metrics::gauge!("lingxi_disk_free_bytes").set(free as f64);
        if free < self.reserve {
            return Err(ClusterError::DiskLow {
                dir: self.dir.clone(),
                free_mb: free / MIB,
                reserve_mb: self.reserve / MIB,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_the_reserve_and_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let guard = SpaceGuard::new(dir.path(), 1);
        let free = guard.free().unwrap();
        assert!(free > MIB, "the test needs a little free space, has {free}");
        guard.check().expect("1 MiB reserve with more free");
        // A reserve larger than the whole free space: the guard must refuse.
        let greedy = SpaceGuard::new(dir.path(), free / MIB + 1024);
        let err = greedy.check().unwrap_err();
        assert!(matches!(err, ClusterError::DiskLow { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("min_free_disk_mb"), "{text}");
        SpaceGuard::new(dir.path(), 0)
            .check()
            .expect("0 turns it off");
    }

    #[test]
    fn a_missing_directory_is_a_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = SpaceGuard::new(&gone, 1).check().unwrap_err();
        assert!(matches!(err, ClusterError::Storage { .. }), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
