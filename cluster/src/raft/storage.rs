//! raft-rs [`Storage`]: the Raft log, hard state, conf state and latest snapshot.
//!
//! One implementation serves both modes: everything raft-rs reads is kept in memory (the log
//! is bounded by compaction after each snapshot), and with a sled backend every write goes
//! through to disk before [`RaftStorage::sync`] returns, so a node restarted from its data
//! directory has exactly the state it acknowledged. [`RaftStorage::memory`] is the same code
//! with no disk, for tests.
//!
//! sled layout: tree `raft_entries` (big-endian index → `Entry` protobuf) and tree
//! `raft_state` (`hard_state`, `conf_state`, `snapshot_meta` as protobuf; `snapshot_file`:
//! the length and SHA-256 of the snapshot's bytes). The state-machine bytes of the snapshot
//! live in a file of their own beside sled, `snapshot-<index>-<term>.data`: kept in sled's
//! tree with the hard state, every rewrite of that page wrote the whole snapshot out again
//! as a new sled blob that was never reclaimed (~100 MB in ten minutes of load). A new
//! snapshot file is written and fsynced before sled names it; the one it replaces is
//! deleted once sled's new record is synced, and leftovers at open.

use super::RaftError;
use crate::error::ClusterError;
use crate::snapfile;
use crate::space::SpaceGuard;
use ::raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use ::raft::{GetEntriesContext, RaftState, Storage, StorageError};
use parking_lot::RwLock;
use protobuf::Message as _;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
/// Where snapshots were kept before they had files of their own: read if found, dropped
/// at the next snapshot.
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// The snapshot file's length (8 bytes, big-endian) and SHA-256 (32 bytes).
const SNAPSHOT_FILE: &[u8] = b"snapshot_file";

/// Raft storage shared between the `RawNode` (reads) and the ready loop (writes).
/// Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct RaftStorage {
    /// The state, behind one lock: raft-rs reads it from inside `RawNode` calls while the
    /// ready loop (the same task) writes it between them, so the lock is never contended.
    core: Arc<RwLock<Core>>,
}

struct Core {
    /// Term, vote and commit, as last persisted.
    hard_state: HardState,
    /// Voters and learners as of the last applied conf change (or snapshot).
    conf_state: ConfState,
    /// The latest snapshot (metadata and state-machine bytes); index 0 when there is none.
    snapshot: Snapshot,
    /// Entries from `first_index()` on, contiguous.
    entries: VecDeque<Entry>,
    /// Where writes go through to; `None` in memory mode.
    disk: Option<Disk>,
}

struct Disk {
    /// The database, kept to flush it.
    db: sled::Db,
    /// The directory, where the snapshot file lives beside sled.
    dir: PathBuf,
    /// Snapshot files replaced by a newer one, deleted once sled's record of the new one
    /// is synced (until then a crash would come back to them).
    stale: Vec<PathBuf>,
    /// Log entries keyed by big-endian index.
    entries: sled::Tree,
    /// Hard state, conf state and snapshot.
    state: sled::Tree,
    /// Checked before every write: sled must never meet a full disk.
    guard: Option<SpaceGuard>,
    /// The durability marker (see [`Marker`]); `None` for a database opened by the caller.
    marker: Option<PathBuf>,
    /// When the marker was last written.
    marker_at: Option<Instant>,
}

/// What this node has synced at least, kept in a small file beside sled's (`lingxi-durable`
/// in the raft directory), rewritten at most once a second after a sync. sled 0.34 takes a
/// damaged record for the torn end of a crashed write and silently drops it and everything
/// after: a node would come back having forgotten entries and votes it acknowledged — or, with
/// its file zeroed, start empty and bootstrap a new cluster. Opening storage that holds less
/// than the marker says fails instead ([`RaftError::Corrupt`]): the node must be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Marker {
    term: u64,
    commit: u64,
}

const MARKER_FILE: &str = "lingxi-durable";
const MARKER_EVERY: Duration = Duration::from_secs(1);

impl Marker {
    fn read(path: &Path) -> Result<Option<Marker>, RaftError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RaftError::Corrupt {
                    detail: format!("cannot read {}: {e}", path.display()),
                });
            }
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        match (field("term "), field("commit ")) {
            (Some(term), Some(commit)) => Ok(Some(Marker { term, commit })),
            _ => Err(RaftError::Corrupt {
                detail: format!("{} does not say term and commit: {text:?}", path.display()),
            }),
        }
    }

    /// Atomically: a temporary file, fsynced, renamed over the old one.
    fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "term {}\ncommit {}", self.term, self.commit)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

impl Disk {
    /// The disk, once the free-space guard lets it be written.
    fn writable(&mut self) -> Result<&mut Disk, RaftError> {
        if let Some(g) = &self.guard {
            g.check()?;
        }
        Ok(self)
    }

    /// Writes snapshot `data` taken at `meta` to its file (a temporary file, fsynced,
    /// renamed, the directory fsynced) and puts into `batch` sled's record of it, replacing
    /// `old`'s. The caller applies the batch.
    fn save_snapshot(
        &mut self,
        old: &SnapshotMetadata,
        meta: &SnapshotMetadata,
        data: &[u8],
        batch: &mut sled::Batch,
    ) -> Result<(), RaftError> {
        let path = snapshot_path(&self.dir, meta);
        snapfile::write(&path, data).map_err(|source| RaftError::Io {
            what: format!("writing the snapshot file {}", path.display()),
            source,
        })?;
        batch.insert(SNAPSHOT_META, encode("snapshot metadata", meta)?);
        batch.insert(SNAPSHOT_FILE, snapfile::record(data));
        batch.remove(SNAPSHOT_DATA);
        let old_path = snapshot_path(&self.dir, old);
        if old.index > 0 && old_path != path {
            self.stale.push(old_path);
        }
        Ok(())
    }
}

/// The file holding the snapshot taken at `meta`.
fn snapshot_path(dir: &Path, meta: &SnapshotMetadata) -> PathBuf {
    snapfile::path(dir, &format!("{:020}-{}", meta.index, meta.term))
}

fn storage_err(what: &'static str) -> impl FnOnce(sled::Error) -> ClusterError {
    move |source| ClusterError::Storage {
        what: what.to_string(),
        source,
    }
}

fn decode<M: protobuf::Message>(what: &'static str, bytes: &[u8]) -> Result<M, RaftError> {
    M::parse_from_bytes(bytes).map_err(|source| RaftError::Decode { what, source })
}

fn encode<M: protobuf::Message>(what: &'static str, m: &M) -> Result<Vec<u8>, RaftError> {
    m.write_to_bytes()
        .map_err(|source| RaftError::Decode { what, source })
}

impl RaftStorage {
    /// Storage with no disk: for tests, and for nodes whose log need not survive a restart.
    pub fn memory() -> RaftStorage {
        RaftStorage::from_core(Core {
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: Snapshot::default(),
            entries: VecDeque::new(),
            disk: None,
        })
    }

    /// Opens (or creates) sled storage in `dir`. sled releases its file lock lazily after
    /// the last handle of a database is dropped, so an in-process reopen (a node restarted
    /// by tests or a supervisor) retries for up to 2 s while the lock is held.
    pub fn open(dir: &Path) -> Result<RaftStorage, RaftError> {
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(dir).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(storage_err("opening the raft storage")(e).into()),
            }
        };
        let storage = RaftStorage::load(db, dir)?;
        let path = dir.join(MARKER_FILE);
        if let Some(m) = Marker::read(&path)? {
            let c = storage.core.read();
            let (term, commit, last) = (c.hard_state.term, c.hard_state.commit, c.last_index());
            if term < m.term || commit < m.commit || last < m.commit {
                return Err(RaftError::Corrupt {
                    detail: format!(
                        "{} holds term {term}, commit {commit}, last entry {last}, but this \
                         node had synced term {}, commit {} ({}): sled dropped data it had \
                         acknowledged",
                        dir.display(),
                        m.term,
                        m.commit,
                        path.display()
                    ),
                });
            }
        }
        if let Some(disk) = &mut storage.core.write().disk {
            disk.marker = Some(path);
        }
        Ok(storage)
    }

    /// Reads what `db` (open on `dir`) and the snapshot file hold; deletes snapshot files
    /// sled no longer names.
    fn load(db: sled::Db, dir: &Path) -> Result<RaftStorage, RaftError> {
        let entries = db
            .open_tree("raft_entries")
            .map_err(storage_err("opening tree raft_entries"))?;
        let state = db
            .open_tree("raft_state")
            .map_err(storage_err("opening tree raft_state"))?;
        let get = |key: &[u8]| state.get(key).map_err(storage_err("reading raft_state"));
        let hard_state = match get(HARD_STATE)? {
            Some(b) => decode("hard state", &b)?,
            None => HardState::default(),
        };
        let conf_state = match get(CONF_STATE)? {
            Some(b) => decode("conf state", &b)?,
            None => ConfState::default(),
        };
        let mut snapshot = Snapshot::default();
        if let Some(b) = get(SNAPSHOT_META)? {
            let meta = decode::<SnapshotMetadata>("snapshot metadata", &b)?;
            snapshot.data = match get(SNAPSHOT_FILE)? {
                Some(record) => snapfile::read(&snapshot_path(dir, &meta), &record)
                    .map_err(|detail| RaftError::Corrupt { detail })?,
                None => get(SNAPSHOT_DATA)?.map(|d| d.to_vec()).unwrap_or_default(),
            }
            .into();
            snapshot.set_metadata(meta);
        }
        // Files of snapshots replaced before the replacement was synced, or half written.
        snapfile::remove_others(dir, Some(&snapshot_path(dir, snapshot.get_metadata())));
        let mut log = VecDeque::new();
        for item in entries.iter() {
            let (_, v) = item.map_err(storage_err("reading raft_entries"))?;
            let e: Entry = decode("log entry", &v)?;
            if let Some(last) = log.back().map(|l: &Entry| l.index)
                && e.index != last + 1
            {
                return Err(RaftError::Corrupt {
                    detail: format!("log entry {} follows {last}", e.index),
                });
            }
            log.push_back(e);
        }
        let snap_index = snapshot.get_metadata().index;
        // Entries at or before the snapshot are only kept as slack for slow followers.
        if let Some(first) = log.front().map(|e| e.index)
            && first > snap_index + 1
        {
            return Err(RaftError::Corrupt {
                detail: format!("log starts at {first}, snapshot is at {snap_index}"),
            });
        }
        Ok(RaftStorage::from_core(Core {
            hard_state,
            conf_state,
            snapshot,
            entries: log,
            disk: Some(Disk {
                db,
                dir: dir.to_path_buf(),
                stale: Vec::new(),
                entries,
                state,
                guard: None,
                marker: None,
                marker_at: None,
            }),
        }))
    }

    /// From now on every write first checks `guard` and fails with
    /// [`ClusterError::DiskLow`] instead of writing to a nearly full disk. No-op in memory.
    pub fn set_guard(&self, guard: SpaceGuard) {
        if let Some(disk) = &mut self.core.write().disk {
            disk.guard = Some(guard);
        }
    }

    fn from_core(core: Core) -> RaftStorage {
        RaftStorage {
            core: Arc::new(RwLock::new(core)),
        }
    }

    /// Whether nothing was ever stored (a node's first start).
    pub fn is_empty(&self) -> bool {
        let c = self.core.read();
        c.hard_state == HardState::default()
            && c.conf_state == ConfState::default()
            && c.entries.is_empty()
            && c.snapshot.get_metadata().index == 0
    }

    /// Appends entries from raft's `Ready`, replacing any conflicting suffix.
    pub fn append(&self, ents: &[Entry]) -> Result<(), RaftError> {
        let Some(first_new) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        let mut c = self.core.write();
        let (first, last) = (c.first_index(), c.last_index());
        if first_new < first {
            return Err(RaftError::Corrupt {
                detail: format!("append at {first_new} overwrites compacted log (first {first})"),
            });
        }
        if first_new > last + 1 {
            return Err(RaftError::Corrupt {
                detail: format!("append at {first_new} leaves a gap after {last}"),
            });
        }
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            let mut batch = sled::Batch::default();
            let new_last = ents[ents.len() - 1].index;
            for i in (new_last + 1)..=last {
                batch.remove(&i.to_be_bytes());
            }
            for e in ents {
                batch.insert(&e.index.to_be_bytes(), encode("log entry", e)?);
            }
            disk.entries
                .apply_batch(batch)
                .map_err(storage_err("appending to the raft log"))?;
        }
        let keep = (first_new - first) as usize;
        c.entries.truncate(keep);
        c.entries.extend(ents.iter().cloned());
        Ok(())
    }

    /// Saves raft's hard state (term, vote, commit).
    pub fn set_hardstate(&self, hs: HardState) -> Result<(), RaftError> {
        let mut c = self.core.write();
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            disk.state
                .insert(HARD_STATE, encode("hard state", &hs)?)
                .map_err(storage_err("saving the hard state"))?;
        }
        c.hard_state = hs;
        Ok(())
    }

    /// Saves a new commit index (from a `LightReady`).
    pub fn set_commit(&self, commit: u64) -> Result<(), RaftError> {
        let mut hs = self.core.read().hard_state.clone();
        hs.commit = commit;
        self.set_hardstate(hs)
    }

    /// Saves the membership produced by applying a conf change.
    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), RaftError> {
        let mut c = self.core.write();
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            disk.state
                .insert(CONF_STATE, encode("conf state", &cs)?)
                .map_err(storage_err("saving the conf state"))?;
        }
        c.conf_state = cs;
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), RaftError> {
        let mut c = self.core.write();
        let meta = snapshot.get_metadata();
        let index = meta.index;
        if index < c.snapshot.get_metadata().index {
            return Err(::raft::Error::Store(StorageError::SnapshotOutOfDate).into());
        }
        let mut hs = c.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = index;
        let cs = meta.get_conf_state().clone();
        let old = c.snapshot.get_metadata().clone();
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            let mut batch = sled::Batch::default();
            disk.save_snapshot(&old, meta, &snapshot.data, &mut batch)?;
            disk.entries
                .clear()
                .map_err(storage_err("clearing the raft log"))?;
            batch.insert(HARD_STATE, encode("hard state", &hs)?);
            batch.insert(CONF_STATE, encode("conf state", &cs)?);
            disk.state
                .apply_batch(batch)
                .map_err(storage_err("saving a received snapshot"))?;
        }
        c.entries.clear();
        c.hard_state = hs;
        c.conf_state = cs;
        c.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the state machine taken at applied entry `index`, with the
    /// current membership. Does not compact: see [`RaftStorage::compact`].
    pub fn create_snapshot(&self, data: Vec<u8>, index: u64) -> Result<(), RaftError> {
        let term = self.term(index)?;
        let mut c = self.core.write();
        if index < c.snapshot.get_metadata().index {
            return Err(::raft::Error::Store(StorageError::SnapshotOutOfDate).into());
        }
        if index > c.hard_state.commit {
            return Err(RaftError::Corrupt {
                detail: format!("snapshot at {index} beyond commit {}", c.hard_state.commit),
            });
        }
        let mut snap = Snapshot::default();
        snap.data = data.into();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(c.conf_state.clone());
        let old = c.snapshot.get_metadata().clone();
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            let mut batch = sled::Batch::default();
            disk.save_snapshot(&old, snap.get_metadata(), &snap.data, &mut batch)?;
            disk.state
                .apply_batch(batch)
                .map_err(storage_err("saving a snapshot"))?;
        }
        c.snapshot = snap;
        Ok(())
    }

    /// Drops entries before `compact_index`. Only entries covered by the snapshot may go.
    pub fn compact(&self, compact_index: u64) -> Result<(), RaftError> {
        let mut c = self.core.write();
        let upto = compact_index.min(c.snapshot.get_metadata().index + 1);
        let first = c.first_index();
        if upto <= first {
            return Ok(());
        }
        if let Some(disk) = &mut c.disk {
            let disk = disk.writable()?;
            let mut batch = sled::Batch::default();
            for i in first..upto {
                batch.remove(&i.to_be_bytes());
            }
            disk.entries
                .apply_batch(batch)
                .map_err(storage_err("compacting the raft log"))?;
        }
        let n = ((upto - first) as usize).min(c.entries.len());
        c.entries.drain(..n);
        Ok(())
    }

    /// Makes every write so far durable (an fsync with sled; nothing in memory).
    pub fn sync(&self) -> Result<(), RaftError> {
        let mut c = self.core.write();
        let synced = Marker {
            term: c.hard_state.term,
            commit: c.hard_state.commit,
        };
        if let Some(disk) = &mut c.disk {
            disk.writable()?
                .db
                .flush()
                .map_err(storage_err("flushing the raft storage"))?;
            // sled's record of the newest snapshot is durable: the files it replaced can go.
            for f in std::mem::take(&mut disk.stale) {
                snapfile::remove(&f);
            }
            if let Some(path) = &disk.marker
                && disk.marker_at.is_none_or(|t| t.elapsed() >= MARKER_EVERY)
            {
                synced.write(path).map_err(|source| RaftError::Io {
                    what: format!("writing {}", path.display()),
                    source,
                })?;
                disk.marker_at = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Hard state as last saved.
    pub fn hard_state(&self) -> HardState {
        self.core.read().hard_state.clone()
    }

    /// Membership as last applied.
    pub fn conf_state(&self) -> ConfState {
        self.core.read().conf_state.clone()
    }

    /// The latest snapshot (index 0 if none).
    pub fn snapshot_now(&self) -> Snapshot {
        self.core.read().snapshot.clone()
    }

    /// The first index still in the log.
    pub fn first(&self) -> u64 {
        self.core.read().first_index()
    }

    /// The last index in the log (or the snapshot's).
    pub fn last(&self) -> u64 {
        self.core.read().last_index()
    }
}

impl Core {
    fn first_index(&self) -> u64 {
        match self.entries.front() {
            Some(e) => e.index,
            None => self.snapshot.get_metadata().index + 1,
        }
    }

    fn last_index(&self) -> u64 {
        match self.entries.back() {
            Some(e) => e.index,
            None => self.snapshot.get_metadata().index,
        }
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        let c = self.core.read();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let c = self.core.read();
        let first = c.first_index();
        if low < first {
            return Err(::raft::Error::Store(StorageError::Compacted));
        }
        if high > c.last_index() + 1 {
            return Err(::raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for e in c
            .entries
            .range((low - first) as usize..(high - first) as usize)
        {
            size += u64::from(e.compute_size());
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        let c = self.core.read();
        let meta = c.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        let first = c.first_index();
        if idx < first {
            return Err(::raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index() {
            return Err(::raft::Error::Store(StorageError::Unavailable));
        }
        Ok(c.entries[(idx - first) as usize].term)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        Ok(self.core.read().first_index())
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        Ok(self.core.read().last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> ::raft::Result<Snapshot> {
        let c = self.core.read();
        let meta = c.snapshot.get_metadata();
        let cs = meta.get_conf_state();
        let member = cs.voters.contains(&to) || cs.learners.contains(&to);
        if meta.index == 0 || meta.index < request_index || !member {
            // The ready loop snapshots every N entries and after each conf change (`to`
            // refuses a snapshot without itself); raft asks again later.
            return Err(::raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(c.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes_on_disk as on_disk;
    use crate::snapfile::testing::{snapshot_bytes, snapshot_files};

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("e{index}").into_bytes().into();
        e
    }

    fn check_log(s: &RaftStorage) {
        assert_eq!(s.first(), 4);
        assert_eq!(s.last(), 7);
        assert_eq!(s.term(3).unwrap(), 2, "the snapshot's term is kept");
        assert_eq!(s.term(6).unwrap(), 3);
        assert!(s.term(2).is_err());
        let got = s
            .entries(4, 8, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        let snap = Storage::snapshot(s, 0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 3);
        assert_eq!(&snap.data[..], b"state at 3");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(s.hard_state().commit, 5);
    }

    fn exercise(s: &RaftStorage) {
        assert!(s.is_empty());
        s.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        })
        .unwrap();
        assert!(Storage::snapshot(s, 0, 2).is_err(), "no snapshot yet");
        s.append(&[
            entry(1, 1),
            entry(2, 1),
            entry(3, 2),
            entry(4, 2),
            entry(5, 2),
        ])
        .unwrap();
        // A new leader overwrites 5 and appends.
        s.append(&[entry(5, 3), entry(6, 3), entry(7, 3)]).unwrap();
        let mut hs = HardState::default();
        hs.term = 3;
        hs.vote = 2;
        hs.commit = 4;
        s.set_hardstate(hs).unwrap();
        s.set_commit(5).unwrap();
        s.create_snapshot(b"state at 3".to_vec(), 3).unwrap();
        s.compact(10).unwrap(); // bounded by the snapshot
        s.sync().unwrap();
        assert!(s.append(&[entry(2, 3)]).is_err(), "compacted");
        assert!(s.append(&[entry(9, 3)]).is_err(), "gap");
        check_log(s);
    }

    #[test]
    fn memory_storage_log_snapshot_compaction() {
        exercise(&RaftStorage::memory());
    }

    #[test]
    fn sled_storage_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RaftStorage::open(dir.path()).unwrap();
            exercise(&s);
        }
        let s = RaftStorage::open(dir.path()).unwrap();
        assert!(!s.is_empty());
        check_log(&s);
        assert_eq!(s.hard_state().vote, 2);
        // A received snapshot replaces everything.
        let mut snap = Snapshot::default();
        snap.data = b"state at 20".to_vec().into();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 4;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3, 4];
        s.apply_snapshot(snap).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = RaftStorage::open(dir.path()).unwrap();
        assert_eq!((s.first(), s.last()), (21, 20));
        assert_eq!(s.hard_state().commit, 20);
        assert_eq!(s.hard_state().term, 4);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(&s.snapshot_now().data[..], b"state at 20");
        s.append(&[entry(21, 4)]).unwrap();
        assert_eq!(s.term(20).unwrap(), 4);
    }

    /// Found by the chaos suite's 30-minute run: with the snapshot's bytes in sled's tree
    /// beside the hard state, every rewrite of that tree's page wrote the whole snapshot
    /// again as a new sled blob, never reclaimed (~650 KB each, ~100 MB in ten minutes).
    #[test]
    fn a_snapshot_is_stored_once_however_often_the_hard_state_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = RaftStorage::open(dir.path()).unwrap();
        let snapshot = snapshot_bytes();
        let mut hs = HardState::default();
        hs.term = 1;
        let mut index = 0;
        for round in 0..3 {
            let ents: Vec<Entry> = (index + 1..=index + 400).map(|i| entry(i, 1)).collect();
            s.append(&ents).unwrap();
            for _ in 0..400 {
                index += 1;
                hs.commit = index;
                s.set_hardstate(hs.clone()).unwrap();
                s.sync().unwrap();
            }
            s.create_snapshot(snapshot.clone(), index).unwrap();
            s.compact(index).unwrap();
            s.sync().unwrap();
            eprintln!("round {round}: {} bytes on disk", on_disk(dir.path()));
        }
        let used = on_disk(dir.path());
        assert_eq!(
            snapshot_files(dir.path()),
            [format!("snapshot-{:020}-1.data", 1200)],
            "the replaced snapshots' files are gone"
        );
        drop(s);
        let s = RaftStorage::open(dir.path()).unwrap();
        assert_eq!(s.snapshot_now().get_metadata().index, 1200);
        assert_eq!(&s.snapshot_now().data[..], &snapshot[..]);
        assert!(
            used < 4 << 20,
            "{used} bytes on disk for a 600 KB snapshot and 1,200 small entries"
        );
    }

    #[test]
    fn a_damaged_or_missing_snapshot_file_is_a_damaged_replica_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RaftStorage::open(dir.path()).unwrap();
            exercise(&s);
        }
        let [file] = &snapshot_files(dir.path())[..] else {
            panic!("one snapshot file: {:?}", snapshot_files(dir.path()));
        };
        let path = dir.path().join(file);
        // A crash after writing a newer snapshot's file, before sled named it.
        let leftover = dir.path().join(format!("snapshot-{:020}-3.data", 9));
        std::fs::write(&leftover, b"state at 9").unwrap();
        std::fs::write(dir.path().join("snapshot-x.tmp"), b"half").unwrap();
        drop(RaftStorage::open(dir.path()).unwrap());
        assert_eq!(
            snapshot_files(dir.path()),
            [file.as_str()],
            "leftovers deleted"
        );

        std::fs::write(&path, b"state at 4").unwrap(); // same length, other bytes
        let err = RaftStorage::open(dir.path()).err().expect("refused");
        assert!(err.is_damage(), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string())
                && err.to_string().contains("SHA-256"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = RaftStorage::open(dir.path()).err().expect("refused");
        assert!(err.is_damage() && err.to_string().contains(file), "{err}");
    }
}
