//! Failed-login counting, in memory on each node (not replicated: a node restarted forgets
//! its counts, and an attacker spreading attempts over `n` nodes gets `n` times the budget;
//! the argon2 cost still bounds the guessing rate).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Most keys remembered; beyond it stale keys are dropped first, then the map is cleared
/// (a flood of distinct usernames must not grow memory without bound).
const MAX_KEYS: usize = 100_000;

/// What a failure count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A username tried.
    User(String),
    /// A client address trying.
    Ip(IpAddr),
}

/// Counts failed logins per username and per client address within a sliding window.
pub(crate) struct LoginLimiter {
    /// Failures allowed within `window`.
    max_failures: usize,
    /// The sliding window.
    window: Duration,
    /// Failure times per key, oldest first.
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// A limiter allowing `max_failures` within `window`.
    pub(crate) fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when the username or the address has used up its failures.
    pub(crate) fn check(&self, username: &str, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.failures.lock();
        let mut wait = None;
        for key in [Key::User(username.to_string()), Key::Ip(ip)] {
            if let Some(q) = map.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max_failures
                    && let Some(oldest) = q.front()
                {
                    let left = self.window.saturating_sub(now.duration_since(*oldest));
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    wait = Some(wait.unwrap_or(0).max(secs.max(1)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Records a failed attempt for both the username and the address.
    pub(crate) fn fail(&self, username: &str, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for key in [Key::User(username.to_string()), Key::Ip(ip)] {
            let q = map.entry(key).or_default();
            q.push_back(now);
            while q.len() > self.max_failures {
                q.pop_front();
            }
        }
    }

    /// A successful login clears the username's count (not the address's: one good account
    /// must not reset an address that is guessing others).
    pub(crate) fn succeed(&self, username: &str) {
        self.failures
            .lock()
            .remove(&Key::User(username.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test(start_paused = true)]
    async fn locks_after_max_failures_and_unlocks_after_the_window() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.check("alice", IP).is_ok());
            l.fail("alice", IP);
        }
        let wait = l.check("alice", IP).unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
        // The address is blocked for other usernames too.
        assert!(l.check("bob", IP).is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(l.check("alice", IP).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn success_clears_the_username_only() {
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        l.fail("alice", IP);
        l.fail("alice", other);
        assert!(l.check("alice", "10.0.0.7".parse().unwrap()).is_err());
        l.succeed("alice");
        assert!(l.check("alice", "10.0.0.7".parse().unwrap()).is_ok());
    }
}
