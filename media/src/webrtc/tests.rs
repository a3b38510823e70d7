//! The bridge against a second `webrtc` peer playing the browser: offer/answer, DTLS up on
//! loopback, audio both ways with rewritten headers, generated DTMF, failover re-pointing.

use super::*;
use std::collections::HashSet;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

fn settings() -> WebRtcSettings {
    WebRtcSettings {
        bind_ip: IpAddr::from([127, 0, 0, 1]),
        advertised_ip: None,
        rtp_ip: IpAddr::from([127, 0, 0, 1]),
        connect_timeout: WAIT,
    }
}

/// The browser's side: reports gathering and received packets.
struct BrowserHandler {
    gathered: watch::Sender<bool>,
    packets: mpsc::UnboundedSender<rtc::rtp::Packet>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for BrowserHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.packets.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    let _ = tx.send(p);
                }
            }
        });
    }
}

/// A fake browser: a `webrtc` peer offering PCMU/PCMA and telephone-event/8000 at 126.
struct FakeBrowser {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    packets: mpsc::UnboundedReceiver<rtc::rtp::Packet>,
    gathered: watch::Receiver<bool>,
}

async fn fake_browser() -> FakeBrowser {
    let mut me = MediaEngine::default();
    for (codec, pt) in [(Codec::Pcmu, 0u8), (Codec::Pcma, 8)] {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: rtc_codec(codec),
                payload_type: pt,
            },
            RtpCodecKind::Audio,
        )
        .unwrap();
    }
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: webrtc_mime::TELEPHONE_EVENT.to_owned(),
                clock_rate: 8000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            payload_type: 126,
        },
        RtpCodecKind::Audio,
    )
    .unwrap();
    let (gtx, grx) = watch::channel(false);
    let (ptx, prx) = mpsc::unbounded_channel();
    let ssrc = 0x5EED_0001;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "browser".into(),
        "browser-audio".into(),
        "mic".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: rtc_codec(Codec::Pcmu),
            ..Default::default()
        }],
    )));
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_handler(Arc::new(BrowserHandler {
            gathered: gtx,
            packets: ptx,
        }))
        .with_udp_addrs(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    FakeBrowser {
        pc,
        track,
        ssrc,
        packets: prx,
        gathered: grx,
    }
}

impl FakeBrowser {
    async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(WAIT, self.gathered.wait_for(|g| *g)).await;
        self.pc.local_description().await.unwrap().sdp
    }

    async fn send(&self, seq: u16, ts: u32, pt: u8, payload: &[u8]) {
        let p = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        self.track.write_rtp(p).await.unwrap();
    }
}

/// A plain RTP "switch" socket.
async fn switch_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv_rtp(sock: &UdpSocket) -> (RtpHeader, Vec<u8>) {
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("RTP at the switch in time")
        .unwrap();
    let (h, range) = rtp::parse(&buf[..n]).unwrap();
    (h, buf[range].to_vec())
}

#[test]
fn offer_parsing_finds_g711_and_telephone_event() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
               m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 126\r\n\
               a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
               a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-15\r\n";
    let o = BrowserOffer::parse("s1", sdp).unwrap();
    assert_eq!(o.codecs, vec![Codec::Pcmu, Codec::Pcma]);
    assert_eq!(o.telephone_event_pt, Some(126));
    assert_eq!(o.telephone_event_fmtp, "0-15");

    let opus_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let e = BrowserOffer::parse("s2", opus_only)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s2") && e.contains("PCMU"), "{e}");
    let e = BrowserOffer::parse("s3", "v=0\r\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("m=audio"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_both_ways_dtmf_and_repointing() {
    let mut browser = fake_browser().await;
    let offer = browser.offer().await;
    let bridge = WebRtcBridge::accept("t1", &settings(), &offer, Codec::Pcmu)
        .await
        .expect("bridge answers");
    assert!(
        bridge.answer_sdp().contains("PCMU"),
        "{}",
        bridge.answer_sdp()
    );
    assert!(!bridge.answer_sdp().contains("PCMA"), "one codec only");
    browser
        .pc
        .set_remote_description(RTCSessionDescription::answer(bridge.answer_sdp().into()).unwrap())
        .await
        .unwrap();
    bridge.connected(WAIT).await.expect("DTLS up");

    let switch = switch_socket().await;
    bridge.set_remote(Some(switch.local_addr().unwrap()), Some(101));

    // Browser → switch: PCMU arrives with our SSRC, consecutive sequence numbers.
    let mut seen = Vec::new();
    for i in 0..5u16 {
        browser
            .send(1000 + i, 5000 + u32::from(i) * 160, 0, &[0xAA; 160])
            .await;
    }
    for _ in 0..3 {
        let (h, payload) = recv_rtp(&switch).await;
        assert_eq!(h.payload_type, 0);
        assert_eq!(payload.len(), 160);
        seen.push(h);
    }
    assert!(
        seen.iter()
            .all(|h| h.ssrc == seen[0].ssrc && h.ssrc != browser.ssrc)
    );
    assert_eq!(seen[1].sequence, seen[0].sequence.wrapping_add(1));
    assert_eq!(seen[1].timestamp, seen[0].timestamp.wrapping_add(160));

    // Switch → browser: a stream, then another SSRC (failover) continues seamlessly.
    let to = bridge.rtp_addr();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for (ssrc, base) in [(0x1111_1111u32, 40_000u16), (0x2222_2222, 7)] {
        for i in 0..10u16 {
            let h = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: base + i,
                timestamp: u32::from(base + i) * 160,
                ssrc,
            };
            rtp::write(&h, &[0x55; 160], &mut buf);
            switch.send_to(&buf, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while got.len() < 12 {
        let p = tokio::time::timeout(WAIT, browser.packets.recv())
            .await
            .expect("RTP at the browser in time")
            .unwrap();
        got.push(p);
    }
    let ssrcs: HashSet<u32> = got.iter().map(|p| p.header.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one stream to the browser: {ssrcs:?}");
    assert!(got.iter().all(|p| p.header.payload_type == 0));
    for w in got.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1),
            "continuous sequence across the switch's SSRC change"
        );
    }

    // A key press becomes RFC 4733 events on payload type 101.
    bridge.send_dtmf('5').unwrap();
    let mut events = 0;
    while events < 8 {
        let (h, payload) = recv_rtp(&switch).await;
        if h.payload_type == 101 {
            let ev = dtmf::parse(&payload).unwrap();
            assert_eq!(ev.event, 5);
            events += 1;
        }
    }
    assert!(bridge.send_dtmf('x').is_err());
    assert!(bridge.stats().to_sip >= 3 && bridge.stats().to_browser >= 12);

    bridge.close().await;
    assert_eq!(bridge.state(), PeerState::Ended);
    browser.pc.close().await.unwrap();
}
