//! The actors crate's error type.

use crate::sip::SipError;
use lingxi_cluster::ClusterError;
use lingxi_media::MediaError;
use thiserror::Error;

/// What went wrong in a call, agent or queue actor, or in starting the switch.
#[derive(Debug, Error)]
pub enum ActorError {
    /// The replicated log refused or could not apply a command.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A SIP message or dialog problem.
    #[error(transparent)]
    Sip(#[from] SipError),
    /// Media could not be set up.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// An actor could not be spawned or reached.
    #[error("actor {actor}: {detail}")]
    Actor {
        /// Which actor (e.g. `agent 1001`).
        actor: String,
        /// What failed.
        detail: String,
    },
    /// A request named something that does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `agent 1009`.
        what: String,
    },
    /// The switch is shutting down.
    #[error("the switch is shutting down")]
    ShuttingDown,
}
