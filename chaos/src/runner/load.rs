//! The call load: SIP agents that auto-answer (and take the switch's re-INVITEs after a
//! failover), callers placed at a steady seeded rate who talk for a seeded time and hang up,
//! and probe calls that measure whether a new call is answered. Everything the UAs see is
//! written down ([`CallRecord`], [`AgentLeg`]) for the checks after the run.

use super::media::{CallMedia, Media};
use lingxi_chaos::invariants::Violation;
use lingxi_tests::msg::{self, SipMsg, uri_addr};
use lingxi_tests::{Dialog, TestUa};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The queue every call dials (harness config: queue `support`, callers wait even with no
/// agent ready).
pub const QUEUE_EXT: &str = "8000";

/// What a call was placed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// Part of the steady load: waits for an agent, talks, hangs up.
    Load,
    /// Measures new-call uptime: hangs up as soon as the switch answers.
    Probe,
    /// Checks that a healed node takes new calls again.
    HealProbe,
}

/// How a call the switch answered ended, as its caller saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// The INVITE got no 2xx (see `status`).
    NotAnswered,
    /// Our BYE was answered 200.
    CallerBye,
    /// The switch sent BYE.
    SwitchBye,
    /// Our BYE never got a 200 (timeouts, 481) within the failover window: the call is gone
    /// from the switch while the caller still held it.
    ByeFailed(String),
    /// A BYE went unanswered within our wait and a later one was answered 481: the dialog
    /// was gone by then, ended perhaps by that first BYE (its 200 came late, or was lost),
    /// perhaps before. The caller takes the 481 as the end (RFC 3261 12.2.1.2); the CDRs
    /// decide which it was ([`crate::runner::checks::reconcile`]).
    ByeUnconfirmed(String),
}

/// Everything one caller saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    /// Sequence number (also in the caller's name).
    pub seq: u64,
    /// Why it was placed.
    pub kind: CallKind,
    /// The caller's SIP user (`c<seq>` / `p<seq>`): CDRs name it, so even a call whose
    /// INVITE timed out can be matched to its CDR.
    pub caller: String,
    /// Node index the INVITE went to.
    pub entry: usize,
    /// When it was placed (ms since the load began).
    pub placed_ms: u64,
    /// Final response to the INVITE (`None`: none arrived).
    pub status: Option<u16>,
    /// The Call-ID, once a final response came.
    pub call_id: Option<String>,
    /// When the switch answered.
    pub answered_ms: Option<u64>,
    /// The agent who answered (their ACK seen), if any.
    pub agent: Option<String>,
    /// When the agent's leg was ACKed.
    pub agent_answered_ms: Option<u64>,
    /// Re-INVITEs taken on the caller leg: when, and which node sent them.
    pub reinvites: Vec<(u64, Option<usize>)>,
    /// How it ended.
    pub end: CallEnd,
    /// When it ended.
    pub ended_ms: u64,
    /// Its media at the caller.
    pub media: CallMedia,
    /// Why it failed to be placed, if it did.
    pub error: Option<String>,
}

/// One call as one agent saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentLeg {
    /// The agent.
    pub agent: String,
    /// The caller leg's Call-ID (`X-Lingxi-Call`).
    pub a_call: String,
    /// This leg's Call-ID.
    pub b_call: String,
    /// When the INVITE arrived.
    pub offered_ms: u64,
    /// When the switch ACKed our 200 (or first re-INVITEd the leg).
    pub acked_ms: Option<u64>,
    /// Re-INVITEs taken: when, and which node sent them.
    pub reinvites: Vec<(u64, Option<usize>)>,
    /// How it ended (`bye`, `cancel`, `replaced`, `cleanup`, `stop`).
    pub ended_by: &'static str,
    /// When.
    pub ended_ms: u64,
    /// Its media at the agent.
    pub media: CallMedia,
}

/// A call the caller still holds, shared with the agents.
#[derive(Debug, Clone, Default)]
struct LiveCall {
    /// When the caller let go (`None`: still connected).
    done_at: Option<Instant>,
    /// The agent whose leg was ACKed, and when (ms).
    agent: Option<(String, u64)>,
}

/// What the load shares: where the nodes are, what has been seen, and the stop flags.
pub struct Load {
    /// When the load began (all times are ms since then).
    pub t0: Instant,
    /// Each node's SIP address, by index.
    pub sip: Vec<SocketAddr>,
    /// Each node's HTTP address, by index.
    pub http: Vec<SocketAddr>,
    /// Each node's RTP range, by index.
    pub rtp: Arc<Vec<(u16, u16)>>,
    /// Nodes the runner has killed or frozen right now (clients skip them, as a SIP client
    /// would skip a server that does not answer).
    pub down: Mutex<Vec<bool>>,
    /// Finished calls.
    pub calls: Mutex<Vec<CallRecord>>,
    /// Finished agent legs.
    pub legs: Mutex<Vec<AgentLeg>>,
    /// Violations seen while the run goes (an agent offered two calls, a call offered to two
    /// agents).
    pub violations: Mutex<Vec<Violation>>,
    /// Calls the callers hold, by Call-ID.
    live: Mutex<HashMap<String, LiveCall>>,
    /// Acked, unended agent legs by caller Call-ID: who holds each call.
    holders: Mutex<HashMap<String, String>>,
    /// Times an agent was found not ready and put back to ready.
    pub agent_recoveries: Mutex<u64>,
    /// Set when agents should log off once idle.
    pub stop_agents: AtomicBool,
    /// How long a caller keeps trying to hang up (re-INVITEs, retries) before the call
    /// counts as lost; also the failover window for the checks.
    pub failover_window: Duration,
}

impl Load {
    /// A load on nodes at `sip`/`http` with RTP ranges `rtp`.
    pub fn new(
        sip: Vec<SocketAddr>,
        http: Vec<SocketAddr>,
        rtp: Vec<(u16, u16)>,
        failover_window: Duration,
    ) -> Load {
        let n = sip.len();
        Load {
            t0: Instant::now(),
            sip,
            http,
            rtp: Arc::new(rtp),
            down: Mutex::new(vec![false; n]),
            calls: Mutex::new(Vec::new()),
            legs: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            agent_recoveries: Mutex::new(0),
            stop_agents: AtomicBool::new(false),
            failover_window,
        }
    }

    /// Milliseconds since the load began.
    pub fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// The node whose SIP socket is `a`.
    pub fn sip_node(&self, a: SocketAddr) -> Option<usize> {
        self.sip.iter().position(|s| *s == a)
    }

    /// `preferred` if it is up, else the next node up (any node if all are down).
    pub fn pick_up(&self, preferred: usize) -> usize {
        let down = self.down.lock().unwrap();
        let n = down.len();
        (0..n)
            .map(|k| (preferred + k) % n)
            .find(|i| !down[*i])
            .unwrap_or(preferred % n)
    }

    fn violation(&self, invariant: &'static str, detail: String) {
        let at = self.ms();
        self.violations
            .lock()
            .unwrap()
            .push(Violation::new(invariant, Some(at), None, detail));
    }
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// Sequence number.
    pub seq: u64,
    /// Why.
    pub kind: CallKind,
    /// Node index for the INVITE.
    pub entry: usize,
    /// Talk time once an agent answers.
    pub talk: Duration,
    /// How long the caller waits for an agent before hanging up (abandoning).
    pub patience: Duration,
    /// How long the INVITE may take.
    pub invite_timeout: Duration,
}

/// An SDP answer to `offer_msg` for `media` (first of PCMU/PCMA, plus telephone-event).
fn sdp_answer(offer_msg: &SipMsg, media: &Media) -> anyhow::Result<(String, SocketAddr)> {
    let offer = offer_msg
        .sdp()
        .ok_or_else(|| anyhow::anyhow!("no readable SDP in {}", offer_msg.summary()))?;
    let codec = offer
        .payload_types
        .iter()
        .copied()
        .find(|pt| matches!(offer.encoding(*pt).as_deref(), Some("PCMU" | "PCMA")))
        .ok_or_else(|| anyhow::anyhow!("no PCMU/PCMA offered in {}", offer_msg.summary()))?;
    let mut pts = vec![codec];
    if let Some(te) = offer.pt_of("telephone-event") {
        pts.push(te);
    }
    Ok((msg::build_sdp(media.local_addr(), &pts), offer.addr))
}

/// Answers the switch's re-INVITE `inv` in dialog `d` at once (200 with our SDP; its ACK is
/// absorbed later), points `d` and our media at the new owner. Returns the node that sent it.
async fn take_reinvite(
    load: &Load,
    ua: &mut TestUa,
    d: &mut Dialog,
    media: &Media,
    inv: &SipMsg,
) -> anyhow::Result<Option<usize>> {
    let (sdp, remote) = sdp_answer(inv, media)?;
    let contact = format!("Contact: <sip:{}@{}>", ua.user(), ua.local_addr());
    ua.respond(inv, 200, "OK", &[contact], Some(("application/sdp", &sdp)))
        .await?;
    if let Some(target) = inv.contact_uri() {
        d.target_addr = uri_addr(&target).unwrap_or(inv.source);
        d.remote_target = target;
    } else {
        d.target_addr = inv.source;
    }
    d.remote_sdp = inv.sdp();
    media.moved(remote);
    Ok(load.sip_node(inv.source))
}

/// Next message within `wait` (`None`: none came).
async fn next_msg(ua: &mut TestUa, wait: Duration) -> Option<SipMsg> {
    ua.wait_for("any message", wait, |_| true).await.ok()
}

/// Places one call and follows it to its end.
pub async fn place_call(load: Arc<Load>, plan: CallPlan) -> CallRecord {
    let prefix = match plan.kind {
        CallKind::Load => "c",
        CallKind::Probe => "p",
        CallKind::HealProbe => "h",
    };
    let mut rec = CallRecord {
        seq: plan.seq,
        kind: plan.kind,
        caller: format!("{prefix}{}", plan.seq),
        entry: plan.entry,
        placed_ms: load.ms(),
        status: None,
        call_id: None,
        answered_ms: None,
        agent: None,
        agent_answered_ms: None,
        reinvites: Vec::new(),
        end: CallEnd::NotAnswered,
        ended_ms: 0,
        media: CallMedia::default(),
        error: None,
    };
    if let Err(e) = follow_call(&load, &plan, &mut rec).await {
        rec.error = Some(format!("{e:#}"));
    }
    rec.ended_ms = load.ms();
    if let Some(cid) = &rec.call_id
        && let Some(l) = load.live.lock().unwrap().get_mut(cid)
    {
        l.done_at = Some(Instant::now());
        if let Some((agent, at)) = &l.agent {
            rec.agent = Some(agent.clone());
            rec.agent_answered_ms = Some(*at);
        }
    }
    rec
}

async fn follow_call(load: &Load, plan: &CallPlan, rec: &mut CallRecord) -> anyhow::Result<()> {
    let media = Media::bind(load.rtp.clone()).await?;
    let mut server = load.sip[plan.entry];
    let deadline = Instant::now() + plan.invite_timeout;
    let mut redirects = 0;
    let (mut ua, out) = loop {
        let mut ua = TestUa::new(&rec.caller, "", server).await?;
        ua.timeout = deadline.saturating_duration_since(Instant::now());
        let sdp = msg::build_sdp(media.local_addr(), &[0, 8, 101]);
        let out = ua.invite_with_sdp(QUEUE_EXT, &sdp).await?;
        // Placement: a loaded node sends the caller to a less loaded one (302 + Contact),
        // before the call arrives; follow it, as a SIP phone would.
        let target = out.response.contact_uri().and_then(|u| uri_addr(&u));
        match (out.response.status, target) {
            (Some(301 | 302), Some(t)) if redirects < 2 => {
                redirects += 1;
                server = t;
                if let Some(i) = load.sip_node(t) {
                    rec.entry = i;
                }
            }
            _ => break (ua, out),
        }
    };
    rec.status = out.response.status;
    rec.call_id = Some(out.response.call_id());
    let Some(mut d) = out.dialog else {
        return Ok(());
    };
    rec.answered_ms = Some(load.ms());
    load.live
        .lock()
        .unwrap()
        .insert(d.call_id.clone(), LiveCall::default());
    media.begin(d.remote_rtp()?);
    let result = converse(load, plan, rec, &mut ua, &mut d, &media).await;
    if let Some(m) = media.end() {
        rec.media = m;
    }
    result
}

/// The answered call: wait for an agent (or give up), talk, hang up; take re-INVITEs and a
/// BYE from the switch all along.
async fn converse(
    load: &Load,
    plan: &CallPlan,
    rec: &mut CallRecord,
    ua: &mut TestUa,
    d: &mut Dialog,
    media: &Media,
) -> anyhow::Result<()> {
    let cid = d.call_id.clone();
    let give_up = Instant::now()
        + if plan.kind == CallKind::Load {
            plan.patience
        } else {
            Duration::ZERO
        };
    let mut hang_up_at: Option<Instant> = None;
    loop {
        if hang_up_at.is_none() && plan.kind == CallKind::Load {
            let answered = load
                .live
                .lock()
                .unwrap()
                .get(&cid)
                .is_some_and(|l| l.agent.is_some());
            if answered {
                hang_up_at = Some(Instant::now() + plan.talk);
            }
        }
        let until = hang_up_at.unwrap_or(give_up);
        let now = Instant::now();
        if now >= until {
            break;
        }
        let wait = (until - now).min(Duration::from_millis(250));
        let Some(m) = next_msg(ua, wait).await else {
            continue;
        };
        if handle_in_call(load, rec, ua, d, media, &m).await? {
            return Ok(());
        }
    }
    // Hang up: the caller stops its audio and expects none from here on. A failover may be
    // under way, so keep taking re-INVITEs and retrying until the failover window is over.
    if let Some(m) = media.end() {
        rec.media = m;
    }
    let deadline = Instant::now() + load.failover_window;
    ua.timeout = Duration::from_secs(4);
    let mut last = String::new();
    let mut unanswered = 0;
    while Instant::now() < deadline {
        match ua.bye(d).await {
            Ok(r) if r.status == Some(200) => {
                rec.end = CallEnd::CallerBye;
                return Ok(());
            }
            Ok(r) if r.status == Some(481) && unanswered > 0 => {
                rec.end = CallEnd::ByeUnconfirmed(format!(
                    "{unanswered} BYE(s) went unanswered, then one was answered 481"
                ));
                return Ok(());
            }
            Ok(r) => last = format!("BYE answered {}", r.status.unwrap_or(0)),
            Err(e) => {
                unanswered += 1;
                last = format!("BYE: {}", first_line(&format!("{e}")));
            }
        }
        // Whatever came meanwhile (a re-INVITE from the new owner, its BYE).
        let settle = Instant::now() + Duration::from_millis(500);
        while let Some(m) = next_msg(ua, settle.saturating_duration_since(Instant::now())).await {
            if handle_in_call(load, rec, ua, d, media, &m).await? {
                return Ok(());
            }
        }
    }
    rec.end = CallEnd::ByeFailed(last);
    Ok(())
}

/// One message during a call; returns true when the switch ended the call.
async fn handle_in_call(
    load: &Load,
    rec: &mut CallRecord,
    ua: &mut TestUa,
    d: &mut Dialog,
    media: &Media,
    m: &SipMsg,
) -> anyhow::Result<bool> {
    let ours = m.call_id() == d.call_id;
    if m.is_request("INVITE") && ours && m.to_tag().is_some() {
        let node = take_reinvite(load, ua, d, media, m).await?;
        rec.reinvites.push((load.ms(), node));
    } else if m.is_request("BYE") && ours {
        ua.respond(m, 200, "OK", &[], None).await?;
        rec.end = CallEnd::SwitchBye;
        return Ok(true);
    } else if m.method.is_some() && !m.is_request("ACK") {
        let (code, reason) = if ours {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        ua.respond(m, code, reason, &[], None).await?;
    }
    Ok(false)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// One agent leg while it lasts.
struct Leg {
    /// Record being filled.
    rec: AgentLeg,
    /// The INVITE that opened it (for 487 on CANCEL).
    invite: SipMsg,
    /// Our side of the dialog.
    dialog: Dialog,
}

/// Agent `id` registered through node `node`: answers every offer, takes re-INVITEs, until
/// `stop_agents` is set and it is idle.
pub async fn run_agent(load: Arc<Load>, id: String, node: usize, seed: u64) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ua = TestUa::new(&id, &format!("pass{id}"), load.sip[node]).await?;
    ua.timeout = Duration::from_secs(4);
    // A new agent may not be applied on this node yet: retry for a while.
    let mut tries = 0;
    loop {
        tries += 1;
        let r = ua.register().await;
        match r {
            Ok(reg) if reg.status == Some(200) => break,
            Ok(reg) if tries >= 30 => anyhow::bail!("REGISTER {id} answered {}", reg.raw),
            Err(e) if tries >= 30 => return Err(e.context(format!("REGISTER {id}"))),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let mut registered_at = Instant::now();
    let media = Media::bind(load.rtp.clone()).await?;
    let mut leg: Option<Leg> = None;
    let mut next_check = Instant::now() + Duration::from_secs(5);
    loop {
        if load.stop_agents.load(Ordering::Relaxed) && leg.is_none() {
            let _ = ua.unregister().await;
            return Ok(());
        }
        // The caller let go long ago and nobody ended our leg: hang up ourselves.
        if let Some(l) = &leg {
            let stale = load
                .live
                .lock()
                .unwrap()
                .get(&l.rec.a_call)
                .and_then(|c| c.done_at)
                .is_some_and(|t| t.elapsed() > Duration::from_secs(15));
            let stopping =
                load.stop_agents.load(Ordering::Relaxed) && load.ms() > l.rec.offered_ms + 120_000;
            if stale || stopping {
                let mut l = leg.take().expect("checked");
                if l.rec.acked_ms.is_some() {
                    let _ = ua.bye(&mut l.dialog).await;
                }
                finish_leg(&load, &media, l, if stale { "cleanup" } else { "stop" });
            }
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_secs(10);
            if leg.is_none() {
                // Registrations last 600 s: refresh well before, for long runs.
                if registered_at.elapsed() > Duration::from_secs(240)
                    && matches!(ua.register().await, Ok(r) if r.status == Some(200))
                {
                    registered_at = Instant::now();
                }
                recover_agent(&load, &id).await;
            }
        }
        let Some(m) = next_msg(&mut ua, Duration::from_millis(250)).await else {
            continue;
        };
        if m.is_request("INVITE") && m.to_tag().is_none() {
            let a_call = m
                .header("x-lingxi-call")
                .map(str::to_string)
                .unwrap_or_else(|| m.call_id());
            if let Some(old) = leg.take() {
                let caller_live = load
                    .live
                    .lock()
                    .unwrap()
                    .get(&old.rec.a_call)
                    .is_some_and(|c| c.done_at.is_none());
                if old.rec.acked_ms.is_some() && caller_live && old.rec.a_call != a_call {
                    load.violation(
                        "single_offer",
                        format!(
                            "agent {id} was offered call {a_call} while talking on {} (its caller still connected)",
                            old.rec.a_call
                        ),
                    );
                }
                finish_leg(&load, &media, old, "replaced");
            }
            if let Some(holder) = load.holders.lock().unwrap().get(&a_call)
                && *holder != id
            {
                load.violation(
                    "single_offer",
                    format!("call {a_call} offered to agent {id} while agent {holder} holds it"),
                );
            }
            ua.ring(&m).await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            let (sdp, remote) = match sdp_answer(&m, &media) {
                Ok(x) => x,
                Err(_) => {
                    ua.respond(&m, 488, "Not Acceptable Here", &[], None)
                        .await?;
                    continue;
                }
            };
            let contact = format!("Contact: <sip:{id}@{}>", ua.local_addr());
            ua.respond(&m, 200, "OK", &[contact], Some(("application/sdp", &sdp)))
                .await?;
            let remote_target = m.contact_uri().unwrap_or_default();
            let dialog = Dialog {
                call_id: m.call_id(),
                local_tag: String::new(),
                remote_tag: m.from_tag().unwrap_or_default(),
                local_uri: msg::uri_of(m.header("to").unwrap_or_default()),
                remote_uri: msg::uri_of(m.header("from").unwrap_or_default()),
                target_addr: uri_addr(&remote_target).unwrap_or(m.source),
                remote_target,
                local_cseq: 0,
                invite_cseq: m.cseq().0,
                remote_sdp: m.sdp(),
                we_called: false,
            };
            media.begin(remote);
            leg = Some(Leg {
                rec: AgentLeg {
                    agent: id.clone(),
                    a_call,
                    b_call: m.call_id(),
                    offered_ms: load.ms(),
                    acked_ms: None,
                    reinvites: Vec::new(),
                    ended_by: "",
                    ended_ms: 0,
                    media: CallMedia::default(),
                },
                invite: m,
                dialog,
            });
            continue;
        }
        let mine = leg.as_ref().is_some_and(|l| l.rec.b_call == m.call_id());
        if m.is_request("ACK") {
            if mine {
                let l = leg.as_mut().expect("mine");
                acked(&load, l);
            }
        } else if m.is_request("INVITE") {
            if mine {
                let l = leg.as_mut().expect("mine");
                // A re-INVITE also proves the switch took our 200 (its ACK may have died
                // with the old owner).
                acked(&load, l);
                let node = take_reinvite(&load, &mut ua, &mut l.dialog, &media, &m).await?;
                l.rec.reinvites.push((load.ms(), node));
            } else {
                ua.respond(&m, 481, "Call/Transaction Does Not Exist", &[], None)
                    .await?;
            }
        } else if m.is_request("BYE") {
            ua.respond(&m, 200, "OK", &[], None).await?;
            if mine {
                finish_leg(&load, &media, leg.take().expect("mine"), "bye");
            }
        } else if m.is_request("CANCEL") {
            ua.respond(&m, 200, "OK", &[], None).await?;
            if leg
                .as_ref()
                .is_some_and(|l| l.invite.branch() == m.branch() && l.rec.acked_ms.is_none())
            {
                let l = leg.take().expect("checked");
                ua.respond(&l.invite, 487, "Request Terminated", &[], None)
                    .await?;
                finish_leg(&load, &media, l, "cancel");
            }
        } else if m.method.is_some() {
            ua.respond(&m, 200, "OK", &[], None).await?;
        }
    }
}

/// The switch acknowledged our answer: the caller can start its talk time.
fn acked(load: &Load, l: &mut Leg) {
    if l.rec.acked_ms.is_some() {
        return;
    }
    let now = load.ms();
    l.rec.acked_ms = Some(now);
    if let Some(c) = load.live.lock().unwrap().get_mut(&l.rec.a_call) {
        c.agent = Some((l.rec.agent.clone(), now));
    }
    load.holders
        .lock()
        .unwrap()
        .insert(l.rec.a_call.clone(), l.rec.agent.clone());
}

fn finish_leg(load: &Load, media: &Media, mut l: Leg, how: &'static str) {
    l.rec.ended_by = how;
    l.rec.ended_ms = load.ms();
    l.rec.media = media.end().unwrap_or_default();
    {
        let mut h = load.holders.lock().unwrap();
        if h.get(&l.rec.a_call) == Some(&l.rec.agent) {
            h.remove(&l.rec.a_call);
        }
    }
    load.legs.lock().unwrap().push(l.rec);
}

/// An idle agent the switch left not ready (e.g. after an offer died with its node) is put
/// back to ready, as a person would press the button; counted in the report.
async fn recover_agent(load: &Load, id: &str) {
    let node = load.pick_up(0);
    let path = format!("/api/v1/agents/{id}");
    let Ok(Ok((200, body))) = tokio::time::timeout(
        Duration::from_secs(2),
        lingxi_tests::node::http_request(load.http[node], "GET", &path, None),
    )
    .await
    else {
        return;
    };
    let state = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string))
        .unwrap_or_default();
    if state == "not_ready" || state == "logged_out" {
        let body = br#"{"state":"ready"}"#;
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            lingxi_tests::node::http_request(
                load.http[node],
                "PUT",
                &format!("{path}/state"),
                Some(("application/json", body)),
            ),
        )
        .await;
        if matches!(r, Ok(Ok((200, _)))) {
            *load.agent_recoveries.lock().unwrap() += 1;
        }
    }
}
