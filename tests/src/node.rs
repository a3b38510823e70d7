//! [`TestNode`]: a node started in-process on loopback, with a tiny HTTP/1.1 client for its
//! API and polling helpers.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use lingxi_config::{AgentConfig, Config, QueueConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Generous default for waits: tests must pass on a loaded two-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// Next RTP port block; each node gets 200 ports of its own.
static NEXT_RTP_BLOCK: AtomicU16 = AtomicU16::new(0);

/// A fresh RTP port range `(min, max)` for one node.
pub fn rtp_block() -> (u16, u16) {
    // Spread processes apart too (test binaries may run at the same time as other suites).
    let per_process = (std::process::id() % 10) as u16 * 2000;
    let k = NEXT_RTP_BLOCK.fetch_add(1, Ordering::Relaxed) % 10;
    let min = 30000 + per_process + k * 200;
    (min, min + 199)
}

/// Captures the node's logs in the test's output (shown when a test fails), filtered by
/// `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The admin API key every test node accepts (configured by [`base_config`] and the cluster
/// harness); [`http_request`] sends it. A test value, never for production.
pub const TEST_API_KEY: &str = "lingxi-test-admin-api-key-not-for-production";

/// Hex SHA-256 of [`TEST_API_KEY`], as `[[auth.api_keys]]` wants it.
pub const TEST_API_KEY_SHA256: &str =
    "3a74798134b08b6cd79dd3a530faf2bfbc81670e5cb2eca36990bed906f71712";

/// A node config for tests: loopback, ephemeral SIP and HTTP ports, its own RTP range, fast
/// ACD timers (ring 15 s, wrap-up 1 s), recording off, fault injection on, the admin API key
/// [`TEST_API_KEY`]; no queues or agents.
pub fn base_config() -> Config {
    let mut c = Config::default();
    // Actor names are process-wide: every node in the test process needs its own id.
    static NEXT_NODE: AtomicU16 = AtomicU16::new(1);
    c.node.id = format!("test{}", NEXT_NODE.fetch_add(1, Ordering::Relaxed));
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    c.sip.listen_ip = lo;
    c.sip.udp_port = 0;
    c.sip.tcp_port = 0;
    c.http.listen = SocketAddr::new(lo, 0);
    c.media.rtp_ip = lo;
    let (min, max) = rtp_block();
    c.media.rtp_port_min = min;
    c.media.rtp_port_max = max;
    c.acd.ring_timeout_secs = 15;
    c.acd.wrapup_secs = 1;
    c.recording.enabled = false;
    c.debug.fault_injection = true;
    c.auth.api_keys.push(lingxi_config::ApiKeyConfig {
        name: "tests".into(),
        role: "admin".into(),
        sha256: TEST_API_KEY_SHA256.into(),
    });
    c
}

/// An agent with skill `support` at 5, password `pass<id>`.
pub fn agent(id: &str) -> AgentConfig {
    AgentConfig {
        id: id.into(),
        password: format!("pass{id}"),
        skills: [("support".to_string(), 5u8)].into_iter().collect(),
        ..Default::default()
    }
}

/// [`base_config`] plus queue `support` (extension 8000, skill `support`) and agents
/// 1001 and 1002 (passwords `pass1001`, `pass1002`).
pub fn standard_config() -> Config {
    let mut c = base_config();
    c.queues.push(QueueConfig {
        id: "support".into(),
        extensions: vec!["8000".into()],
        skill: "support".into(),
        ..Default::default()
    });
    c.agents.push(agent("1001"));
    c.agents.push(agent("1002"));
    c
}

/// A node running in this process, with its data in a temporary directory.
pub struct TestNode {
    /// The node (taken by [`TestNode::shutdown`]).
    node: Option<lingxi_node::Node>,
    /// Keeps the data directory alive as long as the node.
    _dir: tempfile::TempDir,
    /// Where SIP over UDP listens.
    pub sip: SocketAddr,
    /// Where the HTTP API listens.
    pub http: SocketAddr,
}

impl TestNode {
    /// Starts a node with `config` (its `node.data_dir` is replaced by a temporary directory).
    pub async fn start(mut config: Config) -> anyhow::Result<TestNode> {
        init_logging();
        let dir = tempfile::tempdir().context("creating a data directory")?;
        config.node.data_dir = dir.path().to_path_buf();
        let node = lingxi_node::Node::start(config)
            .await
            .context("starting the node")?;
        let sip = node
            .sip_udp_addr()
            .ok_or_else(|| anyhow!("the node has no SIP UDP address"))?;
        let http = node.http_addr();
        Ok(TestNode {
            node: Some(node),
            _dir: dir,
            sip,
            http,
        })
    }

    /// Starts a node with [`standard_config`].
    pub async fn standard() -> anyhow::Result<TestNode> {
        TestNode::start(standard_config()).await
    }

    /// The node itself.
    pub fn node(&self) -> &lingxi_node::Node {
        self.node.as_ref().expect("node running")
    }

    /// Stops the node gracefully.
    pub async fn shutdown(mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown(Duration::from_secs(2)).await;
        }
    }

    /// One HTTP/1.1 request; returns status and body text.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<(u16, String)> {
        http_request(self.http, method, path, body).await
    }

    /// GET, body parsed as JSON (`Value::Null` when it is not JSON).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let (s, b) = self.http("GET", path, None).await?;
        Ok((s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// POST a JSON body.
    pub async fn http_post(&self, path: &str, json: &Value) -> anyhow::Result<(u16, Value)> {
        let b = json.to_string();
        let (s, b) = self
            .http("POST", path, Some(("application/json", b.as_bytes())))
            .await?;
        Ok((s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// PUT a JSON body.
    pub async fn http_put(&self, path: &str, json: &Value) -> anyhow::Result<(u16, Value)> {
        let b = json.to_string();
        let (s, b) = self
            .http("PUT", path, Some(("application/json", b.as_bytes())))
            .await?;
        Ok((s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// An agent as the API shows it.
    pub async fn agent(&self, id: &str) -> anyhow::Result<Value> {
        let (s, v) = self.http_get(&format!("/api/v1/agents/{id}")).await?;
        if s != 200 {
            bail!("GET /api/v1/agents/{id}: {s} {v}");
        }
        Ok(v)
    }

    /// An agent's state (`ready`, `logged_out`, ...).
    pub async fn agent_state(&self, id: &str) -> anyhow::Result<String> {
        Ok(self.agent(id).await?["state"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits until agent `id` is in `state`; returns the agent.
    pub async fn wait_agent_state(
        &self,
        id: &str,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let r = wait_for(&format!("agent {id} to be {state}"), timeout, || async {
            let a = self.agent(id).await.ok()?;
            (a["state"] == state).then_some(a)
        })
        .await;
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(anyhow!("{e}; last seen: {:?}", self.agent(id).await.ok())),
        }
    }

    /// A UA for agent `id` (password `pass<id>`), registered, with the agent `ready`.
    pub async fn agent_ua(&self, id: &str) -> anyhow::Result<crate::TestUa> {
        let mut ua = crate::TestUa::new(id, &format!("pass{id}"), self.sip).await?;
        let resp = ua.register().await?;
        if resp.status != Some(200) {
            bail!("REGISTER {id} answered {}", resp.raw);
        }
        self.wait_agent_state(id, "ready", WAIT).await?;
        Ok(ua)
    }

    /// All CDRs.
    pub async fn cdrs(&self) -> anyhow::Result<Vec<Value>> {
        let (s, v) = self.http_get("/api/v1/cdrs").await?;
        if s != 200 {
            bail!("GET /api/v1/cdrs: {s} {v}");
        }
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("CDRs are not an array: {v}"))
    }

    /// Waits for the CDR of `call_id`.
    pub async fn wait_cdr(&self, call_id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let r = wait_for(&format!("the CDR of {call_id}"), timeout, || async {
            self.cdrs()
                .await
                .ok()?
                .into_iter()
                .find(|c| c["call_id"] == call_id)
        })
        .await;
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(anyhow!("{e}; CDRs: {:?}", self.cdrs().await.ok())),
        }
    }

    /// A queue as the API shows it.
    pub async fn queue(&self, id: &str) -> anyhow::Result<Value> {
        let (s, v) = self.http_get("/api/v1/queues").await?;
        if s != 200 {
            bail!("GET /api/v1/queues: {s} {v}");
        }
        v.as_array()
            .and_then(|a| a.iter().find(|q| q["id"] == id).cloned())
            .ok_or_else(|| anyhow!("queue {id} not in {v}"))
    }

    /// Waits until queue `id` has `depth` calls waiting.
    pub async fn wait_queue_depth(
        &self,
        id: &str,
        depth: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_for(&format!("queue {id} depth {depth}"), timeout, || async {
            let q = self.queue(id).await.ok()?;
            (q["depth"].as_u64() == Some(depth)).then_some(())
        })
        .await
    }

    /// Live calls (`GET /api/v1/calls`).
    pub async fn calls(&self) -> anyhow::Result<Vec<Value>> {
        let (_, v) = self.http_get("/api/v1/calls").await?;
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("calls are not an array: {v}"))
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the async condition `f` until it holds, or fails after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// A minimal HTTP/1.1 client: one request per connection (`Connection: close`); handles
/// Content-Length, chunked and read-to-end bodies. Authenticated with [`TEST_API_KEY`].
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<(u16, String)> {
    http_request_as(
        addr,
        method,
        path,
        body,
        &[("Authorization", &format!("Bearer {TEST_API_KEY}"))],
    )
    .await
    .map(|(status, _, body)| (status, body))
}

/// [`http_request`] with exactly the extra `headers` given (none: an anonymous request);
/// returns status, the response head (status line and headers) and the body.
pub async fn http_request_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, String)> {
    let io = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        match body {
            Some((ctype, b)) => req.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            None => req.push_str("Content-Length: 0\r\n\r\n"),
        }
        let mut bytes = req.into_bytes();
        if let Some((_, b)) = body {
            bytes.extend_from_slice(b);
        }
        s.write_all(&bytes).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        anyhow::Ok(resp)
    };
    let resp = tokio::time::timeout(WAIT, io)
        .await
        .map_err(|_| anyhow!("HTTP {method} {path}: no response within {WAIT:?}"))??;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("HTTP {method} {path}: response without a header end"))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let raw_body = &resp[split + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("HTTP {method} {path}: bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(raw_body)?
    } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        raw_body[..len.min(raw_body.len())].to_vec()
    } else {
        raw_body.to_vec()
    };
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&b[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
}
