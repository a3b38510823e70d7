//! The SIP layers' error type.

use thiserror::Error;

/// What went wrong in the SIP layers; every variant names the message or dialog concerned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SipError {
    /// A message (or a part of it, named by `what`) could not be parsed.
    #[error("malformed SIP {what}: {detail}")]
    Parse {
        /// The part that failed: "message", "Via header", "request line", ...
        what: String,
        /// Why it failed, in words a person can act on.
        detail: String,
    },
    /// A header RFC 3261 requires is absent.
    #[error("SIP message (Call-ID {call_id:?}) lacks the {header} header")]
    MissingHeader {
        /// The header's name, e.g. "Call-ID".
        header: &'static str,
        /// The Call-ID, when the message had one.
        call_id: Option<String>,
    },
    /// A message is larger than the configured limit.
    #[error("SIP message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message received or to be sent.
        size: usize,
        /// The configured limit (`sip.max_message_bytes`).
        limit: usize,
    },
    /// An SDP body could not be parsed or negotiated.
    #[error("SDP problem in call {call_id}: {detail}")]
    Sdp {
        /// The call whose SDP failed.
        call_id: String,
        /// What was wrong (no common codec, no connection address, ...).
        detail: String,
    },
    /// A request or response does not fit the dialog it claims to belong to.
    #[error("dialog {call_id}: {detail}")]
    Dialog {
        /// The dialog's Call-ID.
        call_id: String,
        /// What did not fit.
        detail: String,
    },
    /// The transport could not send to a peer.
    #[error("cannot send to {peer}: {detail}")]
    Transport {
        /// The peer, as `udp:1.2.3.4:5060`.
        peer: String,
        /// The I/O error.
        detail: String,
    },
    /// A client transaction got no final response in time (Timer B or F).
    #[error("{method} in call {call_id} timed out")]
    Timeout {
        /// The Call-ID of the request.
        call_id: String,
        /// The method of the request.
        method: String,
    },
    /// Digest authentication failed or its header was malformed.
    #[error("authentication of {user}: {detail}")]
    Auth {
        /// The user name from the Authorization header (or "?" when absent).
        user: String,
        /// What was wrong.
        detail: String,
    },
}
