//! Commands: every change of state that must outlive a node.

use crate::DialogState;
use crate::model::{
    AgentState, Article, CallLeg, Member, Millis, QueueSpec, Registration, Role, TransferTarget,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry of the replicated log. Time is carried inside (`at_ms`), never read by the
/// state machine, so every replica applies a command to the same result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create an agent or change its name, password hash or skills (state is kept).
    UpsertAgent {
        /// Agent id.
        id: String,
        /// Display name.
        name: String,
        /// Digest HA1 of its password.
        ha1: String,
        /// Skill → proficiency.
        skills: BTreeMap<String, u8>,
        /// When.
        at_ms: Millis,
    },
    /// Delete an agent (refused while it is on a call).
    RemoveAgent {
        /// Agent id.
        id: String,
    },
    /// Change an agent's working state.
    SetAgentState {
        /// Agent id.
        id: String,
        /// New state (only logged_out, ready, not_ready, wrap_up may be set directly).
        state: AgentState,
        /// Reason for not-ready.
        reason: Option<String>,
        /// Apply only if the agent is in this state now (guards timers racing with people).
        only_if: Option<AgentState>,
        /// When.
        at_ms: Millis,
    },
    /// An agent's wrap-up after `call_id` is over: ready again (ignored if the agent has
    /// moved on since, so every node may fire the timer).
    WrapUpEnded {
        /// Agent id.
        id: String,
        /// The call the wrap-up followed.
        call_id: String,
        /// When.
        at_ms: Millis,
    },
    /// The BYE to an agent's leg of an ended call was answered (or gave up): calls may be
    /// offered to the agent again. Ignored unless the agent still waits on that very call's
    /// leg, so the owner and a survivor may both send it.
    AgentLegReleased {
        /// Agent id.
        id: String,
        /// The call whose leg was hung up.
        call_id: String,
    },
    /// Bind (or with `None`, unbind) an agent's phone.
    Register {
        /// Agent id.
        id: String,
        /// The new binding, or `None` to unregister.
        registration: Option<Registration>,
        /// When.
        at_ms: Millis,
    },
    /// Unbind an agent's phone because its binding lapsed (refused if it was refreshed since).
    ExpireRegistration {
        /// Agent id.
        id: String,
        /// Now: the binding must have expired by then.
        at_ms: Millis,
    },
    /// A node announces itself (start, restart, recovery): it may own calls again.
    MemberUp(Member),
    /// A node is declared dead: its calls move to live nodes (ringing ones go back to their
    /// queue, keeping their place).
    NodeDown {
        /// The dead node's name.
        node: String,
        /// When.
        at_ms: Millis,
    },
    /// Create or change a queue.
    UpsertQueue(QueueSpec),
    /// Delete a queue (refused while calls wait in it).
    RemoveQueue {
        /// Queue id.
        id: String,
    },
    /// A caller's INVITE was accepted; the call exists from now on.
    CallArrived {
        /// Call id.
        call_id: String,
        /// Caller.
        caller: String,
        /// Dialled user.
        called: String,
        /// Node that owns it.
        owner: String,
        /// The caller's dialog, as answered.
        a_leg: DialogState,
        /// When.
        at_ms: Millis,
    },
    /// The call enters a queue (first time, or overflow into another).
    CallQueued {
        /// Call id.
        call_id: String,
        /// Queue id.
        queue: String,
        /// Priority in that queue.
        priority: u8,
        /// When.
        at_ms: Millis,
    },
    /// The queue offers the call to an agent, who must be ready (else the command is refused:
    /// this is what stops two queues offering one agent two calls).
    CallOffered {
        /// Call id.
        call_id: String,
        /// Agent id.
        agent: String,
        /// When.
        at_ms: Millis,
    },
    /// The agent did not take the call; it goes back to its place in the queue.
    CallOfferFailed {
        /// Call id.
        call_id: String,
        /// Agent id.
        agent: String,
        /// Outcome code, e.g. `agent.no_answer`, `agent.busy`, `agent.rejected`.
        reason: String,
        /// Whether the agent becomes not-ready (else ready again).
        agent_not_ready: bool,
        /// When.
        at_ms: Millis,
    },
    /// The agent answered: talking.
    CallAnswered {
        /// Call id.
        call_id: String,
        /// Agent id.
        agent: String,
        /// The agent's dialog.
        b_leg: DialogState,
        /// Recording path, if recording.
        recording: Option<String>,
        /// When.
        at_ms: Millis,
    },
    /// A dialog changed (CSeq, target refresh, SDP).
    DialogUpdated {
        /// Call id.
        call_id: String,
        /// Which leg.
        leg: CallLeg,
        /// The dialog now.
        dialog: DialogState,
    },
    /// A node took back a call it owned after restarting (the process died mid-call): counted
    /// as a failover, like a move to another node.
    CallResumed {
        /// Call id.
        call_id: String,
        /// The node resuming it.
        owner: String,
    },
    /// A node that resumed the call records a further part of it.
    RecordingAdded {
        /// Call id.
        call_id: String,
        /// Path of the new part (on the recording node's disk).
        path: String,
    },
    /// A leg put the call on hold or took it off.
    CallHeld {
        /// Call id.
        call_id: String,
        /// Held or not.
        held: bool,
    },
    /// The call is over: writes its CDR; its agent (if it talked) enters wrap-up.
    CallEnded {
        /// Call id.
        call_id: String,
        /// Outcome code.
        outcome: String,
        /// "caller", "agent" or "switch".
        ended_by: String,
        /// Seconds of wrap-up for the agent (0 = straight back to ready).
        wrapup_secs: u64,
        /// When.
        at_ms: Millis,
    },
    /// The agent talking on the call transferred it blind (SIP REFER): the agent leaves it
    /// (wrap-up), and the caller waits in the target queue, keeping its arrival order, or
    /// rings the target agent, who must be ready. Refused if the call is not talking or held
    /// with `from_agent`.
    CallTransferred {
        /// Call id.
        call_id: String,
        /// The agent handing the call on.
        from_agent: String,
        /// Where the call goes.
        to: TransferTarget,
        /// Seconds of wrap-up for `from_agent` (0 = straight back to ready).
        wrapup_secs: u64,
        /// When.
        at_ms: Millis,
    },
    /// Create a console user or change it (role, agent, password hash). A user of role agent
    /// must name an existing agent. A changed password hash closes the user's sessions.
    UpsertUser {
        /// Login name.
        username: String,
        /// Name shown in the console.
        display_name: String,
        /// What the user may do.
        role: Role,
        /// The agent the user works as (required for role agent).
        agent_id: Option<String>,
        /// Argon2id PHC string of the password.
        password_hash: String,
        /// Refuse if the user exists already (creation; and the first admin, so two nodes
        /// racing to create it cannot both succeed).
        #[serde(default)]
        create_only: bool,
        /// When.
        at_ms: Millis,
    },
    /// Delete a user and close its sessions.
    RemoveUser {
        /// Login name.
        username: String,
    },
    /// A user logged in. Sessions expired at `at_ms` are pruned at the same time.
    SessionOpened {
        /// Hex SHA-256 of the bearer token (the token itself never enters the log).
        token_sha256: String,
        /// Whose session.
        username: String,
        /// When it stops being accepted.
        expires_at_ms: Millis,
        /// When.
        at_ms: Millis,
    },
    /// A user logged out (or the session was revoked).
    SessionClosed {
        /// Hex SHA-256 of the token.
        token_sha256: String,
    },
    /// Create or replace a knowledge-base article or quick reply.
    UpsertArticle(Article),
    /// Delete a knowledge-base article.
    RemoveArticle {
        /// Article id.
        id: String,
    },
    /// The agent's wrap-up result for a call: stored on its CDR (or on the live call, then
    /// copied to the CDR when it ends). With `ready`, the agent's wrap-up after this call ends.
    SetDisposition {
        /// Call id.
        call_id: String,
        /// Disposition code.
        disposition: String,
        /// Free-text note.
        note: String,
        /// Who recorded it (username).
        by: String,
        /// The agent whose wrap-up ends now, if any.
        ready_agent: Option<String>,
        /// When.
        at_ms: Millis,
    },
}

impl Command {
    /// The command's name as used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::UpsertAgent { .. } => "upsert_agent",
            Command::RemoveAgent { .. } => "remove_agent",
            Command::SetAgentState { .. } => "set_agent_state",
            Command::AgentLegReleased { .. } => "agent_leg_released",
            Command::Register { .. } => "register",
            Command::WrapUpEnded { .. } => "wrap_up_ended",
            Command::ExpireRegistration { .. } => "expire_registration",
            Command::MemberUp(_) => "member_up",
            Command::NodeDown { .. } => "node_down",
            Command::UpsertQueue(_) => "upsert_queue",
            Command::RemoveQueue { .. } => "remove_queue",
            Command::CallArrived { .. } => "call_arrived",
            Command::CallQueued { .. } => "call_queued",
            Command::CallOffered { .. } => "call_offered",
            Command::CallOfferFailed { .. } => "call_offer_failed",
            Command::CallAnswered { .. } => "call_answered",
            Command::DialogUpdated { .. } => "dialog_updated",
            Command::RecordingAdded { .. } => "recording_added",
            Command::CallResumed { .. } => "call_resumed",
            Command::CallHeld { .. } => "call_held",
            Command::CallEnded { .. } => "call_ended",
            Command::CallTransferred { .. } => "call_transferred",
            Command::UpsertUser { .. } => "upsert_user",
            Command::RemoveUser { .. } => "remove_user",
            Command::SessionOpened { .. } => "session_opened",
            Command::SessionClosed { .. } => "session_closed",
            Command::UpsertArticle(_) => "upsert_article",
            Command::RemoveArticle { .. } => "remove_article",
            Command::SetDisposition { .. } => "set_disposition",
        }
    }
}
