//! `CallActor`: one per call, a back-to-back user agent. Leg A is the caller (we answer it and
//! play music while it waits), leg B the agent (we INVITE the phone the queue chose). Media is
//! anchored: both legs send RTP to this node, which relays, transcodes and records it.
//!
//! Every change a survivor would need is proposed to the log before the network sees it
//! (the caller's 200 OK goes out after `CallArrived` commits).

use crate::sip::dialog;
use crate::sip::message::{self, response_for, with_body};
use crate::sip::sdp::{self, AudioOffer, Direction};
use crate::sip::transaction::{ClientEvent, ClientTransaction, Incoming, Peer, ServerTransaction};
use crate::switch::{ALLOW, Switch, from_user, now_ms};
use lingxi_cluster::model::{CallLeg, CallPhase, CallRecord, Overflow, QueueSpec, Registration};
use lingxi_cluster::{Command, DialogState, end_hangs_up};
use lingxi_media::{CallMedia, Codec, Leg, MediaEvent, PcmClip, Prompt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rsip::prelude::*;
use rsip::{Header, Method};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

mod transfer;

/// The call actor (stateless handler; its state is [`CallState`]).
pub struct CallActor;

/// What a call actor is started with.
pub enum CallArgs {
    /// A new call: the caller's INVITE and the queue it dialled.
    New {
        /// The switch.
        sw: Arc<Switch>,
        /// The caller's INVITE.
        invite: rsip::Request,
        /// Where it came from.
        source: Peer,
        /// Its server transaction, to answer.
        tx: ServerTransaction,
        /// The queue the Request-URI names.
        queue: QueueSpec,
    },
    /// A call taken over from a dead node: rebuilt from its replicated record.
    Resume {
        /// The switch.
        sw: Arc<Switch>,
        /// The call as committed.
        record: Box<CallRecord>,
        /// Its queue.
        queue: QueueSpec,
    },
}

/// Messages to a call actor.
pub enum CallMsg {
    /// A request for one of the call's dialogs (or the caller's CANCEL, an ACK timeout).
    Sip(Incoming),
    /// The queue offers the call to this agent (already committed): ring the phone.
    Offer {
        /// Agent id.
        agent: String,
        /// Where its phone is.
        registration: Registration,
    },
    /// A response (or timeout) for the INVITE of offer number `attempt`.
    BLeg {
        /// Which offer.
        attempt: u32,
        /// What happened.
        event: ClientEvent,
    },
    /// The phone of offer `attempt` rang too long.
    RingTimeout {
        /// Which offer.
        attempt: u32,
    },
    /// The caller waited `max_wait` in queue number `epoch`.
    MaxWait {
        /// Which queue stay the timer belongs to.
        epoch: u32,
    },
    /// Something from the media path.
    Media(MediaEvent),
    /// End the call now (shutdown, supervisor request): BYE to both legs.
    Hangup {
        /// Outcome code for the CDR.
        outcome: String,
    },
    /// Test hook: panic, to prove a failing call disturbs no other.
    Fault,
    /// This node lost the majority: stop at once, silently (no BYE, no CDR); the call
    /// resumes on a live node.
    Fence,
}

/// Where the call is, as this actor drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting in queue, hearing music.
    Queued,
    /// An agent's phone rings.
    Ringing,
    /// Bridged with an agent.
    Talking,
    /// Playing a last message before hanging up.
    Closing,
    /// Over; the actor is stopping.
    Ended,
}

/// One INVITE sent to an agent.
struct BOffer {
    /// Agent offered.
    agent: String,
    /// The INVITE as sent (to build ACK and the dialog).
    invite: rsip::Request,
    /// Where it went.
    dest: Peer,
    /// Tells the transaction driver to CANCEL.
    cancel: Option<oneshot::Sender<()>>,
}

/// Everything a call actor keeps.
pub struct CallState {
    /// The switch.
    sw: Arc<Switch>,
    /// The call's id (the caller leg's Call-ID).
    call_id: String,
    /// The call's media; dropping it frees ports.
    media: CallMedia,
    /// Codec negotiated with the caller.
    codec_a: Codec,
    /// The caller's dialog.
    a: DialogState,
    /// The caller INVITE's transaction, until ACKed.
    a_tx: Option<ServerTransaction>,
    /// Queue the call is in.
    queue: QueueSpec,
    /// Where the call is.
    phase: Phase,
    /// Number of the current offer (each INVITE to an agent gets the next number).
    attempt: u32,
    /// The offer ringing now.
    ringing: Option<BOffer>,
    /// Offers we gave up on that may still answer (then we ACK and BYE them).
    abandoned: Vec<(u32, BOffer)>,
    /// The agent's dialog once answered.
    b: Option<DialogState>,
    /// The agent who answered.
    agent: Option<String>,
    /// Bumped each time the call enters a queue, so old max-wait timers do nothing.
    wait_epoch: u32,
    /// Legs that put us on hold.
    held: [bool; 2],
    /// Outcome to report when the closing message ends.
    closing_outcome: Option<String>,
    /// Session id of our SDP on each leg.
    sdp_session: [u64; 2],
    /// Whether this actor took the call over from a dead node.
    resumed: bool,
    /// Blind transfers so far (names the next agent's recording part).
    transfers: u32,
}

impl Actor for CallActor {
    type Msg = CallMsg;
    type State = CallState;
    type Arguments = CallArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CallMsg>,
        args: CallArgs,
    ) -> Result<CallState, ActorProcessingErr> {
        let st = match args {
            CallArgs::New {
                sw,
                invite,
                source,
                tx,
                queue,
            } => setup(&myself, sw, invite, source, tx, queue).await,
            CallArgs::Resume { sw, record, queue } => resume(&myself, sw, *record, queue).await,
        };
        st.map_err(Into::into)
    }

    async fn post_start(
        &self,
        myself: ActorRef<CallMsg>,
        st: &mut CallState,
    ) -> Result<(), ActorProcessingErr> {
        let unqueued = st.resumed
            && st.sw.log.read(|sm| {
                sm.call(&st.call_id)
                    .is_some_and(|c| c.phase == CallPhase::Routing)
            });
        if !st.resumed || unqueued {
            enter_queue(&myself, st, None).await;
        } else if st.phase == Phase::Queued {
            // Keep waiting where it was; the max-wait clock runs from its entry to the queue.
            st.wait_epoch += 1;
            let epoch = st.wait_epoch;
            let waited = st
                .sw
                .log
                .read(|sm| sm.call(&st.call_id).and_then(|c| c.queued_ms))
                .map(|q| now_ms().saturating_sub(q))
                .unwrap_or(0);
            let left = (st.queue.max_wait_secs.max(1) * 1000)
                .saturating_sub(waited)
                .max(1000);
            myself.send_after(Duration::from_millis(left), move || CallMsg::MaxWait {
                epoch,
            });
            // The queue actor here now offers it (it is ours).
            st.sw.kick_queue(&st.queue.id);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CallMsg>,
        msg: CallMsg,
        st: &mut CallState,
    ) -> Result<(), ActorProcessingErr> {
        if st.phase == Phase::Ended {
            if let CallMsg::Sip(Incoming::Request { tx, .. }) = msg {
                let _ = tx.respond(response_for(tx.request(), 481, None, None));
            }
            return Ok(());
        }
        match msg {
            CallMsg::Sip(incoming) => on_sip(&myself, st, incoming).await,
            CallMsg::Offer {
                agent,
                registration,
            } => offer(&myself, st, agent, registration).await,
            CallMsg::BLeg { attempt, event } => on_b_event(&myself, st, attempt, event).await,
            CallMsg::RingTimeout { attempt } => {
                if st.phase == Phase::Ringing && attempt == st.attempt {
                    give_up_offer(st, "agent.no_answer").await;
                    after_failed_offer(&myself, st).await;
                }
            }
            CallMsg::MaxWait { epoch } => {
                if epoch == st.wait_epoch {
                    match st.phase {
                        Phase::Queued => overflow(&myself, st, "queue.timeout").await,
                        // Let the ringing phone have its chance; look again shortly.
                        Phase::Ringing => {
                            myself.send_after(Duration::from_secs(1), move || CallMsg::MaxWait {
                                epoch,
                            });
                        }
                        _ => {}
                    }
                }
            }
            CallMsg::Media(MediaEvent::PlaybackEnded { leg: Leg::A })
                if st.phase == Phase::Closing =>
            {
                let outcome = st
                    .closing_outcome
                    .take()
                    .unwrap_or_else(|| "queue.timeout".into());
                hang_up(&myself, st, &outcome, "switch").await;
            }
            CallMsg::Media(MediaEvent::Dtmf { leg, digit }) => {
                tracing::debug!(call_id = %st.call_id, ?leg, %digit, "DTMF");
            }
            CallMsg::Media(_) => {}
            CallMsg::Hangup { outcome } => {
                hang_up(&myself, st, &outcome, "switch").await;
            }
            CallMsg::Fault => panic!("fault injected into call {}", st.call_id),
            CallMsg::Fence => on_fence(&myself, st),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<CallMsg>,
        st: &mut CallState,
    ) -> Result<(), ActorProcessingErr> {
        forget(&myself, st);
        Ok(())
    }
}

/// Takes this actor's Call-IDs out of the routing table. Only entries that still point at
/// this actor: a call resumed here again may already have a new actor under the same ids.
fn forget(myself: &ActorRef<CallMsg>, st: &CallState) {
    let me = myself.get_id();
    let drop_mine = |id: &str| {
        st.sw.calls.remove_if(id, |_, a| a.get_id() == me);
    };
    drop_mine(&st.call_id);
    if let Some(b) = &st.b {
        drop_mine(&b.call_id);
    }
    if let Some(o) = &st.ringing
        && let Ok(id) = message::call_id(&o.invite)
    {
        drop_mine(&id);
    }
}

/// A `CallArrived` whose wait ran out (no leader, no quorum) may still commit later, after the
/// caller was refused with 503: a call no actor serves would then sit in the state. Looks for
/// it a few times over the next ~40 s and ends it on the record (outcome `switch.refused`,
/// so its CDR says what the caller got). If the arrival never commits there is nothing to end.
async fn end_if_stored_late(sw: Arc<Switch>, call_id: String) {
    for wait_s in [1, 4, 10, 25] {
        tokio::time::sleep(Duration::from_secs(wait_s)).await;
        // Only this node's: a call another node took over is that node's to serve or end.
        let stored = sw
            .log
            .read(|sm| sm.call(&call_id).is_some_and(|c| c.owner == sw.node_id));
        if !stored || sw.calls.contains_key(&call_id) {
            continue;
        }
        let ended = Command::CallEnded {
            call_id: call_id.clone(),
            outcome: "switch.refused".into(),
            ended_by: "switch".into(),
            wrapup_secs: 0,
            at_ms: now_ms(),
        };
        match sw.propose_firmly(ended).await {
            Ok(_) => {
                tracing::info!(call_id = %call_id, "a refused call's arrival committed late; ended it")
            }
            Err(e) => {
                tracing::warn!(call_id = %call_id, error = %e, "cannot end a refused call stored late")
            }
        }
        return;
    }
}

/// Answers the caller: negotiates SDP, allocates media, commits `CallArrived`, sends 200 OK.
async fn setup(
    myself: &ActorRef<CallMsg>,
    sw: Arc<Switch>,
    invite: rsip::Request,
    source: Peer,
    tx: ServerTransaction,
    queue: QueueSpec,
) -> Result<CallState, crate::ActorError> {
    let call_id = message::call_id(&invite)?;
    let refuse = |code: u16, reason: &str| {
        let _ = tx.respond(response_for(&invite, code, Some(reason), None));
    };
    if sw.calls.contains_key(&call_id) {
        refuse(482, "Loop Detected");
        return Err(crate::ActorError::Actor {
            actor: format!("call {call_id}"),
            detail: "duplicate INVITE".into(),
        });
    }
    let body = String::from_utf8_lossy(&invite.body).to_string();
    let offer = match sdp::parse_audio(&body, &call_id) {
        Ok(o) => o,
        Err(e) => {
            refuse(488, &format!("SDP offer required: {e}"));
            return Err(e.into());
        }
    };
    let supported: Vec<&str> = sw
        .config
        .media
        .codecs
        .iter()
        .map(|c| c.encoding_name())
        .collect();
    let Some((pt, name)) = sdp::negotiate(&offer, &supported) else {
        refuse(488, "No common codec (PCMU or PCMA)");
        return Err(crate::ActorError::Sip(crate::sip::SipError::Sdp {
            call_id,
            detail: "no common codec".into(),
        }));
    };
    let codec = Codec::from_name(&name).unwrap_or(Codec::Pcmu);
    // Nobody to answer and nothing to say: refuse (480) rather than answer and hang up. Decided
    // before any media is allocated, so a flood of such calls costs no RTP ports.
    let prompt_configured = sw
        .config
        .queues
        .iter()
        .any(|q| q.id == queue.id && q.overflow.prompt.is_some());
    let no_agents = queue.overflow_when_no_agents
        && queue.overflow == Overflow::Hangup
        && !prompt_configured
        && !sw.log.read(|sm| sm.has_logged_in_agent(&queue.id));
    let media = if no_agents {
        None
    } else {
        match sw.media.allocate(&call_id).await {
            Ok(m) => Some(m),
            Err(e) => {
                refuse(503, "No media ports");
                return Err(e.into());
            }
        }
    };
    let contact = local_contact(&sw, &queue.id, source);
    let mut a = dialog::uas_dialog(
        &invite,
        source.addr,
        source.transport,
        &message::new_tag(),
        &contact,
    )?;
    a.remote_sdp = Some(body);
    let caller = from_user(&invite).unwrap_or_else(|| "anonymous".into());
    let called = invite
        .uri
        .auth
        .as_ref()
        .map(|x| x.user.clone())
        .unwrap_or_default();
    let Some(media) = media else {
        // Recorded (one CDR per call), then refused.
        let arrived = Command::CallArrived {
            call_id: call_id.clone(),
            caller,
            called,
            owner: sw.node_id.clone(),
            a_leg: a,
            at_ms: now_ms(),
        };
        let ended = Command::CallEnded {
            call_id: call_id.clone(),
            outcome: "queue.no_agents".into(),
            ended_by: "switch".into(),
            wrapup_secs: 0,
            at_ms: now_ms(),
        };
        refuse(480, "No agents available");
        for cmd in [arrived, ended] {
            if let Err(e) = sw.log.propose(cmd).await {
                tracing::error!(call_id = %call_id, error = %e, "CDR of a refused call not committed");
            }
        }
        tracing::info!(call_id = %call_id, queue = %queue.id, "refused: no agent logged in");
        return Err(crate::ActorError::NotFound {
            what: format!("agents for queue {}", queue.id),
        });
    };
    media.set_remote(Leg::A, offer.addr, codec, offer.telephone_event_pt);
    let sdp_session = [rand::random::<u32>() as u64, rand::random::<u32>() as u64];
    let answer = sdp::build_audio(
        sdp_session[0],
        1,
        media.local_addr(Leg::A),
        &[(pt, name.as_str())],
        offer.telephone_event_pt,
        offer.direction.reverse(),
        sw.config.media.ptime_ms,
    );
    a.local_sdp = Some(answer.clone());
    a.sdp_version = 1;
    sw.calls.insert(call_id.clone(), myself.clone());
    let arrived = sw
        .log
        .propose(Command::CallArrived {
            call_id: call_id.clone(),
            caller,
            called,
            owner: sw.node_id.clone(),
            a_leg: a.clone(),
            at_ms: now_ms(),
        })
        .await;
    if let Err(e) = arrived {
        sw.calls.remove(&call_id);
        refuse(503, "Call could not be stored");
        tokio::spawn(end_if_stored_late(sw.clone(), call_id.clone()));
        return Err(e.into());
    }
    let mut ok = response_for(&invite, 200, None, Some(&a.local_tag));
    ok.headers
        .push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{contact}>"
        ))));
    ok.headers
        .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
    let ok = with_body(ok, "application/sdp", answer.into_bytes());
    tx.respond(ok)?;
    let mut media = media;
    let mut events = media.take_events();
    let me = myself.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if me.cast(CallMsg::Media(ev)).is_err() {
                break;
            }
        }
    });
    media.play(Leg::A, queue_music(&sw, &queue), true);
    metrics::gauge!("lingxi_active_calls").increment(1.0);
    tracing::info!(call_id = %call_id, queue = %queue.id, codec = codec.name(), "call answered, queued");
    Ok(CallState {
        sw,
        call_id,
        media,
        codec_a: codec,
        a,
        a_tx: Some(tx),
        queue,
        phase: Phase::Queued,
        attempt: 0,
        ringing: None,
        abandoned: Vec::new(),
        b: None,
        agent: None,
        wait_epoch: 0,
        held: [false, false],
        closing_outcome: None,
        sdp_session,
        resumed: false,
        transfers: 0,
    })
}

/// Music for a queue: its own file if configured and readable, else the engine's.
fn queue_music(sw: &Switch, queue: &QueueSpec) -> Prompt {
    let configured = sw
        .config
        .queues
        .iter()
        .find(|q| q.id == queue.id)
        .and_then(|q| q.hold_music.clone());
    if let Some(path) = configured {
        match PcmClip::load_wav(&path) {
            Ok(clip) => return Prompt::Clip(Arc::new(clip)),
            Err(e) => {
                tracing::warn!(queue = %queue.id, error = %e, "queue hold music unreadable; using the default")
            }
        }
    }
    sw.media.hold_music()
}

/// Our Contact for a dialog reached over `via`'s transport.
fn local_contact(sw: &Switch, user: &str, via: Peer) -> String {
    let port = sw
        .endpoint()
        .and_then(|e| e.local_addr(via.transport))
        .map(|a| a.port())
        .unwrap_or(5060);
    dialog::local_contact(user, &sw.config.sip.advertised_host(), port, via.transport)
}

/// Puts the call into `st.queue` (or into `to`, on overflow) and arms its max-wait timer.
async fn enter_queue(myself: &ActorRef<CallMsg>, st: &mut CallState, to: Option<QueueSpec>) {
    if let Some(q) = to {
        st.queue = q;
    }
    let no_agents = st.queue.overflow_when_no_agents
        && !st.sw.log.read(|sm| sm.has_logged_in_agent(&st.queue.id));
    let cmd = Command::CallQueued {
        call_id: st.call_id.clone(),
        queue: st.queue.id.clone(),
        priority: st.queue.priority,
        at_ms: now_ms(),
    };
    if let Err(e) = st.sw.propose_firmly(cmd).await {
        tracing::error!(call_id = %st.call_id, error = %e, "cannot queue call");
        hang_up(myself, st, "call.failed", "switch").await;
        return;
    }
    st.phase = Phase::Queued;
    st.wait_epoch += 1;
    if no_agents {
        overflow(myself, st, "queue.no_agents").await;
        return;
    }
    let epoch = st.wait_epoch;
    myself.send_after(
        Duration::from_secs(st.queue.max_wait_secs.max(1)),
        move || CallMsg::MaxWait { epoch },
    );
}

/// The queue gave up on the call (max wait, or no agents): move it or say goodbye.
async fn overflow(myself: &ActorRef<CallMsg>, st: &mut CallState, outcome: &str) {
    metrics::counter!("lingxi_queue_overflows_total", "queue" => st.queue.id.clone()).increment(1);
    if let Overflow::Queue(target) = st.queue.overflow.clone() {
        let spec = st.sw.log.read(|sm| sm.queues().get(&target).cloned());
        if let Some(spec) = spec.filter(|s| s.id != st.queue.id) {
            tracing::info!(call_id = %st.call_id, from = %st.queue.id, to = %spec.id, "overflow to another queue");
            // Re-entering: the overflow target's own no-agent rule applies there.
            Box::pin(enter_queue(myself, st, Some(spec))).await;
            return;
        }
    }
    let prompt = st
        .sw
        .config
        .queues
        .iter()
        .find(|q| q.id == st.queue.id)
        .and_then(|q| q.overflow.prompt.clone())
        .and_then(|p| {
            PcmClip::load_wav(&p)
                .map_err(|e| tracing::warn!(error = %e, "overflow prompt unreadable"))
                .ok()
        });
    match prompt {
        Some(clip) => {
            st.phase = Phase::Closing;
            st.closing_outcome = Some(outcome.to_string());
            let ms = clip.duration_ms() + 2_000;
            st.media.play(Leg::A, Prompt::Clip(Arc::new(clip)), false);
            // Bound the message even if the playback event is lost.
            let me = myself.clone();
            let out = outcome.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = me.cast(CallMsg::Hangup { outcome: out });
            });
        }
        None => {
            hang_up(myself, st, outcome, "switch").await;
        }
    }
}

/// Rings the agent the queue chose.
async fn offer(myself: &ActorRef<CallMsg>, st: &mut CallState, agent: String, reg: Registration) {
    if st.phase != Phase::Queued {
        // Raced with a hang-up or another offer: give the agent back.
        let _ = st
            .sw
            .log
            .propose(Command::CallOfferFailed {
                call_id: st.call_id.clone(),
                agent,
                reason: "call.gone".into(),
                agent_not_ready: false,
                at_ms: now_ms(),
            })
            .await;
        return;
    }
    let Some(endpoint) = st.sw.endpoint().cloned() else {
        return;
    };
    st.attempt += 1;
    let attempt = st.attempt;
    let dest = Peer {
        transport: reg.transport,
        addr: reg.peer,
    };
    let b_call_id = format!("{}-{}", message::new_tag(), attempt);
    let domain = &st.sw.config.sip.domain;
    let caller = st
        .sw
        .log
        .read(|sm| sm.call(&st.call_id).map(|c| c.caller.clone()))
        .unwrap_or_default();
    let local_uri = format!("sip:{caller}@{domain}");
    let remote_uri = format!("sip:{agent}@{domain}");
    let contact = local_contact(&st.sw, &st.queue.id, dest);
    // Offer the caller's codec first, so the relay need not transcode.
    let mut codecs: Vec<(u8, &str)> = vec![(st.codec_a.payload_type(), st.codec_a.name())];
    for c in &st.sw.config.media.codecs {
        if c.encoding_name() != st.codec_a.name() {
            codecs.push((c.payload_type(), c.encoding_name()));
        }
    }
    let sdp_offer = sdp::build_audio(
        st.sdp_session[1],
        u64::from(attempt),
        st.media.local_addr(Leg::B),
        &codecs,
        Some(st.sw.config.media.telephone_event_pt),
        Direction::SendRecv,
        st.sw.config.media.ptime_ms,
    );
    let mut invite = match dialog::uac_invite(
        &local_uri,
        &remote_uri,
        &reg.contact,
        &contact,
        &b_call_id,
        &message::new_tag(),
        1,
        Some(&sdp_offer),
        dest.transport,
    ) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(call_id = %st.call_id, agent = %agent, error = %e, "cannot build INVITE for agent");
            return;
        }
    };
    invite
        .headers
        .push(Header::Other("X-Lingxi-Call".into(), st.call_id.clone()));
    invite
        .headers
        .push(Header::Other("X-Lingxi-Queue".into(), st.queue.id.clone()));
    st.sw.calls.insert(b_call_id.clone(), myself.clone());
    let mut ctx = match endpoint.send_request(invite.clone(), dest) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(call_id = %st.call_id, agent = %agent, error = %e, "cannot INVITE agent");
            st.sw.calls.remove(&b_call_id);
            st.ringing = Some(BOffer {
                agent,
                invite,
                dest,
                cancel: None,
            });
            give_up_offer(st, "agent.unreachable").await;
            after_failed_offer(myself, st).await;
            return;
        }
    };
    let (cancel_tx, mut cancel_rx) = oneshot::channel::<()>();
    let me = myself.clone();
    tokio::spawn(async move {
        let mut cancel_armed = true;
        loop {
            tokio::select! {
                ev = ctx.next() => {
                    let Some(ev) = ev else { break };
                    let last = matches!(ev, ClientEvent::Final(_) | ClientEvent::Timeout | ClientEvent::TransportError(_));
                    if me.cast(CallMsg::BLeg { attempt, event: ev }).is_err() || last { break; }
                }
                r = &mut cancel_rx, if cancel_armed => {
                    cancel_armed = false;
                    if r.is_ok() { let _ = ctx.cancel(); }
                }
            }
        }
    });
    st.phase = Phase::Ringing;
    st.ringing = Some(BOffer {
        agent: agent.clone(),
        invite,
        dest,
        cancel: Some(cancel_tx),
    });
    let ring = Duration::from_secs(st.queue.ring_timeout_secs.max(1));
    myself.send_after(ring, move || CallMsg::RingTimeout { attempt });
    tracing::info!(call_id = %st.call_id, agent = %agent, attempt, "offering call to agent");
}

/// Cancels the ringing offer and records why it failed; the agent's INVITE may still answer.
async fn give_up_offer(st: &mut CallState, reason: &str) {
    let Some(mut o) = st.ringing.take() else {
        return;
    };
    if let Some(c) = o.cancel.take() {
        let _ = c.send(());
    }
    let not_ready = st.queue.not_ready_on_no_answer && reason != "call.gone";
    let cmd = Command::CallOfferFailed {
        call_id: st.call_id.clone(),
        agent: o.agent.clone(),
        reason: reason.into(),
        agent_not_ready: not_ready,
        at_ms: now_ms(),
    };
    if let Err(e) = st.sw.propose_firmly(cmd).await {
        tracing::warn!(call_id = %st.call_id, error = %e, "recording the failed offer failed");
    }
    tracing::info!(call_id = %st.call_id, agent = %o.agent, reason, "offer failed");
    st.abandoned.push((st.attempt, o));
    st.phase = Phase::Queued;
}

/// After an offer failed: stop if too many agents were tried, else wait for the queue.
async fn after_failed_offer(myself: &ActorRef<CallMsg>, st: &mut CallState) {
    let max = st.sw.config.acd.max_offers_per_call;
    if max > 0 && st.attempt >= max {
        overflow(myself, st, "agent.no_answer").await;
    }
}

async fn on_b_event(
    myself: &ActorRef<CallMsg>,
    st: &mut CallState,
    attempt: u32,
    event: ClientEvent,
) {
    let current = st.phase == Phase::Ringing && attempt == st.attempt && st.ringing.is_some();
    match event {
        ClientEvent::Provisional(_) => {}
        ClientEvent::Final(resp) if (200..300).contains(&resp.status_code.code()) => {
            if current {
                let o = st.ringing.take().expect("checked");
                answered(myself, st, o, resp).await;
            } else if let Some(pos) = st.abandoned.iter().position(|(a, _)| *a == attempt) {
                // Answered after we gave up (CANCEL crossed the 200): ACK and hang up at once.
                let (_, o) = st.abandoned.remove(pos);
                if let Ok(mut d) =
                    dialog::uac_dialog(&o.invite, &resp, o.dest.addr, o.dest.transport)
                {
                    send_ack(st, &d, &o.invite);
                    send_in_dialog(&st.sw, &mut d, Method::Bye);
                }
                if let Ok(id) = message::call_id(&o.invite) {
                    st.sw.calls.remove(&id);
                }
            }
        }
        ClientEvent::Final(resp) => {
            let code = resp.status_code.code();
            if current {
                let reason = match code {
                    486 | 600 => "agent.busy",
                    603 => "agent.rejected",
                    487 => "agent.no_answer",
                    _ => "agent.unavailable",
                };
                give_up_offer(st, reason).await;
                after_failed_offer(myself, st).await;
            }
            forget_attempt(st, attempt);
        }
        ClientEvent::Timeout | ClientEvent::TransportError(_) => {
            if current {
                give_up_offer(st, "agent.unreachable").await;
                after_failed_offer(myself, st).await;
            }
            forget_attempt(st, attempt);
        }
    }
}

fn forget_attempt(st: &mut CallState, attempt: u32) {
    if let Some(pos) = st.abandoned.iter().position(|(a, _)| *a == attempt) {
        let (_, o) = st.abandoned.remove(pos);
        if let Ok(id) = message::call_id(&o.invite) {
            st.sw.calls.remove(&id);
        }
    }
}

/// The agent answered: ACK, bridge, record, commit `CallAnswered`.
async fn answered(myself: &ActorRef<CallMsg>, st: &mut CallState, o: BOffer, resp: rsip::Response) {
    let mut d = match dialog::uac_dialog(&o.invite, &resp, o.dest.addr, o.dest.transport) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(call_id = %st.call_id, error = %e, "agent's 200 OK unusable");
            return;
        }
    };
    let body = String::from_utf8_lossy(&resp.body).to_string();
    let answer = sdp::parse_audio(&body, &d.call_id);
    d.local_sdp = message::call_id(&o.invite)
        .ok()
        .map(|_| String::from_utf8_lossy(&o.invite.body).to_string());
    d.remote_sdp = Some(body);
    d.sdp_version = u64::from(st.attempt);
    let codec = answer
        .as_ref()
        .ok()
        .and_then(|a| a.codecs.iter().find_map(|(_, n)| Codec::from_name(n)));
    let (Ok(answer), Some(codec)) = (answer, codec) else {
        send_ack(st, &d, &o.invite);
        tracing::warn!(call_id = %st.call_id, agent = %o.agent, "agent answered without a usable SDP; hanging up its leg");
        send_in_dialog(&st.sw, &mut d, Method::Bye);
        st.ringing = Some(o);
        give_up_offer(st, "agent.media_failed").await;
        after_failed_offer(myself, st).await;
        return;
    };
    st.media
        .set_remote(Leg::B, answer.addr, codec, answer.telephone_event_pt);
    st.media.stop_play(Leg::A);
    st.media.bridge();
    let recording = match st.transfers {
        0 => start_recording(st, None),
        n => start_recording(st, Some(&format!("transfer{n}"))),
    };
    // Commit the agent's dialog before the ACK confirms the call to the agent's phone: a
    // survivor must know both legs of every call the network sees as connected.
    let cmd = Command::CallAnswered {
        call_id: st.call_id.clone(),
        agent: o.agent.clone(),
        b_leg: d.clone(),
        recording: recording.clone(),
        at_ms: now_ms(),
    };
    let committed = st.sw.propose_firmly(cmd).await;
    send_ack(st, &d, &o.invite);
    st.b = Some(d);
    st.agent = Some(o.agent.clone());
    st.phase = Phase::Talking;
    if let Err(e) = committed {
        tracing::error!(call_id = %st.call_id, error = %e, "cannot commit the answer; ending the call");
        hang_up(myself, st, "call.failed", "switch").await;
        return;
    }
    tracing::info!(call_id = %st.call_id, agent = %o.agent, codec_a = st.codec_a.name(), codec_b = codec.name(), "agent answered; bridged");
}

/// Starts recording to `<call>.wav`, or `<call>-<part>.wav` for a later part.
fn start_recording(st: &CallState, part: Option<&str>) -> Option<String> {
    if !st.sw.config.recording.enabled {
        return None;
    }
    let safe: String = st
        .call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let day = now_ms() / 86_400_000;
    let path: PathBuf = st
        .sw
        .config
        .recording_dir()
        .join(format!("day-{day}"))
        .join(match part {
            Some(part) => format!("{safe}-{part}.wav"),
            None => format!("{safe}.wav"),
        });
    match st.media.start_recording(path.clone()) {
        Ok(()) => Some(path.display().to_string()),
        Err(e) => {
            tracing::warn!(call_id = %st.call_id, error = %e, "recording did not start");
            None
        }
    }
}

fn send_ack(st: &CallState, d: &DialogState, invite: &rsip::Request) {
    let Some(endpoint) = st.sw.endpoint() else {
        return;
    };
    let cseq = message::cseq(invite).map(|(n, _)| n).unwrap_or(1);
    match dialog::make_ack(d, cseq, None) {
        Ok(ack) => {
            if let Err(e) = endpoint.send_ack(
                ack,
                Peer {
                    transport: d.transport,
                    addr: d.peer,
                },
            ) {
                tracing::warn!(call_id = %d.call_id, error = %e, "ACK not sent");
            }
        }
        Err(e) => tracing::warn!(call_id = %d.call_id, error = %e, "ACK not built"),
    }
}

/// Sends an in-dialog request (BYE) and lets its transaction run to the end in the background.
pub(crate) fn send_in_dialog(sw: &Switch, d: &mut DialogState, method: Method) {
    send_in_dialog_with(sw, d, method, None, Vec::new());
}

/// [`send_in_dialog`] with a body and extra headers (e.g. a NOTIFY's sipfrag and `Event`).
pub(crate) fn send_in_dialog_with(
    sw: &Switch,
    d: &mut DialogState,
    method: Method,
    body: Option<(&str, Vec<u8>)>,
    headers: Vec<Header>,
) {
    if let Some(mut tx) = start_in_dialog(sw, d, method, body, headers) {
        tokio::spawn(async move { while tx.next().await.is_some() {} });
    }
}

/// Starts an in-dialog request's client transaction; a request that cannot be built or sent
/// is logged and `None`.
fn start_in_dialog(
    sw: &Switch,
    d: &mut DialogState,
    method: Method,
    body: Option<(&str, Vec<u8>)>,
    headers: Vec<Header>,
) -> Option<ClientTransaction> {
    let endpoint = sw.endpoint()?;
    let req = match dialog::make_request(d, method, body) {
        Ok(mut r) => {
            r.headers.extend(headers);
            r
        }
        Err(e) => {
            tracing::warn!(call_id = %d.call_id, error = %e, "in-dialog request not built");
            return None;
        }
    };
    endpoint
        .send_request(
            req,
            Peer {
                transport: d.transport,
                addr: d.peer,
            },
        )
        .inspect_err(
            |e| tracing::warn!(call_id = %d.call_id, error = %e, "in-dialog request not sent"),
        )
        .ok()
}

/// Hangs up agent `agent`'s leg `d` of ended call `call_id`: BYE, and once its transaction
/// is over (answered, timed out or failed), `AgentLegReleased`, so the agent may be offered
/// calls again. Until then the record offers the agent nothing: its phone may still hold
/// this call. Whoever sends it (the call's node, or a survivor for a dead or forgetful
/// one), a second BYE meets a dialog already gone and a second release is ignored.
pub(crate) async fn release_agent_leg(
    sw: &Switch,
    agent: String,
    call_id: String,
    mut d: DialogState,
) {
    let key = (agent, call_id);
    if !sw.releasing.insert(key.clone()) {
        return; // under way from here already
    }
    if let Some(mut tx) = start_in_dialog(sw, &mut d, Method::Bye, None, Vec::new()) {
        while tx.next().await.is_some() {}
    }
    let (agent, call_id) = &key;
    let cmd = Command::AgentLegReleased {
        id: agent.clone(),
        call_id: call_id.clone(),
    };
    if let Err(e) = sw.propose_firmly(cmd).await {
        tracing::warn!(%call_id, %agent, error = %e, "AgentLegReleased not committed; tried again from the record");
    }
    sw.releasing.remove(&key);
}

async fn on_sip(myself: &ActorRef<CallMsg>, st: &mut CallState, incoming: Incoming) {
    match incoming {
        Incoming::Ack { request, .. } => {
            if message::call_id(&request).ok().as_deref() == Some(st.a.call_id.as_str()) {
                st.a_tx = None;
            }
        }
        Incoming::Cancel { invite, .. } => {
            // Only possible before our 200 OK went out; the INVITE then ends with 487.
            let _ = invite.respond(response_for(invite.request(), 487, None, None));
            hang_up(myself, st, "queue.abandoned", "caller").await;
        }
        Incoming::AckTimeout { call_id, .. } => {
            tracing::warn!(call_id = %call_id, "no ACK for our 200 OK");
            hang_up(myself, st, "call.ack_timeout", "switch").await;
        }
        Incoming::Request { request, tx, .. } => {
            let cid = message::call_id(&request).unwrap_or_default();
            let leg = if cid == st.a.call_id {
                CallLeg::A
            } else if st.b.as_ref().is_some_and(|b| b.call_id == cid) {
                CallLeg::B
            } else {
                // A request on an offer's Call-ID before it was answered: not a dialog of ours.
                let _ = tx.respond(response_for(&request, 481, None, None));
                return;
            };
            in_dialog_request(myself, st, leg, request, tx).await;
        }
    }
}

async fn in_dialog_request(
    myself: &ActorRef<CallMsg>,
    st: &mut CallState,
    leg: CallLeg,
    request: rsip::Request,
    tx: ServerTransaction,
) {
    let d = match leg {
        CallLeg::A => &mut st.a,
        CallLeg::B => st.b.as_mut().expect("leg B exists"),
    };
    if let Err(e) = dialog::check_incoming(d, &request) {
        let _ = tx.respond(response_for(&request, 500, Some(&e.to_string()), None));
        return;
    }
    match request.method {
        Method::Bye => {
            let (outcome, by) = match (leg, st.phase) {
                (CallLeg::A, Phase::Talking) => ("call.completed", "caller"),
                (CallLeg::A, Phase::Closing) => ("queue.timeout", "caller"),
                (CallLeg::A, _) => ("queue.abandoned", "caller"),
                (CallLeg::B, _) => ("call.completed", "agent"),
            };
            let outcome = st
                .closing_outcome
                .take()
                .unwrap_or_else(|| outcome.to_string());
            // Answered once the end is on the record. A node cut off from the majority cannot
            // record it, and the call resumes on a live node: a 200 from here would leave the
            // caller gone and the call running on (found by the chaos suite). 503 asks for the
            // BYE again; the caller's retry reaches whoever owns the call by then.
            let resp = if hang_up(myself, st, &outcome, by).await {
                response_for(&request, 200, None, None)
            } else {
                message::retry_later(&request, "Cut off from the cluster majority; retry", 1)
            };
            let _ = tx.respond(resp);
        }
        Method::Invite | Method::Update => reinvite(st, leg, request, tx).await,
        Method::Refer if leg == CallLeg::B => transfer::refer(myself, st, request, tx).await,
        Method::Refer => {
            let why = Some("only the agent's leg may transfer the call");
            let _ = tx.respond(response_for(&request, 403, why, None));
        }
        Method::Info | Method::Options | Method::Notify => {
            let _ = tx.respond(response_for(&request, 200, None, None));
        }
        _ => {
            let mut r = response_for(&request, 405, None, None);
            r.headers
                .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
            let _ = tx.respond(r);
        }
    }
}

/// A re-INVITE (or UPDATE) from either leg: target refresh, new media address, hold/unhold.
async fn reinvite(st: &mut CallState, leg: CallLeg, request: rsip::Request, tx: ServerTransaction) {
    let mleg = match leg {
        CallLeg::A => Leg::A,
        CallLeg::B => Leg::B,
    };
    let body = String::from_utf8_lossy(&request.body).to_string();
    let call_id = st.call_id.clone();
    let offer: Option<AudioOffer> = if body.trim().is_empty() {
        None
    } else {
        match sdp::parse_audio(&body, &call_id) {
            Ok(o) => Some(o),
            Err(e) => {
                let _ = tx.respond(response_for(&request, 488, Some(&e.to_string()), None));
                return;
            }
        }
    };
    let codec_now = match leg {
        CallLeg::A => st.codec_a,
        CallLeg::B => {
            st.b.as_ref()
                .and_then(|b| b.remote_sdp.as_deref())
                .and_then(|s| sdp::parse_audio(s, &call_id).ok())
                .and_then(|o| o.codecs.iter().find_map(|(_, n)| Codec::from_name(n)))
                .unwrap_or(st.codec_a)
        }
    };
    let (direction, te_pt, codec) = match &offer {
        Some(o) => {
            let supported: Vec<&str> = st
                .sw
                .config
                .media
                .codecs
                .iter()
                .map(|c| c.encoding_name())
                .collect();
            let Some((_, name)) = sdp::negotiate(o, &supported) else {
                let _ = tx.respond(response_for(&request, 488, Some("No common codec"), None));
                return;
            };
            let codec = Codec::from_name(&name).unwrap_or(codec_now);
            if !o.addr.ip().is_unspecified() {
                st.media
                    .set_remote(mleg, o.addr, codec, o.telephone_event_pt);
            }
            (o.direction.reverse(), o.telephone_event_pt, codec)
        }
        None => (
            Direction::SendRecv,
            Some(st.sw.config.media.telephone_event_pt),
            codec_now,
        ),
    };
    let holding = offer.as_ref().is_some_and(|o| o.is_hold());
    let idx = match leg {
        CallLeg::A => 0,
        CallLeg::B => 1,
    };
    let session = st.sdp_session[idx];
    let d = match leg {
        CallLeg::A => &mut st.a,
        CallLeg::B => st.b.as_mut().expect("leg B exists"),
    };
    d.sdp_version += 1;
    let answer = sdp::build_audio(
        session,
        d.sdp_version,
        st.media.local_addr(mleg),
        &[(codec.payload_type(), codec.name())],
        te_pt,
        direction,
        st.sw.config.media.ptime_ms,
    );
    d.local_sdp = Some(answer.clone());
    if offer.is_some() {
        d.remote_sdp = Some(body);
    }
    let snapshot = d.clone();
    let tag = d.local_tag.clone();
    let contact = d.local_contact.clone();
    if let Err(e) = st
        .sw
        .log
        .propose(Command::DialogUpdated {
            call_id: st.call_id.clone(),
            leg,
            dialog: snapshot,
        })
        .await
    {
        let _ = tx.respond(response_for(
            &request,
            500,
            Some(&format!("Dialog not stored: {e}")),
            None,
        ));
        return;
    }
    let mut ok = response_for(&request, 200, None, Some(&tag));
    ok.headers
        .push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{contact}>"
        ))));
    let _ = tx.respond(with_body(ok, "application/sdp", answer.into_bytes()));
    if holding != st.held[idx] {
        st.held[idx] = holding;
        st.media.set_hold(mleg, holding);
        if st.phase == Phase::Talking {
            if holding {
                st.media.play(mleg.other(), st.sw.media.hold_music(), true);
            } else {
                st.media.stop_play(mleg.other());
                st.media.bridge();
            }
            let _ = st
                .sw
                .log
                .propose(Command::CallHeld {
                    call_id: st.call_id.clone(),
                    held: holding,
                })
                .await;
        }
        tracing::info!(call_id = %st.call_id, ?leg, held = holding, "hold changed");
    }
}

/// The node was cut off from the majority when this message was sent. An actor busy at the
/// time (say, still re-INVITEing the legs of a call it resumes) may read it only after the
/// node is back in touch and has taken back its orphans, passing over this running call: if
/// the committed record still names this node the owner, nobody else took the call over, and
/// stopping now would leave it with no actor anywhere. So a fence that has passed only stops
/// a call that moved away.
fn on_fence(myself: &ActorRef<CallMsg>, st: &mut CallState) {
    let sw = &st.sw;
    let ours = || {
        sw.log
            .read(|sm| sm.call(&st.call_id).is_some_and(|c| c.owner == sw.node_id))
    };
    if !sw.is_fenced() && ours() {
        tracing::info!(call_id = %st.call_id, "the fence passed while this call was busy; still ours, carrying on");
        return;
    }
    stop_fenced(myself, st);
}

/// Stops the call here at once, silently (no BYE, no CDR): this node lost its lease and the
/// call resumes on a live node.
fn stop_fenced(myself: &ActorRef<CallMsg>, st: &mut CallState) {
    if st.phase == Phase::Ended {
        return;
    }
    st.phase = Phase::Ended;
    st.media.unbridge();
    metrics::gauge!("lingxi_active_calls").decrement(1.0);
    tracing::warn!(call_id = %st.call_id, "fenced: call stopped here, to resume on a live node");
    // Out of the routing table now, not at post-stop: the node may be back in touch within
    // moments, and its hunt for orphans passes over a call that still has an actor.
    forget(myself, st);
    myself.stop(Some("fenced".into()));
}

/// Ends the call: CDR through `CallEnded`, then BYE (or CANCEL) to whichever legs are up,
/// stop. On a fenced node it only stops: the call may already run elsewhere, and neither a
/// BYE nor a CDR from here may contradict the node that owns it now. Likewise when the node
/// is cut off while the end is being committed: the call resumes on a live node with both
/// legs up, so nothing is torn down here before the end is on the record. Returns false
/// when the call was left to resume elsewhere that way.
async fn hang_up(
    myself: &ActorRef<CallMsg>,
    st: &mut CallState,
    outcome: &str,
    ended_by: &str,
) -> bool {
    if st.phase == Phase::Ended {
        return true;
    }
    if st.sw.is_fenced() {
        stop_fenced(myself, st);
        return false;
    }
    let was = st.phase;
    let cmd = Command::CallEnded {
        call_id: st.call_id.clone(),
        outcome: outcome.to_string(),
        ended_by: ended_by.to_string(),
        wrapup_secs: st.queue.wrapup_secs,
        at_ms: now_ms(),
    };
    if let Err(e) = st.sw.propose_firmly(cmd).await {
        if st.sw.is_fenced() {
            tracing::warn!(call_id = %st.call_id, error = %e, "CallEnded not committed before this node was cut off; the call resumes elsewhere");
            tokio::spawn(bye_if_ended_after_all(
                st.sw.clone(),
                st.call_id.clone(),
                ended_by.to_string(),
                st.a.clone(),
                st.b.clone().zip(st.agent.clone()),
            ));
            stop_fenced(myself, st);
            return false;
        }
        tracing::error!(call_id = %st.call_id, error = %e, "CallEnded not committed");
    }
    st.phase = Phase::Ended;
    if let Some(mut o) = st.ringing.take() {
        if let Some(c) = o.cancel.take() {
            let _ = c.send(());
        }
        st.abandoned.push((st.attempt, o));
    }
    hang_up_legs(
        &st.sw,
        &st.call_id,
        ended_by,
        Some(&mut st.a),
        st.b.as_mut().zip(st.agent.as_deref()),
    );
    st.media.unbridge();
    let _ = st.media.stop_recording();
    metrics::gauge!("lingxi_active_calls").decrement(1.0);
    tracing::info!(call_id = %st.call_id, outcome, ended_by, was = ?was, "call ended");
    // Let a late answer from a cancelled offer still be ACKed and hung up before we stop.
    if st.abandoned.is_empty() {
        myself.stop(None);
    } else {
        let me = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            me.stop(None);
        });
    }
    true
}

/// A hang-up whose `CallEnded` the node was cut off before seeing commit may have committed
/// all the same: then no node resumes the call, and the legs the hang-up would have sent BYE
/// to stay up. Once the node is back in touch (waiting at most a minute), if the record no
/// longer holds the call, BYE them from here. (If another node resumed and ended it
/// meanwhile, these BYEs meet a dialog already gone: a 481, harmless.)
async fn bye_if_ended_after_all(
    sw: Arc<Switch>,
    call_id: String,
    ended_by: String,
    mut a: DialogState,
    mut b: Option<(DialogState, String)>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sw.is_fenced() {
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if sw.log.read(|sm| sm.call(&call_id).is_some()) {
        return;
    }
    tracing::info!(%call_id, "the end committed after the cut after all; hanging up the other leg");
    let b = b.as_mut().map(|(d, agent)| (d, agent.as_str()));
    hang_up_legs(&sw, &call_id, &ended_by, Some(&mut a), b);
}

/// Sends BYE to the legs of ended call `call_id` that its end still hangs up
/// ([`end_hangs_up`]): the caller's `a` as it is, the agent's `b` (with its agent id)
/// through [`release_agent_leg`], which frees the agent on the record once the BYE is over.
fn hang_up_legs(
    sw: &Arc<Switch>,
    call_id: &str,
    ended_by: &str,
    a: Option<&mut DialogState>,
    b: Option<(&mut DialogState, &str)>,
) {
    if let Some(a) = a
        && end_hangs_up(ended_by, CallLeg::A)
    {
        send_in_dialog(sw, a, Method::Bye);
    }
    if let Some((b, agent)) = b
        && end_hangs_up(ended_by, CallLeg::B)
    {
        let (sw, agent, call_id, b) = (
            sw.clone(),
            agent.to_string(),
            call_id.to_string(),
            b.clone(),
        );
        tokio::spawn(async move { release_agent_leg(&sw, agent, call_id, b).await });
    }
}

/// Ends a call whose actor is gone, from its replicated record: BYE to both legs with CSeq
/// above the last committed one, CDR with `outcome`.
pub(crate) async fn end_call_from_record(sw: &Switch, call_id: &str, outcome: &str) {
    let Some(rec) = sw.log.read(|sm| sm.call(call_id).cloned()) else {
        return;
    };
    // Requests the dead actor sent after its last commit used higher numbers; skip past them.
    let [a, b] = [rec.a_leg, rec.b_leg].map(|leg| {
        leg.map(|mut d| {
            d.local_seq = d.local_seq.saturating_add(100);
            d
        })
    });
    if let Some(mut a) = a {
        send_in_dialog(sw, &mut a, Method::Bye);
    }
    let wrapup = rec
        .queue
        .as_ref()
        .and_then(|q| sw.log.read(|sm| sm.queues().get(q).map(|s| s.wrapup_secs)))
        .unwrap_or(0);
    let cmd = Command::CallEnded {
        call_id: call_id.to_string(),
        outcome: outcome.to_string(),
        ended_by: "switch".into(),
        wrapup_secs: wrapup,
        at_ms: now_ms(),
    };
    let ended = sw.propose_firmly(cmd).await;
    metrics::gauge!("lingxi_active_calls").decrement(1.0);
    if let Err(e) = &ended {
        tracing::error!(call_id, error = %e, "CDR of a failed call not committed");
    }
    // The agent's leg after the end, so the record frees the agent once it is down.
    match (b, rec.agent) {
        (Some(b), Some(agent)) if ended.is_ok() => {
            release_agent_leg(sw, agent, call_id.to_string(), b).await;
        }
        (Some(mut b), _) => send_in_dialog(sw, &mut b, Method::Bye),
        _ => {}
    }
}

/// Takes over a call whose owner died: fresh media here, a re-INVITE on each established leg
/// with this node's Contact and SDP (CSeq above the committed one), then the call carries on
/// in the phase it was in: bridged if talking, music if queued.
async fn resume(
    myself: &ActorRef<CallMsg>,
    sw: Arc<Switch>,
    rec: CallRecord,
    queue: QueueSpec,
) -> Result<CallState, crate::ActorError> {
    let call_id = rec.call_id.clone();
    let fail = |detail: &str| {
        crate::ActorError::Sip(crate::sip::SipError::Dialog {
            call_id: call_id.clone(),
            detail: detail.into(),
        })
    };
    let mut a = rec
        .a_leg
        .clone()
        .ok_or_else(|| fail("no caller dialog in the record"))?;
    let talking = matches!(rec.phase, CallPhase::Talking | CallPhase::Held);
    let mut b = if talking { rec.b_leg.clone() } else { None };
    let mut media = sw.media.allocate(&call_id).await?;
    sw.calls.insert(a.call_id.clone(), myself.clone());
    if let Some(b) = &b {
        sw.calls.insert(b.call_id.clone(), myself.clone());
    }
    // The codec each leg settled on: our answer to the caller, the agent's answer to us.
    let first_codec = |sdp: Option<&str>| {
        sdp.and_then(|s| sdp::parse_audio(s, &call_id).ok())
            .and_then(|o| o.codecs.iter().find_map(|(_, n)| Codec::from_name(n)))
            .unwrap_or(Codec::Pcmu)
    };
    let codec_a = first_codec(a.local_sdp.as_deref());
    let codec_b = b
        .as_ref()
        .map(|b| first_codec(b.remote_sdp.as_deref()))
        .unwrap_or(codec_a);
    let sdp_session = [rand::random::<u32>() as u64, rand::random::<u32>() as u64];
    let user = queue.id.clone();
    let (ra, rb) = tokio::join!(
        reinvite_leg(&sw, &media, Leg::A, &mut a, codec_a, sdp_session[0], &user),
        async {
            match b.as_mut() {
                Some(b) => {
                    reinvite_leg(&sw, &media, Leg::B, b, codec_b, sdp_session[1], &user).await
                }
                None => Ok(LegResumed::Taken),
            }
        }
    );
    let took = |r: &Result<LegResumed, _>| matches!(r, Ok(LegResumed::Taken));
    let gone = |r: &Result<LegResumed, _>| matches!(r, Ok(LegResumed::Gone));
    if !took(&ra) || (b.is_some() && !took(&rb)) {
        // A 481 says that party had left the call: its BYE went to the node that died, or
        // was answered 503 and not tried again. That is its hang-up. Anything else: the call
        // cannot go on here.
        let (outcome, ended_by) = if gone(&ra) {
            let outcome = if talking {
                "call.completed"
            } else {
                "queue.abandoned"
            };
            (outcome, "caller")
        } else if gone(&rb) && took(&ra) {
            ("call.completed", "agent")
        } else {
            ("failover.failed", "switch")
        };
        let why = |r: &Result<LegResumed, crate::ActorError>| match r {
            Ok(LegResumed::Taken) => "taken".to_string(),
            Ok(LegResumed::Gone) => "481: the party had left".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(%call_id, caller = why(&ra), agent = ?b.as_ref().map(|_| why(&rb)), outcome, ended_by, "a leg did not take the re-INVITE; ending the call");
        sw.calls.remove(&a.call_id);
        if let Some(b) = &b {
            sw.calls.remove(&b.call_id);
        }
        let ended = Command::CallEnded {
            call_id: call_id.clone(),
            outcome: outcome.into(),
            ended_by: ended_by.into(),
            wrapup_secs: queue.wrapup_secs,
            at_ms: now_ms(),
        };
        if let Err(e) = sw.propose_firmly(ended).await {
            tracing::error!(%call_id, error = %e, "CallEnded not committed");
        }
        // Then BYE whichever legs are still up; the agent's frees it on the record once over.
        let a_up = took(&ra).then_some(&mut a);
        let b_up = b.as_mut().filter(|_| !gone(&rb)).zip(rec.agent.as_deref());
        hang_up_legs(&sw, &call_id, ended_by, a_up, b_up);
        return Err(fail("re-INVITE failed"));
    }
    let mut updates = vec![Command::DialogUpdated {
        call_id: call_id.clone(),
        leg: CallLeg::A,
        dialog: a.clone(),
    }];
    if let Some(b) = &b {
        updates.push(Command::DialogUpdated {
            call_id: call_id.clone(),
            leg: CallLeg::B,
            dialog: b.clone(),
        });
    }
    for u in updates {
        if let Err(e) = sw.propose_firmly(u).await {
            // Not resumed after all (say, a fence came): the ids must not look like a running
            // call to whoever takes the call back next.
            let me = myself.get_id();
            sw.calls.remove_if(&a.call_id, |_, r| r.get_id() == me);
            if let Some(b) = &b {
                sw.calls.remove_if(&b.call_id, |_, r| r.get_id() == me);
            }
            return Err(e.into());
        }
    }
    let mut events = media.take_events();
    let me = myself.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if me.cast(CallMsg::Media(ev)).is_err() {
                break;
            }
        }
    });
    let phase = if talking {
        media.bridge();
        Phase::Talking
    } else {
        media.play(Leg::A, queue_music(&sw, &queue), true);
        Phase::Queued
    };
    metrics::gauge!("lingxi_active_calls").increment(1.0);
    metrics::counter!("lingxi_calls_resumed_total").increment(1);
    tracing::info!(call_id = %call_id, phase = ?phase, failovers = rec.failovers, "call resumed on this node");
    let st = CallState {
        sw,
        call_id,
        media,
        codec_a,
        a,
        a_tx: None,
        queue,
        phase,
        attempt: rec.offers,
        ringing: None,
        abandoned: Vec::new(),
        b,
        agent: if talking { rec.agent.clone() } else { None },
        wait_epoch: 0,
        held: [false, false],
        closing_outcome: None,
        sdp_session,
        resumed: true,
        transfers: rec.transfers.len() as u32,
    };
    if talking && let Some(path) = start_recording(&st, Some(&format!("failover{}", rec.failovers)))
    {
        let cmd = Command::RecordingAdded {
            call_id: st.call_id.clone(),
            path,
        };
        if let Err(e) = st.sw.log.propose(cmd).await {
            tracing::warn!(call_id = %st.call_id, error = %e, "recording part not stored");
        }
    }
    Ok(st)
}

/// How a leg took the re-INVITE that moves it to a resuming node.
enum LegResumed {
    /// 2xx: the leg is on the call, now through this node.
    Taken,
    /// 481: the party's phone had left the call (the dialog is gone).
    Gone,
}

/// Re-INVITEs one leg from this node: new Contact (target refresh for the peer) and SDP
/// pointing at this node's media; waits for the answer and ACKs it.
async fn reinvite_leg(
    sw: &Switch,
    media: &CallMedia,
    leg: Leg,
    d: &mut DialogState,
    codec: Codec,
    session: u64,
    user: &str,
) -> Result<LegResumed, crate::ActorError> {
    let call_id = d.call_id.clone();
    let err = |detail: String| {
        crate::ActorError::Sip(crate::sip::SipError::Dialog {
            call_id: call_id.clone(),
            detail,
        })
    };
    let endpoint = sw
        .endpoint()
        .cloned()
        .ok_or_else(|| err("no SIP endpoint".into()))?;
    let peer = Peer {
        transport: d.transport,
        addr: d.peer,
    };
    d.local_contact = local_contact(sw, user, peer);
    d.sdp_version += 1;
    let te = d
        .remote_sdp
        .as_deref()
        .and_then(|s| sdp::parse_audio(s, &call_id).ok())
        .and_then(|o| o.telephone_event_pt)
        .or(Some(sw.config.media.telephone_event_pt));
    let offer = sdp::build_audio(
        session,
        d.sdp_version,
        media.local_addr(leg),
        &[(codec.payload_type(), codec.name())],
        te,
        Direction::SendRecv,
        sw.config.media.ptime_ms,
    );
    d.local_sdp = Some(offer.clone());
    let req = dialog::make_request(
        d,
        Method::Invite,
        Some(("application/sdp", offer.into_bytes())),
    )?;
    let cseq = d.local_seq;
    let mut tx = endpoint.send_request(req, peer)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, tx.next())
            .await
            .map_err(|_| err("re-INVITE unanswered".into()))?;
        match ev {
            Some(ClientEvent::Provisional(_)) => continue,
            Some(ClientEvent::Final(resp)) if (200..300).contains(&resp.status_code.code()) => {
                let body = String::from_utf8_lossy(&resp.body).to_string();
                if let Ok(answer) = sdp::parse_audio(&body, &call_id) {
                    let c = answer
                        .codecs
                        .iter()
                        .find_map(|(_, n)| Codec::from_name(n))
                        .unwrap_or(codec);
                    media.set_remote(leg, answer.addr, c, answer.telephone_event_pt);
                    d.remote_sdp = Some(body);
                }
                if let Some(target) = message::contact_uri(&resp) {
                    d.remote_target = target.to_string();
                }
                let ack = dialog::make_ack(d, cseq, None)?;
                endpoint.send_ack(ack, peer)?;
                return Ok(LegResumed::Taken);
            }
            Some(ClientEvent::Final(resp)) if resp.status_code.code() == 481 => {
                return Ok(LegResumed::Gone);
            }
            Some(ClientEvent::Final(resp)) => {
                return Err(err(format!(
                    "re-INVITE answered {}",
                    resp.status_code.code()
                )));
            }
            Some(ClientEvent::Timeout) | None => return Err(err("re-INVITE timed out".into())),
            Some(ClientEvent::TransportError(e)) => {
                return Err(err(format!("re-INVITE not sent: {e}")));
            }
        }
    }
}
