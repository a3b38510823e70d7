//! The transaction layer of RFC 3261 §17, with the RFC 6026 changes for 2xx to INVITE.
//!
//! One [`Endpoint`] per node sits between the transports (which call [`Endpoint::on_message`]
//! for every datagram or framed TCP message) and the transaction user, the call actors (which get
//! [`Incoming`] events and answer through [`ServerTransaction::respond`], and send requests with
//! [`Endpoint::send_request`]).
//!
//! * Server transactions live in a sharded map keyed by top-Via branch and method (ACK maps to
//!   INVITE), holding only a `Weak` reference: the TU's handles and the timer task of the
//!   completed phase keep a transaction alive, and when the last one goes the entry is removed.
//!   A transaction dropped by the TU without a final response is answered `500` so the caller is
//!   never left hanging.
//! * An INVITE server transaction that sent a 2xx retransmits it (T1 doubling up to T2) until the
//!   ACK (matched by Call-ID and CSeq, as that ACK has its own branch) or 64·T1, then raises
//!   [`Incoming::AckTimeout`]. A non-2xx final runs timers G, H and I and absorbs the ACK.
//!   A non-INVITE server transaction keeps its last response for Timer J (UDP only).
//!   Deviation from §17.2.1: no 100 Trying is sent on receipt; if the INVITE is retransmitted
//!   before the TU answered anything, the layer answers the retransmission with 100 Trying.
//! * Client transactions each run one small task owning the state machine and timers
//!   A/B/D (INVITE) or E/F/K (others); responses reach it through a channel found by branch and
//!   CSeq method. A 2xx ends an INVITE client transaction at once (the TU acknowledges it with
//!   [`Endpoint::send_ack`]); later retransmissions of that 2xx are answered by re-sending the
//!   remembered ACK. Beyond RFC 3261, an INVITE stuck in Proceeding gives up after
//!   [`PROCEEDING_LIMIT`] (proxy Timer C), and 64·T1 after a CANCEL was sent.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use lingxi_cluster::SipTransport;
use parking_lot::Mutex;
use rsip::Header;
use rsip::prelude::*;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use super::SipError;
use super::message::{self, method_str};

#[cfg(test)]
mod tests;

/// How long an INVITE client transaction waits in Proceeding (after a provisional) for a final
/// response before reporting [`ClientEvent::Timeout`]: proxy Timer C of RFC 3261 §16.8, so a
/// peer that rings forever cannot pin a transaction.
pub const PROCEEDING_LIMIT: Duration = Duration::from_secs(180);

/// Where a message came from or goes to: a transport and a socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP or TCP; for TCP, the transport reuses the connection to `addr`.
    pub transport: SipTransport,
    /// The peer's IP address and port.
    pub addr: SocketAddr,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: SipTransport::Udp,
            addr,
        }
    }
    /// A TCP peer.
    pub fn tcp(addr: SocketAddr) -> Peer {
        Peer {
            transport: SipTransport::Tcp,
            addr,
        }
    }
    fn reliable(&self) -> bool {
        self.transport == SipTransport::Tcp
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
        };
        write!(f, "{t}:{}", self.addr)
    }
}

/// The node's sockets as the transaction layer sees them (implemented in `lingxi-node`, and by
/// in-memory fakes in tests).
pub trait SipTransportSink: Send + Sync + 'static {
    /// Queues `data` for `peer` without blocking; TCP may connect in the background, in which case
    /// a failure to connect is only logged.
    fn send(&self, peer: &Peer, data: Bytes) -> Result<(), SipError>;
    /// The bound address of a transport (its port goes into Via); `None` when that transport is
    /// not enabled.
    fn local_addr(&self, transport: SipTransport) -> Option<SocketAddr>;
}

/// The transaction user: the layer above (call actors), told about every new request.
pub trait TransactionUser: Send + Sync + 'static {
    /// Called on the receive path: must not block (cast to an actor and return).
    fn on_incoming(&self, incoming: Incoming);
}

/// What the transaction layer hands the TU.
#[derive(Debug)]
pub enum Incoming {
    /// A new request (not ACK or CANCEL, and not a retransmission); answer it on `tx`.
    Request {
        /// The request, its top Via stamped with `received`/`rport` as RFC 3581 asks.
        request: rsip::Request,
        /// Where it came from (for TCP: the connection).
        source: Peer,
        /// The server transaction to answer on.
        tx: ServerTransaction,
    },
    /// An ACK for a 2xx (end-to-end, outside any transaction).
    Ack {
        /// The ACK.
        request: rsip::Request,
        /// Where it came from.
        source: Peer,
    },
    /// A CANCEL for an INVITE not yet answered finally. The layer already answered the CANCEL
    /// with 200; the TU should answer `invite` with 487.
    Cancel {
        /// The CANCEL.
        request: rsip::Request,
        /// Where it came from.
        source: Peer,
        /// The INVITE's server transaction.
        invite: ServerTransaction,
    },
    /// We sent a 2xx to an INVITE and no ACK came within 64·T1: the TU should hang up (BYE).
    AckTimeout {
        /// The INVITE's Call-ID.
        call_id: String,
        /// The INVITE's CSeq number.
        cseq: u32,
    },
}

/// Timers and identity of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Timer T1, the round-trip estimate: base of every retransmission interval.
    pub t1: Duration,
    /// Timer T2, the cap on retransmission intervals of non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Timer T4, the longest a message may stay in the network: sizes timers I and K.
    pub t4: Duration,
    /// Largest message accepted; larger ones are answered 513 when possible.
    pub max_message_bytes: usize,
    /// Written in `User-Agent` of the requests we send when the TU set none.
    pub user_agent: String,
    /// Host written in our Via (the port comes from the transport's bound address).
    pub host: String,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            max_message_bytes: 65_535,
            user_agent: "Lingxi".into(),
            host: "127.0.0.1".into(),
        }
    }
}

impl EndpointConfig {
    /// Builds the endpoint's settings from the `[sip]` section of the node's configuration.
    pub fn from_section(sip: &lingxi_config::SipSection) -> EndpointConfig {
        EndpointConfig {
            t1: Duration::from_millis(sip.t1_ms),
            t2: Duration::from_millis(sip.t2_ms),
            t4: Duration::from_millis(sip.t4_ms),
            max_message_bytes: sip.max_message_bytes,
            user_agent: sip.user_agent.clone(),
            host: sip.advertised_host(),
        }
    }
}

/// Method index used in transaction keys (rsip's `Method` is not `Hash`). ACK shares INVITE's
/// index: an ACK for a non-2xx belongs to the INVITE's server transaction (§17.2.3).
fn method_key(m: &rsip::Method) -> u8 {
    use rsip::Method::*;
    match m {
        Invite | Ack => 0,
        Cancel => 1,
        Bye => 2,
        Info => 3,
        Message => 4,
        Notify => 5,
        Options => 6,
        PRack => 7,
        Publish => 8,
        Refer => 9,
        Register => 10,
        Subscribe => 11,
        Update => 12,
    }
}

/// Transaction key: top Via branch and method key.
type TxKey = (String, u8);

fn count_in(kind: &'static str, method: &rsip::Method) {
    metrics::counter!("lingxi_sip_messages_in_total", "type" => kind, "method" => method_str(method))
        .increment(1);
}
fn count_out(kind: &'static str, method: &rsip::Method) {
    metrics::counter!("lingxi_sip_messages_out_total", "type" => kind, "method" => method_str(method))
        .increment(1);
}
fn count_retransmission() {
    metrics::counter!("lingxi_sip_retransmissions_total").increment(1);
}
fn transport_label(t: SipTransport) -> &'static str {
    match t {
        SipTransport::Udp => "udp",
        SipTransport::Tcp => "tcp",
    }
}

/// The SIP endpoint: owns every transaction of the node. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.inner.cfg.host)
            .field("active_transactions", &self.active_transactions())
            .finish()
    }
}

struct Inner {
    /// Timers and identity.
    cfg: EndpointConfig,
    /// The sockets.
    transport: Arc<dyn SipTransportSink>,
    /// The layer above.
    tu: Arc<dyn TransactionUser>,
    /// Server transactions by (branch, method); `Weak` so they end when nobody holds them.
    servers: DashMap<TxKey, Weak<ServerInner>>,
    /// INVITE server transactions that sent a 2xx, by (Call-ID, CSeq): the ACK for a 2xx has a
    /// new branch, so it is matched here (RFC 6026).
    accepted: DashMap<(String, u32), Weak<ServerInner>>,
    /// Client transactions by (branch, method): the channel to their task.
    clients: DashMap<TxKey, mpsc::UnboundedSender<ClientMsg>>,
    /// ACKs we sent for 2xx responses, by (Call-ID, CSeq), kept 64·T1 to answer 2xx
    /// retransmissions.
    acks: DashMap<(String, u32), (Bytes, Peer)>,
    /// Live transactions (server and client), for [`Endpoint::active_transactions`].
    live: AtomicUsize,
}

impl Inner {
    fn send(&self, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        self.transport.send(peer, data)
    }

    fn tx_started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("lingxi_sip_transactions").increment(1.0);
    }

    fn tx_ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("lingxi_sip_transactions").decrement(1.0);
    }

    /// 64·T1: timers B, F, H, J, L and the 2xx retransmission window.
    fn t64(&self) -> Duration {
        self.cfg.t1 * 64
    }
}

impl Endpoint {
    /// Creates the endpoint. It spawns nothing until messages flow; timers run on the current
    /// tokio runtime.
    pub fn new(
        cfg: EndpointConfig,
        transport: Arc<dyn SipTransportSink>,
        tu: Arc<dyn TransactionUser>,
    ) -> Endpoint {
        Endpoint {
            inner: Arc::new(Inner {
                cfg,
                transport,
                tu,
                servers: DashMap::new(),
                accepted: DashMap::new(),
                clients: DashMap::new(),
                acks: DashMap::new(),
                live: AtomicUsize::new(0),
            }),
        }
    }

    /// The endpoint's settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.inner.cfg
    }

    /// The bound address of a transport, as reported by the transport sink.
    pub fn local_addr(&self, t: SipTransport) -> Option<SocketAddr> {
        self.inner.transport.local_addr(t)
    }

    /// Server and client transactions currently alive (including those only absorbing
    /// retransmissions).
    pub fn active_transactions(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Handles one received datagram or framed TCP message. Never panics and never blocks.
    pub fn on_message(&self, data: &[u8], source: Peer) {
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        {
            return; // CRLF keep-alive (RFC 5626 §4.4.1)
        }
        if matches!(data.first(), Some(0 | 1)) {
            return; // a STUN keep-alive (RFC 5626 §4.4.2) multiplexed on the port: not SIP
        }
        match message::parse(data, self.inner.cfg.max_message_bytes) {
            Ok(rsip::SipMessage::Request(req)) => self.on_request(req, source),
            Ok(rsip::SipMessage::Response(resp)) => self.on_response(resp, source),
            Err(e) => self.on_parse_error(data, source, e),
        }
    }

    fn on_parse_error(&self, data: &[u8], source: Peer, e: SipError) {
        metrics::counter!("lingxi_sip_parse_errors_total", "transport" => transport_label(source.transport))
            .increment(1);
        let code = if matches!(e, SipError::TooLarge { .. }) {
            513
        } else {
            400
        };
        let Some(salvaged) = message::salvage_request(data) else {
            debug!(%source, error = %e, "dropping unparseable SIP message");
            return;
        };
        debug!(%source, error = %e, code, "answering malformed SIP request");
        let dest = response_destination(salvaged.vias[0], source);
        let bytes = message::encode_salvaged_response(
            &salvaged,
            code,
            &self.inner.cfg.host,
            &e.to_string(),
        );
        if let Err(err) = self.inner.send(&dest, bytes) {
            debug!(%dest, error = %err, "cannot send error response");
        }
    }

    fn on_request(&self, mut req: rsip::Request, source: Peer) {
        count_in("request", &req.method);
        let top = message::top_via_str(&req.headers).unwrap_or("");
        let Some(via) = message::parse_via(top) else {
            self.reject(&req, source, 400, "the top Via header is unreadable");
            return;
        };
        let reply_to = response_destination(top, source);
        let key: TxKey = match via.branch {
            Some(b) if b.starts_with("z9hG4bK") => (b.to_string(), method_key(&req.method)),
            // RFC 2543 peer: no magic cookie, so build a key from what identifies its request.
            _ => (
                format!(
                    "2543|{}|{}|{}|{}",
                    message::call_id_str(&req.headers).unwrap_or(""),
                    message::cseq(&req).map(|c| c.0).unwrap_or(0),
                    message::from_tag(&req).unwrap_or_default(),
                    top
                ),
                method_key(&req.method),
            ),
        };
        // RFC 3261 §18.2.1 / RFC 3581: record where the request really came from.
        if let Some(h) = req.headers.iter_mut().find(|h| matches!(h, Header::Via(_)))
            && let Header::Via(v) = h
            && let Some(stamped) = message::stamp_top_via(v.value(), source.addr)
        {
            *v = rsip::headers::Via::new(stamped);
        }
        match req.method {
            rsip::Method::Ack => self.on_ack(req, source, key),
            rsip::Method::Cancel => self.on_cancel(req, source, reply_to, key),
            _ => {
                if let Some(existing) = self.lookup_server(&key) {
                    existing.on_retransmission();
                    return;
                }
                let Some(tx) = self.new_server(req.clone(), source, reply_to, key) else {
                    return;
                };
                self.inner.tu.on_incoming(Incoming::Request {
                    request: req,
                    source,
                    tx,
                });
            }
        }
    }

    /// Answers a request statelessly (used when no transaction can be made for it).
    fn reject(&self, req: &rsip::Request, source: Peer, code: u16, problem: &str) {
        if req.method == rsip::Method::Ack {
            return;
        }
        let mut resp = message::response_for(req, code, None, None);
        resp.headers
            .push(Header::Warning(rsip::headers::Warning::new(format!(
                "399 {} \"{}\"",
                self.inner.cfg.host,
                message::warning_text(problem)
            ))));
        let _ = self.send_stateless(resp, source);
    }

    fn lookup_server(&self, key: &TxKey) -> Option<Arc<ServerInner>> {
        // The shard guard is released inside `and_then`, before the caller can drop the Arc
        // (dropping the last Arc removes the entry from this same map: never under a guard).
        self.inner.servers.get(key).and_then(|w| w.upgrade())
    }

    fn new_server(
        &self,
        request: rsip::Request,
        source: Peer,
        reply_to: Peer,
        key: TxKey,
    ) -> Option<ServerTransaction> {
        let call_id = message::call_id_str(&request.headers)
            .unwrap_or("")
            .to_string();
        let cseq = message::cseq(&request).map(|c| c.0).unwrap_or(0);
        let is_invite = request.method == rsip::Method::Invite;
        let inner = Arc::new(ServerInner {
            endpoint: self.inner.clone(),
            key: key.clone(),
            request,
            source,
            reply_to,
            is_invite,
            call_id,
            cseq,
            state: Mutex::new(ServerState::default()),
            ack: Notify::new(),
        });
        // Counted from here: its Drop counts the end, even if it loses the race below.
        self.inner.tx_started();
        {
            use dashmap::mapref::entry::Entry;
            match self.inner.servers.entry(key) {
                Entry::Occupied(mut o) => {
                    if o.get().strong_count() > 0 {
                        // Lost a race with a retransmission handled concurrently.
                        drop(o);
                        // Mark answered so its Drop sends nothing.
                        inner.state.lock().final_code = Some(0);
                        return None;
                    }
                    o.insert(Arc::downgrade(&inner));
                }
                Entry::Vacant(v) => {
                    v.insert(Arc::downgrade(&inner));
                }
            }
        }
        Some(ServerTransaction { inner })
    }

    fn on_ack(&self, req: rsip::Request, source: Peer, key: TxKey) {
        if let Some(invite) = self.lookup_server(&key) {
            let final_code = {
                let mut st = invite.state.lock();
                st.acked = true;
                st.final_code
            };
            invite.ack.notify_one();
            match final_code {
                Some(c) if c >= 300 => return, // absorbed: ACK for a non-2xx (§17.2.1)
                Some(_) => {}
                None => {
                    debug!(call_id = %invite.call_id, "ACK before any final response, ignored");
                    return;
                }
            }
        } else if let (Some(call_id), Ok((cseq, _))) =
            (message::call_id_str(&req.headers), message::cseq(&req))
        {
            let found = self
                .inner
                .accepted
                .get(&(call_id.to_string(), cseq))
                .and_then(|w| w.upgrade());
            if let Some(invite) = found {
                invite.state.lock().acked = true;
                invite.ack.notify_one();
            }
        }
        self.inner.tu.on_incoming(Incoming::Ack {
            request: req,
            source,
        });
    }

    fn on_cancel(&self, req: rsip::Request, source: Peer, reply_to: Peer, key: TxKey) {
        if let Some(existing) = self.lookup_server(&key) {
            existing.on_retransmission();
            return;
        }
        let invite_key = (key.0.clone(), method_key(&rsip::Method::Invite));
        let invite = self.lookup_server(&invite_key);
        let Some(cancel_tx) = self.new_server(req.clone(), source, reply_to, key) else {
            return;
        };
        let Some(invite) = invite else {
            let resp = message::response_for(&req, 481, None, Some(&message::new_tag()));
            let _ = cancel_tx.respond(resp);
            return;
        };
        let to_tag = invite.state.lock().to_tag.clone();
        let resp = message::response_for(&req, 200, None, to_tag.as_deref());
        let _ = cancel_tx.respond(resp);
        if invite.state.lock().final_code.is_none() {
            self.inner.tu.on_incoming(Incoming::Cancel {
                request: req,
                source,
                invite: ServerTransaction { inner: invite },
            });
        }
    }

    fn on_response(&self, resp: rsip::Response, source: Peer) {
        let Ok((cseq, method)) = message::cseq(&resp) else {
            return;
        };
        count_in("response", &method);
        let branch = message::top_via_str(&resp.headers)
            .and_then(message::parse_via)
            .and_then(|v| v.branch.map(str::to_string));
        let Some(branch) = branch else {
            debug!(%source, "response without a Via branch, dropped");
            return;
        };
        let code = resp.status_code.code();
        let sender = self
            .inner
            .clients
            .get(&(branch, method_key(&method)))
            .map(|s| s.clone());
        let resp = match sender {
            Some(s) => match s.send(ClientMsg::Response(resp)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(ClientMsg::Response(r))) => r,
                Err(_) => return,
            },
            None => resp,
        };
        if (200..300).contains(&code) && method == rsip::Method::Invite {
            let Some(call_id) = message::call_id_str(&resp.headers) else {
                return;
            };
            let ack = self
                .inner
                .acks
                .get(&(call_id.to_string(), cseq))
                .map(|e| e.clone());
            if let Some((bytes, dest)) = ack {
                count_retransmission();
                count_out("request", &rsip::Method::Ack);
                let _ = self.inner.send(&dest, bytes);
            } else {
                debug!(%call_id, cseq, "2xx retransmission before our ACK, dropped");
            }
        } else {
            debug!(%source, code, "response matches no client transaction, dropped");
        }
    }

    /// Sends a request in a new client transaction: prepends our Via
    /// (`SIP/2.0/UDP|TCP host:port;branch=<new>;rport`), adds `Max-Forwards: 70` and
    /// `User-Agent` when absent; INVITE runs timers A, B, D, other methods E, F, K (A and E only
    /// over UDP). ACK is refused: use [`Endpoint::send_ack`].
    pub fn send_request(
        &self,
        mut req: rsip::Request,
        dest: Peer,
    ) -> Result<ClientTransaction, SipError> {
        if req.method == rsip::Method::Ack {
            return Err(SipError::Dialog {
                call_id: message::call_id(&req).unwrap_or_default(),
                detail: "an ACK is not sent in a transaction: use send_ack".into(),
            });
        }
        let call_id = message::call_id(&req)?;
        message::cseq(&req)?;
        let branch = message::new_branch();
        self.prepare_request(&mut req, dest, &branch)?;
        self.start_client(req, dest, branch, call_id)
    }

    /// Prepends our Via with `branch` and fills Max-Forwards and User-Agent.
    fn prepare_request(
        &self,
        req: &mut rsip::Request,
        dest: Peer,
        branch: &str,
    ) -> Result<(), SipError> {
        let local = self
            .inner
            .transport
            .local_addr(dest.transport)
            .ok_or_else(|| SipError::Transport {
                peer: dest.to_string(),
                detail: format!("no {} transport is bound", dest.transport),
            })?;
        let via = format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            dest.transport,
            self.inner.cfg.host,
            local.port()
        );
        let mut headers: Vec<Header> = std::mem::take(&mut req.headers).into();
        headers.insert(0, Header::Via(rsip::headers::Via::new(via)));
        if !headers.iter().any(|h| matches!(h, Header::MaxForwards(_))) {
            headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        }
        if !self.inner.cfg.user_agent.is_empty()
            && !headers.iter().any(|h| matches!(h, Header::UserAgent(_)))
        {
            headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
                self.inner.cfg.user_agent.clone(),
            )));
        }
        req.headers = headers.into();
        Ok(())
    }

    /// Starts a client transaction for a request whose top Via already carries `branch`.
    fn start_client(
        &self,
        req: rsip::Request,
        dest: Peer,
        branch: String,
        call_id: String,
    ) -> Result<ClientTransaction, SipError> {
        let bytes = message::encode_request(&req);
        let method = req.method;
        let key: TxKey = (branch.clone(), method_key(&method));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        {
            use dashmap::mapref::entry::Entry;
            match self.inner.clients.entry(key.clone()) {
                Entry::Occupied(_) => {
                    return Err(SipError::Dialog {
                        call_id,
                        detail: format!(
                            "a {} transaction with branch {branch} already exists",
                            method_str(&method)
                        ),
                    });
                }
                Entry::Vacant(v) => {
                    v.insert(cmd_tx.clone());
                }
            }
        }
        if let Err(e) = self.inner.send(&dest, bytes.clone()) {
            self.inner.clients.remove(&key);
            return Err(e);
        }
        count_out("request", &method);
        self.inner.tx_started();
        let driver = ClientDriver {
            inner: self.inner.clone(),
            key,
            dest,
            bytes,
            method,
            request: (method == rsip::Method::Invite).then_some(req),
            events: ev_tx,
        };
        if method == rsip::Method::Invite {
            tokio::spawn(driver.run_invite(cmd_rx));
        } else {
            tokio::spawn(driver.run_non_invite(cmd_rx));
        }
        Ok(ClientTransaction {
            branch,
            method,
            call_id,
            events: ev_rx,
            cmd: cmd_tx,
            finished: false,
        })
    }

    /// Sends the ACK for a 2xx (end-to-end, no transaction): prepends a Via with a new branch,
    /// sends it now, and remembers it 64·T1 by (Call-ID, CSeq) to answer retransmissions of the
    /// 2xx.
    pub fn send_ack(&self, mut ack: rsip::Request, dest: Peer) -> Result<(), SipError> {
        let call_id = message::call_id(&ack)?;
        let (cseq, _) = message::cseq(&ack)?;
        self.prepare_request(&mut ack, dest, &message::new_branch())?;
        let bytes = message::encode_request(&ack);
        self.inner.send(&dest, bytes.clone())?;
        count_out("request", &rsip::Method::Ack);
        let key = (call_id, cseq);
        self.inner.acks.insert(key.clone(), (bytes, dest));
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(inner.t64()).await;
            inner.acks.remove(&key);
        });
        Ok(())
    }

    /// Sends a response outside any transaction (e.g. to a request that could not get one).
    pub fn send_stateless(&self, resp: rsip::Response, dest: Peer) -> Result<(), SipError> {
        let bytes = message::encode_response(&resp);
        self.inner.send(&dest, bytes)?;
        if let Ok((_, m)) = message::cseq(&resp) {
            count_out("response", &m);
        }
        Ok(())
    }
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4): over TCP the connection it
/// came on; over UDP the source address when `rport` was asked for, else the source IP (the
/// `received` address) at the Via's port (5060 by default). No DNS is ever needed.
fn response_destination(top_via: &str, source: Peer) -> Peer {
    if source.reliable() {
        return source;
    }
    match message::parse_via(top_via) {
        Some(v) if v.rport.is_none() => {
            Peer::udp(SocketAddr::new(source.addr.ip(), v.port.unwrap_or(5060)))
        }
        _ => source,
    }
}

/// Mutable part of a server transaction.
#[derive(Default)]
struct ServerState {
    /// The last response sent, encoded, re-sent when the request is retransmitted.
    last: Option<Bytes>,
    /// The final status sent (0: answered internally); `None` while only provisionals went out.
    final_code: Option<u16>,
    /// The To tag of our responses, reused when answering a CANCEL for this INVITE.
    to_tag: Option<String>,
    /// Whether the ACK for our final response came.
    acked: bool,
}

struct ServerInner {
    /// The endpoint (for sending, the maps and the TU).
    endpoint: Arc<Inner>,
    /// This transaction's key in `servers`.
    key: TxKey,
    /// The request that created it.
    request: rsip::Request,
    /// Where the request came from.
    source: Peer,
    /// Where responses go.
    reply_to: Peer,
    /// INVITE server transactions run timers G/H/I and the 2xx retransmission.
    is_invite: bool,
    /// The request's Call-ID, for logs, errors and the `accepted` map.
    call_id: String,
    /// The request's CSeq number, for the `accepted` map.
    cseq: u32,
    /// Responses sent so far.
    state: Mutex<ServerState>,
    /// Woken when the ACK arrives, to stop retransmitting at once.
    ack: Notify,
}

impl ServerInner {
    /// The request came again: re-send the last response (or 100 Trying for an INVITE the TU has
    /// not answered yet).
    fn on_retransmission(&self) {
        let bytes = {
            let mut st = self.state.lock();
            match &st.last {
                Some(b) => b.clone(),
                None if self.is_invite => {
                    let trying = message::response_for(&self.request, 100, None, None);
                    let b = message::encode_response(&trying);
                    st.last = Some(b.clone());
                    b
                }
                None => return,
            }
        };
        count_retransmission();
        count_out("response", &self.request.method);
        let _ = self.endpoint.send(&self.reply_to, bytes);
    }

    fn remove_from_maps(&self) {
        let me = self as *const ServerInner;
        self.endpoint
            .servers
            .remove_if(&self.key, |_, w| std::ptr::eq(w.as_ptr(), me));
        if self.is_invite {
            self.endpoint
                .accepted
                .remove_if(&(self.call_id.clone(), self.cseq), |_, w| {
                    std::ptr::eq(w.as_ptr(), me)
                });
        }
    }

    /// After a final response to an INVITE: retransmit it (a 2xx over any transport, a non-2xx
    /// over UDP only), T1 doubling to T2, until the ACK or 64·T1 (timers G and H, or the RFC 6026
    /// 2xx window); then Timer I for a non-2xx over UDP.
    async fn run_invite_completed(self: Arc<Self>, bytes: Bytes, is_2xx: bool) {
        let cfg = &self.endpoint.cfg;
        let retransmit = is_2xx || !self.reply_to.reliable();
        let deadline = Instant::now() + self.endpoint.t64();
        let mut interval = cfg.t1;
        let mut next = Instant::now() + interval;
        loop {
            if self.state.lock().acked {
                if !is_2xx && !self.reply_to.reliable() {
                    tokio::time::sleep(cfg.t4).await; // Timer I: absorb ACK retransmissions
                }
                break;
            }
            let wake = if retransmit {
                next.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = self.ack.notified() => continue,
            }
            if self.state.lock().acked {
                continue;
            }
            if Instant::now() >= deadline {
                if is_2xx {
                    warn!(call_id = %self.call_id, cseq = self.cseq, "no ACK for our 2xx within 64*T1");
                    self.endpoint.tu.on_incoming(Incoming::AckTimeout {
                        call_id: self.call_id.clone(),
                        cseq: self.cseq,
                    });
                } else {
                    debug!(call_id = %self.call_id, "no ACK for our final response (Timer H)");
                }
                break;
            }
            count_retransmission();
            count_out("response", &rsip::Method::Invite);
            let _ = self.endpoint.send(&self.reply_to, bytes.clone());
            interval = (interval * 2).min(cfg.t2);
            next = Instant::now() + interval;
        }
        self.remove_from_maps();
    }
}

impl Drop for ServerInner {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if st.final_code.is_none() && self.request.method != rsip::Method::Ack {
            // The TU dropped every handle without answering: do not leave the peer waiting.
            warn!(call_id = %self.call_id, method = method_str(&self.request.method),
                "server transaction dropped unanswered, answering 500");
            let resp = message::response_for(&self.request, 500, None, Some(&message::new_tag()));
            let _ = self
                .endpoint
                .send(&self.reply_to, message::encode_response(&resp));
        }
        self.remove_from_maps();
        self.endpoint.tx_ended();
    }
}

/// A server transaction: the TU's handle to answer one request. Cheap to clone; the transaction
/// lives while a handle or its timers do.
#[derive(Clone)]
pub struct ServerTransaction {
    inner: Arc<ServerInner>,
}

impl fmt::Debug for ServerTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTransaction")
            .field("method", &method_str(&self.inner.request.method))
            .field("call_id", &self.inner.call_id)
            .field("branch", &self.inner.key.0)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl ServerTransaction {
    /// Sends a response: any number of provisionals, then one final (a second final is an
    /// error). The layer then takes care of retransmissions: a 2xx to an INVITE until its ACK
    /// (or [`Incoming::AckTimeout`]), a non-2xx to an INVITE per timers G/H/I, a non-INVITE final
    /// for Timer J. The response goes to the request's Via-derived address (RFC 3581).
    pub fn respond(&self, resp: rsip::Response) -> Result<(), SipError> {
        let inner = &self.inner;
        let code = resp.status_code.code();
        if !(100..700).contains(&code) {
            return Err(SipError::Dialog {
                call_id: inner.call_id.clone(),
                detail: format!("status code {code} is not a SIP status"),
            });
        }
        let bytes = message::encode_response(&resp);
        {
            let mut st = inner.state.lock();
            if let Some(prev) = st.final_code {
                return Err(SipError::Dialog {
                    call_id: inner.call_id.clone(),
                    detail: format!(
                        "{} already answered with {prev}; cannot send {code}",
                        method_str(&inner.request.method)
                    ),
                });
            }
            if code >= 200 {
                st.final_code = Some(code);
            }
            if st.to_tag.is_none() {
                st.to_tag = message::to_tag(&resp);
            }
            st.last = Some(bytes.clone());
        }
        let endpoint = &inner.endpoint;
        if inner.is_invite && (200..300).contains(&code) {
            // Registered before sending, so an ACK racing the 2xx is always matched.
            endpoint.accepted.insert(
                (inner.call_id.clone(), inner.cseq),
                Arc::downgrade(&self.inner),
            );
        }
        let sent = endpoint.send(&inner.reply_to, bytes.clone());
        count_out("response", &inner.request.method);
        if code >= 200 {
            if inner.is_invite {
                tokio::spawn(self.inner.clone().run_invite_completed(bytes, code < 300));
            } else if !inner.reply_to.reliable() {
                // Timer J: keep absorbing retransmissions of the request.
                let me = self.inner.clone();
                let wait = endpoint.t64();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    me.remove_from_maps();
                });
            } else {
                inner.remove_from_maps();
            }
        }
        sent
    }

    /// The request this transaction answers.
    pub fn request(&self) -> &rsip::Request {
        &self.inner.request
    }

    /// Where the request came from.
    pub fn source(&self) -> Peer {
        self.inner.source
    }

    /// Where responses are sent (RFC 3581: the source for `rport`, else the Via port).
    pub fn reply_to(&self) -> Peer {
        self.inner.reply_to
    }

    /// The final status sent, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.inner.state.lock().final_code.filter(|c| *c >= 100)
    }
}

/// Messages to a client transaction's task.
enum ClientMsg {
    /// A response matched by branch and CSeq method.
    Response(rsip::Response),
    /// The TU asked to cancel (INVITE only).
    Cancel,
}

/// What a client transaction reports to the TU.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A 1xx response (may come several times).
    Provisional(rsip::Response),
    /// The final response; nothing follows.
    Final(rsip::Response),
    /// No final response in time (Timer B/F, or the CANCEL and Proceeding limits); nothing follows.
    Timeout,
    /// A retransmission could not be sent; nothing follows.
    TransportError(String),
}

/// The TU's side of a client transaction: read events with [`ClientTransaction::next`].
/// Dropping it does not stop the transaction (it still ACKs and absorbs retransmissions).
#[derive(Debug)]
pub struct ClientTransaction {
    /// Our Via branch.
    branch: String,
    /// The request's method.
    method: rsip::Method,
    /// The request's Call-ID, for errors.
    call_id: String,
    /// Events from the transaction's task.
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// Commands to the task (cancel).
    cmd: mpsc::UnboundedSender<ClientMsg>,
    /// Set after the final event, so `next` returns `None` from then on.
    finished: bool,
}

impl fmt::Debug for ClientMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientMsg::Response(r) => write!(f, "Response({})", r.status_code.code()),
            ClientMsg::Cancel => f.write_str("Cancel"),
        }
    }
}

impl ClientTransaction {
    /// The next event; `None` after the final one (Final, Timeout or TransportError).
    pub async fn next(&mut self) -> Option<ClientEvent> {
        if self.finished {
            return None;
        }
        let ev = self.events.recv().await;
        if !matches!(ev, Some(ClientEvent::Provisional(_))) {
            self.finished = true;
        }
        ev
    }

    /// Cancels an INVITE (RFC 3261 §9.1): the CANCEL (same Request-URI, Call-ID, From, To, CSeq
    /// number and top Via) goes in its own transaction as soon as a provisional has been
    /// received. If the INVITE is answered 2xx anyway, the TU still sees `Final(2xx)` and must
    /// ACK and BYE. Cancelling a finished transaction does nothing.
    pub fn cancel(&self) -> Result<(), SipError> {
        if self.method != rsip::Method::Invite {
            return Err(SipError::Dialog {
                call_id: self.call_id.clone(),
                detail: format!(
                    "only an INVITE can be cancelled, not {}",
                    method_str(&self.method)
                ),
            });
        }
        let _ = self.cmd.send(ClientMsg::Cancel);
        Ok(())
    }

    /// Our Via branch (the transaction id).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The request's method.
    pub fn method(&self) -> rsip::Method {
        self.method
    }
}

/// The task state of one client transaction.
struct ClientDriver {
    /// The endpoint.
    inner: Arc<Inner>,
    /// Key in `clients`.
    key: TxKey,
    /// Where the request goes.
    dest: Peer,
    /// The encoded request, for retransmissions.
    bytes: Bytes,
    /// The request's method, for metrics.
    method: rsip::Method,
    /// The INVITE itself, to build its ACK and CANCEL (None for other methods).
    request: Option<rsip::Request>,
    /// To the TU.
    events: mpsc::UnboundedSender<ClientEvent>,
}

/// Phases of a client transaction (RFC 3261 figures 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Proceeding,
    Completed,
}

impl ClientDriver {
    fn emit(&self, ev: ClientEvent) {
        let _ = self.events.send(ev);
    }

    fn retransmit(&self) -> bool {
        count_retransmission();
        count_out("request", &self.method);
        match self.inner.send(&self.dest, self.bytes.clone()) {
            Ok(()) => true,
            Err(e) => {
                self.emit(ClientEvent::TransportError(e.to_string()));
                false
            }
        }
    }

    fn finish(&self) {
        self.inner.clients.remove(&self.key);
        self.inner.tx_ended();
    }

    /// INVITE client transaction: timers A (UDP), B, D; ACKs non-2xx finals itself.
    async fn run_invite(self, mut rx: mpsc::UnboundedReceiver<ClientMsg>) {
        let cfg = &self.inner.cfg;
        let udp = !self.dest.reliable();
        let start = Instant::now();
        let timer_b = start + self.inner.t64();
        let mut a = cfg.t1;
        let mut next_a = start + a;
        let mut phase = Phase::Calling;
        let mut proceeding_deadline = start;
        let mut cancel_wanted = false;
        let mut cancel_deadline: Option<Instant> = None;
        let mut ack: Option<Bytes> = None;
        let mut d_deadline = start;
        loop {
            let wake = match phase {
                Phase::Calling if udp => next_a.min(timer_b),
                Phase::Calling => timer_b,
                Phase::Proceeding => {
                    cancel_deadline.map_or(proceeding_deadline, |c| c.min(proceeding_deadline))
                }
                Phase::Completed => d_deadline,
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(ClientMsg::Cancel) => match phase {
                        Phase::Calling => cancel_wanted = true,
                        Phase::Proceeding if cancel_deadline.is_none() => {
                            cancel_deadline = Some(self.send_cancel());
                        }
                        _ => {}
                    },
                    Some(ClientMsg::Response(resp)) => {
                        let code = resp.status_code.code();
                        match phase {
                            Phase::Calling | Phase::Proceeding if code < 200 => {
                                if phase == Phase::Calling {
                                    phase = Phase::Proceeding;
                                    proceeding_deadline = Instant::now() + PROCEEDING_LIMIT;
                                }
                                self.emit(ClientEvent::Provisional(resp));
                                if cancel_wanted && cancel_deadline.is_none() {
                                    cancel_deadline = Some(self.send_cancel());
                                }
                            }
                            Phase::Calling | Phase::Proceeding if code < 300 => {
                                self.emit(ClientEvent::Final(resp));
                                break;
                            }
                            Phase::Calling | Phase::Proceeding => {
                                let bytes = self.build_ack(&resp);
                                count_out("request", &rsip::Method::Ack);
                                let _ = self.inner.send(&self.dest, bytes.clone());
                                ack = Some(bytes);
                                self.emit(ClientEvent::Final(resp));
                                if !udp {
                                    break;
                                }
                                phase = Phase::Completed;
                                d_deadline = Instant::now() + self.inner.t64().max(Duration::from_secs(32));
                            }
                            Phase::Completed => {
                                if code >= 300 && let Some(b) = &ack {
                                    count_retransmission();
                                    count_out("request", &rsip::Method::Ack);
                                    let _ = self.inner.send(&self.dest, b.clone());
                                }
                            }
                        }
                    }
                },
                _ = sleep_until(wake) => match phase {
                    Phase::Calling => {
                        if Instant::now() >= timer_b {
                            self.emit(ClientEvent::Timeout);
                            break;
                        }
                        if !self.retransmit() {
                            break;
                        }
                        a *= 2;
                        next_a = Instant::now() + a;
                    }
                    Phase::Proceeding => {
                        self.emit(ClientEvent::Timeout);
                        break;
                    }
                    Phase::Completed => break,
                },
            }
        }
        self.finish();
    }

    /// Non-INVITE client transaction: timers E (UDP), F, K.
    async fn run_non_invite(self, mut rx: mpsc::UnboundedReceiver<ClientMsg>) {
        let cfg = &self.inner.cfg;
        let udp = !self.dest.reliable();
        let start = Instant::now();
        let timer_f = start + self.inner.t64();
        let mut e = cfg.t1;
        let mut next_e = start + e;
        let mut phase = Phase::Calling; // "Trying"
        let mut k_deadline = start;
        loop {
            let wake = match phase {
                Phase::Completed => k_deadline,
                _ if udp => next_e.min(timer_f),
                _ => timer_f,
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(ClientMsg::Cancel) => {}
                    Some(ClientMsg::Response(resp)) => {
                        if phase == Phase::Completed {
                            continue;
                        }
                        if resp.status_code.code() < 200 {
                            phase = Phase::Proceeding;
                            self.emit(ClientEvent::Provisional(resp));
                        } else {
                            self.emit(ClientEvent::Final(resp));
                            if !udp {
                                break;
                            }
                            phase = Phase::Completed;
                            k_deadline = Instant::now() + cfg.t4;
                        }
                    }
                },
                _ = sleep_until(wake) => {
                    if phase == Phase::Completed {
                        break;
                    }
                    if Instant::now() >= timer_f {
                        self.emit(ClientEvent::Timeout);
                        break;
                    }
                    if !self.retransmit() {
                        break;
                    }
                    e = if phase == Phase::Proceeding { cfg.t2 } else { (e * 2).min(cfg.t2) };
                    next_e = Instant::now() + e;
                }
            }
        }
        self.finish();
    }

    /// The ACK for a non-2xx final (§17.1.1.3): same Request-URI, Call-ID, From, CSeq number and
    /// top Via as the INVITE, To from the response, the INVITE's Route headers.
    fn build_ack(&self, resp: &rsip::Response) -> Bytes {
        let Some(invite) = &self.request else {
            return Bytes::new();
        };
        let mut headers: Vec<Header> = Vec::with_capacity(8);
        let mut via_done = false;
        for h in invite.headers.iter() {
            match h {
                Header::Via(_) if !via_done => {
                    via_done = true;
                    headers.push(h.clone());
                }
                Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                    headers.push(h.clone())
                }
                Header::To(_) => {
                    let to = resp
                        .headers
                        .iter()
                        .find(|h| matches!(h, Header::To(_)))
                        .unwrap_or(h);
                    headers.push(to.clone());
                }
                Header::CSeq(_) => {
                    let n = message::cseq(invite).map(|c| c.0).unwrap_or(1);
                    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!("{n} ACK"))));
                }
                _ => {}
            }
        }
        let ack = rsip::Request {
            method: rsip::Method::Ack,
            uri: invite.uri.clone(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        };
        message::encode_request(&ack)
    }

    /// Sends the CANCEL for our INVITE in its own non-INVITE transaction (events discarded) and
    /// returns when to give up waiting for the INVITE's final response (64·T1, §9.1).
    fn send_cancel(&self) -> Instant {
        let deadline = Instant::now() + self.inner.t64();
        let Some(invite) = &self.request else {
            return deadline;
        };
        let mut headers: Vec<Header> = Vec::with_capacity(8);
        let mut via_done = false;
        for h in invite.headers.iter() {
            match h {
                Header::Via(_) if !via_done => {
                    via_done = true;
                    headers.push(h.clone());
                }
                Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::Route(_)
                | Header::MaxForwards(_)
                | Header::UserAgent(_) => headers.push(h.clone()),
                Header::CSeq(_) => {
                    let n = message::cseq(invite).map(|c| c.0).unwrap_or(1);
                    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
                        "{n} CANCEL"
                    ))));
                }
                _ => {}
            }
        }
        let cancel = rsip::Request {
            method: rsip::Method::Cancel,
            uri: invite.uri.clone(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        };
        let endpoint = Endpoint {
            inner: self.inner.clone(),
        };
        let call_id = message::call_id_str(&invite.headers)
            .unwrap_or("")
            .to_string();
        match endpoint.start_client(cancel, self.dest, self.key.0.clone(), call_id) {
            Ok(mut tx) => {
                tokio::spawn(async move { while tx.next().await.is_some() {} });
            }
            Err(e) => debug!(error = %e, "cannot send CANCEL"),
        }
        deadline
    }
}
