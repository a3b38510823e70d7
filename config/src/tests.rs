use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Config {
    match Config::from_toml_str(text, "test.toml", None) {
        Ok(c) => c,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn parse_err(text: &str) -> (String, String) {
    match Config::from_toml_str(text, "test.toml", None) {
        Err(ConfigError::Parse { origin, message }) => (origin, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn defaults_validate() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.node.id, "node1");
    assert_eq!(c.node.data_dir, PathBuf::from("./data"));
    assert_eq!(c.sip.udp_port, 5060);
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.media.codecs, vec![CodecName::Pcmu, CodecName::Pcma]);
    assert_eq!(c.acd.ring_timeout_secs, 15);
    assert!(c.queues.is_empty() && c.agents.is_empty());
}

#[test]
fn empty_text_is_defaults_and_load_none_is_defaults() {
    assert_eq!(parse(""), Config::default());
    // No LINGXI__ variables are set when the tests run.
    assert_eq!(Config::load(None).unwrap(), Config::default());
}

#[test]
fn quickstart_example_loads_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.node.id, "quickstart");
    // data_dir is left out, so it stays relative to the working directory.
    assert_eq!(c.node.data_dir, PathBuf::from("./data"));
    assert_eq!(c.queues.len(), 1);
    let q = c.queue_for_user("8000").unwrap();
    assert_eq!(q.id, "support");
    assert_eq!(q.name, "Support / 客户支持");
    assert_eq!(q.overflow.action, OverflowAction::Hangup);
    let ids: Vec<_> = c.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["1001", "1002", "1003"]);
    assert_eq!(c.agents[1].skills.get("support"), Some(&7));
    assert_eq!(c.agents[2].name, "Zhang Min");
}

#[test]
fn unknown_field_names_field_and_line() {
    let (origin, message) = parse_err("[node]\nid = \"n1\"\n\n[sip]\nudp_prot = 5070\n");
    assert_eq!(origin, "test.toml");
    assert!(message.contains("udp_prot"), "{message}");
    assert!(message.starts_with("line 5, column 1"), "{message}");
}

#[test]
fn unknown_field_in_queue_and_section() {
    let (_, message) = parse_err("[[queues]]\nid = \"q\"\n[queues.overflow]\nactoin = \"queue\"\n");
    assert!(
        message.contains("actoin") && message.contains("line 4"),
        "{message}"
    );
    let (_, message) = parse_err("[nodes]\nid = \"x\"\n");
    assert!(
        message.contains("nodes") && message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn syntax_and_type_errors_are_parse_errors() {
    let (_, message) = parse_err("[sip]\nudp_port = \n");
    assert!(message.starts_with("line 2"), "{message}");
    let (_, message) = parse_err("[sip]\nudp_port = 70000\n");
    assert!(message.starts_with("line 2"), "{message}");
    let (_, message) = parse_err("[media]\ncodecs = [\"opus\"]\n");
    assert!(message.contains("opus"), "{message}");
    let (_, message) = parse_err("[http]\nlisten = \"nope\"\n");
    assert!(message.starts_with("line 2"), "{message}");
}

#[test]
fn error_display() {
    let err = Config::from_toml_str("[sip]\nx = 1\n", "a/b.toml", None).unwrap_err();
    assert!(
        err.to_string().starts_with("a/b.toml: line 2, column 1: "),
        "{err}"
    );
}

#[test]
fn names_default_to_ids() {
    let c = parse("[[queues]]\nid = \"sales\"\n[[agents]]\nid = \"1001\"\npassword = \"x\"\n");
    assert_eq!(c.queues[0].name, "sales");
    assert_eq!(c.queues[0].skill, "sales");
    assert_eq!(c.queues[0].min_proficiency, 1);
    assert_eq!(c.queues[0].priority, 5);
    assert!(c.queues[0].overflow.when_no_agents);
    assert_eq!(c.queues[0].overflow.action, OverflowAction::Hangup);
    c.validate().unwrap();
    assert_eq!(c.agents[0].name, "1001");
    let c = parse("[[queues]]\nid = \"s\"\nname = \"Sales\"\nskill = \"sell\"\n");
    assert_eq!(
        (c.queues[0].name.as_str(), c.queues[0].skill.as_str()),
        ("Sales", "sell")
    );
}

#[test]
fn relative_paths_resolve_against_base_dir() {
    let text = r#"
        [node]
        data_dir = "state"
        [media]
        hold_music = "music/hold.wav"
        [recording]
        dir = "/abs/rec"
        [[queues]]
        id = "q"
        hold_music = "q.wav"
        [queues.overflow]
        prompt = "sorry.wav"
    "#;
    let base = Path::new("/etc/lingxi");
    let c = Config::from_toml_str(text, "x", Some(base)).unwrap();
    assert_eq!(c.node.data_dir, base.join("state"));
    assert_eq!(c.media.hold_music, Some(base.join("music/hold.wav")));
    assert_eq!(c.recording.dir, Some(PathBuf::from("/abs/rec")));
    assert_eq!(c.queues[0].hold_music, Some(base.join("q.wav")));
    assert_eq!(c.queues[0].overflow.prompt, Some(base.join("sorry.wav")));

    // Without a base dir, paths stay as written.
    let c = Config::from_toml_str(text, "x", None).unwrap();
    assert_eq!(c.node.data_dir, PathBuf::from("state"));
    assert_eq!(
        c.queues[0].overflow.prompt,
        Some(PathBuf::from("sorry.wav"))
    );
}

#[test]
fn default_data_dir_stays_relative_to_working_dir() {
    let c =
        Config::from_toml_str("[node]\nid = \"n\"\n", "x", Some(Path::new("/etc/lingxi"))).unwrap();
    assert_eq!(c.node.data_dir, PathBuf::from("./data"));
    assert_eq!(c.recording_dir(), PathBuf::from("./data/recordings"));
}

#[test]
fn load_resolves_against_the_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "[node]\ndata_dir = \"d\"\n[recording]\ndir = \"rec\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.node.data_dir, dir.path().join("d"));
    assert_eq!(c.recording_dir(), dir.path().join("rec"));
}

#[test]
fn load_missing_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    match Config::load(Some(&path)) {
        Err(ConfigError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Io error, got {other:?}"),
    }
    // A directory is not a file either.
    assert!(matches!(
        Config::load(Some(dir.path())),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn load_validates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[node]\nid = \"\"\n").unwrap();
    assert!(matches!(
        Config::load(Some(&path)),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn recording_dir_prefers_explicit_dir() {
    let mut c = Config::default();
    c.node.data_dir = PathBuf::from("/var/lingxi");
    assert_eq!(c.recording_dir(), PathBuf::from("/var/lingxi/recordings"));
    c.recording.dir = Some(PathBuf::from("/rec"));
    assert_eq!(c.recording_dir(), PathBuf::from("/rec"));
}

#[test]
fn queue_for_user_matches_id_or_extension() {
    let c = parse(
        "[[queues]]\nid = \"support\"\nextensions = [\"8000\", \"8001\"]\n\
         [[queues]]\nid = \"sales\"\nextensions = [\"9000\"]\n",
    );
    assert_eq!(c.queue_for_user("support").unwrap().id, "support");
    assert_eq!(c.queue_for_user("8001").unwrap().id, "support");
    assert_eq!(c.queue_for_user("9000").unwrap().id, "sales");
    assert!(c.queue_for_user("1001").is_none());
    assert!(c.queue_for_user("").is_none());
}

#[test]
fn advertised_host_and_ip() {
    let mut sip = SipSection::default();
    assert_eq!(sip.advertised_host(), "127.0.0.1");
    sip.listen_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(sip.advertised_host(), "10.0.0.5");
    sip.listen_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(sip.advertised_host(), "[::1]");
    sip.listen_ip = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    assert_eq!(sip.advertised_host(), "127.0.0.1");
    sip.advertised_host = Some("pbx.example.com".into());
    assert_eq!(sip.advertised_host(), "pbx.example.com");

    let mut media = MediaSection::default();
    assert_eq!(media.advertised_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    media.rtp_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));
    assert_eq!(
        media.advertised_ip(),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6))
    );
    media.advertised_ip = Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(media.advertised_ip(), IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
}

#[test]
fn serialises_and_parses_back() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    let c = Config::load(Some(&path)).unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(parse(&text), c);
}

#[test]
fn codec_names() {
    assert_eq!(CodecName::Pcmu.payload_type(), 0);
    assert_eq!(CodecName::Pcma.payload_type(), 8);
    assert_eq!(CodecName::Pcma.encoding_name(), "PCMA");
    assert_eq!(CodecName::Pcmu.to_string(), "pcmu");
}
