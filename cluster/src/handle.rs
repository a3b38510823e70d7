//! [`Log`]: the one handle actors and the API use, whether the node runs alone
//! ([`ReplicatedLog`], commits by writing to sled) or in a cluster ([`RaftLog`]).

use crate::command::Command;
use crate::error::ClusterError;
use crate::log::{Applied, ReplicatedLog};
use crate::model::Cdr;
use crate::raft::{RaftLog, RaftStatus};
use crate::state::{Event, StateMachine};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The replicated log of this node, single-node or Raft.
#[derive(Clone)]
pub enum Log {
    /// One node: committed when written to local storage.
    Local(ReplicatedLog),
    /// A cluster member: committed when a majority has it.
    Raft(RaftLog),
}

impl Log {
    /// Proposes a command; resolves once committed and applied (see [`ReplicatedLog::propose`]).
    pub async fn propose(&self, command: Command) -> Result<Vec<Event>, ClusterError> {
        match self {
            Log::Local(l) => l.propose(command).await,
            Log::Raft(r) => r.propose(command).await,
        }
    }

    /// Reads the applied state under a short read lock.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        match self {
            Log::Local(l) => l.read(f),
            Log::Raft(r) => r.read(f),
        }
    }

    /// Every applied entry from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        match self {
            Log::Local(l) => l.subscribe(),
            Log::Raft(r) => r.subscribe(),
        }
    }

    /// Stored CDRs, newest `limit`, oldest first.
    pub fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError> {
        match self {
            Log::Local(l) => l.cdrs(limit, since_ms),
            Log::Raft(r) => r.cdrs(limit, since_ms),
        }
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ClusterError> {
        match self {
            Log::Local(l) => l.flush(),
            Log::Raft(r) => r.flush(),
        }
    }

    /// Raft status, when clustered.
    pub fn raft_status(&self) -> Option<RaftStatus> {
        match self {
            Log::Local(_) => None,
            Log::Raft(r) => Some(r.status()),
        }
    }

    /// The Raft log, when clustered.
    pub fn as_raft(&self) -> Option<&RaftLog> {
        match self {
            Log::Local(_) => None,
            Log::Raft(r) => Some(r),
        }
    }
}
