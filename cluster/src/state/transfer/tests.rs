use crate::command::Command;
use crate::model::{AgentState, CallPhase, TransferTarget};
use crate::state::StateMachine;
use crate::state::tests::{agent, arrive, dialog, enqueue, queue, register, run, try_apply};
use crate::{ClusterError, Event};

/// Call "c1" talking with agent 1001; agents 1002 (ready) and 1003 (not registered) exist;
/// queues "support" and "cards".
fn talking() -> StateMachine {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            queue("cards", "support"),
            agent("1001", 5),
            agent("1002", 5),
            agent("1003", 5),
            register("1001", 1),
            register("1002", 2),
            arrive("c0", 5),
            enqueue("c0", 5, 5),
            arrive("c1", 10),
            enqueue("c1", 5, 10),
            Command::CallOffered {
                call_id: "c1".into(),
                agent: "1001".into(),
                at_ms: 11,
            },
            Command::CallAnswered {
                call_id: "c1".into(),
                agent: "1001".into(),
                b_leg: dialog("b1"),
                recording: Some("one.wav".into()),
                at_ms: 12,
            },
        ],
    );
    sm
}

fn transfer(to: TransferTarget) -> Command {
    Command::CallTransferred {
        call_id: "c1".into(),
        from_agent: "1001".into(),
        to,
        wrapup_secs: 5,
        at_ms: 20,
    }
}

#[test]
fn transfer_to_a_queue_waits_in_arrival_order_and_the_agent_wraps_up() {
    let mut sm = talking();
    let events = run(
        &mut sm,
        vec![transfer(TransferTarget::Queue {
            queue: "cards".into(),
        })],
    );
    assert!(events.contains(&Event::AgentWrapUp {
        id: "1001".into(),
        call_id: "c1".into(),
        secs: 5,
    }));
    let call = sm.call("c1").unwrap();
    assert_eq!(call.phase, CallPhase::Queued);
    assert_eq!(call.queue.as_deref(), Some("cards"));
    assert_eq!(call.agent, None);
    assert_eq!(call.b_leg, None);
    let from = sm.agent_by_id("1001").unwrap();
    assert_eq!(from.state, AgentState::WrapUp);
    // Its leg is the agent's until the BYE to it is over, as after a call's end.
    let leg = from
        .leg_to_release
        .as_ref()
        .expect("the transferring agent's leg");
    assert_eq!(leg.call_id, "c1");
    run(
        &mut sm,
        vec![Command::AgentLegReleased {
            id: "1001".into(),
            call_id: "c1".into(),
        }],
    );
    assert!(sm.agent_by_id("1001").unwrap().leg_to_release.is_none());
    let waiting: Vec<&str> = sm.waiting("cards").map(|c| c.call_id.as_str()).collect();
    assert_eq!(waiting, ["c1"]);
    // A call that arrived later waits behind it even in the same queue.
    run(
        &mut sm,
        vec![
            arrive("c2", 30),
            Command::CallQueued {
                call_id: "c2".into(),
                queue: "cards".into(),
                priority: 5,
                at_ms: 30,
            },
        ],
    );
    let waiting: Vec<&str> = sm.waiting("cards").map(|c| c.call_id.as_str()).collect();
    assert_eq!(waiting, ["c1", "c2"]);
}

#[test]
fn transfer_to_an_agent_rings_it_and_one_cdr_names_both() {
    let mut sm = talking();
    run(
        &mut sm,
        vec![
            transfer(TransferTarget::Agent {
                agent: "1002".into(),
            }),
            Command::CallAnswered {
                call_id: "c1".into(),
                agent: "1002".into(),
                b_leg: dialog("b2"),
                recording: Some("two.wav".into()),
                at_ms: 25,
            },
        ],
    );
    assert_eq!(sm.agent_by_id("1002").unwrap().state, AgentState::Busy);
    let events = run(
        &mut sm,
        vec![Command::CallEnded {
            call_id: "c1".into(),
            outcome: "call.completed".into(),
            ended_by: "caller".into(),
            wrapup_secs: 5,
            at_ms: 40,
        }],
    );
    let cdr = events
        .iter()
        .find_map(|e| match e {
            Event::CallEnded(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a CDR");
    assert_eq!(cdr.agent.as_deref(), Some("1002"));
    assert_eq!(cdr.answered_ms, Some(12), "wait counts to the first answer");
    assert_eq!(cdr.transfers.len(), 1);
    assert_eq!(cdr.transfers[0].from_agent, "1001");
    assert_eq!(cdr.recordings, ["one.wav", "two.wav"]);
    assert_eq!(sm.agent_by_id("1002").unwrap().state, AgentState::WrapUp);
}

#[test]
fn transfer_ringing_out_goes_back_to_the_queue_and_the_target_does_not_wrap_up() {
    let mut sm = talking();
    run(
        &mut sm,
        vec![
            transfer(TransferTarget::Agent {
                agent: "1002".into(),
            }),
            Command::CallOfferFailed {
                call_id: "c1".into(),
                agent: "1002".into(),
                reason: "agent.no_answer".into(),
                agent_not_ready: false,
                at_ms: 30,
            },
        ],
    );
    assert_eq!(sm.call("c1").unwrap().phase, CallPhase::Queued);
    run(
        &mut sm,
        vec![Command::CallEnded {
            call_id: "c1".into(),
            outcome: "queue.abandoned".into(),
            ended_by: "caller".into(),
            wrapup_secs: 5,
            at_ms: 40,
        }],
    );
    assert_eq!(sm.agent_by_id("1002").unwrap().state, AgentState::Ready);
}

#[test]
fn refused_transfers_leave_the_call_as_it_was() {
    let mut sm = talking();
    let before = sm.call("c1").cloned();
    for (to, what) in [
        (
            TransferTarget::Agent {
                agent: "1003".into(),
            },
            "unregistered agent",
        ),
        (
            TransferTarget::Agent {
                agent: "1001".into(),
            },
            "to oneself",
        ),
        (
            TransferTarget::Queue {
                queue: "nope".into(),
            },
            "unknown queue",
        ),
    ] {
        let r = try_apply(&mut sm, transfer(to));
        assert!(
            matches!(
                r,
                Err(ClusterError::AgentUnavailable { .. } | ClusterError::UnknownQueue { .. })
            ),
            "{what}: {r:?}"
        );
        assert_eq!(sm.call("c1").cloned(), before, "{what}");
    }
    // Not the agent on the call.
    let r = try_apply(
        &mut sm,
        Command::CallTransferred {
            call_id: "c1".into(),
            from_agent: "1002".into(),
            to: TransferTarget::Queue {
                queue: "cards".into(),
            },
            wrapup_secs: 0,
            at_ms: 21,
        },
    );
    assert!(matches!(r, Err(ClusterError::Conflict { .. })), "{r:?}");
    assert_eq!(sm.agent_by_id("1001").unwrap().state, AgentState::Busy);
}
