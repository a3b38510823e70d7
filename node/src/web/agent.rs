//! One web agent's "phone line": a task that owns the agent's registration, its WebSockets
//! (one per open page) and its current call. Everything about the agent happens in this one
//! task, in order; slow work (a REGISTER, WebRTC set-up, a re-INVITE) runs in small sub-tasks
//! that post their result back, so a CANCEL or BYE is never stuck behind them.
//!
//! The line lives as long as the gateway (idle lines are a parked task): when the last page
//! closes, the registration is kept for `web.unregister_grace_secs` (a reload does not log the
//! agent out), then removed with `Expires: 0`.

use std::sync::Arc;
use std::time::Duration;

use lingxi_actors::sip::dialog;
use lingxi_actors::sip::message::{self, response_for, with_body};
use lingxi_actors::sip::sdp::{self, AudioOffer, Direction};
use lingxi_actors::sip::transaction::{ClientEvent, Peer, ServerTransaction};
use lingxi_cluster::{DialogState, SipTransport};
use lingxi_media::Codec;
use lingxi_media::webrtc::WebRtcBridge;
use rsip::Header;
use rsip::headers::UntypedHeader as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::protocol::{ClientMsg, ServerMsg};
use super::sip::{self as gwsip, RegisterParams, SipEvent};

/// Messages to a line.
#[derive(Debug)]
pub(crate) enum LineMsg {
    /// A page opened the agent socket.
    Connected {
        /// Connection number (unique in the gateway).
        conn: u64,
        /// Where to send that page's messages.
        out: mpsc::UnboundedSender<ServerMsg>,
    },
    /// That page's socket closed.
    Disconnected {
        /// Its connection number.
        conn: u64,
    },
    /// A message from a page.
    Client {
        /// Which page.
        conn: u64,
        /// What it said.
        msg: ClientMsg,
    },
    /// A REGISTER finished: `Ok(granted seconds)` or an error for the page, with the last
    /// CSeq number used.
    Registered {
        /// Seconds asked for (0 = unregister).
        asked: u32,
        /// Outcome.
        result: Result<u32, String>,
        /// Last CSeq used.
        cseq: u32,
    },
    /// The browser's WebRTC answer is ready (or failed).
    BridgeReady {
        /// Which call attempt it belongs to.
        generation: u64,
        /// The bridge.
        result: Result<Arc<WebRtcBridge>, String>,
    },
    /// DTLS is up (or failed) for the call.
    MediaUp {
        /// Which call attempt.
        generation: u64,
        /// Outcome.
        result: Result<(), String>,
    },
    /// The browser's peer connection ended.
    MediaEnded {
        /// Which call attempt.
        generation: u64,
    },
    /// Our hold/unhold re-INVITE finished.
    HoldDone {
        /// Which call attempt.
        generation: u64,
        /// Hold on or off.
        on: bool,
        /// The final response, or why there was none.
        result: Result<rsip::Response, String>,
        /// The re-INVITE's CSeq (for the ACK).
        cseq: u32,
    },
    /// Our REFER finished.
    ReferDone {
        /// Which call attempt.
        generation: u64,
        /// The Refer-To URI.
        target: String,
        /// The final response's code and reason, or why there was none.
        result: Result<(u16, String), String>,
    },
}

/// A call ringing at or talking on the line.
struct Call {
    /// Distinguishes results of sub-tasks of this call from an earlier one's.
    generation: u64,
    /// The switch's call id (`X-Lingxi-Call`), what the page and the API use.
    switch_call_id: String,
    /// The SIP Call-ID of the switch's INVITE to us.
    sip_call_id: String,
    /// The INVITE's transaction, until its final response.
    invite: Option<ServerTransaction>,
    /// The dialog (UAS side).
    dialog: DialogState,
    /// What the switch's SDP says.
    offer: AudioOffer,
    /// The G.711 codec of the call.
    codec: Codec,
    /// Who calls.
    from: String,
    /// Through which queue.
    queue: Option<String>,
    /// `ringing`, `connecting`, `talking`, `held`.
    state: &'static str,
    /// The browser's audio, once answered.
    bridge: Option<Arc<WebRtcBridge>>,
    /// `o=` session id of our SDP.
    sdp_session: u64,
    /// A hold re-INVITE or REFER is in flight.
    busy: bool,
}

/// The line task's state.
struct Line {
    shared: Arc<Shared>,
    /// Agent id.
    agent: String,
    /// Posts sub-task results back to the line.
    tx: mpsc::UnboundedSender<LineMsg>,
    /// Open pages.
    conns: Vec<(u64, mpsc::UnboundedSender<ServerMsg>)>,
    /// Call-ID of the registration (constant, so refreshes update one binding).
    reg_call_id: String,
    /// Last CSeq of the registration.
    reg_cseq: u32,
    /// Seconds granted by the last successful REGISTER; `None` when not registered.
    registered: Option<u32>,
    /// A REGISTER is in flight.
    registering: bool,
    /// When to refresh (or retry) the registration.
    refresh_at: Option<Instant>,
    /// When the last page closed plus the grace: unregister then.
    grace_at: Option<Instant>,
    /// The current call.
    call: Option<Call>,
    /// Counter for [`Call::generation`].
    generations: u64,
}

/// Starts the line of `agent`; returns where to send it messages.
pub(crate) fn spawn_line(shared: Arc<Shared>, agent: String) -> mpsc::UnboundedSender<LineMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (sip_tx, sip_rx) = mpsc::unbounded_channel();
    shared.routes.lines.insert(agent.clone(), sip_tx.clone());
    let line = Line {
        reg_call_id: format!("webreg-{}-{}", message::new_tag(), agent),
        shared,
        agent,
        tx: tx.clone(),
        conns: Vec::new(),
        reg_cseq: 0,
        registered: None,
        registering: false,
        refresh_at: None,
        grace_at: None,
        call: None,
        generations: 0,
    };
    tokio::spawn(line.run(rx, sip_rx, sip_tx));
    tx
}

impl Line {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<LineMsg>,
        mut sip_rx: mpsc::UnboundedReceiver<SipEvent>,
        sip_tx: gwsip::EventSink,
    ) {
        let stop = self.shared.shutdown.clone();
        loop {
            let refresh = self.refresh_at;
            let grace = self.grace_at;
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(m) = rx.recv() => self.on_msg(m),
                Some(ev) = sip_rx.recv() => self.on_sip(ev, &sip_tx),
                _ = sleep_until(refresh), if refresh.is_some() => {
                    self.refresh_at = None;
                    if !self.conns.is_empty() || self.grace_at.is_some() {
                        self.register(self.shared.config.web.register_expires_secs);
                    }
                }
                _ = sleep_until(grace), if grace.is_some() => {
                    self.grace_at = None;
                    if self.conns.is_empty() {
                        self.end_call("disconnected");
                        if self.registered.is_some() {
                            self.register(0);
                        }
                    }
                }
            }
        }
        self.end_call("shutdown");
    }

    fn broadcast(&self, msg: ServerMsg) {
        for (_, out) in &self.conns {
            let _ = out.send(msg.clone());
        }
    }

    fn send_to(&self, conn: u64, msg: ServerMsg) {
        if let Some((_, out)) = self.conns.iter().find(|(c, _)| *c == conn) {
            let _ = out.send(msg);
        }
    }

    fn error(&self, en: String, zh: String) {
        tracing::info!(agent = %self.agent, error = %en, "web agent error");
        self.broadcast(ServerMsg::error(en, zh));
    }

    fn set_state(&mut self, state: &'static str) {
        if let Some(c) = self.call.as_mut() {
            c.state = state;
        }
        self.broadcast(ServerMsg::State { state });
    }

    /// Starts a REGISTER (or an unregister with 0) in a sub-task.
    fn register(&mut self, expires: u32) {
        if self.registering {
            return;
        }
        self.registering = true;
        let shared = self.shared.clone();
        let agent = self.agent.clone();
        let call_id = self.reg_call_id.clone();
        let cseq = self.reg_cseq + 1;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (result, cseq) = register_once(&shared, &agent, &call_id, cseq, expires).await;
            let _ = tx.send(LineMsg::Registered {
                asked: expires,
                result,
                cseq,
            });
        });
    }

    fn on_msg(&mut self, m: LineMsg) {
        match m {
            LineMsg::Connected { conn, out } => {
                let name = self
                    .shared
                    .switch
                    .log()
                    .read(|sm| sm.agent_by_id(&self.agent).map(|a| a.name.clone()))
                    .unwrap_or_default();
                let _ = out.send(ServerMsg::Hello {
                    id: self.agent.clone(),
                    name,
                });
                if let Some(expires) = self.registered {
                    let _ = out.send(ServerMsg::Registered {
                        agent: self.agent.clone(),
                        expires,
                    });
                }
                if let Some(c) = &self.call {
                    let _ = out.send(ServerMsg::Incoming {
                        call_id: c.switch_call_id.clone(),
                        from: c.from.clone(),
                        queue: c.queue.clone(),
                    });
                    let _ = out.send(ServerMsg::State { state: c.state });
                }
                self.conns.push((conn, out));
                self.grace_at = None;
                if self.registered.is_none() {
                    self.register(self.shared.config.web.register_expires_secs);
                }
            }
            LineMsg::Disconnected { conn } => {
                self.conns.retain(|(c, _)| *c != conn);
                if self.conns.is_empty() {
                    self.grace_at = Some(
                        Instant::now()
                            + Duration::from_secs(self.shared.config.web.unregister_grace_secs),
                    );
                }
            }
            LineMsg::Client { conn, msg } => self.on_client(conn, msg),
            LineMsg::Registered {
                asked,
                result,
                cseq,
            } => {
                self.registering = false;
                self.reg_cseq = cseq;
                match result {
                    Ok(granted) if asked > 0 => {
                        self.registered = Some(granted);
                        self.refresh_at = Some(
                            Instant::now() + Duration::from_secs(u64::from(granted.max(10) / 2)),
                        );
                        tracing::info!(agent = %self.agent, expires = granted, "web agent registered");
                        self.broadcast(ServerMsg::Registered {
                            agent: self.agent.clone(),
                            expires: granted,
                        });
                        if self.conns.is_empty() && self.grace_at.is_none() {
                            // The page went away while we registered.
                            self.register(0);
                        }
                    }
                    Ok(_) => {
                        tracing::info!(agent = %self.agent, "web agent unregistered");
                        self.registered = None;
                        self.refresh_at = None;
                        if !self.conns.is_empty() {
                            // A page came back while we unregistered.
                            self.register(self.shared.config.web.register_expires_secs);
                        }
                    }
                    Err(e) => {
                        if asked > 0 {
                            self.registered = None;
                            self.error(
                                format!("registration with the switch failed: {e}"),
                                format!("向交换机注册失败：{e}"),
                            );
                            // Retry while a page is open.
                            self.refresh_at = Some(Instant::now() + Duration::from_secs(10));
                        } else {
                            tracing::warn!(agent = %self.agent, error = %e, "web agent unregister failed");
                            self.registered = None;
                        }
                    }
                }
            }
            LineMsg::BridgeReady { generation, result } => self.on_bridge(generation, result),
            LineMsg::MediaUp { generation, result } => self.on_media_up(generation, result),
            LineMsg::MediaEnded { generation } => {
                if self.is_current(generation) {
                    self.error(
                        "the browser's audio connection was lost".into(),
                        "浏览器音频连接已断开".into(),
                    );
                    self.end_call("media_failed");
                }
            }
            LineMsg::HoldDone {
                generation,
                on,
                result,
                cseq,
            } => self.on_hold_done(generation, on, result, cseq),
            LineMsg::ReferDone {
                generation,
                target,
                result,
            } => {
                if let Some(c) = self.call.as_mut().filter(|c| c.generation == generation) {
                    c.busy = false;
                }
                match result {
                    Ok((code, _)) if (200..300).contains(&code) => {
                        self.broadcast(ServerMsg::Transferred { target });
                    }
                    Ok((code, reason)) => self.error(
                        format!("transfer to {target} refused by the switch: {code} {reason}"),
                        format!("交换机拒绝转接到 {target}：{code} {reason}"),
                    ),
                    Err(e) => self.error(
                        format!("transfer to {target} failed: {e}"),
                        format!("转接到 {target} 失败：{e}"),
                    ),
                }
            }
        }
    }

    fn is_current(&self, generation: u64) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }

    fn on_client(&mut self, conn: u64, msg: ClientMsg) {
        match msg {
            ClientMsg::Ping => self.send_to(conn, ServerMsg::Pong),
            ClientMsg::Answer { sdp } => self.answer(conn, sdp),
            ClientMsg::Reject => match &self.call {
                Some(c) if c.invite.is_some() => self.end_call("rejected"),
                _ => self.send_to(
                    conn,
                    ServerMsg::error("no ringing call to reject", "没有可拒接的来电"),
                ),
            },
            ClientMsg::Hangup => {
                if self.call.is_some() {
                    self.end_call("local_hangup");
                } else {
                    self.send_to(conn, ServerMsg::error("no call to hang up", "当前没有通话"));
                }
            }
            ClientMsg::Hold { on } => self.hold(conn, on),
            ClientMsg::Dtmf { digit } => {
                let Some(bridge) = self.call.as_ref().and_then(|c| c.bridge.clone()) else {
                    return self.send_to(
                        conn,
                        ServerMsg::error("no call for DTMF", "当前没有通话，无法发送按键"),
                    );
                };
                let mut chars = digit.chars();
                let (Some(d), None) = (chars.next(), chars.next()) else {
                    return self.send_to(
                        conn,
                        ServerMsg::error(
                            format!("{digit:?} is not one DTMF key"),
                            format!("{digit:?} 不是单个按键"),
                        ),
                    );
                };
                if lingxi_media::dtmf::event_code(d).is_none() {
                    return self.send_to(
                        conn,
                        ServerMsg::error(
                            format!("'{d}' is not a DTMF key (0-9, *, #, A-D)"),
                            format!("'{d}' 不是有效按键（0-9、*、#、A-D）"),
                        ),
                    );
                }
                if let Err(e) = bridge.send_dtmf(d) {
                    self.send_to(
                        conn,
                        ServerMsg::error(format!("DTMF not sent: {e}"), format!("按键未发送：{e}")),
                    );
                }
            }
            ClientMsg::Transfer { queue, agent } => self.transfer(conn, queue, agent),
            ClientMsg::Call { .. } => self.send_to(
                conn,
                ServerMsg::error(
                    "an agent socket cannot place customer calls; use /api/v1/webcall/ws",
                    "座席连接不能发起客户呼叫，请使用 /api/v1/webcall/ws",
                ),
            ),
        }
    }

    fn on_sip(&mut self, ev: SipEvent, sip_tx: &gwsip::EventSink) {
        match ev {
            SipEvent::Invite {
                request,
                source,
                tx,
            } => self.on_invite(request, source, tx, sip_tx),
            SipEvent::Cancel { invite } => {
                let _ = invite.respond(response_for(invite.request(), 487, None, None));
                if let Some(c) = self.call.as_mut() {
                    c.invite = None;
                }
                self.end_call("cancelled");
            }
            SipEvent::Ack => {}
            SipEvent::AckTimeout => {
                self.error(
                    "the switch did not confirm the answer".into(),
                    "交换机未确认接听".into(),
                );
                self.end_call("media_failed");
            }
            SipEvent::Request {
                request,
                source,
                tx,
            } => self.on_in_dialog(request, source, tx),
        }
    }

    fn on_invite(
        &mut self,
        request: rsip::Request,
        source: Peer,
        tx: ServerTransaction,
        sip_tx: &gwsip::EventSink,
    ) {
        let refuse = |code: u16, reason: &str| {
            let _ = tx.respond(response_for(
                &request,
                code,
                Some(reason),
                Some(&message::new_tag()),
            ));
        };
        if self.call.is_some() {
            return refuse(486, "Web agent busy");
        }
        if self.conns.is_empty() {
            return refuse(480, "Web agent page closed");
        }
        let Ok(sip_call_id) = message::call_id(&request) else {
            return refuse(400, "No Call-ID");
        };
        let Some(offer_text) = gwsip::body_text(&request.body) else {
            return refuse(488, "The web gateway needs an SDP offer");
        };
        let offer = match sdp::parse_audio(&offer_text, &sip_call_id) {
            Ok(o) => o,
            Err(e) => return refuse(488, &format!("Unusable SDP: {e}")),
        };
        let Some(codec) = offer
            .codecs
            .iter()
            .find_map(|(_, name)| Codec::from_name(name))
        else {
            return refuse(488, "Only PCMU or PCMA reach a browser");
        };
        let tag = message::new_tag();
        let contact = self.shared.contact_for(&self.agent);
        let dialog =
            match dialog::uas_dialog(&request, source.addr, SipTransport::Udp, &tag, &contact) {
                Ok(d) => d,
                Err(e) => return refuse(400, &format!("Cannot make a dialog: {e}")),
            };
        let switch_call_id =
            gwsip::other_header(&request, "X-Lingxi-Call").unwrap_or_else(|| sip_call_id.clone());
        let queue = gwsip::other_header(&request, "X-Lingxi-Queue");
        let from = gwsip::user_of(&gwsip::from_value(&request));
        let _ = tx.respond(response_for(&request, 180, None, Some(&tag)));
        self.shared
            .routes
            .dialogs
            .insert(sip_call_id.clone(), sip_tx.clone());
        self.generations += 1;
        self.call = Some(Call {
            generation: self.generations,
            switch_call_id: switch_call_id.clone(),
            sip_call_id,
            invite: Some(tx),
            dialog,
            offer,
            codec,
            from: from.clone(),
            queue: queue.clone(),
            state: "ringing",
            bridge: None,
            sdp_session: rand::random::<u32>().into(),
            busy: false,
        });
        tracing::info!(agent = %self.agent, call_id = %switch_call_id, %from, "web agent ringing");
        self.broadcast(ServerMsg::Incoming {
            call_id: switch_call_id,
            from,
            queue,
        });
        self.broadcast(ServerMsg::State { state: "ringing" });
    }

    fn answer(&mut self, conn: u64, offer_sdp: String) {
        let Some(c) = self.call.as_mut() else {
            return self.send_to(
                conn,
                ServerMsg::error("no ringing call to answer", "没有可接听的来电"),
            );
        };
        if c.state != "ringing" || c.invite.is_none() {
            return self.send_to(
                conn,
                ServerMsg::error("the call is already being answered", "该来电已在接听中"),
            );
        }
        c.state = "connecting";
        let generation = c.generation;
        let codec = c.codec;
        let session = c.switch_call_id.clone();
        let rtc = self.shared.rtc.clone();
        let tx = self.tx.clone();
        let timeout = rtc.connect_timeout;
        tokio::spawn(async move {
            let result = WebRtcBridge::accept(&session, &rtc, &offer_sdp, codec)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string());
            let ok = result.as_ref().ok().cloned();
            let _ = tx.send(LineMsg::BridgeReady { generation, result });
            if let Some(bridge) = ok {
                let up = bridge.connected(timeout).await.map_err(|e| e.to_string());
                let _ = tx.send(LineMsg::MediaUp {
                    generation,
                    result: up.clone(),
                });
                if up.is_ok() {
                    bridge.ended().await;
                    let _ = tx.send(LineMsg::MediaEnded { generation });
                }
            }
        });
        self.broadcast(ServerMsg::State {
            state: "connecting",
        });
    }

    fn on_bridge(&mut self, generation: u64, result: Result<Arc<WebRtcBridge>, String>) {
        match result {
            Ok(bridge) => {
                let Some(c) = self.call.as_mut().filter(|c| c.generation == generation) else {
                    tokio::spawn(async move { bridge.close().await });
                    return;
                };
                c.bridge = Some(bridge.clone());
                self.broadcast(ServerMsg::Sdp {
                    sdp: bridge.answer_sdp().to_owned(),
                });
            }
            Err(e) => {
                if self.is_current(generation) {
                    self.error(
                        format!("cannot set up the browser's audio: {e}"),
                        format!("无法建立浏览器音频：{e}"),
                    );
                    self.end_call("media_failed");
                }
            }
        }
    }

    fn on_media_up(&mut self, generation: u64, result: Result<(), String>) {
        if !self.is_current(generation) {
            return;
        }
        if let Err(e) = result {
            self.error(
                format!("the browser's audio did not connect: {e}"),
                format!("浏览器音频未能连通：{e}"),
            );
            return self.end_call("media_failed");
        }
        let ptime = self.shared.config.media.ptime_ms;
        let Some(c) = self.call.as_mut() else { return };
        let Some(bridge) = c.bridge.clone() else {
            return;
        };
        let Some(invite) = c.invite.take() else {
            return;
        };
        c.dialog.sdp_version += 1;
        let answer = sdp::build_audio(
            c.sdp_session,
            c.dialog.sdp_version,
            bridge.rtp_addr(),
            &[(c.codec.payload_type(), c.codec.name())],
            c.offer.telephone_event_pt,
            c.offer.direction.reverse(),
            ptime,
        );
        bridge.set_remote(Some(c.offer.addr), c.offer.telephone_event_pt);
        let mut ok = response_for(invite.request(), 200, None, Some(&c.dialog.local_tag));
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{}>",
                c.dialog.local_contact
            ))));
        let ok = with_body(ok, "application/sdp", answer.clone().into_bytes());
        c.dialog.local_sdp = Some(answer);
        if let Err(e) = invite.respond(ok) {
            let e = e.to_string();
            self.error(
                format!("cannot answer the switch: {e}"),
                format!("无法应答交换机：{e}"),
            );
            return self.end_call("media_failed");
        }
        tracing::info!(agent = %self.agent, call_id = %c.switch_call_id, "web agent answered");
        self.set_state("talking");
    }

    fn hold(&mut self, conn: u64, on: bool) {
        let ptime = self.shared.config.media.ptime_ms;
        let endpoint = self.shared.endpoint.clone();
        let tx = self.tx.clone();
        let Some(c) = self.call.as_mut() else {
            return self.send_to(conn, ServerMsg::error("no call to hold", "当前没有通话"));
        };
        let (Some(bridge), None) = (c.bridge.clone(), c.invite.as_ref()) else {
            return self.send_to(
                conn,
                ServerMsg::error("the call is not connected yet", "通话尚未接通"),
            );
        };
        if c.busy {
            return self.send_to(
                conn,
                ServerMsg::error("another request is in progress", "另一个操作正在进行中"),
            );
        }
        c.busy = true;
        c.dialog.sdp_version += 1;
        let offer = sdp::build_audio(
            c.sdp_session,
            c.dialog.sdp_version,
            bridge.rtp_addr(),
            &[(c.codec.payload_type(), c.codec.name())],
            c.offer.telephone_event_pt,
            if on {
                Direction::SendOnly
            } else {
                Direction::SendRecv
            },
            ptime,
        );
        let req = match dialog::make_request(
            &mut c.dialog,
            rsip::Method::Invite,
            Some(("application/sdp", offer.clone().into_bytes())),
        ) {
            Ok(r) => r,
            Err(e) => {
                c.busy = false;
                return self.send_to(
                    conn,
                    ServerMsg::error(
                        format!("cannot build the re-INVITE: {e}"),
                        format!("无法构造保持请求：{e}"),
                    ),
                );
            }
        };
        c.dialog.local_sdp = Some(offer);
        let cseq = c.dialog.local_seq;
        let dest = Peer::udp(c.dialog.peer);
        let generation = c.generation;
        tokio::spawn(async move {
            let result = match endpoint.send_request(req, dest) {
                Ok(mut ctx) => final_response(&mut ctx).await,
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(LineMsg::HoldDone {
                generation,
                on,
                result,
                cseq,
            });
        });
    }

    fn on_hold_done(
        &mut self,
        generation: u64,
        on: bool,
        result: Result<rsip::Response, String>,
        cseq: u32,
    ) {
        let endpoint = self.shared.endpoint.clone();
        let Some(c) = self.call.as_mut().filter(|c| c.generation == generation) else {
            return;
        };
        c.busy = false;
        match result {
            Ok(resp) if (200..300).contains(&resp.status_code.code()) => {
                match dialog::make_ack(&c.dialog, cseq, None) {
                    Ok(ack) => {
                        let _ = endpoint.send_ack(ack, Peer::udp(c.dialog.peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot build the ACK of a hold re-INVITE")
                    }
                }
                if let Some(b) = &c.bridge {
                    b.set_sending(!on);
                }
                self.set_state(if on { "held" } else { "talking" });
            }
            Ok(resp) => {
                let code = resp.status_code.code();
                self.error(
                    format!(
                        "the switch refused {}: {code}",
                        if on { "hold" } else { "unhold" }
                    ),
                    format!("交换机拒绝{}：{code}", if on { "保持" } else { "恢复" }),
                );
            }
            Err(e) => self.error(
                format!("{} failed: {e}", if on { "hold" } else { "unhold" }),
                format!("{}失败：{e}", if on { "保持" } else { "恢复" }),
            ),
        }
    }

    fn transfer(&mut self, conn: u64, queue: Option<String>, agent: Option<String>) {
        let domain = self.shared.config.sip.domain.clone();
        let me = self.agent.clone();
        let endpoint = self.shared.endpoint.clone();
        let tx = self.tx.clone();
        let target_user = match (queue, agent) {
            (Some(q), None) => q,
            (None, Some(a)) => a,
            _ => {
                return self.send_to(
                    conn,
                    ServerMsg::error(
                        "transfer needs exactly one of queue or agent",
                        "转接需要且只需要指定队列或座席之一",
                    ),
                );
            }
        };
        if target_user.is_empty()
            || !target_user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        {
            return self.send_to(
                conn,
                ServerMsg::error(
                    format!("{target_user:?} is not a queue or agent id"),
                    format!("{target_user:?} 不是有效的队列或座席编号"),
                ),
            );
        }
        let Some(c) = self.call.as_mut() else {
            return self.send_to(
                conn,
                ServerMsg::error("no call to transfer", "当前没有通话"),
            );
        };
        if c.invite.is_some() || c.busy {
            return self.send_to(
                conn,
                ServerMsg::error("the call cannot be transferred now", "当前通话无法转接"),
            );
        }
        let target = format!("sip:{target_user}@{domain}");
        let mut req = match dialog::make_request(&mut c.dialog, rsip::Method::Refer, None) {
            Ok(r) => r,
            Err(e) => {
                return self.send_to(
                    conn,
                    ServerMsg::error(
                        format!("cannot build the REFER: {e}"),
                        format!("无法构造转接请求：{e}"),
                    ),
                );
            }
        };
        req.headers
            .push(Header::Other("Refer-To".into(), format!("<{target}>")));
        req.headers.push(Header::Other(
            "Referred-By".into(),
            format!("<sip:{me}@{domain}>"),
        ));
        c.busy = true;
        let dest = Peer::udp(c.dialog.peer);
        let generation = c.generation;
        tokio::spawn(async move {
            let result = match endpoint.send_request(req, dest) {
                Ok(mut ctx) => final_response(&mut ctx)
                    .await
                    .map(|r| (r.status_code.code(), r.status_code.to_string())),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(LineMsg::ReferDone {
                generation,
                target,
                result,
            });
        });
    }

    fn on_in_dialog(&mut self, request: rsip::Request, source: Peer, tx: ServerTransaction) {
        let ptime = self.shared.config.media.ptime_ms;
        let Some(c) = self.call.as_mut() else {
            let _ = tx.respond(response_for(&request, 481, None, None));
            return;
        };
        if let Err(e) = dialog::check_incoming(&mut c.dialog, &request) {
            let _ = tx.respond(response_for(&request, 500, Some(&e.to_string()), None));
            return;
        }
        match request.method {
            rsip::Method::Bye => {
                let _ = tx.respond(response_for(&request, 200, None, None));
                c.invite = None;
                self.finish("remote_hangup");
            }
            rsip::Method::Invite => {
                // A re-INVITE: the caller held us, or another node took the call over
                // (failover): follow its address and media.
                c.dialog.peer = source.addr;
                if let Some(text) = gwsip::body_text(&request.body) {
                    match sdp::parse_audio(&text, &c.sip_call_id) {
                        Ok(offer) => {
                            c.offer = offer;
                            c.dialog.remote_sdp = Some(text);
                        }
                        Err(e) => {
                            let _ =
                                tx.respond(response_for(&request, 488, Some(&e.to_string()), None));
                            return;
                        }
                    }
                }
                if let Some(b) = &c.bridge {
                    let addr = (!c.offer.addr.ip().is_unspecified()).then_some(c.offer.addr);
                    b.set_remote(addr, c.offer.telephone_event_pt);
                }
                let rtp = c
                    .bridge
                    .as_ref()
                    .map(|b| b.rtp_addr())
                    .unwrap_or(self.shared.local);
                c.dialog.sdp_version += 1;
                let answer = sdp::build_audio(
                    c.sdp_session,
                    c.dialog.sdp_version,
                    rtp,
                    &[(c.codec.payload_type(), c.codec.name())],
                    c.offer.telephone_event_pt,
                    c.offer.direction.reverse(),
                    ptime,
                );
                let mut ok = response_for(&request, 200, None, None);
                ok.headers
                    .push(Header::Contact(rsip::headers::Contact::new(format!(
                        "<{}>",
                        c.dialog.local_contact
                    ))));
                let ok = with_body(ok, "application/sdp", answer.clone().into_bytes());
                c.dialog.local_sdp = Some(answer);
                let _ = tx.respond(ok);
                tracing::info!(agent = %self.agent, call_id = %c.switch_call_id, from = %source, "re-INVITE from the switch: media re-pointed");
            }
            _ => {
                // NOTIFY (transfer progress), INFO, OPTIONS, UPDATE without SDP: acknowledged.
                let _ = tx.respond(response_for(&request, 200, None, None));
            }
        }
    }

    /// Ends the current call from our side (reject, hang up, media failure, page gone):
    /// answers the INVITE with an error while it rings, else sends BYE.
    fn end_call(&mut self, reason: &str) {
        let endpoint = self.shared.endpoint.clone();
        let Some(c) = self.call.as_mut() else { return };
        if let Some(invite) = c.invite.take() {
            let (code, phrase) = match reason {
                "rejected" | "local_hangup" => (603, "Declined by the web agent"),
                "cancelled" => (487, "Request Terminated"),
                _ => (480, "Web agent unavailable"),
            };
            let _ = invite.respond(response_for(
                invite.request(),
                code,
                Some(phrase),
                Some(&c.dialog.local_tag),
            ));
        } else if reason != "cancelled" {
            match dialog::make_request(&mut c.dialog, rsip::Method::Bye, None) {
                Ok(bye) => match endpoint.send_request(bye, Peer::udp(c.dialog.peer)) {
                    Ok(mut ctx) => {
                        tokio::spawn(async move { while ctx.next().await.is_some() {} });
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot send BYE"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot build BYE"),
            }
        }
        self.finish(reason);
    }

    /// Forgets the call: routes, media, and tells the pages.
    fn finish(&mut self, reason: &str) {
        let Some(c) = self.call.take() else { return };
        self.shared.routes.dialogs.remove(&c.sip_call_id);
        if let Some(b) = c.bridge {
            tokio::spawn(async move { b.close().await });
        }
        tracing::info!(agent = %self.agent, call_id = %c.switch_call_id, reason, "web agent call ended");
        self.broadcast(ServerMsg::Ended {
            call_id: c.switch_call_id,
            reason: reason.to_owned(),
        });
        self.broadcast(ServerMsg::State { state: "idle" });
    }
}

/// Sleeps until `at` (never, for `None`: the branch is disabled then anyway).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for a client transaction's final response.
pub(crate) async fn final_response(
    ctx: &mut lingxi_actors::sip::transaction::ClientTransaction,
) -> Result<rsip::Response, String> {
    while let Some(ev) = ctx.next().await {
        match ev {
            ClientEvent::Provisional(_) => {}
            ClientEvent::Final(r) => return Ok(r),
            ClientEvent::Timeout => return Err("no answer from the switch (timeout)".into()),
            ClientEvent::TransportError(e) => return Err(format!("transport error: {e}")),
        }
    }
    Err("the transaction ended without a response".into())
}

/// One REGISTER (or unregister) for `agent`, answering one digest challenge with the HA1 from
/// the replicated state. Returns the granted expiry and the last CSeq used.
async fn register_once(
    shared: &Shared,
    agent: &str,
    call_id: &str,
    mut cseq: u32,
    expires: u32,
) -> (Result<u32, String>, u32) {
    let domain = shared.config.sip.domain.clone();
    let contact = shared.contact_for(agent);
    let dest = Peer::udp(shared.node_sip);
    let mut authorization = None;
    for attempt in 0..3 {
        let req = match gwsip::register_request(&RegisterParams {
            agent,
            domain: &domain,
            contact: &contact,
            call_id,
            cseq,
            expires,
            authorization: authorization.take(),
        }) {
            Ok(r) => r,
            Err(e) => return (Err(e.to_string()), cseq),
        };
        let resp = match shared.endpoint.send_request(req, dest) {
            Ok(mut ctx) => final_response(&mut ctx).await,
            Err(e) => Err(e.to_string()),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return (Err(e), cseq),
        };
        let code = resp.status_code.code();
        match code {
            200..=299 => return (Ok(gwsip::granted_expires(&resp, expires)), cseq),
            401 if attempt < 2 => {
                let Some(challenge) = gwsip::challenge_of(&resp) else {
                    return (Err("401 without a usable challenge".into()), cseq);
                };
                let Some(ha1) = shared
                    .switch
                    .log()
                    .read(|sm| sm.agent_by_id(agent).map(|a| a.ha1.clone()))
                else {
                    return (Err(format!("no agent {agent} in the switch")), cseq);
                };
                authorization = Some(gwsip::digest_authorization(
                    &challenge,
                    "REGISTER",
                    &gwsip::register_uri(&domain),
                    agent,
                    &ha1,
                    &message::new_tag(),
                    1,
                ));
                cseq += 1;
            }
            _ => return (Err(format!("{code} {}", resp.status_code)), cseq),
        }
    }
    (
        Err("the switch kept challenging the registration".into()),
        cseq,
    )
}
