//! Typed TOML configuration for a Lingxi node.
//!
//! A node starts with no file at all: every key has a default, so
//! `Config::load(None)` gives a working single-node setup listening on SIP 5060 and
//! HTTP 8080. A file only needs the keys it changes, and `LINGXI__SECTION__KEY`
//! environment variables override both (see [`Config::apply_env`]).
//!
//! ```no_run
//! # use std::path::Path;
//! let config = lingxi_config::Config::load(Some(Path::new("lingxi.toml")))?;
//! println!("SIP on udp/{}", config.sip.udp_port);
//! # Ok::<(), lingxi_config::ConfigError>(())
//! ```
//!
//! Loading goes: read file → parse (unknown keys are errors, with line and column) →
//! resolve relative paths against the file's directory → environment overrides →
//! [`Config::validate`], which reports every problem at once, each named by its key.
//!
//! # Layout
//!
//! - `lib.rs`: [`Config`], loading and relative-path resolution.
//! - `sections`: the fixed sections `[node]`, `[sip]`, `[http]`, `[media]`,
//!   `[recording]`, `[acd]`.
//! - `queue`: `[[queues]]` and their overflow.
//! - `agent`: `[[agents]]`.
//! - `env`: `LINGXI__…` environment overrides.
//! - `validate`: the rules a loaded config must meet.
//! - `error`: [`ConfigError`] and [`Problem`].
#![warn(missing_docs, unreachable_pub, unsafe_code)]

mod agent;
mod env;
mod error;
mod queue;
mod sections;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use agent::AgentConfig;
pub use error::{ConfigError, Problem};
pub use queue::{OverflowAction, OverflowConfig, QueueConfig};
pub use sections::{
    AcdSection, ApiKeyConfig, AuthSection, ClusterSection, CodecName, ConsoleSection, DebugSection,
    HttpSection, LabelledCode, MediaSection, NodeSection, PeerConfig, RecordingSection, SipSection,
    WebSection,
};

/// A node's whole configuration, one field per TOML section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`: identity and state directory.
    pub node: NodeSection,
    /// `[sip]`: SIP transports, registrar and timers.
    pub sip: SipSection,
    /// `[http]`: management API.
    pub http: HttpSection,
    /// `[media]`: RTP and codecs.
    pub media: MediaSection,
    /// `[recording]`: call recording.
    pub recording: RecordingSection,
    /// `[acd]`: call distribution defaults.
    pub acd: AcdSection,
    /// `[[queues]]`: the queues callers dial into.
    pub queues: Vec<QueueConfig>,
    /// `[[agents]]`: the agents who answer.
    pub agents: Vec<AgentConfig>,
    /// `[cluster]`: Raft membership and failover; off by default.
    pub cluster: ClusterSection,
    /// `[debug]`: test switches, off by default.
    pub debug: DebugSection,
    /// `[web]`: the WebRTC gateway for browser agents and web callers.
    pub web: WebSection,
    /// `[auth]`: first admin, session lifetime, login limits, API keys.
    pub auth: AuthSection,
    /// `[console]`: not-ready reasons and disposition codes offered to agents.
    pub console: ConsoleSection,
}

impl Config {
    /// Loads a node's config: defaults when `path` is `None`, else the file (relative
    /// paths in it resolved against its directory); then `LINGXI__…` environment
    /// overrides; then [`validate`](Config::validate).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let base_dir = path.parent().unwrap_or(Path::new(""));
                Config::from_toml_str(&text, &path.display().to_string(), Some(base_dir))?
            }
        };
        config.apply_env(env::process_vars()?)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text. `origin` names the text in errors (usually the file path).
    /// Relative paths the text sets are resolved against `base_dir` when given.
    /// Neither reads the environment nor validates.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            origin: origin.to_string(),
            message: describe_toml_error(text, &e),
        };
        let mut config: Config = toml::from_str(text).map_err(parse_error)?;
        config.fill_defaults();
        if let Some(base) = base_dir {
            // The default data_dir is relative to the working directory; only a
            // data_dir written in the file is relative to the file.
            let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            let data_dir_set = table
                .get("node")
                .and_then(|n| n.as_table())
                .is_some_and(|n| n.contains_key("data_dir"));
            config.resolve_paths(base, data_dir_set);
        }
        Ok(config)
    }

    /// Where recordings are written: `recording.dir`, else `<node.data_dir>/recordings`.
    pub fn recording_dir(&self) -> PathBuf {
        match &self.recording.dir {
            Some(dir) => dir.clone(),
            None => self.node.data_dir.join("recordings"),
        }
    }

    /// The queue a SIP user reaches: the queue whose id or one of whose extensions is
    /// `user`.
    pub fn queue_for_user(&self, user: &str) -> Option<&QueueConfig> {
        self.queues
            .iter()
            .find(|q| q.id == user || q.extensions.iter().any(|e| e == user))
    }

    /// Fills defaults that depend on other fields (queue and agent names).
    fn fill_defaults(&mut self) {
        self.queues.iter_mut().for_each(QueueConfig::fill_defaults);
        self.agents.iter_mut().for_each(AgentConfig::fill_defaults);
    }

    /// Makes every relative path set in the file relative to `base` instead.
    fn resolve_paths(&mut self, base: &Path, data_dir_set: bool) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if data_dir_set {
            join(&mut self.node.data_dir);
        }
        let optional = self
            .queues
            .iter_mut()
            .flat_map(|q| [q.hold_music.as_mut(), q.overflow.prompt.as_mut()]);
        [
            self.recording.dir.as_mut(),
            self.media.hold_music.as_mut(),
            self.auth.admin_password_file.as_mut(),
        ]
        .into_iter()
        .chain(optional)
        .flatten()
        .for_each(join);
    }
}

/// `line L, column C: message` for a toml error, from its byte span into `text`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests;
