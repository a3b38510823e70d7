//! The fixed sections of a node's config: `[node]`, `[sip]`, `[http]`, `[media]`,
//! `[recording]`, `[acd]`, `[web]` and others.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[node]`: who this node is and where it keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Node id: names this node in the cluster, in logs and in actor names
    /// (which are process-wide, so they are prefixed with it). `[a-zA-Z0-9_-]+`.
    pub id: String,
    /// Directory for raft storage, recordings and other state, so a restarted node
    /// finds what it left behind.
    pub data_dir: PathBuf,
    /// Free space (MiB) the node keeps on `data_dir`'s filesystem: below it, the replicated
    /// log and CDR store stop writing (a cluster node fails stop and its calls move to the
    /// others; it refuses to start until space is freed), because the storage engine cannot
    /// be trusted with a disk that fills mid-write. 0 turns the guard off.
    pub min_free_disk_mb: u64,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: "node1".into(),
            data_dir: PathBuf::from("./data"),
            min_free_disk_mb: 64,
        }
    }
}

/// `[sip]`: the SIP transport, registrar and transaction timers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// Address the SIP sockets bind to; `0.0.0.0` listens on every interface.
    pub listen_ip: IpAddr,
    /// Host written in Via and Contact when the bind address is not what peers should
    /// use (NAT, a DNS name, a wildcard bind). `None`: see [`SipSection::advertised_host`].
    pub advertised_host: Option<String>,
    /// UDP port; 0 picks a free one (tests bind ephemeral ports).
    pub udp_port: u16,
    /// TCP port; 0 picks a free one.
    pub tcp_port: u16,
    /// Whether to listen on UDP, the transport most phones use.
    pub enable_udp: bool,
    /// Whether to listen on TCP, needed for messages too big for UDP (RFC 3261 §18.1.1).
    pub enable_tcp: bool,
    /// SIP domain this node serves: the host part of AORs such as `sip:1001@lingxi.local`.
    pub domain: String,
    /// Digest authentication realm shown to phones in the challenge.
    pub realm: String,
    /// Largest SIP message accepted on any transport, so a peer cannot make us buffer
    /// without bound.
    pub max_message_bytes: usize,
    /// Shortest registration accepted; shorter ones get `423 Interval Too Brief`.
    pub register_min_expires: u32,
    /// Longest registration granted; longer requests are cut down to it.
    pub register_max_expires: u32,
    /// Registration time granted when a REGISTER asks for none.
    pub register_default_expires: u32,
    /// Timer T1, the RTT estimate (RFC 3261 §17): base of every retransmit timer.
    pub t1_ms: u64,
    /// Timer T2, the cap on non-INVITE request and INVITE response retransmit intervals.
    pub t2_ms: u64,
    /// Timer T4, how long the network may keep a message: sizes timers I and K.
    pub t4_ms: u64,
    /// Sent in `User-Agent` and `Server` headers, so peers' logs show what they talked to.
    pub user_agent: String,
    /// A TCP connection idle this long is closed, so dead phones do not hold sockets.
    pub tcp_idle_timeout_secs: u64,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertised_host: None,
            udp_port: 5060,
            tcp_port: 5060,
            enable_udp: true,
            enable_tcp: true,
            domain: "lingxi.local".into(),
            realm: "lingxi".into(),
            max_message_bytes: 65535,
            register_min_expires: 60,
            register_max_expires: 3600,
            register_default_expires: 600,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            user_agent: "Lingxi/0.1".into(),
            tcp_idle_timeout_secs: 300,
        }
    }
}

impl SipSection {
    /// Host to write in Via and Contact: `advertised_host` if set, else `listen_ip`
    /// unless it is a wildcard, else `127.0.0.1`. An IPv6 `listen_ip` comes back in
    /// brackets (`[::1]`), as SIP URIs and Via need it.
    pub fn advertised_host(&self) -> String {
        if let Some(host) = &self.advertised_host {
            return host.clone();
        }
        match self.listen_ip {
            ip if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    }
}

/// `[http]`: the management API (agent state, metrics, health).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address the HTTP API listens on; port 0 picks a free one (tests use it).
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// `[media]`: RTP sockets and codecs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address RTP sockets bind to.
    pub rtp_ip: IpAddr,
    /// Address written in SDP `c=` lines when `rtp_ip` is not reachable by peers
    /// (NAT, wildcard bind). `None`: see [`MediaSection::advertised_ip`].
    pub advertised_ip: Option<IpAddr>,
    /// Lowest RTP port handed out, so firewalls can open a known range.
    pub rtp_port_min: u16,
    /// Highest RTP port handed out.
    pub rtp_port_max: u16,
    /// Codecs offered and accepted, in order of preference.
    pub codecs: Vec<CodecName>,
    /// RTP payload type for RFC 4733 DTMF events; must be dynamic (96..=127).
    pub telephone_event_pt: u8,
    /// WAV file played to callers waiting in a queue; `None` uses the built-in music.
    pub hold_music: Option<PathBuf>,
    /// Packetisation time: milliseconds of audio per RTP packet.
    pub ptime_ms: u32,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            rtp_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertised_ip: None,
            rtp_port_min: 20000,
            rtp_port_max: 30000,
            codecs: vec![CodecName::Pcmu, CodecName::Pcma],
            telephone_event_pt: 101,
            hold_music: None,
            ptime_ms: 20,
        }
    }
}

impl MediaSection {
    /// Address to put in SDP: `advertised_ip` if set, else `rtp_ip` unless it is a
    /// wildcard, else `127.0.0.1`.
    pub fn advertised_ip(&self) -> IpAddr {
        match (self.advertised_ip, self.rtp_ip) {
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (None, ip) => ip,
        }
    }
}

/// A codec Lingxi can send and receive. Written in lowercase in TOML (`"pcmu"`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl CodecName {
    /// The static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            CodecName::Pcmu => 0,
            CodecName::Pcma => 8,
        }
    }

    /// The encoding name as written in SDP `a=rtpmap` (`PCMU`, `PCMA`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
        }
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecName::Pcmu => "pcmu",
            CodecName::Pcma => "pcma",
        })
    }
}

/// `[recording]`: call recording.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// Whether calls are recorded; off for nodes that must not keep audio.
    pub enabled: bool,
    /// Where recordings go; `None` means `<data_dir>/recordings`
    /// (see [`Config::recording_dir`](crate::Config::recording_dir)).
    pub dir: Option<PathBuf>,
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            enabled: true,
            dir: None,
        }
    }
}

/// `[acd]`: how calls are offered to agents, for every queue unless it overrides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcdSection {
    /// How long an agent's phone rings before the call is offered to someone else.
    pub ring_timeout_secs: u64,
    /// Put an agent who lets a call ring out into not-ready, so calls stop going to an
    /// empty desk.
    pub not_ready_on_no_answer: bool,
    /// After-call work time before an agent is offered the next call.
    pub wrapup_secs: u64,
    /// Longest a caller waits in a queue before the queue's overflow action runs.
    pub max_wait_secs: u64,
    /// How many agents a call is offered to before it overflows; 0 = unlimited.
    pub max_offers_per_call: u32,
    /// Most live calls one node carries; beyond it new callers get 503 with Retry-After, so
    /// an overloaded node keeps serving the calls it has instead of collapsing. 0 = no limit.
    pub max_calls: usize,
}

impl Default for AcdSection {
    fn default() -> Self {
        AcdSection {
            ring_timeout_secs: 15,
            not_ready_on_no_answer: true,
            wrapup_secs: 5,
            max_wait_secs: 300,
            max_offers_per_call: 0,
            max_calls: 3000,
        }
    }
}

/// `[debug]`: switches for tests and diagnosis; all off in production.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSection {
    /// Enables `POST /api/v1/calls/{id}/fault`, which makes that call's actor panic: how the
    /// test suite proves that one failing call disturbs no other. Never enable it in service.
    pub fault_injection: bool,
}

/// `[cluster]`: Raft membership and failover. Off by default: a node runs alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Run as a member of a Raft cluster (else the node commits to its own storage alone).
    pub enabled: bool,
    /// This node's Raft id: unique in the cluster, never reused, not 0.
    pub raft_id: u64,
    /// Where the node-to-node (Raft) transport listens.
    pub listen: SocketAddr,
    /// The other members known at start: their Raft ids and transport addresses.
    pub peers: Vec<PeerConfig>,
    /// Form a new cluster from this node and `peers` (true), or start empty and wait to be
    /// added with `lingxi cluster join` (false).
    pub bootstrap: bool,
    /// Raft tick: heartbeats and elections count in ticks.
    pub tick_ms: u64,
    /// Ticks without a leader before an election; also how long a cut-off node keeps serving
    /// its calls (its lease) before it stops them.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Silence after which the leader declares a node dead and moves its calls. Must exceed
    /// the lease (`election_ticks × tick_ms`) so a call is never served by two nodes.
    pub failure_detection_ms: u64,
    /// Applied entries between snapshots (the log is compacted at each).
    pub snapshot_every: u64,
    /// Placement: when this node carries more than this many live calls beyond the least
    /// loaded live member, new callers are redirected there (302). 0 turns it off.
    pub placement_slack: usize,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            enabled: false,
            raft_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            peers: Vec::new(),
            bootstrap: true,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            failure_detection_ms: 700,
            snapshot_every: 10_000,
            placement_slack: 50,
        }
    }
}

impl ClusterSection {
    /// How long a node cut off from the leader keeps serving calls before it stops them.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.tick_ms * self.election_ticks as u64)
    }
}

/// `[web]`: the WebRTC gateway. Browsers connect over a WebSocket; the gateway presents each
/// web agent to the switch as an ordinary SIP phone (it registers for the agent and answers
/// the switch's INVITEs) and calls queues on behalf of web callers ("call us" button).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Whether the gateway runs (and `/api/v1/ws`, `/api/v1/webcall/ws` are served).
    pub enabled: bool,
    /// Address of the gateway's own SIP UDP socket, which talks to this node's SIP port.
    /// `None`: `sip.listen_ip`, or `127.0.0.1` when that is a wildcard.
    pub sip_ip: Option<IpAddr>,
    /// Port of that socket; 0 picks a free one.
    pub sip_port: u16,
    /// Address the browser-facing (ICE) sockets bind to. `None`: `media.rtp_ip`; a wildcard
    /// binds every interface except loopback, so set `127.0.0.1` for a browser on this host
    /// only (tests do).
    pub rtc_ip: Option<IpAddr>,
    /// Address written in the ICE host candidates instead of the bound one (1:1 NAT).
    pub rtc_advertised_ip: Option<IpAddr>,
    /// How long ICE and DTLS may take once the browser answers before the call is given up.
    pub connect_timeout_ms: u64,
    /// Registration time the gateway asks for on behalf of each connected web agent; it
    /// refreshes at half of what is granted.
    pub register_expires_secs: u32,
    /// How long an agent's registration outlives its closed WebSocket, so a page reload does
    /// not log the agent out.
    pub unregister_grace_secs: u64,
    /// Most web ("call us") calls at once on this node; more are refused.
    pub max_web_calls: usize,
    /// Most web calls at once from one IP address.
    pub max_web_calls_per_ip: usize,
    /// Prefix of the caller id given to web callers (`web-<random>`), shown in CDRs.
    pub web_caller_prefix: String,
    /// Queues a web caller may call (ids or extensions); empty allows every queue.
    pub allowed_queues: Vec<String>,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            enabled: true,
            sip_ip: None,
            sip_port: 0,
            rtc_ip: None,
            rtc_advertised_ip: None,
            connect_timeout_ms: 10_000,
            register_expires_secs: 300,
            unregister_grace_secs: 10,
            max_web_calls: 200,
            max_web_calls_per_ip: 3,
            web_caller_prefix: "web-".into(),
            allowed_queues: Vec::new(),
        }
    }
}

impl WebSection {
    /// The gateway's SIP address: `sip_ip` if set, else `sip.listen_ip` unless it is a
    /// wildcard, else `127.0.0.1`.
    pub fn sip_ip(&self, sip: &SipSection) -> IpAddr {
        match (self.sip_ip, sip.listen_ip) {
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (None, ip) => ip,
        }
    }

    /// Where the browser-facing sockets bind: `rtc_ip` if set, else `media.rtp_ip`.
    pub fn rtc_ip(&self, media: &MediaSection) -> IpAddr {
        self.rtc_ip.unwrap_or(media.rtp_ip)
    }
}

/// One other member of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its Raft id.
    pub id: u64,
    /// Its Raft transport address, `host:port`.
    pub addr: String,
}

/// `[auth]`: console and API authentication. Users live in the replicated state; this
/// section only bootstraps the first admin and lists machine API keys.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Username of the first admin, created at start-up when no admin exists.
    pub admin_user: String,
    /// File holding the first admin's password (first line). When neither this nor
    /// `admin_password` is set, a random password is generated and written to
    /// `<data_dir>/initial-admin-password` (mode 0600).
    pub admin_password_file: Option<PathBuf>,
    /// The first admin's password, meant for the environment only
    /// (`LINGXI__AUTH__ADMIN_PASSWORD`); never write it in a config file.
    pub admin_password: Option<String>,
    /// How long a console session lasts after login.
    pub session_ttl_secs: u64,
    /// Failed logins (per username, and per client address) allowed within
    /// `login_window_secs` before further attempts get 429.
    pub login_max_failures: u32,
    /// Window over which failed logins are counted.
    pub login_window_secs: u64,
    /// Keys for machines (monitoring, scripts, test harnesses): `Authorization: Bearer <key>`.
    pub api_keys: Vec<ApiKeyConfig>,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSection")
            .field("admin_user", &self.admin_user)
            .field("admin_password_file", &self.admin_password_file)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<redacted>"),
            )
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_window_secs", &self.login_window_secs)
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            admin_user: "admin".into(),
            admin_password_file: None,
            admin_password: None,
            session_ttl_secs: 8 * 3600,
            login_max_failures: 5,
            login_window_secs: 300,
            api_keys: Vec::new(),
        }
    }
}

/// One `[[auth.api_keys]]` entry. Only the key's SHA-256 is configured; `lingxi auth
/// new-api-key` prints a key and these lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Name shown in logs as the principal (`apikey:<name>`).
    pub name: String,
    /// `admin`, `supervisor` or `agent`.
    pub role: String,
    /// Hex SHA-256 of the key (64 lowercase hex digits).
    pub sha256: String,
}

/// A code with its labels in both languages the console speaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelledCode {
    /// Stable code stored in state and CDRs, e.g. `lunch`, `resolved`.
    pub code: String,
    /// English label.
    pub label_en: String,
    /// Chinese (zh-CN) label.
    pub label_zh: String,
}

impl LabelledCode {
    fn new(code: &str, label_en: &str, label_zh: &str) -> LabelledCode {
        LabelledCode {
            code: code.into(),
            label_en: label_en.into(),
            label_zh: label_zh.into(),
        }
    }
}

/// `[console]`: what the agent console offers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Reasons an agent may give for not-ready.
    pub not_ready_reasons: Vec<LabelledCode>,
    /// Disposition codes an agent picks at wrap-up.
    pub dispositions: Vec<LabelledCode>,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            not_ready_reasons: vec![
                LabelledCode::new("break", "Break", "小休"),
                LabelledCode::new("lunch", "Lunch", "午餐"),
                LabelledCode::new("training", "Training", "培训"),
                LabelledCode::new("meeting", "Meeting", "会议"),
                LabelledCode::new("after_call_work", "After-call work", "话后处理"),
            ],
            dispositions: vec![
                LabelledCode::new("resolved", "Resolved", "已解决"),
                LabelledCode::new("follow_up", "Follow-up needed", "需跟进"),
                LabelledCode::new("complaint", "Complaint", "投诉"),
                LabelledCode::new("product_enquiry", "Product enquiry", "产品咨询"),
                LabelledCode::new("card_lost", "Card lost or stolen", "挂失"),
                LabelledCode::new("other", "Other", "其他"),
            ],
        }
    }
}
