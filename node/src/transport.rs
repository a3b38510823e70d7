//! SIP over UDP and TCP: the node's network edge (RFC 3261 §18).
//!
//! [`SipTransports`] binds the sockets named in `[sip]`, runs their receive loops (each received
//! datagram or framed TCP message goes to [`Endpoint::on_message`]) and implements
//! [`SipTransportSink`] so the transaction layer can send.
//!
//! * UDP: one socket with large kernel buffers, two receive loops (one per core on the target
//!   machine) each reusing a 64 KiB buffer. Sends use `try_send_to` and fall back to a spawned
//!   send only when the socket buffer is full.
//! * TCP: an accept loop; per connection a reader that frames messages by Content-Length
//!   (no Content-Length = no body), answers RFC 5626 keep-alive pings (CRLFCRLF) with CRLF and
//!   closes after `sip.tcp_idle_timeout_secs` without traffic, and a writer task fed by a bounded
//!   channel. Connections are kept by peer address so responses and later requests to the same
//!   peer reuse them; sending to a peer without one connects in the background.
//!
//! Everything stops when the shutdown token passed to [`SipTransports::start`] is cancelled.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use lingxi_actors::sip::SipError;
use lingxi_actors::sip::transaction::{Endpoint, Peer, SipTransportSink};
use lingxi_cluster::SipTransport;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[cfg(test)]
mod tests;

/// Kernel socket buffer asked for on the UDP socket (best effort: the kernel may cap it), so
/// bursts at 1,000+ calls/s are not dropped while a receive loop is busy parsing.
const UDP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Receive buffer of each UDP loop: the largest possible datagram.
const UDP_RECV_BUFFER: usize = 65_536;
/// UDP receive loops sharing the socket (one per core of the 2-core target).
const UDP_LOOPS: usize = 2;
/// Messages queued per TCP connection before sends fail (a peer that stopped reading).
const TCP_QUEUE: usize = 1024;
/// How long a background TCP connect may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's SIP sockets (a cheap handle over the shared state, which connection tasks also hold).
pub struct SipTransports {
    /// Sockets, connections and settings.
    shared: Arc<Shared>,
}

/// The state behind [`SipTransports`].
struct Shared {
    /// The UDP socket, when `sip.enable_udp`.
    udp: Option<Arc<UdpSocket>>,
    /// The TCP listener until [`SipTransports::start`] takes it, when `sip.enable_tcp`.
    listener: std::sync::Mutex<Option<TcpListener>>,
    /// Bound UDP address.
    udp_addr: Option<SocketAddr>,
    /// Bound TCP address.
    tcp_addr: Option<SocketAddr>,
    /// `sip.advertised_host` (or the listen IP) when it is an IP address, for `local_addr`.
    advertised_ip: Option<IpAddr>,
    /// `sip.max_message_bytes`: TCP frames beyond it close the connection.
    max_message_bytes: usize,
    /// `sip.tcp_idle_timeout_secs`.
    idle_timeout: Duration,
    /// Open TCP connections by peer address: the channel to each one's writer.
    conns: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// The runtime, so `send` (a sync call) can spawn background sends and connects.
    runtime: tokio::runtime::Handle,
    /// The endpoint, set by `start`; readers of connections we open feed it.
    endpoint: OnceLock<Endpoint>,
    /// The shutdown token, set by `start`; connections opened later stop with it too.
    shutdown: OnceLock<CancellationToken>,
}

impl std::fmt::Debug for SipTransports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipTransports")
            .field("udp", &self.shared.udp_addr)
            .field("tcp", &self.shared.tcp_addr)
            .field("tcp_connections", &self.shared.conns.len())
            .finish()
    }
}

fn bind_error(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind SIP {what} on {addr}: {e}"))
}

impl SipTransports {
    /// Binds UDP on `listen_ip:udp_port` (if `enable_udp`) and TCP on `listen_ip:tcp_port` (if
    /// `enable_tcp`); port 0 picks a free port. Errors name the address that failed.
    pub async fn bind(cfg: &lingxi_config::SipSection) -> io::Result<Arc<SipTransports>> {
        let mut udp = None;
        let mut udp_addr = None;
        if cfg.enable_udp {
            let addr = SocketAddr::new(cfg.listen_ip, cfg.udp_port);
            let sock = bind_udp(addr).map_err(|e| bind_error("UDP", addr, e))?;
            udp_addr = Some(sock.local_addr()?);
            udp = Some(Arc::new(sock));
        }
        let mut listener = None;
        let mut tcp_addr = None;
        if cfg.enable_tcp {
            let addr = SocketAddr::new(cfg.listen_ip, cfg.tcp_port);
            let l = bind_tcp(addr).map_err(|e| bind_error("TCP", addr, e))?;
            tcp_addr = Some(l.local_addr()?);
            listener = Some(l);
        }
        let advertised = cfg.advertised_host();
        let advertised_ip = advertised
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        Ok(Arc::new(SipTransports {
            shared: Arc::new(Shared {
                udp,
                listener: std::sync::Mutex::new(listener),
                udp_addr,
                tcp_addr,
                advertised_ip,
                max_message_bytes: cfg.max_message_bytes,
                idle_timeout: Duration::from_secs(cfg.tcp_idle_timeout_secs.max(1)),
                conns: DashMap::new(),
                runtime: tokio::runtime::Handle::current(),
                endpoint: OnceLock::new(),
                shutdown: OnceLock::new(),
            }),
        }))
    }

    /// Starts the receive loops (UDP) and the accept loop (TCP), feeding `endpoint`, until
    /// `shutdown` is cancelled. Call once.
    pub fn start(self: &Arc<Self>, endpoint: Endpoint, shutdown: CancellationToken) {
        let me = &self.shared;
        if me.endpoint.set(endpoint.clone()).is_err() {
            warn!("SipTransports::start called twice; ignored");
            return;
        }
        let _ = me.shutdown.set(shutdown.clone());
        if let Some(sock) = &me.udp {
            for _ in 0..UDP_LOOPS {
                tokio::spawn(udp_loop(sock.clone(), endpoint.clone(), shutdown.clone()));
            }
        }
        if let Some(listener) = me.listener.lock().ok().and_then(|mut l| l.take()) {
            tokio::spawn(me.clone().accept_loop(listener, shutdown));
        }
    }

    /// The bound UDP address (with the real port when 0 was asked for).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.shared.udp_addr
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.shared.tcp_addr
    }

    /// Open TCP connections (accepted and initiated).
    pub fn tcp_connections(&self) -> usize {
        self.shared.conns.len()
    }
}

impl Shared {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (tx, rx) = mpsc::channel(TCP_QUEUE);
                    self.conns.insert(peer, tx.clone());
                    tokio::spawn(self.clone().run_connection(stream, peer, tx, rx));
                }
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    warn!(error = %e, "SIP TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Opens a connection to `peer` in the background; `rx` holds what was queued meanwhile.
    fn connect(
        self: &Arc<Self>,
        peer: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        rx: mpsc::Receiver<Bytes>,
    ) {
        let me = self.clone();
        self.runtime.spawn(async move {
            let connected =
                tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(peer)).await;
            match connected {
                Ok(Ok(stream)) => me.run_connection(stream, peer, tx, rx).await,
                Ok(Err(e)) => {
                    warn!(%peer, error = %e, "SIP TCP connect failed");
                    me.forget(peer, &tx);
                }
                Err(_) => {
                    warn!(%peer, "SIP TCP connect timed out");
                    me.forget(peer, &tx);
                }
            }
        });
    }

    /// Removes `peer`'s connection entry if it is still the one fed by `tx`.
    fn forget(&self, peer: SocketAddr, tx: &mpsc::Sender<Bytes>) {
        self.conns.remove_if(&peer, |_, t| t.same_channel(tx));
    }

    /// Runs one TCP connection: a writer task draining `rx`, and the framing reader here.
    async fn run_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
    ) {
        let _ = stream.set_nodelay(true);
        metrics::gauge!("lingxi_sip_tcp_connections").increment(1.0);
        let token = match self.shutdown.get() {
            Some(s) => s.child_token(),
            None => CancellationToken::new(),
        };
        let (mut rd, mut wr) = stream.into_split();
        let epoch = Instant::now();
        let last_write = Arc::new(AtomicU64::new(0));
        let writer = {
            let token = token.clone();
            let last_write = last_write.clone();
            tokio::spawn(async move {
                loop {
                    let msg = tokio::select! {
                        _ = token.cancelled() => break,
                        m = rx.recv() => m,
                    };
                    let Some(msg) = msg else { break };
                    if let Err(e) = wr.write_all(&msg).await {
                        debug!(%peer, error = %e, "SIP TCP write failed");
                        break;
                    }
                    last_write.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                token.cancel();
                let _ = wr.shutdown().await;
            })
        };
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let source = Peer::tcp(peer);
        'read: loop {
            let read = tokio::select! {
                _ = token.cancelled() => break,
                r = tokio::time::timeout(self.idle_timeout, rd.read_buf(&mut buf)) => r,
            };
            match read {
                Err(_) => {
                    let since_write = Duration::from_millis(
                        (epoch.elapsed().as_millis() as u64)
                            .saturating_sub(last_write.load(Ordering::Relaxed)),
                    );
                    if since_write < self.idle_timeout {
                        continue;
                    }
                    debug!(%peer, "SIP TCP connection idle, closing");
                    break;
                }
                Ok(Ok(0)) => break,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "SIP TCP read failed");
                    break;
                }
                Ok(Ok(_)) => {}
            }
            loop {
                match next_frame(&mut buf, self.max_message_bytes) {
                    Ok(None) => break,
                    Ok(Some(Frame::Ping)) => {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                    Ok(Some(Frame::Message(msg))) => {
                        if let Some(ep) = self.endpoint.get() {
                            ep.on_message(&msg, source);
                        }
                    }
                    Err(e) => {
                        metrics::counter!("lingxi_sip_parse_errors_total", "transport" => "tcp")
                            .increment(1);
                        warn!(%peer, error = %e, "closing SIP TCP connection");
                        break 'read;
                    }
                }
            }
        }
        token.cancel();
        self.forget(peer, &tx);
        drop(tx);
        let _ = writer.await;
        metrics::gauge!("lingxi_sip_tcp_connections").decrement(1.0);
    }

    fn send_udp(&self, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        let Some(sock) = &self.udp else {
            return Err(transport_error(peer, "UDP is not enabled"));
        };
        match sock.try_send_to(&data, peer.addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let sock = sock.clone();
                let addr = peer.addr;
                self.runtime.spawn(async move {
                    if let Err(e) = sock.send_to(&data, addr).await {
                        debug!(peer = %addr, error = %e, "SIP UDP send failed");
                    }
                });
                Ok(())
            }
            Err(e) => Err(transport_error(peer, &e.to_string())),
        }
    }

    fn send_tcp(self: &Arc<Self>, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        if self.tcp_addr.is_none() {
            return Err(transport_error(peer, "TCP is not enabled"));
        }
        let existing = self.conns.get(&peer.addr).map(|t| t.clone());
        let data = match existing {
            Some(tx) => match tx.try_send(data) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(transport_error(
                        peer,
                        "TCP send queue full (peer not reading)",
                    ));
                }
                Err(mpsc::error::TrySendError::Closed(data)) => {
                    self.forget(peer.addr, &tx);
                    data
                }
            },
            None => data,
        };
        use dashmap::mapref::entry::Entry;
        match self.conns.entry(peer.addr) {
            Entry::Occupied(o) => {
                // Another send opened it meanwhile.
                let tx = o.get().clone();
                drop(o);
                tx.try_send(data)
                    .map_err(|_| transport_error(peer, "TCP connection unavailable"))
            }
            Entry::Vacant(v) => {
                let (tx, rx) = mpsc::channel(TCP_QUEUE);
                let _ = tx.try_send(data);
                v.insert(tx.clone());
                self.connect(peer.addr, tx, rx);
                Ok(())
            }
        }
    }
}

fn transport_error(peer: &Peer, detail: &str) -> SipError {
    SipError::Transport {
        peer: peer.to_string(),
        detail: detail.to_string(),
    }
}

impl SipTransportSink for SipTransports {
    fn send(&self, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        match peer.transport {
            SipTransport::Udp => self.shared.send_udp(peer, data),
            SipTransport::Tcp => self.shared.send_tcp(peer, data),
        }
    }

    /// The bound port with the advertised host when that is an IP address, else the bound IP
    /// (a wildcard bind reports 127.0.0.1). The endpoint writes `EndpointConfig::host` in Via and
    /// uses only the port from here.
    fn local_addr(&self, transport: SipTransport) -> Option<SocketAddr> {
        let me = &self.shared;
        let bound = match transport {
            SipTransport::Udp => me.udp_addr?,
            SipTransport::Tcp => me.tcp_addr?,
        };
        let ip = match me.advertised_ip {
            Some(ip) => ip,
            None if bound.ip().is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => bound.ip(),
        };
        Some(SocketAddr::new(ip, bound.port()))
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    if let Err(e) = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER) {
        debug!(error = %e, "cannot enlarge the SIP UDP receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(UDP_SOCKET_BUFFER) {
        debug!(error = %e, "cannot enlarge the SIP UDP send buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::from(addr))?;
    UdpSocket::from_std(sock.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted node must be able to listen again while old connections sit in TIME_WAIT.
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

async fn udp_loop(sock: Arc<UdpSocket>, endpoint: Endpoint, shutdown: CancellationToken) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = sock.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, from)) => endpoint.on_message(&buf[..n], Peer::udp(from)),
            Err(e) => {
                // ICMP errors reported on the socket (e.g. ECONNREFUSED) are not fatal.
                debug!(error = %e, "SIP UDP receive error");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// One unit read from a TCP stream.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// An RFC 5626 keep-alive ping (CRLFCRLF), to be answered with CRLF.
    Ping,
    /// One SIP message, headers and body.
    Message(Bytes),
}

/// Why a TCP stream cannot be framed: the connection is closed.
#[derive(Debug, PartialEq, Eq)]
enum FrameError {
    /// No end of headers within the size limit.
    HeadersTooLarge(usize),
    /// Headers plus declared body exceed the limit.
    TooLarge(usize),
    /// Content-Length is not a number.
    BadContentLength(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::HeadersTooLarge(limit) => {
                write!(f, "no end of SIP headers within {limit} bytes")
            }
            FrameError::TooLarge(size) => write!(f, "SIP message of {size} bytes is too large"),
            FrameError::BadContentLength(v) => write!(f, "Content-Length {v:?} is not a number"),
        }
    }
}

/// Takes the next frame off the front of `buf` (RFC 3261 §18.3): headers end at CRLFCRLF, the
/// body is Content-Length bytes (0 when absent). Leading CRLFs are keep-alives: CRLFCRLF is a
/// ping, a lone CRLF (a pong) is skipped. `Ok(None)`: more bytes are needed.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    while buf.starts_with(b"\r\n") {
        if buf.starts_with(b"\r\n\r\n") {
            let _ = buf.split_to(4);
            return Ok(Some(Frame::Ping));
        }
        if buf.len() < 4 && b"\r\n\r\n".starts_with(&buf[..]) {
            return Ok(None); // maybe the start of a ping
        }
        let _ = buf.split_to(2);
    }
    let Some(end) = find_header_end(buf, max) else {
        if buf.len() > max {
            return Err(FrameError::HeadersTooLarge(max));
        }
        return Ok(None);
    };
    let body_len = content_length(&buf[..end])?;
    let total = end
        .checked_add(4)
        .and_then(|n| n.checked_add(body_len))
        .ok_or(FrameError::TooLarge(usize::MAX))?;
    if total > max {
        return Err(FrameError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame::Message(buf.split_to(total).freeze())))
}

/// Position of the CRLFCRLF ending the headers, searched within the first `max + 4` bytes.
fn find_header_end(buf: &[u8], max: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(max.saturating_add(4))];
    window.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The Content-Length (or compact `l`) value in a header block; 0 when absent.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = line[colon + 1..].trim_ascii();
            return std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    FrameError::BadContentLength(String::from_utf8_lossy(value).into_owned())
                });
        }
    }
    Ok(0)
}
