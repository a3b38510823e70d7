//! The agent console at `/console`, driven in headless Chromium: the static files are public
//! and typed; the first admin creates an agent's web user in the Users view; a wrong password
//! is refused and a lockout shows when to retry; a web agent logs
//! in (English, then the console switched to Chinese), goes not-ready and ready, a SIP caller
//! dials the queue, the console rings with a screen pop of the caller's earlier call, the agent
//! answers, audio flows both ways (RTP at the caller, inbound-rtp in the browser), the
//! supervisor (a second browser, Chinese by its language) sees the live call and the agents,
//! the agent hangs up and saves a wrap-up whose disposition and note land on the CDR.
//! Screenshots go to `target/screenshots/`; the agent view in both languages is also copied to
//! `docs/` for the README when missing there, or always with `LINGXI_UPDATE_SCREENSHOTS=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use lingxi_tests::browser::{Browser, screenshot_path, skip_without_browser};
use lingxi_tests::node::http_request_as;
use lingxi_tests::{Rtp, TestNode, TestUa, WAIT, standard_config, wait_for};
use serde_json::{Value, json};

/// Bound for anything the browser has to do (a loaded two-core machine, Chromium included).
const LONG: Duration = Duration::from_secs(30);

/// The caller's number: also the key of the screen pop's history.
const CALLER: &str = "13800138000";

/// The workspace directory (screenshots go to its `target/`, README images to `docs/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The browser tests of this file take turns (two-core machines: one test's browsers at a time).
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One browser on the console of one node.
struct Console {
    browser: Browser,
    base: String,
    /// Who is using it, for messages.
    who: &'static str,
}

impl Console {
    /// Starts Chromium with the given UI language (its `navigator.language`).
    async fn start(node: &TestNode, lang: &str, who: &'static str) -> anyhow::Result<Console> {
        // Headless Chromium takes navigator.language from --accept-lang (--lang is ignored).
        let browser = Browser::start_with_args(&[&format!("--accept-lang={lang}")])
            .await
            .with_context(|| format!("starting Chromium for the {who}"))?;
        Ok(Console {
            browser,
            base: format!("http://{}", node.http),
            who,
        })
    }

    /// The page's visible text (for failure messages), shortened.
    async fn seen(&self) -> String {
        let text = self
            .browser
            .eval(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "<page not readable>".into());
        let text: String = text.chars().take(3000).collect();
        // A picture of the failure, beside the test's other screenshots.
        let shot = screenshot_path(&format!("failure-{}.png", self.who));
        let saved = match self.browser.screenshot(&shot).await {
            Ok(()) => format!("screenshot {}", shot.display()),
            Err(e) => format!("no screenshot: {e:#}"),
        };
        format!("the {} console ({saved}) showed:\n{text}", self.who)
    }

    /// Waits until the JS expression `expr` is truthy; on timeout says what the page showed.
    async fn wait(&self, what: &str, expr: &str) -> anyhow::Result<Value> {
        match self.browser.wait_js(what, expr, LONG).await {
            Ok(v) => Ok(v),
            Err(e) => bail!("{e:#}\n{}", self.seen().await),
        }
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .browser
            .eval(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await?;
        match v.as_str() {
            Some(s) => Ok(s.to_string()),
            None => bail!("no element {css:?}; {}", self.seen().await),
        }
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        if let Err(e) = self.browser.click(css).await {
            bail!("{e:#}\n{}", self.seen().await);
        }
        Ok(())
    }

    /// Chooses `value` in the `<select>` at `css`, as a person would.
    async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let ok = self
            .browser
            .eval(
                "const e = document.querySelector(arguments[0]);
                 if (!e || ![...e.options].some(o => o.value === arguments[1])) return false;
                 e.value = arguments[1];
                 e.dispatchEvent(new Event('change', { bubbles: true }));
                 return true;",
                vec![json!(css), json!(value)],
            )
            .await?;
        ensure!(
            ok == json!(true),
            "cannot choose {value:?} in {css:?}; {}",
            self.seen().await
        );
        Ok(())
    }

    /// Opens `/console` (which must redirect to `/console/`) and waits for the login form.
    async fn open(&self) -> anyhow::Result<()> {
        self.browser.goto(&format!("{}/console", self.base)).await?;
        self.wait("the login form", "document.getElementById('login-form')")
            .await?;
        let path = self
            .browser
            .eval("return location.pathname", vec![])
            .await?;
        ensure!(path == json!("/console/"), "/console led to {path}");
        Ok(())
    }

    /// Submits the login form.
    async fn login(&self, user: &str, password: &str) -> anyhow::Result<()> {
        self.browser.fill("#login-username", user).await?;
        self.browser.fill("#login-password", password).await?;
        self.click("#login-submit").await
    }

    /// Waits for the login error and returns its text.
    async fn login_error(&self, what: &str) -> anyhow::Result<String> {
        let v = self
            .wait(
                what,
                "(() => { const e = document.getElementById('login-error');
                          return e && !e.classList.contains('hidden') && e.textContent; })()",
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Switches the console's language with its own switch.
    async fn set_lang(&self, code: &str) -> anyhow::Result<()> {
        self.select("#lang-select", code).await
    }

    /// Audio RTP counters from the softphone's getStats: (inbound packets, outbound packets).
    async fn rtp(&self) -> anyhow::Result<(u64, u64)> {
        let v = self
            .browser
            .eval_async(
                "if (!window.lingxiConsole) throw new Error('the console is not signed in');
                 return await window.lingxiConsole.rtpStats();",
                vec![],
            )
            .await?;
        Ok((
            v["inbound"].as_u64().unwrap_or(0),
            v["outbound"].as_u64().unwrap_or(0),
        ))
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = screenshot_path(name);
        self.browser.screenshot(&path).await?;
        Ok(path)
    }

    async fn close(self) {
        self.browser.close().await;
    }
}

/// POST as the test admin (API key); fails unless the status is `want`.
async fn admin_post(node: &TestNode, path: &str, body: Value, want: u16) -> anyhow::Result<Value> {
    let (status, v) = node.http_post(path, &body).await?;
    ensure!(status == want, "POST {path} {body}: {status} {v}");
    Ok(v)
}

async fn add_user(
    node: &TestNode,
    username: &str,
    display: &str,
    role: &str,
    agent: Option<&str>,
    password: &str,
) -> anyhow::Result<()> {
    admin_post(
        node,
        "/api/v1/users",
        json!({"username": username, "display_name": display, "role": role,
               "agent_id": agent, "password": password}),
        201,
    )
    .await
    .map(|_| ())
}

/// One anonymous request: (status, response head, body).
async fn anonymous(node: &TestNode, path: &str) -> anyhow::Result<(u16, String, String)> {
    http_request_as(node.http, "GET", path, None, &[]).await
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_public_typed_and_confined() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (s, head, _) = anonymous(&node, "/console").await?;
    ensure!(
        (301..=308).contains(&s) && header(&head, "location") == Some("/console/"),
        "GET /console: {s}\n{head}"
    );
    let (s, head, body) = anonymous(&node, "/console/").await?;
    ensure!(s == 200, "GET /console/: {s} {body}");
    ensure!(
        header(&head, "content-type") == Some("text/html; charset=utf-8"),
        "{head}"
    );
    ensure!(header(&head, "content-security-policy").is_some(), "{head}");
    ensure!(body.contains("app.js"), "index.html: {body}");
    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("i18n.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("softphone.js", "text/javascript; charset=utf-8"),
    ] {
        let (s, head, body) = anonymous(&node, &format!("/console/{file}")).await?;
        ensure!(s == 200, "GET /console/{file}: {s} {body}");
        ensure!(
            header(&head, "content-type") == Some(ctype),
            "{file}: {head}"
        );
        ensure!(header(&head, "etag").is_some(), "{file}: {head}");
    }
    for bad in [
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console/..%2fCargo.toml",
        "/console/.hidden",
        "/console/nope.js",
    ] {
        let (s, _, body) = anonymous(&node, bad).await?;
        ensure!(s == 404, "GET {bad}: {s} {body}");
        ensure!(
            !body.contains("[workspace]"),
            "GET {bad} leaked a file: {body}"
        );
    }
    // The API behind it still wants a login.
    let (s, _, _) = anonymous(&node, "/api/v1/auth/me").await?;
    ensure!(s == 401, "anonymous /api/v1/auth/me: {s}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_a_user_then_wrong_passwords_lock_out() -> anyhow::Result<()> {
    if skip_without_browser() {
        return Ok(());
    }
    let _turn = BROWSERS.lock().await;
    let mut config = standard_config();
    config.auth.admin_password = Some("admin-secret-1".into());
    config.auth.login_max_failures = 3;
    let node = TestNode::start(config).await?;
    // The first admin is created in the background at start-up.
    wait_for("the first admin", LONG, || async {
        node.http_get("/api/v1/users/admin")
            .await
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .await?;
    let c = Console::start(&node, "en-US", "admin").await?;
    c.open().await?;
    let lang = c
        .browser
        .eval("return document.documentElement.lang", vec![])
        .await?;
    ensure!(lang == json!("en"), "an English browser got lang {lang}");

    // The first admin signs in and creates an agent's web user in the Users view.
    c.login("admin", "admin-secret-1").await?;
    c.wait("the users tab", "document.getElementById('tab-users')")
        .await?;
    c.click("#tab-users").await?;
    c.wait("the new-user form", "document.getElementById('user-form')")
        .await?;
    c.browser.fill("#user-username", "zhou").await?;
    c.browser.fill("#user-display", "周敏 Zhou Min").await?;
    c.select("#user-role", "agent").await?;
    c.browser.fill("#user-agent", "1002").await?;
    c.browser.fill("#user-password", "zhou-secret-1").await?;
    c.click("#user-submit").await?;
    c.wait(
        "the new user in the list",
        "document.querySelector('#users-table tr[data-user=\"zhou\"]')",
    )
    .await?;
    c.screenshot("console-users-en.png").await?;
    let (s, u) = node.http_get("/api/v1/users/zhou").await?;
    ensure!(
        s == 200
            && u["role"] == "agent"
            && u["agent_id"] == "1002"
            && u["display_name"] == "周敏 Zhou Min",
        "the user created in the console: {s} {u}"
    );
    c.click("#logout").await?;
    c.wait(
        "the login form again",
        "document.getElementById('login-form')",
    )
    .await?;

    c.login("zhou", "not-the-password").await?;
    let msg = c.login_error("the wrong-password message").await?;
    ensure!(
        msg == "Wrong username or password.",
        "wrong password showed {msg:?}"
    );

    // Keep failing until the switch locks the login; the form says when to retry.
    let mut locked = None;
    for _ in 0..4 {
        c.login("zhou", "still-not-the-password").await?;
        // The click shows "Signing in…" at once; wait for the answer.
        c.wait(
            "the login answer",
            "(() => { const b = document.getElementById('login-submit');
                      const e = document.getElementById('login-error');
                      return b && e && b.textContent !== 'Signing in…'
                          && !e.classList.contains('hidden'); })()",
        )
        .await?;
        let msg = c.text("#login-error").await?;
        if msg.starts_with("Too many failed attempts") {
            locked = Some(msg);
            break;
        }
    }
    let Some(msg) = locked else {
        bail!(
            "no lockout after 5 wrong passwords (limit 3); {}",
            c.seen().await
        )
    };
    ensure!(
        msg.contains("Try again in") && msg.chars().any(|ch| ch.is_ascii_digit()),
        "lockout message without a retry time: {msg:?}"
    );
    let disabled = c
        .browser
        .eval(
            "return document.getElementById('login-submit').disabled",
            vec![],
        )
        .await?;
    ensure!(
        disabled == json!(true),
        "the sign-in button stays enabled while locked out"
    );
    c.screenshot("console-lockout-en.png").await?;
    c.close().await;
    node.shutdown().await;
    Ok(())
}

/// An earlier call from [`CALLER`], answered by SIP agent 1002 and given a disposition, so the
/// screen pop has history; 1002 then unregisters so the next call goes to the web agent.
async fn earlier_call(node: &TestNode) -> anyhow::Result<()> {
    let mut agent = node.agent_ua("1002").await?;
    let mut caller = TestUa::new(CALLER, "", node.sip).await?;
    let (rtp_a, rtp_b) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut leg_a = caller.call("support", &rtp_a).await?;
    let invite = agent.wait_invite(WAIT).await?;
    agent.ring(&invite).await?;
    let leg_b = agent.answer(&invite, &rtp_b).await?;
    agent.wait_ack(&leg_b, WAIT).await?;
    node.wait_agent_state("1002", "busy", WAIT).await?;
    let r = caller.bye(&mut leg_a).await?;
    ensure!(r.status == Some(200), "BYE: {}", r.raw);
    agent.wait_bye(&leg_b, WAIT).await?;
    node.wait_cdr(&leg_a.call_id, WAIT).await?;
    admin_post(
        node,
        &format!("/api/v1/calls/{}/disposition", leg_a.call_id),
        json!({"disposition": "follow_up", "note": "询问信用卡分期手续费，约定回电。"}),
        200,
    )
    .await?;
    node.wait_agent_state("1002", "ready", WAIT).await?;
    let r = agent.unregister().await?;
    ensure!(r.status == Some(200), "un-REGISTER 1002: {}", r.raw);
    node.wait_agent_state("1002", "logged_out", WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_agent_answers_a_sip_caller_and_wraps_up() -> anyhow::Result<()> {
    if skip_without_browser() {
        return Ok(());
    }
    let _turn = BROWSERS.lock().await;
    let mut config = standard_config();
    config.agents[0].name = "Wang Fang".into();
    config.agents[1].name = "Zhou Min".into();
    let node = TestNode::start(config).await?;
    add_user(
        &node,
        "wang",
        "王芳 Wang Fang",
        "agent",
        Some("1001"),
        "wang-secret-1",
    )
    .await?;
    add_user(
        &node,
        "li",
        "李伟 Li Wei",
        "supervisor",
        None,
        "li-secret-12",
    )
    .await?;
    for (kind, title, body, lang) in [
        (
            "quick_reply",
            "问候语",
            "您好，这里是灵犀银行客服中心，请问有什么可以帮您？",
            "zh",
        ),
        (
            "quick_reply",
            "Greeting",
            "Hello, this is Lingxi Bank. How may I help you today?",
            "en",
        ),
        (
            "article",
            "信用卡分期手续费",
            "信用卡分期按期数收取手续费：3期、6期、12期费率不同。",
            "zh",
        ),
        (
            "article",
            "Credit card instalment fees",
            "Instalment fees depend on the number of instalments: 3, 6 or 12.",
            "en",
        ),
    ] {
        admin_post(
            &node,
            "/api/v1/kb/articles",
            json!({"kind": kind, "title": title, "body": body, "tags": [], "lang": lang}),
            201,
        )
        .await?;
    }
    earlier_call(&node).await?;

    // --- The agent logs in, in English (the browser's language).
    let agent = Console::start(&node, "en-US", "agent").await?;
    agent.open().await?;
    agent.login("wang", "wrong-password").await?;
    let msg = agent.login_error("the wrong-password message").await?;
    ensure!(
        msg == "Wrong username or password.",
        "wrong password showed {msg:?}"
    );
    agent.login("wang", "wang-secret-1").await?;
    agent
        .wait("the agent desk", "document.getElementById('agent-state')")
        .await?;
    let name = agent.text("#user-name").await?;
    ensure!(name == "王芳 Wang Fang", "signed in as {name:?}");
    agent
        .wait(
            "the browser phone to register",
            "document.querySelector('#phone-status[data-status=registered]')",
        )
        .await?;
    if let Err(e) = wait_for(
        "agent 1001 registered through the web gateway",
        LONG,
        || async {
            node.agent("1001")
                .await
                .ok()
                .filter(|a| a["registered"].is_object())
        },
    )
    .await
    {
        bail!("{e:#}; the switch has {}", node.agent("1001").await?);
    }

    // Not ready (with the first reason), then ready.
    agent
        .wait(
            "a settled agent state",
            "['ready','not_ready','logged_out'].includes(document.getElementById('agent-state').dataset.state)",
        )
        .await?;
    agent.click("#btn-not-ready").await?;
    agent
        .wait(
            "state not ready",
            "document.getElementById('agent-state').dataset.state === 'not_ready'",
        )
        .await?;
    let a = node.agent("1001").await?;
    ensure!(
        a["state"] == "not_ready" && a["reason"].is_string(),
        "after Not ready the switch has {a}"
    );
    agent.click("#btn-ready").await?;
    agent
        .wait(
            "state ready",
            "document.getElementById('agent-state').dataset.state === 'ready'",
        )
        .await?;
    node.wait_agent_state("1001", "ready", WAIT).await?;

    // --- A SIP caller dials the queue; the console rings with a screen pop.
    let mut caller = TestUa::new(CALLER, "", node.sip).await?;
    let rtp_caller = Rtp::bind().await?;
    let out = caller.invite("support", &rtp_caller).await?;
    ensure!(
        out.response.status == Some(200),
        "INVITE support: {}",
        out.response.raw
    );
    let leg_a = out.dialog.context("a 2xx makes a dialog")?;
    let call_id = leg_a.call_id.clone();
    agent
        .wait("the ring banner", "document.getElementById('ring-banner')")
        .await?;
    let from = agent.text("#ring-from").await?;
    ensure!(from.contains(CALLER), "the banner shows {from:?}");
    agent
        .wait(
            "the screen pop with the earlier call",
            "(() => { const t = document.getElementById('pop-history');
                      return t && t.textContent.includes('约定回电') && t.textContent.includes('Follow-up'); })()",
        )
        .await?;
    let pop = agent.text("#pop-caller").await?;
    ensure!(pop.contains(CALLER), "the screen pop shows {pop:?}");

    // --- Answer; audio both ways.
    agent.click("#btn-answer").await?;
    agent
        .wait(
            "the call to be talking",
            "(() => { const p = document.getElementById('call-phase'); return p && p.dataset.phase === 'talking'; })()",
        )
        .await?;
    ensure!(
        agent.text("#ring-banner").await.is_err(),
        "the ring banner is still shown after answering"
    );
    node.wait_agent_state("1001", "busy", LONG).await?;

    // Browser → caller: the fake microphone's audio arrives as RTP at the SIP caller.
    rtp_caller.reset();
    let got = rtp_caller.wait_any(25, LONG).await.with_context(|| {
        format!(
            "RTP from the web agent to the SIP caller; caller stats {:?}",
            rtp_caller.stats()
        )
    })?;
    // Caller → browser: the softphone's inbound-rtp packetsReceived grows.
    let (in0, out0) = agent.rtp().await?;
    let to = leg_a.remote_rtp()?;
    let (sent, grew) = tokio::join!(rtp_caller.send_pcmu(to, 150), async {
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let (inbound, outbound) = agent.rtp().await?;
            if inbound >= in0 + 25 {
                return anyhow::Ok((inbound, outbound));
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "inbound-rtp packetsReceived went {in0} → {inbound} (outbound {out0} → {outbound}) \
                     while the caller sent 150 packets to {to}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    sent?;
    let (inbound, outbound) = grew?;
    ensure!(
        outbound > out0,
        "the browser sent no RTP: outbound {out0} → {outbound}"
    );
    eprintln!(
        "audio: caller got {got} packets from the browser; browser inbound {in0} → {inbound}, outbound {out0} → {outbound}"
    );

    // Hold and resume from the console: the switch sees the call held, then talking again.
    agent.click("#btn-hold").await?;
    agent
        .wait(
            "the call on hold",
            "document.getElementById('call-phase').dataset.phase === 'held'",
        )
        .await?;
    let phase = |want: &'static str| {
        let node = &node;
        let call_id = call_id.clone();
        async move {
            node.calls().await.ok().and_then(|calls| {
                calls
                    .into_iter()
                    .find(|c| c["call_id"] == call_id.as_str() && c["phase"] == want)
            })
        }
    };
    if let Err(e) = wait_for("the switch to see the call held", LONG, || phase("held")).await {
        bail!("{e:#}; live calls: {:?}", node.calls().await?);
    }
    agent.click("#btn-hold").await?;
    agent
        .wait(
            "the call resumed",
            "document.getElementById('call-phase').dataset.phase === 'talking'",
        )
        .await?;
    if let Err(e) = wait_for("the switch to see the call resumed", LONG, || {
        phase("talking")
    })
    .await
    {
        bail!("{e:#}; live calls: {:?}", node.calls().await?);
    }
    // Mute is local to the browser; the keypad sends DTMF and shows what was pressed.
    agent.click("#btn-mute").await?;
    agent
        .wait(
            "mute on",
            "document.getElementById('btn-mute').getAttribute('aria-pressed') === 'true'",
        )
        .await?;
    agent.click("#btn-mute").await?;
    agent.click("#btn-keypad").await?;
    agent.click("#dtmf-pad [data-digit='1']").await?;
    agent.click("#dtmf-pad [data-digit='#']").await?;
    agent
        .wait(
            "the digits pressed",
            "document.getElementById('dtmf-display').textContent === '1#'",
        )
        .await?;
    agent.click("#btn-keypad").await?;

    // Knowledge base from the desk, then the English screenshot.
    agent.browser.fill("#kb-search", "instalment fees").await?;
    agent
        .wait(
            "a knowledge-base hit",
            "(() => { const r = document.getElementById('kb-results'); return r && r.textContent.includes('Credit card instalment fees'); })()",
        )
        .await?;
    let timer = agent.text("#call-timer").await?;
    ensure!(timer.contains(':'), "call timer shows {timer:?}");
    let en_shot = agent.screenshot("console-agent-en.png").await?;

    // Switch the same console to Chinese, mid-call.
    agent.set_lang("zh").await?;
    agent
        .wait(
            "the desk in Chinese",
            "document.getElementById('call-phase') && document.getElementById('call-phase').textContent === '通话中'",
        )
        .await?;
    agent.browser.fill("#kb-search", "信用卡分期").await?;
    agent
        .wait(
            "a Chinese knowledge-base hit",
            "(() => { const r = document.getElementById('kb-results'); return r && r.textContent.includes('信用卡分期手续费'); })()",
        )
        .await?;
    let zh_shot = agent.screenshot("console-agent-zh.png").await?;

    // --- The supervisor, in a second browser whose language is Chinese.
    let sup = Console::start(&node, "zh-CN", "supervisor").await?;
    sup.open().await?;
    let button = sup.text("#login-submit").await?;
    ensure!(
        button == "登录",
        "a Chinese browser's login button says {button:?}"
    );
    sup.login("li", "li-secret-12").await?;
    sup.wait(
        "the live call in the supervisor view",
        &format!("document.querySelector('#sup-calls tr[data-call-id=\"{call_id}\"]')"),
    )
    .await?;
    sup.wait(
        "agent 1001 busy on the web, 1002 logged out",
        "(() => { const a = document.querySelector('#sup-agents tr[data-agent=\"1001\"]');
                  const b = document.querySelector('#sup-agents tr[data-agent=\"1002\"]');
                  return a && b && a.dataset.state === 'busy' && a.textContent.includes('网页')
                      && b.dataset.state === 'logged_out'; })()",
    )
    .await?;
    let queue = sup.text("#sup-queues tr[data-queue=\"support\"]").await?;
    ensure!(queue.contains("support"), "queue row: {queue:?}");
    sup.screenshot("console-supervisor-zh.png").await?;

    // --- Hang up from the console; wrap up.
    agent.click("#btn-hangup").await?;
    caller
        .wait_bye(&leg_a, LONG)
        .await
        .context("the caller's BYE after the agent hung up")?;
    agent
        .wait("the wrap-up form", "document.getElementById('wrapup-form')")
        .await?;
    let note = "客户咨询信用卡分期手续费，已解答。Explained the fees.";
    agent.select("#wrapup-disposition", "resolved").await?;
    agent.browser.fill("#wrapup-note", note).await?;
    agent.click("#wrapup-submit").await?;
    agent
        .wait(
            "the wrap-up to be saved",
            "!document.getElementById('wrapup-form')",
        )
        .await?;

    // The CDR names the web agent and carries the disposition and note.
    let this_call = |c: &Value| c["call_id"] == call_id.as_str();
    let found = wait_for("the CDR with its disposition", LONG, || async {
        node.cdrs()
            .await
            .ok()?
            .into_iter()
            .find(|c| this_call(c) && c["disposition"].is_string())
    })
    .await;
    let cdr = match found {
        Ok(cdr) => cdr,
        Err(e) => {
            let cdrs: Vec<Value> = node.cdrs().await?.into_iter().filter(this_call).collect();
            bail!("{e:#}; the call's CDRs: {cdrs:?}");
        }
    };
    ensure!(cdr["agent"] == "1001", "CDR {cdr}");
    ensure!(cdr["caller"] == CALLER, "CDR {cdr}");
    ensure!(cdr["disposition"] == "resolved", "CDR {cdr}");
    ensure!(cdr["note"] == note, "CDR {cdr}");
    ensure!(cdr["outcome"] == "call.completed", "CDR {cdr}");
    ensure!(cdr["ended_by"] == "agent", "CDR {cdr}");

    // The call leaves the supervisor's view.
    sup.wait(
        "the ended call to leave the supervisor view",
        &format!("!document.querySelector('#sup-calls tr[data-call-id=\"{call_id}\"]')"),
    )
    .await?;

    // The README's pictures: made when missing, remade with LINGXI_UPDATE_SCREENSHOTS=1 (so an
    // ordinary run leaves the working tree alone).
    let docs = workspace().join("docs");
    let update = std::env::var_os("LINGXI_UPDATE_SCREENSHOTS").is_some();
    for (shot, name) in [(&en_shot, "console-en.png"), (&zh_shot, "console-zh.png")] {
        let to = docs.join(name);
        if update || !to.exists() {
            std::fs::create_dir_all(&docs)?;
            std::fs::copy(shot, &to).with_context(|| format!("copying to {}", to.display()))?;
        }
    }

    sup.close().await;
    agent.close().await;
    node.shutdown().await;
    Ok(())
}
