//! The records the state machine keeps: agents, queues, calls and call detail records.

use crate::{DialogState, SipTransport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Milliseconds since the Unix epoch. Time enters the state machine only inside commands,
/// so every replica computes the same result.
pub type Millis = u64;

/// An agent's working state, as supervisors see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Not working: not registered, or logged out by hand.
    LoggedOut,
    /// Waiting for a call.
    Ready,
    /// Logged in but not taking calls (the reason is kept beside the state).
    NotReady,
    /// A call is being offered: the agent's phone rings.
    Ringing,
    /// On a call.
    Busy,
    /// After a call, finishing notes; becomes ready when wrap-up ends.
    WrapUp,
}

impl AgentState {
    /// Every state, for metrics that must report zero counts too.
    pub const ALL: [AgentState; 6] = [
        AgentState::LoggedOut,
        AgentState::Ready,
        AgentState::NotReady,
        AgentState::Ringing,
        AgentState::Busy,
        AgentState::WrapUp,
    ];

    /// Stable lower-case name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Ready => "ready",
            AgentState::NotReady => "not_ready",
            AgentState::Ringing => "ringing",
            AgentState::Busy => "busy",
            AgentState::WrapUp => "wrap_up",
        }
    }
}

/// Where an agent's phone can be reached, learned from REGISTER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Contact URI the phone registered (Request-URI of INVITEs we send it).
    pub contact: String,
    /// Address the REGISTER came from: INVITEs go there (works behind NAT, like rport).
    pub peer: SocketAddr,
    /// Transport the phone registered over.
    pub transport: SipTransport,
    /// When the binding lapses unless refreshed.
    pub expires_at_ms: Millis,
    /// Node that received the REGISTER (the cluster issue needs to know).
    pub node: String,
    /// User-Agent header of the phone, shown to supervisors.
    pub user_agent: Option<String>,
}

/// An agent as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Agent id, also the SIP user name it registers with (e.g. "1001").
    pub id: String,
    /// Display name.
    pub name: String,
    /// Digest HA1 = md5(id:realm:password); the password itself is never stored.
    pub ha1: String,
    /// Skill → proficiency 1..=10, matched against queues.
    pub skills: BTreeMap<String, u8>,
    /// Current working state.
    pub state: AgentState,
    /// Why the agent is not ready (e.g. "break", "agent.no_answer"), when it is.
    pub reason: Option<String>,
    /// When the current state began.
    pub state_since_ms: Millis,
    /// When the agent last became ready: longest idle is offered first.
    pub idle_since_ms: Millis,
    /// The call the agent is ringing for, talking on or wrapping up.
    pub call_id: Option<String>,
    /// Current registration, if the phone is registered.
    pub registration: Option<Registration>,
    /// Calls answered since the agent was created (for supervisors).
    pub calls_answered: u64,
    /// The agent's leg of a call that ended on the record while its phone may still hold
    /// it: no call is offered to the agent until its BYE is confirmed
    /// ([`crate::Command::AgentLegReleased`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg_to_release: Option<LegToRelease>,
}

/// An agent's leg still to hang up after its call ended on the record (see
/// [`Agent::leg_to_release`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegToRelease {
    /// The call that ended.
    pub call_id: String,
    /// The node that ended it, which sends the BYE and confirms it.
    pub node: String,
    /// The agent's dialog, for whoever sends the BYE if that node cannot.
    pub dialog: crate::DialogState,
}

impl LegToRelease {
    /// The agent's leg of `call` (if it has one), for the agent to hold once it leaves the
    /// call.
    pub fn of(call: &CallRecord) -> Option<LegToRelease> {
        Some(LegToRelease {
            call_id: call.call_id.clone(),
            node: call.owner.clone(),
            dialog: call.b_leg.clone()?,
        })
    }
}

impl Agent {
    /// Whether a call may be offered to the agent now: ready, and no earlier leg still up.
    pub fn may_be_offered(&self) -> bool {
        self.state == AgentState::Ready && self.leg_to_release.is_none()
    }
}

/// What a queue does with a call that waited too long or found no agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "target")]
pub enum Overflow {
    /// Play a message and hang up.
    Hangup,
    /// Move the call to another queue, keeping its arrival time.
    Queue(String),
}

/// A queue's settings, replicated so every node routes the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Queue id, also a SIP user it is reached at (`sip:support@host`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Numbers that also reach the queue (`sip:8000@host`).
    pub extensions: Vec<String>,
    /// Skill an agent needs to take this queue's calls.
    pub skill: String,
    /// Lowest proficiency in that skill accepted.
    pub min_proficiency: u8,
    /// Default priority of the queue's calls; higher is served first.
    pub priority: u8,
    /// Seconds an agent's phone may ring before the call goes to the next agent.
    pub ring_timeout_secs: u64,
    /// Seconds a caller may wait before overflow.
    pub max_wait_secs: u64,
    /// Seconds of wrap-up after each call.
    pub wrapup_secs: u64,
    /// Whether an agent who lets a call ring out becomes not-ready.
    pub not_ready_on_no_answer: bool,
    /// What happens at max wait.
    pub overflow: Overflow,
    /// Overflow at once when no agent with the skill is logged in.
    pub overflow_when_no_agents: bool,
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// Arrived, being routed.
    Routing,
    /// Waiting in a queue, hearing music.
    Queued,
    /// Offered to an agent whose phone rings.
    Ringing,
    /// Caller and agent are talking.
    Talking,
    /// One side put the other on hold.
    Held,
}

impl CallPhase {
    /// Stable lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CallPhase::Routing => "routing",
            CallPhase::Queued => "queued",
            CallPhase::Ringing => "ringing",
            CallPhase::Talking => "talking",
            CallPhase::Held => "held",
        }
    }
}

/// Which leg of a call: A is the caller, B the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallLeg {
    /// The caller's leg (we are UAS).
    A,
    /// The agent's leg (we are UAC).
    B,
}

/// A live call, replicated so another node can resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The switch's id for the call (the caller leg's Call-ID).
    pub call_id: String,
    /// Caller's user part or number (From).
    pub caller: String,
    /// What the caller dialled (Request-URI user).
    pub called: String,
    /// Queue the call is in or was answered from.
    pub queue: Option<String>,
    /// Agent offered or talking.
    pub agent: Option<String>,
    /// Current phase.
    pub phase: CallPhase,
    /// Priority within the queue; higher first.
    pub priority: u8,
    /// Arrival time at the switch.
    pub arrived_ms: Millis,
    /// When the call entered its current queue (wait limits count from here).
    pub queued_ms: Option<Millis>,
    /// Order of entry among calls of equal priority and arrival (the log index).
    pub seq: u64,
    /// When an agent answered.
    pub answered_ms: Option<Millis>,
    /// Node that owns the call: its actor and media run there.
    pub owner: String,
    /// The caller's dialog.
    pub a_leg: Option<DialogState>,
    /// The agent's dialog, once answered.
    pub b_leg: Option<DialogState>,
    /// How many agents were offered the call.
    pub offers: u32,
    /// WAV recording of the call, when recording.
    pub recording: Option<String>,
    /// How many times the call moved to another node because its owner died.
    #[serde(default)]
    pub failovers: u32,
    /// Further recording parts (each node that resumed the call records its own part).
    #[serde(default)]
    pub more_recordings: Vec<String>,
    /// Blind transfers so far, oldest first (the CDR lists them).
    #[serde(default)]
    pub transfers: Vec<Transfer>,
}

/// Where a blind transfer sends a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransferTarget {
    /// Back to waiting, in this queue.
    Queue {
        /// Queue id.
        queue: String,
    },
    /// Straight to this agent's phone (if it rings out, the call waits in its queue again).
    Agent {
        /// Agent id.
        agent: String,
    },
}

/// One blind transfer of a call, kept for its CDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The agent who transferred the call.
    pub from_agent: String,
    /// Where it went.
    pub to: TransferTarget,
    /// When.
    pub at_ms: Millis,
}

/// A call detail record: one per call, written when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    /// The call's id.
    pub call_id: String,
    /// Caller (From user).
    pub caller: String,
    /// Dialled user or number.
    pub called: String,
    /// Queue that handled it.
    pub queue: Option<String>,
    /// Agent who answered (or was last offered it).
    pub agent: Option<String>,
    /// Arrival time.
    pub arrived_ms: Millis,
    /// Answer time by an agent.
    pub answered_ms: Option<Millis>,
    /// End time.
    pub ended_ms: Millis,
    /// Seconds from arrival to answer (or to end when never answered).
    pub wait_secs: f64,
    /// Seconds from answer to end.
    pub talk_secs: f64,
    /// Stable dotted outcome code, e.g. `call.completed`, `queue.abandoned`.
    pub outcome: String,
    /// Which side hung up: "caller", "agent" or "switch".
    pub ended_by: String,
    /// Path of the WAV recording.
    pub recording: Option<String>,
    /// Agents offered the call.
    pub offers: u32,
    /// Node that owned the call at the end.
    pub node: String,
    /// How many times the call was resumed on another node after its owner died.
    #[serde(default)]
    pub failovers: u32,
    /// Every part of the recording, in order (one more per node that resumed the call).
    #[serde(default)]
    pub recordings: Vec<String>,
    /// Log index at which the call ended: orders CDRs and makes their key unique.
    pub index: u64,
    /// Disposition code recorded by the agent at wrap-up (`console.dispositions`).
    #[serde(default)]
    pub disposition: Option<String>,
    /// The agent's note on the call.
    #[serde(default)]
    pub note: Option<String>,
    /// Who recorded the disposition (username).
    #[serde(default)]
    pub disposition_by: Option<String>,
    /// Blind transfers, oldest first: which agents handed the call on, and where.
    #[serde(default)]
    pub transfers: Vec<Transfer>,
}

/// A node of the cluster, as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`node.id`), the owner name calls carry.
    pub node: String,
    /// Its Raft id (0 on a single node).
    pub raft_id: u64,
    /// Where it takes SIP over UDP.
    pub sip_udp: Option<SocketAddr>,
    /// Where it takes SIP over TCP.
    pub sip_tcp: Option<SocketAddr>,
    /// Where its HTTP API listens.
    pub http: Option<SocketAddr>,
    /// Whether it is serving (false once declared dead, until it announces itself again).
    pub alive: bool,
    /// When `alive` last changed.
    pub since_ms: Millis,
}

/// What a console user may do. Checked by the HTTP API on every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users and cluster membership.
    Admin,
    /// Reads all agents, queues, calls and CDRs, sets any agent's state, edits the knowledge base.
    Supervisor,
    /// Sees and changes only its own agent, calls and CDRs; reads the knowledge base.
    Agent,
}

impl Role {
    /// Stable lower-case name used in the API and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
        }
    }

    /// Parses `admin`, `supervisor` or `agent`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "supervisor" => Some(Role::Supervisor),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// A person who logs in to the console or API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name, unique.
    pub username: String,
    /// Name shown in the console.
    pub display_name: String,
    /// What the user may do.
    pub role: Role,
    /// The agent this user works as (required for role agent, optional otherwise).
    pub agent_id: Option<String>,
    /// Argon2id PHC string of the password; the password itself is never stored.
    pub password_hash: String,
    /// When the user was created.
    pub created_ms: Millis,
    /// When the user was last changed.
    pub updated_ms: Millis,
}

/// A logged-in session: the token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// Whose session it is.
    pub username: String,
    /// When it stops being accepted.
    pub expires_at_ms: Millis,
    /// When it was opened.
    pub opened_ms: Millis,
}

/// Knowledge-base entry kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArticleKind {
    /// A knowledge article agents read.
    Article,
    /// A short canned answer agents paste or read out.
    QuickReply,
}

impl ArticleKind {
    /// Stable name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ArticleKind::Article => "article",
            ArticleKind::QuickReply => "quick_reply",
        }
    }
}

/// A knowledge-base article or quick reply, replicated so every node searches the same set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    /// Stable id (chosen by the API on creation).
    pub id: String,
    /// Article or quick reply.
    pub kind: ArticleKind,
    /// Title, searched with a higher weight.
    pub title: String,
    /// Body text (plain text or light Markdown).
    pub body: String,
    /// Free tags, searched too.
    pub tags: Vec<String>,
    /// Language tag of the text, e.g. `zh-CN`, `en`.
    pub lang: String,
    /// When it was last written.
    pub updated_at_ms: Millis,
    /// Who last wrote it (username).
    pub updated_by: String,
}

/// The wrap-up result an agent records for a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    /// Disposition code from `console.dispositions`, e.g. `resolved`.
    pub code: String,
    /// The agent's free-text note.
    pub note: String,
    /// Who recorded it (username).
    pub by: String,
    /// When.
    pub at_ms: Millis,
}
