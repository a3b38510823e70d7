//! `[[agents]]`: the people who answer calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `[[agents]]` entry: an agent's SIP login and skills.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Agent id: also the SIP user the agent's phone registers as, e.g. `1001`.
    pub id: String,
    /// Human-readable name for dashboards; left out (or empty), it is the id.
    pub name: String,
    /// SIP digest password the agent's phone registers with.
    pub password: String,
    /// Skill → proficiency (1..=10); decides which queues' calls the agent is offered.
    pub skills: BTreeMap<String, u8>,
}

impl AgentConfig {
    /// Fills the fields whose default depends on `id`.
    pub(crate) fn fill_defaults(&mut self) {
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
    }
}
