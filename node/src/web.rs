//! The web gateway: browsers as phones.
//!
//! Inside each node, the gateway presents every connected web agent to the switch as an
//! ordinary SIP phone, so the switch's call actors need nothing new: while an agent's console
//! has its WebSocket open, the gateway keeps a SIP registration for that agent (digest from the
//! agent's HA1 in the replicated state; Contact = the gateway's own SIP socket), answers the
//! switch's INVITEs for it (180 at once, 200 with the gateway's RTP address once the browser
//! answered and DTLS is up), and bridges the browser's WebRTC audio to that RTP socket
//! ([`lingxi_media::webrtc::WebRtcBridge`], G.711 both sides, no transcoding). Hold is a
//! re-INVITE sendonly/sendrecv, blind transfer a REFER, key presses RFC 4733 events.
//!
//! A web customer ("call us") is the reverse: the gateway INVITEs its own node, To = the
//! queue, From = `web-<random>`, and bridges the browser to the call.
//!
//! Signalling with the page is a small JSON protocol over two WebSockets (see
//! `node/console/PROTOCOL.md` and `node/console/softphone.js`):
//! - `GET /api/v1/ws`: the agent's phone; authenticated with the session cookie, a Bearer
//!   header or `?token=`; the principal must be an agent (have an `agent_id`).
//! - `GET /api/v1/webcall/ws`: public; concurrent calls limited per client IP and in total.
//!
//! # Layout
//! - this file: [`Gateway`] (start-up, shared state), [`router`] and the WebSocket handlers.
//! - `protocol`: the JSON messages.
//! - `sip`: the gateway's UDP socket, transaction user (routing by agent and Call-ID),
//!   REGISTER and digest from HA1.
//! - `agent`: one task per web agent (its "line"): registration, pages, the current call.
//! - `caller`: one task per web customer call.

mod agent;
mod caller;
mod protocol;
mod sip;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lingxi_actors::Switch;
use lingxi_actors::sip::dialog::local_contact;
use lingxi_actors::sip::transaction::{Endpoint, EndpointConfig};
use lingxi_cluster::SipTransport;
use lingxi_config::Config;
use lingxi_media::webrtc::WebRtcSettings;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use protocol::{ServerMsg, parse_client};

/// `User-Agent` of the gateway's REGISTERs: the API can tell web agents from desk phones by
/// their registration's user agent starting with this.
pub const USER_AGENT: &str = "Lingxi-WebGateway";

/// What the gateway's tasks share.
pub(crate) struct Shared {
    /// The node's configuration.
    config: Arc<Config>,
    /// The switch (state reads: agents' HA1 and names, queues).
    switch: Arc<Switch>,
    /// The gateway's own SIP endpoint (transactions over its UDP socket).
    endpoint: Endpoint,
    /// The gateway's SIP address.
    local: SocketAddr,
    /// The node's SIP address the gateway registers with and calls.
    node_sip: SocketAddr,
    /// Routing of the switch's requests to lines and calls.
    routes: Arc<sip::Routes>,
    /// Agent id → its line.
    lines: dashmap::DashMap<String, mpsc::UnboundedSender<agent::LineMsg>>,
    /// Browser-facing WebRTC settings.
    rtc: WebRtcSettings,
    /// Live web calls per client IP.
    web_calls: Mutex<HashMap<IpAddr, usize>>,
    /// Numbers WebSocket connections.
    next_conn: AtomicU64,
    /// Stops every task of the gateway.
    shutdown: CancellationToken,
}

impl Shared {
    /// Our Contact URI for a user (agent id or web caller id).
    fn contact_for(&self, user: &str) -> String {
        local_contact(
            user,
            &self.local.ip().to_string(),
            self.local.port(),
            SipTransport::Udp,
        )
    }
}

/// The running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    /// Shared with its tasks.
    shared: Arc<Shared>,
}

impl Gateway {
    /// Binds the gateway's SIP socket (`web.sip_ip`:`web.sip_port`) and starts its endpoint.
    /// `node_sip` is the node's own SIP UDP address (a wildcard IP is replaced by the
    /// gateway's). Tasks stop when `shutdown` is cancelled.
    pub async fn start(
        config: Arc<Config>,
        switch: Arc<Switch>,
        node_sip: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Gateway> {
        let web = &config.web;
        let ip = web.sip_ip(&config.sip);
        let bind = SocketAddr::new(ip, web.sip_port);
        let sock = tokio::net::UdpSocket::bind(bind).await.with_context(|| {
            format!("web.sip_ip/web.sip_port: cannot bind the web gateway's SIP socket on {bind}")
        })?;
        let local = sock.local_addr()?;
        let sock = Arc::new(sock);
        let node_sip = if node_sip.ip().is_unspecified() {
            SocketAddr::new(ip, node_sip.port())
        } else {
            node_sip
        };
        let routes = Arc::new(sip::Routes::default());
        let mut ecfg = EndpointConfig::from_section(&config.sip);
        ecfg.host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        ecfg.user_agent = format!("{USER_AGENT}/{}", env!("CARGO_PKG_VERSION"));
        let endpoint = Endpoint::new(
            ecfg,
            Arc::new(sip::UdpSink {
                sock: sock.clone(),
                local,
            }),
            Arc::new(sip::GatewayTu {
                routes: routes.clone(),
            }),
        );
        tokio::spawn(sip::receive_loop(sock, endpoint.clone(), shutdown.clone()));
        let rtc = WebRtcSettings {
            bind_ip: web.rtc_ip(&config.media),
            advertised_ip: web.rtc_advertised_ip,
            rtp_ip: ip,
            connect_timeout: Duration::from_millis(web.connect_timeout_ms),
        };
        tracing::info!(sip = %local, node_sip = %node_sip, rtc_ip = %rtc.bind_ip, "web gateway started");
        Ok(Gateway {
            shared: Arc::new(Shared {
                config,
                switch,
                endpoint,
                local,
                node_sip,
                routes,
                lines: dashmap::DashMap::new(),
                rtc,
                web_calls: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                shutdown,
            }),
        })
    }

    /// The gateway's SIP address (the Contact of web agents' registrations).
    pub fn sip_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Live web (customer) calls on this node.
    pub fn web_calls(&self) -> usize {
        self.shared.web_calls.lock().values().sum()
    }
}

/// The router's state.
#[derive(Clone)]
struct WebState {
    /// The gateway.
    gateway: Gateway,
    /// Token checks for the agent socket.
    auth: Auth,
}

/// `?token=` on the agent socket (browsers cannot set headers on a WebSocket).
#[derive(Debug, Deserialize)]
struct WsQuery {
    /// A session token or API key.
    token: Option<String>,
}

/// The gateway's routes, with their state: `/api/v1/ws` and `/api/v1/webcall/ws`.
pub fn router(gateway: Gateway, auth: Auth) -> Router {
    Router::new()
        .route("/api/v1/ws", get(agent_ws))
        .route("/api/v1/webcall/ws", get(webcall_ws))
        .with_state(WebState { gateway, auth })
}

fn json_error(status: StatusCode, en: &str, zh: &str) -> Response {
    (status, axum::Json(json!({ "error": en, "error_zh": zh }))).into_response()
}

/// Refuses a cross-site page: a browser always sends `Origin` on a WebSocket, and a cookie
/// would otherwise let any site open an agent's phone (cross-site WebSocket hijacking).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/').eq_ignore_ascii_case(host))
}

async fn agent_ws(
    State(st): State<WebState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Credentials first, so a probe learns nothing before it authenticates.
    let principal = match q.token.as_deref() {
        Some(t) => st.auth.check_token(t),
        None => st.auth.check(&headers),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some(agent) = principal.agent_id.clone() else {
        return json_error(
            StatusCode::FORBIDDEN,
            "this user is not an agent: only agents have a web phone",
            "该用户不是座席，只有座席可以使用网页电话",
        );
    };
    if q.token.is_none() && !same_origin(&headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "cross-site WebSocket refused",
            "拒绝跨站 WebSocket 连接",
        );
    }
    let exists = st
        .gateway
        .shared
        .switch
        .log()
        .read(|sm| sm.agent_by_id(&agent).is_some());
    if !exists {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("no agent {agent} in the switch"),
            &format!("交换机中没有座席 {agent}"),
        );
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let shared = st.gateway.shared.clone();
    ws.on_upgrade(move |socket| agent_socket(shared, agent, socket))
}

/// One open agent page: relays between the socket and the agent's line.
async fn agent_socket(shared: Arc<Shared>, agent: String, mut socket: WebSocket) {
    let line = shared
        .lines
        .entry(agent.clone())
        .or_insert_with(|| agent::spawn_line(shared.clone(), agent.clone()))
        .clone();
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    if line
        .send(agent::LineMsg::Connected { conn, out: out_tx })
        .is_err()
    {
        return;
    }
    let stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            out = out_rx.recv() => match out {
                Some(msg) => {
                    if socket.send(Message::Text(msg.to_json().into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            got = socket.recv() => match got {
                Some(Ok(Message::Text(t))) => match parse_client(t.as_str()) {
                    Ok(msg) => {
                        let _ = line.send(agent::LineMsg::Client { conn, msg });
                    }
                    Err(e) => {
                        let m = ServerMsg::error(e.clone(), format!("消息无法识别：{e}"));
                        if socket.send(Message::Text(m.to_json().into())).await.is_err() {
                            break;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = line.send(agent::LineMsg::Disconnected { conn });
}

async fn webcall_ws(
    State(st): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let shared = st.gateway.shared.clone();
    let slot = caller::Slot::reserve(&shared, peer.ip());
    ws.on_upgrade(move |mut socket| async move {
        match slot {
            Ok(slot) => caller::run(shared, socket, slot).await,
            Err(msg) => {
                let _ = socket.send(Message::Text(msg.to_json().into())).await;
                let _ = socket.send(Message::Close(None)).await;
            }
        }
    })
}
