//! Delay and loss on the cluster transport, without root: a frame-aware TCP proxy in front
//! of each node's real Raft listener.
//!
//! The harness's proxies (cut/heal) sit where the peers dial; this one sits behind them, on
//! the address the harness forwards to, and the node listens on a new port. A Raft
//! connection opens with `LXRF` + the sender's id, then carries frames (`u32` length, kind
//! byte, payload; see `cluster/src/raft/transport.rs`), so the proxy can hold each frame back
//! (delay, jitter; order kept) or drop it whole (loss) -- real message loss, unlike dropping
//! bytes of a TCP stream. Hello frames always pass (they only carry addresses).

use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Magic that opens every Raft connection.
const RAFT_MAGIC: &[u8; 4] = b"LXRF";
/// Frame kind of a hello (never dropped).
const KIND_HELLO: u8 = 4;
/// Largest frame the proxy parses (the transport's own limit).
const MAX_FRAME: usize = 256 << 20;

/// Delay and loss on one node's links.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Added delay per frame.
    pub delay_ms: u64,
    /// Extra random delay, 0..jitter.
    pub jitter_ms: u64,
    /// Probability a frame is dropped.
    pub loss: f64,
}

/// Impairments by Raft id: a frame is impaired when its sender or its receiver is listed.
#[derive(Default)]
pub struct NetemState {
    /// Raft id → impairment of every link to and from it.
    links: Mutex<HashMap<u64, Impairment>>,
    /// Frames dropped so far.
    dropped: Mutex<u64>,
}

impl NetemState {
    /// Impairs every link of node `raft_id`.
    pub fn set(&self, raft_id: u64, imp: Impairment) {
        self.links.lock().unwrap().insert(raft_id, imp);
    }

    /// Clears node `raft_id`'s impairment.
    pub fn clear(&self, raft_id: u64) {
        self.links.lock().unwrap().remove(&raft_id);
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        *self.dropped.lock().unwrap()
    }

    fn lookup(&self, a: u64, b: Option<u64>) -> Option<Impairment> {
        let l = self.links.lock().unwrap();
        l.get(&a).or_else(|| b.and_then(|b| l.get(&b))).copied()
    }
}

/// A running proxy (aborted on drop).
pub struct NetemProxy {
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Drop for NetemProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NetemProxy {
    /// Proxies connections accepted on `listener` to `target` (node `target_id`'s real
    /// listener), impaired as `state` says.
    pub fn start(
        listener: TcpListener,
        target_id: u64,
        target: SocketAddr,
        state: Arc<NetemState>,
    ) -> NetemProxy {
        // Connections end when either side closes (the nodes are killed at the end).
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                tokio::spawn(conn(inbound, target_id, target, state.clone()));
            }
        });
        NetemProxy { task }
    }
}

/// One proxied connection: frames read from `inbound`, held or dropped, written to the node.
async fn conn(mut inbound: TcpStream, target_id: u64, target: SocketAddr, state: Arc<NetemState>) {
    let mut hello = [0u8; 12];
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), inbound.read_exact(&mut hello)).await,
        Ok(Ok(_))
    ) {
        return;
    }
    let sender = (&hello[..4] == RAFT_MAGIC)
        .then(|| u64::from_be_bytes(hello[4..12].try_into().expect("8 bytes")));
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let _ = inbound.set_nodelay(true);
    if outbound.write_all(&hello).await.is_err() {
        return;
    }
    if sender.is_none() {
        // Not a Raft connection: pass bytes through untouched.
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        return;
    }
    let (mut rd, _keep) = inbound.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, frame)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if outbound.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut last_release = Instant::now();
    loop {
        let mut len = [0u8; 4];
        if rd.read_exact(&mut len).await.is_err() {
            break;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_FRAME {
            break;
        }
        let mut frame = vec![0u8; 4 + n];
        frame[..4].copy_from_slice(&len);
        if rd.read_exact(&mut frame[4..]).await.is_err() {
            break;
        }
        let imp = state.lookup(target_id, sender);
        let mut release = Instant::now();
        if let Some(imp) = imp
            && frame[4] != KIND_HELLO
        {
            let (drop_it, extra) = {
                let mut rng = rand::rng();
                (
                    rng.random_bool(imp.loss.clamp(0.0, 1.0)),
                    if imp.jitter_ms > 0 {
                        rng.random_range(0..imp.jitter_ms)
                    } else {
                        0
                    },
                )
            };
            if drop_it {
                *state.dropped.lock().unwrap() += 1;
                continue;
            }
            release += Duration::from_millis(imp.delay_ms + extra);
        }
        // Frames keep their order: none leaves before the one ahead of it.
        release = release.max(last_release);
        last_release = release;
        if tx.send((release, frame)).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
