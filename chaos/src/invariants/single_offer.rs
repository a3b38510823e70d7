//! No queued call is offered to two agents at once, and no agent holds two calls: in every
//! node's applied state, at every step.
//!
//! In a state: each ringing or talking call names an agent whose state and `call_id` point
//! back at it; no agent is named by two such calls; an agent ringing or busy holds a live call.

use super::Violation;
use lingxi_cluster::StateMachine;
use lingxi_cluster::model::{AgentState, CallPhase};
use std::collections::BTreeMap;

const NAME: &str = "single_offer";

/// Checks one applied state (of `node`, at `at_ms`).
pub fn check_state(node: &str, at_ms: u64, sm: &StateMachine) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |detail: String| out.push(Violation::new(NAME, Some(at_ms), Some(node), detail));
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for call in sm.calls().values() {
        let expect = match call.phase {
            CallPhase::Ringing => AgentState::Ringing,
            CallPhase::Talking | CallPhase::Held => AgentState::Busy,
            CallPhase::Routing | CallPhase::Queued => continue,
        };
        let Some(agent_id) = call.agent.as_deref() else {
            v(format!(
                "call {} is {} with no agent",
                call.call_id,
                call.phase.as_str()
            ));
            continue;
        };
        holders.entry(agent_id).or_default().push(&call.call_id);
        match sm.agent_by_id(agent_id) {
            Some(a) if a.state == expect && a.call_id.as_deref() == Some(&call.call_id) => {}
            Some(a) => v(format!(
                "call {} is {} with agent {agent_id}, but the agent is {} on {:?}",
                call.call_id,
                call.phase.as_str(),
                a.state.as_str(),
                a.call_id
            )),
            None => v(format!(
                "call {} is {} with agent {agent_id}, who does not exist",
                call.call_id,
                call.phase.as_str()
            )),
        }
    }
    for (agent, calls) in &holders {
        if calls.len() > 1 {
            v(format!(
                "agent {agent} holds {} calls at once: {}",
                calls.len(),
                calls.join(", ")
            ));
        }
    }
    for a in sm.agents().values() {
        if !matches!(a.state, AgentState::Ringing | AgentState::Busy) {
            continue;
        }
        let held = a
            .call_id
            .as_deref()
            .and_then(|c| sm.call(c))
            .is_some_and(|c| c.agent.as_deref() == Some(&a.id));
        if !held {
            v(format!(
                "agent {} is {} for {:?}, which is not a live call of theirs",
                a.id,
                a.state.as_str(),
                a.call_id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingxi_cluster::Command;

    #[test]
    fn a_consistent_state_passes_and_a_stuck_agent_is_caught() {
        let mut sm = StateMachine::new();
        assert!(check_state("n1", 0, &sm).is_empty());
        // A state the state machine should never reach, made by restoring edited JSON: an
        // agent busy on a call that does not exist.
        sm.apply(
            1,
            &Command::UpsertAgent {
                id: "a1".into(),
                name: "A".into(),
                ha1: String::new(),
                skills: Default::default(),
                at_ms: 0,
            },
        )
        .unwrap();
        let mut json = serde_json::to_value(&sm).unwrap();
        json["agents"]["a1"]["state"] = "busy".into();
        json["agents"]["a1"]["call_id"] = "ghost".into();
        let broken: StateMachine = serde_json::from_value(json).unwrap();
        let v = check_state("n1", 0, &broken);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("a1"), "{}", v[0]);
    }
}
