use std::path::PathBuf;

use crate::{AgentConfig, CodecName, Config, ConfigError, OverflowAction, Problem, QueueConfig};

fn problems(c: &Config) -> Vec<Problem> {
    match c.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Asserts that validation reports `key`, and returns its message.
#[track_caller]
fn problem_at(c: &Config, key: &str) -> String {
    let found = problems(c);
    match found.iter().find(|p| p.key == key) {
        Some(p) => p.message.clone(),
        None => panic!("no problem at {key}; got {found:?}"),
    }
}

fn queue(id: &str, extensions: &[&str]) -> QueueConfig {
    let mut q = QueueConfig {
        id: id.into(),
        extensions: extensions.iter().map(|e| e.to_string()).collect(),
        ..QueueConfig::default()
    };
    q.fill_defaults();
    q
}

fn agent(id: &str) -> AgentConfig {
    AgentConfig {
        id: id.into(),
        name: id.into(),
        password: "pw".into(),
        skills: [("support".to_string(), 5)].into(),
    }
}

/// A valid config with two queues and two agents, for each test to break once.
fn base() -> Config {
    let c = Config {
        queues: vec![queue("support", &["8000"]), queue("sales", &["9000"])],
        agents: vec![agent("1001"), agent("1002")],
        ..Config::default()
    };
    assert_eq!(problems(&c), vec![]);
    c
}

#[test]
fn base_is_valid() {
    base();
}

#[test]
fn ports_may_be_zero() {
    let mut c = base();
    c.sip.udp_port = 0;
    c.sip.tcp_port = 0;
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn node_id() {
    let mut c = base();
    c.node.id = String::new();
    assert!(problem_at(&c, "node.id").contains("empty"));
    c.node.id = "node 1".into();
    assert!(problem_at(&c, "node.id").contains("' '"));
    c.node.id = "Node_1-a".into();
    assert_eq!(problems(&c), vec![]);
    c.node.data_dir = PathBuf::new();
    problem_at(&c, "node.data_dir");
}

#[test]
fn rtp_port_range() {
    let mut c = base();
    c.media.rtp_port_min = 30000;
    c.media.rtp_port_max = 30000;
    problem_at(&c, "media.rtp_port_min");
    c.media.rtp_port_max = 20000;
    problem_at(&c, "media.rtp_port_min");
    c.media.rtp_port_max = 30001;
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn codecs() {
    let mut c = base();
    c.media.codecs.clear();
    problem_at(&c, "media.codecs");
    c.media.codecs = vec![CodecName::Pcma, CodecName::Pcmu, CodecName::Pcma];
    assert!(problem_at(&c, "media.codecs[2]").contains("pcma"));
}

#[test]
fn telephone_event_pt() {
    let mut c = base();
    c.media.telephone_event_pt = 95;
    problem_at(&c, "media.telephone_event_pt");
    c.media.telephone_event_pt = 128;
    problem_at(&c, "media.telephone_event_pt");
    c.media.telephone_event_pt = 96;
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn ptime() {
    let mut c = base();
    c.media.ptime_ms = 0;
    problem_at(&c, "media.ptime_ms");
    c.media.ptime_ms = 25;
    problem_at(&c, "media.ptime_ms");
}

#[test]
fn sip_transports() {
    let mut c = base();
    c.sip.enable_udp = false;
    assert_eq!(problems(&c), vec![]);
    c.sip.enable_tcp = false;
    problem_at(&c, "sip.enable_udp");
}

#[test]
fn sip_names() {
    let mut c = base();
    c.sip.domain.clear();
    c.sip.realm.clear();
    c.sip.advertised_host = Some(String::new());
    problem_at(&c, "sip.domain");
    problem_at(&c, "sip.realm");
    problem_at(&c, "sip.advertised_host");
}

#[test]
fn register_expires_order() {
    let mut c = base();
    c.sip.register_default_expires = 30;
    assert!(problem_at(&c, "sip.register_default_expires").contains("30"));
    c.sip.register_default_expires = 7200;
    problem_at(&c, "sip.register_default_expires");
    c.sip.register_default_expires = 600;
    c.sip.register_min_expires = 4000;
    problem_at(&c, "sip.register_min_expires");
    c.sip.register_min_expires = 600;
    c.sip.register_max_expires = 600;
    // The web gateway registers its agents within the same bounds.
    problem_at(&c, "web.register_expires_secs");
    c.web.register_expires_secs = 600;
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn timers() {
    let mut c = base();
    c.sip.t1_ms = 0;
    problem_at(&c, "sip.t1_ms");
    c.sip.t1_ms = 5000;
    assert!(problem_at(&c, "sip.t2_ms").contains("5000"));
}

#[test]
fn max_message_bytes() {
    let mut c = base();
    c.sip.max_message_bytes = 1023;
    problem_at(&c, "sip.max_message_bytes");
    c.sip.max_message_bytes = 1_048_577;
    problem_at(&c, "sip.max_message_bytes");
    c.sip.max_message_bytes = 1024;
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn queue_ids() {
    let mut c = base();
    c.queues[1].id = String::new();
    assert!(problem_at(&c, "queues[1].id").contains("empty"));
    c.queues[1].id = "sup port".into();
    problem_at(&c, "queues[1].id");
    c.queues[1].id = "sales@x".into();
    problem_at(&c, "queues[1].id");
    c.queues[1].id = "support".into();
    assert!(problem_at(&c, "queues[1].id").contains("twice"));
    c.queues[1].id = "1001".into();
    assert!(problem_at(&c, "queues[1].id").contains("agent"));
}

#[test]
fn extensions() {
    let mut c = base();
    c.queues[1].extensions = vec!["8000".into()];
    assert!(problem_at(&c, "queues[1].extensions[0]").contains("queues[0]"));
    c.queues[1].extensions = vec!["9000".into(), "9000".into()];
    assert!(problem_at(&c, "queues[1].extensions[1]").contains("this queue"));
    c.queues[1].extensions = vec!["1002".into()];
    assert!(problem_at(&c, "queues[1].extensions[0]").contains("agent"));
    c.queues[1].extensions = vec!["support".into()];
    assert!(problem_at(&c, "queues[1].extensions[0]").contains("another queue"));
    c.queues[1].extensions = vec![String::new()];
    problem_at(&c, "queues[1].extensions[0]");
    c.queues[1].extensions = vec!["90 00".into()];
    problem_at(&c, "queues[1].extensions[0]");
    // A queue's own id as an extension is redundant but harmless.
    c.queues[1].extensions = vec!["sales".into()];
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn queue_min_proficiency() {
    let mut c = base();
    c.queues[0].min_proficiency = 0;
    problem_at(&c, "queues[0].min_proficiency");
    c.queues[0].min_proficiency = 11;
    problem_at(&c, "queues[0].min_proficiency");
}

#[test]
fn overflow_target() {
    let mut c = base();
    c.queues[0].overflow.action = OverflowAction::Queue;
    assert!(problem_at(&c, "queues[0].overflow.target").contains("required"));
    c.queues[0].overflow.target = Some("sales".into());
    assert_eq!(problems(&c), vec![]);
    c.queues[0].overflow.target = Some("billing".into());
    assert_eq!(
        problem_at(&c, "queues[0].overflow.target"),
        r#"queue "billing" does not exist"#
    );
    c.queues[0].overflow.target = Some("support".into());
    assert!(problem_at(&c, "queues[0].overflow.target").contains("itself"));
    // A target is ignored when the action is hang-up.
    c.queues[0].overflow.action = OverflowAction::Hangup;
    assert_eq!(problems(&c), vec![]);
}

#[test]
fn agent_ids() {
    let mut c = base();
    c.agents[1].id = String::new();
    problem_at(&c, "agents[1].id");
    c.agents[1].id = "10 02".into();
    problem_at(&c, "agents[1].id");
    c.agents[1].id = "1001".into();
    assert!(problem_at(&c, "agents[1].id").contains("twice"));
}

#[test]
fn agent_password() {
    let mut c = base();
    c.agents[0].password.clear();
    problem_at(&c, "agents[0].password");
}

#[test]
fn agent_proficiency() {
    let mut c = base();
    c.agents[0].skills.insert("sales".into(), 0);
    c.agents[1].skills.insert("sales".into(), 11);
    problem_at(&c, "agents[0].skills.sales");
    problem_at(&c, "agents[1].skills.sales");
    c.agents[0].skills.clear();
    c.agents[0].skills.insert(String::new(), 5);
    problem_at(&c, "agents[0].skills");
}

#[test]
fn all_problems_are_reported_each_on_its_own_line() {
    let mut c = base();
    c.node.id = String::new();
    c.media.telephone_event_pt = 0;
    c.queues[0].overflow.action = OverflowAction::Queue;
    c.queues[0].overflow.target = Some("nowhere".into());
    c.agents[0].password.clear();
    let err = c.validate().unwrap_err();
    let ConfigError::Invalid(list) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(list.len(), 4);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].contains("4 problems"));
    assert!(lines.contains(&"  queues[0].overflow.target: queue \"nowhere\" does not exist"));
    assert!(lines.contains(&"  agents[0].password: must not be empty"));
}

#[test]
fn web_section_rules() {
    let mut c = Config::default();
    assert!(problems(&c).is_empty(), "defaults are valid");
    c.web.register_expires_secs = 10;
    assert!(problem_at(&c, "web.register_expires_secs").contains("register_min_expires"));
    c.web.register_expires_secs = 300;
    c.web.max_web_calls = 2;
    c.web.max_web_calls_per_ip = 3;
    assert!(problem_at(&c, "web.max_web_calls_per_ip").contains("max_web_calls"));
    c.web.max_web_calls_per_ip = 1;
    c.web.web_caller_prefix = "web caller".into();
    assert!(problem_at(&c, "web.web_caller_prefix").contains("' '"));
    c.web.web_caller_prefix = "web-".into();
    c.web.allowed_queues = vec!["sales@x".into()];
    problem_at(&c, "web.allowed_queues[0]");
    c.web.allowed_queues.clear();
    c.web.connect_timeout_ms = 0;
    problem_at(&c, "web.connect_timeout_ms");
    // A disabled gateway is not checked.
    c.web.enabled = false;
    assert!(problems(&c).is_empty());
}

#[test]
fn web_section_from_toml() {
    let c = Config::from_toml_str(
        "[web]\nrtc_ip = \"127.0.0.1\"\nmax_web_calls = 10\n",
        "t.toml",
        None,
    )
    .unwrap();
    assert_eq!(c.web.rtc_ip(&c.media).to_string(), "127.0.0.1");
    assert_eq!(
        c.web.sip_ip(&c.sip).to_string(),
        "127.0.0.1",
        "wildcard SIP bind → loopback"
    );
    assert_eq!(c.web.max_web_calls, 10);
    assert!(Config::from_toml_str("[web]\nbogus = 1\n", "t.toml", None).is_err());
}
