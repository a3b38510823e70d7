//! Media for Lingxi: the switch anchors every call's audio. Each call leg (A = caller,
//! B = agent) talks RTP to its own UDP socket on the node; the switch relays between
//! them, plays prompts and hold music, detects DTMF and records.
//!
//! The entry point is [`MediaEngine`] (one per node, built from `[media]`), whose
//! [`allocate`](MediaEngine::allocate) gives a call its [`CallMedia`]; the call actor
//! owns that and drives it (`set_remote`, `play`, `bridge`, `set_hold`,
//! `start_recording`) and reads [`MediaEvent`]s from it.
//!
//! Budget: per call two relay tasks (one per leg socket), at most one playback ticker
//! per playing leg, no allocation per packet, no lock held across an await; recordings
//! are written by a small fixed pool of writer threads shared by every call of the
//! engine, never on the packet path (audio the writers cannot take is dropped and
//! counted). Malformed input from the network is counted and dropped, never a panic.
//!
//! # Layout
//! - [`codec`](Codec): [`Codec`] (PCMU/PCMA) and [`Leg`].
//! - [`g711`]: µ-law / A-law encode, decode and table-driven in-place transcoding.
//! - [`rtp`]: RTP header parse (CSRCs, extension, padding) and write.
//! - [`dtmf`]: RFC 4733 events and the once-per-press [`dtmf::DtmfDetector`].
//! - `prompt`: [`PcmClip`] (WAV loading with downmix/resample, built-in hold music)
//!   and [`Prompt`].
//! - `engine`: [`MediaEngine`], the RTP port pool, the recorder pool and metric handles.
//! - `call`: [`CallMedia`] and its tasks — `call/relay.rs` (receive, latch, forward),
//!   `call/playback.rs` (prompt ticker), `call/stream.rs` (per-leg SSRC/seq/ts
//!   continuity) — plus [`MediaStats`] and [`MediaEvent`].
//! - `recorder`: the pool of stereo WAV writer threads and their time alignment.
//! - [`webrtc`]: [`webrtc::WebRtcBridge`], a browser's audio (WebRTC, DTLS-SRTP, G.711
//!   only) relayed packet for packet to a plain RTP socket, for the node's web gateway.
//! - `error`: [`MediaError`].
//!
//! Metrics: counters `lingxi_rtp_packets_in_total`, `lingxi_rtp_packets_out_total`,
//! `lingxi_rtp_malformed_total`, `lingxi_rtp_dropped_total{reason}` (valid packets
//! dropped: `unlatched_source`, `unknown_payload`, `send_buffer_full`, `send_error`),
//! `lingxi_recording_dropped_frames_total` (samples of one leg, 1/8000 s each, the
//! recording writers could not take); gauges `lingxi_media_sessions`,
//! `lingxi_recordings_active` (WAV files open in the writers).

#![warn(missing_docs, unreachable_pub, unsafe_code)]

mod call;
mod codec;
pub mod dtmf;
mod engine;
mod error;
pub mod g711;
mod gate;
mod prompt;
mod recorder;
pub mod rtp;
#[cfg(test)]
mod test_metrics;
pub mod webrtc;

pub use call::{CallMedia, LegStats, MediaEvent, MediaStats};
pub use codec::{Codec, Leg};
pub use engine::MediaEngine;
pub use error::MediaError;
pub use gate::ServeGate;
pub use prompt::{PcmClip, Prompt, SAMPLE_RATE};
