//! The switch's wall clock for timestamps in commands and CDRs.
//!
//! `SystemTime::now()` jumps when NTP steps the clock or a VM resumes (the chaos runner's
//! `clock` fault): a CDR would end before it began, a registration stamped an hour ahead would
//! look expired to the other nodes. This clock starts from the system clock, then advances with
//! the monotonic clock and follows the system clock only by slewing, at most 1 % of the time
//! elapsed (36 s per hour), like `adjtime`. It never goes backwards. After a deliberate large
//! correction of the system clock, restart the node to take it at once.

use parking_lot::Mutex;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where the clock stood at its last reading.
struct Anchor {
    /// Monotonic time of the reading.
    at: Instant,
    /// Milliseconds since the Unix epoch it gave then.
    ms: u64,
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The slewing step: from `last` (given at `elapsed_ms` ago), follow `system` by at most 1 %
/// of the elapsed time, never backwards.
fn step(last: u64, elapsed_ms: u64, system: u64) -> u64 {
    let steady = last.saturating_add(elapsed_ms);
    let max_adjust = elapsed_ms / 100;
    let target = system.clamp(
        steady.saturating_sub(max_adjust),
        steady.saturating_add(max_adjust),
    );
    target.max(last)
}

/// Milliseconds since the Unix epoch, steady (see the module documentation).
pub fn now_ms() -> u64 {
    static ANCHOR: OnceLock<Mutex<Anchor>> = OnceLock::new();
    let anchor = ANCHOR.get_or_init(|| {
        Mutex::new(Anchor {
            at: Instant::now(),
            ms: system_ms(),
        })
    });
    let now = Instant::now();
    let mut a = anchor.lock();
    let elapsed =
        u64::try_from(now.saturating_duration_since(a.at).as_millis()).unwrap_or(u64::MAX);
    if elapsed == 0 {
        return a.ms;
    }
    let ms = step(a.ms, elapsed, system_ms());
    *a = Anchor { at: now, ms };
    ms
}

#[cfg(test)]
mod tests {
    use super::step;

    #[test]
    fn follows_a_steady_system_clock_exactly() {
        assert_eq!(step(1_000_000, 20, 1_000_020), 1_000_020);
    }

    #[test]
    fn jumps_are_slewed_and_never_go_back() {
        // The system clock leaps an hour ahead: 1 % of the 1 s elapsed is taken.
        assert_eq!(step(1_000_000, 1_000, 1_000_000 + 3_600_000), 1_001_010);
        // It leaps back: time still advances, 1 % slower.
        assert_eq!(step(1_000_000, 1_000, 900_000), 1_000_990);
        // Readings in the same millisecond while the system clock went back: unchanged.
        assert_eq!(step(1_000_000, 0, 900_000), 1_000_000);
    }

    #[test]
    fn now_is_monotonic() {
        let mut last = super::now_ms();
        for _ in 0..1000 {
            let t = super::now_ms();
            assert!(t >= last);
            last = t;
        }
    }
}
