//! The Raft-replicated log: raft-rs consensus in front of the same `propose`/`read`/
//! `subscribe` interface as the single-node [`ReplicatedLog`](crate::ReplicatedLog).
//!
//! # Layout
//! - `storage`: [`RaftStorage`], raft-rs's `Storage` (log, hard state, conf state, snapshot)
//!   on sled, or in memory for tests.
//! - `node`: [`RaftLog`], one task owning the `RawNode` and running the ready loop; proposals
//!   batched into entries, applied to the [`StateMachine`](crate::StateMachine); snapshots,
//!   compaction and membership changes.
//! - `transport`: the [`Transport`] seam, [`TcpTransport`] (length-prefixed frames, per-peer
//!   queues, reconnect) and [`MemNetwork`] (in memory, links can be cut).
//!
//! raft-rs logs with slog; [`logger`] bridges its records into `tracing` (target `raft`).

// raft's protobuf types are built field by field, as raft-rs's own examples do.
#![allow(clippy::field_reassign_with_default)]

mod node;
mod storage;
mod transport;

#[cfg(test)]
mod tests;

pub use node::{RaftConfig, RaftLog, RaftRole, RaftStatus, SUB_INDEX};
pub use storage::RaftStorage;
pub use transport::{
    Envelope, Forward, MemNetwork, TcpConfig, TcpTransport, Transport, decode_frame, encode_frame,
};

use crate::error::ClusterError;
use std::fmt;
use thiserror::Error;

/// Why the Raft log, its storage or its transport failed (proposals themselves answer with
/// [`ClusterError`]).
#[derive(Debug, Error)]
pub enum RaftError {
    /// Storage (sled) or a state-machine codec failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// raft-rs refused (invalid config, storage contract).
    #[error("raft: {0}")]
    Raft(#[from] ::raft::Error),
    /// A stored or received protobuf could not be decoded (or encoded).
    #[error("raft {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The protobuf error.
        #[source]
        source: protobuf::ProtobufError,
    },
    /// The stored log contradicts itself.
    #[error("raft storage is inconsistent: {detail}")]
    Corrupt {
        /// What is wrong.
        detail: String,
    },
    /// A frame on a peer connection was malformed.
    #[error("raft transport frame: {detail}")]
    Frame {
        /// What is wrong.
        detail: String,
    },
    /// Socket I/O failed.
    #[error("raft transport {what}: {source}")]
    Io {
        /// The operation that failed.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl RaftError {
    /// Whether stored data is unreadable: sled found corruption, a stored protobuf does not
    /// decode, or the stored log contradicts itself. At start-up this means the node cannot be
    /// started from its storage and restarting will not help: it must be rebuilt from its
    /// peers. (`Decode` also covers frames received from peers; only start-up asks.)
    pub fn is_damage(&self) -> bool {
        match self {
            RaftError::Corrupt { .. } | RaftError::Decode { .. } => true,
            RaftError::Cluster(e) => is_corruption(e),
            RaftError::Raft(_) | RaftError::Frame { .. } | RaftError::Io { .. } => false,
        }
    }
}

/// Whether `e` is sled reporting corrupted data (a checksum that does not match) or a damaged
/// snapshot file, as opposed
/// to a failure a retry or a restart may cure (I/O, a full disk).
pub fn is_corruption(e: &ClusterError) -> bool {
    matches!(
        e,
        ClusterError::Storage {
            source: sled::Error::Corruption { .. },
            ..
        } | ClusterError::SnapshotFile { .. }
    )
}

/// A slog logger for raft-rs whose records become `tracing` events (target `raft`), with
/// the node id and raft's key-values in a `kv` field.
pub fn logger(node: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => node))
}

/// Forwards slog records to `tracing`.
struct TracingDrain;

/// slog key-values rendered as ` key=value` pairs.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        use fmt::Write as _;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

macro_rules! forward {
    ($level:expr, $record:expr, $values:expr) => {
        if tracing::enabled!(target: "raft", $level) {
            let mut kv = KvText(String::new());
            let _ = slog::KV::serialize(&$record.kv(), $record, &mut kv);
            let _ = slog::KV::serialize($values, $record, &mut kv);
            tracing::event!(target: "raft", $level, kv = %kv.0.trim_start(), "{}", $record.msg());
        }
    };
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use tracing::Level;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(Level::ERROR, record, values),
            slog::Level::Warning => forward!(Level::WARN, record, values),
            slog::Level::Info => forward!(Level::INFO, record, values),
            slog::Level::Debug => forward!(Level::DEBUG, record, values),
            slog::Level::Trace => forward!(Level::TRACE, record, values),
        }
        Ok(())
    }
}
