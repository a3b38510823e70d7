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
        let mut taken: HashSet<&str> = HashSet::new();
        let mut offers = Vec::new();
        for call in sm.waiting(&st.id) {
            // Each node offers only the calls it owns (their actor and media run here).
            if call.owner != st.sw.node_id {
                continue;
            }
            let tried = st.tried.get(&call.call_id);
            let skip =
                |id: &str| taken.contains(id) || tried.is_some_and(|t| t.iter().any(|x| x == id));
            let agent = match sm.pick_agent_where(&st.id, now, skip) {
                Some(a) => a,
                // Everyone eligible has had a go (or nobody is free): start the round again.
                None => match sm.pick_agent_where(&st.id, now, |id| taken.contains(id)) {
                    Some(a) => a,
                    None => break, // no free agent for this queue at all
                },
            };
            let Some(registration) = agent.registration.clone() else {
                continue;
            };
            taken.insert(agent.id.as_str());
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
    // Propose the round's offers together: the log commits them in one batch.
    let mut round = tokio::task::JoinSet::new();
    for offer in offers {
        let log = st.sw.log.clone();
        round.spawn(async move {
            let cmd = Command::CallOffered {
                call_id: offer.call_id.clone(),
                agent: offer.agent.clone(),
                at_ms: now_ms(),
            };
            let res = log.propose(cmd).await;
            (offer, res)
        });
    }
    let mut refused = 0usize;
    while let Some(joined) = round.join_next().await {
        let Ok((offer, res)) = joined else { continue };
        match res {
            Ok(_) => {
                let tried = st.tried.entry(offer.call_id.clone()).or_default();
                if tried.contains(&offer.agent) {
                    tried.clear();
                }
                tried.push(offer.agent.clone());
                match st.sw.calls.get(&offer.call_id).map(|a| a.clone()) {
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
                refused += 1;
                tracing::debug!(call_id = %offer.call_id, agent = %offer.agent, error = %e, "offer refused");
            }
        }
    }
    if refused > 0 {
        // The state moved under us (an agent taken by another queue, a call gone): look again.
        st.sw.kick_queue(&st.id);
    }
}
