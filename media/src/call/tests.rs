//! End-to-end tests of a call's media over real UDP sockets on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::*;
use crate::rtp::RtpHeader;
use crate::{MediaEngine, PcmClip, dtmf, g711, rtp};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(5);

fn engine(min: u16, max: u16) -> MediaEngine {
    let cfg = lingxi_config::MediaSection {
        rtp_ip: LOCAL,
        rtp_port_min: min,
        rtp_port_max: max,
        ..Default::default()
    };
    MediaEngine::new(&cfg).unwrap()
}

/// A fake phone: one socket, sends and receives RTP.
struct Phone {
    sock: UdpSocket,
    buf: Vec<u8>,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

impl Phone {
    async fn new(ssrc: u32) -> Phone {
        Phone {
            sock: UdpSocket::bind((LOCAL, 0)).await.unwrap(),
            buf: Vec::new(),
            seq: 100,
            ts: 1000,
            ssrc,
        }
    }
    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    async fn send(&mut self, to: SocketAddr, pt: u8, payload: &[u8]) {
        let h = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        rtp::write(&h, payload, &mut self.buf);
        self.sock.send_to(&self.buf, to).await.unwrap();
    }
    async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).await.unwrap();
    }
    async fn recv(&self, wait: Duration) -> Option<(RtpHeader, Vec<u8>)> {
        let mut b = [0u8; 2048];
        let (n, _) = timeout(wait, self.sock.recv_from(&mut b))
            .await
            .ok()?
            .ok()?;
        let (h, r) = rtp::parse(&b[..n]).ok()?;
        Some((h, b[r].to_vec()))
    }
    /// Receives packets until `n` arrived or the deadline passed.
    async fn recv_n(&self, n: usize, deadline: Duration) -> Vec<(RtpHeader, Vec<u8>)> {
        let end = tokio::time::Instant::now() + deadline;
        let mut got = Vec::new();
        while got.len() < n {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.recv(left).await {
                Some(p) => got.push(p),
                None => break,
            }
        }
        got
    }
    async fn drain(&self) {
        while self.recv(Duration::from_millis(50)).await.is_some() {}
    }
}

fn assert_continuous(pkts: &[(RtpHeader, Vec<u8>)]) {
    let ssrc = pkts[0].0.ssrc;
    for w in pkts.windows(2) {
        assert_eq!(w[1].0.ssrc, ssrc, "one SSRC per leg");
        assert_eq!(
            w[1].0.sequence,
            w[0].0.sequence.wrapping_add(1),
            "continuous seq"
        );
        let dts = w[1].0.timestamp.wrapping_sub(w[0].0.timestamp);
        assert!(dts > 0 && dts < 8000 * 5, "ts moves forward: {dts}");
    }
}

async fn next_event(
    rx: &mut UnboundedReceiver<MediaEvent>,
    want: impl Fn(&MediaEvent) -> bool,
) -> MediaEvent {
    timeout(DEADLINE, async {
        loop {
            let ev = rx.recv().await.expect("events open");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_forwards_both_ways_with_rewrite_transcoding_and_dtmf() {
    let eng = engine(0, 0);
    let mut call = eng.allocate("c-bridge").await.unwrap();
    assert_eq!(eng.active_calls(), 1);
    let mut events = call.take_events();
    let mut a = Phone::new(0xAAAA).await;
    let mut b = Phone::new(0xBBBB).await;
    call.set_remote(Leg::A, a.addr(), Codec::Pcmu, Some(101));
    call.set_remote(Leg::B, b.addr(), Codec::Pcma, Some(96));
    assert_eq!(call.local_addr(Leg::A).ip(), LOCAL);
    call.bridge();
    let (la, lb) = (call.local_addr(Leg::A), call.local_addr(Leg::B));
    // B speaks first so both legs latch, then A.
    for _ in 0..20 {
        b.send(lb, 8, &[g711::alaw_encode(-3000); 160]).await;
        a.send(la, 0, &[g711::ulaw_encode(1000); 160]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_b = b.recv_n(20, DEADLINE).await;
    let at_a = a.recv_n(20, DEADLINE).await;
    assert!(
        at_b.len() >= 15 && at_a.len() >= 15,
        "{} {}",
        at_b.len(),
        at_a.len()
    );
    for (h, p) in &at_b {
        assert_eq!(h.payload_type, 8);
        assert_ne!(h.ssrc, 0xAAAA);
        assert_eq!(p.len(), 160);
        let v = g711::alaw_decode(p[0]) as i32;
        assert!((v - 1000).abs() < 100, "transcoded to A-law: {v}");
    }
    for (h, p) in &at_a {
        assert_eq!(h.payload_type, 0);
        assert_ne!(h.ssrc, 0xBBBB);
        let v = g711::ulaw_decode(p[0]) as i32;
        assert!((v + 3000).abs() < 200, "transcoded to µ-law: {v}");
    }
    assert_continuous(&at_b);
    assert_continuous(&at_a);
    // A presses 5: start + 3 end retransmits, all forwarded with B's PT; reported once.
    for end in [false, false, true, true, true] {
        let ev = dtmf::DtmfEvent {
            event: 5,
            end,
            volume: 10,
            duration: 320,
        };
        let h = RtpHeader {
            marker: !end,
            payload_type: 101,
            sequence: a.seq,
            timestamp: 77_000,
            ssrc: a.ssrc,
        };
        a.seq += 1;
        rtp::write(&h, &dtmf::write(&ev), &mut a.buf);
        a.sock.send_to(&a.buf, la).await.unwrap();
    }
    let dt = b.recv_n(5, DEADLINE).await;
    assert!(dt.len() >= 3, "{}", dt.len());
    assert!(
        dt.iter()
            .all(|(h, p)| h.payload_type == 96 && p[0] == 5 && h.ssrc == at_b[0].0.ssrc)
    );
    let ev = next_event(&mut events, |e| matches!(e, MediaEvent::Dtmf { .. })).await;
    assert_eq!(
        ev,
        MediaEvent::Dtmf {
            leg: Leg::A,
            digit: '5'
        }
    );
    let s = call.stats();
    assert!(s.a.packets_in >= 20 && s.b.packets_out >= 15, "{s:?}");
    assert_eq!(s.a.remote, Some(a.addr()));
    // Only one Dtmf event.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut dtmf_count = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, MediaEvent::Dtmf { .. }) {
            dtmf_count += 1;
        }
    }
    assert_eq!(dtmf_count, 0);
    // take_events twice: a closed receiver
    assert!(call.take_events().recv().await.is_none());
    drop(call);
    assert_eq!(eng.active_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_streams_frames_then_bridge_keeps_the_stream() {
    let eng = engine(0, 0);
    let mut call = eng.allocate("c-play").await.unwrap();
    let mut events = call.take_events();
    let a = Phone::new(1).await;
    let mut b = Phone::new(2).await;
    call.set_remote(Leg::A, a.addr(), Codec::Pcma, None);
    call.set_remote(Leg::B, b.addr(), Codec::Pcmu, None);
    call.play(Leg::A, eng.hold_music(), true);
    let t0 = tokio::time::Instant::now();
    let music = a.recv_n(50, DEADLINE).await;
    assert!(music.len() >= 50, "{}", music.len());
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "paced, not a burst: {:?}",
        t0.elapsed()
    );
    assert!(
        music
            .iter()
            .all(|(h, p)| h.payload_type == 8 && p.len() == 160)
    );
    assert!(
        music.iter().any(|(_, p)| p
            .iter()
            .any(|&x| g711::alaw_decode(x).unsigned_abs() > 1000)),
        "audible"
    );
    assert_continuous(&music);
    // bridge: playback stops, B's audio arrives on the same stream
    call.bridge();
    for _ in 0..10 {
        b.send(call.local_addr(Leg::B), 0, &[g711::ulaw_encode(500); 160])
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = a.recv_n(60, Duration::from_secs(2)).await;
    let relayed: Vec<_> = after
        .iter()
        .filter(|(_, p)| {
            p.iter()
                .all(|&x| (g711::alaw_decode(x) as i32 - 500).abs() < 60)
        })
        .collect();
    assert!(relayed.len() >= 8, "{}", relayed.len());
    assert!(
        after.iter().all(|(h, _)| h.ssrc == music[0].0.ssrc),
        "same SSRC across the switch"
    );
    let mut seqs: Vec<u16> = music
        .iter()
        .chain(after.iter())
        .map(|(h, _)| h.sequence.wrapping_sub(music[0].0.sequence))
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), music.len() + after.len(), "no sequence reused");
    // a short non-looped clip ends with an event
    call.unbridge();
    let clip = Arc::new(PcmClip::from_samples(vec![2000; 800]));
    call.play(Leg::B, Prompt::Clip(clip), false);
    let ev = next_event(&mut events, |e| {
        matches!(e, MediaEvent::PlaybackEnded { .. })
    })
    .await;
    assert_eq!(ev, MediaEvent::PlaybackEnded { leg: Leg::B });
    let got = b.recv_n(5, DEADLINE).await;
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|(h, _)| h.payload_type == 0));
    // stop_play: no more packets
    call.play(Leg::A, Prompt::HoldMusic, true);
    a.recv_n(3, DEADLINE).await;
    call.stop_play(Leg::A);
    a.drain().await;
    assert!(a.recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_latching() {
    let eng = engine(0, 0);
    let call = eng.allocate("c-hold").await.unwrap();
    let mut a = Phone::new(1).await;
    let mut b = Phone::new(2).await;
    // SDP says a port nobody listens on; the phone really sends from elsewhere.
    call.set_remote(Leg::A, SocketAddr::new(LOCAL, 9), Codec::Pcmu, None);
    call.set_remote(Leg::B, b.addr(), Codec::Pcmu, None);
    call.bridge();
    a.send(call.local_addr(Leg::A), 0, &[1; 160]).await;
    assert!(b.recv(DEADLINE).await.is_some());
    b.send(call.local_addr(Leg::B), 0, &[2; 160]).await;
    let (_, p) = a.recv(DEADLINE).await.expect("latched to the real source");
    assert_eq!(p, vec![2; 160]);
    // a third party cannot hijack the latched, active stream
    let mut evil = Phone::new(3).await;
    evil.send(call.local_addr(Leg::A), 0, &[9; 160]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call.stats().a.remote, Some(a.addr()));
    assert!(call.stats().a.dropped >= 1);
    b.drain().await;
    // hold A: nothing is sent to it
    call.set_hold(Leg::A, true);
    for _ in 0..5 {
        b.send(call.local_addr(Leg::B), 0, &[3; 160]).await;
    }
    assert!(a.recv(Duration::from_millis(300)).await.is_none());
    call.set_hold(Leg::A, false);
    b.send(call.local_addr(Leg::B), 0, &[4; 160]).await;
    assert_eq!(a.recv(DEADLINE).await.unwrap().1, vec![4; 160]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_packets_are_counted_by_reason() {
    let metrics = crate::test_metrics::TestRecorder::default();
    let eng = metrics::with_local_recorder(&metrics, || engine(0, 0));
    let call = eng.allocate("c-drop").await.unwrap();
    assert_eq!(metrics.gauge("lingxi_media_sessions"), 1.0);
    let mut a = Phone::new(1).await;
    call.set_remote(Leg::A, a.addr(), Codec::Pcmu, None);
    a.send(call.local_addr(Leg::A), 0, &[1; 160]).await;
    // a stranger on the latched leg, then a payload type nobody negotiated
    let mut evil = Phone::new(3).await;
    evil.send(call.local_addr(Leg::A), 0, &[9; 160]).await;
    a.send(call.local_addr(Leg::A), 99, &[1; 160]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while call.stats().a.dropped < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reason = |r: &str| metrics.counter(&format!("lingxi_rtp_dropped_total{{reason={r}}}"));
    assert_eq!(reason("unlatched_source"), 1);
    assert_eq!(reason("unknown_payload"), 1);
    assert_eq!(metrics.counter("lingxi_rtp_packets_in_total"), 2);
    let dir = tempfile::tempdir().unwrap();
    call.start_recording(dir.path().join("r.wav")).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while metrics.gauge("lingxi_recordings_active") != 1.0 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.gauge("lingxi_recordings_active"), 1.0);
    call.stop_recording();
    assert_eq!(metrics.gauge("lingxi_recordings_active"), 0.0);
    drop(call);
    assert_eq!(metrics.gauge("lingxi_media_sessions"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_counted_and_relay_keeps_working() {
    let eng = engine(0, 0);
    let call = eng.allocate("c-bad").await.unwrap();
    let mut a = Phone::new(1).await;
    let b = Phone::new(2).await;
    call.set_remote(Leg::B, b.addr(), Codec::Pcmu, None);
    call.bridge();
    let la = call.local_addr(Leg::A);
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x80",
        b"hello world, not rtp",
        &[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0xA0; 12],
    ];
    for g in garbage {
        a.send_raw(la, g).await;
    }
    for _ in 0..5 {
        a.send(la, 0, &[7; 160]).await;
    }
    let got = b.recv_n(5, DEADLINE).await;
    assert_eq!(got.len(), 5);
    let s = call.stats();
    assert!(s.a.malformed >= 4, "{s:?}");
    assert_eq!(s.a.packets_in, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_writes_stereo_wav_with_both_voices() {
    let eng = engine(0, 0);
    let call = eng.allocate("c-rec").await.unwrap();
    let mut a = Phone::new(1).await;
    let mut b = Phone::new(2).await;
    call.set_remote(Leg::A, a.addr(), Codec::Pcmu, None);
    call.set_remote(Leg::B, b.addr(), Codec::Pcma, None);
    call.bridge();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("2024/01/c-rec.wav");
    call.start_recording(path.clone()).unwrap();
    assert!(matches!(
        call.start_recording(path.clone()),
        Err(MediaError::AlreadyRecording { .. })
    ));
    for _ in 0..50 {
        a.send(call.local_addr(Leg::A), 0, &[g711::ulaw_encode(6000); 160])
            .await;
        b.send(call.local_addr(Leg::B), 8, &[g711::alaw_encode(-6000); 160])
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call.stop_recording(), Some(path.clone()));
    assert_eq!(call.stop_recording(), None);
    let r = hound::WavReader::open(&path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let s: Vec<i16> = r.into_samples::<i16>().map(Result::unwrap).collect();
    let frames = s.len() / 2;
    assert!(frames >= 6000, "{frames}");
    let left = s.chunks(2).filter(|f| f[0] > 5000).count();
    let right = s.chunks(2).filter(|f| f[1] < -5000).count();
    assert!(left >= 6000 && right >= 6000, "{left} {right}");
}

/// Recording writer threads alive in the whole test process (other tests' engines too).
fn recorder_threads_in_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("lingxi-rec"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_recordings_share_the_writer_pool() {
    const CALLS: usize = 200;
    const PACKETS: usize = 10;
    let eng = engine(0, 0);
    assert_eq!(
        eng.writer_threads(),
        0,
        "writers start with the first recording"
    );
    let dir = tempfile::tempdir().unwrap();
    // Two phones serve every call: each leg latches to its phone's address.
    let mut a = Phone::new(1).await;
    let mut b = Phone::new(2).await;
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let call = eng.allocate(&format!("rec-{i}")).await.unwrap();
        call.set_remote(Leg::A, a.addr(), Codec::Pcmu, None);
        call.set_remote(Leg::B, b.addr(), Codec::Pcma, None);
        let path = dir.path().join(format!("d{}/rec-{i}.wav", i % 3));
        call.start_recording(path.clone()).unwrap();
        calls.push((call, path));
    }
    let threads = eng.writer_threads();
    assert!(
        (1..=crate::recorder::WRITERS).contains(&threads),
        "{threads} writer threads for {CALLS} recordings"
    );
    // Other tests' engines may have writers too, but nowhere near one per recording.
    let in_process = recorder_threads_in_process();
    assert!(in_process < CALLS / 10, "{in_process} recorder threads");
    for _ in 0..PACKETS {
        for (call, _) in &calls {
            a.send(call.local_addr(Leg::A), 0, &[g711::ulaw_encode(6000); 160])
                .await;
            b.send(call.local_addr(Leg::B), 8, &[g711::alaw_encode(-6000); 160])
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the relays take the last packets off the sockets.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while calls.iter().any(|(c, _)| {
        let s = c.stats();
        s.a.packets_in < PACKETS as u64 || s.b.packets_in < PACKETS as u64
    }) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Half are stopped (waiting for the file), half dropped (finished in the background).
    let mut paths = Vec::new();
    for (i, (call, path)) in calls.into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(call.stop_recording(), Some(path.clone()));
        }
        drop(call);
        paths.push(path);
    }
    assert_eq!(eng.writer_threads(), threads);
    for path in paths {
        // A dropped call's file is complete once its header has been rewritten.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let samples = loop {
            let s: Vec<i16> = hound::WavReader::open(&path)
                .ok()
                .map(|r| {
                    assert_eq!(r.spec().channels, 2);
                    r.into_samples::<i16>().filter_map(Result::ok).collect()
                })
                .unwrap_or_default();
            if !s.is_empty() || tokio::time::Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let left = samples.chunks(2).filter(|f| f[0] > 5000).count();
        let right = samples.chunks(2).filter(|f| f[1] < -5000).count();
        assert!(
            left >= PACKETS * 160 && right >= PACKETS * 160,
            "{}: {left} loud left, {right} loud right of {} frames",
            path.display(),
            samples.len() / 2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_range_is_even_and_exhaustion_is_an_error() {
    let eng = engine(40_511, 40_515); // even ports 40512, 40514: one call
    let call = eng.allocate("c-1").await.unwrap();
    for leg in [Leg::A, Leg::B] {
        let p = call.local_addr(leg).port();
        assert!(p % 2 == 0 && (40_512..=40_514).contains(&p), "{p}");
    }
    let err = eng.allocate("c-2").await.unwrap_err();
    assert!(
        matches!(&err, MediaError::PortsExhausted { call_id, .. } if call_id == "c-2"),
        "{err}"
    );
    assert!(err.to_string().contains("c-2"));
    drop(call);
    // ports come back once the tasks have let go of the sockets
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(c) = eng.allocate("c-3").await {
            again = Some(c);
            break;
        }
    }
    assert!(again.is_some(), "ports freed on drop");
    assert!(
        MediaEngine::new(&lingxi_config::MediaSection {
            rtp_port_min: 5,
            rtp_port_max: 4,
            ..Default::default()
        })
        .is_err()
    );
}

fn proc_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Capacity check: `CALLS` bridged calls, 50 packets/s each way on both legs, for 10 s.
/// Reports CPU (switch and load generator together) and memory per call. With
/// `LOAD_RECORD=1` every call is also recorded (to a temporary directory).
/// `[LOAD_RECORD=1] cargo test -p lingxi-media --release -- --ignored load_ --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn load_bridged_calls() {
    const CALLS: usize = 1000;
    let metrics = crate::test_metrics::TestRecorder::default();
    let eng = metrics::with_local_recorder(&metrics, || engine(0, 0));
    let record = std::env::var_os("LOAD_RECORD").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let rss0 = rss_kib();
    let mut calls = Vec::new();
    let mut phones = Vec::new();
    for i in 0..CALLS {
        let call = eng.allocate(&format!("load-{i}")).await.unwrap();
        if record {
            call.start_recording(dir.path().join(format!("load-{i}.wav")))
                .unwrap();
        }
        let a = Arc::new(UdpSocket::bind((LOCAL, 0)).await.unwrap());
        let b = Arc::new(UdpSocket::bind((LOCAL, 0)).await.unwrap());
        call.set_remote(Leg::A, a.local_addr().unwrap(), Codec::Pcmu, Some(101));
        call.set_remote(Leg::B, b.local_addr().unwrap(), Codec::Pcma, Some(101));
        call.bridge();
        phones.push((a, call.local_addr(Leg::A), b, call.local_addr(Leg::B)));
        calls.push(call);
    }
    let rss1 = rss_kib();
    let received = Arc::new(AtomicU64::new(0));
    // receivers: one task per phone socket, like real phones
    let mut tasks = Vec::new();
    for (a, _, b, _) in &phones {
        for s in [a.clone(), b.clone()] {
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while s.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    // senders: 4 tasks, each ticking every 20 ms over a quarter of the phones
    let phones = Arc::new(phones);
    let cpu0 = proc_cpu_secs();
    let t0 = tokio::time::Instant::now();
    for part in 0..4 {
        let phones = phones.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut seq = 0u16;
            let mut buf = Vec::with_capacity(200);
            loop {
                tick.tick().await;
                seq = seq.wrapping_add(1);
                for (i, (a, la, b, lb)) in phones.iter().enumerate() {
                    if i % 4 != part {
                        continue;
                    }
                    let h = RtpHeader {
                        marker: false,
                        payload_type: 0,
                        sequence: seq,
                        timestamp: seq as u32 * 160,
                        ssrc: i as u32,
                    };
                    rtp::write(&h, &[0x55; 160], &mut buf);
                    let _ = a.try_send_to(&buf, *la);
                    let h = RtpHeader {
                        payload_type: 8,
                        ..h
                    };
                    rtp::write(&h, &[0x55; 160], &mut buf);
                    let _ = b.try_send_to(&buf, *lb);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_secs() - cpu0;
    let got = received.load(Ordering::Relaxed);
    let expected = (CALLS * 2 * 50) as f64 * secs;
    println!(
        "{CALLS} calls, {secs:.1} s: relayed {got} of ~{expected:.0} ({:.1}%), cpu {cpu:.1} s = {:.0}% of one core (incl. load generator), rss {} KiB -> {} KiB = {:.1} KiB/call (incl. 2 test phone sockets)",
        got as f64 * 100.0 / expected,
        cpu * 100.0 / secs,
        rss0,
        rss1,
        (rss1.saturating_sub(rss0)) as f64 / CALLS as f64
    );
    println!("rss after traffic {} KiB", rss_kib());
    println!(
        "recording {record}: {} writer threads, {} recorder threads in the process, {} samples dropped by the writers; rtp dropped: send_buffer_full {}, send_error {}",
        eng.writer_threads(),
        recorder_threads_in_process(),
        metrics.counter("lingxi_recording_dropped_frames_total"),
        metrics.counter("lingxi_rtp_dropped_total{reason=send_buffer_full}"),
        metrics.counter("lingxi_rtp_dropped_total{reason=send_error}"),
    );
    for t in tasks {
        t.abort();
    }
    drop(calls);
}
