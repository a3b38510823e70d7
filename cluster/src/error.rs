//! The cluster crate's error type.

use crate::model::AgentState;
use thiserror::Error;

/// Why a command was refused or the log could not be read or written.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The command names an agent the state machine does not know.
    #[error("unknown agent {agent}")]
    UnknownAgent {
        /// Agent id.
        agent: String,
    },
    /// The command names a queue the state machine does not know.
    #[error("unknown queue {queue}")]
    UnknownQueue {
        /// Queue id.
        queue: String,
    },
    /// The command names a call that is not live.
    #[error("unknown call {call_id}")]
    UnknownCall {
        /// Call id.
        call_id: String,
    },
    /// The agent cannot take this change in its current state.
    #[error("agent {agent} is {state}: {detail}", state = state.as_str())]
    AgentUnavailable {
        /// Agent id.
        agent: String,
        /// Its state now.
        state: AgentState,
        /// What was refused.
        detail: String,
    },
    /// The change conflicts with the current state (duplicate call, queue not empty, ...).
    #[error("{what} refused: {detail}")]
    Conflict {
        /// What was asked.
        what: String,
        /// Why it cannot be done.
        detail: String,
    },
    /// The log or snapshot store failed.
    #[error("storage {what}: {source}")]
    Storage {
        /// The operation that failed.
        what: String,
        /// The storage error.
        #[source]
        source: sled::Error,
    },
    /// A snapshot file beside sled is missing, unreadable or does not match the length and
    /// SHA-256 sled recorded for it: the storage is damaged.
    #[error("{detail} / 快照文件损坏")]
    SnapshotFile {
        /// What is wrong, naming the file.
        detail: String,
    },
    /// The filesystem holding the node's storage is nearly full: writing stops before it
    /// fills (sled cannot be trusted to survive `ENOSPC` mid-write).
    #[error(
        "disk nearly full: {dir} has {free_mb} MiB free, below the reserve of {reserve_mb} MiB \
         (node.min_free_disk_mb); storage stops writing before the disk fills / 磁盘将满，停止写入"
    )]
    DiskLow {
        /// The storage directory.
        dir: std::path::PathBuf,
        /// Free space available to the node, MiB.
        free_mb: u64,
        /// The configured reserve, MiB.
        reserve_mb: u64,
    },
    /// A stored entry could not be decoded (or a command encoded).
    #[error("log entry {index}: {source}")]
    Codec {
        /// Index of the entry.
        index: u64,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The cluster could not commit in time (no leader, no quorum): the proposal may still
    /// be applied later. Retry, and expect the command to be refused if it already was.
    #[error("raft node {node}: proposal not committed in time ({detail})")]
    Unavailable {
        /// This node's Raft id.
        node: u64,
        /// Why: "no leader", "timed out", ...
        detail: String,
    },
    /// The log is shutting down; the proposal was not applied.
    #[error("the replicated log has stopped")]
    Stopped,
}

impl ClusterError {
    /// Whether the proposer may retry (storage and shutdown) rather than the command being wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::Storage { .. }
                | ClusterError::DiskLow { .. }
                | ClusterError::Stopped
                | ClusterError::Unavailable { .. }
        )
    }
}
