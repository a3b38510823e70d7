//! The gateway's SIP side: its own UDP socket and transaction endpoint (the project's
//! `lingxi_actors::sip` layers), the transaction user that routes requests from the switch to
//! agent lines and web calls, and REGISTER with a digest computed from the agent's HA1.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use lingxi_actors::sip::SipError;
use lingxi_actors::sip::auth::Challenge;
use lingxi_actors::sip::message::{self, response_for};
use lingxi_actors::sip::transaction::{
    Incoming, Peer, ServerTransaction, SipTransportSink, TransactionUser,
};
use lingxi_cluster::SipTransport;
use md5::{Digest as _, Md5};
use rsip::Header;
use rsip::headers::UntypedHeader as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the transaction layer hands a line or a web call.
#[derive(Debug)]
pub(crate) enum SipEvent {
    /// A new INVITE for an agent (not yet in any dialog).
    Invite {
        /// The INVITE.
        request: rsip::Request,
        /// Where it came from.
        source: Peer,
        /// Its server transaction.
        tx: ServerTransaction,
    },
    /// An in-dialog request (BYE, re-INVITE, INFO, NOTIFY, OPTIONS…).
    Request {
        /// The request.
        request: rsip::Request,
        /// Where it came from (a failover re-INVITE comes from another node).
        source: Peer,
        /// Its server transaction.
        tx: ServerTransaction,
    },
    /// The ACK of our 2xx.
    Ack,
    /// The switch cancelled its INVITE (already answered 200 by the layer).
    Cancel {
        /// The INVITE's transaction, to answer 487.
        invite: ServerTransaction,
    },
    /// No ACK came for our 2xx.
    AckTimeout,
}

/// Where SIP events for a Call-ID or an agent go.
pub(crate) type EventSink = mpsc::UnboundedSender<SipEvent>;

/// Routing tables shared by the TU and the sessions.
#[derive(Default)]
pub(crate) struct Routes {
    /// Agent id → its line (new INVITEs are routed by Request-URI user).
    pub(crate) lines: DashMap<String, EventSink>,
    /// Call-ID → the session that owns that dialog.
    pub(crate) dialogs: DashMap<String, EventSink>,
}

/// The transaction user of the gateway's endpoint.
pub(crate) struct GatewayTu {
    /// Shared routing tables.
    pub(crate) routes: Arc<Routes>,
}

impl TransactionUser for GatewayTu {
    fn on_incoming(&self, incoming: Incoming) {
        match incoming {
            Incoming::Request {
                request,
                source,
                tx,
            } => self.on_request(request, source, tx),
            Incoming::Ack { request, .. } => {
                if let Some(sink) = call_id_sink(&self.routes, &request) {
                    let _ = sink.send(SipEvent::Ack);
                }
            }
            Incoming::Cancel {
                request, invite, ..
            } => match call_id_sink(&self.routes, &request) {
                Some(sink) => {
                    if let Err(mpsc::error::SendError(SipEvent::Cancel { invite })) =
                        sink.send(SipEvent::Cancel { invite })
                    {
                        let _ = invite.respond(response_for(invite.request(), 487, None, None));
                    }
                }
                None => {
                    let _ = invite.respond(response_for(invite.request(), 487, None, None));
                }
            },
            Incoming::AckTimeout { call_id, .. } => {
                if let Some(sink) = self.routes.dialogs.get(&call_id).map(|s| s.clone()) {
                    let _ = sink.send(SipEvent::AckTimeout);
                }
            }
        }
    }
}

fn call_id_sink(routes: &Routes, request: &rsip::Request) -> Option<EventSink> {
    let id = message::call_id(request).ok()?;
    routes.dialogs.get(&id).map(|s| s.clone())
}

impl GatewayTu {
    fn on_request(&self, request: rsip::Request, source: Peer, tx: ServerTransaction) {
        if let Some(sink) = call_id_sink(&self.routes, &request) {
            if let Err(mpsc::error::SendError(ev)) = sink.send(SipEvent::Request {
                request,
                source,
                tx,
            }) && let SipEvent::Request { tx, .. } = ev
            {
                let _ = tx.respond(response_for(tx.request(), 481, None, None));
            }
            return;
        }
        let in_dialog = message::to_tag(&request).is_some();
        match request.method {
            rsip::Method::Invite if !in_dialog => {
                let user = request
                    .uri
                    .auth
                    .as_ref()
                    .map(|a| a.user.clone())
                    .unwrap_or_default();
                let sink = self.routes.lines.get(&user).map(|s| s.clone());
                let unavailable = |tx: ServerTransaction| {
                    let _ = tx.respond(response_for(
                        tx.request(),
                        480,
                        Some("Web agent not connected"),
                        Some(&message::new_tag()),
                    ));
                };
                match sink {
                    Some(sink) => {
                        if let Err(mpsc::error::SendError(SipEvent::Invite { tx, .. })) =
                            sink.send(SipEvent::Invite {
                                request,
                                source,
                                tx,
                            })
                        {
                            unavailable(tx);
                        }
                    }
                    None => unavailable(tx),
                }
            }
            rsip::Method::Options => {
                let mut resp = response_for(&request, 200, None, Some(&message::new_tag()));
                resp.headers.push(Header::Allow(rsip::headers::Allow::new(
                    "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY",
                )));
                let _ = tx.respond(resp);
            }
            _ => {
                let _ = tx.respond(response_for(&request, 481, None, None));
            }
        }
    }
}

/// The gateway's UDP socket as the transaction layer sees it.
pub(crate) struct UdpSink {
    /// The socket (shared with the receive loop).
    pub(crate) sock: Arc<UdpSocket>,
    /// Its bound address.
    pub(crate) local: SocketAddr,
}

impl SipTransportSink for UdpSink {
    fn send(&self, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        if peer.transport != SipTransport::Udp {
            return Err(SipError::Transport {
                peer: peer.to_string(),
                detail: "the web gateway speaks SIP over UDP only".into(),
            });
        }
        self.sock
            .try_send_to(&data, peer.addr)
            .map(|_| ())
            .map_err(|e| SipError::Transport {
                peer: peer.to_string(),
                detail: e.to_string(),
            })
    }

    fn local_addr(&self, transport: SipTransport) -> Option<SocketAddr> {
        (transport == SipTransport::Udp).then_some(self.local)
    }
}

/// Feeds received datagrams to the endpoint until `stop`.
pub(crate) async fn receive_loop(
    sock: Arc<UdpSocket>,
    endpoint: lingxi_actors::sip::transaction::Endpoint,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, from)) => endpoint.on_message(&buf[..n], Peer::udp(from)),
            Err(e) => {
                tracing::debug!(error = %e, "web gateway SIP socket receive error");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
}

/// Everything a REGISTER for one agent needs.
pub(crate) struct RegisterParams<'a> {
    /// Agent id (the SIP user).
    pub(crate) agent: &'a str,
    /// SIP domain of the switch.
    pub(crate) domain: &'a str,
    /// Our Contact URI for this agent.
    pub(crate) contact: &'a str,
    /// The registration's Call-ID (constant for the line).
    pub(crate) call_id: &'a str,
    /// CSeq number.
    pub(crate) cseq: u32,
    /// Expires asked for; 0 unregisters.
    pub(crate) expires: u32,
    /// `Authorization` value, after a challenge.
    pub(crate) authorization: Option<String>,
}

/// The Request-URI of a REGISTER (the registrar's domain).
pub(crate) fn register_uri(domain: &str) -> String {
    format!("sip:{domain}")
}

/// Builds a REGISTER (no Via: the transaction layer adds it).
pub(crate) fn register_request(p: &RegisterParams<'_>) -> Result<rsip::Request, SipError> {
    let aor = format!("<sip:{}@{}>", p.agent, p.domain);
    let uri_text = register_uri(p.domain);
    let uri = rsip::Uri::try_from(uri_text.as_str()).map_err(|e| SipError::Parse {
        what: "REGISTER Request-URI".into(),
        detail: format!("{uri_text}: {e}"),
    })?;
    let mut headers: Vec<Header> = vec![
        rsip::headers::From::new(format!("{aor};tag={}", message::new_tag())).into(),
        rsip::headers::To::new(aor).into(),
        rsip::headers::CallId::new(p.call_id).into(),
        rsip::headers::CSeq::new(format!("{} REGISTER", p.cseq)).into(),
        rsip::headers::Contact::new(format!("<{}>;expires={}", p.contact, p.expires)).into(),
        rsip::headers::Expires::new(p.expires.to_string()).into(),
    ];
    if let Some(a) = &p.authorization {
        headers.push(rsip::headers::Authorization::new(a.clone()).into());
    }
    headers.push(rsip::headers::ContentLength::new("0").into());
    Ok(rsip::Request {
        method: rsip::Method::Register,
        uri,
        version: rsip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    })
}

/// The `WWW-Authenticate` challenge of a 401.
pub(crate) fn challenge_of(resp: &rsip::Response) -> Option<Challenge> {
    resp.headers.iter().find_map(|h| match h {
        Header::WwwAuthenticate(w) => Challenge::parse(w.value()).ok(),
        _ => None,
    })
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The `Authorization` value answering `challenge` for `method`/`uri` from the agent's stored
/// `ha1` (md5(user:realm:password)): qop `auth`, algorithm MD5. The password is never needed.
pub(crate) fn digest_authorization(
    challenge: &Challenge,
    method: &str,
    uri: &str,
    username: &str,
    ha1: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let nc = format!("{nc:08x}");
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let response = md5_hex(&format!(
        "{}:{}:{nc}:{cnonce}:auth:{ha2}",
        ha1.to_ascii_lowercase(),
        challenge.nonce
    ));
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut value = format!(
        "Digest username=\"{}\",realm=\"{}\",nonce=\"{}\",uri=\"{}\",response=\"{response}\",\
         algorithm=MD5,cnonce=\"{}\",qop=auth,nc={nc}",
        q(username),
        q(&challenge.realm),
        q(&challenge.nonce),
        q(uri),
        q(cnonce),
    );
    if let Some(o) = &challenge.opaque {
        value.push_str(&format!(",opaque=\"{}\"", q(o)));
    }
    value
}

/// The `expires` granted by a 2xx to a REGISTER: the Contact's parameter, else Expires.
pub(crate) fn granted_expires(resp: &rsip::Response, asked: u32) -> u32 {
    let from_contact = resp.headers.iter().find_map(|h| match h {
        Header::Contact(c) => c
            .value()
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.trim().parse().ok()),
        _ => None,
    });
    from_contact
        .or_else(|| {
            resp.headers.iter().find_map(|h| match h {
                Header::Expires(e) => e.value().trim().parse().ok(),
                _ => None,
            })
        })
        .unwrap_or(asked)
}

/// The user part and display of a From/To header value, e.g. `"Alice" <sip:alice@x>;tag=1`
/// → `alice`.
pub(crate) fn user_of(value: &str) -> String {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if b > a => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let uri = uri.trim();
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .unwrap_or(uri);
    match rest.split_once('@') {
        Some((user, _)) => user.to_owned(),
        None => rest.split([';', ':']).next().unwrap_or(rest).to_owned(),
    }
}

/// The value of an extension header (e.g. `X-Lingxi-Call`), when present.
pub(crate) fn other_header(req: &rsip::Request, name: &str) -> Option<String> {
    req.headers.iter().find_map(|h| match h {
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.trim().to_owned()),
        _ => None,
    })
}

/// The From header's value.
pub(crate) fn from_value(req: &rsip::Request) -> String {
    req.headers
        .iter()
        .find_map(|h| match h {
            Header::From(f) => Some(f.value().to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The body as text, when it is UTF-8 and not empty.
pub(crate) fn body_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    std::str::from_utf8(body).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingxi_actors::sip::auth::{DigestCredentials, ha1, verify};

    #[test]
    fn digest_from_ha1_verifies_like_a_password_would() {
        let challenge = Challenge {
            realm: "lingxi".into(),
            nonce: "abc123".into(),
            opaque: Some("op".into()),
            stale: false,
        };
        let h = ha1("1001", "lingxi", "pass1001");
        let value = digest_authorization(
            &challenge,
            "REGISTER",
            "sip:lingxi.local",
            "1001",
            &h,
            "cn",
            1,
        );
        let creds: DigestCredentials =
            lingxi_actors::sip::auth::parse_authorization(&value).expect("parses");
        assert!(verify(&creds, "REGISTER", &h), "{value}");
        assert!(!verify(&creds, "REGISTER", &ha1("1001", "lingxi", "wrong")));
    }

    #[test]
    fn register_request_and_helpers() {
        let r = register_request(&RegisterParams {
            agent: "1001",
            domain: "lingxi.local",
            contact: "sip:1001@127.0.0.1:40000",
            call_id: "reg-1",
            cseq: 7,
            expires: 300,
            authorization: None,
        })
        .unwrap();
        assert_eq!(r.method, rsip::Method::Register);
        assert_eq!(message::cseq(&r).unwrap().0, 7);
        assert_eq!(user_of("\"Alice\" <sip:alice@x.y>;tag=9"), "alice");
        assert_eq!(user_of("sip:8000@host;user=phone"), "8000");
        assert_eq!(user_of("<sip:host.example>"), "host.example");
    }
}
