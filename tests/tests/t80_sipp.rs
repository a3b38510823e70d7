//! Interop with real sipp processes (Debian `sip-tester`): registration with digest
//! authentication, a bridged call with RTP both ways, and a caller on TCP.
//!
//! Each test starts its own node in-process on 127.0.0.1 (SIP and HTTP on ephemeral ports, a
//! private RTP range) and drives it with sipp run from a temporary working directory that holds
//! copies of the scenarios in `tests/sipp/` and the `pcap` link to sipp's audio files.
//! sipp missing is a failure, not a skip: `./test.sh` installs it.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lingxi_config::Config;
use lingxi_node::Node;
use serde_json::Value;
use tokio::process::{Child, Command};

/// The scenarios the tests use, copied next to the `pcap` link so sipp finds the audio
/// where it looks first.
const SCENARIOS: [&str; 4] = [
    "agent_register.xml",
    "agent_register_403.xml",
    "agent_uas.xml",
    "caller_pcap.xml",
];

/// Where sipp keeps its audio files (`g711a.pcap`, DTMF).
const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

/// Hard limit on one sipp run, beyond its own `-timeout 30s`.
const SIPP_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Harness: node, ports, HTTP, sipp.
// ---------------------------------------------------------------------------------------------

/// Logs from the node go through the test writer, shown only for failing tests.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The sipp binary, or a failure telling how to install it.
fn sipp_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("sipp"))
        .find(|p| p.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "sipp is not installed: the interop suite needs it. Run ./test.sh (installs it) \
             or `apt-get install -y sip-tester`"
        ),
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago (also free for TCP, so sipp can use
/// either transport on it). Never 5060.
fn free_port() -> u16 {
    for _ in 0..200 {
        let port = UdpSocket::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .unwrap()
            .port();
        if port != 5060 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// An even port `p` with `p..=p+3` free on UDP: sipp binds the audio port, `+2` for video,
/// and the odd ones may be used for RTCP.
fn free_media_port() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port % 2 != 0 || port > 65_000 || port == 6000 {
            continue;
        }
        let held: Vec<_> = (port..=port + 3)
            .map(|p| UdpSocket::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no four free consecutive UDP ports on 127.0.0.1");
}

/// A node running in this process with its state in a temporary directory.
struct TestNode {
    /// `None` once shut down.
    node: Option<Node>,
    /// `node.data_dir`, removed when the test ends.
    data: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node with queue `support` (extension 8000) and agents 1001–1003
    /// (`pass1001`…), no wrap-up so agents are ready again at once.
    async fn start() -> TestNode {
        init_logging();
        let data = tempfile::Builder::new()
            .prefix("t80-node-")
            .tempdir()
            .expect("temp dir");
        // A private RTP window below the ephemeral range, where sipp's ports come from.
        let rtp_min = 21_000 + 200 * (rand::random::<u16>() % 55);
        let toml = format!(
            r#"
[node]
id = "t80-{suffix}"
data_dir = "{data}"

[sip]
listen_ip = "127.0.0.1"
udp_port = 0
tcp_port = 0

[http]
listen = "127.0.0.1:0"

[media]
rtp_ip = "127.0.0.1"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}

[recording]
enabled = true

[acd]
ring_timeout_secs = 10
wrapup_secs = 0
max_wait_secs = 60

[[queues]]
id = "support"
extensions = ["8000"]
skill = "support"

[queues.overflow]
action = "hangup"
when_no_agents = true

[[auth.api_keys]]
name = "tests"
role = "admin"
sha256 = "{key_sha}"

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
            // Actor names are process-wide and tests run in parallel: one node id each.
            suffix = rand::random::<u32>(),
            data = data.path().display(),
            rtp_max = rtp_min + 199,
            key_sha = lingxi_tests::node::TEST_API_KEY_SHA256,
        );
        let config = Config::from_toml_str(&toml, "t80_sipp", None).expect("test config parses");
        config.validate().expect("test config is valid");
        let node = Node::start(config).await.expect("node starts");
        TestNode {
            node: Some(node),
            data,
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    /// `127.0.0.1:<port>` of the SIP UDP socket, as sipp takes it.
    fn sip_udp(&self) -> String {
        self.node().sip_udp_addr().expect("UDP enabled").to_string()
    }

    /// `127.0.0.1:<port>` of the SIP TCP listener.
    fn sip_tcp(&self) -> String {
        self.node().sip_tcp_addr().expect("TCP enabled").to_string()
    }

    /// GETs `path` from the HTTP API and parses the JSON body (status must be 200).
    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.node().http_addr(), path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// The agent's `state` from the API.
    async fn agent_state(&self, id: &str) -> String {
        let agent = self.get_json(&format!("/api/v1/agents/{id}")).await;
        agent["state"].as_str().unwrap_or_default().to_string()
    }

    /// A Prometheus counter's value from `/metrics` (0 when not yet reported). Nodes in one
    /// process share the recorder, so only increases are meaningful.
    async fn counter(&self, name: &str) -> f64 {
        let (status, text) = http_get(self.node().http_addr(), "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {text}");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(key, _)| *key == name || key.starts_with(&format!("{name}{{")))
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// Waits up to 10 s for the CDR of `call_id`.
    async fn cdr(&self, call_id: &str) -> Value {
        for _ in 0..100 {
            let cdrs = self.get_json("/api/v1/cdrs").await;
            let found = cdrs
                .as_array()
                .and_then(|a| a.iter().find(|c| c["call_id"] == call_id))
                .cloned();
            if let Some(cdr) = found {
                return cdr;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cdrs = self.get_json("/api/v1/cdrs").await;
        panic!("no CDR for call {call_id} after 10 s; CDRs: {cdrs}");
    }

    async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown(Duration::from_secs(1)).await;
        }
        let _ = &self.data;
    }
}

/// GET with the tests' admin API key: status and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    lingxi_tests::node::http_request(addr, "GET", path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// A working directory for sipp: scenario copies and the `pcap` link.
struct SippDir {
    dir: tempfile::TempDir,
}

impl SippDir {
    fn new() -> SippDir {
        let dir = tempfile::Builder::new()
            .prefix("t80-sipp-")
            .tempdir()
            .expect("temp dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp");
        for name in SCENARIOS {
            std::fs::copy(source.join(name), dir.path().join(name))
                .unwrap_or_else(|e| panic!("copy scenario {name}: {e}"));
        }
        std::os::unix::fs::symlink(SIPP_PCAP_DIR, dir.path().join("pcap")).expect("link pcap");
        SippDir { dir }
    }

    /// Starts sipp here with `args` plus the common options: one call, 30 s timeout that
    /// counts as an error, no keyboard, errors traced to a file.
    fn spawn(&self, args: &[&str]) -> Sipp {
        let mut cmd = Command::new(sipp_bin());
        cmd.current_dir(self.dir.path())
            .args(args)
            .args([
                "-m",
                "1",
                "-timeout",
                "30s",
                "-timeout_error",
                "-nostdin",
                "-trace_err",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp {args:?}: {e}"));
        let pid = child.id().expect("sipp pid");
        Sipp {
            child,
            pid,
            args: args.iter().map(|s| s.to_string()).collect(),
            dir: self.dir.path().to_path_buf(),
        }
    }

    /// Runs sipp to the end and requires exit status 0.
    async fn run_ok(&self, args: &[&str]) -> u32 {
        let sipp = self.spawn(args);
        let pid = sipp.pid;
        sipp.finish().await.expect_ok();
        pid
    }
}

/// A running sipp.
struct Sipp {
    child: Child,
    pid: u32,
    args: Vec<String>,
    dir: PathBuf,
}

impl Sipp {
    /// The Call-ID of sipp's first call as a UAC (`[call_id]` is `<n>-<pid>@<ip>`).
    fn first_call_id(&self) -> String {
        format!("1-{}@127.0.0.1", self.pid)
    }

    /// Waits for sipp to exit (killing it after [`SIPP_DEADLINE`]).
    async fn finish(self) -> SippOutcome {
        let Sipp {
            child,
            pid,
            args,
            dir,
        } = self;
        let output = tokio::time::timeout(SIPP_DEADLINE, child.wait_with_output()).await;
        let (code, stdout, stderr) = match output {
            Ok(Ok(out)) => (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Ok(Err(e)) => panic!("waiting for sipp {args:?}: {e}"),
            Err(_) => (
                None,
                String::new(),
                format!("killed after {SIPP_DEADLINE:?}"),
            ),
        };
        // -trace_err writes <scenario>_<pid>_errors.log.
        let errors = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&format!("_{pid}_errors.log")))
            })
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect::<Vec<_>>()
            .join("\n");
        SippOutcome {
            code,
            args,
            stdout,
            stderr,
            errors,
        }
    }
}

/// How a sipp run ended.
struct SippOutcome {
    /// Exit status: 0 all calls succeeded, 1 some failed, other values fatal errors.
    code: Option<i32>,
    args: Vec<String>,
    stdout: String,
    stderr: String,
    /// The `-trace_err` log.
    errors: String,
}

impl SippOutcome {
    fn describe(&self) -> String {
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        format!(
            "sipp {:?} exited with {:?}\n--- errors log ---\n{}\n--- stderr ---\n{}\n--- stdout (tail) ---\n{}",
            self.args,
            self.code,
            self.errors,
            self.stderr,
            tail(&self.stdout)
        )
    }

    fn expect_ok(&self) {
        assert_eq!(self.code, Some(0), "{}", self.describe());
    }
}

/// The per-channel content of a 16-bit stereo 8 kHz WAV recording.
#[derive(Debug)]
struct StereoWav {
    /// Frames (one sample per channel) in the data chunk.
    frames: usize,
    /// Samples louder than the silence threshold, left (caller) then right (agent).
    loud: [usize; 2],
}

/// Parses a WAV recording: RIFF/WAVE, PCM, 2 channels, 16 bits, 8000 Hz. `Err` when the
/// file is not (yet) complete: header sizes disagreeing with the file.
fn read_stereo_wav(bytes: &[u8]) -> Result<StereoWav, String> {
    const LOUD: i32 = 100;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!("not a RIFF/WAVE file ({} bytes)", bytes.len()));
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let riff_len = u32_at(4) as usize;
    if riff_len + 8 != bytes.len() {
        return Err(format!(
            "RIFF size {} + 8 but the file has {} bytes",
            riff_len,
            bytes.len()
        ));
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4) as usize;
        let body = at + 8;
        if body + len > bytes.len() {
            return Err(format!(
                "chunk {:?} runs past the end",
                String::from_utf8_lossy(id)
            ));
        }
        match id {
            b"fmt " => {
                if len < 16 {
                    return Err("fmt chunk too short".into());
                }
                format = Some((
                    u16_at(body),
                    u16_at(body + 2),
                    u32_at(body + 4),
                    u16_at(body + 14),
                ));
            }
            b"data" => {
                let Some(fmt) = format else {
                    return Err("data before fmt".into());
                };
                if fmt != (1, 2, 8000, 16) {
                    return Err(format!(
                        "format (tag, channels, rate, bits) = {fmt:?}, want (1, 2, 8000, 16)"
                    ));
                }
                let data = &bytes[body..body + len];
                let mut loud = [0usize; 2];
                for frame in data.chunks_exact(4) {
                    for (ch, loud) in loud.iter_mut().enumerate() {
                        let s = i16::from_le_bytes([frame[2 * ch], frame[2 * ch + 1]]) as i32;
                        if s.abs() > LOUD {
                            *loud += 1;
                        }
                    }
                }
                return Ok(StereoWav {
                    frames: len / 4,
                    loud,
                });
            }
            _ => {}
        }
        at = body + len + (len % 2);
    }
    Err("no data chunk".into())
}

/// Waits up to 10 s for the recording to be complete, then parses it.
async fn recording(path: &Path) -> StereoWav {
    let mut last = String::new();
    for _ in 0..100 {
        match std::fs::read(path) {
            Ok(bytes) => match read_stereo_wav(&bytes) {
                Ok(wav) => return wav,
                Err(e) => last = e,
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("recording {}: {last}", path.display());
}

/// Registers `agent` with sipp from `port` (digest, exits 0 on the 200).
async fn register(dir: &SippDir, node: &TestNode, agent: &str, password: &str, port: u16) {
    let port = port.to_string();
    dir.run_ok(&[
        &node.sip_udp(),
        "-sf",
        "agent_register.xml",
        "-s",
        agent,
        "-au",
        agent,
        "-ap",
        password,
        "-p",
        &port,
    ])
    .await;
}

/// One queue call through sipp: agent 1001 registers from a sipp on UDP, answers with
/// `agent_uas.xml` and echoes RTP; a sipp caller on `caller_transport` (`u1` or `t1`) plays
/// A-law audio for 8 s then hangs up. Checks both exit 0, the CDR, RTP counters and the
/// recording's two channels.
async fn bridged_call(caller_transport: &str) {
    let node = TestNode::start().await;
    let dir = SippDir::new();
    let agent_port = free_port();
    register(&dir, &node, "1001", "pass1001", agent_port).await;
    assert_eq!(
        node.agent_state("1001").await,
        "ready",
        "agent 1001 after REGISTER"
    );

    let agent_port = agent_port.to_string();
    let agent_media = free_media_port().to_string();
    let agent = dir.spawn(&[
        "-sf",
        "agent_uas.xml",
        "-p",
        &agent_port,
        "-mp",
        &agent_media,
        "-rtp_echo",
    ]);
    // Let the agent's sipp bind its port before the switch INVITEs it.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rtp_in_before = node.counter("lingxi_rtp_packets_in_total").await;
    let rtp_out_before = node.counter("lingxi_rtp_packets_out_total").await;
    let (target, via_tcp) = match caller_transport {
        "t1" => (node.sip_tcp(), true),
        _ => (node.sip_udp(), false),
    };
    let caller_port = free_port().to_string();
    let caller_media = free_media_port().to_string();
    let mut caller_args = vec![
        target.as_str(),
        "-sf",
        "caller_pcap.xml",
        "-s",
        "support",
        "-p",
        &caller_port,
        "-mp",
        &caller_media,
    ];
    if via_tcp {
        caller_args.extend(["-t", "t1"]);
    }
    let caller = dir.spawn(&caller_args);
    let call_id = caller.first_call_id();
    let caller = caller.finish().await;
    let agent = agent.finish().await;
    caller.expect_ok();
    agent.expect_ok();

    let cdr = node.cdr(&call_id).await;
    assert_eq!(cdr["outcome"], "call.completed", "CDR {cdr}");
    assert_eq!(cdr["agent"], "1001", "CDR {cdr}");
    assert_eq!(cdr["queue"], "support", "CDR {cdr}");
    assert_eq!(cdr["ended_by"], "caller", "CDR {cdr}");

    let rtp_in = node.counter("lingxi_rtp_packets_in_total").await - rtp_in_before;
    let rtp_out = node.counter("lingxi_rtp_packets_out_total").await - rtp_out_before;
    assert!(
        rtp_in >= 200.0,
        "RTP packets in during the call: {rtp_in} (want ≥ 200)"
    );
    assert!(
        rtp_out >= 200.0,
        "RTP packets out during the call: {rtp_out} (want ≥ 200)"
    );

    let path = cdr["recording"]
        .as_str()
        .unwrap_or_else(|| panic!("CDR without a recording: {cdr}"));
    let wav = recording(Path::new(path)).await;
    // The caller plays ~5 s of speech and the agent echoes it: at least 1 s of sound each way.
    assert!(
        wav.frames >= 8000 * 3,
        "recording {path} holds {} frames, want ≥ 3 s",
        wav.frames
    );
    assert!(
        wav.loud[0] >= 8000,
        "caller channel (left) nearly silent: {wav:?} in {path}"
    );
    assert!(
        wav.loud[1] >= 8000,
        "agent channel (right) nearly silent: {wav:?} in {path}"
    );
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// sipp registers as agent 1001 with digest: 200, and the API shows 1001 ready. With a wrong
/// password the switch answers 403: the normal scenario fails, the 403 scenario passes, and
/// the agent stays logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_agent_with_digest() {
    sipp_bin();
    let node = TestNode::start().await;
    let dir = SippDir::new();

    assert_eq!(node.agent_state("1001").await, "logged_out");
    register(&dir, &node, "1001", "pass1001", free_port()).await;
    let agent = node.get_json("/api/v1/agents/1001").await;
    assert_eq!(agent["state"], "ready", "agent 1001: {agent}");
    assert_eq!(
        agent["registered"]["transport"], "UDP",
        "agent 1001: {agent}"
    );

    let port = free_port().to_string();
    let target = node.sip_udp();
    let refused = dir
        .spawn(&[
            &target,
            "-sf",
            "agent_register.xml",
            "-s",
            "1002",
            "-au",
            "1002",
            "-ap",
            "wrong",
            "-p",
            &port,
        ])
        .finish()
        .await;
    assert_eq!(
        refused.code,
        Some(1),
        "a wrong password must fail the REGISTER: {}",
        refused.describe()
    );
    assert!(
        refused.errors.contains("403"),
        "expected a 403 in sipp's errors: {}",
        refused.describe()
    );

    let port = free_port().to_string();
    dir.run_ok(&[
        &target,
        "-sf",
        "agent_register_403.xml",
        "-s",
        "1002",
        "-au",
        "1002",
        "-ap",
        "wrong",
        "-p",
        &port,
    ])
    .await;
    let agent = node.get_json("/api/v1/agents/1002").await;
    assert_eq!(
        agent["state"], "logged_out",
        "agent 1002 after a wrong password: {agent}"
    );
    assert!(
        agent["registered"].is_null(),
        "agent 1002 after a wrong password: {agent}"
    );
    node.stop().await;
}

/// A sipp caller on UDP dials the queue; a sipp agent registered on UDP answers and echoes
/// RTP. Both sipps succeed, the CDR says `call.completed` by 1001, RTP flowed through the
/// switch and both channels of the recording hold sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_reaches_sipp_agent_with_rtp() {
    sipp_bin();
    bridged_call("u1").await;
}

/// The same call with the caller on TCP and the agent on UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_over_tcp_reaches_agent_on_udp() {
    sipp_bin();
    bridged_call("t1").await;
}

/// The WAV reader itself: a well-formed file parses, a truncated one is refused.
#[test]
fn wav_reader_checks_the_header() {
    let mut data = Vec::new();
    for i in 0..8000i32 {
        let left = ((i % 40) * 800 - 16_000) as i16;
        data.extend(left.to_le_bytes());
        data.extend(0i16.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend(b"RIFF");
    wav.extend(((36 + data.len()) as u32).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes());
    wav.extend(2u16.to_le_bytes());
    wav.extend(8000u32.to_le_bytes());
    wav.extend((8000u32 * 4).to_le_bytes());
    wav.extend(4u16.to_le_bytes());
    wav.extend(16u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend((data.len() as u32).to_le_bytes());
    wav.extend(&data);
    let parsed = read_stereo_wav(&wav).expect("valid WAV");
    assert_eq!(parsed.frames, 8000);
    assert!(parsed.loud[0] > 7000 && parsed.loud[1] == 0, "{parsed:?}");
    assert!(read_stereo_wav(&wav[..wav.len() - 10]).is_err());
}
