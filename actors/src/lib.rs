//! Lingxi's supervised actors and SIP layers. Every call, agent and queue is an actor; every
//! change that must outlive the node is proposed to the replicated log first.
//!
//! # Layout
//! - `sip`: the SIP stack in RFC 3261 layers (message, transaction, dialog) plus SDP and digest.
//! - `switch`: [`Switch`], the context the actors share; the SIP dispatcher that routes requests
//!   to actors; the pump that turns applied log entries into actor messages.
//! - `call`: `CallActor`, a back-to-back user agent per call (caller leg A, agent leg B).
//! - `queue`: `QueueActor`, matching waiting calls with the longest-idle skilled agent.
//! - `agent`: `AgentActor`, registrar (digest auth, expiry) and wrap-up timer per agent.
//! - `membership`: announcing the node, fencing it when cut off, declaring dead nodes (leader).
//! - `supervisor`: the call supervisor (a failed call ends cleanly, alone) and the restarting
//!   supervisor of queue and agent actors.
//! - `error`: [`ActorError`].
#![warn(missing_docs, unreachable_pub, unsafe_code)]

pub mod agent;
pub mod call;
pub mod clock;
mod error;
mod membership;
pub mod queue;
pub mod sip;
pub mod supervisor;
mod switch;

pub use error::ActorError;
pub use switch::{Switch, now_ms, queue_spec};
