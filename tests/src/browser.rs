//! [`Browser`]: headless Debian Chromium driven over WebDriver (`chromedriver` + fantoccini),
//! with fake audio devices, for the web console and WebRTC tests.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use lingxi_tests::browser::Browser;
//! let browser = Browser::start().await?;
//! browser.goto("http://127.0.0.1:8080/console/").await?;
//! browser.click("#login").await?;
//! let ready = browser.eval("return document.title", vec![]).await?;
//! browser.screenshot(std::path::Path::new("target/console.png")).await?;
//! browser.close().await;
//! # Ok(()) }
//! ```
//!
//! Each [`Browser`] runs its own `chromedriver` on a free port, in its own process group, with a
//! new temporary profile; dropping it kills that process group (the driver and the Chromium it
//! started), so a failing test leaves nothing behind. The system packages `chromium` and
//! `chromium-driver` must be installed (`test.sh` installs them).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Chromium flags: headless, no GPU or background traffic, a throwaway profile, fake camera and
/// microphone that need no permission prompt, autoplay allowed (remote audio plays at once).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
];

/// Where Debian installs the browser and its driver.
fn binary(name: &str, candidates: &[&str]) -> anyhow::Result<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!(
                "{name} not found (looked at {candidates:?}); install the Debian packages \
                 chromium and chromium-driver (test.sh does)"
            )
        })
}

/// Whether Chromium and chromedriver are installed, for tests that want to say why they skip.
pub fn available() -> bool {
    binary(
        "chromium",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )
    .is_ok()
        && binary("chromedriver", &["/usr/bin/chromedriver"]).is_ok()
}

/// Whether a browser test should skip: Chromium or chromedriver is missing and the run does
/// not require them. Under `./test.sh` (which installs them and sets
/// `LINGXI_REQUIRE_BROWSER=1`) or with `CI` set, a missing browser fails the test instead.
pub fn skip_without_browser() -> bool {
    if available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("LINGXI_REQUIRE_BROWSER").is_none(),
        "chromium and chromium-driver must be installed (test.sh installs them)"
    );
    eprintln!("SKIPPED: chromium and chromedriver are not installed (test.sh installs them)");
    true
}

/// Where a test saves screenshot `name`: `target/screenshots/` of the workspace.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name)
}

/// A headless Chromium under WebDriver. Killed (driver and browser) on drop.
pub struct Browser {
    /// The WebDriver session.
    client: Client,
    /// The chromedriver process; its process group also holds Chromium.
    driver: Child,
    /// The browser's profile directory, removed on drop.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a Chromium session with the
    /// flags above. Fails with a clear message when the packages are missing or the driver
    /// does not come up within 20 s.
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_with_args(&[]).await
    }

    /// [`Browser::start`] with extra Chromium flags (e.g. `--lang=zh-CN`).
    pub async fn start_with_args(extra: &[&str]) -> anyhow::Result<Browser> {
        let chromium = binary(
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )?;
        let chromedriver = binary("chromedriver", &["/usr/bin/chromedriver"])?;
        let port = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .context("finding a free port for chromedriver")?;
            l.local_addr()?.port()
        };
        let profile = tempfile::tempdir().context("creating a browser profile directory")?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: dropping the Browser kills the driver and Chromium
            // together, by this group's id.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut browser_guard = DriverGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not listen on {addr} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium.display().to_string(), "args": args }),
        );
        let client = tokio::time::timeout(Duration::from_secs(60), async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        })
        .await
        .map_err(|_| anyhow!("Chromium did not start within 60 s"))?
        .context("opening a WebDriver session with Chromium")?;
        Ok(Browser {
            client,
            driver: browser_guard.0.take().expect("driver present"),
            _profile: profile,
        })
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits for the page's load event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("loading {url}"))
    }

    /// Clicks the first element matching the CSS selector.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element matches {css:?}"))?;
        el.click()
            .await
            .with_context(|| format!("clicking {css:?}"))
    }

    /// Types `text` into the first element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element matches {css:?}"))?;
        el.clear().await.ok();
        el.send_keys(text)
            .await
            .with_context(|| format!("typing into {css:?}"))
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element matches {css:?}"))?;
        Ok(el.text().await?)
    }

    /// Runs `script` as a function body (`return …` gives the result; `arguments[i]` are
    /// `args`).
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client
            .execute(script, args)
            .await
            .map_err(|e| anyhow!("script failed: {e}\n--- script ---\n{script}"))
    }

    /// Runs an async expression: `script` is the body of an `async` function whose return
    /// value (awaited, JSON-serialisable) is the result, e.g.
    /// `const r = await pc.getStats(); return r.size;`. A thrown error becomes an `Err`.
    pub async fn eval_async(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\n\
             const args = Array.prototype.slice.call(arguments, 0, arguments.length - 1);\n\
             (async function() {{ {script} \n}}).apply(null, args)\n\
               .then(v => done({{ ok: v === undefined ? null : v }}),\n\
                     e => done({{ err: String(e && e.stack || e) }}));"
        );
        let out = self
            .client
            .execute_async(&wrapped, args)
            .await
            .map_err(|e| anyhow!("async script failed: {e}\n--- script ---\n{script}"))?;
        match out.get("err") {
            Some(e) => Err(anyhow!("async script threw: {e}\n--- script ---\n{script}")),
            None => Ok(out.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Polls the JS expression `expr` every 200 ms until it is truthy, returning its value;
    /// errors with `what` and the last value after `timeout`.
    pub async fn wait_js(
        &self,
        what: &str,
        expr: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let script = format!("return ({expr});");
        loop {
            let v = self.eval(&script, vec![]).await?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what} ({expr} = {v})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG screenshot of the page to `path` (parent directories are created).
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The browser console's messages so far are not available over W3C WebDriver; pages
    /// under test keep their own log. This returns `window.__log` when the page defines it.
    pub async fn page_log(&self) -> String {
        self.eval("return (window.__log || []).join('\\n')", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Ends the WebDriver session (Chromium exits), then the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        // Dropping `self` kills whatever is left of the driver's process group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills a driver's process group when dropped (also on early returns in `start`).
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

/// SIGKILL to the process group led by `child` (chromedriver and the Chromium it started),
/// then reaps the driver.
fn kill_group(child: &mut Child) {
    // Even when the driver has exited, its group may still hold Chromium.
    let pgid = child.id();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
