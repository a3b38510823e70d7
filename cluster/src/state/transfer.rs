//! Blind transfer: the agent on a call hands it to a queue or to another agent.

use super::{StateMachine, call_mut, set_state, wait_key};
use crate::error::ClusterError;
use crate::model::{AgentState, CallPhase, LegToRelease, Millis, Transfer, TransferTarget};
use crate::state::Event;

impl StateMachine {
    /// Applies `Command::CallTransferred` (see its documentation).
    pub(super) fn apply_transfer(
        &mut self,
        call_id: &str,
        from_agent: &str,
        to: &TransferTarget,
        wrapup_secs: u64,
        at_ms: Millis,
    ) -> Result<Vec<Event>, ClusterError> {
        let call = self
            .calls
            .get(call_id)
            .ok_or_else(|| ClusterError::UnknownCall {
                call_id: call_id.to_string(),
            })?;
        if !matches!(call.phase, CallPhase::Talking | CallPhase::Held)
            || call.agent.as_deref() != Some(from_agent)
        {
            return Err(ClusterError::Conflict {
                what: format!("{from_agent} transferring call {call_id}"),
                detail: format!("the call is {} with {:?}", call.phase.as_str(), call.agent),
            });
        }
        // Check the target before changing anything: a refused transfer leaves the call as it was.
        match to {
            TransferTarget::Queue { queue } => {
                if !self.queues.contains_key(queue) {
                    return Err(ClusterError::UnknownQueue {
                        queue: queue.clone(),
                    });
                }
            }
            TransferTarget::Agent { agent } => {
                let target = self.agent(agent)?;
                if agent == from_agent || !target.may_be_offered() || target.registration.is_none()
                {
                    return Err(ClusterError::AgentUnavailable {
                        agent: agent.clone(),
                        state: target.state,
                        detail: format!("cannot take call {call_id} by transfer"),
                    });
                }
            }
        }
        let mut events = Vec::new();
        // Its leg stays the transferring agent's until the BYE to it is over, as after an end.
        let leg = self.calls.get(call_id).and_then(LegToRelease::of);
        // The transferring agent leaves the call: wrap-up (it talked), or ready.
        if let Some(agent) = self.agents.get_mut(from_agent)
            && agent.call_id.as_deref() == Some(call_id)
        {
            agent.leg_to_release = leg;
            if wrapup_secs > 0 {
                set_state(agent, AgentState::WrapUp, None, at_ms);
                events.push(Event::AgentWrapUp {
                    id: from_agent.to_string(),
                    call_id: call_id.to_string(),
                    secs: wrapup_secs,
                });
            } else {
                set_state(agent, AgentState::Ready, None, at_ms);
                agent.call_id = None;
            }
            events.push(Event::AgentChanged {
                id: from_agent.to_string(),
                state: agent.state,
            });
        }
        let call = call_mut(&mut self.calls, call_id)?;
        call.b_leg = None;
        call.transfers.push(Transfer {
            from_agent: from_agent.to_string(),
            to: to.clone(),
            at_ms,
        });
        match to {
            TransferTarget::Queue { queue } => {
                call.agent = None;
                call.queue = Some(queue.clone());
                call.priority = self.queues.get(queue).map_or(0, |q| q.priority);
                call.phase = CallPhase::Queued;
                call.queued_ms = Some(at_ms);
                // Keeps its arrival time: it waits ahead of callers who came after it.
                self.waiting
                    .entry(queue.clone())
                    .or_default()
                    .insert(wait_key(call));
                events.push(Event::CallWaiting {
                    call_id: call_id.to_string(),
                    queue: queue.clone(),
                });
            }
            TransferTarget::Agent { agent: target } => {
                call.agent = Some(target.clone());
                call.phase = CallPhase::Ringing;
                call.offers += 1;
                let agent = self.agents.get_mut(target).expect("checked above");
                set_state(agent, AgentState::Ringing, None, at_ms);
                agent.call_id = Some(call_id.to_string());
                events.push(Event::AgentChanged {
                    id: target.clone(),
                    state: AgentState::Ringing,
                });
            }
        }
        events.push(Event::CallChanged {
            call_id: call_id.to_string(),
        });
        Ok(events)
    }
}

#[cfg(test)]
mod tests;
