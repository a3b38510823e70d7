//! Node-to-node transport: what the ready loop sends ([`Envelope`]s), the [`Transport`] seam,
//! TCP for production ([`TcpTransport`]) and an in-memory network whose links tests can cut
//! ([`MemNetwork`]).
//!
//! Wire format, per frame: `u32` big-endian length of what follows, one kind byte (`1` a raft
//! `Message` as protobuf, `2` a forwarded proposal as JSON), the payload. Each connection
//! opens with a handshake: the magic `LXRF` and the sender's node id (`u64` big-endian).
//! Connections are one-way: a node writes on the connection it dialled and reads on those
//! it accepted.

use super::RaftError;
use crate::command::Command;
use ::raft::prelude::Message;
use parking_lot::Mutex;
use protobuf::Message as _;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What travels between nodes.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// A raft protocol message.
    Raft(Box<Message>),
    /// Proposals or a membership change sent by a follower to the leader.
    Forward(Forward),
    /// "I am node `id`, dial me at `addr`": the first frame on every connection, so a node
    /// that joined knowing only some members learns the others' addresses.
    Hello {
        /// The sender's Raft id.
        id: u64,
        /// Its Raft transport address.
        addr: String,
    },
    /// "I am alive", sent by every node to every peer each few ticks. Followers do not
    /// otherwise talk to each other; these let a node tell whether it still reaches a
    /// majority (else it stops serving its calls) and let the leader detect dead nodes.
    Ping {
        /// The sender's Raft id.
        from: u64,
    },
}

/// A follower's proposals (or conf change), for the leader to put in the log. The leader
/// proposes them with `(from, tag)` as the entry's context; when the follower applies that
/// entry it answers its own waiting callers with the results it computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The node whose callers wait.
    pub(super) from: u64,
    /// Which of its batches this is.
    pub(super) tag: u64,
    /// What to propose.
    pub(super) body: ForwardBody,
}

/// What a forwarded proposal asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum ForwardBody {
    /// Commands for one log entry.
    Commands(Vec<Command>),
    /// Add a voter (or, with `learner`, a learner) reachable at `addr`.
    AddNode {
        id: u64,
        addr: String,
        learner: bool,
    },
    /// Remove a node.
    RemoveNode { id: u64 },
}

const KIND_RAFT: u8 = 1;
const KIND_FORWARD: u8 = 2;
/// Frame kind of a liveness ping (payload: the sender id, 8 bytes big-endian).
const KIND_PING: u8 = 3;
/// Frame kind of a hello (payload: the sender id, 8 bytes big-endian, then its address).
const KIND_HELLO: u8 = 4;
const MAGIC: &[u8; 4] = b"LXRF";
/// Largest frame accepted: snapshots travel in one message.
const MAX_FRAME: usize = 256 << 20;

/// Appends `env` to `out` as one frame.
pub fn encode_frame(env: &Envelope, out: &mut Vec<u8>) -> Result<(), RaftError> {
    let (kind, payload) = match env {
        Envelope::Raft(m) => (
            KIND_RAFT,
            m.write_to_bytes().map_err(|source| RaftError::Decode {
                what: "raft message",
                source,
            })?,
        ),
        Envelope::Forward(f) => (
            KIND_FORWARD,
            serde_json::to_vec(f).map_err(|e| RaftError::Frame {
                detail: format!("encoding a forwarded proposal: {e}"),
            })?,
        ),
        Envelope::Ping { from } => (KIND_PING, from.to_be_bytes().to_vec()),
        Envelope::Hello { id, addr } => {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(addr.as_bytes());
            (KIND_HELLO, p)
        }
    };
    let len = u32::try_from(payload.len() + 1)
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or_else(|| RaftError::Frame {
            detail: format!("frame of {} bytes is too large", payload.len()),
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes a frame's kind byte and payload.
pub fn decode_frame(kind: u8, payload: &[u8]) -> Result<Envelope, RaftError> {
    match kind {
        KIND_RAFT => Ok(Envelope::Raft(Box::new(
            Message::parse_from_bytes(payload).map_err(|source| RaftError::Decode {
                what: "raft message",
                source,
            })?,
        ))),
        KIND_FORWARD => serde_json::from_slice(payload)
            .map(Envelope::Forward)
            .map_err(|e| RaftError::Frame {
                detail: format!("decoding a forwarded proposal: {e}"),
            }),
        KIND_PING => payload
            .try_into()
            .map(|b: [u8; 8]| Envelope::Ping {
                from: u64::from_be_bytes(b),
            })
            .map_err(|_| RaftError::Frame {
                detail: format!("ping of {} bytes, expected 8", payload.len()),
            }),
        KIND_HELLO if payload.len() > 8 => {
            let mut id = [0u8; 8];
            id.copy_from_slice(&payload[..8]);
            let addr = std::str::from_utf8(&payload[8..]).map_err(|_| RaftError::Frame {
                detail: "hello address is not UTF-8".into(),
            })?;
            Ok(Envelope::Hello {
                id: u64::from_be_bytes(id),
                addr: addr.to_string(),
            })
        }
        k => Err(RaftError::Frame {
            detail: format!("unknown frame kind {k}"),
        }),
    }
}

/// How the ready loop reaches other nodes. Sending never blocks: a message that cannot be
/// queued is dropped (raft retransmits).
pub trait Transport: Send + Sync + 'static {
    /// Queues `env` for node `to`; `false` if it was dropped here (unknown peer, queue full).
    /// A message queued and then lost on the way still returns `true`.
    fn send(&self, to: u64, env: Envelope) -> bool;
    /// Learns (or changes) the address of node `id`.
    fn add_peer(&self, id: u64, addr: &str);
    /// Forgets node `id`.
    fn remove_peer(&self, id: u64);
}

// ---------------------------------------------------------------------------------------
// In memory

/// An in-memory network of nodes for tests: links can be cut and healed. Messages go
/// through the wire codec, so tests exercise it too.
#[derive(Clone, Default)]
pub struct MemNetwork {
    /// Inboxes and cut links, shared by every node's transport.
    inner: Arc<Mutex<MemNet>>,
}

#[derive(Default)]
struct MemNet {
    /// Each node's inbox (replaced when a node restarts).
    inboxes: HashMap<u64, mpsc::Sender<Envelope>>,
    /// Directed links that lose every message.
    cut: HashSet<(u64, u64)>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// Connects node `id` (again, after a restart): its transport and its inbox.
    pub fn join(&self, id: u64) -> (Arc<dyn Transport>, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(4096);
        self.inner.lock().inboxes.insert(id, tx);
        (
            Arc::new(MemTransport {
                id,
                net: self.clone(),
            }),
            rx,
        )
    }

    /// Loses every message between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        let mut g = self.inner.lock();
        g.cut.insert((a, b));
        g.cut.insert((b, a));
    }

    /// Loses every message from `from` to `to` (the other way still works).
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.inner.lock().cut.insert((from, to));
    }

    /// Cuts `id` off from every node that joined.
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = self.inner.lock().inboxes.keys().copied().collect();
        for o in others.into_iter().filter(|o| *o != id) {
            self.cut(id, o);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.inner.lock().cut.clear();
    }
}

struct MemTransport {
    id: u64,
    net: MemNetwork,
}

impl Transport for MemTransport {
    fn send(&self, to: u64, env: Envelope) -> bool {
        let tx = {
            let g = self.net.inner.lock();
            if g.cut.contains(&(self.id, to)) {
                return true; // lost on the way
            }
            match g.inboxes.get(&to) {
                Some(tx) => tx.clone(),
                None => return false,
            }
        };
        let mut frame = Vec::new();
        let env = match encode_frame(&env, &mut frame) {
            Ok(()) => decode_frame(frame[4], &frame[5..]),
            Err(e) => Err(e),
        };
        match env {
            Ok(env) => tx.try_send(env).is_ok(),
            Err(e) => {
                tracing::error!(to, error = %e, "codec failed in the memory network");
                false
            }
        }
    }

    fn add_peer(&self, _id: u64, _addr: &str) {}

    fn remove_peer(&self, _id: u64) {}
}

// ---------------------------------------------------------------------------------------
// TCP

/// Timeouts and bounds of the TCP transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Giving up on a connection attempt (the peer is down or unreachable).
    pub connect_timeout: Duration,
    /// Giving up on a write (a stuck peer must not stall the others).
    pub write_timeout: Duration,
    /// First wait before reconnecting; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between connection attempts.
    pub backoff_max: Duration,
    /// Messages queued per peer; more are dropped.
    pub queue: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            connect_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            queue: 1024,
        }
    }
}

/// Raft messages over TCP: one outbound connection per peer, written by its own task from a
/// bounded queue, reconnecting with backoff; an accept loop feeding the node's inbox.
pub struct TcpTransport {
    /// This node.
    id: u64,
    /// Where the accept loop listens.
    local_addr: SocketAddr,
    /// Timeouts and bounds.
    cfg: TcpConfig,
    /// Outbound queue per peer.
    peers: Mutex<HashMap<u64, Peer>>,
    /// Stops the accept loop, readers and writers.
    shutdown: CancellationToken,
}

struct Peer {
    /// Where it listens.
    addr: String,
    /// Its writer's queue.
    queue: mpsc::Sender<Envelope>,
    /// Stops its writer (on removal or address change).
    stop: CancellationToken,
}

impl TcpTransport {
    /// Listens on `listen` and feeds every received message into `inbox`. Stops when
    /// `shutdown` is cancelled.
    pub async fn bind(
        id: u64,
        listen: SocketAddr,
        inbox: mpsc::Sender<Envelope>,
        cfg: TcpConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<TcpTransport>, RaftError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| RaftError::Io {
                what: format!("binding {listen}"),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| RaftError::Io {
            what: "reading the listen address".into(),
            source,
        })?;
        tracing::info!(node = id, %local_addr, "raft transport listening");
        tokio::spawn(accept_loop(id, listener, inbox, shutdown.clone()));
        Ok(Arc::new(TcpTransport {
            id,
            local_addr,
            cfg,
            peers: Mutex::new(HashMap::new()),
            shutdown,
        }))
    }

    /// The address peers should dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: u64, env: Envelope) -> bool {
        let peers = self.peers.lock();
        let Some(peer) = peers.get(&to) else {
            return false;
        };
        let ok = peer.queue.try_send(env).is_ok();
        if !ok {
            metrics::counter!("lingxi_raft_messages_dropped_total").increment(1);
        }
        ok
    }

    fn add_peer(&self, id: u64, addr: &str) {
        if id == self.id {
            return;
        }
        let mut peers = self.peers.lock();
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        if let Some(old) = peers.remove(&id) {
            old.stop.cancel();
        }
        let (queue, rx) = mpsc::channel(self.cfg.queue.max(1));
        let stop = self.shutdown.child_token();
        tokio::spawn(peer_writer(
            self.id,
            self.local_addr.to_string(),
            id,
            addr.to_string(),
            rx,
            self.cfg.clone(),
            stop.clone(),
        ));
        peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                queue,
                stop,
            },
        );
    }

    fn remove_peer(&self, id: u64) {
        if let Some(p) = self.peers.lock().remove(&id) {
            p.stop.cancel();
        }
    }
}

/// Drains a peer's queue into its connection, reconnecting with backoff. While the peer is
/// unreachable, queued messages are dropped rather than delivered late.
async fn peer_writer(
    me: u64,
    my_addr: String,
    peer: u64,
    addr: String,
    mut rx: mpsc::Receiver<Envelope>,
    cfg: TcpConfig,
    stop: CancellationToken,
) {
    let mut backoff = cfg.backoff_min;
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&addr)) => r,
        };
        let mut stream = match conn {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(node = me, peer, %addr, error = %e, "cannot connect to peer");
                drop_queued(&mut rx);
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
            Err(_) => {
                tracing::debug!(node = me, peer, %addr, "connecting to peer timed out");
                drop_queued(&mut rx);
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::debug!(node = me, peer, %addr, "connected to peer");
        backoff = cfg.backoff_min;
        buf.clear();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&me.to_be_bytes());
        let hello = Envelope::Hello {
            id: me,
            addr: my_addr.clone(),
        };
        if let Err(e) = encode_frame(&hello, &mut buf) {
            tracing::error!(node = me, peer, error = %e, "cannot encode the hello frame");
        }
        let mut next = Some(first);
        loop {
            let env = match next.take() {
                Some(e) => e,
                None => tokio::select! {
                    _ = stop.cancelled() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                },
            };
            let mut batch = vec![env];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            for env in &batch {
                if let Err(e) = encode_frame(env, &mut buf) {
                    tracing::error!(node = me, peer, error = %e, "cannot encode a message");
                }
            }
            let write = tokio::time::timeout(cfg.write_timeout, stream.write_all(&buf)).await;
            buf.clear();
            match write {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(node = me, peer, error = %e, "peer connection lost");
                    break;
                }
                Err(_) => {
                    tracing::warn!(node = me, peer, "write to peer timed out; reconnecting");
                    break;
                }
            }
        }
    }
}

fn drop_queued(rx: &mut mpsc::Receiver<Envelope>) {
    while rx.try_recv().is_ok() {
        metrics::counter!("lingxi_raft_messages_dropped_total").increment(1);
    }
}

/// Sleeps for `d`; `true` if stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn accept_loop(
    me: u64,
    listener: TcpListener,
    inbox: mpsc::Sender<Envelope>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let inbox = inbox.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = read_conn(stream, inbox) => if let Err(e) = r {
                            tracing::debug!(node = me, %from, error = %e, "peer connection closed");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(node = me, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_conn(mut stream: TcpStream, inbox: mpsc::Sender<Envelope>) -> Result<(), RaftError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RaftError::Io { what, source }
    };
    let mut hello = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut hello))
        .await
        .map_err(|_| RaftError::Frame {
            detail: "no handshake".into(),
        })?
        .map_err(io("reading the handshake"))?;
    if &hello[..4] != MAGIC {
        return Err(RaftError::Frame {
            detail: "bad handshake".into(),
        });
    }
    let mut payload = Vec::new();
    loop {
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .await
            .map_err(io("reading a frame"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(RaftError::Frame {
                detail: format!("frame length {len}"),
            });
        }
        payload.resize(len, 0);
        stream
            .read_exact(&mut payload)
            .await
            .map_err(io("reading a frame"))?;
        let env = decode_frame(payload[0], &payload[1..])?;
        if inbox.send(env).await.is_err() {
            return Ok(()); // the node stopped
        }
    }
}
