//! The complete state of one SIP dialog as plain data.
//!
//! A node that takes over a call (issue 3) rebuilds the live dialog from this record alone,
//! so everything RFC 3261 §12 says a dialog holds is here, plus the SDP and where to send.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The SIP transport a dialog's requests travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// SIP over UDP (RFC 3261 §18.1.1, with retransmission timers).
    Udp,
    /// SIP over TCP (framing by Content-Length, no retransmissions).
    Tcp,
}

impl std::fmt::Display for SipTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
        })
    }
}

/// Which side of the dialog this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialogRole {
    /// We received the INVITE (the caller's leg).
    Uas,
    /// We sent the INVITE (the agent's leg).
    Uac,
}

/// Everything needed to send and accept in-dialog requests on one leg of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogState {
    /// Call-ID header shared by every message of the dialog.
    pub call_id: String,
    /// Our tag (To-tag when we are UAS, From-tag when we are UAC).
    pub local_tag: String,
    /// The peer's tag; empty until the peer has chosen one (early UAC dialog).
    pub remote_tag: String,
    /// Whether we created this dialog by answering or by sending the INVITE.
    pub role: DialogRole,
    /// CSeq number of the last request we sent in this dialog; the next one is `local_seq + 1`.
    pub local_seq: u32,
    /// CSeq number of the last request the peer sent, to reject stale or out-of-order requests.
    pub remote_seq: Option<u32>,
    /// Our URI (From of our requests), e.g. `sip:support@lingxi.local`.
    pub local_uri: String,
    /// The peer's URI (To of our requests), e.g. `sip:1001@lingxi.local`.
    pub remote_uri: String,
    /// Request-URI for our in-dialog requests: the peer's Contact, updated by target refresh.
    pub remote_target: String,
    /// Route set learned from Record-Route, in the order our requests must carry it.
    pub route_set: Vec<String>,
    /// Our Contact URI advertised in this dialog (changes when another node takes over).
    pub local_contact: String,
    /// Transport the dialog's requests use.
    pub transport: SipTransport,
    /// Where our requests and responses are sent (next hop: first route or the remote target).
    pub peer: SocketAddr,
    /// The last SDP we sent (offer or answer); its `o=` version increases on every change.
    pub local_sdp: Option<String>,
    /// The last SDP the peer sent.
    pub remote_sdp: Option<String>,
    /// `o=` session version of our SDP, bumped on every new offer (RFC 3264 §8).
    pub sdp_version: u64,
}

/// Whether a call's end still sends BYE to `leg`: every leg but the one whose party hung up
/// (`ended_by` "caller" spares the caller's leg A, "agent" the agent's leg B). One rule for
/// the owner hanging up, the record holding the agent's leg until it is down, and the
/// survivors finishing a dead owner's hang-up.
pub fn end_hangs_up(ended_by: &str, leg: crate::model::CallLeg) -> bool {
    use crate::model::CallLeg;
    match leg {
        CallLeg::A => ended_by != "caller",
        CallLeg::B => ended_by != "agent",
    }
}

/// The legs among `a` (the caller's) and `b` (the agent's) that a call's end still sends BYE
/// to ([`end_hangs_up`]).
pub fn legs_to_hang_up<T>(ended_by: &str, a: Option<T>, b: Option<T>) -> Vec<T> {
    use crate::model::CallLeg;
    [
        a.filter(|_| end_hangs_up(ended_by, CallLeg::A)),
        b.filter(|_| end_hangs_up(ended_by, CallLeg::B)),
    ]
    .into_iter()
    .flatten()
    .collect()
}
