//! Lingxi's replicated state: every change that must outlive a node is a [`Command`] in a
//! log, applied by the deterministic [`StateMachine`]; actors act on what was applied.
//!
//! # Layout
//! - `dialog`: [`DialogState`], a SIP dialog as plain data (restorable on another node).
//! - `model`: agents, queues, calls and CDRs as the state machine keeps them.
//! - `command`: the [`Command`]s of the log.
//! - `state`: the pure state machine, `apply(index, command) -> events`.
//! - `store`: the [`LogStore`] trait; sled in production, memory in tests.
//! - `space`: [`SpaceGuard`], which stops storage writing before its disk fills.
//! - `snapfile`: snapshots in files of their own beside sled (sled keeps their checksums).
//! - `log`: [`ReplicatedLog`], where commands are proposed and applied state is read.
//!   On one node it commits by writing to storage.
//! - `handle`: [`Log`], one handle over both.
//! - `raft`: [`raft::RaftLog`], the same interface replicated by raft-rs (sled storage, TCP
//!   transport, snapshots, membership changes); not yet wired into the node.
#![warn(missing_docs, unreachable_pub, unsafe_code)]

mod command;
mod dialog;
mod error;
mod handle;
mod log;
pub mod model;
pub mod raft;
mod snapfile;
mod space;
mod state;
mod store;

pub use command::Command;
pub use dialog::{DialogRole, DialogState, SipTransport, end_hangs_up, legs_to_hang_up};
pub use error::ClusterError;
pub use handle::Log;
pub use log::{Applied, ReplicatedLog};
pub use space::{SpaceGuard, bytes_on_disk, free_bytes};
pub use state::{Event, StateMachine};
pub use store::{LogStore, MemStore, SledStore, persist_events};
