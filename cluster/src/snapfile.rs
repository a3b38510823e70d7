//! A snapshot's bytes in a file of their own beside sled, sled holding only its length and
//! SHA-256. Kept as a value in a sled tree, a snapshot was written out again as a new sled
//! blob whenever the page holding it was rewritten, and sled did not reclaim the old ones:
//! beside the Raft hard state, ~15 MB a minute per node under load.

use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Name prefix of snapshot files (and of their temporaries).
const PREFIX: &str = "snapshot-";

/// The file for snapshot `name` (e.g. `00000000000000010001-3`) in `dir`.
pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{name}.data"))
}

/// sled's record of a snapshot file: its length (8 bytes, big-endian) and SHA-256.
pub(crate) fn record(data: &[u8]) -> Vec<u8> {
    let mut r = (data.len() as u64).to_be_bytes().to_vec();
    r.extend_from_slice(&Sha256::digest(data));
    r
}

/// Writes `data` to `path` durably: a temporary file, fsynced, renamed over `path`, the
/// directory fsynced.
pub(crate) fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the snapshot file at `path`, which sled's `record` describes. A missing, short or
/// altered file is an error naming the file: the storage is damaged.
pub(crate) fn read(path: &Path, record_: &[u8]) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read the snapshot file {}: {e}", path.display()))?;
    if record(&data) != record_ {
        return Err(format!(
            "the snapshot file {} ({} bytes) does not match the length and SHA-256 recorded \
             for it",
            path.display(),
            data.len()
        ));
    }
    Ok(data)
}

/// Deletes every snapshot file (and temporary) in `dir` but `keep`: snapshots replaced once
/// their successor's record was synced, and leftovers of a crash. Logs what it cannot delete.
pub(crate) fn remove_others(dir: &Path, keep: Option<&Path>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(PREFIX) && Some(p.as_path()) != keep {
            remove(&p);
        }
    }
}

/// Deletes `file` (already gone is fine); logs a failure.
pub(crate) fn remove(file: &Path) {
    if let Err(err) = std::fs::remove_file(file)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %file.display(), %err, "cannot delete an old snapshot file");
    }
}

/// What the storage tests of both stores use to weigh snapshots on disk.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    /// A 600 KB snapshot that does not compress to nothing.
    pub(crate) fn snapshot_bytes() -> Vec<u8> {
        (0..600_000u64).map(|i| (i * 7919 % 251) as u8).collect()
    }

    /// The snapshot files in `dir`, sorted.
    pub(crate) fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(super::PREFIX))
            .collect();
        v.sort();
        v
    }
}
