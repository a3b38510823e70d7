//! The relay task of one leg: receive, validate, latch, detect DTMF, tap for recording,
//! and forward to the other leg when bridged. Per-packet work reuses two buffers and
//! holds each lock only for a few field reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::time::Instant;

use super::stream::Source;
use super::{CallShared, LegShared, MediaEvent};
use crate::dtmf::{self, DtmfDetector};
use crate::engine::EngineInner;
use crate::rtp::{self, HEADER_LEN, RtpHeader};
use crate::{Codec, Leg, g711};

/// Largest datagram read; RTP for G.711 at up to 60 ms is well under it.
const RECV_BUF: usize = 2048;
/// A latched source silent this long may be replaced by a new one (NAT rebinding,
/// phone restart).
const RELATCH_IDLE: Duration = Duration::from_secs(2);
/// Payload bytes the outgoing buffer starts with (20 ms of G.711), rather than
/// `RECV_BUF`: 2 KiB less per leg, per call.
const OUT_HINT: usize = 160;
/// RFC 3389 comfort noise, forwarded as is.
const PT_CN: u8 = 13;

/// Metric handles, looked up once per engine (a registry lookup hashes the name and
/// labels and takes a lock: too dear per call or per packet).
pub(crate) struct Meters {
    /// `lingxi_rtp_packets_in_total`.
    pub(crate) packets_in: Counter,
    /// `lingxi_rtp_packets_out_total`.
    pub(crate) packets_out: Counter,
    /// `lingxi_rtp_malformed_total`.
    pub(crate) malformed: Counter,
    /// `lingxi_rtp_dropped_total{reason="unlatched_source"}`: valid RTP from a source the
    /// leg did not accept (not the latched one, or a payload type SDP did not negotiate).
    pub(crate) dropped_unlatched: Counter,
    /// `lingxi_rtp_dropped_total{reason="unknown_payload"}`: accepted, but of a payload
    /// type we neither relay nor understand.
    pub(crate) dropped_unknown_pt: Counter,
    /// `lingxi_rtp_dropped_total{reason="send_buffer_full"}`: the socket's send buffer
    /// was full.
    pub(crate) dropped_send_full: Counter,
    /// `lingxi_rtp_dropped_total{reason="send_error"}`: any other send failure (e.g. an
    /// ICMP error reported on the socket).
    pub(crate) dropped_send_error: Counter,
    /// `lingxi_rtp_dropped_total{reason="not_serving"}`: this node holds no cluster lease
    /// (see [`crate::ServeGate`]).
    pub(crate) dropped_gate_closed: Counter,
    /// `lingxi_media_sessions`: calls with media allocated.
    pub(crate) sessions: Gauge,
}

impl Meters {
    pub(crate) fn new() -> Self {
        let dropped = |reason: &'static str| metrics::counter!("lingxi_rtp_dropped_total", "reason" => reason);
        Meters {
            packets_in: metrics::counter!("lingxi_rtp_packets_in_total"),
            packets_out: metrics::counter!("lingxi_rtp_packets_out_total"),
            malformed: metrics::counter!("lingxi_rtp_malformed_total"),
            dropped_unlatched: dropped("unlatched_source"),
            dropped_unknown_pt: dropped("unknown_payload"),
            dropped_send_full: dropped("send_buffer_full"),
            dropped_send_error: dropped("send_error"),
            dropped_gate_closed: dropped("not_serving"),
            sessions: metrics::gauge!("lingxi_media_sessions"),
        }
    }
}

/// Per-task state of a relay: reused buffers and the DTMF detector.
pub(crate) struct RelayCtx {
    /// Outgoing packet, rewritten in place; keeps its capacity (no allocation per
    /// packet once it has seen the leg's largest packet).
    out: Vec<u8>,
    /// De-duplicates the leg's key presses.
    detector: DtmfDetector,
    /// Whether `FirstPacket` was sent.
    heard: bool,
}

impl RelayCtx {
    pub(crate) fn new() -> Self {
        RelayCtx {
            // Sized for a 20 ms G.711 packet; grows once if the peer sends longer ones.
            out: Vec::with_capacity(HEADER_LEN + OUT_HINT),
            detector: DtmfDetector::new(),
            heard: false,
        }
    }
}

/// What an accepted packet is, for forwarding.
#[derive(Clone, Copy)]
enum Kind {
    /// G.711 audio in this law.
    Audio(Codec),
    /// An RFC 4733 event.
    Dtmf,
    /// Comfort noise: same payload type on both sides.
    Passthrough,
}

/// The relay task of leg `me`.
pub(crate) async fn run(shared: Arc<CallShared>, me: Leg) {
    let mut ctx = RelayCtx::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let got = shared.leg(me).socket.recv_from(&mut buf).await;
        match got {
            Ok((n, src)) => shared.on_datagram(me, &buf[..n], src, Instant::now(), &mut ctx),
            Err(e) => {
                // e.g. ICMP errors surfaced on some platforms: not fatal, but do not spin.
                tracing::debug!(call_id = %shared.call_id, leg = ?me, error = %e, "rtp recv error");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

impl CallShared {
    /// Handles one datagram received on leg `me`'s socket. Synchronous: no lock is held
    /// across an await because there is none.
    pub(crate) fn on_datagram(
        &self,
        me: Leg,
        pkt: &[u8],
        src: SocketAddr,
        now: Instant,
        ctx: &mut RelayCtx,
    ) {
        let my = self.leg(me);
        let meters = &self.engine.meters;
        let Ok((h, range)) = rtp::parse(pkt) else {
            my.counters.malformed.fetch_add(1, Ordering::Relaxed);
            meters.malformed.increment(1);
            return;
        };
        let payload = &pkt[range];
        let (te_pt, accepted) = {
            let mut st = my.state.lock();
            // Only a stream of a payload type the SDP negotiated may move the leg's address:
            // a stray packet of another type must not be able to steal (or eavesdrop on) a leg.
            let pt = h.payload_type;
            let negotiated = pt == st.codec.payload_type() || st.te_pt == Some(pt) || pt == PT_CN;
            let accepted = match st.remote {
                Some(r) if r == src => true,
                _ if !st.latched => negotiated,
                _ => {
                    negotiated
                        && st
                            .last_rx
                            .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_IDLE)
                }
            };
            if accepted {
                if st.remote != Some(src) {
                    tracing::debug!(call_id = %self.call_id, leg = ?me, from = ?st.remote, to = %src, "rtp latched");
                    st.remote = Some(src);
                }
                st.latched = true;
                st.last_rx = Some(now);
            }
            (st.te_pt, accepted)
        };
        if !accepted {
            my.counters.dropped.fetch_add(1, Ordering::Relaxed);
            meters.dropped_unlatched.increment(1);
            return;
        }
        let pt = h.payload_type;
        let kind = if te_pt == Some(pt) {
            match dtmf::parse(payload) {
                Ok(ev) => {
                    if let Some(digit) = ctx.detector.on_packet(h.timestamp, &ev) {
                        tracing::debug!(call_id = %self.call_id, leg = ?me, %digit, "dtmf");
                        self.emit(MediaEvent::Dtmf { leg: me, digit });
                    }
                    Some(Kind::Dtmf)
                }
                Err(_) => {
                    my.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    meters.malformed.increment(1);
                    return;
                }
            }
        } else if let Some(c) = Codec::from_payload_type(pt) {
            Some(Kind::Audio(c))
        } else if pt == PT_CN {
            Some(Kind::Passthrough)
        } else {
            None
        };
        my.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        my.counters
            .bytes_in
            .fetch_add(pkt.len() as u64, Ordering::Relaxed);
        meters.packets_in.increment(1);
        if !ctx.heard {
            ctx.heard = true;
            self.emit(MediaEvent::FirstPacket { leg: me });
        }
        let Some(kind) = kind else {
            my.counters.dropped.fetch_add(1, Ordering::Relaxed);
            meters.dropped_unknown_pt.increment(1);
            return;
        };
        if let Kind::Audio(c) = kind {
            self.record(me, c, payload, now);
        }
        if self.bridged.load(Ordering::Acquire) {
            self.forward(me.other(), &h, kind, payload, now, ctx);
        }
    }

    /// Hands what `me` said to the recording, if one runs.
    fn record(&self, me: Leg, codec: Codec, payload: &[u8], now: Instant) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        if let Some(tap) = self.tap.lock().as_ref() {
            tap.push(me, codec, payload, now);
        }
    }

    /// Sends a packet received from the other leg to leg `to`, rewritten into `to`'s
    /// outbound stream.
    fn forward(
        &self,
        to: Leg,
        h: &RtpHeader,
        kind: Kind,
        payload: &[u8],
        now: Instant,
        ctx: &mut RelayCtx,
    ) {
        let leg = self.leg(to);
        let (dest, header, to_codec) = {
            let mut st = leg.state.lock();
            if st.held || st.play_gen != 0 {
                return;
            }
            let Some(dest) = st.remote else { return };
            let payload_type = match kind {
                Kind::Audio(_) => st.codec.payload_type(),
                Kind::Dtmf => match st.te_pt {
                    Some(pt) => pt,
                    None => return,
                },
                Kind::Passthrough => h.payload_type,
            };
            let (sequence, timestamp, marker) = st.out.stamp(
                Source::Relay(h.ssrc),
                h.sequence,
                h.timestamp,
                h.marker,
                now,
            );
            (
                dest,
                RtpHeader {
                    marker,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc: st.out.ssrc,
                },
                st.codec,
            )
        };
        rtp::write(&header, payload, &mut ctx.out);
        if let Kind::Audio(from) = kind {
            g711::transcode(from, to_codec, &mut ctx.out[HEADER_LEN..]);
        }
        leg.send(&ctx.out, dest, &self.engine);
    }
}

impl LegShared {
    /// Sends one packet to the leg without waiting: a full socket buffer drops it, as a
    /// router would; so does a closed serve gate (this node lost its cluster lease).
    pub(crate) fn send(&self, pkt: &[u8], dest: SocketAddr, engine: &EngineInner) {
        let meters = &engine.meters;
        if !engine.gate.is_open(Instant::now()) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            meters.dropped_gate_closed.increment(1);
            return;
        }
        match self.socket.try_send_to(pkt, dest) {
            Ok(n) => {
                self.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                meters.packets_out.increment(1);
            }
            Err(e) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    meters.dropped_send_full.increment(1);
                } else {
                    meters.dropped_send_error.increment(1);
                }
            }
        }
    }
}
