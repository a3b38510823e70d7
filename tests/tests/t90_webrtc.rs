//! The WebRTC gateway with a real browser (headless Chromium, fake microphone):
//! - a SIP caller reaches a web agent: the page rings, answers, audio flows both ways (RTP at
//!   the caller from the browser; the browser's inbound-rtp counters grow), the caller hangs
//!   up, the page hears "ended", the CDR names the web agent;
//! - a web customer on call-us.html reaches a SIP agent, audio both ways, the agent hangs up.
//!
//! Skipped (with a message) when Chromium or chromedriver is not installed; `test.sh` installs
//! both.

// The browser tests hold a process-wide lock for their whole run (one Chromium at a time on
// small machines); each test has its own runtime and thread, so blocking there is harmless.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use lingxi_tests::browser::{Browser, screenshot_path, skip_without_browser};
use lingxi_tests::node::standard_config;
use lingxi_tests::{Rtp, TestNode, TestUa, WAIT};
use serde_json::{Value, json};

/// Browsers and WebRTC on a loaded two-core machine: generous.
const SLOW: Duration = Duration::from_secs(30);

/// The tests of this file run one browser at a time (two-core machines).
fn one_browser_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node whose web agents unregister 1 s after their page closes.
async fn web_node() -> anyhow::Result<TestNode> {
    let mut c = standard_config();
    c.web.unregister_grace_secs = 1;
    TestNode::start(c).await
}

/// Creates the console user `name` working as `agent`, logs in, returns the session token.
async fn web_agent_token(node: &TestNode, name: &str, agent: &str) -> anyhow::Result<String> {
    let password = "s3cret-web-pass";
    let (status, body) = node
        .http_post(
            "/api/v1/users",
            &json!({
                "username": name,
                "display_name": format!("Web agent {agent}"),
                "role": "agent",
                "agent_id": agent,
                "password": password,
            }),
        )
        .await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "creating user {name}: {status} {body}"
    );
    let (status, body) = node
        .http_post(
            "/api/v1/auth/login",
            &json!({ "username": name, "password": password }),
        )
        .await?;
    anyhow::ensure!(status == 200, "login as {name}: {status} {body}");
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("login answer without token: {body}"))
}

/// Packets received so far on the page's inbound audio stream (`getStats`), via `getter`
/// (a JS expression giving the Softphone/WebCaller).
async fn inbound_packets(b: &Browser, getter: &str) -> anyhow::Result<u64> {
    let v = b
        .eval_async(
            &format!(
                "const s = await ({getter}).getStats(); let n = 0;\n\
                 if (s) s.forEach(r => {{ if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived || 0; }});\n\
                 return n;"
            ),
            vec![],
        )
        .await?;
    Ok(v.as_u64().unwrap_or(0))
}

/// Waits until the page's inbound packet count exceeds `above`.
async fn wait_inbound_above(
    b: &Browser,
    getter: &str,
    above: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = inbound_packets(b, getter).await?;
        if n > above {
            return Ok(n);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the browser's inbound-rtp packetsReceived stayed at {n} (wanted > {above})"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Agent 1001 logged in on a page (`window.__phone`, events in `window.__events`), a SIP
/// caller `alice` through queue `support`, answered in the browser: returns the caller, its
/// dialog and RTP endpoint.
async fn web_agent_talking(
    node: &TestNode,
    b: &Browser,
) -> anyhow::Result<(TestUa, lingxi_tests::Dialog, Rtp)> {
    let token = web_agent_token(node, "webagent1001", "1001").await?;
    let base = format!("http://{}", node.http);
    // Any page of the node's origin will do to run the module.
    b.goto(&format!("{base}/console/call-us.html?lang=en"))
        .await?;
    b.eval_async(
        "const { Softphone } = await import('/console/softphone.js');\n\
         window.__events = [];\n\
         const phone = new Softphone({ token: arguments[0] });\n\
         for (const t of ['registered', 'incoming', 'state', 'ended', 'error', 'transferred'])\n\
           phone.addEventListener(t, ev => window.__events.push({ type: t, ...ev.detail }));\n\
         window.__phone = phone;\n\
         await phone.connect();\n\
         return true;",
        vec![Value::String(token)],
    )
    .await?;
    b.wait_js(
        "registered",
        &format!("{}.length > 0", events("registered")),
        SLOW,
    )
    .await?;
    // Registered from the browser: the agent is ready (as with a desk phone).
    let agent = node.wait_agent_state("1001", "ready", SLOW).await?;
    assert!(
        agent["registered"]["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("Lingxi-WebGateway")),
        "registration made by the gateway: {agent}"
    );

    // A SIP caller dials the queue; the page rings.
    let rtp_caller = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let out = caller.invite("support", &rtp_caller).await?;
    assert_eq!(out.response.status, Some(200), "{}", out.response.raw);
    let leg_a = out.dialog.expect("2xx makes a dialog");
    let incoming = b
        .wait_js("incoming", &format!("{}[0]", events("incoming")), SLOW)
        .await?;
    assert_eq!(incoming["call_id"], leg_a.call_id.as_str(), "{incoming}");
    assert_eq!(incoming["from"], "alice", "{incoming}");
    assert_eq!(incoming["queue"], "support", "{incoming}");
    assert_eq!(
        b.eval("return window.__phone.state", vec![]).await?,
        "ringing"
    );

    // Answer in the browser.
    b.eval_async("await window.__phone.answer(); return true;", vec![])
        .await?;
    if let Err(e) = b
        .wait_js("talking", "window.__phone.state === 'talking'", SLOW)
        .await
    {
        anyhow::bail!("{e}; page events: {}", page_events(b).await);
    }
    node.wait_agent_state("1001", "busy", SLOW).await?;
    Ok((caller, leg_a, rtp_caller))
}

/// JS: the page's recorded events of type `t`.
fn events(t: &str) -> String {
    format!("window.__events.filter(e => e.type === '{t}')")
}

/// The page's event log as JSON, for failure messages.
async fn page_events(b: &Browser) -> String {
    b.eval("return JSON.stringify(window.__events || [])", vec![])
        .await
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_caller_reaches_web_agent() -> anyhow::Result<()> {
    if skip_without_browser() {
        return Ok(());
    }
    let _one_browser = one_browser_at_a_time();
    let node = web_node().await?;
    let b = Browser::start().await?;
    let (mut caller, mut leg_a, rtp_caller) = web_agent_talking(&node, &b).await?;

    // Browser → caller: the fake microphone's audio arrives as RTP at the SIP caller.
    rtp_caller.reset();
    let got = rtp_caller.wait_any(25, SLOW).await?;
    assert!(got >= 25, "caller got {got} packets from the browser");

    // Caller → browser: inbound-rtp packetsReceived grows while the caller talks.
    let to_switch = leg_a.remote_rtp()?;
    rtp_caller.send_pcmu(to_switch, 25).await?;
    let first = wait_inbound_above(&b, "window.__phone", 0, SLOW).await?;
    rtp_caller.send_pcmu(to_switch, 25).await?;
    let second = wait_inbound_above(&b, "window.__phone", first, SLOW).await?;
    assert!(second > first, "inbound-rtp grew {first} → {second}");

    b.screenshot(&screenshot_path("t90-web-agent-talking.png"))
        .await?;

    // The caller hangs up: the page hears "ended".
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200), "BYE: {}", r.raw);
    let ended = b
        .wait_js("ended", &format!("{}[0]", events("ended")), SLOW)
        .await?;
    assert_eq!(ended["reason"], "remote_hangup", "{ended}");
    assert_eq!(ended["call_id"], leg_a.call_id.as_str(), "{ended}");
    assert_eq!(b.eval("return window.__phone.state", vec![]).await?, "idle");

    let cdr = node.wait_cdr(&leg_a.call_id, SLOW).await?;
    assert_eq!(cdr["agent"], "1001", "CDR names the web agent: {cdr}");
    assert_eq!(cdr["caller"], "alice", "{cdr}");
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");

    // Closing the page unregisters the agent after the grace period (1 s here).
    b.eval("window.__phone.disconnect(); return true;", vec![])
        .await?;
    lingxi_tests::wait_until("agent 1001 unregistered", SLOW, || async {
        node.agent("1001")
            .await
            .is_ok_and(|a| a["registered"].is_null())
    })
    .await?;
    b.close().await;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_caller_reaches_sip_agent() -> anyhow::Result<()> {
    if skip_without_browser() {
        return Ok(());
    }
    let _one_browser = one_browser_at_a_time();
    let node = web_node().await?;
    let mut agent = node.agent_ua("1002").await?;
    let rtp_agent = Rtp::bind().await?;
    let b = Browser::start().await?;
    let base = format!("http://{}", node.http);

    b.goto(&format!(
        "{base}/console/call-us.html?lang=zh-CN&queue=support"
    ))
    .await?;
    b.screenshot(&screenshot_path("t90-call-us-zh.png")).await?;
    b.click("#lang").await?;
    b.screenshot(&screenshot_path("t90-call-us-en.png")).await?;
    b.click("#call").await?;

    // The switch offers the web call to the SIP agent, who answers.
    let invite = agent.wait_invite(SLOW).await?;
    let from = invite.header("From").unwrap_or_default().to_owned();
    assert!(from.contains("sip:web-"), "web caller id in From: {from}");
    agent.ring(&invite).await?;
    let leg_b = agent.answer(&invite, &rtp_agent).await?;
    agent.wait_ack(&leg_b, WAIT).await?;
    b.wait_js(
        "talking",
        "window.__caller && window.__caller.state === 'talking'",
        SLOW,
    )
    .await?;
    // The language was switched to English before calling.
    assert_eq!(
        b.text("#status").await?,
        "In call",
        "status in the chosen language"
    );
    b.click("#lang").await?;
    assert_eq!(
        b.text("#status").await?,
        "通话中",
        "status after switching to Chinese"
    );

    // Browser → agent and agent → browser.
    rtp_agent.reset();
    let got = rtp_agent.wait_any(25, SLOW).await?;
    assert!(got >= 25, "agent got {got} packets from the browser");
    let to_switch = leg_b.remote_rtp()?;
    rtp_agent.send_pcmu(to_switch, 25).await?;
    let first = wait_inbound_above(&b, "window.__caller", 0, SLOW).await?;
    rtp_agent.send_pcmu(to_switch, 25).await?;
    let second = wait_inbound_above(&b, "window.__caller", first, SLOW).await?;
    assert!(second > first, "inbound-rtp grew {first} → {second}");
    b.screenshot(&screenshot_path("t90-call-us-talking.png"))
        .await?;

    // The agent hangs up; the page shows the call ended.
    let mut leg_b = leg_b;
    let r = agent.bye(&mut leg_b).await?;
    assert_eq!(r.status, Some(200), "BYE: {}", r.raw);
    b.wait_js("idle", "window.__caller.state === 'idle'", SLOW)
        .await?;
    let calls = node.calls().await?;
    assert!(calls.is_empty(), "calls left: {calls:?}");
    let cdrs = node.cdrs().await?;
    let cdr = cdrs
        .iter()
        .find(|c| c["caller"].as_str().is_some_and(|s| s.starts_with("web-")))
        .ok_or_else(|| anyhow::anyhow!("no CDR of the web caller in {cdrs:?}"))?;
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    assert_eq!(cdr["queue"], "support", "{cdr}");

    b.close().await;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_agent_holds_sends_keys_and_transfers() -> anyhow::Result<()> {
    if skip_without_browser() {
        return Ok(());
    }
    let _one_browser = one_browser_at_a_time();
    let node = web_node().await?;
    let b = Browser::start().await?;
    let (mut caller, mut leg_a, _rtp_caller) = web_agent_talking(&node, &b).await?;
    let phase = |calls: Vec<Value>| {
        calls
            .iter()
            .find(|c| c["call_id"] == leg_a.call_id.as_str())
            .and_then(|c| c["phase"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };

    // Hold: a re-INVITE sendonly to the switch; the call is held in the API.
    b.eval("window.__phone.hold(true); return true;", vec![])
        .await?;
    b.wait_js("held", "window.__phone.state === 'held'", SLOW)
        .await?;
    let calls = node.calls().await?;
    assert_eq!(phase(calls.clone()), "held", "{calls:?}");
    b.eval("window.__phone.hold(false); return true;", vec![])
        .await?;
    b.wait_js("talking again", "window.__phone.state === 'talking'", SLOW)
        .await?;
    let calls = node.calls().await?;
    assert_ne!(phase(calls.clone()), "held", "{calls:?}");

    // A key press is sent without complaint; a bad key is refused with a message.
    b.eval(
        "window.__phone.dtmf('5'); window.__phone.dtmf('x'); return true;",
        vec![],
    )
    .await?;
    let err = b
        .wait_js("DTMF error", &format!("{}[0]", events("error")), SLOW)
        .await?;
    assert!(
        err["message"].as_str().is_some_and(|m| m.contains("'x'")),
        "only the bad key is refused: {err}"
    );
    assert!(
        err["message_zh"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );

    // Blind transfer: a REFER in the dialog. The switch either accepts it ("transferred",
    // then the call leaves this agent) or refuses it (an "error" naming the status).
    b.eval(
        "window.__events = []; window.__phone.transfer({ queue: 'support' }); return true;",
        vec![],
    )
    .await?;
    let outcome = b
        .wait_js(
            "transfer outcome",
            "window.__events.find(e => e.type === 'transferred' || e.type === 'error')",
            SLOW,
        )
        .await?;
    if outcome["type"] == "error" {
        let m = outcome["message"].as_str().unwrap_or_default();
        assert!(m.contains("transfer"), "{outcome}");
        // Refused: the call is still up; the caller hangs up.
        let r = caller.bye(&mut leg_a).await?;
        assert_eq!(r.status, Some(200), "BYE: {}", r.raw);
    }
    b.wait_js("ended", &format!("{}[0]", events("ended")), SLOW)
        .await?;
    b.close().await;
    node.shutdown().await;
    Ok(())
}

/// Upgrade headers of a WebSocket handshake, plus `extra`.
fn upgrade_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    h.extend_from_slice(extra);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_socket_requires_an_agent_login() -> anyhow::Result<()> {
    use lingxi_tests::node::{TEST_API_KEY, http_request_as};
    let node = web_node().await?;
    let token = web_agent_token(&node, "webagent1002", "1002").await?;
    // No credentials: 401.
    let (status, _, body) =
        http_request_as(node.http, "GET", "/api/v1/ws", None, &upgrade_headers(&[])).await?;
    assert_eq!(status, 401, "{body}");
    // A valid token that is not an agent's (the admin API key): 403, in both languages.
    let path = format!("/api/v1/ws?token={TEST_API_KEY}");
    let (status, _, body) =
        http_request_as(node.http, "GET", &path, None, &upgrade_headers(&[])).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("error_zh"), "{body}");
    // The agent's cookie from another site's page: refused (cross-site WebSocket hijacking).
    let cookie = format!("lingxi_session={token}");
    let (status, _, body) = http_request_as(
        node.http,
        "GET",
        "/api/v1/ws",
        None,
        &upgrade_headers(&[("Cookie", &cookie), ("Origin", "http://evil.example")]),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    node.shutdown().await;
    Ok(())
}
