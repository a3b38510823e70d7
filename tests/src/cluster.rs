//! [`Cluster`]: real `lingxi` processes on loopback, for the failover, partition and
//! membership tests.
//!
//! Each node runs the `lingxi` binary built next to the test (`target/<profile>/lingxi`) with a
//! config written into a temporary directory: its own SIP (UDP+TCP), HTTP and Raft ports, a
//! disjoint RTP range, queue `support` (8000; callers wait even with no agent logged in) and
//! agents 1001–1003, queue `empty` (8001; nobody has its skill, so calls are refused 480 after
//! their arrival and CDR are committed), wrap-up 1 s, recording off, fault injection on. Its
//! logs go to `<dir>/<node>.log` (printed when a test fails).
//!
//! Raft traffic between nodes goes through one fault-injecting TCP proxy per node (every
//! node's `peers` name the proxies, never the real listeners). A Raft connection opens with
//! the sender's id (`LXRF` + `u64`), so the proxy knows both ends of each connection and
//! [`Cluster::cut`] can drop all of a node's Raft traffic both ways: its proxy refuses and
//! closes everything, the others refuse and close what it sends.
//!
//! Also here: answering a switch's re-INVITE ([`answer_reinvite`]) and a continuous RTP
//! talker whose destination can change ([`Talker`]), for measuring the failover audio gap.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::msg::{self, SipMsg, uri_addr};
use crate::node::{WAIT, http_request, wait_for};
use crate::{Dialog, Rtp, TestUa};

/// How long a node may take to start (bind, elect, announce) on a loaded machine.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// Failure detection + lease + re-INVITE round trips, with room for a loaded machine.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(20);

/// Magic that opens every Raft connection (see `cluster/src/raft/transport.rs`).
const RAFT_MAGIC: &[u8; 4] = b"LXRF";

/// Lines of each node's log printed when a test fails.
const LOG_TAIL: usize = 150;

/// Next block of 200 RTP ports in this process (nodes of successive clusters never share).
static NEXT_RTP_BLOCK: AtomicU16 = AtomicU16::new(0);

/// The `lingxi` binary next to the running test executable: `$LINGXI_BIN` if set, else
/// `target/<profile>/lingxi` derived from `target/<profile>/deps/<test>`.
pub fn lingxi_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("LINGXI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let bin = profile_dir.join("lingxi");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with cargo build -p lingxi-node (add --release for release tests)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Next candidate for a node's SIP, HTTP or Raft port. Node ports come from 2000–4999: below
/// the kernel's ephemeral range (a port picked from `:0` and released could be taken by any
/// socket bound to `:0` before the node binds it) and apart from the ranges other suites and
/// benchmarks use (bench/run.sh gives its node RTP 10000–32000; `TestNode` uses 30000+).
/// Each test process scans its own block of 120, by process id.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback port free for both TCP and UDP right now (SIP binds both on one number; HTTP
/// and Raft need only TCP but are kept apart the same way).
async fn free_port() -> anyhow::Result<u16> {
    let base = 2000 + (std::process::id() % 25) as u16 * 120;
    for _ in 0..120 {
        let port = base + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 120;
        let Ok(_t) = TcpListener::bind(("127.0.0.1", port)).await else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", port)).await.is_ok() {
            return Ok(port);
        }
    }
    bail!(
        "no loopback port free for TCP and UDP in {base}..{}",
        base + 119
    )
}

/// A disjoint RTP range of 200 ports for one node, in 61000–64999: above the kernel's
/// ephemeral range (where the test UAs' sockets land) and apart from other suites' and
/// benchmarks' ranges; 10 blocks per test process (two tests of a file run at once: up to
/// 3 + 4 nodes live), two process slots by process id (cargo runs test binaries one by one).
fn rtp_range() -> (u16, u16) {
    let per_process = (std::process::id() % 2) as u16 * 2000;
    let k = NEXT_RTP_BLOCK.fetch_add(1, Ordering::Relaxed) % 10;
    let min = 61000 + per_process + k * 200;
    (min, min + 199)
}

/// One `lingxi` process of a [`Cluster`] (running or not).
pub struct ProcNode {
    /// `node.id`: `n1`, `n2`, ...; calls name their owner by it.
    pub name: String,
    /// `cluster.raft_id`: 1, 2, ...
    pub raft_id: u64,
    /// SIP over UDP (and TCP, same port number).
    pub sip: SocketAddr,
    /// The HTTP API.
    pub http: SocketAddr,
    /// Where its Raft transport really listens.
    pub raft_listen: SocketAddr,
    /// Its proxy: the Raft address every other node uses for it.
    pub raft_public: SocketAddr,
    /// Its RTP port range, so tests can tell which node relays a packet.
    pub rtp: (u16, u16),
    /// Its config file.
    pub config_path: PathBuf,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Its stdout and stderr, appended to across restarts.
    pub log_path: PathBuf,
    /// The process while it runs.
    child: Option<Child>,
}

impl ProcNode {
    /// Whether `addr` is one of this node's RTP ports.
    pub fn owns_rtp(&self, addr: SocketAddr) -> bool {
        addr.ip().is_loopback() && (self.rtp.0..=self.rtp.1).contains(&addr.port())
    }
}

/// Shared state of the Raft proxies: which nodes are cut off, and a generation bumped on every
/// change so live connections re-check.
struct ProxyNet {
    /// Raft ids whose traffic is dropped both ways.
    cut: Mutex<HashSet<u64>>,
    /// Set when the cluster is dropped: every connection closes.
    closed: AtomicBool,
    /// Bumped on every cut, heal and close.
    epoch: watch::Sender<u64>,
}

impl ProxyNet {
    fn is_cut(&self, id: u64) -> bool {
        self.closed.load(Ordering::Acquire) || self.cut.lock().unwrap().contains(&id)
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// Accepts Raft connections for node `target_id` and forwards them to its real listener,
/// unless either end is cut off.
async fn proxy_accept(
    listener: TcpListener,
    target_id: u64,
    target: SocketAddr,
    net: Arc<ProxyNet>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(proxy_conn(inbound, target_id, target, net.clone()));
    }
}

/// One proxied Raft connection (one-way by protocol, copied both ways anyway).
async fn proxy_conn(
    mut inbound: TcpStream,
    target_id: u64,
    target: SocketAddr,
    net: Arc<ProxyNet>,
) {
    if net.is_cut(target_id) {
        return; // refused: dropped at once
    }
    let mut hello = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(5), inbound.read_exact(&mut hello)).await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    let sender = (&hello[..4] == RAFT_MAGIC)
        .then(|| u64::from_be_bytes(hello[4..12].try_into().expect("8 bytes")));
    let blocked = |net: &ProxyNet| net.is_cut(target_id) || sender.is_some_and(|s| net.is_cut(s));
    if blocked(&net) {
        return;
    }
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let _ = inbound.set_nodelay(true);
    if outbound.write_all(&hello).await.is_err() {
        return;
    }
    let mut epoch = net.epoch.subscribe();
    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = epoch.changed() => {
                if changed.is_err() || blocked(&net) {
                    return; // both sockets close as this task ends
                }
            }
        }
    }
}

/// Real `lingxi` processes on loopback, their configs and logs in a temporary directory.
pub struct Cluster {
    /// Configs, data directories and logs (removed on drop).
    dir: tempfile::TempDir,
    /// The `lingxi` binary.
    bin: PathBuf,
    /// Whether `[cluster] enabled` (false: one node alone on its local log).
    clustered: bool,
    /// The nodes, index 0 is `n1`.
    pub nodes: Vec<ProcNode>,
    /// The Raft proxies' shared state.
    net: Arc<ProxyNet>,
    /// Proxy accept loops, aborted on drop.
    proxies: Vec<JoinHandle<()>>,
    /// Set by [`Cluster::finish`] once logs were printed for a failure (not again on drop).
    logs_printed: AtomicBool,
    /// `cluster.failure_detection_ms` when not the harness's default (14 ticks).
    detect_ms: Option<u64>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_printed.load(Ordering::Relaxed) {
            self.print_logs();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.net.closed.store(true, Ordering::Release);
        self.net.bump();
        for p in &self.proxies {
            p.abort();
        }
        if std::env::var_os("LINGXI_KEEP_TEST_DIR").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping the cluster's directory {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("tempdir"),
            ));
        }
    }
}

impl Cluster {
    /// Starts `n` clustered nodes (all bootstrap voters) and waits until every node is
    /// healthy and the cluster view shows a leader and every member alive.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, true).await
    }

    /// One node with `[cluster]` off (its local log), for restart-from-disk tests.
    pub async fn single() -> anyhow::Result<Cluster> {
        Cluster::start_with(1, false).await
    }

    /// Starts `n` clustered nodes whose leader declares a silent node dead only after
    /// `detect`: a node cut off for less than that loses its lease (it fences itself) but
    /// keeps its calls.
    pub async fn start_with_detection(n: usize, detect: Duration) -> anyhow::Result<Cluster> {
        Cluster::start_inner(n, true, Some(detect.as_millis() as u64)).await
    }

    /// Starts `n` nodes, clustered or (`n` = 1) alone.
    pub async fn start_with(n: usize, clustered: bool) -> anyhow::Result<Cluster> {
        Cluster::start_inner(n, clustered, None).await
    }

    async fn start_inner(
        n: usize,
        clustered: bool,
        detect_ms: Option<u64>,
    ) -> anyhow::Result<Cluster> {
        if !clustered && n != 1 {
            bail!("only one node can run without [cluster]");
        }
        let bin = lingxi_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("lingxi-cluster-")
            .tempdir()
            .context("creating the cluster's directory")?;
        let (epoch, _) = watch::channel(0u64);
        let mut cl = Cluster {
            dir,
            bin,
            clustered,
            nodes: Vec::new(),
            net: Arc::new(ProxyNet {
                cut: Mutex::new(HashSet::new()),
                closed: AtomicBool::new(false),
                epoch,
            }),
            proxies: Vec::new(),
            logs_printed: AtomicBool::new(false),
            detect_ms,
        };
        for _ in 0..n {
            cl.allocate_node().await?;
        }
        for i in 0..n {
            cl.write_config(i, true)?;
        }
        for i in 0..n {
            cl.spawn(i)?;
        }
        let all: Vec<usize> = (0..n).collect();
        if let Err(e) = cl.wait_ready(&all, START_WAIT).await {
            cl.print_logs();
            return Err(e.context("the cluster did not come up"));
        }
        Ok(cl)
    }

    /// Picks ports for one more node and starts its Raft proxy.
    async fn allocate_node(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let name = format!("n{}", i + 1);
        let sip_port = free_port().await?;
        let http_port = free_port().await?;
        let raft_port = free_port().await?;
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a Raft proxy")?;
        let raft_listen = SocketAddr::from(([127, 0, 0, 1], raft_port));
        let raft_public = proxy.local_addr()?;
        let raft_id = i as u64 + 1;
        self.proxies.push(tokio::spawn(proxy_accept(
            proxy,
            raft_id,
            raft_listen,
            self.net.clone(),
        )));
        let data_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&data_dir)?;
        self.nodes.push(ProcNode {
            raft_id,
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            raft_listen,
            raft_public,
            rtp: rtp_range(),
            config_path: self.dir.path().join(format!("{name}.toml")),
            log_path: self.dir.path().join(format!("{name}.log")),
            data_dir,
            name,
            child: None,
        });
        Ok(i)
    }

    /// Writes node `i`'s config; `bootstrap`: whether it forms the cluster with the nodes
    /// allocated so far (else it waits to be added).
    fn write_config(&self, i: usize, bootstrap: bool) -> anyhow::Result<()> {
        // Timing: the product's defaults are a 50 ms tick (500 ms lease, 700 ms detection);
        // the suite runs beside other tests on two loaded cores, so it uses a 100 ms tick
        // (1 s lease, 1.4 s detection) unless LINGXI_TEST_TICK_MS says otherwise (the
        // failover benchmark sets 50 to measure the defaults).
        let n = &self.nodes[i];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|p| p.raft_id != n.raft_id)
            .map(|p| format!("{{ id = {}, addr = \"{}\" }}", p.raft_id, p.raft_public))
            .collect();
        let toml = format!(
            r#"# Written by lingxi-tests' Cluster harness.
[node]
id = "{name}"
data_dir = "{data}"

[sip]
listen_ip = "127.0.0.1"
udp_port = {sip}
tcp_port = {sip}

[http]
listen = "{http}"

[media]
rtp_ip = "127.0.0.1"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}

[recording]
enabled = false

[acd]
ring_timeout_secs = 15
wrapup_secs = 1

[debug]
fault_injection = true

# The harness's HTTP helpers send this key (crate::node::TEST_API_KEY) as a bearer token.
[[auth.api_keys]]
name = "tests"
role = "admin"
sha256 = "{api_key_sha256}"

[cluster]
enabled = {clustered}
raft_id = {raft_id}
listen = "{raft}"
peers = [{peers}]
bootstrap = {bootstrap}
tick_ms = {tick_ms}
election_ticks = 10
heartbeat_ticks = 2
failure_detection_ms = {detect_ms}

[[queues]]
id = "support"
extensions = ["8000"]
skill = "support"

[queues.overflow]
action = "hangup"
when_no_agents = false

# Nobody has its skill: a call to 8001 is committed (CallArrived), refused 480 and its CDR
# committed (queue.no_agents) -- the call-setup path through consensus, for rate benchmarks.
[[queues]]
id = "empty"
extensions = ["8001"]
skill = "nobody"

[queues.overflow]
action = "hangup"
when_no_agents = true

[[agents]]
id = "1001"
password = "pass1001"
skills = {{ support = 5 }}

[[agents]]
id = "1002"
password = "pass1002"
skills = {{ support = 5 }}

[[agents]]
id = "1003"
password = "pass1003"
skills = {{ support = 5 }}
"#,
            name = n.name,
            data = n.data_dir.display(),
            sip = n.sip.port(),
            http = n.http,
            rtp_min = n.rtp.0,
            rtp_max = n.rtp.1,
            clustered = self.clustered,
            tick_ms = tick_ms(),
            detect_ms = self.detect_ms.unwrap_or(tick_ms() * 14),
            raft_id = n.raft_id,
            raft = n.raft_listen,
            peers = peers.join(", "),
            api_key_sha256 = crate::node::TEST_API_KEY_SHA256,
        );
        std::fs::write(&n.config_path, toml)
            .with_context(|| format!("writing {}", n.config_path.display()))
    }

    /// Starts node `i`'s process (appending to its log).
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        if n.child.is_some() {
            bail!("{} is already running", n.name);
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .with_context(|| format!("opening {}", n.log_path.display()))?;
        use std::io::Write as _;
        let _ = writeln!(log, "===== lingxi-tests: starting {} =====", n.name);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&n.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // The node reads LINGXI__* overrides: none from the test's environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LINGXI") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1").env(
            "RUST_LOG",
            std::env::var("LINGXI_NODE_LOG").unwrap_or_else(|_| "info".into()),
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} for {}", self.bin.display(), n.name))?;
        n.child = Some(child);
        Ok(())
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s name (`n1`...).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s SIP UDP address.
    pub fn sip(&self, i: usize) -> SocketAddr {
        self.nodes[i].sip
    }

    /// Node `i`'s HTTP address.
    pub fn http(&self, i: usize) -> SocketAddr {
        self.nodes[i].http
    }

    /// The address the other nodes use for node `i`'s Raft transport (its proxy).
    pub fn raft_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].raft_public
    }

    /// The node whose RTP range holds `addr`.
    pub fn rtp_owner(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.owns_rtp(addr))
    }

    /// Whether node `i`'s process runs (reaps it if it exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.nodes[i].child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Indexes of the nodes whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.len()).filter(|i| self.is_running(*i)).collect()
    }

    /// SIGKILL node `i` (no goodbye: its calls are left to the others). Returns when the
    /// process is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM node `i` (graceful shutdown), waits up to 15 s for it to exit, then kills it.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut c) = self.nodes[i].child.take() else {
            return Ok(());
        };
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not exit within 15 s of SIGTERM", self.nodes[i].name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts node `i`'s process again from its data directory, without waiting for it (as a
    /// service manager restarting a node that exited would).
    pub fn respawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// Starts node `i` again from its data directory and waits until it is healthy and sees
    /// itself alive in the cluster.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_ready(&[i], START_WAIT).await
    }

    /// Waits up to `timeout` for node `i`'s process to exit by itself; returns its exit status.
    pub async fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let name = self.nodes[i].name.clone();
        let Some(child) = self.nodes[i].child.as_mut() else {
            bail!("{name} is not running");
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.nodes[i].child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{name} still runs after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `i` again (same name, ports and data directory) under the new Raft id
    /// `raft_id` with `bootstrap = false`: it waits to be added, as a rebuilt node does. Does
    /// not wait for it. (Its proxy still knows it by its first id: do not [`Cluster::cut`] it.)
    pub fn respawn_as(&mut self, i: usize, raft_id: u64) -> anyhow::Result<()> {
        self.nodes[i].raft_id = raft_id;
        self.write_config(i, false)?;
        self.spawn(i)
    }

    /// Cuts node `i` off: all Raft traffic to and from it is dropped (connections closed,
    /// new ones refused) until [`Cluster::heal`].
    pub fn cut(&self, i: usize) {
        self.net.cut.lock().unwrap().insert(self.nodes[i].raft_id);
        self.net.bump();
    }

    /// Lets node `i`'s Raft traffic through again.
    pub fn heal(&self, i: usize) {
        self.net.cut.lock().unwrap().remove(&self.nodes[i].raft_id);
        self.net.bump();
    }

    /// Adds node `n<k>` started with `bootstrap = false` (it waits to be added to the Raft
    /// configuration); returns its index. Does not wait for it to serve.
    pub async fn spawn_joiner(&mut self) -> anyhow::Result<usize> {
        if !self.clustered {
            bail!("a single node cannot take joiners");
        }
        let i = self.allocate_node().await?;
        self.write_config(i, false)?;
        self.spawn(i)?;
        Ok(i)
    }

    // ----- HTTP -----

    /// One HTTP request to node `i`; body parsed as JSON (`Null` when it is not JSON).
    pub async fn http_req(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let text = body.map(|b| b.to_string());
        let body = text.as_deref().map(|t| ("application/json", t.as_bytes()));
        let (s, b) = http_request(self.nodes[i].http, method, path, body)
            .await
            .with_context(|| format!("{method} {path} on {}", self.nodes[i].name))?;
        Ok((s, serde_json::from_str(&b).unwrap_or(Value::String(b))))
    }

    /// GET `path` on node `i`.
    pub async fn http_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        self.http_req(i, "GET", path, None).await
    }

    /// `GET /api/v1/cluster` on node `i` (200 required).
    pub async fn cluster_view(&self, i: usize) -> anyhow::Result<Value> {
        let (s, v) = self.http_get(i, "/api/v1/cluster").await?;
        if s != 200 {
            bail!("GET /api/v1/cluster on {}: {s} {v}", self.nodes[i].name);
        }
        Ok(v)
    }

    /// Waits until each node in `idx` answers /healthz 200 and (clustered) its cluster view
    /// shows a leader and every node in `idx` as an alive member.
    pub async fn wait_ready(&mut self, idx: &[usize], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for &i in idx {
            let name = self.nodes[i].name.clone();
            loop {
                if !self.is_running(i) {
                    bail!("{name} exited while starting");
                }
                if let Ok((200, _)) = self.http_get(i, "/healthz").await {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{name}: /healthz not 200 within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !self.clustered {
            return Ok(());
        }
        let names: Vec<String> = idx.iter().map(|i| self.nodes[*i].name.clone()).collect();
        let mut last = Value::Null;
        loop {
            let mut ok = true;
            for &i in idx {
                match self.cluster_view(i).await {
                    Ok(v) => {
                        let good = view_leader(&v).is_some()
                            && names.iter().all(|n| member_alive(&v, n) == Some(true));
                        if !good {
                            ok = false;
                            last = v;
                        }
                    }
                    Err(e) => {
                        ok = false;
                        last = Value::String(e.to_string());
                    }
                }
            }
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "within {timeout:?} the cluster view did not show a leader and {names:?} alive; last view: {last:#}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `i`'s view shows member `name` with `alive`.
    pub async fn wait_member(
        &self,
        i: usize,
        name: &str,
        alive: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let r = wait_for(
            &format!("{} to see {name} alive={alive}", self.nodes[i].name),
            timeout,
            || async {
                let v = self.cluster_view(i).await.ok()?;
                (member_alive(&v, name) == Some(alive)).then_some(())
            },
        )
        .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(anyhow!(
                "{e}; last view: {:#}",
                self.cluster_view(i).await.unwrap_or(Value::Null)
            )),
        }
    }

    /// Waits until node `i`'s cluster view says `healthy` (false: fenced, removed or
    /// stopping).
    pub async fn wait_healthy(
        &self,
        i: usize,
        healthy: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let r = wait_for(
            &format!("{} to report healthy={healthy}", self.nodes[i].name),
            timeout,
            || async {
                let v = self.cluster_view(i).await.ok()?;
                (v["healthy"].as_bool() == Some(healthy)).then_some(())
            },
        )
        .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(anyhow!(
                "{e}; last view: {:#}",
                self.cluster_view(i).await.unwrap_or(Value::Null)
            )),
        }
    }

    /// Lines of node `i`'s `/metrics` whose name starts with `prefix`.
    pub async fn metrics(&self, i: usize, prefix: &str) -> anyhow::Result<Vec<String>> {
        let (s, b) = http_request(self.nodes[i].http, "GET", "/metrics", None).await?;
        if s != 200 {
            bail!("GET /metrics on {}: {s}", self.nodes[i].name);
        }
        Ok(b.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect())
    }

    /// All CDRs node `i` serves.
    pub async fn cdrs(&self, i: usize) -> anyhow::Result<Vec<Value>> {
        let (s, v) = self.http_get(i, "/api/v1/cdrs").await?;
        if s != 200 {
            bail!("GET /api/v1/cdrs on {}: {s} {v}", self.nodes[i].name);
        }
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("CDRs are not an array: {v}"))
    }

    /// The CDRs of `call_id` node `i` serves, once there is at least one (then waits a
    /// moment more so a duplicate would show).
    pub async fn wait_cdrs(
        &self,
        i: usize,
        call_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let matching = |all: Vec<Value>| -> Vec<Value> {
            all.into_iter()
                .filter(|c| c["call_id"] == call_id)
                .collect()
        };
        let r = wait_for(
            &format!("the CDR of {call_id} on {}", self.nodes[i].name),
            timeout,
            || async {
                let m = matching(self.cdrs(i).await.ok()?);
                (!m.is_empty()).then_some(())
            },
        )
        .await;
        if let Err(e) = r {
            bail!("{e}; CDRs there: {:?}", self.cdrs(i).await.ok());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(matching(self.cdrs(i).await?))
    }

    /// Live calls node `i` shows (`GET /api/v1/calls`).
    pub async fn calls(&self, i: usize) -> anyhow::Result<Vec<Value>> {
        let (s, v) = self.http_get(i, "/api/v1/calls").await?;
        if s != 200 {
            bail!("GET /api/v1/calls on {}: {s} {v}", self.nodes[i].name);
        }
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("calls are not an array: {v}"))
    }

    /// Agent `id`'s state as node `i` shows it.
    pub async fn agent_state(&self, i: usize, id: &str) -> anyhow::Result<String> {
        let (s, v) = self.http_get(i, &format!("/api/v1/agents/{id}")).await?;
        if s != 200 {
            bail!("GET /api/v1/agents/{id} on {}: {s} {v}", self.nodes[i].name);
        }
        Ok(v["state"].as_str().unwrap_or_default().to_string())
    }

    /// Waits until node `i` shows agent `id` in `state`.
    pub async fn wait_agent_state(
        &self,
        i: usize,
        id: &str,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let r = wait_for(
            &format!("agent {id} to be {state} on {}", self.nodes[i].name),
            timeout,
            || async { (self.agent_state(i, id).await.ok()? == state).then_some(()) },
        )
        .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(anyhow!(
                "{e}; last seen: {:?}",
                self.agent_state(i, id).await.ok()
            )),
        }
    }

    /// A UA for agent `id` registered through node `i`, the agent `ready` there.
    pub async fn agent_ua(&self, i: usize, id: &str) -> anyhow::Result<TestUa> {
        let mut ua = TestUa::new(id, &format!("pass{id}"), self.sip(i)).await?;
        let resp = ua.register().await?;
        if resp.status != Some(200) {
            bail!(
                "REGISTER {id} via {} answered {}",
                self.nodes[i].name,
                resp.raw
            );
        }
        self.wait_agent_state(i, id, "ready", WAIT).await?;
        Ok(ua)
    }

    /// The owner of live call `call_id` as node `i` shows it (`owner` or `node` field).
    pub async fn call_owner(&self, i: usize, call_id: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .calls(i)
            .await?
            .into_iter()
            .find(|c| c["call_id"] == call_id)
            .and_then(|c| {
                c.get("owner")
                    .or_else(|| c.get("node"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }))
    }

    /// Runs `lingxi <args>` (e.g. `cluster status --api ...`) to completion within 30 s;
    /// returns (success, stdout + stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        // The CLI authenticates with the harness's API key (as an operator would with
        // LINGXI_TOKEN).
        cmd.args(args)
            .env("LINGXI_TOKEN", crate::node::TEST_API_KEY)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| anyhow!("lingxi {args:?} did not finish within 30 s"))??;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    // ----- logs -----

    /// Node `i`'s whole log.
    pub fn logs(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    /// Lines of node `i`'s log containing `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        self.logs(i)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Prints the tail of every node's log to stderr.
    pub fn print_logs(&self) {
        self.logs_printed.store(true, Ordering::Relaxed);
        for (i, n) in self.nodes.iter().enumerate() {
            let text = self.logs(i);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "----- {} ({}; last {} of {} lines) -----",
                n.name,
                n.log_path.display(),
                tail.len(),
                lines.len()
            );
            for l in tail {
                eprintln!("{l}");
            }
        }
        eprintln!("----- end of node logs -----");
    }

    /// Passes a test's result through, printing every node's log when it is an error.
    pub fn finish<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        if r.is_err() {
            self.print_logs();
        }
        r
    }
}

/// The leader a cluster view names: `leader_node`, else `raft.leader`, else `leader`.
pub fn view_leader(v: &Value) -> Option<String> {
    [&v["leader_node"], &v["raft"]["leader"], &v["leader"]]
        .into_iter()
        .find_map(|l| match l {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.as_u64() != Some(0) => Some(n.to_string()),
            _ => None,
        })
}

/// Whether member `name` is alive in a cluster view (`None`: not listed).
pub fn member_alive(v: &Value, name: &str) -> Option<bool> {
    view_members(v)
        .into_iter()
        .find(|m| m["node"] == name)
        .map(|m| m["alive"].as_bool().unwrap_or(false))
}

/// The members a cluster view lists.
pub fn view_members(v: &Value) -> Vec<Value> {
    v["members"].as_array().cloned().unwrap_or_default()
}

/// Voter raft ids in node `i`'s view.
pub async fn voters(cl: &Cluster, i: usize) -> anyhow::Result<Vec<u64>> {
    let v = cl.cluster_view(i).await?;
    Ok(v["raft"]["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default())
}

// ----- SIP and RTP helpers for failover -----

/// Waits for the switch's re-INVITE in dialog `d` (same Call-ID, both tags), answers it 200
/// with an SDP answer for `rtp` (the first of PCMU/PCMA offered, plus telephone-event if
/// offered), waits for its ACK, and refreshes `d`: remote target (the new Contact), where
/// in-dialog requests go, and the remote SDP. Returns the re-INVITE.
pub async fn answer_reinvite(
    ua: &mut TestUa,
    d: &mut Dialog,
    rtp: &Rtp,
    timeout: Duration,
) -> anyhow::Result<SipMsg> {
    let inv = wait_reinvite(ua, d, timeout).await?;
    accept_reinvite(ua, d, rtp, inv, timeout).await
}

/// Waits for a re-INVITE in dialog `d` without answering it.
pub async fn wait_reinvite(
    ua: &mut TestUa,
    d: &Dialog,
    timeout: Duration,
) -> anyhow::Result<SipMsg> {
    let cid = d.call_id.clone();
    ua.wait_for(&format!("a re-INVITE in {cid}"), timeout, |m| {
        m.is_request("INVITE") && m.call_id() == cid && m.to_tag().is_some()
    })
    .await
}

/// Answers re-INVITE `inv` (got by [`wait_reinvite`]) with 200 and our SDP on `rtp`,
/// waits for its ACK, and moves `d` to the new target and SDP.
pub async fn accept_reinvite(
    ua: &mut TestUa,
    d: &mut Dialog,
    rtp: &Rtp,
    inv: SipMsg,
    timeout: Duration,
) -> anyhow::Result<SipMsg> {
    let cid = d.call_id.clone();
    let offer = inv
        .sdp()
        .ok_or_else(|| anyhow!("re-INVITE without a readable SDP offer: {}", inv.raw))?;
    let codec = offer
        .payload_types
        .iter()
        .copied()
        .find(|pt| matches!(offer.encoding(*pt).as_deref(), Some("PCMU" | "PCMA")))
        .ok_or_else(|| anyhow!("re-INVITE offer without PCMU or PCMA: {}", inv.body_str()))?;
    let mut pts = vec![codec];
    if let Some(te) = offer.pt_of("telephone-event") {
        pts.push(te);
    }
    let sdp = msg::build_sdp(rtp.local_addr(), &pts);
    let contact = format!("Contact: <sip:{}@{}>", ua.user(), ua.local_addr());
    ua.respond(&inv, 200, "OK", &[contact], Some(("application/sdp", &sdp)))
        .await?;
    let cseq = inv.cseq().0;
    ua.wait_for(
        &format!("the ACK of the re-INVITE in {cid}"),
        timeout,
        |m| m.is_request("ACK") && m.call_id() == cid && m.cseq().0 == cseq,
    )
    .await?;
    if let Some(target) = inv.contact_uri() {
        d.target_addr = uri_addr(&target).unwrap_or(inv.source);
        d.remote_target = target;
    } else {
        d.target_addr = inv.source;
    }
    d.remote_sdp = Some(offer);
    Ok(inv)
}

/// Sends marked PCMU from an [`Rtp`] endpoint every 20 ms to a destination that can change
/// (the switch moves it with a re-INVITE), until dropped.
pub struct Talker {
    /// Where packets go now.
    dest: Arc<Mutex<SocketAddr>>,
    /// The sending task.
    task: JoinHandle<()>,
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Talker {
    /// Starts sending from `rtp` to `dest`.
    pub fn start(rtp: Arc<Rtp>, dest: SocketAddr) -> Talker {
        let dest = Arc::new(Mutex::new(dest));
        let d = dest.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let to = *d.lock().unwrap();
                let _ = rtp.send_pcmu(to, 1).await;
            }
        });
        Talker { dest, task }
    }

    /// Sends to `dest` from now on.
    pub fn retarget(&self, dest: SocketAddr) {
        *self.dest.lock().unwrap() = dest;
    }
}

/// Polls `rtp` every 2 ms until a packet marked by `tag` arrives from a source not in
/// `old`; returns when it was seen (as close as polling allows) and the new source.
pub async fn first_from_new_source(
    rtp: &Rtp,
    tag: u32,
    old: &HashSet<SocketAddr>,
    timeout: Duration,
) -> anyhow::Result<(Instant, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = rtp.stats();
        if s.from_tag(tag) > 0
            && let Some(src) = s.sources.iter().find(|a| !old.contains(a))
        {
            return Ok((Instant::now(), *src));
        }
        if Instant::now() >= deadline {
            bail!(
                "no RTP from a new source at {} within {timeout:?}: {s:?}",
                rtp.local_addr()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Puts agent `id` in `state` through node `i`'s API.
pub async fn set_agent_state(cl: &Cluster, i: usize, id: &str, state: &str) -> anyhow::Result<()> {
    let (s, v) = cl
        .http_req(
            i,
            "PUT",
            &format!("/api/v1/agents/{id}/state"),
            Some(&json!({ "state": state })),
        )
        .await?;
    if !(200..300).contains(&s) {
        bail!(
            "PUT /api/v1/agents/{id}/state {state} on {}: {s} {v}",
            cl.name(i)
        );
    }
    Ok(())
}

/// Raft tick for the harness's clusters (see [`Cluster`]'s config writer).
fn tick_ms() -> u64 {
    std::env::var("LINGXI_TEST_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// A call in conversation through a cluster: the caller and the agent, their dialogs and RTP.
pub struct ClusterCall {
    /// The caller's UA.
    pub caller: TestUa,
    /// The caller's dialog with the switch.
    pub leg_a: Dialog,
    /// The agent's UA.
    pub agent: TestUa,
    /// The agent's dialog with the switch.
    pub leg_b: Dialog,
    /// The caller's RTP socket.
    pub rtp_c: Arc<Rtp>,
    /// The agent's RTP socket.
    pub rtp_a: Arc<Rtp>,
}

impl ClusterCall {
    /// The caller calls 8000 through `caller_node`; agent `agent_id` (registered through
    /// `agent_node`) answers.
    pub async fn establish(
        cl: &Cluster,
        agent_node: usize,
        caller_node: usize,
        agent_id: &str,
        caller_name: &str,
    ) -> anyhow::Result<ClusterCall> {
        let mut agent = cl.agent_ua(agent_node, agent_id).await?;
        cl.wait_agent_state(caller_node, agent_id, "ready", WAIT)
            .await?;
        let (rtp_c, rtp_a) = (Arc::new(Rtp::bind().await?), Arc::new(Rtp::bind().await?));
        let mut caller = TestUa::new(caller_name, "", cl.sip(caller_node)).await?;
        let leg_a = caller
            .call("8000", &rtp_c)
            .await
            .with_context(|| format!("calling through {}", cl.name(caller_node)))?;
        let leg_b = agent.accept(&rtp_a, WAIT).await?;
        Ok(ClusterCall {
            caller,
            leg_a,
            agent,
            leg_b,
            rtp_c,
            rtp_a,
        })
    }

    /// Audio flows both ways: at least 20 of 50 packets each way.
    pub async fn assert_media(&self, what: &str) -> anyhow::Result<()> {
        self.rtp_c.reset();
        self.rtp_a.reset();
        let (up, down) = crate::exchange(
            &self.rtp_c,
            self.leg_a.remote_rtp()?,
            &self.rtp_a,
            self.leg_b.remote_rtp()?,
            50,
            45,
            WAIT,
        )
        .await?;
        anyhow::ensure!(
            up >= 20 && down >= 20,
            "{what}: {up} of 50 to the agent, {down} of 50 to the caller"
        );
        Ok(())
    }

    /// Answers the re-INVITEs a node that resumes the call sends to both legs (within
    /// `within` each); returns them, caller's first.
    pub async fn answer_reinvites(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<(crate::SipMsg, crate::SipMsg)> {
        let (ra, rb) = tokio::join!(
            answer_reinvite(&mut self.caller, &mut self.leg_a, &self.rtp_c, within),
            answer_reinvite(&mut self.agent, &mut self.leg_b, &self.rtp_a, within),
        );
        Ok((ra.context("caller leg")?, rb.context("agent leg")?))
    }

    /// The caller hangs up; the agent gets BYE, then logs out (unregisters) so the next
    /// call goes to the agent the test names, not to the longest-idle one.
    pub async fn hang_up(&mut self) -> anyhow::Result<()> {
        let r = self.caller.bye(&mut self.leg_a).await?;
        anyhow::ensure!(r.status == Some(200), "BYE answered {}", r.raw);
        self.agent.wait_bye(&self.leg_b, WAIT).await?;
        let r = self.agent.unregister().await?;
        anyhow::ensure!(r.status == Some(200), "unREGISTER answered {}", r.raw);
        Ok(())
    }
}
