//! The log that commands are proposed to. On a single node it commits by writing to storage;
//! the cluster issue puts raft-rs consensus in front of the same interface.

use crate::command::Command;
use crate::error::ClusterError;
use crate::model::Cdr;
use crate::state::{Event, StateMachine};
use crate::store::LogStore;
use parking_lot::RwLock;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// One applied entry, as broadcast to subscribers.
#[derive(Debug)]
pub struct Applied {
    /// Log index.
    pub index: u64,
    /// What changed.
    pub events: Vec<Event>,
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<Vec<Event>, ClusterError>>,
}

struct Inner {
    proposals: mpsc::Sender<Proposal>,
    state: RwLock<StateMachine>,
    applied: broadcast::Sender<Arc<Applied>>,
    store: Arc<dyn LogStore>,
}

/// Handle to the replicated log and the state machine it drives. Cheap to clone.
#[derive(Clone)]
pub struct ReplicatedLog {
    inner: Arc<Inner>,
}

/// Most proposals committed in one storage write.
const MAX_BATCH: usize = 512;

impl ReplicatedLog {
    /// Restores the state from the store's snapshot and log, then starts the writer task.
    /// `snapshot_every` entries, a snapshot is taken and the log compacted.
    pub fn open(
        store: Arc<dyn LogStore>,
        snapshot_every: u64,
    ) -> Result<ReplicatedLog, ClusterError> {
        let mut sm = match store.load_snapshot()? {
            Some((index, bytes)) => {
                let mut sm: StateMachine = serde_json::from_slice(&bytes)
                    .map_err(|source| ClusterError::Codec { index, source })?;
                sm.rebuild_indexes();
                sm
            }
            None => StateMachine::new(),
        };
        let replay = store.entries_after(sm.applied_index())?;
        let replayed = replay.len();
        for (index, cmd) in replay {
            if let Ok(events) = sm.apply(index, &cmd) {
                persist_cdrs(&*store, &events)?;
            }
        }
        tracing::info!(
            applied = sm.applied_index(),
            replayed,
            "state restored from storage"
        );
        let (tx, rx) = mpsc::channel(8192);
        let (applied, _) = broadcast::channel(16384);
        let inner = Arc::new(Inner {
            proposals: tx,
            state: RwLock::new(sm),
            applied,
            store,
        });
        tokio::spawn(writer(Arc::downgrade(&inner), rx, snapshot_every.max(1)));
        Ok(ReplicatedLog { inner })
    }

    /// Proposes a command; resolves once it is committed and applied, with its events or
    /// the state machine's refusal.
    pub async fn propose(&self, command: Command) -> Result<Vec<Event>, ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { command, reply })
            .await
            .map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Reads the applied state. Keep `f` short: it holds a read lock.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.inner.state.read())
    }

    /// Every applied entry from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.inner.applied.subscribe()
    }

    /// Stored CDRs, newest `limit`, oldest first.
    pub fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError> {
        self.inner.store.cdrs(limit, since_ms)
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ClusterError> {
        self.inner.store.flush()
    }
}

fn persist_cdrs(store: &dyn LogStore, events: &[Event]) -> Result<(), ClusterError> {
    crate::store::persist_events(store, events)
}

async fn writer(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::Receiver<Proposal>,
    snapshot_every: u64,
) {
    let mut batch: Vec<Proposal> = Vec::with_capacity(MAX_BATCH);
    let mut entries: Vec<(u64, Command)> = Vec::with_capacity(MAX_BATCH);
    let mut since_snapshot = 0u64;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let started = tokio::time::Instant::now();
        let first = inner.state.read().applied_index() + 1;
        entries.clear();
        entries.extend(
            batch
                .iter()
                .enumerate()
                .map(|(i, p)| (first + i as u64, p.command.clone())),
        );
        // Durable before anything is applied or answered: a committed end (a caller's BYE
        // answered 200) must not come back as a live call after a crash. One flush per batch.
        // The fsync runs on the blocking pool, not on a runtime worker.
        let (batch_entries, stored) = {
            let (inner, entries) = (inner.clone(), std::mem::take(&mut entries));
            tokio::task::spawn_blocking(move || {
                let stored = inner
                    .store
                    .append_batch(&entries)
                    .and_then(|()| inner.store.flush());
                (entries, stored)
            })
            .await
            .unwrap_or_else(|e| {
                let e = ClusterError::Conflict {
                    what: "appending to the log".into(),
                    detail: format!("the storage task failed: {e}"),
                };
                (Vec::new(), Err(e))
            })
        };
        entries = batch_entries;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot append to the log; proposals refused");
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(ClusterError::Conflict {
                    what: "proposal".into(),
                    detail: e.to_string(),
                }));
            }
            continue;
        }
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut sm = inner.state.write();
            for (index, cmd) in &entries {
                results.push(sm.apply(*index, cmd));
            }
        }
        for ((index, _), (p, result)) in entries.iter().zip(batch.drain(..).zip(results)) {
            if let Ok(events) = &result {
                if let Err(e) = persist_cdrs(&*inner.store, events) {
                    tracing::error!(index, error = %e, "cannot store CDR");
                }
                if inner.applied.receiver_count() > 0 {
                    let _ = inner.applied.send(Arc::new(Applied {
                        index: *index,
                        events: events.clone(),
                    }));
                }
            }
            let _ = p.reply.send(result);
        }
        metrics::histogram!("lingxi_log_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("lingxi_log_applied_index").set((first + entries.len() as u64 - 1) as f64);
        since_snapshot += entries.len() as u64;
        if since_snapshot >= snapshot_every {
            since_snapshot = 0;
            let (index, bytes) = {
                let sm = inner.state.read();
                (sm.applied_index(), serde_json::to_vec(&*sm))
            };
            match bytes {
                Ok(b) => {
                    if let Err(e) = inner.store.save_snapshot(index, &b) {
                        tracing::error!(index, error = %e, "snapshot failed");
                    }
                }
                Err(e) => tracing::error!(index, error = %e, "snapshot encoding failed"),
            }
        }
    }
}
