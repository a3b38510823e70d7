use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{CodecName, Config, ConfigError};

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_err(config: &mut Config, list: &[(&str, &str)]) -> (String, String) {
    match config.apply_env(vars(list)) {
        Err(ConfigError::Env { var, message }) => (var, message),
        other => panic!("expected an Env error, got {other:?}"),
    }
}

#[test]
fn overrides_nested_keys() {
    let mut c = Config::default();
    c.apply_env(vars(&[
        ("LINGXI__SIP__UDP_PORT", "5070"),
        ("LINGXI__NODE__ID", "n2"),
        ("LINGXI__HTTP__LISTEN", "127.0.0.1:9000"),
        ("LINGXI__SIP__ENABLE_TCP", "false"),
        ("LINGXI__SIP__ADVERTISED_HOST", "10.1.2.3"),
        ("LINGXI__MEDIA__CODECS", r#"["pcma"]"#),
        ("LINGXI__NODE__DATA_DIR", "rel/dir"),
        ("PATH", "/usr/bin"),
        ("LINGXI_LOG", "debug"),
    ]))
    .unwrap();
    assert_eq!(c.sip.udp_port, 5070);
    assert_eq!(c.node.id, "n2");
    assert_eq!(
        c.http.listen,
        "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
    );
    assert!(!c.sip.enable_tcp);
    assert_eq!(c.sip.advertised_host(), "10.1.2.3");
    assert_eq!(c.media.codecs, vec![CodecName::Pcma]);
    // Env paths stay relative to the working directory.
    assert_eq!(c.node.data_dir, PathBuf::from("rel/dir"));
    // Everything else untouched.
    assert_eq!(c.sip.tcp_port, 5060);
}

#[test]
fn keys_are_case_insensitive_and_strings_fall_back() {
    let mut c = Config::default();
    // 123 parses as a TOML integer; node.id is a string, so the raw text is used.
    c.apply_env(vars(&[
        ("LINGXI__node__Id", "123"),
        ("LINGXI__SIP__REALM", "true"),
    ]))
    .unwrap();
    assert_eq!(c.node.id, "123");
    assert_eq!(c.sip.realm, "true");
}

#[test]
fn overrides_queue_and_agent_entries() {
    let mut c = Config::from_toml_str(
        "[[queues]]\nid = \"q\"\n[[agents]]\nid = \"1001\"\npassword = \"p\"\nskills = { q = 3 }\n",
        "t",
        None,
    )
    .unwrap();
    c.apply_env(vars(&[
        ("LINGXI__QUEUES__0__RING_TIMEOUT_SECS", "20"),
        ("LINGXI__QUEUES__0__OVERFLOW__WHEN_NO_AGENTS", "false"),
        ("LINGXI__AGENTS__0__SKILLS__Q", "9"),
        ("LINGXI__AGENTS__0__PASSWORD", "secret"),
    ]))
    .unwrap();
    assert_eq!(c.queues[0].ring_timeout_secs, Some(20));
    assert!(!c.queues[0].overflow.when_no_agents);
    assert_eq!(c.agents[0].skills["q"], 9);
    assert_eq!(c.agents[0].password, "secret");
    assert_eq!(c.agents[0].name, "1001");

    let (var, message) = env_err(&mut c, &[("LINGXI__QUEUES__3__PRIORITY", "1")]);
    assert_eq!(var, "LINGXI__QUEUES__3__PRIORITY");
    assert!(message.contains("queues.3"), "{message}");
}

#[test]
fn whole_sections_can_be_set() {
    let mut c = Config::default();
    c.apply_env(vars(&[(
        "LINGXI__QUEUES",
        r#"[{ id = "x", extensions = ["7000"] }]"#,
    )]))
    .unwrap();
    assert_eq!(c.queue_for_user("7000").unwrap().name, "x");
}

#[test]
fn unknown_key_is_an_error_naming_the_variable() {
    let mut c = Config::default();
    let (var, message) = env_err(&mut c, &[("LINGXI__SIP__UDP_PROT", "5070")]);
    assert_eq!(var, "LINGXI__SIP__UDP_PROT");
    assert!(message.contains("udp_prot"), "{message}");

    let (var, _) = env_err(&mut c, &[("LINGXI__NOPE__X", "1")]);
    assert_eq!(var, "LINGXI__NOPE__X");
    let (var, _) = env_err(&mut c, &[("LINGXI__NODE__ID__X", "1")]);
    assert_eq!(var, "LINGXI__NODE__ID__X");
    let (var, _) = env_err(&mut c, &[("LINGXI__", "1")]);
    assert_eq!(var, "LINGXI__");
    let (var, _) = env_err(&mut c, &[("LINGXI__SIP____UDP_PORT", "1")]);
    assert_eq!(var, "LINGXI__SIP____UDP_PORT");
}

#[test]
fn bad_value_is_an_error_and_leaves_config_unchanged() {
    let mut c = Config::default();
    let (var, message) = env_err(
        &mut c,
        &[
            ("LINGXI__NODE__ID", "changed"),
            ("LINGXI__SIP__UDP_PORT", "70000"),
        ],
    );
    assert_eq!(var, "LINGXI__SIP__UDP_PORT");
    assert!(message.contains("sip.udp_port"), "{message}");
    assert_eq!(c, Config::default());

    let (var, _) = env_err(&mut c, &[("LINGXI__HTTP__LISTEN", "not an address")]);
    assert_eq!(var, "LINGXI__HTTP__LISTEN");
    let (var, _) = env_err(&mut c, &[("LINGXI__MEDIA__CODECS", "opus")]);
    assert_eq!(var, "LINGXI__MEDIA__CODECS");
}
