//! The rules a loaded config must meet. [`Config::validate`] checks them all and
//! reports every broken one, each named by its dotted key.

use std::collections::{BTreeMap, HashSet};

use crate::{Config, ConfigError, OverflowAction, Problem};

impl Config {
    /// Checks every rule and returns all problems found, not just the first.
    ///
    /// Ports may be 0 (bind any free port), as tests do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.check_node(&mut p);
        self.check_sip(&mut p);
        self.check_media(&mut p);
        self.check_queues(&mut p);
        self.check_agents(&mut p);
        self.check_cluster(&mut p);
        self.check_web(&mut p);
        self.check_auth(&mut p);
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }

    fn check_cluster(&self, p: &mut Problems) {
        let c = &self.cluster;
        if !c.enabled {
            return;
        }
        if c.raft_id == 0 {
            p.add("cluster.raft_id", "must not be 0");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, peer) in c.peers.iter().enumerate() {
            if peer.id == 0 || peer.id == c.raft_id || !seen.insert(peer.id) {
                p.add(
                    format!("cluster.peers[{i}].id"),
                    format!(
                        "{} must be non-zero, unique and not this node's raft_id",
                        peer.id
                    ),
                );
            }
            if peer
                .addr
                .rsplit_once(':')
                .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
            {
                p.add(
                    format!("cluster.peers[{i}].addr"),
                    format!("{:?} is not host:port", peer.addr),
                );
            }
        }
        if c.tick_ms == 0 {
            p.add("cluster.tick_ms", "must be at least 1");
        }
        if c.heartbeat_ticks == 0 || c.heartbeat_ticks >= c.election_ticks {
            p.add(
                "cluster.heartbeat_ticks",
                "must be at least 1 and below cluster.election_ticks",
            );
        }
        let lease = c.tick_ms.saturating_mul(c.election_ticks as u64);
        if c.failure_detection_ms <= lease {
            p.add(
                "cluster.failure_detection_ms",
                format!("must exceed the lease election_ticks × tick_ms = {lease} ms, or a cut-off node could still serve calls that moved"),
            );
        }
        if c.snapshot_every == 0 {
            p.add("cluster.snapshot_every", "must be at least 1");
        }
    }

    fn check_auth(&self, p: &mut Problems) {
        let a = &self.auth;
        if a.admin_user.is_empty() || a.admin_user.len() > 64 {
            p.add("auth.admin_user", "must be 1-64 characters");
        }
        if a.session_ttl_secs == 0 {
            p.add("auth.session_ttl_secs", "must be at least 1");
        }
        if a.login_max_failures == 0 {
            p.add("auth.login_max_failures", "must be at least 1");
        }
        if a.login_window_secs == 0 {
            p.add("auth.login_window_secs", "must be at least 1");
        }
        if a.admin_password.as_ref().is_some_and(|pw| pw.len() < 8) {
            p.add("auth.admin_password", "must be at least 8 characters");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, k) in a.api_keys.iter().enumerate() {
            if k.name.is_empty() || !names.insert(k.name.as_str()) {
                p.add(
                    format!("auth.api_keys[{i}].name"),
                    format!("{:?} must be non-empty and unique", k.name),
                );
            }
            if !matches!(k.role.as_str(), "admin" | "supervisor" | "agent") {
                p.add(
                    format!("auth.api_keys[{i}].role"),
                    format!("{:?} is not one of admin, supervisor, agent", k.role),
                );
            }
            if k.sha256.len() != 64 || !k.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                p.add(
                    format!("auth.api_keys[{i}].sha256"),
                    "must be 64 hex digits (see `lingxi auth new-api-key`)",
                );
            }
        }
        for (key, list) in [
            ("console.not_ready_reasons", &self.console.not_ready_reasons),
            ("console.dispositions", &self.console.dispositions),
        ] {
            let mut codes = std::collections::BTreeSet::new();
            for (i, c) in list.iter().enumerate() {
                if c.code.is_empty() || c.code.len() > 64 || !codes.insert(c.code.as_str()) {
                    p.add(
                        format!("{key}[{i}].code"),
                        format!("{:?} must be 1-64 characters and unique", c.code),
                    );
                }
            }
        }
    }

    fn check_web(&self, p: &mut Problems) {
        let w = &self.web;
        if !w.enabled {
            return;
        }
        if w.connect_timeout_ms == 0 {
            p.add("web.connect_timeout_ms", "must be at least 1");
        }
        let (min, max) = (self.sip.register_min_expires, self.sip.register_max_expires);
        if w.register_expires_secs < min || w.register_expires_secs > max {
            p.add(
                "web.register_expires_secs",
                format!(
                    "{} is outside sip.register_min_expires..=sip.register_max_expires ({min}..={max})",
                    w.register_expires_secs
                ),
            );
        }
        if w.max_web_calls_per_ip > w.max_web_calls {
            p.add(
                "web.max_web_calls_per_ip",
                format!(
                    "{} exceeds web.max_web_calls ({})",
                    w.max_web_calls_per_ip, w.max_web_calls
                ),
            );
        }
        if let Some(c) = w
            .web_caller_prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            p.add(
                "web.web_caller_prefix",
                format!("{c:?} is not allowed in a SIP user name (letters, digits, - _ .)"),
            );
        }
        for (i, q) in w.allowed_queues.iter().enumerate() {
            if q.is_empty() || q.contains(|c: char| c.is_whitespace() || c == '@') {
                p.add(
                    format!("web.allowed_queues[{i}]"),
                    format!("{q:?} is not a queue id"),
                );
            }
        }
    }

    fn check_node(&self, p: &mut Problems) {
        let id = &self.node.id;
        if id.is_empty() {
            p.add("node.id", "must not be empty");
        } else if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            p.add(
                "node.id",
                format!("{id:?} contains {c:?}; only letters, digits, '-' and '_' are allowed"),
            );
        }
        if self.node.data_dir.as_os_str().is_empty() {
            p.add("node.data_dir", "must not be empty");
        }
    }

    fn check_sip(&self, p: &mut Problems) {
        let sip = &self.sip;
        if !sip.enable_udp && !sip.enable_tcp {
            p.add(
                "sip.enable_udp",
                "UDP and TCP are both disabled; enable at least one",
            );
        }
        let bad_host = |h: &&String| h.is_empty() || h.contains(char::is_whitespace);
        if let Some(host) = sip.advertised_host.as_ref().filter(bad_host) {
            p.add(
                "sip.advertised_host",
                format!("{host:?} is not a host name"),
            );
        }
        if sip.domain.is_empty() {
            p.add("sip.domain", "must not be empty");
        }
        if sip.realm.is_empty() {
            p.add("sip.realm", "must not be empty");
        }
        let (min, def, max) = (
            sip.register_min_expires,
            sip.register_default_expires,
            sip.register_max_expires,
        );
        if min > max {
            p.add(
                "sip.register_min_expires",
                format!("{min} is greater than sip.register_max_expires ({max})"),
            );
        } else if def < min || def > max {
            p.add(
                "sip.register_default_expires",
                format!("{def} is outside sip.register_min_expires..=sip.register_max_expires ({min}..={max})"),
            );
        }
        if sip.t1_ms == 0 {
            p.add("sip.t1_ms", "must be greater than 0");
        }
        if sip.t2_ms < sip.t1_ms {
            p.add(
                "sip.t2_ms",
                format!("{} is less than sip.t1_ms ({})", sip.t2_ms, sip.t1_ms),
            );
        }
        const MESSAGE_BYTES: std::ops::RangeInclusive<usize> = 1024..=1_048_576;
        if !MESSAGE_BYTES.contains(&sip.max_message_bytes) {
            p.add(
                "sip.max_message_bytes",
                format!("{} is outside 1024..=1048576", sip.max_message_bytes),
            );
        }
    }

    fn check_media(&self, p: &mut Problems) {
        let m = &self.media;
        if m.rtp_port_min >= m.rtp_port_max {
            p.add(
                "media.rtp_port_min",
                format!(
                    "must be less than media.rtp_port_max ({} >= {}); the range needs at least 2 ports",
                    m.rtp_port_min, m.rtp_port_max
                ),
            );
        }
        if m.codecs.is_empty() {
            p.add("media.codecs", "must list at least one codec");
        }
        let mut seen = HashSet::new();
        for (i, codec) in m.codecs.iter().enumerate() {
            if !seen.insert(codec) {
                p.add(
                    format!("media.codecs[{i}]"),
                    format!("{codec} is listed twice"),
                );
            }
        }
        if !(96..=127).contains(&m.telephone_event_pt) {
            p.add(
                "media.telephone_event_pt",
                format!(
                    "{} is not a dynamic payload type (96..=127)",
                    m.telephone_event_pt
                ),
            );
        }
        if !(10..=120).step_by(10).any(|ok| ok == m.ptime_ms) {
            p.add(
                "media.ptime_ms",
                format!("{} is not a multiple of 10 in 10..=120", m.ptime_ms),
            );
        }
    }

    fn check_queues(&self, p: &mut Problems) {
        let agent_ids: HashSet<&str> = self.agents.iter().map(|a| a.id.as_str()).collect();
        let queue_ids: HashSet<&str> = self.queues.iter().map(|q| q.id.as_str()).collect();
        let mut ids_seen = HashSet::new();
        // extension → index of the queue that claimed it first
        let mut extensions_seen: BTreeMap<&str, usize> = BTreeMap::new();

        for (i, q) in self.queues.iter().enumerate() {
            let key = |field: &str| format!("queues[{i}].{field}");
            if check_sip_user(p, &key("id"), &q.id) {
                if !ids_seen.insert(q.id.as_str()) {
                    p.add(key("id"), format!("queue {:?} is defined twice", q.id));
                }
                if agent_ids.contains(q.id.as_str()) {
                    p.add(key("id"), format!("{:?} is also an agent id", q.id));
                }
            }
            for (j, ext) in q.extensions.iter().enumerate() {
                let ext_key = format!("queues[{i}].extensions[{j}]");
                if !check_sip_user(p, &ext_key, ext) {
                    continue;
                }
                if let Some(&first) = extensions_seen.get(ext.as_str()) {
                    let which = if first == i {
                        "this queue".to_string()
                    } else {
                        format!("queues[{first}]")
                    };
                    p.add(
                        ext_key,
                        format!("{ext:?} is already an extension of {which}"),
                    );
                } else {
                    extensions_seen.insert(ext, i);
                    if agent_ids.contains(ext.as_str()) {
                        p.add(ext_key, format!("{ext:?} is also an agent id"));
                    } else if *ext != q.id && queue_ids.contains(ext.as_str()) {
                        p.add(ext_key, format!("{ext:?} is the id of another queue"));
                    }
                }
            }
            if !(1..=10).contains(&q.min_proficiency) {
                p.add(
                    key("min_proficiency"),
                    format!("{} is outside 1..=10", q.min_proficiency),
                );
            }
            if q.overflow.action == OverflowAction::Queue {
                match q.overflow.target.as_deref() {
                    None | Some("") => p.add(
                        key("overflow.target"),
                        "is required when overflow.action = \"queue\"",
                    ),
                    Some(t) if t == q.id => p.add(
                        key("overflow.target"),
                        format!("queue {t:?} overflows to itself"),
                    ),
                    Some(t) if !queue_ids.contains(t) => p.add(
                        key("overflow.target"),
                        format!("queue {t:?} does not exist"),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    fn check_agents(&self, p: &mut Problems) {
        let mut seen = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agents[{i}].{field}");
            if check_sip_user(p, &key("id"), &a.id) && !seen.insert(a.id.as_str()) {
                p.add(key("id"), format!("agent {:?} is defined twice", a.id));
            }
            if a.password.is_empty() {
                p.add(key("password"), "must not be empty");
            }
            for (skill, &level) in &a.skills {
                if skill.is_empty() {
                    p.add(key("skills"), "skill names must not be empty");
                } else if !(1..=10).contains(&level) {
                    p.add(
                        format!("agents[{i}].skills.{skill}"),
                        format!("proficiency {level} is outside 1..=10"),
                    );
                }
            }
        }
    }
}

/// Problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }
}

/// Whether `c` may appear in a SIP URI user part as Lingxi writes it: RFC 3261
/// `unreserved` plus the `user-unreserved` marks, minus `;` `?` `/` (which many
/// parsers read as URI parameters, headers or paths) and minus `%` escapes.
fn is_sip_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,".contains(c)
}

/// Records a problem under `key` unless `user` is a non-empty SIP user; returns
/// whether it is one.
fn check_sip_user(p: &mut Problems, key: &str, user: &str) -> bool {
    if user.is_empty() {
        p.add(key, "must not be empty");
        return false;
    }
    if let Some(c) = user.chars().find(|&c| !is_sip_user_char(c)) {
        p.add(
            key,
            format!("{user:?} contains {c:?}, which is not allowed in a SIP user name"),
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests;
