//! Users, sessions, knowledge-base articles and dispositions.

use super::tests::{agent, arrive, dialog, enqueue, queue, register, run, try_apply};
use super::*;
use crate::model::ArticleKind;

fn user(name: &str, role: Role, agent_id: Option<&str>, hash: &str) -> Command {
    Command::UpsertUser {
        username: name.into(),
        display_name: name.into(),
        role,
        agent_id: agent_id.map(str::to_string),
        password_hash: hash.into(),
        create_only: false,
        at_ms: 10,
    }
}

fn open(token: &str, name: &str, at_ms: u64, expires_at_ms: u64) -> Command {
    Command::SessionOpened {
        token_sha256: token.into(),
        username: name.into(),
        expires_at_ms,
        at_ms,
    }
}

#[test]
fn an_agent_user_must_name_an_existing_agent_once() {
    let mut sm = StateMachine::new();
    assert!(try_apply(&mut sm, user("li", Role::Agent, None, "h")).is_err());
    assert!(matches!(
        try_apply(&mut sm, user("li", Role::Agent, Some("1001"), "h")),
        Err(ClusterError::UnknownAgent { .. })
    ));
    run(
        &mut sm,
        vec![agent("1001", 5), user("li", Role::Agent, Some("1001"), "h")],
    );
    assert_eq!(sm.user("li").unwrap().agent_id.as_deref(), Some("1001"));
    // Another user cannot take the same agent.
    assert!(try_apply(&mut sm, user("wang", Role::Agent, Some("1001"), "h")).is_err());
    // create_only refuses an existing user.
    let mut again = user("li", Role::Agent, Some("1001"), "h2");
    if let Command::UpsertUser { create_only, .. } = &mut again {
        *create_only = true;
    }
    assert!(try_apply(&mut sm, again).is_err());
    assert_eq!(sm.user("li").unwrap().password_hash, "h");
}

#[test]
fn sessions_expire_are_pruned_and_close_with_password_changes_and_removal() {
    let mut sm = StateMachine::new();
    run(
        &mut sm,
        vec![
            user("root", Role::Admin, None, "h"),
            user("sup", Role::Supervisor, None, "h"),
            open("t1", "sup", 1_000, 5_000),
            open("t2", "sup", 2_000, 60_000),
        ],
    );
    assert!(sm.session("t1", 4_999).is_some());
    assert!(sm.session("t1", 5_000).is_none(), "expired at check time");
    // A later SessionOpened prunes what expired by its time.
    run(&mut sm, vec![open("t3", "root", 6_000, 60_000)]);
    assert!(!sm.sessions().contains_key("t1"));
    assert!(sm.sessions().contains_key("t2"));
    // A session for an unknown user is refused.
    assert!(try_apply(&mut sm, open("t4", "nobody", 6_000, 60_000)).is_err());
    // Same hash: sessions stay; new hash: they close.
    run(&mut sm, vec![user("sup", Role::Supervisor, None, "h")]);
    assert!(sm.sessions().contains_key("t2"));
    run(&mut sm, vec![user("sup", Role::Supervisor, None, "new")]);
    assert!(!sm.sessions().contains_key("t2"));
    run(
        &mut sm,
        vec![
            open("t5", "sup", 7_000, 60_000),
            Command::SessionClosed {
                token_sha256: "t5".into(),
            },
            open("t6", "sup", 7_000, 60_000),
            Command::RemoveUser {
                username: "sup".into(),
            },
        ],
    );
    assert!(sm.user("sup").is_none());
    assert!(sm.sessions().values().all(|s| s.username != "sup"));
    assert!(sm.session("t3", 7_000).is_some());
}

#[test]
fn the_last_admin_can_be_neither_removed_nor_demoted() {
    let mut sm = StateMachine::new();
    run(&mut sm, vec![user("root", Role::Admin, None, "h")]);
    assert!(
        try_apply(
            &mut sm,
            Command::RemoveUser {
                username: "root".into()
            }
        )
        .is_err()
    );
    assert!(try_apply(&mut sm, user("root", Role::Supervisor, None, "h")).is_err());
    run(&mut sm, vec![user("root2", Role::Admin, None, "h")]);
    run(
        &mut sm,
        vec![Command::RemoveUser {
            username: "root".into(),
        }],
    );
    assert_eq!(sm.users().len(), 1);
}

#[test]
fn a_user_keeps_at_most_fifty_sessions() {
    let mut sm = StateMachine::new();
    run(&mut sm, vec![user("root", Role::Admin, None, "h")]);
    for i in 0..60u64 {
        run(
            &mut sm,
            vec![open(&format!("t{i}"), "root", 100 + i, 1_000_000)],
        );
    }
    assert_eq!(sm.sessions().len(), MAX_SESSIONS_PER_USER);
    assert!(!sm.sessions().contains_key("t0"), "the oldest went first");
    assert!(sm.sessions().contains_key("t59"));
}

fn article(id: &str, title: &str) -> Command {
    Command::UpsertArticle(Article {
        id: id.into(),
        kind: ArticleKind::QuickReply,
        title: title.into(),
        body: "body".into(),
        tags: vec!["挂失".into()],
        lang: "zh-CN".into(),
        updated_at_ms: 5,
        updated_by: "sup".into(),
    })
}

#[test]
fn articles_change_the_revision_and_ride_in_snapshots_with_users_and_sessions() {
    let mut sm = StateMachine::new();
    assert_eq!(sm.kb_revision(), 0);
    run(
        &mut sm,
        vec![article("a1", "信用卡挂失"), article("a2", "Lost card")],
    );
    assert_eq!(sm.kb_revision(), 2);
    run(&mut sm, vec![Command::RemoveArticle { id: "a2".into() }]);
    assert_eq!(sm.kb_revision(), 3);
    assert!(try_apply(&mut sm, Command::RemoveArticle { id: "a2".into() }).is_err());
    run(
        &mut sm,
        vec![
            user("root", Role::Admin, None, "h"),
            open("t1", "root", 1, 1_000),
        ],
    );
    let bytes = serde_json::to_vec(&sm).unwrap();
    let mut restored: StateMachine = serde_json::from_slice(&bytes).unwrap();
    restored.rebuild_indexes();
    assert_eq!(restored.articles(), sm.articles());
    assert_eq!(restored.users(), sm.users());
    assert_eq!(restored.sessions(), sm.sessions());
    assert_eq!(restored.kb_revision(), 3);
    // A snapshot written before users existed still loads.
    let old: StateMachine =
        serde_json::from_str(r#"{"applied":7,"agents":{},"queues":{},"calls":{}}"#).unwrap();
    assert!(old.users().is_empty() && old.articles().is_empty());
}

/// A call answered by 1001 and ended at 10 s: 1001 is in wrap-up.
fn talked_and_ended(sm: &mut StateMachine) -> Vec<Event> {
    run(
        sm,
        vec![
            queue("support", "support"),
            agent("1001", 5),
            register("1001", 1),
            arrive("a", 1_000),
            enqueue("a", 5, 1_000),
            Command::CallOffered {
                call_id: "a".into(),
                agent: "1001".into(),
                at_ms: 2_000,
            },
            Command::CallAnswered {
                call_id: "a".into(),
                agent: "1001".into(),
                b_leg: dialog("b"),
                recording: None,
                at_ms: 3_000,
            },
        ],
    )
}

fn dispose(ready: bool) -> Command {
    Command::SetDisposition {
        call_id: "a".into(),
        disposition: "resolved".into(),
        note: "客户已挂失 card blocked".into(),
        by: "li".into(),
        ready_agent: ready.then(|| "1001".to_string()),
        at_ms: 11_000,
    }
}

fn end() -> Command {
    Command::CallEnded {
        call_id: "a".into(),
        outcome: "call.completed".into(),
        ended_by: "caller".into(),
        wrapup_secs: 30,
        at_ms: 10_000,
    }
}

#[test]
fn a_disposition_during_the_call_lands_on_its_cdr() {
    let mut sm = StateMachine::new();
    talked_and_ended(&mut sm);
    run(&mut sm, vec![dispose(false)]);
    assert!(sm.pending_disposition("a").is_some());
    let events = run(&mut sm, vec![end()]);
    let cdr = events
        .iter()
        .find_map(|e| match e {
            Event::CallEnded(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cdr.disposition.as_deref(), Some("resolved"));
    assert_eq!(cdr.note.as_deref(), Some("客户已挂失 card blocked"));
    assert_eq!(cdr.disposition_by.as_deref(), Some("li"));
    assert!(sm.pending_disposition("a").is_none());
}

#[test]
fn a_disposition_in_wrap_up_annotates_the_stored_cdr_and_may_end_wrap_up() {
    let mut sm = StateMachine::new();
    talked_and_ended(&mut sm);
    run(&mut sm, vec![end()]);
    assert_eq!(sm.agent_by_id("1001").unwrap().state, AgentState::WrapUp);
    let events = run(&mut sm, vec![dispose(false)]);
    assert!(
        matches!(&events[..], [Event::CdrAnnotated { call_id, disposition }]
        if call_id == "a" && disposition.code == "resolved")
    );
    assert_eq!(sm.agent_by_id("1001").unwrap().state, AgentState::WrapUp);
    let events = run(&mut sm, vec![dispose(true)]);
    assert_eq!(events.len(), 2);
    let a = sm.agent_by_id("1001").unwrap();
    assert_eq!(a.state, AgentState::Ready);
    assert_eq!(a.call_id, None);
    // The stored CDR is rewritten with it.
    let store = crate::MemStore::default();
    let mut cdr_events = Vec::new();
    let mut sm2 = StateMachine::new();
    cdr_events.extend(talked_and_ended(&mut sm2));
    cdr_events.extend(run(&mut sm2, vec![end(), dispose(false)]));
    crate::persist_events(&store, &cdr_events).unwrap();
    let stored = crate::LogStore::cdrs(&store, 10, None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].disposition.as_deref(), Some("resolved"));
}
