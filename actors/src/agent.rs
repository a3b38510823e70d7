//! `AgentActor`: one per agent. Serves the agent's REGISTERs (digest authentication, binding
//! expiry), state changes asked by people, and the wrap-up timer after each call.

use crate::error::ActorError;
use crate::sip::auth::{self, Challenge, NonceCheck};
use crate::sip::message::{self, response_for};
use crate::sip::transaction::{Peer, ServerTransaction};
use crate::switch::{Switch, now_ms};
use lingxi_cluster::model::{AgentState, Registration};
use lingxi_cluster::{ClusterError, Command};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rsip::Header;
use rsip::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// The agent actor (stateless handler; its state is [`AgentActorState`]).
pub struct AgentActor;

/// Messages to an agent actor.
pub enum AgentMsg {
    /// A REGISTER for this agent's user name.
    Register {
        /// The request.
        request: rsip::Request,
        /// Where it came from (INVITEs will go there).
        source: Peer,
        /// Its transaction, to answer.
        tx: ServerTransaction,
    },
    /// A person (API, console) changes the agent's state.
    SetState(
        AgentState,
        Option<String>,
        RpcReplyPort<Result<(), ClusterError>>,
    ),
    /// A call ended; the agent wraps up for `secs`.
    WrapUp {
        /// Seconds of wrap-up.
        secs: u64,
        /// The call that ended.
        call_id: String,
    },
    /// Wrap-up timer fired (ignored unless `epoch` is current).
    WrapUpEnd {
        /// Which wrap-up this timer belongs to.
        epoch: u64,
        /// The call the wrap-up followed.
        call_id: String,
    },
    /// Registration timer fired (ignored unless `epoch` is current).
    Expire {
        /// Which binding this timer belongs to.
        epoch: u64,
        /// The binding's `expires_at_ms` when a REGISTER here made it: its lifetime was then
        /// timed on this node's monotonic clock, so it has lapsed whatever the wall clock
        /// says now. `None`: armed at start from the log, by the wall clock.
        lapsed: Option<u64>,
    },
}

/// What an agent actor keeps.
pub struct AgentActorState {
    /// The switch.
    sw: Arc<Switch>,
    /// Agent id.
    id: String,
    /// Bumped at each new binding, so stale expiry timers do nothing.
    reg_epoch: u64,
    /// Bumped at each wrap-up, so stale timers do nothing.
    wrap_epoch: u64,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentActorState;
    type Arguments = (Arc<Switch>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (sw, id): (Arc<Switch>, String),
    ) -> Result<AgentActorState, ActorProcessingErr> {
        let mut st = AgentActorState {
            sw,
            id,
            reg_epoch: 0,
            wrap_epoch: 0,
        };
        // Restarted (or started after a restart of the node): re-arm timers from the log.
        let now = now_ms();
        let (expiry, wrap) = st.sw.log.read(|sm| {
            sm.agent_by_id(&st.id)
                .map(|a| {
                    (
                        a.registration.as_ref().map(|r| r.expires_at_ms),
                        a.call_id.clone().filter(|_| a.state == AgentState::WrapUp),
                    )
                })
                .unwrap_or((None, None))
        });
        if let Some(at) = expiry {
            myself.send_after(Duration::from_millis(at.saturating_sub(now)), move || {
                AgentMsg::Expire {
                    epoch: 0,
                    lapsed: None,
                }
            });
        }
        if let Some(call_id) = wrap {
            st.wrap_epoch += 1;
            let epoch = st.wrap_epoch;
            myself.send_after(Duration::from_secs(1), move || AgentMsg::WrapUpEnd {
                epoch,
                call_id,
            });
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Register {
                request,
                source,
                tx,
            } => register(&myself, st, request, source, tx).await,
            AgentMsg::SetState(state, reason, reply) => {
                let res = st
                    .sw
                    .log
                    .propose(Command::SetAgentState {
                        id: st.id.clone(),
                        state,
                        reason,
                        only_if: None,
                        at_ms: now_ms(),
                    })
                    .await
                    .map(|_| ());
                if !reply.is_closed() {
                    let _ = reply.send(res);
                }
            }
            AgentMsg::WrapUp { secs, call_id } => {
                st.wrap_epoch += 1;
                let epoch = st.wrap_epoch;
                myself.send_after(Duration::from_secs(secs), move || AgentMsg::WrapUpEnd {
                    epoch,
                    call_id,
                });
            }
            AgentMsg::WrapUpEnd { epoch, call_id } if epoch == st.wrap_epoch => {
                let cmd = Command::WrapUpEnded {
                    id: st.id.clone(),
                    call_id,
                    at_ms: now_ms(),
                };
                if let Err(e) = st.sw.log.propose(cmd).await {
                    tracing::warn!(agent = %st.id, error = %e, "ending wrap-up failed");
                }
            }
            AgentMsg::Expire { epoch, lapsed } if epoch == st.reg_epoch => {
                // Any node may fire this timer; the command only unbinds a lapsed binding.
                // A binding made here is stamped with its own expiry, not this node's wall
                // clock: a clock stepped ahead must not unbind a binding renewed through
                // another node, nor one stepped back keep a lapsed one.
                let current = st.sw.log.read(|sm| {
                    sm.agent_by_id(&st.id)
                        .and_then(|a| a.registration.as_ref().map(|r| r.expires_at_ms))
                });
                let at_ms = match lapsed {
                    Some(expires_at_ms) if current == Some(expires_at_ms) => Some(expires_at_ms),
                    // Renewed (through another node: it times the new binding) or gone.
                    Some(_) => None,
                    None => Some(now_ms()),
                };
                let Some(at_ms) = at_ms else {
                    return Ok(());
                };
                let cmd = Command::ExpireRegistration {
                    id: st.id.clone(),
                    at_ms,
                };
                match st.sw.log.propose(cmd).await {
                    Ok(ev) if !ev.is_empty() => {
                        tracing::info!(agent = %st.id, "registration expired")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(agent = %st.id, error = %e, "expiring registration failed")
                    }
                }
            }
            AgentMsg::WrapUpEnd { .. } | AgentMsg::Expire { .. } => {}
        }
        Ok(())
    }
}

/// RFC 3261 §10.3 registrar for one agent, with digest authentication (RFC 2617/8760 MD5).
async fn register(
    myself: &ActorRef<AgentMsg>,
    st: &mut AgentActorState,
    request: rsip::Request,
    source: Peer,
    tx: ServerTransaction,
) {
    let sip = &st.sw.config.sip;
    let now = now_ms();
    let Some(ha1) = st
        .sw
        .log
        .read(|sm| sm.agent_by_id(&st.id).map(|a| a.ha1.clone()))
    else {
        let _ = tx.respond(response_for(
            &request,
            404,
            Some(&format!("No agent {}", st.id)),
            None,
        ));
        return;
    };
    let authorization = request.headers.iter().find_map(|h| match h {
        Header::Authorization(a) => Some(a.value().to_string()),
        _ => None,
    });
    let challenge = |stale: bool| {
        let c = Challenge {
            realm: sip.realm.clone(),
            nonce: st.sw.nonces.issue(now / 1000),
            opaque: None,
            stale,
        };
        let mut resp = response_for(&request, 401, None, Some(&message::new_tag()));
        resp.headers.push(Header::WwwAuthenticate(
            rsip::headers::WwwAuthenticate::new(c.to_header_value()),
        ));
        resp
    };
    let Some(value) = authorization else {
        let _ = tx.respond(challenge(false));
        return;
    };
    let creds = match auth::parse_authorization(&value) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.respond(response_for(
                &request,
                400,
                Some(&format!("Bad Authorization header: {e}")),
                None,
            ));
            return;
        }
    };
    if creds.username != st.id || creds.realm != sip.realm {
        metrics::counter!("lingxi_register_failures_total", "reason" => "identity").increment(1);
        let _ = tx.respond(response_for(
            &request,
            403,
            Some("Credentials do not match the registered user"),
            None,
        ));
        return;
    }
    match st.sw.nonces.check(&creds.nonce, now / 1000, 300) {
        NonceCheck::Valid => {}
        NonceCheck::Stale => {
            let _ = tx.respond(challenge(true));
            return;
        }
        NonceCheck::Invalid => {
            let _ = tx.respond(challenge(false));
            return;
        }
    }
    if !auth::verify(&creds, "REGISTER", &ha1) {
        metrics::counter!("lingxi_register_failures_total", "reason" => "password").increment(1);
        tracing::info!(agent = %st.id, source = %source, "REGISTER with a wrong password");
        let _ = tx.respond(response_for(&request, 403, Some("Wrong password"), None));
        return;
    }
    // Binding: Contact (or "*"), expires from the Contact parameter, else Expires, else default.
    let contact_value = request.headers.iter().find_map(|h| match h {
        Header::Contact(c) => Some(c.value().to_string()),
        _ => None,
    });
    let contact_expires = contact_value.as_deref().and_then(contact_expires_param);
    let requested = contact_expires
        .or(message::expires(&request))
        .unwrap_or(sip.register_default_expires);
    let wildcard = contact_value.as_deref().is_some_and(|c| c.trim() == "*");
    if contact_value.is_none() {
        // A query: answer with the current binding.
        let current = st
            .sw
            .log
            .read(|sm| sm.agent_by_id(&st.id).and_then(|a| a.registration.clone()));
        let mut resp = response_for(&request, 200, None, Some(&message::new_tag()));
        if let Some(r) = current {
            let left = r.expires_at_ms.saturating_sub(now) / 1000;
            resp.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{}>;expires={left}",
                    r.contact
                ))));
        }
        let _ = tx.respond(resp);
        return;
    }
    if requested == 0 || wildcard {
        let res = st
            .sw
            .log
            .propose(Command::Register {
                id: st.id.clone(),
                registration: None,
                at_ms: now,
            })
            .await;
        st.reg_epoch += 1;
        let _ = tx.respond(match res {
            Ok(_) => response_for(&request, 200, None, Some(&message::new_tag())),
            Err(e) => response_for(
                &request,
                500,
                Some(&format!("Could not unregister: {e}")),
                None,
            ),
        });
        return;
    }
    if requested < sip.register_min_expires {
        let mut resp = response_for(&request, 423, None, Some(&message::new_tag()));
        resp.headers
            .push(Header::MinExpires(rsip::headers::MinExpires::new(
                sip.register_min_expires.to_string(),
            )));
        let _ = tx.respond(resp);
        return;
    }
    let granted = requested.min(sip.register_max_expires);
    let Some(contact_uri) = message::contact_uri(&request) else {
        let _ = tx.respond(response_for(
            &request,
            400,
            Some("Unreadable Contact header"),
            None,
        ));
        return;
    };
    let user_agent = request.headers.iter().find_map(|h| match h {
        Header::UserAgent(u) => Some(u.value().to_string()),
        _ => None,
    });
    let expires_at_ms = now + u64::from(granted) * 1000;
    let registration = Registration {
        contact: contact_uri.to_string(),
        peer: source.addr,
        transport: source.transport,
        expires_at_ms,
        node: st.sw.node_id.clone(),
        user_agent,
    };
    let res = st
        .sw
        .log
        .propose(Command::Register {
            id: st.id.clone(),
            registration: Some(registration),
            at_ms: now,
        })
        .await;
    match res {
        Ok(_) => {
            st.reg_epoch += 1;
            let epoch = st.reg_epoch;
            myself.send_after(
                Duration::from_secs(u64::from(granted)) + Duration::from_millis(500),
                move || AgentMsg::Expire {
                    epoch,
                    lapsed: Some(expires_at_ms),
                },
            );
            let mut resp = response_for(&request, 200, None, Some(&message::new_tag()));
            resp.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{contact_uri}>;expires={granted}"
                ))));
            resp.headers
                .push(Header::Expires(rsip::headers::Expires::new(
                    granted.to_string(),
                )));
            let _ = tx.respond(resp);
            tracing::info!(agent = %st.id, source = %source, expires = granted, "registered");
        }
        Err(e) => {
            let err = ActorError::from(e);
            let _ = tx.respond(response_for(
                &request,
                500,
                Some(&format!("Registration not stored: {err}")),
                None,
            ));
        }
    }
}

/// The `expires` parameter of a Contact header value, if any.
fn contact_expires_param(contact: &str) -> Option<u32> {
    // Parameters after the URI's closing '>' (or after the URI when not bracketed).
    let params = match contact.rfind('>') {
        Some(i) => &contact[i + 1..],
        None => contact.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("expires")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}
