//! Authentication and roles over real HTTP: login, lockout, expiry, logout, the first admin,
//! role boundaries on calls and CDRs, dispositions, the screen pop, the supervisor overview
//! and the knowledge base in Chinese and English.

use lingxi_tests::node::{TEST_API_KEY, http_request_as};
use lingxi_tests::{Rtp, TestNode, TestUa, WAIT, standard_config, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

/// Status, JSON body and response head of a request with `token` (or none).
async fn req(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let text = body.map(|b| b.to_string());
    let (s, head, b) = http_request_as(
        node.http,
        method,
        path,
        text.as_deref().map(|t| ("application/json", t.as_bytes())),
        &headers,
    )
    .await?;
    Ok((s, serde_json::from_str(&b).unwrap_or(Value::Null), head))
}

const ADMIN: Option<&str> = Some(TEST_API_KEY);

/// Creates a user with the admin API key.
async fn add_user(
    node: &TestNode,
    name: &str,
    role: &str,
    agent: Option<&str>,
) -> anyhow::Result<()> {
    let (s, v, _) = req(
        node,
        "POST",
        "/api/v1/users",
        ADMIN,
        Some(&json!({"username": name, "role": role, "agent_id": agent, "password": format!("pw-{name}-secret")})),
    )
    .await?;
    anyhow::ensure!(s == 201, "creating {name}: {s} {v}");
    Ok(())
}

/// Logs in `name` (password as [`add_user`] sets it); returns the token.
async fn login(node: &TestNode, name: &str) -> anyhow::Result<String> {
    let (s, v, _) = req(
        node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": name, "password": format!("pw-{name}-secret")})),
    )
    .await?;
    anyhow::ensure!(s == 200, "login {name}: {s} {v}");
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_me_logout_and_wrong_password() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    // No token: 401 everywhere under /api/v1; /healthz stays open.
    for path in [
        "/api/v1/agents",
        "/api/v1/calls",
        "/api/v1/cdrs",
        "/metrics",
        "/api/v1/auth/me",
    ] {
        let (s, v, _) = req(&node, "GET", path, None, None).await?;
        assert_eq!(s, 401, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (s, _, _) = req(&node, "GET", "/api/v1/agents", Some("not-a-token"), None).await?;
    assert_eq!(s, 401);
    let (s, _, _) = req(&node, "GET", "/healthz", None, None).await?;
    assert_eq!(s, 200);

    add_user(&node, "li", "agent", Some("1001")).await?;
    let (s, v, _) = req(
        &node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "li", "password": "wrong-password"})),
    )
    .await?;
    assert_eq!(s, 401, "{v}");
    let (s, v, _) = req(
        &node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "nobody", "password": "wrong-password"})),
    )
    .await?;
    assert_eq!(s, 401, "unknown user: {v}");

    let (s, v, head) = req(
        &node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "li", "password": "pw-li-secret"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(token.len(), 43, "{v}");
    assert_eq!(v["user"]["role"], "agent");
    assert_eq!(v["user"]["agent_id"], "1001");
    assert!(v["expires_at_ms"].as_u64().is_some(), "{v}");
    let cookie = header(&head, "set-cookie").unwrap_or_default();
    assert!(
        cookie.starts_with(&format!("lingxi_session={token}"))
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );

    let (s, me, _) = req(&node, "GET", "/api/v1/auth/me", Some(&token), None).await?;
    assert_eq!(s, 200);
    assert_eq!(me["username"], "li");
    // The cookie works as well as the bearer header.
    let c = format!("lingxi_session={token}");
    let (s, _, b) = http_request_as(
        node.http,
        "GET",
        "/api/v1/auth/me",
        None,
        &[("Cookie", c.as_str())],
    )
    .await?;
    assert_eq!(s, 200, "{b}");

    let (s, _, _) = req(&node, "POST", "/api/v1/auth/logout", Some(&token), None).await?;
    assert_eq!(s, 204);
    let (s, _, _) = req(&node, "GET", "/api/v1/auth/me", Some(&token), None).await?;
    assert_eq!(s, 401, "a closed session is refused");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_login_with_429() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    add_user(&node, "sup", "supervisor", None).await?;
    let wrong = json!({"username": "sup", "password": "guess-guess"});
    for i in 0..5 {
        let (s, v, _) = req(&node, "POST", "/api/v1/auth/login", None, Some(&wrong)).await?;
        assert_eq!(s, 401, "attempt {i}: {v}");
    }
    let (s, v, head) = req(&node, "POST", "/api/v1/auth/login", None, Some(&wrong)).await?;
    assert_eq!(s, 429, "{v}");
    let retry: u64 = header(&head, "retry-after")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    assert!((1..=300).contains(&retry), "Retry-After {retry}: {head}");
    // Even the right password waits now.
    let right = json!({"username": "sup", "password": "pw-sup-secret"});
    let (s, _, _) = req(&node, "POST", "/api/v1/auth/login", None, Some(&right)).await?;
    assert_eq!(s, 429);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire() -> anyhow::Result<()> {
    let mut c = standard_config();
    c.auth.session_ttl_secs = 1;
    let node = TestNode::start(c).await?;
    add_user(&node, "sup", "supervisor", None).await?;
    let token = login(&node, "sup").await?;
    let (s, _, _) = req(&node, "GET", "/api/v1/auth/me", Some(&token), None).await?;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v, _) = req(&node, "GET", "/api/v1/auth/me", Some(&token), None).await?;
    assert_eq!(s, 401, "expired session: {v}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_password_is_generated_into_a_private_file() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let path = node
        .node()
        .switch()
        .config()
        .node
        .data_dir
        .join(lingxi_node::auth::INITIAL_PASSWORD_FILE);
    let password = wait_for("the initial admin password file", WAIT, || {
        let path = path.clone();
        async move {
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        }
    })
    .await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let v = wait_for("admin login", WAIT, || {
        let body = json!({"username": "admin", "password": password});
        let node = &node;
        async move {
            let (s, v, _) = req(node, "POST", "/api/v1/auth/login", None, Some(&body))
                .await
                .ok()?;
            (s == 200).then_some(v)
        }
    })
    .await?;
    assert_eq!(v["user"]["role"], "admin", "{v}");
    node.shutdown().await;
    Ok(())
}

/// One answered call from `caller` to agent 1001, ended by the caller; returns its call id.
/// `during` runs while the call is live.
async fn call_1001<F, Fut>(node: &TestNode, caller: &str, during: F) -> anyhow::Result<String>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut agent = node.agent_ua("1001").await?;
    let mut ua = TestUa::new(caller, "", node.sip).await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let out = ua.invite("support", &rtp_caller).await?;
    anyhow::ensure!(
        out.response.status == Some(200),
        "INVITE: {}",
        out.response.raw
    );
    let mut leg_a = out.dialog.expect("2xx makes a dialog");
    let invite = agent.wait_invite(WAIT).await?;
    agent.ring(&invite).await?;
    let leg_b = agent.answer(&invite, &rtp_agent).await?;
    agent.wait_ack(&leg_b, WAIT).await?;
    node.wait_agent_state("1001", "busy", WAIT).await?;
    during(leg_a.call_id.clone()).await?;
    let r = ua.bye(&mut leg_a).await?;
    anyhow::ensure!(r.status == Some(200), "BYE: {}", r.raw);
    agent.wait_bye(&leg_b, WAIT).await?;
    node.wait_cdr(&leg_a.call_id, WAIT).await?;
    Ok(leg_a.call_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_only_their_own_calls_and_supervisors_see_all() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    add_user(&node, "sup", "supervisor", None).await?;
    add_user(&node, "li", "agent", Some("1001")).await?;
    add_user(&node, "wang", "agent", Some("1002")).await?;
    let (sup, li, wang) = (
        login(&node, "sup").await?,
        login(&node, "li").await?,
        login(&node, "wang").await?,
    );

    // Admin-only and supervisor-only routes.
    for (who, tok) in [("sup", &sup), ("li", &li)] {
        let (s, v, _) = req(&node, "GET", "/api/v1/users", Some(tok), None).await?;
        assert_eq!(s, 403, "{who} listing users: {v}");
        let (s, v, _) = req(
            &node,
            "POST",
            "/api/v1/cluster/members",
            Some(tok),
            Some(&json!({"id": 9, "addr": "127.0.0.1:1"})),
        )
        .await?;
        assert_eq!(s, 403, "{who} changing membership: {v}");
    }
    let (s, _, _) = req(&node, "GET", "/api/v1/supervisor/overview", Some(&li), None).await?;
    assert_eq!(s, 403);
    let (s, _, _) = req(&node, "GET", "/api/v1/agents/1001", Some(&wang), None).await?;
    assert_eq!(s, 403, "wang reads 1001");
    let (s, _, _) = req(
        &node,
        "PUT",
        "/api/v1/agents/1001/state",
        Some(&wang),
        Some(&json!({"state": "not_ready", "reason": "lunch"})),
    )
    .await?;
    assert_eq!(s, 403, "wang sets 1001's state");
    let (s, v, _) = req(&node, "GET", "/api/v1/agents", Some(&wang), None).await?;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1002"], "wang lists only himself: {v}");
    // A supervisor sets any agent's state.
    let (s, v, _) = req(
        &node,
        "PUT",
        "/api/v1/agents/1002/state",
        Some(&sup),
        Some(&json!({"state": "not_ready", "reason": "meeting"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");

    let (n, sup2, li2, wang2) = (&node, sup.clone(), li.clone(), wang.clone());
    let call_id = call_1001(&node, "alice", |call_id| async move {
        // li sees and screen-pops his call; wang gets neither.
        let (_, v, _) = req(n, "GET", "/api/v1/calls", Some(&li2), None).await?;
        assert_eq!(v.as_array().map(Vec::len), Some(1), "li's calls: {v}");
        let (_, v, _) = req(n, "GET", "/api/v1/calls", Some(&wang2), None).await?;
        assert_eq!(v.as_array().map(Vec::len), Some(0), "wang's calls: {v}");
        let ctx = format!("/api/v1/calls/{call_id}/context");
        let (s, v, _) = req(n, "GET", &ctx, Some(&li2), None).await?;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["caller"]["number"], "alice", "{v}");
        let (s, _, _) = req(n, "GET", &ctx, Some(&wang2), None).await?;
        assert_eq!(s, 403, "wang screen-pops li's call");
        // The supervisor overview lists the live call and 1001 busy on it.
        let (s, v, _) = req(n, "GET", "/api/v1/supervisor/overview", Some(&sup2), None).await?;
        assert_eq!(s, 200, "{v}");
        let calls = v["calls"].as_array().cloned().unwrap_or_default();
        assert!(
            calls
                .iter()
                .any(|c| c["call_id"] == call_id.as_str() && c["agent"] == "1001"),
            "overview calls: {v}"
        );
        let a1001 = v["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == "1001").cloned())
            .unwrap_or_default();
        assert_eq!(a1001["state"], "busy", "{v}");
        assert_eq!(a1001["call_id"], call_id.as_str(), "{v}");
        assert_eq!(a1001["web"], false, "{v}");
        let q = v["queues"]
            .as_array()
            .and_then(|q| q.first().cloned())
            .unwrap_or_default();
        assert_eq!(q["id"], "support", "{v}");
        assert!(q["waiting"].is_u64() && q["agents_ready"].is_u64(), "{v}");
        Ok(())
    })
    .await?;

    // After the call: the disposition by its agent lands on the CDR; wang may not set one.
    let path = format!("/api/v1/calls/{call_id}/disposition");
    let body =
        json!({"disposition": "card_lost", "note": "客户挂失信用卡 card blocked", "ready": true});
    let (s, _, _) = req(&node, "POST", &path, Some(&wang), Some(&body)).await?;
    assert_eq!(s, 403);
    let (s, v, _) = req(
        &node,
        "POST",
        &path,
        Some(&li),
        Some(&json!({"disposition": "nonsense"})),
    )
    .await?;
    assert_eq!(s, 400, "{v}");
    let (s, v, _) = req(&node, "POST", &path, Some(&li), Some(&body)).await?;
    assert_eq!(s, 200, "{v}");
    let cdr = wait_for("the disposition on the CDR", WAIT, || {
        let (node, call_id, li) = (&node, call_id.clone(), li.clone());
        async move {
            let (_, v, _) = req(node, "GET", "/api/v1/cdrs", Some(&li), None)
                .await
                .ok()?;
            v.as_array()?
                .iter()
                .find(|c| c["call_id"] == call_id.as_str() && c["disposition"] == "card_lost")
                .cloned()
        }
    })
    .await?;
    assert_eq!(cdr["note"], "客户挂失信用卡 card blocked", "{cdr}");
    assert_eq!(cdr["disposition_by"], "li", "{cdr}");
    // wang cannot read li's CDRs.
    let (s, v, _) = req(&node, "GET", "/api/v1/cdrs", Some(&wang), None).await?;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().map(Vec::len), Some(0), "wang's CDRs: {v}");
    let (s, _, _) = req(
        &node,
        "GET",
        &format!("/api/v1/calls/{call_id}/context"),
        Some(&wang),
        None,
    )
    .await?;
    assert_eq!(s, 403);

    // A second call from alice: the screen pop shows the first one with its note.
    node.wait_agent_state("1001", "ready", WAIT).await?;
    let (n, li2, first) = (&node, li.clone(), call_id.clone());
    call_1001(&node, "alice", |second| async move {
        let (s, v, _) = req(
            n,
            "GET",
            &format!("/api/v1/calls/{second}/context"),
            Some(&li2),
            None,
        )
        .await?;
        assert_eq!(s, 200, "{v}");
        let history = v["history"].as_array().cloned().unwrap_or_default();
        assert_eq!(history.len(), 1, "{v}");
        assert_eq!(history[0]["call_id"], first.as_str(), "{v}");
        assert_eq!(history[0]["note"], "客户挂失信用卡 card blocked", "{v}");
        Ok(())
    })
    .await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_base_crud_and_search_in_chinese_and_english() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    add_user(&node, "sup", "supervisor", None).await?;
    add_user(&node, "li", "agent", Some("1001")).await?;
    let (sup, li) = (login(&node, "sup").await?, login(&node, "li").await?);

    let (s, v, _) = req(&node, "GET", "/api/v1/console/config", Some(&li), None).await?;
    assert_eq!(s, 200);
    assert!(
        v["dispositions"].as_array().is_some_and(|d| d
            .iter()
            .any(|c| c["code"] == "resolved" && c["label_zh"] == "已解决")),
        "{v}"
    );
    assert!(
        v["not_ready_reasons"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c["code"] == "lunch")),
        "{v}"
    );

    let zh = json!({"title": "信用卡挂失流程", "body": "客户遗失信用卡时，先核实身份，然后立即冻结卡片并补发新卡。", "tags": ["挂失", "信用卡"]});
    let en = json!({"kind": "quick_reply", "title": "Lost card", "body": "I have blocked your card; a replacement card arrives within five working days.", "tags": ["cards"]});
    let (s, v, _) = req(&node, "POST", "/api/v1/kb/articles", Some(&li), Some(&zh)).await?;
    assert_eq!(s, 403, "an agent cannot write the knowledge base: {v}");
    let (s, a_zh, _) = req(&node, "POST", "/api/v1/kb/articles", Some(&sup), Some(&zh)).await?;
    assert_eq!(s, 201, "{a_zh}");
    assert_eq!(a_zh["lang"], "zh-CN");
    assert_eq!(a_zh["updated_by"], "sup");
    let (s, a_en, _) = req(&node, "POST", "/api/v1/kb/articles", Some(&sup), Some(&en)).await?;
    assert_eq!(s, 201, "{a_en}");
    let (zh_id, en_id) = (
        a_zh["id"].as_str().unwrap_or_default().to_string(),
        a_en["id"].as_str().unwrap_or_default().to_string(),
    );

    let search = |q: &str| format!("/api/v1/kb/search?q={}", urlencode(q));
    let (s, v, _) = req(&node, "GET", &search("挂失"), Some(&li), None).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["id"], zh_id.as_str(), "挂失: {v}");
    assert!(
        v[0]["snippet"].is_string() && v[0]["score"].is_number(),
        "{v}"
    );
    let (_, v, _) = req(&node, "GET", &search("blocking my cards"), Some(&li), None).await?;
    assert_eq!(v[0]["id"], en_id.as_str(), "stemmed English: {v}");
    assert_eq!(v[0]["kind"], "quick_reply", "{v}");
    let (_, v, _) = req(
        &node,
        "GET",
        &format!("{}&kind=article", search("card 信用卡")),
        Some(&li),
        None,
    )
    .await?;
    assert!(
        v.as_array()
            .is_some_and(|a| a.iter().all(|h| h["kind"] == "article")),
        "{v}"
    );

    // Update, then delete: the index follows.
    let (s, v, _) = req(
        &node,
        "PUT",
        &format!("/api/v1/kb/articles/{en_id}"),
        Some(&sup),
        Some(&json!({"title": "Stolen wallet", "body": "Report theft to the police."})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let (_, v, _) = req(&node, "GET", &search("wallet"), Some(&li), None).await?;
    assert_eq!(v[0]["id"], en_id.as_str(), "{v}");
    let (s, _, _) = req(
        &node,
        "DELETE",
        &format!("/api/v1/kb/articles/{zh_id}"),
        Some(&sup),
        None,
    )
    .await?;
    assert_eq!(s, 204);
    let (_, v, _) = req(&node, "GET", &search("挂失"), Some(&li), None).await?;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let (s, _, _) = req(
        &node,
        "GET",
        &format!("/api/v1/kb/articles/{zh_id}"),
        Some(&li),
        None,
    )
    .await?;
    assert_eq!(s, 404);
    node.shutdown().await;
    Ok(())
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
