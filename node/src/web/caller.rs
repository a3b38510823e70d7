//! A web caller ("call us" button): one task per customer socket. The browser sends its offer
//! with the queue; the gateway answers it, then INVITEs its own node as caller
//! `<web_caller_prefix><random>` to that queue and bridges the browser's audio to the call.
//! Concurrent web calls are limited per client IP and in total.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use lingxi_actors::sip::dialog;
use lingxi_actors::sip::message::{self, response_for, with_body};
use lingxi_actors::sip::sdp::{self, Direction};
use lingxi_actors::sip::transaction::{ClientEvent, Peer};
use lingxi_cluster::{DialogState, SipTransport};
use lingxi_media::Codec;
use lingxi_media::webrtc::{BrowserOffer, WebRtcBridge};
use rsip::Header;
use rsip::headers::UntypedHeader as _;
use tokio::sync::mpsc;

use super::Shared;
use super::protocol::{ClientMsg, ServerMsg, parse_client};
use super::sip::{self as gwsip, SipEvent};

/// How long a customer socket may stay open before saying which queue to call.
const CALL_WAIT: Duration = Duration::from_secs(120);

/// A reserved web-call slot; released on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    /// Reserves a slot for `ip`, or says (in both languages) why not.
    pub(crate) fn reserve(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, ServerMsg> {
        let web = &shared.config.web;
        let mut calls = shared.web_calls.lock();
        let total: usize = calls.values().sum();
        if total >= web.max_web_calls {
            return Err(ServerMsg::error(
                "all lines are busy, please try again later",
                "线路繁忙，请稍后再试",
            ));
        }
        let mine = calls.entry(ip).or_insert(0);
        if *mine >= web.max_web_calls_per_ip {
            return Err(ServerMsg::error(
                format!(
                    "too many calls from your address (at most {})",
                    web.max_web_calls_per_ip
                ),
                format!(
                    "您的地址同时呼叫过多（最多 {} 个）",
                    web.max_web_calls_per_ip
                ),
            ));
        }
        *mine += 1;
        Ok(Slot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut calls = self.shared.web_calls.lock();
        if let Some(n) = calls.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                calls.remove(&self.ip);
            }
        }
    }
}

/// Sends one message; `false` when the socket is gone.
async fn send(socket: &mut WebSocket, msg: ServerMsg) -> bool {
    socket
        .send(Message::Text(msg.to_json().into()))
        .await
        .is_ok()
}

/// What the socket said, reduced to what the caller task needs.
enum FromPage {
    Msg(ClientMsg),
    Bad(String),
    Gone,
    Other,
}

async fn next_from_page(socket: &mut WebSocket) -> FromPage {
    match socket.recv().await {
        Some(Ok(Message::Text(t))) => match parse_client(t.as_str()) {
            Ok(m) => FromPage::Msg(m),
            Err(e) => FromPage::Bad(e),
        },
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => FromPage::Gone,
        Some(Ok(_)) => FromPage::Other,
    }
}

/// Whether `queue` (an id or extension) exists and web callers may call it; returns the
/// queue's id.
fn check_queue(shared: &Shared, queue: &str) -> Result<String, ServerMsg> {
    let allowed = &shared.config.web.allowed_queues;
    let found = shared.switch.log().read(|sm| {
        sm.queues()
            .values()
            .find(|q| q.id == queue || q.extensions.iter().any(|e| e == queue))
            .map(|q| (q.id.clone(), q.extensions.clone()))
    });
    match found {
        Some((id, exts))
            if allowed.is_empty()
                || allowed
                    .iter()
                    .any(|a| *a == id || exts.iter().any(|e| e == a)) =>
        {
            Ok(id)
        }
        _ => Err(ServerMsg::error(
            format!("there is no queue {queue:?} to call"),
            format!("没有可呼叫的队列 {queue:?}"),
        )),
    }
}

/// Runs one customer socket to its end.
pub(crate) async fn run(shared: Arc<Shared>, mut socket: WebSocket, slot: Slot) {
    let _slot = slot;
    let caller = format!(
        "{}{}",
        shared.config.web.web_caller_prefix,
        message::new_tag().to_ascii_lowercase()
    );
    if !send(
        &mut socket,
        ServerMsg::Hello {
            id: caller.clone(),
            name: String::new(),
        },
    )
    .await
    {
        return;
    }
    // 1. Wait for {type: "call"}.
    let deadline = tokio::time::Instant::now() + CALL_WAIT;
    let (queue, offer) = loop {
        let got = tokio::time::timeout_at(deadline, next_from_page(&mut socket)).await;
        match got {
            Err(_) | Ok(FromPage::Gone) | Ok(FromPage::Msg(ClientMsg::Hangup)) => return,
            Ok(FromPage::Msg(ClientMsg::Call { queue, sdp })) => break (queue, sdp),
            Ok(FromPage::Msg(ClientMsg::Ping)) => {
                let _ = send(&mut socket, ServerMsg::Pong).await;
            }
            Ok(FromPage::Msg(_)) => {
                let _ = send(
                    &mut socket,
                    ServerMsg::error("send a call message first", "请先发起呼叫"),
                )
                .await;
            }
            Ok(FromPage::Bad(e)) => {
                let _ = send(
                    &mut socket,
                    ServerMsg::error(e.clone(), format!("消息无法识别：{e}")),
                )
                .await;
            }
            Ok(FromPage::Other) => {}
        }
    };
    let queue_id = match check_queue(&shared, &queue) {
        Ok(q) => q,
        Err(e) => {
            let _ = send(&mut socket, e).await;
            let _ = send(&mut socket, ended("", "refused")).await;
            return;
        }
    };
    // 2. Answer the browser with the first of our codecs it offers.
    let codec = match BrowserOffer::parse(&caller, &offer) {
        Ok(o) => shared
            .config
            .media
            .codecs
            .iter()
            .map(|c| Codec::from_config(*c))
            .find(|c| o.codecs.contains(c)),
        Err(_) => None,
    };
    let Some(codec) = codec else {
        let _ = send(
            &mut socket,
            ServerMsg::error(
                "your browser offered no G.711 audio (PCMU/PCMA)",
                "您的浏览器未提供 G.711 音频（PCMU/PCMA）",
            ),
        )
        .await;
        return;
    };
    let bridge = match WebRtcBridge::accept(&caller, &shared.rtc, &offer, codec).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            let _ = send(
                &mut socket,
                ServerMsg::error(
                    format!("cannot set up audio: {e}"),
                    format!("无法建立音频：{e}"),
                ),
            )
            .await;
            return;
        }
    };
    let mut call = WebCall {
        shared: shared.clone(),
        caller,
        queue: queue_id,
        bridge,
        sip_call_id: format!("web-{}", message::new_tag()),
        switch_call_id: String::new(),
        dialog: None,
    };
    let (sip_tx, sip_rx) = mpsc::unbounded_channel();
    shared
        .routes
        .dialogs
        .insert(call.sip_call_id.clone(), sip_tx);
    let reason = call.run(&mut socket, sip_rx).await;
    shared.routes.dialogs.remove(&call.sip_call_id);
    call.bridge.close().await;
    tracing::info!(caller = %call.caller, call_id = %call.switch_call_id, reason, "web call ended");
    let _ = send(&mut socket, ended(&call.switch_call_id, reason)).await;
    let _ = send(&mut socket, ServerMsg::State { state: "idle" }).await;
}

fn ended(call_id: &str, reason: &str) -> ServerMsg {
    ServerMsg::Ended {
        call_id: call_id.to_owned(),
        reason: reason.to_owned(),
    }
}

/// One web call after the browser's offer was answered.
struct WebCall {
    shared: Arc<Shared>,
    /// The caller id shown to the switch (`web-…`).
    caller: String,
    /// The queue called.
    queue: String,
    /// The browser's audio.
    bridge: Arc<WebRtcBridge>,
    /// SIP Call-ID of our INVITE (the switch's call id is the same).
    sip_call_id: String,
    /// The switch's call id, once the call exists.
    switch_call_id: String,
    /// The dialog with the switch, once answered.
    dialog: Option<DialogState>,
}

impl WebCall {
    /// Drives the call; returns the `ended` reason.
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        mut sip_rx: mpsc::UnboundedReceiver<SipEvent>,
    ) -> &'static str {
        if !send(
            socket,
            ServerMsg::Sdp {
                sdp: self.bridge.answer_sdp().to_owned(),
            },
        )
        .await
        {
            return "disconnected";
        }
        let _ = send(
            socket,
            ServerMsg::State {
                state: "connecting",
            },
        )
        .await;
        let shared = self.shared.clone();
        let domain = shared.config.sip.domain.clone();
        let te = shared.config.media.telephone_event_pt;
        let sdp_session: u64 = rand::random::<u32>().into();
        let offer = sdp::build_audio(
            sdp_session,
            1,
            self.bridge.rtp_addr(),
            &[(
                self.bridge.codec().payload_type(),
                self.bridge.codec().name(),
            )],
            Some(te),
            Direction::SendRecv,
            shared.config.media.ptime_ms,
        );
        let contact = shared.contact_for(&self.caller);
        let mut dest = shared.node_sip;
        let mut redirected = false;
        // 1. INVITE (following one 302 from placement) until answered.
        let (invite, ok) = loop {
            let invite = match dialog::uac_invite(
                &format!("sip:{}@{domain}", self.caller),
                &format!("sip:{}@{domain}", self.queue),
                &format!("sip:{}@{dest}", self.queue),
                &contact,
                &self.sip_call_id,
                &message::new_tag(),
                if redirected { 2 } else { 1 },
                Some(&offer),
                SipTransport::Udp,
            ) {
                Ok(i) => i,
                Err(e) => {
                    let _ = send(
                        socket,
                        ServerMsg::error(format!("cannot call: {e}"), format!("无法呼叫：{e}")),
                    )
                    .await;
                    return "refused";
                }
            };
            let mut ctx = match shared
                .endpoint
                .send_request(invite.clone(), Peer::udp(dest))
            {
                Ok(c) => c,
                Err(e) => {
                    let _ = send(
                        socket,
                        ServerMsg::error(format!("cannot call: {e}"), format!("无法呼叫：{e}")),
                    )
                    .await;
                    return "refused";
                }
            };
            self.switch_call_id = self.sip_call_id.clone();
            let mut cancelled = false;
            let outcome = loop {
                tokio::select! {
                    ev = ctx.next() => match ev {
                        Some(ClientEvent::Provisional(r)) => {
                            if r.status_code.code() == 180 {
                                let _ = send(socket, ServerMsg::State { state: "ringing" }).await;
                            }
                        }
                        Some(ClientEvent::Final(r)) => break Ok(r),
                        Some(ClientEvent::Timeout) => break Err("timeout"),
                        Some(ClientEvent::TransportError(_)) | None => break Err("unreachable"),
                    },
                    page = next_from_page(socket), if !cancelled => match page {
                        FromPage::Gone | FromPage::Msg(ClientMsg::Hangup) => {
                            cancelled = true;
                            let _ = ctx.cancel();
                        }
                        FromPage::Msg(ClientMsg::Ping) => { let _ = send(socket, ServerMsg::Pong).await; }
                        _ => {}
                    },
                    _ = self.bridge.ended() => {
                        cancelled = true;
                        let _ = ctx.cancel();
                    }
                }
            };
            let resp = match outcome {
                Ok(r) => r,
                Err(why) => {
                    let _ = send(
                        socket,
                        ServerMsg::error(
                            format!("the call failed: {why}"),
                            format!("呼叫失败：{why}"),
                        ),
                    )
                    .await;
                    return "refused";
                }
            };
            let code = resp.status_code.code();
            if (200..300).contains(&code) {
                if cancelled {
                    // Answered anyway: ACK then BYE.
                    if let Ok(d) = dialog::uac_dialog(&invite, &resp, dest, SipTransport::Udp) {
                        self.dialog = Some(d);
                        self.ack(if redirected { 2 } else { 1 });
                        self.bye();
                    }
                    return "local_hangup";
                }
                break (invite, resp);
            }
            if (300..400).contains(&code)
                && !redirected
                && let Some(next) = message::contact_uri(&resp).and_then(|u| {
                    let host = u.host_with_port.to_string();
                    host.parse::<std::net::SocketAddr>().ok()
                })
            {
                // Placement: another member takes this caller.
                redirected = true;
                dest = next;
                continue;
            }
            if cancelled {
                return "local_hangup";
            }
            let _ = send(
                socket,
                ServerMsg::error(
                    format!("the call was refused: {code} {}", resp.status_code),
                    format!("呼叫被拒绝：{code}"),
                ),
            )
            .await;
            return "refused";
        };
        let cseq = if redirected { 2 } else { 1 };
        match dialog::uac_dialog(&invite, &ok, dest, SipTransport::Udp) {
            Ok(d) => self.dialog = Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "web call: unusable 200 OK");
                return "refused";
            }
        }
        self.ack(cseq);
        if let Some(answer) =
            gwsip::body_text(&ok.body).and_then(|t| sdp::parse_audio(&t, &self.sip_call_id).ok())
        {
            self.bridge
                .set_remote(Some(answer.addr), answer.telephone_event_pt);
        }
        // 2. Talking: wait for DTLS (bounded), then relay until someone hangs up.
        match self.bridge.connected(self.shared.rtc.connect_timeout).await {
            Ok(()) => {
                let _ = send(socket, ServerMsg::State { state: "talking" }).await;
            }
            Err(e) => {
                let _ = send(
                    socket,
                    ServerMsg::error(
                        format!("audio did not connect: {e}"),
                        format!("音频未能连通：{e}"),
                    ),
                )
                .await;
                self.bye();
                return "media_failed";
            }
        }
        loop {
            tokio::select! {
                page = next_from_page(socket) => match page {
                    FromPage::Gone | FromPage::Msg(ClientMsg::Hangup) => {
                        self.bye();
                        return "local_hangup";
                    }
                    FromPage::Msg(ClientMsg::Ping) => { let _ = send(socket, ServerMsg::Pong).await; }
                    FromPage::Msg(ClientMsg::Dtmf { digit }) => {
                        let mut cs = digit.chars();
                        let r = match (cs.next(), cs.next()) {
                            (Some(d), None) if lingxi_media::dtmf::event_code(d).is_none() => {
                                Err(format!("'{d}' is not a DTMF key (0-9, *, #, A-D)"))
                            }
                            (Some(d), None) => self.bridge.send_dtmf(d).map_err(|e| e.to_string()),
                            _ => Err(format!("{digit:?} is not one key")),
                        };
                        if let Err(e) = r {
                            let _ = send(socket, ServerMsg::error(format!("key not sent: {e}"), format!("按键未发送：{e}"))).await;
                        }
                    }
                    FromPage::Msg(_) => {
                        let _ = send(socket, ServerMsg::error("not available on a web call", "网页呼叫不支持该操作")).await;
                    }
                    FromPage::Bad(e) => {
                        let _ = send(socket, ServerMsg::error(e.clone(), format!("消息无法识别：{e}"))).await;
                    }
                    FromPage::Other => {}
                },
                ev = sip_rx.recv() => match ev {
                    Some(SipEvent::Request { request, source, tx }) => {
                        if let Some(reason) = self.on_request(request, source, tx) {
                            return reason;
                        }
                    }
                    Some(SipEvent::Cancel { invite }) => {
                        let _ = invite.respond(response_for(invite.request(), 481, None, None));
                    }
                    Some(_) => {}
                    None => return "shutdown",
                },
                _ = self.bridge.ended() => {
                    self.bye();
                    return "media_failed";
                }
            }
        }
    }

    /// Answers an in-dialog request; `Some(reason)` when it ended the call.
    fn on_request(
        &mut self,
        request: rsip::Request,
        source: Peer,
        tx: lingxi_actors::sip::transaction::ServerTransaction,
    ) -> Option<&'static str> {
        let ptime = self.shared.config.media.ptime_ms;
        let Some(d) = self.dialog.as_mut() else {
            let _ = tx.respond(response_for(&request, 481, None, None));
            return None;
        };
        if let Err(e) = dialog::check_incoming(d, &request) {
            let _ = tx.respond(response_for(&request, 500, Some(&e.to_string()), None));
            return None;
        }
        match request.method {
            rsip::Method::Bye => {
                let _ = tx.respond(response_for(&request, 200, None, None));
                Some("remote_hangup")
            }
            rsip::Method::Invite => {
                // Failover or hold from the switch: follow its address and media.
                d.peer = source.addr;
                let offer = gwsip::body_text(&request.body)
                    .and_then(|t| sdp::parse_audio(&t, &self.sip_call_id).ok());
                let direction = offer
                    .as_ref()
                    .map(|o| o.direction.reverse())
                    .unwrap_or(Direction::SendRecv);
                if let Some(o) = &offer {
                    let addr = (!o.addr.ip().is_unspecified()).then_some(o.addr);
                    self.bridge.set_remote(addr, o.telephone_event_pt);
                }
                d.sdp_version += 1;
                let answer = sdp::build_audio(
                    u64::from(d.sdp_version as u32),
                    d.sdp_version,
                    self.bridge.rtp_addr(),
                    &[(
                        self.bridge.codec().payload_type(),
                        self.bridge.codec().name(),
                    )],
                    offer.as_ref().and_then(|o| o.telephone_event_pt),
                    direction,
                    ptime,
                );
                let mut ok = response_for(&request, 200, None, None);
                ok.headers
                    .push(Header::Contact(rsip::headers::Contact::new(format!(
                        "<{}>",
                        d.local_contact
                    ))));
                let _ = tx.respond(with_body(ok, "application/sdp", answer.into_bytes()));
                None
            }
            _ => {
                let _ = tx.respond(response_for(&request, 200, None, None));
                None
            }
        }
    }

    fn ack(&self, cseq: u32) {
        let Some(d) = &self.dialog else { return };
        match dialog::make_ack(d, cseq, None) {
            Ok(ack) => {
                if let Err(e) = self.shared.endpoint.send_ack(ack, Peer::udp(d.peer)) {
                    tracing::warn!(error = %e, "web call: ACK not sent");
                }
            }
            Err(e) => tracing::warn!(error = %e, "web call: cannot build ACK"),
        }
    }

    fn bye(&mut self) {
        let endpoint = self.shared.endpoint.clone();
        let Some(d) = self.dialog.as_mut() else {
            return;
        };
        match dialog::make_request(d, rsip::Method::Bye, None) {
            Ok(bye) => match endpoint.send_request(bye, Peer::udp(d.peer)) {
                Ok(mut ctx) => {
                    tokio::spawn(async move { while ctx.next().await.is_some() {} });
                }
                Err(e) => tracing::warn!(error = %e, "web call: BYE not sent"),
            },
            Err(e) => tracing::warn!(error = %e, "web call: cannot build BYE"),
        }
    }
}
