//! The serve gate: whether this node may send media at all right now.
//!
//! In a cluster a node relays a call's audio only while it holds the lease (see
//! `cluster::raft::RaftLog::holds_lease`). Fencing stops the call actors, but packets already
//! queued in the RTP sockets (a node thawing after SIGSTOP has seconds of them) would be
//! relayed before any actor runs; the gate is checked on every packet sent, so a node whose
//! lease has lapsed sends nothing. A single node never closes it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Until when sending is allowed, as an atomic deadline (cheap to check per packet).
#[derive(Debug)]
pub struct ServeGate {
    /// Milliseconds since [`epoch`]; `u64::MAX` = always open, 0 = closed.
    until_ms: AtomicU64,
}

/// The process-wide origin of the gate's clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX - 1)
}

impl Default for ServeGate {
    fn default() -> Self {
        ServeGate {
            until_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl ServeGate {
    /// Allows sending until `deadline` (exclusive), or closes the gate with `None`.
    pub fn open_until(&self, deadline: Option<Instant>) {
        let ms = deadline.map_or(0, |d| millis(d).max(1));
        self.until_ms.store(ms, Ordering::Release);
    }

    /// Whether a packet may be sent at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until == u64::MAX || millis(now) < until
    }
}

#[cfg(test)]
mod tests {
    use super::ServeGate;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn open_closed_and_deadlines() {
        let g = ServeGate::default();
        let now = Instant::now();
        assert!(g.is_open(now), "a single node's gate is always open");
        g.open_until(None);
        assert!(!g.is_open(now));
        g.open_until(Some(now + Duration::from_millis(500)));
        assert!(g.is_open(now));
        assert!(g.is_open(now + Duration::from_millis(400)));
        assert!(!g.is_open(now + Duration::from_millis(600)));
        // A deadline that has passed closes it.
        g.open_until(Some(now + Duration::from_millis(10)));
        assert!(!g.is_open(now + Duration::from_millis(20)));
    }
}
