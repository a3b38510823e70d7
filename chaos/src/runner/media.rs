//! An RTP endpoint for one SIP agent or caller: sends PCMU every 20 ms to wherever the
//! switch's SDP points, and watches what arrives -- from which node (by RTP port range), the
//! silence between packets, the gap a failover leaves, and any packet from a node that is not
//! the call's owner any more (two nodes serving one call).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long after a re-INVITE moved the call packets from the previous owner are still
/// forgiven (in flight, or sent in the instant before it stopped).
pub const STALE_GRACE: Duration = Duration::from_millis(300);

/// Packets from a node that no longer owns the call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stale {
    /// Node index the packets came from.
    pub from: usize,
    /// The owner at the time (index).
    pub owner: usize,
    /// How many packets.
    pub packets: u64,
    /// The first one arrived this long after the owner changed.
    pub first_after_ms: u64,
}

/// What one call's media looked like at this endpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CallMedia {
    /// RTP packets received during the call.
    pub packets: u64,
    /// For each owner change: last packet before it to first packet from the new owner (ms).
    pub gaps_ms: Vec<u64>,
    /// Longest stretch without any packet, from the call's start to its end (ms).
    pub longest_silence_ms: u64,
    /// Packets from a node other than the owner after a change settled.
    pub stale: Vec<Stale>,
}

/// Per-call watch state.
struct Watch {
    /// Each node's RTP port range, by index.
    ranges: Arc<Vec<(u16, u16)>>,
    /// Whether a call is being watched.
    active: bool,
    /// The node that owns the call now (by the last SDP), if known.
    owner: Option<usize>,
    /// When the owner last changed (or the call began).
    owner_since: Instant,
    /// When the last packet arrived (or the call began).
    last_rx: Instant,
    /// Set on an owner change: the last packet before it, until the new owner's first.
    gap_from: Option<Instant>,
    /// This call so far.
    call: CallMedia,
}

impl Watch {
    fn node_of(&self, a: SocketAddr) -> Option<usize> {
        self.ranges
            .iter()
            .position(|(lo, hi)| a.ip().is_loopback() && (*lo..=*hi).contains(&a.port()))
    }

    fn on_packet(&mut self, src: SocketAddr, now: Instant) {
        if !self.active {
            return;
        }
        let silence = now.saturating_duration_since(self.last_rx).as_millis() as u64;
        self.call.longest_silence_ms = self.call.longest_silence_ms.max(silence);
        self.last_rx = now;
        self.call.packets += 1;
        let Some(from) = self.node_of(src) else {
            return;
        };
        match self.owner {
            Some(owner) if owner == from => {
                if let Some(g) = self.gap_from.take() {
                    self.call
                        .gaps_ms
                        .push(now.saturating_duration_since(g).as_millis() as u64);
                }
            }
            Some(owner) if now > self.owner_since + STALE_GRACE => {
                let after = now.saturating_duration_since(self.owner_since).as_millis() as u64;
                match self
                    .call
                    .stale
                    .iter_mut()
                    .find(|s| s.from == from && s.owner == owner)
                {
                    Some(s) => s.packets += 1,
                    None => self.call.stale.push(Stale {
                        from,
                        owner,
                        packets: 1,
                        first_after_ms: after,
                    }),
                }
            }
            Some(_) => {}
            None => self.owner = Some(from),
        }
    }
}

/// A UDP socket on 127.0.0.1 speaking RTP.
pub struct Media {
    /// Where it is bound (what our SDP advertises).
    local: SocketAddr,
    /// Where our packets go now (`None`: silent).
    dest: Arc<Mutex<Option<SocketAddr>>>,
    /// What arrives.
    watch: Arc<Mutex<Watch>>,
    /// Receive and send tasks.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Media {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Media {
    /// Binds 127.0.0.1:0; `ranges` are the nodes' RTP port ranges, by index.
    pub async fn bind(ranges: Arc<Vec<(u16, u16)>>) -> anyhow::Result<Media> {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let local = sock.local_addr()?;
        let now = Instant::now();
        let watch = Arc::new(Mutex::new(Watch {
            ranges,
            active: false,
            owner: None,
            owner_since: now,
            last_rx: now,
            gap_from: None,
            call: CallMedia::default(),
        }));
        let dest: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let rx = {
            let (sock, watch) = (sock.clone(), watch.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, src)) = sock.recv_from(&mut buf).await {
                    if n >= 12 && buf[0] >> 6 == 2 {
                        watch.lock().unwrap().on_packet(src, Instant::now());
                    }
                }
            })
        };
        let tx = {
            let (sock, dest) = (sock.clone(), dest.clone());
            tokio::spawn(async move {
                let ssrc = rand::random::<u32>();
                let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
                let payload = [0xFFu8; 160];
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let to = *dest.lock().unwrap();
                    if let Some(to) = to {
                        let pkt = lingxi_tests::rtp::packet(0, seq, ts, ssrc, false, &payload);
                        let _ = sock.send_to(&pkt, to).await;
                        seq = seq.wrapping_add(1);
                        ts = ts.wrapping_add(160);
                    }
                }
            })
        };
        Ok(Media {
            local,
            dest,
            watch,
            tasks: vec![rx, tx],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts watching a call whose media the switch sends from `remote` (its SDP address),
    /// and sends ours there.
    pub fn begin(&self, remote: SocketAddr) {
        *self.dest.lock().unwrap() = Some(remote);
        let mut w = self.watch.lock().unwrap();
        let now = Instant::now();
        w.owner = w.node_of(remote);
        w.owner_since = now;
        w.last_rx = now;
        w.gap_from = None;
        w.active = true;
        w.call = CallMedia::default();
    }

    /// The call moved (a re-INVITE with new SDP `remote`): the old owner must go quiet.
    pub fn moved(&self, remote: SocketAddr) {
        // Locks in `end`'s order: destination, then watch.
        let mut dest = self.dest.lock().unwrap();
        let mut w = self.watch.lock().unwrap();
        if !w.active {
            // Hung up already: a late re-INVITE moves nothing (our audio stopped).
            return;
        }
        *dest = Some(remote);
        let now = Instant::now();
        let new_owner = w.node_of(remote);
        if new_owner != w.owner {
            w.gap_from = Some(w.last_rx);
        }
        w.owner = new_owner;
        w.owner_since = now;
    }

    /// Stops sending and watching; returns what the call's media looked like (`None`: it
    /// was not being watched, or already ended).
    pub fn end(&self) -> Option<CallMedia> {
        *self.dest.lock().unwrap() = None;
        let mut w = self.watch.lock().unwrap();
        if !w.active {
            return None;
        }
        let silence = Instant::now()
            .saturating_duration_since(w.last_rx)
            .as_millis() as u64;
        w.call.longest_silence_ms = w.call.longest_silence_ms.max(silence);
        w.active = false;
        Some(std::mem::take(&mut w.call))
    }
}
