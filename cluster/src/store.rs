//! Durable storage of the log, snapshots and CDRs: sled in production, memory in tests.

use crate::command::Command;
use crate::error::ClusterError;
use crate::model::{Cdr, Disposition};
use crate::snapfile;
use crate::space::SpaceGuard;
use crate::state::Event;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the log needs from storage. Implementations must make `append_batch` atomic.
pub trait LogStore: Send + Sync + 'static {
    /// Appends committed entries (ascending, contiguous indexes).
    fn append_batch(&self, entries: &[(u64, Command)]) -> Result<(), ClusterError>;
    /// Entries after `after`, in order.
    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Command)>, ClusterError>;
    /// Saves a snapshot taken at `index` and drops the log up to it.
    fn save_snapshot(&self, index: u64, data: &[u8]) -> Result<(), ClusterError>;
    /// The latest snapshot, if any.
    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, ClusterError>;
    /// Stores a CDR (keyed by its log index, so replaying the log cannot duplicate it).
    fn put_cdr(&self, cdr: &Cdr) -> Result<(), ClusterError>;
    /// The newest `limit` CDRs, oldest first, optionally only those ending after `since_ms`.
    fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), ClusterError>;
    /// The CDR of `call_id` among the newest `scan` CDRs.
    fn find_cdr(&self, call_id: &str, scan: usize) -> Result<Option<Cdr>, ClusterError> {
        Ok(self
            .cdrs(scan, None)?
            .into_iter()
            .rev()
            .find(|c| c.call_id == call_id))
    }
}

/// How far back (in CDRs) a late disposition looks for its call's CDR.
const DISPOSITION_SCAN: usize = 100_000;

/// Writes to `store` what applied `events` mean for it: each new CDR, and dispositions
/// recorded on calls that had already ended (their CDR is rewritten with them). Replaying an
/// entry writes the same result again.
pub fn persist_events(store: &dyn LogStore, events: &[Event]) -> Result<(), ClusterError> {
    for e in events {
        match e {
            Event::CallEnded(cdr) => store.put_cdr(cdr)?,
            Event::CdrAnnotated {
                call_id,
                disposition,
            } => match store.find_cdr(call_id, DISPOSITION_SCAN)? {
                Some(mut cdr) => {
                    annotate(&mut cdr, disposition);
                    store.put_cdr(&cdr)?;
                }
                None => tracing::warn!(%call_id, "disposition for a call without a stored CDR"),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Sets a disposition's fields on a CDR.
fn annotate(cdr: &mut Cdr, d: &Disposition) {
    cdr.disposition = Some(d.code.clone());
    cdr.note = Some(d.note.clone());
    cdr.disposition_by = Some(d.by.clone());
}

/// sled-backed storage: trees `log` (index → command), `meta` (the snapshot's index and the
/// length and SHA-256 of its file, `snapshot-<index>.data` beside sled: see `snapfile`) and
/// `cdrs`.
pub struct SledStore {
    /// The database, kept to flush it.
    db: sled::Db,
    /// Its directory, where the snapshot file lives.
    dir: PathBuf,
    /// Log entries keyed by big-endian index.
    log: sled::Tree,
    /// Snapshot index and bytes.
    meta: sled::Tree,
    /// CDRs keyed by big-endian log index.
    cdrs: sled::Tree,
    /// Checked before every write: sled must never meet a full disk.
    guard: Option<SpaceGuard>,
}

fn storage(what: &str) -> impl FnOnce(sled::Error) -> ClusterError + '_ {
    move |source| ClusterError::Storage {
        what: what.to_string(),
        source,
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, ClusterError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            // sled's default page cache is 1 GiB; the state lives in memory anyway.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|source| ClusterError::Storage {
                what: format!("opening {}", dir.display()),
                source,
            })?;
        let log = db.open_tree("log").map_err(storage("opening tree log"))?;
        let meta = db.open_tree("meta").map_err(storage("opening tree meta"))?;
        let cdrs = db.open_tree("cdrs").map_err(storage("opening tree cdrs"))?;
        Ok(SledStore {
            db,
            dir: dir.to_path_buf(),
            log,
            meta,
            cdrs,
            guard: None,
        })
    }

    /// Every write first checks `guard` and fails with [`ClusterError::DiskLow`] instead of
    /// writing to a nearly full disk.
    pub fn with_guard(mut self, guard: SpaceGuard) -> SledStore {
        self.guard = Some(guard);
        self
    }

    /// The file holding the snapshot taken at `index`.
    fn snapshot_path(&self, index: u64) -> PathBuf {
        snapfile::path(&self.dir, &format!("{index:020}"))
    }

    fn writable(&self) -> Result<(), ClusterError> {
        self.guard.as_ref().map_or(Ok(()), SpaceGuard::check)
    }

    /// Stored CDRs, newest first, decoded.
    fn newest_cdrs(&self) -> impl Iterator<Item = Result<Cdr, ClusterError>> + '_ {
        self.cdrs.iter().rev().map(|item| {
            let (k, v) = item.map_err(storage("reading CDRs"))?;
            let index = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            serde_json::from_slice(&v).map_err(|source| ClusterError::Codec { index, source })
        })
    }
}

impl LogStore for SledStore {
    fn append_batch(&self, entries: &[(u64, Command)]) -> Result<(), ClusterError> {
        self.writable()?;
        let mut batch = sled::Batch::default();
        for (index, cmd) in entries {
            let bytes = serde_json::to_vec(cmd).map_err(|source| ClusterError::Codec {
                index: *index,
                source,
            })?;
            batch.insert(&index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(storage("appending to the log"))
    }

    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Command)>, ClusterError> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.log.range(start..) {
            let (k, v) = item.map_err(storage("reading the log"))?;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&k[..8.min(k.len())]);
            let index = u64::from_be_bytes(idx);
            let cmd = serde_json::from_slice(&v)
                .map_err(|source| ClusterError::Codec { index, source })?;
            out.push((index, cmd));
        }
        Ok(out)
    }

    fn save_snapshot(&self, index: u64, data: &[u8]) -> Result<(), ClusterError> {
        self.writable()?;
        let path = self.snapshot_path(index);
        snapfile::write(&path, data).map_err(|e| ClusterError::Storage {
            what: format!("writing the snapshot file {}", path.display()),
            source: sled::Error::Io(e),
        })?;
        let mut batch = sled::Batch::default();
        batch.insert("snapshot_index", &index.to_be_bytes());
        batch.insert("snapshot_file", snapfile::record(data));
        // Where snapshots were kept before they had files of their own.
        batch.remove("snapshot");
        self.meta
            .apply_batch(batch)
            .map_err(storage("saving the snapshot"))?;
        self.meta
            .flush()
            .map_err(storage("flushing the snapshot"))?;
        snapfile::remove_others(&self.dir, Some(&path));
        // Compaction: entries up to the snapshot are no longer needed.
        for key in self.log.range(..=index.to_be_bytes()).keys() {
            let key = key.map_err(storage("compacting the log"))?;
            self.log
                .remove(key)
                .map_err(storage("compacting the log"))?;
        }
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, ClusterError> {
        let idx = self
            .meta
            .get("snapshot_index")
            .map_err(storage("reading the snapshot"))?;
        let Some(index) = idx
            .and_then(|i| <[u8; 8]>::try_from(&i[..]).ok())
            .map(u64::from_be_bytes)
        else {
            return Ok(None);
        };
        let get = |key: &str| self.meta.get(key).map_err(storage("reading the snapshot"));
        if let Some(record) = get("snapshot_file")? {
            let path = self.snapshot_path(index);
            let data = snapfile::read(&path, &record)
                .map_err(|detail| ClusterError::SnapshotFile { detail })?;
            return Ok(Some((index, data)));
        }
        Ok(get("snapshot")?.map(|d| (index, d.to_vec())))
    }

    fn put_cdr(&self, cdr: &Cdr) -> Result<(), ClusterError> {
        let bytes = serde_json::to_vec(cdr).map_err(|source| ClusterError::Codec {
            index: cdr.index,
            source,
        })?;
        self.writable()?;
        self.cdrs
            .insert(cdr.index.to_be_bytes(), bytes)
            .map_err(storage("writing a CDR"))?;
        Ok(())
    }

    fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError> {
        let mut out = Vec::new();
        for cdr in self.newest_cdrs() {
            let cdr = cdr?;
            if since_ms.is_some_and(|s| cdr.ended_ms < s) {
                continue;
            }
            out.push(cdr);
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    fn flush(&self) -> Result<(), ClusterError> {
        self.writable()?;
        self.db.flush().map(|_| ()).map_err(storage("flushing"))
    }

    fn find_cdr(&self, call_id: &str, scan: usize) -> Result<Option<Cdr>, ClusterError> {
        for cdr in self.newest_cdrs().take(scan) {
            let cdr = cdr?;
            if cdr.call_id == call_id {
                return Ok(Some(cdr));
            }
        }
        Ok(None)
    }
}

/// In-memory storage for tests: the same contract, nothing on disk.
#[derive(Default)]
pub struct MemStore {
    /// Everything, behind one lock (tests only).
    inner: Mutex<MemInner>,
}

#[derive(Default)]
struct MemInner {
    log: BTreeMap<u64, Command>,
    snapshot: Option<(u64, Vec<u8>)>,
    cdrs: BTreeMap<u64, Cdr>,
}

impl LogStore for MemStore {
    fn append_batch(&self, entries: &[(u64, Command)]) -> Result<(), ClusterError> {
        let mut g = self.inner.lock();
        for (i, c) in entries {
            g.log.insert(*i, c.clone());
        }
        Ok(())
    }
    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Command)>, ClusterError> {
        let g = self.inner.lock();
        Ok(g.log
            .range(after.saturating_add(1)..)
            .map(|(i, c)| (*i, c.clone()))
            .collect())
    }
    fn save_snapshot(&self, index: u64, data: &[u8]) -> Result<(), ClusterError> {
        let mut g = self.inner.lock();
        g.snapshot = Some((index, data.to_vec()));
        g.log = g.log.split_off(&(index + 1));
        Ok(())
    }
    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, ClusterError> {
        Ok(self.inner.lock().snapshot.clone())
    }
    fn put_cdr(&self, cdr: &Cdr) -> Result<(), ClusterError> {
        self.inner.lock().cdrs.insert(cdr.index, cdr.clone());
        Ok(())
    }
    fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError> {
        let g = self.inner.lock();
        let mut v: Vec<Cdr> = g
            .cdrs
            .values()
            .rev()
            .filter(|c| since_ms.is_none_or(|s| c.ended_ms >= s))
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        Ok(v)
    }
    fn flush(&self) -> Result<(), ClusterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes_on_disk as on_disk;
    use crate::snapfile::testing::{snapshot_bytes, snapshot_files};

    /// Kept in sled, each snapshot leaked about a tenth of itself (sled rewrote the page
    /// holding it as a new blob): 5.4 MB after 80 snapshots of 600 KB.
    #[test]
    fn one_snapshot_file_however_many_snapshots_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let snapshot = snapshot_bytes();
        for round in 1..=80u64 {
            s.save_snapshot(round * 100, &snapshot).unwrap();
            s.flush().unwrap();
        }
        let used = on_disk(dir.path());
        assert!(used < 2 << 20, "{used} bytes for 80 snapshots of 600 KB");
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.load_snapshot().unwrap(), Some((8000, snapshot.clone())));
        let files = snapshot_files(dir.path());
        assert_eq!(files, [format!("snapshot-{:020}.data", 8000)]);
        let file = dir.path().join(&files[0]);
        std::fs::write(&file, &snapshot[..1000]).unwrap();
        let err = s.load_snapshot().unwrap_err();
        assert!(
            crate::raft::is_corruption(&err) && err.to_string().contains(&files[0]),
            "{err}"
        );
    }
}
