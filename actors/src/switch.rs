//! The switch: shared context of all actors, the SIP dispatcher (the transaction user) and the
//! pump that turns applied log entries into messages for queue and agent actors.

use crate::agent::{AgentActor, AgentMsg};
use crate::call::{CallActor, CallArgs, CallMsg};
use crate::error::ActorError;
use crate::queue::{QueueActor, QueueMsg};
use crate::sip::auth::{self, NonceKeeper};
use crate::sip::message::{self, response_for};
use crate::sip::transaction::{Endpoint, Incoming, TransactionUser};
use crate::supervisor::{CallSupMsg, CallSupervisor, RestartingSupervisor, SupMsg};
use dashmap::DashMap;
use lingxi_cluster::model::{AgentState, Overflow, QueueSpec};
use lingxi_cluster::{Command, Event, Log};
use lingxi_config::{Config, OverflowAction};
use lingxi_media::MediaEngine;
use ractor::{Actor, ActorRef};
use rsip::Header;
use rsip::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Wall-clock milliseconds for timestamps in commands and CDRs, steady across system clock
/// jumps (see [`crate::clock`]); logic timers use tokio time.
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}

/// Everything the actors of one node share.
pub struct Switch {
    /// This node's id (owner of its calls, prefix of its actor names).
    pub(crate) node_id: String,
    /// The node's configuration.
    pub(crate) config: Arc<Config>,
    /// Where state changes are proposed and applied state read.
    pub(crate) log: Log,
    /// RTP ports and relays.
    pub(crate) media: MediaEngine,
    /// The SIP transaction layer; set once the transports are bound.
    endpoint: OnceLock<Endpoint>,
    /// Live call actors by SIP Call-ID (both legs' Call-IDs point at the call's actor).
    pub(crate) calls: DashMap<String, ActorRef<CallMsg>>,
    /// Queue actors by queue id.
    pub(crate) queues: DashMap<String, (ActorRef<QueueMsg>, Arc<AtomicBool>)>,
    /// Agent actors by agent id.
    pub(crate) agents: DashMap<String, ActorRef<AgentMsg>>,
    /// Issues and checks digest nonces for REGISTER.
    pub(crate) nonces: NonceKeeper,
    /// Supervisor of the call actors.
    call_sup: OnceLock<ActorRef<CallSupMsg>>,
    /// Supervisor of queue and agent actors (restarts them: their state is in the log).
    member_sup: OnceLock<ActorRef<SupMsg>>,
    /// Set while this node is cut off from the majority: it serves no calls.
    pub(crate) fenced: AtomicBool,
    /// How many times this node was fenced: a resumption that saw it change was cut short
    /// by a fence, not refused by its call.
    pub(crate) fence_epoch: std::sync::atomic::AtomicU64,
    /// Calls being resumed here now (one attempt per call at a time).
    resuming: dashmap::DashSet<String>,
    /// SIP UDP, SIP TCP and HTTP addresses, for re-announcing after a cut.
    pub(crate) addresses: parking_lot::Mutex<(
        Option<std::net::SocketAddr>,
        Option<std::net::SocketAddr>,
        Option<std::net::SocketAddr>,
    )>,
    /// Where new callers should go instead (a less loaded live member), when placement says so.
    pub(crate) redirect_to: parking_lot::Mutex<Option<std::net::SocketAddr>>,
    /// Calls other nodes ended lately with legs still to hang up, oldest first: if the owner
    /// is declared dead just after, it may have died before sending those BYEs (see
    /// [`hang_up_for_the_dead`]).
    recent_ends: parking_lot::Mutex<std::collections::VecDeque<RecentEnd>>,
    /// Agents' legs of ended calls this process is hanging up now, as (agent, call id)
    /// (see [`crate::call::release_agent_leg`]): one BYE at a time per leg from here.
    pub(crate) releasing: dashmap::DashSet<(String, String)>,
    /// Serializes starting queue and agent actors (start-up and the pump both may ask).
    spawn_lock: tokio::sync::Mutex<()>,
    /// Set when the node begins to shut down: new calls get 503.
    shutting_down: AtomicBool,
    /// Cancelled when the switch stops.
    pub(crate) shutdown: CancellationToken,
    /// Lets tests make a call actor panic (`debug.fault_injection`).
    pub(crate) fault_injection: bool,
}

impl Switch {
    /// Starts the switch's supervisors and actors and provisions the configured queues and
    /// agents into the log. SIP traffic flows once [`Switch::attach_endpoint`] is called.
    pub async fn start(
        config: Arc<Config>,
        log: Log,
        media: MediaEngine,
        fault_injection: bool,
    ) -> Result<Arc<Switch>, ActorError> {
        let sw = Arc::new(Switch {
            node_id: config.node.id.clone(),
            config: config.clone(),
            log,
            media,
            endpoint: OnceLock::new(),
            calls: DashMap::new(),
            queues: DashMap::new(),
            agents: DashMap::new(),
            nonces: NonceKeeper::random(),
            call_sup: OnceLock::new(),
            member_sup: OnceLock::new(),
            spawn_lock: tokio::sync::Mutex::new(()),
            fenced: AtomicBool::new(false),
            fence_epoch: std::sync::atomic::AtomicU64::new(0),
            resuming: dashmap::DashSet::new(),
            redirect_to: parking_lot::Mutex::new(None),
            recent_ends: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            releasing: dashmap::DashSet::new(),
            addresses: parking_lot::Mutex::new((None, None, None)),
            shutting_down: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            fault_injection,
        });
        let (call_sup, _) = Actor::spawn(
            Some(format!("{}/calls", sw.node_id)),
            CallSupervisor,
            sw.clone(),
        )
        .await
        .map_err(|e| ActorError::Actor {
            actor: "call supervisor".into(),
            detail: e.to_string(),
        })?;
        let _ = sw.call_sup.set(call_sup);
        let (member_sup, _) = Actor::spawn(
            Some(format!("{}/members", sw.node_id)),
            RestartingSupervisor,
            sw.clone(),
        )
        .await
        .map_err(|e| ActorError::Actor {
            actor: "member supervisor".into(),
            detail: e.to_string(),
        })?;
        let _ = sw.member_sup.set(member_sup);
        tokio::spawn(pump(sw.clone(), sw.log.subscribe()));
        tokio::spawn(release_forgotten_agent_legs(sw.clone()));
        tokio::spawn(crate::membership::watch(sw.clone()));
        sw.provision().await?;
        let (queues, agents): (Vec<String>, Vec<String>) = sw.log.read(|sm| {
            (
                sm.queues().keys().cloned().collect(),
                sm.agents().keys().cloned().collect(),
            )
        });
        for q in queues {
            sw.ensure_queue(&q).await;
        }
        for a in agents {
            sw.ensure_agent(&a).await;
        }
        Ok(sw)
    }

    /// Proposes a command a call cannot do without (queued, answered, ended...): retries
    /// while the cluster has no leader or quorum, for up to 30 s (see [`Switch::propose_within`]).
    pub(crate) async fn propose_firmly(
        &self,
        cmd: Command,
    ) -> Result<Vec<Event>, lingxi_cluster::ClusterError> {
        self.propose_within(cmd, Duration::from_secs(30), true)
            .await
    }

    /// Proposes `cmd`, retrying with backoff while the error is retryable (no leader, no
    /// quorum) and `within` has not passed. If a retry is refused after an attempt timed out,
    /// the timed-out attempt is taken to have committed after all (the refusal says the state
    /// already moved that way). With `stop_when_fenced`, a fenced node gives up at once.
    async fn propose_within(
        &self,
        cmd: Command,
        within: Duration,
        stop_when_fenced: bool,
    ) -> Result<Vec<Event>, lingxi_cluster::ClusterError> {
        let mut wait = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + within;
        let mut timed_out_before = false;
        loop {
            match self.log.propose(cmd.clone()).await {
                Ok(ev) => return Ok(ev),
                // A fenced node stops trying: its calls are moving, and its actors must get
                // to the fence instead of waiting here.
                Err(e)
                    if e.is_retryable()
                        && tokio::time::Instant::now() < deadline
                        && !(stop_when_fenced && self.is_fenced()) =>
                {
                    tracing::info!(command = cmd.kind(), error = %e, "not committed yet; retrying");
                    timed_out_before = true;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) if timed_out_before && !e.is_retryable() => {
                    tracing::info!(command = cmd.kind(), error = %e, "refused on retry: the earlier attempt committed");
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Proposes a start-up command, retrying for up to a minute, so a node does not die
    /// because an election was under way.
    async fn propose_at_start(&self, cmd: Command) -> Result<(), ActorError> {
        self.propose_within(cmd, Duration::from_secs(60), false)
            .await?;
        Ok(())
    }

    /// Proposes the configured queues and agents where the log's copy differs.
    async fn provision(&self) -> Result<(), ActorError> {
        for q in &self.config.queues {
            let spec = queue_spec(&self.config, q);
            if self.log.read(|sm| sm.queues().get(&spec.id) != Some(&spec)) {
                self.propose_at_start(Command::UpsertQueue(spec)).await?;
            }
        }
        for a in &self.config.agents {
            let ha1 = auth::ha1(&a.id, &self.config.sip.realm, &a.password);
            let same = self.log.read(|sm| {
                sm.agent_by_id(&a.id)
                    .is_some_and(|x| x.ha1 == ha1 && x.name == a.name && x.skills == a.skills)
            });
            if !same {
                self.propose_at_start(Command::UpsertAgent {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    ha1,
                    skills: a.skills.clone(),
                    at_ms: now_ms(),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Connects the SIP transaction layer; from now on requests are served.
    pub fn attach_endpoint(self: &Arc<Self>, endpoint: Endpoint) {
        let _ = self.endpoint.set(endpoint);
        if self.log.as_raft().is_none() {
            // Alone, every live call in the restored state was this node's: take them back.
            tokio::spawn(self.clone().resume_orphans());
        }
    }

    /// Resumes the calls the state says this node owns but no actor here runs: after a
    /// restart (the process died mid-call) the legs are re-INVITEd to fresh media.
    pub async fn resume_orphans(self: Arc<Self>) {
        let mine: Vec<String> = self.log.read(|sm| {
            sm.calls()
                .values()
                .filter(|c| c.owner == self.node_id)
                .map(|c| c.call_id.clone())
                .collect()
        });
        for call_id in mine {
            if self.calls.contains_key(&call_id) {
                continue;
            }
            let sw = self.clone();
            tokio::spawn(async move {
                let cmd = Command::CallResumed {
                    call_id: call_id.clone(),
                    owner: sw.node_id.clone(),
                };
                if let Err(e) = sw.propose_firmly(cmd).await {
                    tracing::warn!(call_id, error = %e, "cannot take back the call");
                    return;
                }
                sw.resume_call(&call_id).await;
            });
        }
    }

    /// The transaction user to hand to [`Endpoint::new`].
    pub fn transaction_user(self: &Arc<Self>) -> Arc<dyn TransactionUser> {
        Arc::new(Dispatcher {
            sw: Arc::downgrade(self),
        })
    }

    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.get()
    }

    /// The replicated log (for the HTTP API's reads and writes).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of live call actors on this node.
    pub fn live_calls(&self) -> usize {
        self.call_sup.get().map_or(0, |s| s.get_children().len())
    }

    /// Changes an agent's state on a person's request (API), through the agent's actor.
    pub async fn set_agent_state(
        &self,
        agent: &str,
        state: AgentState,
        reason: Option<String>,
    ) -> Result<(), ActorError> {
        let actor =
            self.agents
                .get(agent)
                .map(|a| a.clone())
                .ok_or_else(|| ActorError::NotFound {
                    what: format!("agent {agent}"),
                })?;
        let res =
            ractor::call_t!(actor, AgentMsg::SetState, 5_000, state, reason).map_err(|e| {
                ActorError::Actor {
                    actor: format!("agent {agent}"),
                    detail: e.to_string(),
                }
            })?;
        res.map_err(ActorError::from)
    }

    /// Test hook (only with `debug.fault_injection`): makes the call's actor panic.
    pub fn inject_call_panic(&self, call_id: &str) -> bool {
        if !self.fault_injection {
            return false;
        }
        match self.calls.get(call_id) {
            Some(a) => a.cast(CallMsg::Fault).is_ok(),
            None => false,
        }
    }

    /// Starts an actor for a queue the log knows, if none runs yet.
    pub async fn ensure_queue(self: &Arc<Self>, id: &str) {
        let _guard = self.spawn_lock.lock().await;
        if self.queues.contains_key(id) {
            return;
        }
        let Some(sup) = self.member_sup.get() else {
            return;
        };
        let kick = Arc::new(AtomicBool::new(false));
        let name = format!("{}/queue/{id}", self.node_id);
        match Actor::spawn_linked(
            Some(name),
            QueueActor,
            (self.clone(), id.to_string()),
            sup.get_cell(),
        )
        .await
        {
            Ok((actor, _)) => {
                self.queues.insert(id.to_string(), (actor, kick));
                self.kick_queue(id);
            }
            Err(e) => tracing::warn!(queue = id, error = %e, "queue actor did not start"),
        }
    }

    /// Starts an actor for an agent the log knows, if none runs yet.
    pub async fn ensure_agent(self: &Arc<Self>, id: &str) {
        let _guard = self.spawn_lock.lock().await;
        if self.agents.contains_key(id) {
            return;
        }
        let Some(sup) = self.member_sup.get() else {
            return;
        };
        let name = format!("{}/agent/{id}", self.node_id);
        match Actor::spawn_linked(
            Some(name),
            AgentActor,
            (self.clone(), id.to_string()),
            sup.get_cell(),
        )
        .await
        {
            Ok((actor, _)) => {
                self.agents.insert(id.to_string(), actor);
            }
            Err(e) => tracing::warn!(agent = id, error = %e, "agent actor did not start"),
        }
    }

    /// Asks a queue to look for agents for its waiting calls (coalesced: one pending kick).
    pub(crate) fn kick_queue(&self, id: &str) {
        if let Some(entry) = self.queues.get(id) {
            let (actor, pending) = entry.value();
            if !pending.swap(true, Ordering::AcqRel) {
                let _ = actor.cast(QueueMsg::Kick);
            }
        }
    }

    /// Whether this node is the first live cluster member by name, leaving `but` out: the one
    /// survivor that finishes what a dead or forgetful node left. A node alone (no members
    /// on the record) is.
    pub(crate) fn is_first_live_member(&self, but: &str) -> bool {
        self.log.read(|sm| {
            sm.members()
                .values()
                .find(|m| m.alive && m.node != but)
                .is_none_or(|m| m.node == self.node_id)
        })
    }

    /// Whether the node is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Graceful stop: refuses new calls, ends every live call with BYE to both legs
    /// (outcome `switch.shutdown`), waits up to `grace` for them to finish, flushes the log.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let actors: Vec<ActorRef<CallMsg>> = {
            let mut v: Vec<ActorRef<CallMsg>> =
                self.calls.iter().map(|e| e.value().clone()).collect();
            v.sort_by_key(|a| a.get_id());
            v.dedup_by_key(|a| a.get_id());
            v
        };
        for a in &actors {
            let _ = a.cast(CallMsg::Hangup {
                outcome: "switch.shutdown".into(),
            });
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.live_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shutdown.cancel();
        for sup in [
            self.call_sup.get().map(|a| a.get_cell()),
            self.member_sup.get().map(|a| a.get_cell()),
        ]
        .into_iter()
        .flatten()
        {
            sup.stop_children(Some("shutdown".into()));
            sup.stop(Some("shutdown".into()));
        }
        if let Err(e) = self.log.flush() {
            tracing::error!(error = %e, "flushing state at shutdown failed");
        }
    }

    /// Resumes a call this node took over from a dead one (re-INVITEs both legs). A fence
    /// that cuts the attempt short does not end the call: it is still this node's, and is
    /// tried again once the node is back in touch (here, or by [`Switch::resume_orphans`]).
    async fn resume_call(self: Arc<Self>, call_id: &str) {
        for _ in 0..RESUME_ATTEMPTS {
            if !self.resuming.insert(call_id.to_string()) {
                return; // another task is resuming it
            }
            let epoch = self.fence_epoch.load(Ordering::Acquire);
            let outcome = self.clone().resume_once(call_id).await;
            self.resuming.remove(call_id);
            match outcome {
                Resumption::Done => return,
                Resumption::Failed
                    if self.fence_epoch.load(Ordering::Acquire) == epoch && !self.is_fenced() =>
                {
                    crate::call::end_call_from_record(&self, call_id, "failover.failed").await;
                    return;
                }
                // Cut short by a fence. Still fenced: the unfencing takes the orphans back
                // (this call among them: no actor, not being resumed). Back already: that
                // hunt may have passed this call by while this attempt ran, so try again.
                Resumption::Failed if self.is_fenced() => {
                    tracing::info!(
                        call_id,
                        "resuming cut short by a fence; taken back once in touch again"
                    );
                    return;
                }
                Resumption::Failed => {
                    tracing::info!(
                        call_id,
                        "resuming cut short by a fence that has passed; trying again"
                    );
                }
            }
        }
        tracing::warn!(
            call_id,
            attempts = RESUME_ATTEMPTS,
            "resuming kept being cut short; ending the call"
        );
        crate::call::end_call_from_record(&self, call_id, "failover.failed").await;
    }

    /// One attempt at [`Switch::resume_call`].
    async fn resume_once(self: Arc<Self>, call_id: &str) -> Resumption {
        let Some(record) = self.log.read(|sm| sm.call(call_id).cloned()) else {
            return Resumption::Done;
        };
        // The record may have moved on since the event (another NodeDown applied in the same
        // catch-up), and a fenced node serves nothing: only the current owner resumes, once.
        if record.owner != self.node_id || self.is_fenced() || self.calls.contains_key(call_id) {
            tracing::debug!(call_id, owner = %record.owner, "not resuming: not ours (any more), fenced, or running");
            return Resumption::Done;
        }
        // A call whose owner stopped before its `CallQueued` committed has no queue yet: it
        // goes where its number routes it, as it would have.
        let queue = self.log.read(|sm| {
            match &record.queue {
                Some(q) => sm.queues().get(q),
                None => sm.queue_for_user(&record.called),
            }
            .cloned()
        });
        let Some(queue) = queue else {
            tracing::warn!(call_id, queue = ?record.queue, called = %record.called, "taken-over call has no queue to go to; ending it");
            crate::call::end_call_from_record(&self, call_id, "failover.failed").await;
            return Resumption::Done;
        };
        let Some(sup) = self.call_sup.get() else {
            return Resumption::Done;
        };
        tracing::info!(
            call_id,
            from_phase = record.phase.as_str(),
            "resuming a call from a dead node"
        );
        let args = CallArgs::Resume {
            sw: self.clone(),
            record: Box::new(record),
            queue,
        };
        match Actor::spawn_linked(None, CallActor, args, sup.get_cell()).await {
            Ok(_) => Resumption::Done,
            Err(e) => {
                tracing::warn!(call_id, error = %e, "resuming failed");
                Resumption::Failed
            }
        }
    }

    /// Spawns a call actor for a new INVITE (supervised: a failure ends only that call).
    async fn new_call(
        self: Arc<Self>,
        request: rsip::Request,
        source: crate::sip::transaction::Peer,
        tx: crate::sip::transaction::ServerTransaction,
    ) {
        let user = request
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let queue = self.log.read(|sm| sm.queue_for_user(&user).cloned());
        let Some(queue) = queue else {
            let _ = tx.respond(response_for(
                &request,
                404,
                Some(&format!("No queue or number {user}")),
                None,
            ));
            return;
        };
        let Some(sup) = self.call_sup.get() else {
            return;
        };
        let args = CallArgs::New {
            sw: self.clone(),
            invite: request,
            source,
            tx,
            queue,
        };
        if let Err(e) = Actor::spawn_linked(None, CallActor, args, sup.get_cell()).await {
            tracing::debug!(error = %e, "call not started (refused or failed during set-up)");
        }
    }
}

/// Attempts at resuming one call that fences may cut short before it is given up.
const RESUME_ATTEMPTS: usize = 3;

/// How one attempt at resuming a call went.
enum Resumption {
    /// Resumed, ended, or not this node's to resume.
    Done,
    /// The call actor did not start (a leg refused its re-INVITE, or its dialogs could not
    /// be stored).
    Failed,
}

/// The transaction user: routes every incoming request to the actor that owns it.
struct Dispatcher {
    /// Weak, so the endpoint (held by the transports) does not keep a stopped switch alive.
    sw: std::sync::Weak<Switch>,
}

impl TransactionUser for Dispatcher {
    fn on_incoming(&self, incoming: Incoming) {
        let Some(sw) = self.sw.upgrade() else { return };
        match incoming {
            Incoming::Request {
                request,
                source,
                tx,
            } => sw.on_request(request, source, tx),
            Incoming::Ack { request, source } => {
                if let Some(actor) = message::call_id(&request)
                    .ok()
                    .and_then(|id| sw.calls.get(&id).map(|a| a.clone()))
                {
                    let _ = actor.cast(CallMsg::Sip(Incoming::Ack { request, source }));
                }
            }
            Incoming::Cancel {
                request,
                source,
                invite,
            } => {
                match message::call_id(&request)
                    .ok()
                    .and_then(|id| sw.calls.get(&id).map(|a| a.clone()))
                {
                    Some(actor) => {
                        let _ = actor.cast(CallMsg::Sip(Incoming::Cancel {
                            request,
                            source,
                            invite,
                        }));
                    }
                    None => {
                        let _ = invite.respond(response_for(invite.request(), 487, None, None));
                    }
                }
            }
            Incoming::AckTimeout { call_id, cseq } => {
                if let Some(actor) = sw.calls.get(&call_id).map(|a| a.clone()) {
                    let _ = actor.cast(CallMsg::Sip(Incoming::AckTimeout { call_id, cseq }));
                }
            }
        }
    }
}

/// Methods this switch understands, for Allow headers and 405 answers.
pub(crate) const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY";

impl Switch {
    fn on_request(
        self: Arc<Self>,
        request: rsip::Request,
        source: crate::sip::transaction::Peer,
        tx: crate::sip::transaction::ServerTransaction,
    ) {
        let in_dialog = message::to_tag(&request).is_some();
        let call = message::call_id(&request)
            .ok()
            .and_then(|id| self.calls.get(&id).map(|a| a.clone()));
        if let Some(actor) = call {
            // Any request for a live call's Call-ID belongs to its actor (BYE, re-INVITE, INFO...).
            if let Err(e) = actor.cast(CallMsg::Sip(Incoming::Request {
                request,
                source,
                tx: tx.clone(),
            })) {
                tracing::warn!(error = %e, "call actor gone");
                let _ = tx.respond(response_for(tx.request(), 481, None, None));
            }
            return;
        }
        match request.method {
            rsip::Method::Register => {
                let user = to_user(&request).unwrap_or_default();
                match self.agents.get(&user).map(|a| a.clone()) {
                    Some(agent) => {
                        let _ = agent.cast(AgentMsg::Register {
                            request,
                            source,
                            tx,
                        });
                    }
                    None => {
                        let _ = tx.respond(response_for(
                            &request,
                            404,
                            Some(&format!("No agent {user}")),
                            None,
                        ));
                    }
                }
            }
            rsip::Method::Options => {
                let mut resp = response_for(&request, 200, None, Some(&message::new_tag()));
                resp.headers
                    .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
                resp.headers.push(Header::Accept(rsip::headers::Accept::new(
                    "application/sdp",
                )));
                let _ = tx.respond(resp);
            }
            rsip::Method::Invite if !in_dialog => {
                if self.is_shutting_down() {
                    let _ = tx.respond(response_for(&request, 503, Some("Shutting down"), None));
                    return;
                }
                let max = self.config.acd.max_calls;
                if max > 0 && self.live_calls() >= max {
                    metrics::counter!("lingxi_calls_refused_total", "reason" => "overload")
                        .increment(1);
                    let _ = tx.respond(message::retry_later(&request, "Switch at capacity", 5));
                    return;
                }
                if let Some(target) = *self.redirect_to.lock() {
                    // Placement: a less loaded member takes this caller (RFC 3261 §21.3.3).
                    let user = request
                        .uri
                        .auth
                        .as_ref()
                        .map(|a| a.user.clone())
                        .unwrap_or_default();
                    let mut r = response_for(&request, 302, None, None);
                    r.headers
                        .push(Header::Contact(rsip::headers::Contact::new(format!(
                            "<sip:{user}@{target}>"
                        ))));
                    metrics::counter!("lingxi_calls_redirected_total").increment(1);
                    let _ = tx.respond(r);
                    return;
                }
                if self.is_fenced() {
                    let _ = tx.respond(response_for(
                        &request,
                        503,
                        Some("Node cut off from the cluster majority"),
                        None,
                    ));
                    return;
                }
                tokio::spawn(self.new_call(request, source, tx));
            }
            rsip::Method::Invite
            | rsip::Method::Bye
            | rsip::Method::Update
            | rsip::Method::Info => {
                // No actor here, but the replicated record still holds the call: it is being
                // resumed (on this node once back in touch, or on another). A 481 would end
                // the dialog at the phone, and a hang-up with it; 503 asks for the request
                // again, and a retry reaches whoever serves the call by then.
                let call_id = message::call_id(&request).unwrap_or_default();
                let live = self.log.read(|sm| {
                    sm.call(&call_id).is_some()
                        || sm
                            .calls()
                            .values()
                            .any(|c| c.b_leg.as_ref().is_some_and(|b| b.call_id == call_id))
                });
                let resp = if live {
                    message::retry_later(&request, "Call being resumed on another node; retry", 1)
                } else {
                    response_for(&request, 481, None, None)
                };
                let _ = tx.respond(resp);
            }
            _ => {
                let mut resp = response_for(&request, 405, None, None);
                resp.headers
                    .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
                let _ = tx.respond(resp);
            }
        }
    }
}

/// How long a call another node ended is remembered in case its owner turns out dead.
const RECENT_ENDS_KEPT: Duration = Duration::from_secs(10);

/// A call another node ended, as [`Event::CallLegsToHangUp`] told this node.
struct RecentEnd {
    /// When this node applied the end.
    applied: tokio::time::Instant,
    /// The node that ended it (and should send the BYEs).
    owner: String,
    /// The call.
    call_id: String,
    /// The legs still to hang up.
    legs: Vec<lingxi_cluster::DialogState>,
}

/// Node `dead` was declared dead. Calls it ended within the failure-detection time before
/// (plus half a second) may have ended on the record without their BYEs leaving it: the
/// owner ends a call on the record first and hangs up the legs after, and a node failing
/// stop on a full disk died in between (the chaos suite: the agent stayed in a call whose
/// caller had hung up, and was offered the next). One survivor, the first live member by
/// name, sends those BYEs; if the owner had sent them, they meet a dialog already gone (481).
fn hang_up_for_the_dead(sw: &Arc<Switch>, dead: &str) {
    if !sw.is_first_live_member(dead) {
        return;
    }
    let window = Duration::from_millis(sw.config.cluster.failure_detection_ms + 500);
    let now = tokio::time::Instant::now();
    let ends: Vec<RecentEnd> = {
        let mut recent = sw.recent_ends.lock();
        let (theirs, rest): (Vec<_>, Vec<_>) = recent
            .drain(..)
            .partition(|e| e.owner == dead && now - e.applied <= window);
        recent.extend(rest);
        theirs
    };
    // Agents' legs still on the record are [`release_forgotten_agent_legs`]'s to hang up.
    let agents_legs: std::collections::HashSet<String> = sw.log.read(|sm| {
        sm.agents()
            .values()
            .filter_map(|a| a.leg_to_release.as_ref().map(|l| l.dialog.call_id.clone()))
            .collect()
    });
    for RecentEnd {
        call_id, mut legs, ..
    } in ends
    {
        legs.retain(|d| !agents_legs.contains(&d.call_id));
        tracing::info!(%call_id, owner = dead, legs = legs.len(), "the call's owner died just after ending it: hanging up its legs from here");
        for d in &mut legs {
            crate::call::send_in_dialog(sw, d, rsip::Method::Bye);
        }
    }
}

/// How long an agent's leg may stay on the record as still to hang up while its call's node
/// is alive, before another node hangs it up: longer than that node's BYE can take (timer F,
/// 32 s), so it only acts for a node that lost the task (wedged, or restarted unnoticed).
const LEG_RELEASE_PATIENCE: Duration = Duration::from_secs(45);

/// Hangs up agents' legs that the record still holds (see
/// [`lingxi_cluster::model::Agent::leg_to_release`]) and the node that ended their call is
/// not hanging up: this node's own from a previous run (or whose release did not commit),
/// on the next tick; a dead node's, by the first live member; a live node's after
/// [`LEG_RELEASE_PATIENCE`], by the first live member. Checked every second; a fenced node
/// does nothing. Without it an agent would be offered no call again.
async fn release_forgotten_agent_legs(sw: Arc<Switch>) {
    let mut seen: std::collections::HashMap<(String, String), tokio::time::Instant> =
        std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pending: Vec<(String, lingxi_cluster::model::LegToRelease, bool)> = sw.log.read(|sm| {
            sm.agents()
                .values()
                .filter_map(|a| {
                    let leg = a.leg_to_release.clone()?;
                    // This node is alive, members or not (a single node has none).
                    let node_alive = leg.node == sw.node_id
                        || sm.members().get(&leg.node).is_some_and(|m| m.alive);
                    Some((a.id.clone(), leg, node_alive))
                })
                .collect()
        });
        let now = tokio::time::Instant::now();
        seen.retain(|k, _| {
            pending
                .iter()
                .any(|(a, l, _)| (a, &l.call_id) == (&k.0, &k.1))
        });
        // Not before the SIP endpoint is up (a BYE could not leave, and the release would
        // free an agent whose phone still holds the call).
        if sw.is_fenced() || sw.is_shutting_down() || sw.endpoint().is_none() {
            continue;
        }
        for (agent, leg, node_alive) in pending {
            let key = (agent.clone(), leg.call_id.clone());
            if sw.releasing.contains(&key) {
                continue;
            }
            let since = *seen.entry(key).or_insert(now);
            // This node's own: seen on the previous tick already, so a hang-up that has just
            // committed gets to start its own release first.
            let mine = leg.node == sw.node_id && now - since >= Duration::from_secs(1);
            let due = mine
                || (sw.is_first_live_member(&leg.node)
                    && (!node_alive || now - since >= LEG_RELEASE_PATIENCE));
            if !due {
                continue;
            }
            tracing::info!(call_id = %leg.call_id, %agent, node = %leg.node, node_alive, "hanging up an agent's leg its call's end left up");
            let mut d = leg.dialog;
            // The BYE its node may have sent used the next number; skip past it.
            d.local_seq = d.local_seq.saturating_add(100);
            let sw = sw.clone();
            tokio::spawn(async move {
                crate::call::release_agent_leg(&sw, agent, leg.call_id, d).await
            });
        }
    }
}

/// Turns applied log entries into work: kicks queues when calls wait or agents become ready,
/// starts actors for new queues and agents, starts wrap-up timers.
async fn pump(
    sw: Arc<Switch>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<lingxi_cluster::Applied>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let applied = tokio::select! {
            _ = sw.shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        let applied = match applied {
            Ok(a) => a,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "event pump lagged; kicking every queue");
                let ids: Vec<String> = sw.queues.iter().map(|e| e.key().clone()).collect();
                for id in ids {
                    sw.kick_queue(&id);
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        for event in &applied.events {
            match event {
                Event::CallWaiting { queue, .. } => sw.kick_queue(queue),
                Event::AgentChanged { id, state } => {
                    if !sw.agents.contains_key(id) {
                        sw.ensure_agent(id).await;
                    }
                    if *state == AgentState::Ready {
                        let queues: Vec<String> = sw.log.read(|sm| {
                            let Some(agent) = sm.agent_by_id(id) else {
                                return vec![];
                            };
                            sm.queues()
                                .values()
                                .filter(|q| {
                                    agent
                                        .skills
                                        .get(&q.skill)
                                        .is_some_and(|p| *p >= q.min_proficiency)
                                })
                                .map(|q| q.id.clone())
                                .collect()
                        });
                        for q in queues {
                            sw.kick_queue(&q);
                        }
                    }
                }
                Event::AgentRemoved { id } => {
                    if let Some((_, a)) = sw.agents.remove(id) {
                        a.stop(Some("agent removed".into()));
                    }
                }
                Event::QueueChanged { id } => sw.ensure_queue(id).await,
                Event::QueueRemoved { id } => {
                    if let Some((_, (a, _))) = sw.queues.remove(id) {
                        a.stop(Some("queue removed".into()));
                    }
                }
                Event::CallEnded(cdr) => {
                    metrics::counter!("lingxi_calls_total", "outcome" => cdr.outcome.clone())
                        .increment(1);
                    if let (Some(agent), Some(queue), true) = (&cdr.agent, &cdr.queue, true) {
                        let secs = sw
                            .log
                            .read(|sm| sm.queues().get(queue).map(|q| q.wrapup_secs));
                        if let (Some(secs), Some(actor)) =
                            (secs, sw.agents.get(agent).map(|a| a.clone()))
                        {
                            // Every node arms the timer (the call's node may die); the command only ends
                            // the wrap-up of this very call, so duplicates are harmless.
                            let _ = actor.cast(AgentMsg::WrapUp {
                                secs,
                                call_id: cdr.call_id.clone(),
                            });
                        }
                    }
                }
                Event::CallOwnerChanged { call_id, to, .. } if *to == sw.node_id => {
                    // Each in its own task: one unanswered re-INVITE must not hold up the rest.
                    let (sw, call_id) = (sw.clone(), call_id.clone());
                    tokio::spawn(async move { sw.resume_call(&call_id).await });
                }
                Event::MemberChanged { node, alive: false } if *node == sw.node_id => {
                    // The majority declared this node dead: its calls are moving away. Stop
                    // serving now; the watcher re-announces once the majority hears us.
                    sw.fence();
                }
                Event::MemberChanged { node, alive: false } => hang_up_for_the_dead(&sw, node),
                Event::CallLegsToHangUp {
                    call_id,
                    owner,
                    legs,
                } if *owner != sw.node_id => {
                    let now = tokio::time::Instant::now();
                    let mut recent = sw.recent_ends.lock();
                    while recent
                        .front()
                        .is_some_and(|e| now - e.applied > RECENT_ENDS_KEPT)
                    {
                        recent.pop_front();
                    }
                    recent.push_back(RecentEnd {
                        applied: now,
                        owner: owner.clone(),
                        call_id: call_id.clone(),
                        legs: legs.clone(),
                    });
                }
                Event::AgentWrapUp { id, call_id, secs } => {
                    // As after a call's end: every node arms it; the command is idempotent.
                    if let Some(actor) = sw.agents.get(id).map(|a| a.clone()) {
                        let _ = actor.cast(AgentMsg::WrapUp {
                            secs: *secs,
                            call_id: call_id.clone(),
                        });
                    }
                }
                Event::CallChanged { .. }
                | Event::CallOwnerChanged { .. }
                | Event::MemberChanged { .. }
                | Event::CallLegsToHangUp { .. }
                | Event::CdrAnnotated { .. } => {}
            }
        }
    }
}

/// The replicated form of a configured queue, with the ACD defaults filled in.
pub fn queue_spec(config: &Config, q: &lingxi_config::QueueConfig) -> QueueSpec {
    QueueSpec {
        id: q.id.clone(),
        name: q.name.clone(),
        extensions: q.extensions.clone(),
        skill: q.skill.clone(),
        min_proficiency: q.min_proficiency,
        priority: q.priority,
        ring_timeout_secs: q.ring_timeout_secs.unwrap_or(config.acd.ring_timeout_secs),
        max_wait_secs: q.max_wait_secs.unwrap_or(config.acd.max_wait_secs),
        wrapup_secs: q.wrapup_secs.unwrap_or(config.acd.wrapup_secs),
        not_ready_on_no_answer: config.acd.not_ready_on_no_answer,
        overflow: match (q.overflow.action, &q.overflow.target) {
            (OverflowAction::Queue, Some(t)) => Overflow::Queue(t.clone()),
            _ => Overflow::Hangup,
        },
        overflow_when_no_agents: q.overflow.when_no_agents,
    }
}

/// The user part of a request's To URI (the agent id in a REGISTER).
pub(crate) fn to_user(request: &rsip::Request) -> Option<String> {
    use rsip::prelude::*;
    let to = request.to_header().ok()?.typed().ok()?;
    to.uri.auth.map(|a| a.user)
}

/// The user part of a request's From URI (the caller).
pub(crate) fn from_user(request: &rsip::Request) -> Option<String> {
    use rsip::prelude::*;
    let from = request.from_header().ok()?.typed().ok()?;
    from.uri.auth.map(|a| a.user)
}
