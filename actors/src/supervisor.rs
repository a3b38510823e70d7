//! Supervisors. `CallSupervisor` ends a failed call cleanly (BYE to both legs from the
//! replicated dialogs, CDR `call.actor_failed`); `RestartingSupervisor` restarts queue and agent
//! actors, whose state lives in the log.

use crate::call::end_call_from_record;
use crate::switch::Switch;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;

/// Supervises every call actor of the node.
pub struct CallSupervisor;

/// The call supervisor takes no messages of its own; it only handles supervision events.
#[derive(Debug)]
pub enum CallSupMsg {}

impl Actor for CallSupervisor {
    type Msg = CallSupMsg;
    type State = Arc<Switch>;
    type Arguments = Arc<Switch>;

    async fn pre_start(
        &self,
        _me: ActorRef<CallSupMsg>,
        sw: Arc<Switch>,
    ) -> Result<Arc<Switch>, ActorProcessingErr> {
        Ok(sw)
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<CallSupMsg>,
        event: SupervisionEvent,
        sw: &mut Arc<Switch>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let call_ids = forget_actor(sw, &cell);
                tracing::error!(actor = %cell.get_id(), ?call_ids, error = %error, "call actor failed; ending its call");
                metrics::counter!("lingxi_call_actor_failures_total").increment(1);
                // The first id registered is the caller leg's Call-ID, the call's id.
                let sw = sw.clone();
                tokio::spawn(async move {
                    for id in call_ids {
                        if sw.log.read(|sm| sm.call(&id).is_some()) {
                            end_call_from_record(&sw, &id, "call.actor_failed").await;
                        }
                    }
                });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                forget_actor(sw, &cell);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Removes a dead call actor from the Call-ID routing table; returns the Call-IDs it had.
fn forget_actor(sw: &Switch, cell: &ActorCell) -> Vec<String> {
    let id = cell.get_id();
    let ids: Vec<String> = sw
        .calls
        .iter()
        .filter(|e| e.value().get_id() == id)
        .map(|e| e.key().clone())
        .collect();
    for k in &ids {
        sw.calls.remove(k);
    }
    ids
}

/// Supervises queue and agent actors and restarts them when they fail.
pub struct RestartingSupervisor;

/// The restarting supervisor takes no messages of its own.
#[derive(Debug)]
pub enum SupMsg {}

impl Actor for RestartingSupervisor {
    type Msg = SupMsg;
    type State = Arc<Switch>;
    type Arguments = Arc<Switch>;

    async fn pre_start(
        &self,
        _me: ActorRef<SupMsg>,
        sw: Arc<Switch>,
    ) -> Result<Arc<Switch>, ActorProcessingErr> {
        Ok(sw)
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<SupMsg>,
        event: SupervisionEvent,
        sw: &mut Arc<Switch>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let name = cell.get_name().unwrap_or_default();
            tracing::error!(actor = %name, error = %error, "actor failed; restarting it");
            let prefix = format!("{}/", sw.node_id);
            let rest = name.strip_prefix(&prefix).unwrap_or(&name);
            if let Some(q) = rest.strip_prefix("queue/") {
                sw.queues.remove(q);
                sw.ensure_queue(q).await;
            } else if let Some(a) = rest.strip_prefix("agent/") {
                sw.agents.remove(a);
                sw.ensure_agent(a).await;
            }
        }
        Ok(())
    }
}
