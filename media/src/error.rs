//! The crate's one error type.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::Leg;

/// Everything that can go wrong in the media layer. Each variant names what it concerns
/// (call id, leg, address, file) so a log line or call record says where it happened.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A datagram too short for what its header announces (fixed header, CSRC list,
    /// extension, padding, or an RFC 4733 event). Network input: counted and dropped.
    #[error("truncated {what}: {len} bytes")]
    Truncated {
        /// Which structure was cut short (`"rtp header"`, `"csrc list"`, `"dtmf event"`, ...).
        what: &'static str,
        /// Length of the buffer that was offered.
        len: usize,
    },
    /// An RTP packet whose version field is not 2 (e.g. STUN or garbage on the port).
    #[error("not RTP version 2 (version {version})")]
    BadVersion {
        /// The version bits found.
        version: u8,
    },
    /// An RTP packet whose padding count is zero or longer than its payload.
    #[error("bad RTP padding: {padding} bytes with {available} available")]
    BadPadding {
        /// The padding count from the last byte.
        padding: usize,
        /// Bytes between the headers and the end of the packet.
        available: usize,
    },
    /// Every even port in the configured range is in use: the node is full.
    #[error("call {call_id}: RTP port range {min}-{max} on {ip} exhausted")]
    PortsExhausted {
        /// The call that could not be given media.
        call_id: String,
        /// Bind address of the range.
        ip: IpAddr,
        /// Lowest port of the range.
        min: u16,
        /// Highest port of the range.
        max: u16,
    },
    /// Binding a leg's socket failed for a reason other than the port being taken.
    #[error("call {call_id} leg {leg:?}: cannot bind {addr}: {source}")]
    Bind {
        /// The call being given media.
        call_id: String,
        /// The leg whose socket failed.
        leg: Leg,
        /// The address that could not be bound.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The `[media]` section cannot be used (e.g. `rtp_port_min > rtp_port_max`).
    #[error("media.{key}: {reason}")]
    Config {
        /// Config key concerned, under `[media]`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A WAV file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Wav {
        /// The file concerned.
        path: PathBuf,
        /// What hound said.
        #[source]
        source: hound::Error,
    },
    /// A WAV file in a format we do not take (not 16-bit PCM, > 2 channels, empty...).
    #[error("{}: {reason}", path.display())]
    WavFormat {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Recording could not start (directory, file, thread).
    #[error("call {call_id}: cannot record to {}: {source}", path.display())]
    Recording {
        /// The call being recorded.
        call_id: String,
        /// The recording's file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `allocate` was polled outside a tokio runtime, which the relay tasks need.
    #[error("call {call_id}: media needs a tokio runtime")]
    NoRuntime {
        /// The call being given media.
        call_id: String,
    },
    /// A WebRTC session (a browser's audio, see `webrtc`) could not be set up or failed:
    /// bad offer, no common codec, ICE or DTLS not connected in time, a socket error.
    #[error("WebRTC session {session}: {detail}")]
    WebRtc {
        /// The session concerned (the gateway names it after the call or the web caller).
        session: String,
        /// What went wrong, for the log and the browser.
        detail: String,
    },
    /// `start_recording` while a recording is already running.
    #[error("call {call_id}: already recording to {}", path.display())]
    AlreadyRecording {
        /// The call being recorded.
        call_id: String,
        /// The file the running recording writes.
        path: PathBuf,
    },
}
