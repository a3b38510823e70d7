//! Blind transfer (RFC 3515 REFER, RFC 5589 §6): the agent's phone (or the web console,
//! through its gateway) sends REFER on its leg with `Refer-To: <sip:TARGET@domain>`, where
//! TARGET is a queue (id or extension) or an agent id. The switch keeps the caller: it commits
//! `CallTransferred`, answers 202, tells the agent's phone it worked (NOTIFY with a sipfrag
//! `SIP/2.0 200 OK`), hangs up the agent's leg, and puts the caller in the target queue or
//! rings the target agent. A transfer the state refuses (target agent not ready, unknown
//! queue) is answered with an error and the call carries on with the agent.

use super::{CallMsg, CallState, Phase, offer, queue_music, send_in_dialog_with};
use crate::sip::message::response_for;
use crate::sip::transaction::ServerTransaction;
use crate::switch::now_ms;
use lingxi_cluster::model::TransferTarget;
use lingxi_cluster::{ClusterError, Command};
use lingxi_media::Leg;
use ractor::ActorRef;
use rsip::{Header, Method};
use std::time::Duration;

/// The user part of the REFER's `Refer-To` URI (`Refer-To: <sip:8001@lingxi.local>`).
pub(super) fn refer_to_user(request: &rsip::Request) -> Option<String> {
    let value = request.headers.iter().find_map(|h| match h {
        Header::Other(name, value)
            if name.eq_ignore_ascii_case("refer-to") || name.eq_ignore_ascii_case("r") =>
        {
            Some(value.clone())
        }
        _ => None,
    })?;
    let value = value.trim();
    // Name-addr (`"x" <sip:...>`) or a bare addr-spec; header parameters after `>` or `;`.
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let user = rest.split('@').next()?.split(';').next()?.trim();
    (!user.is_empty() && rest.contains('@')).then(|| user.to_string())
}

/// A REFER on the agent's leg.
pub(super) async fn refer(
    myself: &ActorRef<CallMsg>,
    st: &mut CallState,
    request: rsip::Request,
    tx: ServerTransaction,
) {
    let refuse = |code: u16, why: &str| {
        tracing::info!(call_id = %st.call_id, code, why, "transfer refused");
        let _ = tx.respond(response_for(&request, code, Some(why), None));
    };
    let Some(agent) = st.agent.clone().filter(|_| st.phase == Phase::Talking) else {
        refuse(403, "the call is not connected to an agent");
        return;
    };
    let Some(user) = refer_to_user(&request) else {
        refuse(
            400,
            "Refer-To is missing or not a sip: URI with a user part",
        );
        return;
    };
    let target = st.sw.log.read(|sm| {
        if let Some(q) = sm.queue_for_user(&user) {
            Some(TransferTarget::Queue {
                queue: q.id.clone(),
            })
        } else {
            sm.agent_by_id(&user).map(|a| TransferTarget::Agent {
                agent: a.id.clone(),
            })
        }
    });
    let Some(target) = target else {
        refuse(404, &format!("no queue or agent {user}"));
        return;
    };
    let cmd = Command::CallTransferred {
        call_id: st.call_id.clone(),
        from_agent: agent.clone(),
        to: target.clone(),
        wrapup_secs: st.queue.wrapup_secs,
        at_ms: now_ms(),
    };
    match st.sw.propose_firmly(cmd).await {
        Ok(_) => {}
        Err(ClusterError::AgentUnavailable { agent, state, .. }) => {
            refuse(480, &format!("agent {agent} is {}", state.as_str()));
            return;
        }
        Err(e @ (ClusterError::UnknownQueue { .. } | ClusterError::Conflict { .. })) => {
            refuse(403, &e.to_string());
            return;
        }
        Err(e) => {
            tracing::warn!(call_id = %st.call_id, error = %e, "transfer not committed");
            refuse(500, "the transfer could not be recorded; try again");
            return;
        }
    }
    metrics::counter!("lingxi_transfers_total").increment(1);
    tracing::info!(call_id = %st.call_id, from = %agent, to = ?target, "blind transfer");
    let _ = tx.respond(response_for(&request, 202, None, None));
    // The agent's leg: the transfer worked (NOTIFY), then it is over (BYE).
    if let Some(mut b) = st.b.take() {
        notify_done(st, &mut b);
        st.sw.calls.remove(&b.call_id);
        // The record frees the agent for calls once this BYE is over.
        let (sw, call_id) = (st.sw.clone(), st.call_id.clone());
        let from = agent.clone();
        tokio::spawn(async move { super::release_agent_leg(&sw, from, call_id, b).await });
    }
    st.agent = None;
    st.held[1] = false;
    st.transfers += 1;
    st.media.unbridge();
    let _ = st.media.stop_recording();
    match target {
        TransferTarget::Queue { queue } => {
            if let Some(spec) = st.sw.log.read(|sm| sm.queues().get(&queue).cloned()) {
                st.queue = spec;
            }
            st.media.play(Leg::A, queue_music(&st.sw, &st.queue), true);
            st.phase = Phase::Queued;
            st.wait_epoch += 1;
            let epoch = st.wait_epoch;
            myself.send_after(
                Duration::from_secs(st.queue.max_wait_secs.max(1)),
                move || CallMsg::MaxWait { epoch },
            );
            st.sw.kick_queue(&st.queue.id);
        }
        TransferTarget::Agent { agent: to } => {
            st.media.play(Leg::A, queue_music(&st.sw, &st.queue), true);
            st.phase = Phase::Queued;
            let reg = st
                .sw
                .log
                .read(|sm| sm.agent_by_id(&to).and_then(|a| a.registration.clone()));
            match reg {
                Some(reg) => offer(myself, st, to, reg).await,
                None => {
                    // Unregistered since the commit: the offer fails and the call waits.
                    let _ = st
                        .sw
                        .propose_firmly(Command::CallOfferFailed {
                            call_id: st.call_id.clone(),
                            agent: to,
                            reason: "agent.unreachable".into(),
                            agent_not_ready: false,
                            at_ms: now_ms(),
                        })
                        .await;
                    st.sw.kick_queue(&st.queue.id);
                }
            }
        }
    }
}

/// NOTIFY (RFC 3515 §2.4.5) on the transferor's leg: the transfer succeeded and the implicit
/// subscription is over.
fn notify_done(st: &CallState, b: &mut lingxi_cluster::DialogState) {
    let body = b"SIP/2.0 200 OK\r\n".to_vec();
    let headers = vec![
        Header::Other("Event".into(), "refer".into()),
        Header::Other(
            "Subscription-State".into(),
            "terminated;reason=noresource".into(),
        ),
    ];
    send_in_dialog_with(
        &st.sw,
        b,
        Method::Notify,
        Some(("message/sipfrag;version=2.0", body)),
        headers,
    );
}

#[cfg(test)]
mod tests {
    use super::refer_to_user;

    fn refer(value: &str) -> rsip::Request {
        let raw = format!(
            "REFER sip:1001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:1001@lingxi.local>;tag=a\r\nTo: <sip:c@lingxi.local>;tag=b\r\n\
             Call-ID: x\r\nCSeq: 2 REFER\r\nMax-Forwards: 70\r\nRefer-To: {value}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(raw.as_bytes()).expect("test REFER parses")
    }

    #[test]
    fn refer_to_forms() {
        assert_eq!(
            refer_to_user(&refer("<sip:8001@lingxi.local>")).as_deref(),
            Some("8001")
        );
        assert_eq!(
            refer_to_user(&refer("\"Cards\" <sip:cards@lingxi.local;transport=udp>")).as_deref(),
            Some("cards")
        );
        assert_eq!(
            refer_to_user(&refer("sip:1002@10.0.0.1")).as_deref(),
            Some("1002")
        );
        assert_eq!(refer_to_user(&refer("<tel:+8610123>")), None);
        assert_eq!(refer_to_user(&refer("<sip:lingxi.local>")), None);
    }
}
