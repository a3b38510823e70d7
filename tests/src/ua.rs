//! [`TestUa`]: a small SIP user agent over UDP, written independently of the switch's SIP
//! stack. Requests are formatted as text; everything received is parsed with rsip.
//!
//! A background task reads the socket. It absorbs retransmissions: a request it has already
//! answered is answered again with the same response, a request still being handled is
//! dropped, a retransmitted 2xx to an INVITE we ACKed is ACKed again, and a repeated response
//! is dropped. Everything else lands in an inbox that the `wait_*` methods search, keeping
//! what they skip for later waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::msg::{self, SipMsg, new_branch, new_call_id, new_tag, uri_addr, uri_of};
use crate::rtp::Rtp;

/// RFC 3261 timer T1.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 timer T2.
const T2: Duration = Duration::from_secs(4);

/// One side of an established (or early) dialog, from this UA's point of view.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// Our URI (From of our requests), without tag.
    pub local_uri: String,
    /// The peer's URI (To of our requests), without tag.
    pub remote_uri: String,
    /// The peer's Contact: Request-URI of our in-dialog requests.
    pub remote_target: String,
    /// Where in-dialog requests go: the Contact's address, else where the peer spoke from.
    pub target_addr: SocketAddr,
    /// Last CSeq we used.
    pub local_cseq: u32,
    /// CSeq of the INVITE that made the dialog.
    pub invite_cseq: u32,
    /// The peer's SDP.
    pub remote_sdp: Option<msg::Sdp>,
    /// Whether we sent the INVITE.
    pub we_called: bool,
}

impl Dialog {
    /// The peer's RTP address, from its SDP.
    pub fn remote_rtp(&self) -> anyhow::Result<SocketAddr> {
        self.remote_sdp
            .as_ref()
            .map(|s| s.addr)
            .ok_or_else(|| anyhow!("dialog {} has no remote SDP", self.call_id))
    }
}

/// What an INVITE we sent ended with.
#[derive(Debug, Clone)]
pub struct InviteOutcome {
    /// Status codes of provisional responses, in order.
    pub provisional: Vec<u16>,
    /// The final response.
    pub response: SipMsg,
    /// The dialog, when the final response was 2xx (already ACKed).
    pub dialog: Option<Dialog>,
}

/// How the UA's messages travel.
#[derive(Clone)]
enum Wire {
    /// One UDP socket; each message goes where it is addressed.
    Udp(Arc<UdpSocket>),
    /// One TCP connection to the node; everything goes down it, whatever the address.
    Tcp(Arc<tokio::sync::Mutex<OwnedWriteHalf>>),
}

impl Wire {
    async fn send(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Wire::Udp(s) => s.send_to(bytes, to).await.map(|_| ()),
            Wire::Tcp(w) => w.lock().await.write_all(bytes).await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Wire::Udp(_) => "UDP",
            Wire::Tcp(_) => "TCP",
        }
    }
}

/// State shared with the socket reader.
#[derive(Default)]
struct Shared {
    /// Last response we sent per server transaction (branch, method) and where it went.
    responded: HashMap<(String, String), (Vec<u8>, SocketAddr)>,
    /// Server transactions we have seen a request for.
    seen_requests: HashSet<(String, String)>,
    /// ACKs we sent for 2xx, by (Call-ID, CSeq), to repeat if the 2xx is retransmitted.
    acks: HashMap<(String, u32), (Vec<u8>, SocketAddr)>,
    /// Responses seen (branch, CSeq method, status), to drop retransmissions.
    seen_responses: HashSet<(String, String, u16)>,
    /// Our To tag per Call-ID for dialogs we answer.
    uas_tags: HashMap<String, String>,
    /// Incoming INVITEs by branch, so a CANCEL can end them with 487.
    invites: HashMap<String, SipMsg>,
    /// One line per message in or out, for error messages.
    trace: Vec<String>,
    /// Datagrams rsip could not parse.
    unparsable: u64,
}

impl Shared {
    fn log(&mut self, line: String) {
        if self.trace.len() > 400 {
            self.trace.drain(..100);
        }
        self.trace.push(line);
    }
}

/// A SIP user agent for tests (UDP or TCP, 127.0.0.1).
pub struct TestUa {
    /// SIP user (agent id, or the caller's name).
    user: String,
    /// Digest password.
    password: String,
    /// SIP domain (host part of AORs).
    domain: String,
    /// The node's SIP address: where out-of-dialog requests go.
    server: SocketAddr,
    /// The UA's socket or connection.
    wire: Wire,
    /// Its bound address.
    local: SocketAddr,
    /// State shared with the reader task.
    shared: Arc<Mutex<Shared>>,
    /// Messages the reader passed on.
    inbox: mpsc::UnboundedReceiver<SipMsg>,
    /// Messages received but not yet asked for.
    backlog: VecDeque<SipMsg>,
    /// The reader task.
    reader: JoinHandle<()>,
    /// Call-ID of our registrations (one per UA, CSeq grows).
    reg_call_id: String,
    /// From tag of our registrations.
    reg_tag: String,
    /// Last CSeq used for REGISTER.
    reg_cseq: u32,
    /// How long a transaction we start may take before it is an error.
    pub timeout: Duration,
}

impl Drop for TestUa {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl TestUa {
    /// Binds 127.0.0.1:0 (UDP) for SIP user `user` who talks to the node at `server`.
    pub async fn new(user: &str, password: &str, server: SocketAddr) -> anyhow::Result<TestUa> {
        let sock = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .context("binding the UA's SIP socket")?,
        );
        let local = sock.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, inbox) = mpsc::unbounded_channel();
        let wire = Wire::Udp(sock.clone());
        let reader = tokio::spawn(read_udp(sock, wire.clone(), shared.clone(), tx));
        Ok(TestUa::assemble(
            user, password, server, wire, local, shared, inbox, reader,
        ))
    }

    /// Connects over TCP to the node's SIP TCP address `server`; every message of this UA,
    /// requests and responses, travels on that one connection.
    pub async fn new_tcp(user: &str, password: &str, server: SocketAddr) -> anyhow::Result<TestUa> {
        let stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to SIP over TCP at {server}"))?;
        let local = stream.local_addr()?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, inbox) = mpsc::unbounded_channel();
        let wire = Wire::Tcp(Arc::new(tokio::sync::Mutex::new(wr)));
        let reader = tokio::spawn(read_tcp(rd, server, wire.clone(), shared.clone(), tx));
        Ok(TestUa::assemble(
            user, password, server, wire, local, shared, inbox, reader,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        user: &str,
        password: &str,
        server: SocketAddr,
        wire: Wire,
        local: SocketAddr,
        shared: Arc<Mutex<Shared>>,
        inbox: mpsc::UnboundedReceiver<SipMsg>,
        reader: JoinHandle<()>,
    ) -> TestUa {
        TestUa {
            user: user.into(),
            password: password.into(),
            domain: "lingxi.local".into(),
            server,
            wire,
            local,
            shared,
            inbox,
            backlog: VecDeque::new(),
            reader,
            reg_call_id: new_call_id(),
            reg_tag: new_tag(),
            reg_cseq: 0,
            timeout: Duration::from_secs(10),
        }
    }

    /// The UA's SIP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The SIP user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Changes the password used for the next REGISTER.
    pub fn set_password(&mut self, password: &str) {
        self.password = password.into();
    }

    /// The last `n` lines of the message trace.
    pub fn trace(&self) -> Vec<String> {
        let sh = self.shared.lock().unwrap();
        sh.trace.clone()
    }

    /// How many datagrams the UA could not parse.
    pub fn unparsable(&self) -> u64 {
        self.shared.lock().unwrap().unparsable
    }

    /// Our address as written in Via and Contact.
    fn hostport(&self) -> String {
        self.local.to_string()
    }

    fn our_aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    fn contact(&self) -> String {
        match self.wire {
            Wire::Udp(_) => format!("<sip:{}@{}>", self.user, self.hostport()),
            Wire::Tcp(_) => format!("<sip:{}@{};transport=tcp>", self.user, self.hostport()),
        }
    }

    /// Formats a request.
    #[allow(clippy::too_many_arguments)]
    fn format_request(
        &self,
        method: &str,
        ruri: &str,
        branch: &str,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        extra: &[String],
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {hp};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nUser-Agent: lingxi-test-ua\r\n",
            t = self.wire.name(),
            hp = self.hostport()
        );
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        match body {
            Some((ctype, b)) => {
                s.push_str(&format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                ));
            }
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.into_bytes()
    }

    /// Sends bytes from the UA's socket (over TCP: down its connection, whatever `to` is).
    pub async fn send_raw(&self, bytes: &[u8], to: SocketAddr) -> anyhow::Result<()> {
        self.wire
            .send(bytes, to)
            .await
            .with_context(|| format!("sending {} bytes to {to}", bytes.len()))?;
        let first = String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        self.shared.lock().unwrap().log(format!("-> {to} {first}"));
        Ok(())
    }

    /// Next message matching `pred`, from the backlog or the socket, within `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> anyhow::Result<SipMsg> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Ok(self.backlog.remove(i).expect("index from position"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(m)) if pred(&m) => return Ok(m),
                Ok(Some(m)) => self.backlog.push_back(m),
                Ok(None) => bail!(
                    "{}: the UA's socket reader stopped while waiting for {what}",
                    self.user
                ),
                Err(_) => return Err(self.timed_out(what, timeout)),
            }
        }
    }

    fn timed_out(&self, what: &str, timeout: Duration) -> anyhow::Error {
        let pending: Vec<String> = self.backlog.iter().map(|m| m.summary()).collect();
        let trace = self.trace();
        let tail = &trace[trace.len().saturating_sub(15)..];
        anyhow!(
            "UA {} ({}) timed out after {timeout:?} waiting for {what}; unclaimed messages: {pending:#?}; last messages: {tail:#?}",
            self.user,
            self.local
        )
    }

    /// Asserts that no request `method` arrives within `window` (returns it as an error if one does).
    pub async fn expect_no_request(
        &mut self,
        method: &str,
        window: Duration,
    ) -> anyhow::Result<()> {
        let m = method.to_string();
        match self
            .wait_for(method, window, move |x| x.is_request(&m))
            .await
        {
            Ok(msg) => bail!("UA {} got an unexpected {}: {}", self.user, method, msg.raw),
            Err(_) => Ok(()),
        }
    }

    /// Runs a client transaction: sends `bytes` to `dest`, retransmits (T1 doubling; INVITE
    /// stops at the first provisional, others cap at T2) and returns the provisional status
    /// codes and the final response.
    async fn transact(
        &mut self,
        what: &str,
        bytes: Vec<u8>,
        dest: SocketAddr,
        branch: &str,
        method: &str,
    ) -> anyhow::Result<(Vec<u16>, SipMsg)> {
        self.send_raw(&bytes, dest).await?;
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut interval = T1;
        let mut next = Instant::now() + interval;
        let mut provisional = Vec::new();
        let matches =
            |m: &SipMsg| m.status.is_some() && m.branch() == branch && m.is_response_to(method);
        // A response may already sit in the backlog (unlikely, but cheap to check).
        while let Some(i) = self.backlog.iter().position(matches) {
            let m = self.backlog.remove(i).expect("index from position");
            if m.status.unwrap_or(0) >= 200 {
                return Ok((provisional, m));
            }
            provisional.push(m.status.unwrap_or(0));
        }
        loop {
            let reliable = matches!(self.wire, Wire::Tcp(_));
            let retransmitting = !reliable && (method != "INVITE" || provisional.is_empty());
            let wake = if retransmitting {
                next.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                m = self.inbox.recv() => {
                    let m = m.ok_or_else(|| anyhow!("{}: socket reader stopped during {what}", self.user))?;
                    if matches(&m) {
                        let code = m.status.unwrap_or(0);
                        if code >= 200 {
                            return Ok((provisional, m));
                        }
                        provisional.push(code);
                    } else {
                        self.backlog.push_back(m);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(self.timed_out(&format!("the final response to {what}"), timeout));
                    }
                    if retransmitting {
                        self.send_raw(&bytes, dest).await?;
                        interval = (interval * 2).min(T2);
                        next = Instant::now() + interval;
                    }
                }
            }
        }
    }

    // ----- REGISTER -----

    /// Registers (expires 600) with digest authentication; returns the final response
    /// (200, or 403/404/... when refused).
    pub async fn register(&mut self) -> anyhow::Result<SipMsg> {
        self.register_expires(600).await
    }

    /// Removes the registration (expires 0).
    pub async fn unregister(&mut self) -> anyhow::Result<SipMsg> {
        self.register_expires(0).await
    }

    /// Registers asking for `expires` seconds. Answers a 401 challenge (RFC 2617, qop=auth)
    /// up to twice (a second time only if the nonce was stale).
    pub async fn register_expires(&mut self, expires: u32) -> anyhow::Result<SipMsg> {
        let ruri = format!("sip:{}", self.domain);
        let mut auth: Option<String> = None;
        let mut nc = 0u32;
        for _round in 0..3 {
            self.reg_cseq += 1;
            let branch = new_branch();
            let from = format!("<{}>;tag={}", self.our_aor(), self.reg_tag);
            let to = format!("<{}>", self.our_aor());
            let mut extra = vec![
                format!("Contact: {}", self.contact()),
                format!("Expires: {expires}"),
            ];
            if let Some(a) = &auth {
                extra.push(format!("Authorization: {a}"));
            }
            let bytes = self.format_request(
                "REGISTER",
                &ruri,
                &branch,
                &from,
                &to,
                &self.reg_call_id.clone(),
                self.reg_cseq,
                &extra,
                None,
            );
            let (_, resp) = self
                .transact("REGISTER", bytes, self.server, &branch, "REGISTER")
                .await?;
            if resp.status == Some(401) && (auth.is_none() || stale(&resp)) {
                let challenge = resp
                    .header("www-authenticate")
                    .ok_or_else(|| anyhow!("401 without WWW-Authenticate: {}", resp.raw))?
                    .to_string();
                nc += 1;
                auth = Some(msg::authorization(
                    &challenge,
                    &self.user,
                    &self.password,
                    "REGISTER",
                    &ruri,
                    nc,
                ));
                continue;
            }
            return Ok(resp);
        }
        bail!("REGISTER for {} kept being challenged", self.user)
    }

    /// Sends OPTIONS to the node; returns the final response.
    pub async fn options(&mut self) -> anyhow::Result<SipMsg> {
        let branch = new_branch();
        let bytes = self.format_request(
            "OPTIONS",
            &format!("sip:{}", self.domain),
            &branch,
            &format!("<{}>;tag={}", self.our_aor(), new_tag()),
            &format!("<sip:{}>", self.domain),
            &new_call_id(),
            1,
            &["Accept: application/sdp".to_string()],
            None,
        );
        Ok(self
            .transact("OPTIONS", bytes, self.server, &branch, "OPTIONS")
            .await?
            .1)
    }

    // ----- calls we place -----

    /// Calls `sip:<target>@<domain>` with an SDP offer (PCMU, PCMA, telephone-event) for
    /// `rtp`; ACKs the final response. Returns whatever it ended with.
    pub async fn invite(&mut self, target: &str, rtp: &Rtp) -> anyhow::Result<InviteOutcome> {
        let sdp = msg::build_sdp(rtp.local_addr(), &[0, 8, 101]);
        self.invite_with_sdp(target, &sdp).await
    }

    /// Like [`TestUa::invite`] with a given SDP body.
    pub async fn invite_with_sdp(
        &mut self,
        target: &str,
        sdp: &str,
    ) -> anyhow::Result<InviteOutcome> {
        let ruri = format!("sip:{target}@{}", self.domain);
        let call_id = new_call_id();
        let tag = new_tag();
        let branch = new_branch();
        let from = format!("<{}>;tag={tag}", self.our_aor());
        let to = format!("<{ruri}>");
        let extra = vec![
            format!("Contact: {}", self.contact()),
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS".to_string(),
        ];
        let bytes = self.format_request(
            "INVITE",
            &ruri,
            &branch,
            &from,
            &to,
            &call_id,
            1,
            &extra,
            Some(("application/sdp", sdp)),
        );
        let (provisional, resp) = self
            .transact(
                &format!("INVITE {ruri}"),
                bytes,
                self.server,
                &branch,
                "INVITE",
            )
            .await?;
        let code = resp.status.unwrap_or(0);
        if !(200..300).contains(&code) {
            // ACK for a non-2xx final: same branch, To from the response (RFC 3261 §17.1.1.3).
            let ack = self.format_request(
                "ACK",
                &ruri,
                &branch,
                &from,
                resp.header("to").unwrap_or(&to),
                &call_id,
                1,
                &[],
                None,
            );
            self.send_raw(&ack, self.server).await?;
            return Ok(InviteOutcome {
                provisional,
                response: resp,
                dialog: None,
            });
        }
        let remote_target = resp
            .contact_uri()
            .ok_or_else(|| anyhow!("2xx to INVITE without Contact: {}", resp.raw))?;
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: tag,
            remote_tag: resp
                .to_tag()
                .ok_or_else(|| anyhow!("2xx to INVITE without To tag: {}", resp.raw))?,
            local_uri: self.our_aor(),
            remote_uri: ruri.clone(),
            target_addr: uri_addr(&remote_target).unwrap_or(resp.source),
            remote_target,
            local_cseq: 1,
            invite_cseq: 1,
            remote_sdp: resp.sdp(),
            we_called: true,
        };
        self.send_ack(&dialog).await?;
        Ok(InviteOutcome {
            provisional,
            response: resp,
            dialog: Some(dialog),
        })
    }

    /// Calls `target` and insists on a 2xx answer; returns the dialog.
    pub async fn call(&mut self, target: &str, rtp: &Rtp) -> anyhow::Result<Dialog> {
        let out = self.invite(target, rtp).await?;
        out.dialog
            .ok_or_else(|| anyhow!("INVITE {target} was refused: {}", out.response.raw))
    }

    /// Sends the ACK for a 2xx that made dialog `d` (and remembers it for retransmitted 2xx).
    async fn send_ack(&mut self, d: &Dialog) -> anyhow::Result<()> {
        let ack = self.format_request(
            "ACK",
            &d.remote_target,
            &new_branch(),
            &format!("<{}>;tag={}", d.local_uri, d.local_tag),
            &format!("<{}>;tag={}", d.remote_uri, d.remote_tag),
            &d.call_id,
            d.invite_cseq,
            &[],
            None,
        );
        self.shared.lock().unwrap().acks.insert(
            (d.call_id.clone(), d.invite_cseq),
            (ack.clone(), d.target_addr),
        );
        self.send_raw(&ack, d.target_addr).await
    }

    /// Sends an in-dialog request and returns its final response.
    pub async fn in_dialog(&mut self, d: &mut Dialog, method: &str) -> anyhow::Result<SipMsg> {
        self.in_dialog_with(d, method, &[]).await
    }

    /// [`TestUa::in_dialog`] with `extra` header lines.
    pub async fn in_dialog_with(
        &mut self,
        d: &mut Dialog,
        method: &str,
        extra: &[String],
    ) -> anyhow::Result<SipMsg> {
        d.local_cseq += 1;
        let branch = new_branch();
        let bytes = self.format_request(
            method,
            &d.remote_target,
            &branch,
            &format!("<{}>;tag={}", d.local_uri, d.local_tag),
            &format!("<{}>;tag={}", d.remote_uri, d.remote_tag),
            &d.call_id,
            d.local_cseq,
            extra,
            None,
        );
        let what = format!("{method} in dialog {}", d.call_id);
        Ok(self
            .transact(&what, bytes, d.target_addr, &branch, method)
            .await?
            .1)
    }

    /// Blind transfer: REFER in dialog `d` with `Refer-To: <target>`; returns the final
    /// response (202 when the switch accepted it).
    pub async fn refer(&mut self, d: &mut Dialog, target: &str) -> anyhow::Result<SipMsg> {
        let extra = [
            format!("Contact: {}", self.contact()),
            format!("Refer-To: <{target}>"),
        ];
        self.in_dialog_with(d, "REFER", &extra).await
    }

    /// Sends a re-INVITE in dialog `d` with `sdp` (hold, unhold, new media address), ACKs a
    /// 2xx, and returns the final response.
    pub async fn reinvite(&mut self, d: &mut Dialog, sdp: &str) -> anyhow::Result<SipMsg> {
        d.local_cseq += 1;
        let branch = new_branch();
        let extra = vec![format!("Contact: {}", self.contact())];
        let bytes = self.format_request(
            "INVITE",
            &d.remote_target,
            &branch,
            &format!("<{}>;tag={}", d.local_uri, d.local_tag),
            &format!("<{}>;tag={}", d.remote_uri, d.remote_tag),
            &d.call_id,
            d.local_cseq,
            &extra,
            Some(("application/sdp", sdp)),
        );
        let what = format!("re-INVITE in dialog {}", d.call_id);
        let (_, resp) = self
            .transact(&what, bytes, d.target_addr, &branch, "INVITE")
            .await?;
        if resp.status.is_some_and(|c| (200..300).contains(&c)) {
            d.invite_cseq = d.local_cseq;
            d.remote_sdp = resp.sdp();
            self.send_ack(d).await?;
        }
        Ok(resp)
    }

    /// Hangs up: BYE in dialog `d`; returns the final response.
    pub async fn bye(&mut self, d: &mut Dialog) -> anyhow::Result<SipMsg> {
        self.in_dialog(d, "BYE").await
    }

    // ----- calls we receive -----

    /// Waits for a new INVITE.
    pub async fn wait_invite(&mut self, timeout: Duration) -> anyhow::Result<SipMsg> {
        self.wait_for("an INVITE", timeout, |m| {
            m.is_request("INVITE") && m.to_tag().is_none()
        })
        .await
    }

    /// Waits for a request `method` (any dialog).
    pub async fn wait_request(
        &mut self,
        method: &str,
        timeout: Duration,
    ) -> anyhow::Result<SipMsg> {
        let m = method.to_string();
        self.wait_for(&format!("a {method}"), timeout, move |x| x.is_request(&m))
            .await
    }

    /// Sends a response to `req`: Via, From, To (with our tag for dialog-forming requests),
    /// Call-ID and CSeq copied; `extra` headers and an optional body added. Repeated for
    /// retransmissions of `req`.
    pub async fn respond(
        &mut self,
        req: &SipMsg,
        code: u16,
        reason: &str,
        extra: &[String],
        body: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.header_all("via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = req.header("to").unwrap_or_default().to_string();
        let to = if req.to_tag().is_none() && code > 100 {
            let tag = {
                let mut sh = self.shared.lock().unwrap();
                sh.uas_tags
                    .entry(req.call_id())
                    .or_insert_with(new_tag)
                    .clone()
            };
            format!("{to};tag={tag}")
        } else {
            to
        };
        let (n, m) = req.cseq();
        s.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {n} {m}\r\nServer: lingxi-test-ua\r\n",
            req.header("from").unwrap_or_default(),
            req.call_id()
        ));
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        match body {
            Some((ctype, b)) => s.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        let bytes = s.into_bytes();
        let key = (req.branch(), m);
        self.shared
            .lock()
            .unwrap()
            .responded
            .insert(key, (bytes.clone(), req.source));
        self.send_raw(&bytes, req.source).await
    }

    /// Answers an INVITE with 180 Ringing.
    pub async fn ring(&mut self, invite: &SipMsg) -> anyhow::Result<()> {
        let contact = format!("Contact: {}", self.contact());
        self.respond(invite, 180, "Ringing", &[contact], None).await
    }

    /// Answers an INVITE with 200 OK and an SDP answer for `rtp` (the first offered codec
    /// of PCMU/PCMA, plus telephone-event if offered); returns the dialog.
    pub async fn answer(&mut self, invite: &SipMsg, rtp: &Rtp) -> anyhow::Result<Dialog> {
        let offer = invite
            .sdp()
            .ok_or_else(|| anyhow!("INVITE without a readable SDP offer: {}", invite.raw))?;
        let codec = offer
            .payload_types
            .iter()
            .copied()
            .find(|pt| matches!(offer.encoding(*pt).as_deref(), Some("PCMU" | "PCMA")))
            .ok_or_else(|| anyhow!("SDP offer without PCMU or PCMA: {}", invite.body_str()))?;
        let mut pts = vec![codec];
        if let Some(te) = offer.pt_of("telephone-event") {
            pts.push(te);
        }
        let sdp = msg::build_sdp(rtp.local_addr(), &pts);
        let contact = format!("Contact: {}", self.contact());
        self.respond(
            invite,
            200,
            "OK",
            &[contact],
            Some(("application/sdp", &sdp)),
        )
        .await?;
        let local_tag = self
            .shared
            .lock()
            .unwrap()
            .uas_tags
            .get(&invite.call_id())
            .cloned()
            .unwrap_or_default();
        let remote_target = invite
            .contact_uri()
            .ok_or_else(|| anyhow!("INVITE without Contact: {}", invite.raw))?;
        Ok(Dialog {
            call_id: invite.call_id(),
            local_tag,
            remote_tag: invite.from_tag().unwrap_or_default(),
            local_uri: uri_of(invite.header("to").unwrap_or_default()),
            remote_uri: uri_of(invite.header("from").unwrap_or_default()),
            target_addr: uri_addr(&remote_target).unwrap_or(invite.source),
            remote_target,
            local_cseq: 0,
            invite_cseq: invite.cseq().0,
            remote_sdp: Some(offer),
            we_called: false,
        })
    }

    /// Refuses an INVITE with `code` (e.g. 486) and waits for its ACK.
    pub async fn reject(
        &mut self,
        invite: &SipMsg,
        code: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let reason = match code {
            486 => "Busy Here",
            603 => "Decline",
            480 => "Temporarily Unavailable",
            _ => "Rejected",
        };
        self.respond(invite, code, reason, &[], None).await?;
        let branch = invite.branch();
        self.wait_for(&format!("the ACK for our {code}"), timeout, move |m| {
            m.is_request("ACK") && m.branch() == branch
        })
        .await?;
        Ok(())
    }

    /// Waits for the ACK of the 2xx that made dialog `d`.
    pub async fn wait_ack(&mut self, d: &Dialog, timeout: Duration) -> anyhow::Result<SipMsg> {
        let cid = d.call_id.clone();
        self.wait_for(&format!("ACK in {}", d.call_id), timeout, move |m| {
            m.is_request("ACK") && m.call_id() == cid
        })
        .await
    }

    /// Waits for an INVITE, rings, answers with `rtp` and waits for the ACK.
    pub async fn accept(&mut self, rtp: &Rtp, timeout: Duration) -> anyhow::Result<Dialog> {
        let invite = self.wait_invite(timeout).await?;
        self.ring(&invite).await?;
        let d = self.answer(&invite, rtp).await?;
        self.wait_ack(&d, timeout).await?;
        Ok(d)
    }

    /// Waits for a CANCEL; answers it 200 and its INVITE 487 (then absorbs the ACK).
    /// Returns the CANCEL.
    pub async fn wait_cancel(&mut self, timeout: Duration) -> anyhow::Result<SipMsg> {
        let cancel = self.wait_request("CANCEL", timeout).await?;
        self.respond(&cancel, 200, "OK", &[], None).await?;
        let invite = self
            .shared
            .lock()
            .unwrap()
            .invites
            .get(&cancel.branch())
            .cloned();
        match invite {
            Some(inv) => {
                self.respond(&inv, 487, "Request Terminated", &[], None)
                    .await?
            }
            None => bail!("CANCEL for an INVITE this UA never saw: {}", cancel.raw),
        }
        Ok(cancel)
    }

    /// Waits for a BYE in dialog `d` and answers it 200.
    pub async fn wait_bye(&mut self, d: &Dialog, timeout: Duration) -> anyhow::Result<SipMsg> {
        let cid = d.call_id.clone();
        let bye = self
            .wait_for(&format!("BYE in {}", d.call_id), timeout, move |m| {
                m.is_request("BYE") && m.call_id() == cid
            })
            .await?;
        self.respond(&bye, 200, "OK", &[], None).await?;
        Ok(bye)
    }
}

fn stale(resp: &SipMsg) -> bool {
    resp.header("www-authenticate")
        .map(msg::parse_challenge)
        .and_then(|c| c.get("stale").cloned())
        .is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

/// Reads the UDP socket: each datagram is one message.
async fn read_udp(
    sock: Arc<UdpSocket>,
    wire: Wire,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<SipMsg>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            return;
        };
        if !on_message(&buf[..n], src, &wire, &shared, &tx).await {
            return;
        }
    }
}

/// Reads the TCP connection, framing messages by their Content-Length (RFC 3261 §18.3).
async fn read_tcp(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    wire: Wire,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<SipMsg>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        // Keep-alive CRLFs between messages.
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    matches!(
                        k.trim().to_ascii_lowercase().as_str(),
                        "content-length" | "l"
                    )
                    .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            let total = end + 4 + len;
            if buf.len() >= total {
                let msg: Vec<u8> = buf.drain(..total).collect();
                if !on_message(&msg, peer, &wire, &shared, &tx).await {
                    return;
                }
                continue;
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                shared
                    .lock()
                    .unwrap()
                    .log(format!("<- {peer} TCP connection closed"));
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Handles one received message: absorbs retransmissions, passes the rest to the inbox.
/// Returns false when the UA is gone.
async fn on_message(
    bytes: &[u8],
    src: SocketAddr,
    wire: &Wire,
    shared: &Mutex<Shared>,
    tx: &mpsc::UnboundedSender<SipMsg>,
) -> bool {
    let m = match SipMsg::parse(bytes, src) {
        Ok(m) => m,
        Err(e) => {
            let mut sh = shared.lock().unwrap();
            sh.unparsable += 1;
            sh.log(format!(
                "<- {src} UNPARSABLE ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
            ));
            return true;
        }
    };
    let mut resend: Option<(Vec<u8>, SocketAddr)> = None;
    let forward = {
        let mut sh = shared.lock().unwrap();
        sh.log(format!("<- {}", m.summary()));
        match (&m.method, m.status) {
            (Some(method), _) if method != "ACK" => {
                let key = (m.branch(), method.clone());
                if let Some(r) = sh.responded.get(&key) {
                    resend = Some(r.clone());
                    false
                } else if !sh.seen_requests.insert(key) {
                    false
                } else {
                    if method == "INVITE" {
                        sh.invites.insert(m.branch(), m.clone());
                    }
                    true
                }
            }
            (Some(_ack), _) => true,
            (None, Some(code)) => {
                let (cseq, method) = m.cseq();
                if method == "INVITE"
                    && (200..300).contains(&code)
                    && let Some(a) = sh.acks.get(&(m.call_id(), cseq))
                {
                    resend = Some(a.clone());
                }
                resend.is_none() && sh.seen_responses.insert((m.branch(), method, code))
            }
            _ => false,
        }
    };
    if let Some((bytes, to)) = resend {
        let _ = wire.send(&bytes, to).await;
        shared
            .lock()
            .unwrap()
            .log(format!("-> {to} (retransmission answered again)"));
    }
    !forward || tx.send(m).is_ok()
}
