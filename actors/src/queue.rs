//! `QueueActor`: one per queue. Matches its waiting calls (priority, then arrival) with the
//! ready agent who has the skill and has idled longest, and offers each call through the log.

use crate::call::CallMsg;
use crate::switch::{Switch, now_ms};
use lingxi_cluster::Command;
use lingxi_cluster::model::Registration;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The queue actor (stateless handler; its state is [`QueueState`]).
pub struct QueueActor;

/// Messages to a queue actor.
#[derive(Debug)]
pub enum QueueMsg {
    /// Something changed (a call waits, an agent became ready): try to match.
    Kick,
}

/// What a queue actor keeps between messages.
pub struct QueueState {
    /// The switch.
    sw: Arc<Switch>,
    /// Queue id.
    id: String,
    /// Agents that already let each call ring out, so the next offer goes to someone else.
    tried: HashMap<String, Vec<String>>,
}

impl Actor for QueueActor {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = (Arc<Switch>, String);

    async fn pre_start(
        &self,
        _myself: ActorRef<QueueMsg>,
        (sw, id): (Arc<Switch>, String),
    ) -> Result<QueueState, ActorProcessingErr> {
        Ok(QueueState {
            sw,
            id,
            tried: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<QueueMsg>,
        msg: QueueMsg,
        st: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            QueueMsg::Kick => {
                if let Some(e) = st.sw.queues.get(&st.id) {
                    e.value().1.store(false, Ordering::Release);
                }
                match_calls(st).await;
            }
        }
        Ok(())
    }
}

/// One offer decided under a single read of the state.
struct Offer {
    call_id: String,
    agent: String,
    registration: Registration,
}

async fn match_calls(st: &mut QueueState) {
    let now = now_ms();
    let offers: Vec<Offer> = st.sw.log.read(|sm| {
        let mut taken: HashSet<String> = HashSet::new();
        let mut offers = Vec::new();
        for call in sm.waiting(&st.id) {
            // Each node offers only the calls it owns (their actor and media run here).
            if call.owner != st.sw.node_id {
                continue;
            }
            let mut exclude: Vec<String> = taken.iter().cloned().collect();
            let tried = st.tried.get(&call.call_id);
            if let Some(t) = tried {
                exclude.extend(t.iter().cloned());
            }
            let mut agent = sm.pick_agent(&st.id, now, &exclude);
            if agent.is_none() && tried.is_some() {
                // Everyone eligible has had a go: start the round again.
                let fresh: Vec<String> = taken.iter().cloned().collect();
                agent = sm.pick_agent(&st.id, now, &fresh);
            }
            let Some(agent) = agent else {
                if taken.is_empty() && sm.pick_agent(&st.id, now, &[]).is_none() {
                    break; // nobody is ready at all
                }
                continue;
            };
            let Some(registration) = agent.registration.clone() else {
                continue;
            };
            taken.insert(agent.id.clone());
            offers.push(Offer {
                call_id: call.call_id.clone(),
                agent: agent.id.clone(),
                registration,
            });
        }
        offers
    });
    // Calls no longer waiting need no memory of who was tried.
    st.sw
        .log
        .read(|sm| st.tried.retain(|call_id, _| sm.call(call_id).is_some()));
    for offer in offers {
        let cmd = Command::CallOffered {
            call_id: offer.call_id.clone(),
            agent: offer.agent.clone(),
            at_ms: now_ms(),
        };
        match st.sw.log.propose(cmd).await {
            Ok(_) => {
                let tried = st.tried.entry(offer.call_id.clone()).or_default();
                if !tried.contains(&offer.agent) {
                    tried.push(offer.agent.clone());
                } else {
                    tried.clear();
                    tried.push(offer.agent.clone());
                }
                let actor = st.sw.calls.get(&offer.call_id).map(|a| a.clone());
                match actor {
                    Some(actor) => {
                        let _ = actor.cast(CallMsg::Offer {
                            agent: offer.agent,
                            registration: offer.registration,
                        });
                    }
                    None => {
                        tracing::warn!(call_id = %offer.call_id, "offered call has no actor on this node")
                    }
                }
            }
            Err(e) => {
                tracing::debug!(call_id = %offer.call_id, agent = %offer.agent, error = %e, "offer refused")
            }
        }
    }
}
