//! `[[queues]]`: call queues, the numbers that reach them and what happens on overflow.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `[[queues]]` entry: a queue callers dial into and agents with a skill serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue id: stable key in call records and the HTTP API; also dialable as a SIP user.
    pub id: String,
    /// Human-readable name for dashboards; left out (or empty), it is the id.
    pub name: String,
    /// Extra SIP users that reach this queue, e.g. `["8000"]`, so callers can dial a number.
    pub extensions: Vec<String>,
    /// Skill an agent needs to be offered this queue's calls; left out (or empty), it is
    /// the queue id.
    pub skill: String,
    /// Lowest proficiency in `skill` (1..=10) an agent needs to be offered these calls.
    pub min_proficiency: u8,
    /// Default priority of this queue's calls when agents serve several queues;
    /// higher is served earlier.
    pub priority: u8,
    /// Overrides `acd.ring_timeout_secs` for this queue.
    pub ring_timeout_secs: Option<u64>,
    /// Overrides `acd.max_wait_secs` for this queue.
    pub max_wait_secs: Option<u64>,
    /// Overrides `acd.wrapup_secs` for this queue.
    pub wrapup_secs: Option<u64>,
    /// Overrides `media.hold_music` for this queue (a WAV file).
    pub hold_music: Option<PathBuf>,
    /// What happens to a call that waited too long or cannot be served.
    pub overflow: OverflowConfig,
    /// Service-level target: the supervisor view reports the share of answered calls that
    /// were answered within this many seconds of arriving.
    pub service_level_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            id: String::new(),
            name: String::new(),
            extensions: Vec::new(),
            skill: String::new(),
            min_proficiency: 1,
            priority: 5,
            ring_timeout_secs: None,
            max_wait_secs: None,
            wrapup_secs: None,
            hold_music: None,
            overflow: OverflowConfig::default(),
            service_level_secs: 20,
        }
    }
}

/// `[queues.overflow]`: what to do with a call the queue gives up on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OverflowConfig {
    /// Hang up, or move the call to another queue.
    pub action: OverflowAction,
    /// Queue id to move the call to when `action = "queue"`.
    pub target: Option<String>,
    /// WAV file played before hanging up; `None` plays a built-in tone.
    pub prompt: Option<PathBuf>,
    /// Overflow at once when no agent with the skill is logged in, instead of letting
    /// the caller wait for nobody.
    pub when_no_agents: bool,
}

impl Default for OverflowConfig {
    fn default() -> Self {
        OverflowConfig {
            action: OverflowAction::Hangup,
            target: None,
            prompt: None,
            when_no_agents: true,
        }
    }
}

/// What overflow does. Written in lowercase in TOML (`"hangup"`, `"queue"`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OverflowAction {
    /// Play the prompt (or a tone) and hang up.
    #[default]
    Hangup,
    /// Move the call to `overflow.target`.
    Queue,
}

impl QueueConfig {
    /// Fills the fields whose default depends on `id`.
    pub(crate) fn fill_defaults(&mut self) {
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
        if self.skill.is_empty() {
            self.skill = self.id.clone();
        }
    }
}
