//! The deterministic state machine: `apply(index, command)` with no I/O, clock or randomness.

use crate::command::Command;
use crate::end_hangs_up;
use crate::error::ClusterError;
use crate::model::{
    Agent, AgentState, Article, CallLeg, CallPhase, CallRecord, Cdr, Disposition, LegToRelease,
    Member, Millis, QueueSpec, Role, Session, User,
};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// What applying a command changed, for actors to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An agent's state, registration or settings changed.
    AgentChanged {
        /// Agent id.
        id: String,
        /// Its state now.
        state: AgentState,
    },
    /// An agent was deleted.
    AgentRemoved {
        /// Agent id.
        id: String,
    },
    /// A queue was created or changed.
    QueueChanged {
        /// Queue id.
        id: String,
    },
    /// A queue was deleted.
    QueueRemoved {
        /// Queue id.
        id: String,
    },
    /// A call is waiting in a queue (new, overflowed in, or back after a failed offer).
    CallWaiting {
        /// Call id.
        call_id: String,
        /// Queue id.
        queue: String,
    },
    /// A call changed phase or dialogs.
    CallChanged {
        /// Call id.
        call_id: String,
    },
    /// A call moved to another node (its owner died): `to` must resume it.
    CallOwnerChanged {
        /// Call id.
        call_id: String,
        /// The dead owner.
        from: String,
        /// The new owner.
        to: String,
    },
    /// A node came up or was declared dead.
    MemberChanged {
        /// Node name.
        node: String,
        /// Whether it serves now.
        alive: bool,
    },
    /// A call ended and its CDR was written.
    CallEnded(Cdr),
    /// A call ended with legs its owner still has to send BYE to (the party that hung up
    /// needs none). Comes just before its [`Event::CallEnded`]. Should the owner die before
    /// sending them, the survivors do (`actors/src/switch.rs`).
    CallLegsToHangUp {
        /// The call.
        call_id: String,
        /// The node that ended it.
        owner: String,
        /// The dialogs, as last committed.
        legs: Vec<crate::DialogState>,
    },
    /// An agent transferred a call away and starts its wrap-up now, for `secs`.
    AgentWrapUp {
        /// Agent id.
        id: String,
        /// The call it transferred.
        call_id: String,
        /// Wrap-up length.
        secs: u64,
    },
    /// A disposition was recorded for a call that had already ended: its stored CDR must be
    /// updated.
    CdrAnnotated {
        /// Call id.
        call_id: String,
        /// What was recorded.
        disposition: Disposition,
    },
}

/// Most sessions one user keeps; opening another closes the oldest.
const MAX_SESSIONS_PER_USER: usize = 50;

/// Position of a waiting call: priority first (higher first), then arrival, then log order.
type WaitKey = (Reverse<u8>, Millis, u64, String);

/// The replicated state of the contact centre.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StateMachine {
    /// Index of the last applied log entry.
    applied: u64,
    /// Agents by id.
    agents: BTreeMap<String, Agent>,
    /// Queues by id.
    queues: BTreeMap<String, QueueSpec>,
    /// Live calls by id.
    calls: BTreeMap<String, CallRecord>,
    /// Cluster members by node name.
    #[serde(default)]
    members: BTreeMap<String, Member>,
    /// Console users by username.
    #[serde(default)]
    users: BTreeMap<String, User>,
    /// Open sessions by hex SHA-256 of their token.
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
    /// Knowledge-base articles by id.
    #[serde(default)]
    articles: BTreeMap<String, Article>,
    /// Log index of the last change to `articles`: search indexes rebuild when it moves.
    #[serde(default)]
    kb_revision: u64,
    /// Dispositions recorded while their call is still live, copied to the CDR when it ends.
    #[serde(default)]
    dispositions: BTreeMap<String, Disposition>,
    /// Waiting calls per queue in service order; derived from `calls`, rebuilt after restore.
    #[serde(skip)]
    waiting: BTreeMap<String, BTreeSet<WaitKey>>,
    /// Ready, registered agents per skill, longest idle first; derived, rebuilt after restore.
    #[serde(skip)]
    ready: BTreeMap<String, BTreeSet<(Millis, String)>>,
    /// Where each agent stands in `ready` (its idle key and skills), to take it out again.
    #[serde(skip)]
    ready_keys: BTreeMap<String, (Millis, Vec<String>)>,
}

impl StateMachine {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the derived indexes after deserializing a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.ready.clear();
        self.ready_keys.clear();
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in ids {
            self.reindex_agent(&id);
        }
        self.waiting.clear();
        for call in self.calls.values() {
            if call.phase == CallPhase::Queued
                && let Some(q) = &call.queue
            {
                self.waiting
                    .entry(q.clone())
                    .or_default()
                    .insert(wait_key(call));
            }
        }
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Applies one committed entry. A refused command still advances the applied index
    /// (it was committed; refusing it is the deterministic outcome every replica reaches).
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Vec<Event>, ClusterError> {
        if index <= self.applied && index != 0 {
            return Err(ClusterError::Conflict {
                what: format!("entry {index}"),
                detail: format!("already applied up to {}", self.applied),
            });
        }
        self.applied = index;
        let events = self.apply_inner(index, cmd)?;
        for e in &events {
            if let Event::AgentChanged { id, .. } | Event::AgentRemoved { id } = e {
                self.reindex_agent(id);
            }
        }
        Ok(events)
    }

    /// Puts an agent in (or takes it out of) the ready index after any change to it.
    fn reindex_agent(&mut self, id: &str) {
        if let Some((idle, skills)) = self.ready_keys.remove(id) {
            for skill in skills {
                if let Some(set) = self.ready.get_mut(&skill) {
                    set.remove(&(idle, id.to_string()));
                }
            }
        }
        let Some(a) = self.agents.get(id) else { return };
        if a.state != AgentState::Ready || a.registration.is_none() {
            return;
        }
        let skills: Vec<String> = a.skills.keys().cloned().collect();
        for skill in &skills {
            self.ready
                .entry(skill.clone())
                .or_default()
                .insert((a.idle_since_ms, a.id.clone()));
        }
        self.ready_keys
            .insert(a.id.clone(), (a.idle_since_ms, skills));
    }

    fn apply_inner(&mut self, index: u64, cmd: &Command) -> Result<Vec<Event>, ClusterError> {
        match cmd {
            Command::UpsertUser { .. }
            | Command::RemoveUser { .. }
            | Command::SessionOpened { .. }
            | Command::SessionClosed { .. }
            | Command::UpsertArticle(_)
            | Command::RemoveArticle { .. }
            | Command::SetDisposition { .. } => self.apply_console(index, cmd),
            Command::CallTransferred {
                call_id,
                from_agent,
                to,
                wrapup_secs,
                at_ms,
            } => self.apply_transfer(call_id, from_agent, to, *wrapup_secs, *at_ms),
            Command::UpsertAgent {
                id,
                name,
                ha1,
                skills,
                at_ms,
            } => {
                let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
                    id: id.clone(),
                    name: String::new(),
                    ha1: String::new(),
                    skills: BTreeMap::new(),
                    state: AgentState::LoggedOut,
                    reason: None,
                    state_since_ms: *at_ms,
                    idle_since_ms: *at_ms,
                    call_id: None,
                    registration: None,
                    calls_answered: 0,
                    leg_to_release: None,
                });
                agent.name = name.clone();
                agent.ha1 = ha1.clone();
                agent.skills = skills.clone();
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::RemoveAgent { id } => {
                let agent = self.agent(id)?;
                if agent.call_id.is_some()
                    && matches!(agent.state, AgentState::Ringing | AgentState::Busy)
                {
                    return Err(ClusterError::AgentUnavailable {
                        agent: id.clone(),
                        state: agent.state,
                        detail: "cannot delete an agent on a call".into(),
                    });
                }
                self.agents.remove(id);
                Ok(vec![Event::AgentRemoved { id: id.clone() }])
            }
            Command::SetAgentState {
                id,
                state,
                reason,
                only_if,
                at_ms,
            } => {
                let agent = self
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| ClusterError::UnknownAgent { agent: id.clone() })?;
                if let Some(expected) = only_if
                    && agent.state != *expected
                {
                    return Ok(vec![]);
                }
                if matches!(state, AgentState::Ringing | AgentState::Busy) {
                    return Err(ClusterError::AgentUnavailable {
                        agent: id.clone(),
                        state: agent.state,
                        detail: format!("{} is set by calls, not by request", state.as_str()),
                    });
                }
                if matches!(agent.state, AgentState::Ringing | AgentState::Busy) {
                    return Err(ClusterError::AgentUnavailable {
                        agent: id.clone(),
                        state: agent.state,
                        detail: format!("cannot change to {} during a call", state.as_str()),
                    });
                }
                set_state(agent, *state, reason.clone(), *at_ms);
                if *state != AgentState::WrapUp {
                    agent.call_id = None;
                }
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::Register {
                id,
                registration,
                at_ms,
            } => {
                let agent = self
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| ClusterError::UnknownAgent { agent: id.clone() })?;
                agent.registration = registration.clone();
                match (registration.is_some(), agent.state) {
                    (true, AgentState::LoggedOut) => {
                        set_state(agent, AgentState::Ready, None, *at_ms)
                    }
                    (false, AgentState::Ready | AgentState::NotReady | AgentState::WrapUp) => {
                        set_state(agent, AgentState::LoggedOut, None, *at_ms);
                        agent.call_id = None;
                    }
                    _ => {}
                }
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::AgentLegReleased { id, call_id } => {
                let Some(agent) = self.agents.get_mut(id) else {
                    return Ok(vec![]);
                };
                if agent
                    .leg_to_release
                    .as_ref()
                    .is_none_or(|l| l.call_id != *call_id)
                {
                    return Ok(vec![]);
                }
                agent.leg_to_release = None;
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::WrapUpEnded { id, call_id, at_ms } => {
                let agent = self
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| ClusterError::UnknownAgent { agent: id.clone() })?;
                if agent.state != AgentState::WrapUp
                    || agent.call_id.as_deref() != Some(call_id.as_str())
                {
                    return Ok(vec![]);
                }
                set_state(agent, AgentState::Ready, None, *at_ms);
                agent.call_id = None;
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::ExpireRegistration { id, at_ms } => {
                let agent = self
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| ClusterError::UnknownAgent { agent: id.clone() })?;
                if !agent
                    .registration
                    .as_ref()
                    .is_some_and(|r| r.expires_at_ms <= *at_ms)
                {
                    return Ok(vec![]);
                }
                agent.registration = None;
                if matches!(
                    agent.state,
                    AgentState::Ready | AgentState::NotReady | AgentState::WrapUp
                ) {
                    set_state(agent, AgentState::LoggedOut, None, *at_ms);
                    agent.call_id = None;
                }
                Ok(vec![Event::AgentChanged {
                    id: id.clone(),
                    state: agent.state,
                }])
            }
            Command::MemberUp(m) => {
                let changed = self
                    .members
                    .get(&m.node)
                    .is_none_or(|old| !old.alive || old != m);
                let mut m = m.clone();
                m.alive = true;
                self.members.insert(m.node.clone(), m.clone());
                Ok(if changed {
                    vec![Event::MemberChanged {
                        node: m.node,
                        alive: true,
                    }]
                } else {
                    vec![]
                })
            }
            Command::NodeDown { node, at_ms } => self.node_down(node, *at_ms),
            Command::UpsertQueue(spec) => {
                self.queues.insert(spec.id.clone(), spec.clone());
                Ok(vec![Event::QueueChanged {
                    id: spec.id.clone(),
                }])
            }
            Command::RemoveQueue { id } => {
                if !self.queues.contains_key(id) {
                    return Err(ClusterError::UnknownQueue { queue: id.clone() });
                }
                if self.calls.values().any(|c| c.queue.as_deref() == Some(id)) {
                    return Err(ClusterError::Conflict {
                        what: format!("deleting queue {id}"),
                        detail: "calls are waiting in it or were answered from it".into(),
                    });
                }
                self.queues.remove(id);
                self.waiting.remove(id);
                Ok(vec![Event::QueueRemoved { id: id.clone() }])
            }
            Command::CallArrived {
                call_id,
                caller,
                called,
                owner,
                a_leg,
                at_ms,
            } => {
                if self.members.get(owner).is_some_and(|m| !m.alive) {
                    return Err(ClusterError::Conflict {
                        what: format!("call {call_id} arriving at {owner}"),
                        detail: "that node was declared dead; it must announce itself first".into(),
                    });
                }
                if self.calls.contains_key(call_id) {
                    return Err(ClusterError::Conflict {
                        what: format!("call {call_id} arriving"),
                        detail: "a live call has this id".into(),
                    });
                }
                self.calls.insert(
                    call_id.clone(),
                    CallRecord {
                        call_id: call_id.clone(),
                        caller: caller.clone(),
                        called: called.clone(),
                        queue: None,
                        agent: None,
                        phase: CallPhase::Routing,
                        priority: 0,
                        arrived_ms: *at_ms,
                        queued_ms: None,
                        seq: index,
                        answered_ms: None,
                        owner: owner.clone(),
                        a_leg: Some(a_leg.clone()),
                        b_leg: None,
                        offers: 0,
                        recording: None,
                        failovers: 0,
                        more_recordings: Vec::new(),
                        transfers: Vec::new(),
                    },
                );
                Ok(vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }])
            }
            Command::CallQueued {
                call_id,
                queue,
                priority,
                at_ms,
            } => {
                if !self.queues.contains_key(queue) {
                    return Err(ClusterError::UnknownQueue {
                        queue: queue.clone(),
                    });
                }
                let call = call_mut(&mut self.calls, call_id)?;
                if !matches!(call.phase, CallPhase::Routing | CallPhase::Queued) {
                    return Err(ClusterError::Conflict {
                        what: format!("queueing call {call_id}"),
                        detail: format!("the call is {}", call.phase.as_str()),
                    });
                }
                unwait(&mut self.waiting, call);
                call.queue = Some(queue.clone());
                call.priority = *priority;
                call.phase = CallPhase::Queued;
                call.queued_ms = Some(*at_ms);
                self.waiting
                    .entry(queue.clone())
                    .or_default()
                    .insert(wait_key(call));
                Ok(vec![Event::CallWaiting {
                    call_id: call_id.clone(),
                    queue: queue.clone(),
                }])
            }
            Command::CallOffered {
                call_id,
                agent: agent_id,
                at_ms,
            } => {
                let call = self
                    .calls
                    .get(call_id)
                    .ok_or_else(|| ClusterError::UnknownCall {
                        call_id: call_id.clone(),
                    })?;
                if call.phase != CallPhase::Queued {
                    return Err(ClusterError::Conflict {
                        what: format!("offering call {call_id}"),
                        detail: format!("the call is {}", call.phase.as_str()),
                    });
                }
                let agent = self.agent(agent_id)?;
                if agent.state != AgentState::Ready || agent.registration.is_none() {
                    return Err(ClusterError::AgentUnavailable {
                        agent: agent_id.clone(),
                        state: agent.state,
                        detail: format!("cannot be offered call {call_id}"),
                    });
                }
                // The state is Ready: only an earlier leg still up can hold the agent back.
                if let Some(leg) = &agent.leg_to_release {
                    return Err(ClusterError::AgentUnavailable {
                        agent: agent_id.clone(),
                        state: agent.state,
                        detail: format!(
                            "cannot be offered call {call_id}: its leg of call {} is not yet hung up",
                            leg.call_id
                        ),
                    });
                }
                unwait(&mut self.waiting, call);
                let call = self.calls.get_mut(call_id).expect("checked above");
                call.phase = CallPhase::Ringing;
                call.agent = Some(agent_id.clone());
                call.offers += 1;
                let agent = self.agents.get_mut(agent_id).expect("checked above");
                set_state(agent, AgentState::Ringing, None, *at_ms);
                agent.call_id = Some(call_id.clone());
                Ok(vec![
                    Event::AgentChanged {
                        id: agent_id.clone(),
                        state: AgentState::Ringing,
                    },
                    Event::CallChanged {
                        call_id: call_id.clone(),
                    },
                ])
            }
            Command::CallOfferFailed {
                call_id,
                agent: agent_id,
                reason,
                agent_not_ready,
                at_ms,
            } => {
                let mut events = Vec::new();
                if let Some(agent) = self.agents.get_mut(agent_id)
                    && agent.call_id.as_deref() == Some(call_id)
                    && agent.state == AgentState::Ringing
                {
                    let idle = agent.idle_since_ms;
                    if *agent_not_ready {
                        set_state(agent, AgentState::NotReady, Some(reason.clone()), *at_ms);
                    } else {
                        set_state(agent, AgentState::Ready, None, *at_ms);
                        // Not having answered is no work done: keep the place in the idle order.
                        agent.idle_since_ms = idle;
                    }
                    agent.call_id = None;
                    events.push(Event::AgentChanged {
                        id: agent_id.clone(),
                        state: agent.state,
                    });
                }
                let call = call_mut(&mut self.calls, call_id)?;
                if call.phase == CallPhase::Ringing && call.agent.as_deref() == Some(agent_id) {
                    call.phase = CallPhase::Queued;
                    call.agent = None;
                    let queue = call.queue.clone().unwrap_or_default();
                    self.waiting
                        .entry(queue.clone())
                        .or_default()
                        .insert(wait_key(call));
                    events.push(Event::CallWaiting {
                        call_id: call_id.clone(),
                        queue,
                    });
                }
                Ok(events)
            }
            Command::CallAnswered {
                call_id,
                agent: agent_id,
                b_leg,
                recording,
                at_ms,
            } => {
                let call = call_mut(&mut self.calls, call_id)?;
                if call.phase != CallPhase::Ringing || call.agent.as_deref() != Some(agent_id) {
                    return Err(ClusterError::Conflict {
                        what: format!("answering call {call_id} by {agent_id}"),
                        detail: format!("the call is {} for {:?}", call.phase.as_str(), call.agent),
                    });
                }
                call.phase = CallPhase::Talking;
                // After a transfer the call was answered before: wait time counts to the first.
                // Clocks of different nodes disagree a little: never before the arrival.
                call.answered_ms
                    .get_or_insert((*at_ms).max(call.arrived_ms));
                call.b_leg = Some(b_leg.clone());
                match (&call.recording, recording) {
                    (None, r) => call.recording = r.clone(),
                    (Some(_), Some(r)) => call.more_recordings.push(r.clone()),
                    (Some(_), None) => {}
                }
                let mut events = vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }];
                if let Some(agent) = self.agents.get_mut(agent_id) {
                    set_state(agent, AgentState::Busy, None, *at_ms);
                    agent.call_id = Some(call_id.clone());
                    agent.calls_answered += 1;
                    events.push(Event::AgentChanged {
                        id: agent_id.clone(),
                        state: AgentState::Busy,
                    });
                }
                Ok(events)
            }
            Command::DialogUpdated {
                call_id,
                leg,
                dialog,
            } => {
                let call = call_mut(&mut self.calls, call_id)?;
                match leg {
                    CallLeg::A => call.a_leg = Some(dialog.clone()),
                    CallLeg::B => call.b_leg = Some(dialog.clone()),
                }
                Ok(vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }])
            }
            Command::CallResumed { call_id, owner } => {
                let call = call_mut(&mut self.calls, call_id)?;
                if call.owner != *owner {
                    return Err(ClusterError::Conflict {
                        what: format!("{owner} resuming call {call_id}"),
                        detail: format!("the call is owned by {}", call.owner),
                    });
                }
                call.failovers += 1;
                Ok(vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }])
            }
            Command::RecordingAdded { call_id, path } => {
                let call = call_mut(&mut self.calls, call_id)?;
                call.more_recordings.push(path.clone());
                Ok(vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }])
            }
            Command::CallHeld { call_id, held } => {
                let call = call_mut(&mut self.calls, call_id)?;
                call.phase = match (call.phase, held) {
                    (CallPhase::Talking, true) => CallPhase::Held,
                    (CallPhase::Held, false) => CallPhase::Talking,
                    (p, _) => p,
                };
                Ok(vec![Event::CallChanged {
                    call_id: call_id.clone(),
                }])
            }
            Command::CallEnded {
                call_id,
                outcome,
                ended_by,
                wrapup_secs,
                at_ms,
            } => {
                let call = self
                    .calls
                    .remove(call_id)
                    .ok_or_else(|| ClusterError::UnknownCall {
                        call_id: call_id.clone(),
                    })?;
                unwait(&mut self.waiting, &call);
                let disposition = self.dispositions.remove(call_id);
                let mut events = Vec::new();
                let legs: Vec<crate::DialogState> =
                    crate::legs_to_hang_up(ended_by, call.a_leg.as_ref(), call.b_leg.as_ref())
                        .into_iter()
                        .cloned()
                        .collect();
                if !legs.is_empty() {
                    events.push(Event::CallLegsToHangUp {
                        call_id: call_id.clone(),
                        owner: call.owner.clone(),
                        legs,
                    });
                }
                if let Some(agent_id) = &call.agent
                    && let Some(agent) = self.agents.get_mut(agent_id)
                    && agent.call_id.as_deref() == Some(call_id)
                {
                    // Its leg stays the agent's until the BYE to it is confirmed: no call is
                    // offered to a phone still holding this one.
                    if end_hangs_up(ended_by, CallLeg::B)
                        && let Some(leg) = LegToRelease::of(&call)
                    {
                        agent.leg_to_release = Some(leg);
                    }
                    // The agent talked if its leg was up (a transferred call may ring out).
                    let talked = call.b_leg.is_some();
                    if talked && *wrapup_secs > 0 {
                        set_state(agent, AgentState::WrapUp, None, *at_ms);
                    } else {
                        let idle = agent.idle_since_ms;
                        set_state(agent, AgentState::Ready, None, *at_ms);
                        if !talked {
                            agent.idle_since_ms = idle;
                        }
                        agent.call_id = None;
                    }
                    events.push(Event::AgentChanged {
                        id: agent_id.clone(),
                        state: agent.state,
                    });
                }
                // The end is never before the arrival or the answer, whichever node's clock
                // stamped them.
                let at_ms = &(*at_ms).max(call.answered_ms.unwrap_or(call.arrived_ms));
                let answered_or_end = call.answered_ms.unwrap_or(*at_ms);
                let cdr = Cdr {
                    call_id: call.call_id,
                    caller: call.caller,
                    called: call.called,
                    queue: call.queue,
                    agent: call.agent,
                    arrived_ms: call.arrived_ms,
                    answered_ms: call.answered_ms,
                    ended_ms: *at_ms,
                    wait_secs: secs(answered_or_end.saturating_sub(call.arrived_ms)),
                    talk_secs: call
                        .answered_ms
                        .map(|a| secs(at_ms.saturating_sub(a)))
                        .unwrap_or(0.0),
                    outcome: if call.failovers > 0 && outcome == "call.completed" {
                        "failover.resumed".to_string()
                    } else {
                        outcome.clone()
                    },
                    ended_by: ended_by.clone(),
                    recordings: call
                        .recording
                        .iter()
                        .chain(call.more_recordings.iter())
                        .cloned()
                        .collect(),
                    recording: call.recording,
                    offers: call.offers,
                    node: call.owner,
                    failovers: call.failovers,
                    index,
                    disposition: disposition.as_ref().map(|d| d.code.clone()),
                    note: disposition.as_ref().map(|d| d.note.clone()),
                    disposition_by: disposition.map(|d| d.by),
                    transfers: call.transfers,
                };
                events.push(Event::CallEnded(cdr));
                Ok(events)
            }
        }
    }

    /// Users, sessions, articles and dispositions.
    fn apply_console(&mut self, index: u64, cmd: &Command) -> Result<Vec<Event>, ClusterError> {
        match cmd {
            Command::UpsertUser {
                username,
                display_name,
                role,
                agent_id,
                password_hash,
                create_only,
                at_ms,
            } => {
                let what = || format!("saving user {username}");
                if username.is_empty() {
                    return Err(ClusterError::Conflict {
                        what: what(),
                        detail: "the username is empty".into(),
                    });
                }
                if *create_only && self.users.contains_key(username) {
                    return Err(ClusterError::Conflict {
                        what: format!("creating user {username}"),
                        detail: "the user exists already".into(),
                    });
                }
                match agent_id {
                    None if *role == Role::Agent => {
                        return Err(ClusterError::Conflict {
                            what: what(),
                            detail: "a user of role agent must name its agent_id".into(),
                        });
                    }
                    Some(a) if !self.agents.contains_key(a) => {
                        return Err(ClusterError::UnknownAgent { agent: a.clone() });
                    }
                    Some(a) => {
                        if let Some(other) = self.users.values().find(|u| {
                            u.username != *username && u.agent_id.as_deref() == Some(a.as_str())
                        }) {
                            return Err(ClusterError::Conflict {
                                what: what(),
                                detail: format!(
                                    "agent {a} already belongs to user {}",
                                    other.username
                                ),
                            });
                        }
                    }
                    None => {}
                }
                let old = self.users.get(username);
                if old.is_some_and(|u| u.role == Role::Admin)
                    && *role != Role::Admin
                    && self.admin_count() == 1
                {
                    return Err(ClusterError::Conflict {
                        what: what(),
                        detail: "it is the last admin; make another admin first".into(),
                    });
                }
                let password_changed = old.is_some_and(|u| u.password_hash != *password_hash);
                let created_ms = old.map_or(*at_ms, |u| u.created_ms);
                self.users.insert(
                    username.clone(),
                    User {
                        username: username.clone(),
                        display_name: display_name.clone(),
                        role: *role,
                        agent_id: agent_id.clone(),
                        password_hash: password_hash.clone(),
                        created_ms,
                        updated_ms: *at_ms,
                    },
                );
                if password_changed {
                    self.sessions.retain(|_, s| s.username != *username);
                }
                Ok(vec![])
            }
            Command::RemoveUser { username } => {
                let Some(user) = self.users.get(username) else {
                    return Err(ClusterError::Conflict {
                        what: format!("removing user {username}"),
                        detail: "no such user".into(),
                    });
                };
                if user.role == Role::Admin && self.admin_count() == 1 {
                    return Err(ClusterError::Conflict {
                        what: format!("removing user {username}"),
                        detail: "it is the last admin; make another admin first".into(),
                    });
                }
                self.users.remove(username);
                self.sessions.retain(|_, s| s.username != *username);
                Ok(vec![])
            }
            Command::SessionOpened {
                token_sha256,
                username,
                expires_at_ms,
                at_ms,
            } => {
                self.sessions.retain(|_, s| s.expires_at_ms > *at_ms);
                if !self.users.contains_key(username) {
                    return Err(ClusterError::Conflict {
                        what: format!("opening a session for {username}"),
                        detail: "no such user".into(),
                    });
                }
                let mut mine: Vec<(Millis, String)> = self
                    .sessions
                    .values()
                    .filter(|s| s.username == *username)
                    .map(|s| (s.opened_ms, s.token_sha256.clone()))
                    .collect();
                mine.sort();
                let excess = (mine.len() + 1).saturating_sub(MAX_SESSIONS_PER_USER);
                for (_, token) in mine.into_iter().take(excess) {
                    self.sessions.remove(&token);
                }
                self.sessions.insert(
                    token_sha256.clone(),
                    Session {
                        token_sha256: token_sha256.clone(),
                        username: username.clone(),
                        expires_at_ms: *expires_at_ms,
                        opened_ms: *at_ms,
                    },
                );
                Ok(vec![])
            }
            Command::SessionClosed { token_sha256 } => {
                self.sessions.remove(token_sha256);
                Ok(vec![])
            }
            Command::UpsertArticle(article) => {
                if article.id.is_empty() {
                    return Err(ClusterError::Conflict {
                        what: "saving an article".into(),
                        detail: "the id is empty".into(),
                    });
                }
                self.articles.insert(article.id.clone(), article.clone());
                self.kb_revision = index;
                Ok(vec![])
            }
            Command::RemoveArticle { id } => {
                if self.articles.remove(id).is_none() {
                    return Err(ClusterError::Conflict {
                        what: format!("removing article {id}"),
                        detail: "no such article".into(),
                    });
                }
                self.kb_revision = index;
                Ok(vec![])
            }
            Command::SetDisposition {
                call_id,
                disposition,
                note,
                by,
                ready_agent,
                at_ms,
            } => {
                let d = Disposition {
                    code: disposition.clone(),
                    note: note.clone(),
                    by: by.clone(),
                    at_ms: *at_ms,
                };
                let mut events = Vec::new();
                if self.calls.contains_key(call_id) {
                    self.dispositions.insert(call_id.clone(), d);
                } else {
                    events.push(Event::CdrAnnotated {
                        call_id: call_id.clone(),
                        disposition: d,
                    });
                }
                if let Some(agent) = ready_agent.as_ref().and_then(|a| self.agents.get_mut(a))
                    && agent.state == AgentState::WrapUp
                    && agent.call_id.as_deref() == Some(call_id.as_str())
                {
                    set_state(agent, AgentState::Ready, None, *at_ms);
                    agent.call_id = None;
                    events.push(Event::AgentChanged {
                        id: agent.id.clone(),
                        state: agent.state,
                    });
                }
                Ok(events)
            }
            other => Err(ClusterError::Conflict {
                what: other.kind().to_string(),
                detail: "not a console command".into(),
            }),
        }
    }

    fn admin_count(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.role == Role::Admin)
            .count()
    }

    /// Console users by username.
    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    /// One user.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    /// The session whose token hashes to `token_sha256`, if it is still valid at `now_ms`.
    pub fn session(&self, token_sha256: &str, now_ms: Millis) -> Option<&Session> {
        self.sessions
            .get(token_sha256)
            .filter(|s| s.expires_at_ms > now_ms)
    }

    /// Open sessions (some possibly expired but not yet pruned), by token hash.
    pub fn sessions(&self) -> &BTreeMap<String, Session> {
        &self.sessions
    }

    /// Knowledge-base articles by id.
    pub fn articles(&self) -> &BTreeMap<String, Article> {
        &self.articles
    }

    /// Log index of the last change to the articles (0: never changed).
    pub fn kb_revision(&self) -> u64 {
        self.kb_revision
    }

    /// The disposition recorded for a live call, if any.
    pub fn pending_disposition(&self, call_id: &str) -> Option<&Disposition> {
        self.dispositions.get(call_id)
    }

    /// Marks `node` dead and hands its calls to the live members, in turn (sorted by name).
    fn node_down(&mut self, node: &str, at_ms: Millis) -> Result<Vec<Event>, ClusterError> {
        let Some(m) = self.members.get_mut(node) else {
            return Err(ClusterError::Conflict {
                what: format!("declaring {node} dead"),
                detail: "no such member".into(),
            });
        };
        if !m.alive {
            return Ok(vec![]);
        }
        m.alive = false;
        m.since_ms = at_ms;
        let mut events = vec![Event::MemberChanged {
            node: node.to_string(),
            alive: false,
        }];
        let live: Vec<String> = self
            .members
            .values()
            .filter(|m| m.alive)
            .map(|m| m.node.clone())
            .collect();
        if live.is_empty() {
            return Ok(events);
        }
        let orphans: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.owner == node)
            .map(|c| c.call_id.clone())
            .collect();
        for (i, call_id) in orphans.into_iter().enumerate() {
            let to = live[i % live.len()].clone();
            let call = self.calls.get_mut(&call_id).expect("listed above");
            call.owner = to.clone();
            call.failovers += 1;
            if call.phase == CallPhase::Ringing {
                // The dead node's INVITE to the agent cannot be answered to anyone: offer again.
                if let Some(agent) = call.agent.take().and_then(|a| self.agents.get_mut(&a)) {
                    if agent.call_id.as_deref() == Some(call_id.as_str())
                        && agent.state == AgentState::Ringing
                    {
                        let idle = agent.idle_since_ms;
                        set_state(agent, AgentState::Ready, None, at_ms);
                        agent.idle_since_ms = idle;
                        agent.call_id = None;
                        events.push(Event::AgentChanged {
                            id: agent.id.clone(),
                            state: agent.state,
                        });
                    }
                }
                call.phase = CallPhase::Queued;
                if let Some(q) = call.queue.clone() {
                    self.waiting
                        .entry(q.clone())
                        .or_default()
                        .insert(wait_key(call));
                    events.push(Event::CallWaiting {
                        call_id: call_id.clone(),
                        queue: q,
                    });
                }
            }
            events.push(Event::CallOwnerChanged {
                call_id,
                from: node.to_string(),
                to,
            });
        }
        Ok(events)
    }

    /// Cluster members by node name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    fn agent(&self, id: &str) -> Result<&Agent, ClusterError> {
        self.agents
            .get(id)
            .ok_or_else(|| ClusterError::UnknownAgent {
                agent: id.to_string(),
            })
    }

    /// All agents by id.
    pub fn agents(&self) -> &BTreeMap<String, Agent> {
        &self.agents
    }

    /// One agent.
    pub fn agent_by_id(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// All queues by id.
    pub fn queues(&self) -> &BTreeMap<String, QueueSpec> {
        &self.queues
    }

    /// The queue reached by a SIP user part: its id or one of its extensions.
    pub fn queue_for_user(&self, user: &str) -> Option<&QueueSpec> {
        self.queues.get(user).or_else(|| {
            self.queues
                .values()
                .find(|q| q.extensions.iter().any(|e| e == user))
        })
    }

    /// Live calls by id.
    pub fn calls(&self) -> &BTreeMap<String, CallRecord> {
        &self.calls
    }

    /// One live call.
    pub fn call(&self, call_id: &str) -> Option<&CallRecord> {
        self.calls.get(call_id)
    }

    /// Calls waiting in a queue, in the order they will be offered.
    pub fn waiting(&self, queue: &str) -> impl Iterator<Item = &CallRecord> + '_ {
        self.waiting
            .get(queue)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|k| self.calls.get(&k.3))
    }

    /// Number of calls waiting in a queue.
    pub fn queue_depth(&self, queue: &str) -> usize {
        self.waiting.get(queue).map_or(0, |s| s.len())
    }

    /// Milliseconds the longest-waiting call of a queue has waited at `now_ms`.
    pub fn longest_wait_ms(&self, queue: &str, now_ms: Millis) -> Millis {
        self.waiting(queue)
            .filter_map(|c| c.queued_ms)
            .map(|q| now_ms.saturating_sub(q))
            .max()
            .unwrap_or(0)
    }

    /// The agent a queue should offer its next call to: ready, registered (binding not expired
    /// at `now_ms`), with the queue's skill at the minimum proficiency, idle longest, not in
    /// `exclude` (agents that already let this call ring out). Ties go to the lower id.
    pub fn pick_agent(&self, queue: &str, now_ms: Millis, exclude: &[String]) -> Option<&Agent> {
        self.pick_agent_where(queue, now_ms, |id| exclude.iter().any(|e| e == id))
    }

    /// [`StateMachine::pick_agent`] with the exclusion as a predicate on the agent id. Walks
    /// the ready index of the queue's skill in idle order: the cost is the number of ready
    /// agents skipped, not the number of agents.
    pub fn pick_agent_where(
        &self,
        queue: &str,
        now_ms: Millis,
        skip: impl Fn(&str) -> bool,
    ) -> Option<&Agent> {
        let spec = self.queues.get(queue)?;
        self.ready
            .get(&spec.skill)?
            .iter()
            .filter(|(_, id)| !skip(id))
            .filter_map(|(_, id)| self.agents.get(id))
            .find(|a| {
                a.may_be_offered()
                    && a.registration
                        .as_ref()
                        .is_some_and(|r| r.expires_at_ms > now_ms)
                    && a.skills
                        .get(&spec.skill)
                        .is_some_and(|p| *p >= spec.min_proficiency)
            })
    }

    /// Whether any agent with the queue's skill is logged in (any state but logged-out).
    pub fn has_logged_in_agent(&self, queue: &str) -> bool {
        let Some(spec) = self.queues.get(queue) else {
            return false;
        };
        self.agents.values().any(|a| {
            a.state != AgentState::LoggedOut
                && a.skills
                    .get(&spec.skill)
                    .is_some_and(|p| *p >= spec.min_proficiency)
        })
    }
}

/// The live call `call_id`, or the error naming it.
fn call_mut<'a>(
    calls: &'a mut BTreeMap<String, CallRecord>,
    call_id: &str,
) -> Result<&'a mut CallRecord, ClusterError> {
    calls
        .get_mut(call_id)
        .ok_or_else(|| ClusterError::UnknownCall {
            call_id: call_id.to_string(),
        })
}

/// Takes a call out of its queue's waiting order (if it is there).
fn unwait(waiting: &mut BTreeMap<String, BTreeSet<WaitKey>>, call: &CallRecord) {
    if let Some(set) = call.queue.as_ref().and_then(|q| waiting.get_mut(q)) {
        set.remove(&wait_key(call));
    }
}

fn wait_key(call: &CallRecord) -> WaitKey {
    (
        Reverse(call.priority),
        call.arrived_ms,
        call.seq,
        call.call_id.clone(),
    )
}

fn set_state(agent: &mut Agent, state: AgentState, reason: Option<String>, at_ms: Millis) {
    if state == AgentState::Ready && agent.state != AgentState::Ready {
        agent.idle_since_ms = at_ms;
    }
    if agent.state != state {
        agent.state_since_ms = at_ms;
    }
    agent.state = state;
    agent.reason = if state == AgentState::NotReady {
        reason
    } else {
        None
    };
}

fn secs(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

mod transfer;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod console_tests;
