//! An RTP endpoint for tests: sends marked PCMU packets and counts what arrives.
//!
//! Every packet [`Rtp::send_pcmu`] sends carries a marker in its payload (`LXRT` + the
//! sender's tag), so the receiver can tell relayed conversation from the switch's hold
//! music, and prove the payload crossed the switch unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Marker at the start of a test payload.
const MAGIC: &[u8; 4] = b"LXRT";

/// What an [`Rtp`] endpoint received.
#[derive(Debug, Clone, Default)]
pub struct RtpStats {
    /// Valid RTP packets (version 2, at least a header).
    pub packets: u64,
    /// Datagrams that were not RTP.
    pub not_rtp: u64,
    /// Packets by payload type.
    pub by_pt: BTreeMap<u8, u64>,
    /// SSRCs seen.
    pub ssrcs: BTreeSet<u32>,
    /// Source addresses seen.
    pub sources: BTreeSet<SocketAddr>,
    /// Test-marked packets by the sending endpoint's tag (payload arrived intact).
    pub marked: BTreeMap<u32, u64>,
    /// Payload types of test-marked packets.
    pub marked_pts: BTreeSet<u8>,
    /// SSRCs of test-marked packets.
    pub marked_ssrcs: BTreeSet<u32>,
}

impl RtpStats {
    /// Packets that carried `tag`'s marker.
    pub fn from_tag(&self, tag: u32) -> u64 {
        self.marked.get(&tag).copied().unwrap_or(0)
    }
}

/// A UDP socket on 127.0.0.1 speaking RTP.
pub struct Rtp {
    /// The socket (shared with the receive task).
    sock: Arc<UdpSocket>,
    /// Where it is bound (what the SDP advertises).
    local: SocketAddr,
    /// Marker identifying this endpoint's packets, and its SSRC.
    tag: u32,
    /// Counters the receive task fills.
    stats: Arc<Mutex<RtpStats>>,
    /// Next sequence number and timestamp, continuous across `send_pcmu` calls.
    next: Mutex<(u16, u32)>,
    /// The receive task.
    reader: JoinHandle<()>,
}

impl Drop for Rtp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Rtp {
    /// Binds 127.0.0.1:0 and starts counting.
    pub async fn bind() -> anyhow::Result<Rtp> {
        let sock = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .context("binding an RTP socket")?,
        );
        let local = sock.local_addr()?;
        let stats = Arc::new(Mutex::new(RtpStats::default()));
        let reader = tokio::spawn(receive(sock.clone(), stats.clone()));
        Ok(Rtp {
            sock,
            local,
            tag: rand::random::<u32>() | 1,
            stats,
            next: Mutex::new((rand::random(), rand::random())),
            reader,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// This endpoint's marker (also its SSRC).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// A copy of the counters.
    pub fn stats(&self) -> RtpStats {
        self.stats.lock().unwrap().clone()
    }

    /// Forgets everything received so far.
    pub fn reset(&self) {
        *self.stats.lock().unwrap() = RtpStats::default();
    }

    /// Sends `n` marked PCMU packets (160 bytes, 20 ms) to `to`, one every ~20 ms.
    pub async fn send_pcmu(&self, to: SocketAddr, n: usize) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..n {
            tick.tick().await;
            let (seq, ts) = {
                let mut next = self.next.lock().unwrap();
                let cur = *next;
                *next = (cur.0.wrapping_add(1), cur.1.wrapping_add(160));
                cur
            };
            let pkt = packet(0, seq, ts, self.tag, i == 0, &payload(self.tag, seq));
            self.sock
                .send_to(&pkt, to)
                .await
                .with_context(|| format!("sending RTP to {to}"))?;
        }
        Ok(())
    }

    /// Sends one raw datagram from this socket.
    pub async fn send_raw(&self, bytes: &[u8], to: SocketAddr) -> anyhow::Result<()> {
        self.sock.send_to(bytes, to).await?;
        Ok(())
    }

    /// Waits until at least `n` packets marked by `tag` arrived; returns how many did.
    pub async fn wait_from(&self, tag: u32, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.stats().from_tag(tag);
            if got >= n {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {n} RTP packets from tag {tag:08x} at {}: got {got}; stats {:?}",
                    self.local,
                    self.stats()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` RTP packets of any kind arrived (e.g. hold music).
    pub async fn wait_any(&self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.stats().packets;
            if got >= n {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {n} RTP packets at {}: got {got}",
                    self.local
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `n` packets each way at once (`a` → `a_to`, `b` → `b_to`), then waits (up to
/// `timeout`) until each side got at least `min` of the other's; returns
/// `(b got from a, a got from b)` without failing, so the test can assert with context.
pub async fn exchange(
    a: &Rtp,
    a_to: SocketAddr,
    b: &Rtp,
    b_to: SocketAddr,
    n: usize,
    min: u64,
    timeout: Duration,
) -> anyhow::Result<(u64, u64)> {
    let (ra, rb) = tokio::join!(a.send_pcmu(a_to, n), b.send_pcmu(b_to, n));
    ra?;
    rb?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = (b.stats().from_tag(a.tag()), a.stats().from_tag(b.tag()));
        if (got.0 >= min && got.1 >= min) || tokio::time::Instant::now() >= deadline {
            // Let stragglers in, for the counts' sake.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok((b.stats().from_tag(a.tag()), a.stats().from_tag(b.tag())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 160-byte payload: marker, tag, sequence number, then µ-law silence.
fn payload(tag: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0xFFu8; 160];
    p[..4].copy_from_slice(MAGIC);
    p[4..8].copy_from_slice(&tag.to_be_bytes());
    p[8..10].copy_from_slice(&seq.to_be_bytes());
    p
}

/// An RTP packet (RFC 3550 §5.1), no CSRCs or extension.
pub fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(pt & 0x7F | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn receive(sock: Arc<UdpSocket>, stats: Arc<Mutex<RtpStats>>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let d = &buf[..n];
        let mut s = stats.lock().unwrap();
        if n < 12 || d[0] >> 6 != 2 {
            s.not_rtp += 1;
            continue;
        }
        let cc = usize::from(d[0] & 0x0F);
        let mut off = 12 + 4 * cc;
        if d[0] & 0x10 != 0 && n >= off + 4 {
            let words = usize::from(u16::from_be_bytes([d[off + 2], d[off + 3]]));
            off += 4 + 4 * words;
        }
        let pt = d[1] & 0x7F;
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        s.packets += 1;
        *s.by_pt.entry(pt).or_default() += 1;
        s.ssrcs.insert(ssrc);
        s.sources.insert(src);
        if n >= off + 8 && &d[off..off + 4] == MAGIC {
            let tag = u32::from_be_bytes([d[off + 4], d[off + 5], d[off + 6], d[off + 7]]);
            *s.marked.entry(tag).or_default() += 1;
            s.marked_pts.insert(pt);
            s.marked_ssrcs.insert(ssrc);
        }
    }
}
