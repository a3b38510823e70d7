//! The SIP stack, in RFC 3261's layers: `message` (parsing and building over rsip), `transaction`
//! (client and server transactions with timers A–K), `dialog` (in-dialog requests built from
//! [`lingxi_cluster::DialogState`]), plus `sdp` (offer/answer) and `auth` (digest).
//! Transports (sockets) live in the node; this module only sees the [`transaction::SipTransportSink`] trait.

pub mod auth;
mod error;
pub use error::SipError;
pub mod dialog;
pub mod message;
pub mod sdp;
pub mod transaction;
