//! A browser's audio as an ordinary RTP stream.
//!
//! [`WebRtcBridge`] terminates one WebRTC peer connection with the `webrtc` crate (ICE with
//! host candidates only, DTLS-SRTP) and relays its audio, packet for packet, to a plain UDP
//! RTP socket that the switch talks to like any SIP phone's. Only G.711 is negotiated with the
//! browser (the one codec the SIP side uses, PCMU or PCMA, plus RFC 4733 telephone-event), so
//! nothing is transcoded: the relay only rewrites payload type, SSRC, sequence numbers and
//! timestamps so each side sees one continuous stream, also when the SIP side's stream
//! changes (a failover re-INVITE points it at another node).
//!
//! Key presses the agent makes on the page become RFC 4733 events towards the SIP side
//! ([`WebRtcBridge::send_dtmf`]); telephone-events either side sends are forwarded when both
//! negotiated them.
//!
//! The answer is complete (non-trickle ICE): the gateway waits for host candidate gathering,
//! which on a bound address takes milliseconds, and sends one SDP back.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, configure_rtcp_reports,
};

use crate::rtp::{self, RtpHeader};
use crate::{Codec, MediaError, dtmf};

#[cfg(test)]
mod tests;

/// RTP timestamp units in one 20 ms G.711 packet.
const SAMPLES_PER_PACKET: u32 = 160;
/// How long one generated key press lasts (RFC 4733 events, 8 kHz units): 100 ms.
const DTMF_DURATION: u16 = 800;
/// How long ICE candidate gathering may take before the answer is sent with what is there.
const GATHER_LIMIT: Duration = Duration::from_secs(3);

/// Where a bridge binds and what it advertises.
#[derive(Debug, Clone)]
pub struct WebRtcSettings {
    /// Address the ICE (browser-facing) UDP socket binds to; a wildcard binds one socket per
    /// interface (loopback excluded), a concrete address exactly one.
    pub bind_ip: IpAddr,
    /// Written in the host candidate instead of the bound address, when the browser reaches
    /// the node through a 1:1 NAT.
    pub advertised_ip: Option<IpAddr>,
    /// Address of the plain RTP socket facing the switch (the gateway's SIP side).
    pub rtp_ip: IpAddr,
    /// How long ICE and DTLS may take before [`WebRtcBridge::connected`] gives up.
    pub connect_timeout: Duration,
}

/// What a browser's SDP offer says about audio, as far as the bridge cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserOffer {
    /// The G.711 codecs offered, in the browser's order.
    pub codecs: Vec<Codec>,
    /// Payload type of `telephone-event/8000`, when offered.
    pub telephone_event_pt: Option<u8>,
    /// `a=fmtp` of that telephone-event, copied into our codec so the answer matches it.
    pub telephone_event_fmtp: String,
}

impl BrowserOffer {
    /// Reads the first `m=audio` section of a browser's offer.
    ///
    /// Errors ([`MediaError::WebRtc`] naming `session`): no audio section, or neither PCMU
    /// nor PCMA offered (the gateway does not transcode).
    pub fn parse(session: &str, sdp: &str) -> Result<BrowserOffer, MediaError> {
        let err = |detail: &str| MediaError::WebRtc {
            session: session.to_owned(),
            detail: detail.to_owned(),
        };
        let mut in_audio = false;
        let mut seen_audio = false;
        let mut formats: Vec<u8> = Vec::new();
        let mut names: Vec<(u8, String)> = Vec::new();
        let mut fmtps: Vec<(u8, String)> = Vec::new();
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                if seen_audio {
                    // Only the first audio section counts.
                    if in_audio {
                        break;
                    }
                    continue;
                }
                in_audio = m.starts_with("audio ");
                if in_audio {
                    seen_audio = true;
                    formats = m
                        .split_whitespace()
                        .skip(3)
                        .filter_map(|f| f.parse().ok())
                        .collect();
                }
                continue;
            }
            if !in_audio {
                continue;
            }
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, name)) = rest.split_once(' ')
                    && let Ok(pt) = pt.trim().parse::<u8>()
                {
                    names.push((pt, name.trim().to_ascii_lowercase()));
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:")
                && let Some((pt, params)) = rest.split_once(' ')
                && let Ok(pt) = pt.trim().parse::<u8>()
            {
                fmtps.push((pt, params.trim().to_owned()));
            }
        }
        if !seen_audio {
            return Err(err("the offer has no m=audio section"));
        }
        let name_of = |pt: u8| {
            names
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, n)| n.as_str())
        };
        let mut codecs = Vec::new();
        let mut telephone_event_pt = None;
        for &pt in &formats {
            match (pt, name_of(pt)) {
                (0, None) | (_, Some("pcmu/8000")) => codecs.push(Codec::Pcmu),
                (8, None) | (_, Some("pcma/8000")) => codecs.push(Codec::Pcma),
                (_, Some("telephone-event/8000")) if telephone_event_pt.is_none() => {
                    telephone_event_pt = Some(pt)
                }
                _ => {}
            }
        }
        codecs.dedup();
        if codecs.is_empty() {
            return Err(err(
                "the browser offered neither PCMU nor PCMA; the gateway relays G.711 only",
            ));
        }
        let telephone_event_fmtp = telephone_event_pt
            .and_then(|te| fmtps.iter().find(|(p, _)| *p == te))
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        Ok(BrowserOffer {
            codecs,
            telephone_event_pt,
            telephone_event_fmtp,
        })
    }
}

/// Where the peer connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// ICE and DTLS are in progress.
    Connecting,
    /// DTLS is up: media flows.
    Connected,
    /// ICE or DTLS failed, or the connection was closed: the session is over.
    Ended,
}

/// Packet counts of one bridge, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Packets relayed from the browser to the SIP side (audio and telephone-events).
    pub to_sip: u64,
    /// Packets relayed from the SIP side to the browser.
    pub to_browser: u64,
    /// RFC 4733 packets generated towards the SIP side by [`WebRtcBridge::send_dtmf`].
    pub dtmf_generated: u64,
    /// Packets dropped: unknown payload type, foreign source, no destination yet, on hold,
    /// or not accepted by the peer connection (before DTLS is up).
    pub dropped: u64,
}

/// The SIP side's stream as the bridge sends it: our SSRC, sequence and timestamp base.
#[derive(Debug)]
struct OutStream {
    /// Our SSRC towards the SIP side (constant for the bridge's life).
    ssrc: u32,
    /// Next sequence number.
    seq: u16,
    /// Browser SSRC the offset below was computed for.
    src_ssrc: Option<u32>,
    /// Added to the browser's timestamps.
    ts_offset: u32,
    /// Timestamp of the last packet sent (the next generated event starts after it).
    last_ts: u32,
}

/// Where the SIP side's media goes, learned from its SDP.
#[derive(Debug, Clone, Copy, Default)]
struct SipSide {
    /// RTP destination; `None` until known (or while the SIP side is on legacy hold).
    addr: Option<SocketAddr>,
    /// Its telephone-event payload type, when negotiated.
    telephone_event_pt: Option<u8>,
}

/// The state the relay tasks and the peer connection's event handler share. Holds no
/// reference to the peer connection itself, so the handler does not keep it alive.
struct Relay {
    /// Names the session in logs and errors.
    session: String,
    /// The one codec negotiated on both sides.
    codec: Codec,
    /// The plain RTP socket facing the switch.
    sock: Arc<UdpSocket>,
    /// Where to send towards the SIP side.
    sip: Mutex<SipSide>,
    /// The browser's telephone-event payload type, when it offered one.
    browser_te_pt: Option<u8>,
    /// Whether browser audio goes to the SIP side (off while the agent holds the call).
    sending: AtomicBool,
    /// Sequence and timestamp state towards the SIP side (forwarded and generated packets).
    out: Mutex<OutStream>,
    /// The track that carries SIP audio to the browser.
    track: Arc<TrackLocalStaticRTP>,
    /// SSRC of that track.
    browser_ssrc: u32,
    /// Connection state, watched by [`WebRtcBridge::connected`] and [`WebRtcBridge::ended`].
    state: watch::Sender<PeerState>,
    /// Set once ICE gathering is complete.
    gathered: watch::Sender<bool>,
    /// Stops the relay tasks.
    cancel: CancellationToken,
    /// Counters of [`BridgeStats`].
    to_sip: AtomicU64,
    /// See [`BridgeStats::to_browser`].
    to_browser: AtomicU64,
    /// See [`BridgeStats::dtmf_generated`].
    dtmf_generated: AtomicU64,
    /// See [`BridgeStats::dropped`].
    dropped: AtomicU64,
}

impl Relay {
    fn drop_packet(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Browser → SIP: one packet from the browser's track.
    async fn forward_to_sip(&self, pkt: &rtc::rtp::Packet, buf: &mut Vec<u8>) {
        let sip = *self.sip.lock();
        let Some(dest) = sip.addr else {
            return self.drop_packet();
        };
        if !self.sending.load(Ordering::Relaxed) {
            return self.drop_packet();
        }
        let h = &pkt.header;
        let pt = if h.payload_type == self.codec.payload_type() {
            self.codec.payload_type()
        } else if Some(h.payload_type) == self.browser_te_pt
            && let Some(te) = sip.telephone_event_pt
        {
            te
        } else {
            return self.drop_packet();
        };
        let header = {
            let mut out = self.out.lock();
            if out.src_ssrc != Some(h.ssrc) {
                // A new browser stream (or the first): continue our timeline after the last
                // packet sent, so the SIP side sees one stream.
                out.src_ssrc = Some(h.ssrc);
                out.ts_offset = out
                    .last_ts
                    .wrapping_add(SAMPLES_PER_PACKET)
                    .wrapping_sub(h.timestamp);
            }
            let header = RtpHeader {
                marker: h.marker,
                payload_type: pt,
                sequence: out.seq,
                timestamp: h.timestamp.wrapping_add(out.ts_offset),
                ssrc: out.ssrc,
            };
            out.seq = out.seq.wrapping_add(1);
            out.last_ts = header.timestamp;
            header
        };
        rtp::write(&header, &pkt.payload, buf);
        match self.sock.send_to(buf, dest).await {
            Ok(_) => {
                self.to_sip.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(session = %self.session, %dest, error = %e, "RTP to the SIP side not sent");
                self.drop_packet();
            }
        }
    }

    /// SIP → browser: reads the plain RTP socket until cancelled.
    async fn run_from_sip(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        // Rewriting state: the browser must see one SSRC with continuous numbering even when
        // the SIP side's stream changes (failover).
        let mut src_ssrc: Option<u32> = None;
        let mut seq_delta: u16 = rand::random();
        let mut ts_delta: u32 = rand::random();
        let mut last_seq: u16 = 0;
        let mut last_ts: u32 = 0;
        let mut started = false;
        loop {
            let received = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.sock.recv_from(&mut buf) => r,
            };
            let (n, from) = match received {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable surfaces here on some systems: keep going.
                    tracing::debug!(session = %self.session, error = %e, "RTP socket receive error");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let Ok((h, payload)) = rtp::parse(&buf[..n]) else {
                self.drop_packet();
                continue;
            };
            let sip = *self.sip.lock();
            if sip.addr.is_none_or(|a| a.ip() != from.ip()) {
                self.drop_packet();
                continue;
            }
            let pt = if h.payload_type == self.codec.payload_type() {
                self.codec.payload_type()
            } else if Some(h.payload_type) == sip.telephone_event_pt
                && let Some(te) = self.browser_te_pt
            {
                te
            } else {
                self.drop_packet();
                continue;
            };
            if src_ssrc != Some(h.ssrc) {
                if started {
                    seq_delta = last_seq.wrapping_add(1).wrapping_sub(h.sequence);
                    ts_delta = last_ts
                        .wrapping_add(SAMPLES_PER_PACKET)
                        .wrapping_sub(h.timestamp);
                }
                src_ssrc = Some(h.ssrc);
            }
            let seq = h.sequence.wrapping_add(seq_delta);
            let ts = h.timestamp.wrapping_add(ts_delta);
            // Keep the highest values seen (a late packet must not move them back).
            if !started || seq.wrapping_sub(last_seq) < 0x8000 {
                last_seq = seq;
                last_ts = ts;
            }
            started = true;
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: h.marker,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: self.browser_ssrc,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&buf[payload]),
            };
            match self.track.write_rtp(packet).await {
                Ok(()) => {
                    self.to_browser.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => self.drop_packet(),
            }
        }
    }

    /// Browser → SIP: reads one remote track until it ends or the bridge closes.
    async fn run_from_browser(self: Arc<Self>, track: Arc<dyn TrackRemote>) {
        let mut buf = Vec::with_capacity(1500);
        loop {
            let event = tokio::select! {
                _ = self.cancel.cancelled() => return,
                e = track.poll() => e,
            };
            match event {
                Some(TrackRemoteEvent::OnRtpPacket(pkt)) => {
                    self.forward_to_sip(&pkt, &mut buf).await
                }
                Some(TrackRemoteEvent::OnEnded) | None => return,
                Some(_) => {}
            }
        }
    }

    /// Sends one key press as RFC 4733 events: five updates 20 ms apart, then the end packet
    /// three times, all with the event's start timestamp.
    async fn generate_dtmf(self: Arc<Self>, event: u8, dest: SocketAddr, pt: u8) {
        let mut buf = Vec::with_capacity(64);
        let start_ts = {
            let out = self.out.lock();
            out.last_ts.wrapping_add(SAMPLES_PER_PACKET)
        };
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let steps = DTMF_DURATION / SAMPLES_PER_PACKET as u16;
        for i in 1..=steps + 3 {
            tick.tick().await;
            if self.cancel.is_cancelled() {
                return;
            }
            let end = i > steps;
            let ev = dtmf::DtmfEvent {
                event,
                end,
                volume: 10,
                duration: (i.min(steps)) * SAMPLES_PER_PACKET as u16,
            };
            let header = {
                let mut out = self.out.lock();
                let h = RtpHeader {
                    marker: i == 1,
                    payload_type: pt,
                    sequence: out.seq,
                    timestamp: start_ts,
                    ssrc: out.ssrc,
                };
                out.seq = out.seq.wrapping_add(1);
                h
            };
            rtp::write(&header, &dtmf::write(&ev), &mut buf);
            if self.sock.send_to(&buf, dest).await.is_ok() {
                self.dtmf_generated.fetch_add(1, Ordering::Relaxed);
            } else {
                self.drop_packet();
            }
        }
        // Audio after the event continues the timeline past it.
        let mut out = self.out.lock();
        let after = start_ts.wrapping_add(u32::from(DTMF_DURATION));
        if after.wrapping_sub(out.last_ts) < 0x8000_0000 {
            out.ts_offset = out.ts_offset.wrapping_add(after.wrapping_sub(out.last_ts));
            out.last_ts = after;
        }
    }
}

/// Receives the peer connection's events.
struct Handler {
    /// Shared with the bridge.
    relay: Arc<Relay>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.relay.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(session = %self.relay.session, ?state, "WebRTC connection state");
        let next = match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => PeerState::Ended,
            _ => return,
        };
        self.relay.state.send_if_modified(|s| {
            // Ended is final.
            let changed = *s != next && *s != PeerState::Ended;
            if changed {
                *s = next;
            }
            changed
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(self.relay.clone().run_from_browser(track));
    }
}

/// One browser's audio bridged to a plain RTP socket. Closing (or dropping) it ends the
/// peer connection and the relay tasks.
pub struct WebRtcBridge {
    /// The peer connection.
    pc: Arc<dyn PeerConnection>,
    /// Shared with the tasks and the event handler.
    relay: Arc<Relay>,
    /// Our SDP answer, to send to the browser.
    answer: String,
}

impl std::fmt::Debug for WebRtcBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcBridge")
            .field("session", &self.relay.session)
            .field("codec", &self.relay.codec)
            .field("rtp_addr", &self.rtp_addr())
            .finish()
    }
}

/// The `webrtc` codec description of a G.711 codec.
fn rtc_codec(codec: Codec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: match codec {
            Codec::Pcmu => webrtc_mime::PCMU,
            Codec::Pcma => webrtc_mime::PCMA,
        }
        .to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// MIME types as the `rtc` media engine names them.
mod webrtc_mime {
    pub(super) use rtc::peer_connection::configuration::media_engine::{
        MIME_TYPE_PCMA as PCMA, MIME_TYPE_PCMU as PCMU,
        MIME_TYPE_TELEPHONE_EVENT as TELEPHONE_EVENT,
    };
}

impl WebRtcBridge {
    /// Answers a browser's SDP `offer` with `codec` only (plus telephone-event when the
    /// browser offered it), binds the ICE socket and the plain RTP socket, and starts relaying
    /// as soon as media flows. The returned bridge's [`answer_sdp`](Self::answer_sdp) goes back
    /// to the browser; wait for [`connected`](Self::connected) before telling the SIP side
    /// media is ready.
    ///
    /// Errors ([`MediaError::WebRtc`] naming `session`): an offer without PCMU/PCMA or that
    /// does not offer `codec`, a socket that cannot be bound, or the `webrtc` crate refusing
    /// the offer.
    pub async fn accept(
        session: &str,
        settings: &WebRtcSettings,
        offer: &str,
        codec: Codec,
    ) -> Result<WebRtcBridge, MediaError> {
        let err = |detail: String| MediaError::WebRtc {
            session: session.to_owned(),
            detail,
        };
        let parsed = BrowserOffer::parse(session, offer)?;
        if !parsed.codecs.contains(&codec) {
            return Err(err(format!(
                "the browser did not offer {}, the codec of the call",
                codec.name()
            )));
        }
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: rtc_codec(codec),
                    payload_type: codec.payload_type(),
                },
                RtpCodecKind::Audio,
            )
            .map_err(|e| err(format!("cannot register {}: {e}", codec.name())))?;
        if let Some(te) = parsed.telephone_event_pt {
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: webrtc_mime::TELEPHONE_EVENT.to_owned(),
                            clock_rate: 8000,
                            channels: 0,
                            sdp_fmtp_line: parsed.telephone_event_fmtp.clone(),
                            rtcp_feedback: vec![],
                        },
                        payload_type: te,
                    },
                    RtpCodecKind::Audio,
                )
                .map_err(|e| err(format!("cannot register telephone-event: {e}")))?;
        }
        let registry = configure_rtcp_reports(Registry::new());
        let mut setting = SettingEngineBuilder::new();
        if let Some(ip) = settings.advertised_ip {
            setting = setting.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }

        let sock = std::net::UdpSocket::bind(SocketAddr::new(settings.rtp_ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| {
                err(format!(
                    "cannot bind an RTP socket on {}: {e}",
                    settings.rtp_ip
                ))
            })?;
        let sock = UdpSocket::from_std(sock)
            .map_err(|e| err(format!("cannot register the RTP socket with tokio: {e}")))?;

        let browser_ssrc: u32 = rand::random();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("lingxi-{session}"),
            format!("lingxi-audio-{session}"),
            "lingxi-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(browser_ssrc),
                    ..Default::default()
                },
                active: true,
                codec: rtc_codec(codec),
                ..Default::default()
            }],
        )));
        let (state, _) = watch::channel(PeerState::Connecting);
        let (gathered, _) = watch::channel(false);
        let relay = Arc::new(Relay {
            session: session.to_owned(),
            codec,
            sock: Arc::new(sock),
            sip: Mutex::new(SipSide::default()),
            browser_te_pt: parsed.telephone_event_pt,
            sending: AtomicBool::new(true),
            out: Mutex::new(OutStream {
                ssrc: rand::random(),
                seq: rand::random(),
                src_ssrc: None,
                ts_offset: 0,
                last_ts: rand::random(),
            }),
            track: track.clone(),
            browser_ssrc,
            state,
            gathered,
            cancel: CancellationToken::new(),
            to_sip: AtomicU64::new(0),
            to_browser: AtomicU64::new(0),
            dtmf_generated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting.build())
            .with_handler(Arc::new(Handler {
                relay: relay.clone(),
            }))
            .with_udp_addrs(vec![SocketAddr::new(settings.bind_ip, 0)])
            .build()
            .await
            .map_err(|e| err(format!("cannot create the peer connection: {e}")))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let mut bridge = WebRtcBridge {
            pc,
            relay: relay.clone(),
            answer: String::new(),
        };
        // From here on, dropping `bridge` closes the connection if anything fails.
        bridge.answer = bridge.negotiate(offer, track).await?;
        tokio::spawn(relay.run_from_sip());
        Ok(bridge)
    }

    /// Offer in, answer out, waiting (bounded) for host candidates.
    async fn negotiate(
        &self,
        offer: &str,
        track: Arc<TrackLocalStaticRTP>,
    ) -> Result<String, MediaError> {
        let err = |detail: String| MediaError::WebRtc {
            session: self.relay.session.clone(),
            detail,
        };
        self.pc
            .add_track(track as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| err(format!("cannot add the audio track: {e}")))?;
        let offer = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| err(format!("unreadable SDP offer: {e}")))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| err(format!("offer refused: {e}")))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| err(format!("cannot create an answer: {e}")))?;
        let mut gathered = self.relay.gathered.subscribe();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| err(format!("cannot apply our answer: {e}")))?;
        let _ = tokio::time::timeout(GATHER_LIMIT, gathered.wait_for(|g| *g)).await;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| err("no local description after answering".to_owned()))?;
        if !local.sdp.contains("a=candidate") {
            return Err(err(
                "no ICE host candidate could be gathered (check web.rtc_ip)".to_owned(),
            ));
        }
        Ok(local.sdp)
    }

    /// The SDP answer for the browser.
    pub fn answer_sdp(&self) -> &str {
        &self.answer
    }

    /// The G.711 codec both sides use.
    pub fn codec(&self) -> Codec {
        self.relay.codec
    }

    /// The plain RTP socket's address: what the SIP side's SDP must name.
    pub fn rtp_addr(&self) -> SocketAddr {
        self.relay
            .sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
    }

    /// Whether the browser offered telephone-event (so events can be relayed to it).
    pub fn browser_telephone_event(&self) -> Option<u8> {
        self.relay.browser_te_pt
    }

    /// The connection's state now.
    pub fn state(&self) -> PeerState {
        *self.relay.state.borrow()
    }

    /// Waits until DTLS is up. Errors when the connection fails or `timeout` passes first.
    pub async fn connected(&self, timeout: Duration) -> Result<(), MediaError> {
        let mut rx = self.relay.state.subscribe();
        let outcome =
            tokio::time::timeout(timeout, rx.wait_for(|s| *s != PeerState::Connecting)).await;
        let err = |detail: &str| MediaError::WebRtc {
            session: self.relay.session.clone(),
            detail: detail.to_owned(),
        };
        match outcome {
            Ok(Ok(s)) if *s == PeerState::Connected => Ok(()),
            Ok(_) => Err(err("ICE/DTLS failed before media could flow")),
            Err(_) => Err(err(&format!(
                "ICE/DTLS not connected within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Resolves when the connection has failed or closed.
    pub async fn ended(&self) {
        let mut rx = self.relay.state.subscribe();
        let _ = rx.wait_for(|s| *s == PeerState::Ended).await;
    }

    /// Points the SIP side: where its RTP goes (`None` stops sending, e.g. legacy hold) and
    /// its telephone-event payload type. Called again after a re-INVITE (failover).
    pub fn set_remote(&self, addr: Option<SocketAddr>, telephone_event_pt: Option<u8>) {
        *self.relay.sip.lock() = SipSide {
            addr: addr.filter(|a| !a.ip().is_unspecified() && a.port() != 0),
            telephone_event_pt,
        };
    }

    /// Whether the browser's audio is relayed to the SIP side (off while the agent holds).
    pub fn set_sending(&self, on: bool) {
        self.relay.sending.store(on, Ordering::Relaxed);
    }

    /// Sends a key press (`0-9 * # A-D`) to the SIP side as RFC 4733 events (100 ms).
    ///
    /// Errors: not a DTMF key, no SIP destination yet, or the SIP side did not negotiate
    /// telephone-event.
    pub fn send_dtmf(&self, digit: char) -> Result<(), MediaError> {
        let err = |detail: String| MediaError::WebRtc {
            session: self.relay.session.clone(),
            detail,
        };
        let event = dtmf::event_code(digit)
            .ok_or_else(|| err(format!("{digit:?} is not a DTMF key (0-9, *, #, A-D)")))?;
        let sip = *self.relay.sip.lock();
        let dest = sip
            .addr
            .ok_or_else(|| err("no SIP media destination yet".to_owned()))?;
        let pt = sip
            .telephone_event_pt
            .ok_or_else(|| err("the SIP side did not negotiate telephone-event".to_owned()))?;
        tokio::spawn(self.relay.clone().generate_dtmf(event, dest, pt));
        Ok(())
    }

    /// Packet counts so far.
    pub fn stats(&self) -> BridgeStats {
        let r = &self.relay;
        BridgeStats {
            to_sip: r.to_sip.load(Ordering::Relaxed),
            to_browser: r.to_browser.load(Ordering::Relaxed),
            dtmf_generated: r.dtmf_generated.load(Ordering::Relaxed),
            dropped: r.dropped.load(Ordering::Relaxed),
        }
    }

    /// Ends the peer connection and the relay tasks.
    pub async fn close(&self) {
        self.relay.cancel.cancel();
        self.relay.state.send_replace(PeerState::Ended);
        if let Err(e) = self.pc.close().await {
            tracing::debug!(session = %self.relay.session, error = %e, "closing the peer connection");
        }
    }
}

impl Drop for WebRtcBridge {
    fn drop(&mut self) {
        if self.relay.cancel.is_cancelled() {
            return;
        }
        self.relay.cancel.cancel();
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}
