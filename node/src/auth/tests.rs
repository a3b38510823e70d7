use super::*;
use axum::http::HeaderValue;

#[test]
fn passwords_hash_and_verify() {
    let h = hash_password("correct horse").unwrap();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(is_password_hash(&h));
    assert!(verify_password(&h, "correct horse"));
    assert!(!verify_password(&h, "wrong horse"));
    assert!(!verify_password("not a hash", "x"));
    assert!(!is_password_hash("plain"));
}

#[test]
fn tokens_are_random_base64url() {
    let a = new_token();
    let b = new_token();
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(sha256_hex("abc").len(), 64);
}

#[test]
fn token_comes_from_bearer_or_cookie() {
    let mut h = HeaderMap::new();
    assert_eq!(Auth::token_from(&h), None);
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("a=b; lingxi_session=tok1"),
    );
    assert_eq!(Auth::token_from(&h), Some("tok1"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer tok2"),
    );
    assert_eq!(Auth::token_from(&h), Some("tok2"));
}

#[test]
fn roles_gate_agents() {
    let agent = Principal {
        username: "li".into(),
        role: Role::Agent,
        agent_id: Some("1001".into()),
    };
    assert!(agent.may_act_for("1001"));
    assert!(!agent.may_act_for("1002"));
    assert!(agent.require_supervisor().is_err());
    let sup = Principal {
        role: Role::Supervisor,
        agent_id: None,
        ..agent.clone()
    };
    assert!(sup.may_act_for("1002"));
    assert!(sup.require_admin().is_err());
    assert_eq!(
        sup.require_admin().unwrap_err().status,
        StatusCode::FORBIDDEN
    );
}
