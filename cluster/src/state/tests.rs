use super::*;
use crate::model::{Overflow, Registration};
use crate::{DialogRole, DialogState, SipTransport};

pub(super) fn dialog(call_id: &str) -> DialogState {
    DialogState {
        call_id: call_id.into(),
        local_tag: "lt".into(),
        remote_tag: "rt".into(),
        role: DialogRole::Uas,
        local_seq: 1,
        remote_seq: Some(1),
        local_uri: "sip:support@lingxi.local".into(),
        remote_uri: "sip:caller@example.com".into(),
        remote_target: "sip:caller@127.0.0.1:5070".into(),
        route_set: vec![],
        local_contact: "sip:support@127.0.0.1:5060".into(),
        transport: SipTransport::Udp,
        peer: "127.0.0.1:5070".parse().unwrap(),
        local_sdp: None,
        remote_sdp: None,
        sdp_version: 1,
    }
}

pub(super) fn queue(id: &str, skill: &str) -> Command {
    Command::UpsertQueue(QueueSpec {
        id: id.into(),
        name: id.into(),
        extensions: vec!["8000".into()],
        skill: skill.into(),
        min_proficiency: 3,
        priority: 5,
        ring_timeout_secs: 15,
        max_wait_secs: 300,
        wrapup_secs: 5,
        not_ready_on_no_answer: true,
        overflow: Overflow::Hangup,
        overflow_when_no_agents: true,
    })
}

pub(super) fn agent(id: &str, prof: u8) -> Command {
    Command::UpsertAgent {
        id: id.into(),
        name: id.into(),
        ha1: "00".into(),
        skills: [("support".to_string(), prof)].into_iter().collect(),
        at_ms: 0,
    }
}

pub(super) fn register(id: &str, at_ms: u64) -> Command {
    Command::Register {
        id: id.into(),
        registration: Some(Registration {
            contact: format!("sip:{id}@127.0.0.1:6000"),
            peer: "127.0.0.1:6000".parse().unwrap(),
            transport: SipTransport::Udp,
            expires_at_ms: at_ms + 600_000,
            node: "n1".into(),
            user_agent: None,
        }),
        at_ms,
    }
}

pub(super) fn arrive(id: &str, at_ms: u64) -> Command {
    Command::CallArrived {
        call_id: id.into(),
        caller: "caller".into(),
        called: "support".into(),
        owner: "n1".into(),
        a_leg: dialog(id),
        at_ms,
    }
}

pub(super) fn enqueue(id: &str, priority: u8, at_ms: u64) -> Command {
    Command::CallQueued {
        call_id: id.into(),
        queue: "support".into(),
        priority,
        at_ms,
    }
}

/// Applies commands at consecutive indexes, failing the test on a refusal.
pub(super) fn run(sm: &mut StateMachine, cmds: Vec<Command>) -> Vec<Event> {
    let mut out = Vec::new();
    for c in cmds {
        let i = sm.applied_index() + 1;
        out.extend(
            sm.apply(i, &c)
                .unwrap_or_else(|e| panic!("{} refused: {e}", c.kind())),
        );
    }
    out
}

pub(super) fn try_apply(sm: &mut StateMachine, c: Command) -> Result<Vec<Event>, ClusterError> {
    let i = sm.applied_index() + 1;
    sm.apply(i, &c)
}

#[test]
fn registration_logs_in_and_longest_idle_ready_agent_with_skill_is_picked() {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            agent("1001", 5),
            agent("1002", 5),
            agent("1003", 2),
        ],
    );
    assert_eq!(
        sm.pick_agent("support", 10, &[]),
        None,
        "nobody registered yet"
    );
    run(
        &mut sm,
        vec![
            register("1002", 100),
            register("1001", 200),
            register("1003", 50),
        ],
    );
    assert_eq!(sm.agent_by_id("1001").unwrap().state, AgentState::Ready);
    // 1003 idles longest but lacks proficiency 3; 1002 became ready before 1001.
    assert_eq!(sm.pick_agent("support", 300, &[]).unwrap().id, "1002");
    assert_eq!(
        sm.pick_agent("support", 300, &["1002".into()]).unwrap().id,
        "1001"
    );
    // Expired bindings are not offered calls.
    assert_eq!(
        sm.pick_agent("support", 100 + 600_000, &[]).unwrap().id,
        "1001"
    );
    assert!(sm.pick_agent("support", 200 + 600_000, &[]).is_none());
}

#[test]
fn waiting_calls_are_ordered_by_priority_then_arrival() {
    let mut sm = StateMachine::new();
    run(&mut sm, vec![queue("support", "support")]);
    run(
        &mut sm,
        vec![
            arrive("a", 10),
            arrive("b", 20),
            arrive("c", 30),
            arrive("d", 30),
        ],
    );
    run(
        &mut sm,
        vec![
            enqueue("c", 5, 31),
            enqueue("a", 5, 11),
            enqueue("b", 9, 21),
            enqueue("d", 5, 32),
        ],
    );
    let order: Vec<&str> = sm.waiting("support").map(|c| c.call_id.as_str()).collect();
    assert_eq!(order, ["b", "a", "c", "d"]);
    assert_eq!(sm.queue_depth("support"), 4);
    assert_eq!(sm.longest_wait_ms("support", 1011), 1000);
}

#[test]
fn an_agent_cannot_be_offered_two_calls() {
    let mut sm = one_agent();
    run(
        &mut sm,
        vec![
            arrive("a", 10),
            arrive("b", 11),
            enqueue("a", 5, 10),
            enqueue("b", 5, 11),
        ],
    );
    run(
        &mut sm,
        vec![Command::CallOffered {
            call_id: "a".into(),
            agent: "1001".into(),
            at_ms: 12,
        }],
    );
    let err = try_apply(
        &mut sm,
        Command::CallOffered {
            call_id: "b".into(),
            agent: "1001".into(),
            at_ms: 12,
        },
    );
    assert!(
        matches!(
            err,
            Err(ClusterError::AgentUnavailable {
                state: AgentState::Ringing,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(sm.call("b").unwrap().phase, CallPhase::Queued);
    // A call already ringing cannot be offered to someone else either.
    run(&mut sm, vec![agent("1002", 5), register("1002", 13)]);
    let err = try_apply(
        &mut sm,
        Command::CallOffered {
            call_id: "a".into(),
            agent: "1002".into(),
            at_ms: 14,
        },
    );
    assert!(matches!(err, Err(ClusterError::Conflict { .. })), "{err:?}");
}

#[test]
fn a_failed_offer_puts_the_call_back_in_its_place_and_the_agent_not_ready() {
    let mut sm = one_agent();
    run(
        &mut sm,
        vec![
            arrive("a", 10),
            arrive("b", 20),
            enqueue("a", 5, 10),
            enqueue("b", 5, 20),
        ],
    );
    run(
        &mut sm,
        vec![Command::CallOffered {
            call_id: "a".into(),
            agent: "1001".into(),
            at_ms: 21,
        }],
    );
    assert_eq!(
        sm.waiting("support")
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>(),
        ["b"]
    );
    let events = run(
        &mut sm,
        vec![Command::CallOfferFailed {
            call_id: "a".into(),
            agent: "1001".into(),
            reason: "agent.no_answer".into(),
            agent_not_ready: true,
            at_ms: 36,
        }],
    );
    assert!(events.contains(&Event::CallWaiting {
        call_id: "a".into(),
        queue: "support".into()
    }));
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!(
        (a.state, a.reason.as_deref()),
        (AgentState::NotReady, Some("agent.no_answer"))
    );
    assert_eq!(
        sm.waiting("support")
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(sm.call("a").unwrap().offers, 1);
}

#[test]
fn answered_call_ends_with_one_cdr_and_agent_in_wrap_up() {
    let mut sm = one_agent();
    run(&mut sm, vec![arrive("a", 1_000), enqueue("a", 5, 1_000)]);
    run(
        &mut sm,
        vec![Command::CallOffered {
            call_id: "a".into(),
            agent: "1001".into(),
            at_ms: 3_000,
        }],
    );
    run(
        &mut sm,
        vec![Command::CallAnswered {
            call_id: "a".into(),
            agent: "1001".into(),
            b_leg: dialog("b-leg"),
            recording: Some("/r/a.wav".into()),
            at_ms: 4_500,
        }],
    );
    assert_eq!(sm.agent_by_id("1001").unwrap().state, AgentState::Busy);
    let events = run(
        &mut sm,
        vec![Command::CallEnded {
            call_id: "a".into(),
            outcome: "call.completed".into(),
            ended_by: "caller".into(),
            wrapup_secs: 5,
            at_ms: 64_500,
        }],
    );
    let cdr = events
        .iter()
        .find_map(|e| {
            if let Event::CallEnded(c) = e {
                Some(c.clone())
            } else {
                None
            }
        })
        .expect("a CDR");
    assert_eq!(cdr.outcome, "call.completed");
    assert_eq!(cdr.agent.as_deref(), Some("1001"));
    assert_eq!((cdr.wait_secs, cdr.talk_secs), (3.5, 60.0));
    assert_eq!(cdr.recording.as_deref(), Some("/r/a.wav"));
    // The caller hung up: the agent's leg is the one left to hang up, just before the CDR.
    let at = |f: &dyn Fn(&Event) -> bool| events.iter().position(f);
    let legs = at(&|e| {
        matches!(e, Event::CallLegsToHangUp { call_id, legs, .. }
            if call_id == "a" && legs.len() == 1 && legs[0].call_id == "b-leg")
    });
    assert!(
        legs.is_some() && legs < at(&|e| matches!(e, Event::CallEnded(_))),
        "{events:#?}"
    );
    assert!(sm.call("a").is_none());
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!((a.state, a.calls_answered), (AgentState::WrapUp, 1));
    // The wrap-up timer may race with a person: only_if guards it.
    run(
        &mut sm,
        vec![Command::SetAgentState {
            id: "1001".into(),
            state: AgentState::Ready,
            reason: None,
            only_if: Some(AgentState::WrapUp),
            at_ms: 69_500,
        }],
    );
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!((a.state, a.idle_since_ms), (AgentState::Ready, 69_500));
    // Ending it twice is refused: exactly one CDR.
    let again = try_apply(
        &mut sm,
        Command::CallEnded {
            call_id: "a".into(),
            outcome: "x".into(),
            ended_by: "caller".into(),
            wrapup_secs: 0,
            at_ms: 1,
        },
    );
    assert!(matches!(again, Err(ClusterError::UnknownCall { .. })));
}

/// Queue "support" and agent 1001, registered (ready).
fn one_agent() -> StateMachine {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            agent("1001", 5),
            register("1001", 1),
        ],
    );
    sm
}

/// Offers and answers call `id` to agent 1001, whose leg's Call-ID is `id`-b.
fn talk(sm: &mut StateMachine, id: &str, at_ms: u64) {
    run(
        sm,
        vec![
            arrive(id, at_ms),
            enqueue(id, 5, at_ms),
            Command::CallOffered {
                call_id: id.into(),
                agent: "1001".into(),
                at_ms: at_ms + 1,
            },
            Command::CallAnswered {
                call_id: id.into(),
                agent: "1001".into(),
                b_leg: dialog(&format!("{id}-b")),
                recording: None,
                at_ms: at_ms + 2,
            },
        ],
    );
}

fn end(id: &str, ended_by: &str, at_ms: u64) -> Command {
    Command::CallEnded {
        call_id: id.into(),
        outcome: "call.completed".into(),
        ended_by: ended_by.into(),
        wrapup_secs: 0,
        at_ms,
    }
}

#[test]
fn an_agent_whose_leg_is_not_yet_hung_up_is_offered_nothing() {
    let mut sm = one_agent();
    talk(&mut sm, "a", 1_000);
    // The caller hung up, no wrap-up: ready on the record, but its phone may hold call a.
    run(&mut sm, vec![end("a", "caller", 2_000)]);
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!(a.state, AgentState::Ready);
    let leg = a
        .leg_to_release
        .as_ref()
        .expect("the agent's leg is still to hang up");
    assert_eq!((leg.call_id.as_str(), leg.node.as_str()), ("a", "n1"));
    assert_eq!(leg.dialog.call_id, "a-b");
    run(&mut sm, vec![arrive("b", 3_000), enqueue("b", 5, 3_000)]);
    assert!(sm.pick_agent("support", 3_000, &[]).is_none());
    let offer = Command::CallOffered {
        call_id: "b".into(),
        agent: "1001".into(),
        at_ms: 3_001,
    };
    let refused = try_apply(&mut sm, offer.clone()).unwrap_err().to_string();
    assert!(refused.contains("leg of call a"), "{refused}");
    // It survives a snapshot: a node restored from one holds the agent back as well.
    let mut restored: StateMachine =
        serde_json::from_slice(&serde_json::to_vec(&sm).unwrap()).unwrap();
    assert!(restored.pick_agent("support", 3_000, &[]).is_none());
    // Another call's release changes nothing; this call's frees the agent (and says so, for
    // the queues to offer what waits); a second one is ignored.
    let release = |call: &str| Command::AgentLegReleased {
        id: "1001".into(),
        call_id: call.into(),
    };
    for sm in [&mut sm, &mut restored] {
        assert!(run(sm, vec![release("z")]).is_empty());
        assert!(sm.pick_agent("support", 3_000, &[]).is_none());
        let events = run(sm, vec![release("a")]);
        assert!(
            matches!(&events[..], [Event::AgentChanged { id, state: AgentState::Ready }] if id == "1001"),
            "{events:#?}"
        );
        assert!(run(sm, vec![release("a")]).is_empty());
        assert_eq!(sm.pick_agent("support", 3_000, &[]).unwrap().id, "1001");
        run(sm, vec![offer.clone()]);
    }
    assert_eq!(
        serde_json::to_value(&sm).unwrap(),
        serde_json::to_value(&restored).unwrap()
    );
    // The agent hanging up leaves no leg of its own to release.
    let mut sm = one_agent();
    talk(&mut sm, "c", 1_000);
    run(&mut sm, vec![end("c", "agent", 2_000)]);
    assert!(sm.agent_by_id("1001").unwrap().leg_to_release.is_none());
    assert_eq!(sm.pick_agent("support", 2_000, &[]).unwrap().id, "1001");
}

#[test]
fn abandoned_while_queued_leaves_the_queue() {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            arrive("a", 0),
            enqueue("a", 5, 0),
        ],
    );
    let events = run(
        &mut sm,
        vec![Command::CallEnded {
            call_id: "a".into(),
            outcome: "queue.abandoned".into(),
            ended_by: "caller".into(),
            wrapup_secs: 5,
            at_ms: 7_000,
        }],
    );
    assert_eq!(sm.queue_depth("support"), 0);
    assert!(
        matches!(&events[0], Event::CallEnded(c) if c.wait_secs == 7.0 && c.talk_secs == 0.0 && c.agent.is_none())
    );
}

#[test]
fn agent_state_changes_are_refused_during_calls_and_for_unknown_agents() {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            agent("1001", 5),
            register("1001", 1),
            arrive("a", 2),
            enqueue("a", 5, 2),
        ],
    );
    run(
        &mut sm,
        vec![Command::CallOffered {
            call_id: "a".into(),
            agent: "1001".into(),
            at_ms: 3,
        }],
    );
    let set = |state| Command::SetAgentState {
        id: "1001".into(),
        state,
        reason: None,
        only_if: None,
        at_ms: 4,
    };
    assert!(matches!(
        try_apply(&mut sm, set(AgentState::NotReady)),
        Err(ClusterError::AgentUnavailable { .. })
    ));
    assert!(matches!(
        try_apply(
            &mut sm,
            Command::SetAgentState {
                id: "nobody".into(),
                state: AgentState::Ready,
                reason: None,
                only_if: None,
                at_ms: 4
            }
        ),
        Err(ClusterError::UnknownAgent { .. })
    ));
    assert!(matches!(
        try_apply(
            &mut sm,
            Command::RemoveQueue {
                id: "support".into()
            }
        ),
        Err(ClusterError::Conflict { .. })
    ));
}

#[test]
fn replicas_applying_the_same_log_agree_and_a_snapshot_restores_the_queue_order() {
    let cmds = vec![
        queue("support", "support"),
        agent("1001", 5),
        register("1001", 1),
        arrive("a", 10),
        arrive("b", 11),
        arrive("c", 12),
        enqueue("a", 1, 10),
        enqueue("b", 9, 11),
        enqueue("c", 5, 12),
        Command::CallOffered {
            call_id: "b".into(),
            agent: "1001".into(),
            at_ms: 13,
        },
    ];
    let mut one = StateMachine::new();
    let mut two = StateMachine::new();
    run(&mut one, cmds.clone());
    run(&mut two, cmds);
    let s1 = serde_json::to_string(&one).unwrap();
    assert_eq!(s1, serde_json::to_string(&two).unwrap());
    let mut restored: StateMachine = serde_json::from_str(&s1).unwrap();
    restored.rebuild_indexes();
    let order = |sm: &StateMachine| {
        sm.waiting("support")
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&restored), ["c", "a"]);
    assert_eq!(order(&restored), order(&one));
}

#[tokio::test]
async fn the_log_replays_after_restart_without_duplicating_cdrs() {
    let store: std::sync::Arc<crate::MemStore> = Default::default();
    {
        let log = crate::ReplicatedLog::open(store.clone(), 4).unwrap();
        for c in [
            queue("support", "support"),
            arrive("a", 0),
            enqueue("a", 5, 0),
            arrive("b", 1),
        ] {
            log.propose(c).await.unwrap();
        }
        log.propose(Command::CallEnded {
            call_id: "a".into(),
            outcome: "queue.abandoned".into(),
            ended_by: "caller".into(),
            wrapup_secs: 0,
            at_ms: 5,
        })
        .await
        .unwrap();
        assert!(
            log.propose(arrive("b", 2)).await.is_err(),
            "duplicate call refused"
        );
    }
    let log = crate::ReplicatedLog::open(store.clone(), 4).unwrap();
    assert_eq!(log.read(|sm| sm.applied_index()), 6);
    assert!(log.read(|sm| sm.call("b").is_some() && sm.call("a").is_none()));
    let cdrs = log.cdrs(10, None).unwrap();
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0].outcome, "queue.abandoned");
}

fn member(node: &str, raft_id: u64) -> Command {
    Command::MemberUp(crate::model::Member {
        node: node.into(),
        raft_id,
        sip_udp: None,
        sip_tcp: None,
        http: None,
        alive: true,
        since_ms: 0,
    })
}

fn arrive_at(id: &str, owner: &str, at_ms: u64) -> Command {
    match arrive(id, at_ms) {
        Command::CallArrived {
            call_id,
            caller,
            called,
            a_leg,
            at_ms,
            ..
        } => Command::CallArrived {
            call_id,
            caller,
            called,
            owner: owner.into(),
            a_leg,
            at_ms,
        },
        _ => unreachable!(),
    }
}

#[test]
fn a_dead_nodes_calls_move_to_live_nodes_and_ringing_ones_are_offered_again() {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            queue("support", "support"),
            agent("1001", 5),
            register("1001", 1),
            member("n1", 1),
            member("n2", 2),
            member("n3", 3),
        ],
    );
    run(
        &mut sm,
        vec![
            arrive_at("talk", "n1", 10),
            enqueue("talk", 5, 10),
            Command::CallOffered {
                call_id: "talk".into(),
                agent: "1001".into(),
                at_ms: 11,
            },
            Command::CallAnswered {
                call_id: "talk".into(),
                agent: "1001".into(),
                b_leg: dialog("b"),
                recording: None,
                at_ms: 12,
            },
            agent("1002", 5),
            register("1002", 13),
            arrive_at("ring", "n1", 14),
            enqueue("ring", 5, 14),
            Command::CallOffered {
                call_id: "ring".into(),
                agent: "1002".into(),
                at_ms: 15,
            },
            arrive_at("stay", "n2", 16),
        ],
    );
    let events = run(
        &mut sm,
        vec![Command::NodeDown {
            node: "n1".into(),
            at_ms: 20,
        }],
    );
    let moved: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::CallOwnerChanged { call_id, to, .. } => Some((call_id.clone(), to.clone())),
            _ => None,
        })
        .collect();
    // Two orphans, handed out in turn to the live nodes, in call-id order.
    assert_eq!(
        moved,
        [
            ("ring".to_string(), "n2".to_string()),
            ("talk".to_string(), "n3".to_string())
        ]
    );
    assert_eq!(sm.call("stay").unwrap().owner, "n2");
    let talk = sm.call("talk").unwrap();
    assert_eq!(
        (talk.phase, talk.failovers, talk.agent.as_deref()),
        (CallPhase::Talking, 1, Some("1001"))
    );
    // The ringing call is back in its queue and its agent free again.
    let ring = sm.call("ring").unwrap();
    assert_eq!(
        (ring.phase, ring.agent.as_deref()),
        (CallPhase::Queued, None)
    );
    assert_eq!(sm.agent_by_id("1002").unwrap().state, AgentState::Ready);
    assert!(events.contains(&Event::CallWaiting {
        call_id: "ring".into(),
        queue: "support".into()
    }));
    assert!(!sm.members()["n1"].alive);
    // Declaring it dead twice changes nothing; a dead node cannot start calls.
    assert!(
        run(
            &mut sm,
            vec![Command::NodeDown {
                node: "n1".into(),
                at_ms: 21
            }]
        )
        .is_empty()
    );
    assert!(matches!(
        try_apply(&mut sm, arrive_at("late", "n1", 22)),
        Err(ClusterError::Conflict { .. })
    ));
    // Until it announces itself again.
    run(&mut sm, vec![member("n1", 1), arrive_at("late", "n1", 23)]);
    // A resumed call that completes says so in its CDR.
    let events = run(
        &mut sm,
        vec![Command::CallEnded {
            call_id: "talk".into(),
            outcome: "call.completed".into(),
            ended_by: "caller".into(),
            wrapup_secs: 0,
            at_ms: 30,
        }],
    );
    assert!(
        matches!(&events[..], [.., Event::CallEnded(c)] if c.outcome == "failover.resumed" && c.failovers == 1 && c.node == "n3")
    );
}

#[test]
fn an_expired_binding_is_removed_but_a_refreshed_one_is_kept() {
    let mut sm = StateMachine::new();
    run(&mut sm, vec![agent("1001", 5), register("1001", 1_000)]);
    // Binding runs to 601_000: too early, nothing happens.
    assert!(
        run(
            &mut sm,
            vec![Command::ExpireRegistration {
                id: "1001".into(),
                at_ms: 600_000
            }]
        )
        .is_empty()
    );
    assert!(sm.agent_by_id("1001").unwrap().registration.is_some());
    run(
        &mut sm,
        vec![Command::ExpireRegistration {
            id: "1001".into(),
            at_ms: 601_000,
        }],
    );
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!(
        (a.state, a.registration.is_none()),
        (AgentState::LoggedOut, true)
    );
}
