//! The seeded fault schedule: which fault, on which node, when and for how long. A pure
//! function of the seed and the run's shape, so `--seed` replays the same schedule.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt;

/// One kind of fault the runner can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL the node, then start it again from its data directory.
    Kill,
    /// SIGSTOP the node (a frozen process: sockets open, nothing answered), then SIGCONT.
    Freeze,
    /// Drop all of the node's Raft traffic both ways (the harness proxies' cut/heal).
    Partition,
    /// Delay and drop whole frames of the node's Raft traffic (the runner's own proxy).
    Netem,
    /// Step the node's wall clock (forward minutes to hours, or back seconds to minutes)
    /// while its monotonic clock runs on, as an NTP step or a VM resume does; stepped back
    /// to the true time at the heal (libfaketime, see `host`).
    Clock,
    /// Fill the node's data filesystem with a ballast file, then delete it (a loop-mounted
    /// ext4 per node, see `host`).
    DiskFull,
    /// Make every fsync/fdatasync of the node take `delay_ms` (an fsync interposer preloaded
    /// into the node, see `host`).
    SlowFsync,
}

impl FaultKind {
    /// Every kind, in the order `--faults` lists them.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Freeze,
        FaultKind::Partition,
        FaultKind::Netem,
        FaultKind::Clock,
        FaultKind::DiskFull,
        FaultKind::SlowFsync,
    ];

    /// The kinds a run draws from unless told otherwise: the switch survives these today;
    /// clock, disk-full and slow-fsync faults still show its gaps (chaos/README.md).
    pub const DEFAULT: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Freeze,
        FaultKind::Partition,
        FaultKind::Netem,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Freeze => "freeze",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
            FaultKind::Clock => "clock",
            FaultKind::DiskFull => "disk_full",
            FaultKind::SlowFsync => "slow_fsync",
        }
    }

    /// Parses a name from [`FaultKind::name`].
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedFault {
    /// Planned start, ms after the load began (the runner starts it then or, if the previous
    /// fault took longer to heal, right after that plus the quiet gap).
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// Node index (0 is `n1`).
    pub node: usize,
    /// How long the fault lasts before it is healed (for a kill: until the restart begins).
    pub duration_ms: u64,
    /// Netem: added one-way delay per frame. Slow fsync: the time each fsync takes.
    pub delay_ms: u64,
    /// Netem only: extra random delay per frame, 0..jitter.
    pub jitter_ms: u64,
    /// Netem only: probability a frame (other than the hello) is dropped.
    pub loss: f64,
    /// Clock only: the step of the node's wall clock, seconds (negative: backwards).
    pub clock_step_s: i64,
}

/// The shape of the run the schedule is for.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Seed.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Length of the loaded part of the run.
    pub duration_ms: u64,
    /// No fault starts before this (the load warms up).
    pub warmup_ms: u64,
    /// No fault may still be active after `duration_ms - cooldown_ms`.
    pub cooldown_ms: u64,
    /// Quiet time after a fault heals before the next one, min..max.
    pub gap_ms: (u64, u64),
    /// Which kinds to draw from.
    pub kinds: Vec<FaultKind>,
}

/// Expected extra time a fault's healing takes beyond its planned duration (a restart waits
/// for the node to rejoin), used only to keep the plan inside the run.
fn heal_allowance(kind: FaultKind) -> u64 {
    match kind {
        FaultKind::Kill => 6_000,
        _ => 500,
    }
}

/// Draws the schedule: faults one after another (never two at once, so a majority always
/// remains), each on a random node, with random durations chosen to land on both sides of
/// the lease (1 s) and the failure detection (1.4 s) of the harness's timing.
pub fn plan(spec: &ScheduleSpec) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x6c69_6e67_7869_6368); // "lingxich"
    let mut out = Vec::new();
    if spec.kinds.is_empty() || spec.nodes < 3 {
        return out;
    }
    let end = spec.duration_ms.saturating_sub(spec.cooldown_ms);
    let mut t = spec.warmup_ms;
    loop {
        let kind = spec.kinds[rng.random_range(0..spec.kinds.len())];
        let node = rng.random_range(0..spec.nodes);
        let mut clock_step_s = 0;
        let (duration_ms, delay_ms, jitter_ms, loss) = match kind {
            FaultKind::Kill => (rng.random_range(500..4_000), 0, 0, 0.0),
            // Short freezes stay within the lease (the node just stalls); long ones outlast
            // failure detection (its calls move, and it must stay quiet when it wakes).
            FaultKind::Freeze => (
                if rng.random_bool(0.3) {
                    rng.random_range(200..800)
                } else {
                    rng.random_range(2_000..5_000)
                },
                0,
                0,
                0.0,
            ),
            FaultKind::Partition => (rng.random_range(1_500..6_000), 0, 0, 0.0),
            FaultKind::Netem => (
                rng.random_range(3_000..8_000),
                rng.random_range(10..120),
                rng.random_range(0..60),
                rng.random_range(0.0..0.2),
            ),
            // Forward: minutes to hours (past the registrations' and sessions' lifetimes);
            // backward: seconds to minutes (an NTP step, a VM resumed with a stale clock).
            FaultKind::Clock => {
                clock_step_s = if rng.random_bool(0.5) {
                    rng.random_range(60..4 * 3_600)
                } else {
                    -rng.random_range(2..600)
                };
                (rng.random_range(3_000..10_000), 0, 0, 0.0)
            }
            FaultKind::DiskFull => (rng.random_range(3_000..8_000), 0, 0, 0.0),
            // 50 ms: a busy disk; 200-800 ms: a dying one or a stalled SAN path.
            FaultKind::SlowFsync => (
                rng.random_range(3_000..8_000),
                if rng.random_bool(0.5) {
                    rng.random_range(20..100)
                } else {
                    rng.random_range(200..800)
                },
                0,
                0.0,
            ),
        };
        if t + duration_ms + heal_allowance(kind) > end {
            break;
        }
        out.push(PlannedFault {
            at_ms: t,
            kind,
            node,
            duration_ms,
            delay_ms,
            jitter_ms,
            loss,
            clock_step_s,
        });
        t += duration_ms + heal_allowance(kind) + rng.random_range(spec.gap_ms.0..=spec.gap_ms.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> ScheduleSpec {
        ScheduleSpec {
            seed,
            nodes: 3,
            duration_ms: 60_000,
            warmup_ms: 5_000,
            cooldown_ms: 5_000,
            gap_ms: (2_000, 5_000),
            kinds: FaultKind::ALL.to_vec(),
        }
    }

    #[test]
    fn a_seed_replays_its_schedule_and_stays_inside_the_run() {
        let a = plan(&spec(7));
        assert_eq!(a, plan(&spec(7)));
        assert_ne!(a, plan(&spec(8)));
        assert!(!a.is_empty());
        for f in &a {
            assert!(
                f.at_ms >= 5_000 && f.at_ms + f.duration_ms <= 55_000,
                "{f:?}"
            );
            assert!(f.node < 3);
        }
        for w in a.windows(2) {
            assert!(
                w[1].at_ms > w[0].at_ms + w[0].duration_ms,
                "faults overlap: {w:?}"
            );
        }
    }
}
