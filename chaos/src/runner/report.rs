//! The run's report: JSON (the interface scripts rely on) and a short Markdown summary.

use super::load::{AgentLeg, CallRecord};
use super::observe::DiskUse;
use super::schedule::FaultKind;
use lingxi_chaos::invariants::Violation;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every invariant a run checks (the report lists each, with its violation count).
pub const INVARIANTS: [&str; 7] = [
    "no_call_lost",
    "cdr_once",
    "single_owner",
    "single_offer",
    "no_rollback",
    "agreement",
    "progress",
];

/// One fault as it was injected.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// When it began (ms since the load began).
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// Which node (`n1`...).
    pub node: String,
    /// When the schedule wanted it.
    pub planned_at_ms: u64,
    /// How long it lasted (to the start of healing).
    pub duration_ms: u64,
    /// When it was healed (restart done, SIGCONT sent, link restored).
    pub healed_at_ms: u64,
    /// Parameters (netem delay and loss).
    pub detail: String,
    /// What went wrong injecting or healing it, if anything (`skipped: ...` when it could
    /// not be injected here at all).
    pub error: Option<String>,
    /// Not injected: this host lacks what the kind needs (libfaketime, root for a mount, a C
    /// compiler); `error` says what. Kept so a seed's schedule reads the same everywhere.
    pub skipped: bool,
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gaps {
    /// How many.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Gaps {
    /// Percentiles of `v` (nearest rank).
    pub fn of(mut v: Vec<u64>) -> Gaps {
        if v.is_empty() {
            return Gaps::default();
        }
        v.sort_unstable();
        let rank = |p: f64| v[(((p * v.len() as f64).ceil() as usize).max(1) - 1).min(v.len() - 1)];
        Gaps {
            count: v.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: *v.last().expect("not empty"),
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed (`--seed` replays the schedule and the call plan).
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Agents logged in.
    pub agents: usize,
    /// Length of the loaded part of the run, seconds.
    pub duration_s: f64,
    /// The whole run including start-up and settling, seconds.
    pub wall_s: f64,
    /// Command line that replays this run.
    pub replay: String,
    /// Faults injected, in order.
    pub faults: Vec<FaultRecord>,
    /// Fault kinds this run was asked for but could not inject here, and why.
    pub faults_not_injected: Vec<String>,
    /// Load calls placed (INVITEs sent).
    pub calls_placed: u64,
    /// Load calls the switch answered (2xx: queued, music).
    pub calls_answered: u64,
    /// Load calls an agent answered.
    pub calls_agent_answered: u64,
    /// Load calls that ended normally after an agent answered (caller hung up, 200).
    pub calls_completed: u64,
    /// Load calls whose caller gave up waiting for an agent (ended normally, no agent).
    pub calls_abandoned: u64,
    /// Load calls refused with a final non-2xx (e.g. 503 from a fenced node).
    pub calls_refused: u64,
    /// Load calls whose INVITE got no final response or failed locally.
    pub calls_failed: u64,
    /// Answered calls moved to another node (re-INVITE at the caller).
    pub calls_resumed: u64,
    /// Answered calls lost (see `no_call_lost` violations).
    pub calls_lost: u64,
    /// CDRs found (distinct call ids, all nodes).
    pub cdrs: u64,
    /// Calls that arrived but lack a CDR on some node.
    pub cdrs_missing: u64,
    /// Calls with more than one distinct CDR.
    pub cdrs_duplicated: u64,
    /// Audio gap at the caller across a failover: last packet before the re-INVITE to the
    /// first from the new owner.
    pub failover_gap_ms: Gaps,
    /// Percentage of uptime probes (one a second) whose new call was answered in time.
    pub new_call_uptime_pct: f64,
    /// Uptime probes made.
    pub probes: u64,
    /// Uptime probes answered.
    pub probes_answered: u64,
    /// From each heal to the first call answered through the healed node.
    pub heal_to_new_call_ms: Gaps,
    /// Raft frames the netem proxy dropped.
    pub netem_frames_dropped: u64,
    /// Times an idle agent was found not ready and put back to ready.
    pub agent_recoveries: u64,
    /// Polling rounds of every node's API.
    pub poll_rounds: u64,
    /// A call claimed by two healthy nodes in one poll only (not failed: a poll can race a
    /// handover); at most 20.
    pub transient_double_claims: Vec<String>,
    /// Whether every invariant held.
    pub invariants_held: bool,
    /// Violations per invariant (every invariant listed).
    pub invariants: BTreeMap<&'static str, usize>,
    /// Every violation, first first.
    pub violations: Vec<Violation>,
    /// What each node's data directory held on disk (bytes): at the start, at its peak, at
    /// the end and by store at the end. The chaos disks and `node.min_free_disk_mb` are sized
    /// by it.
    pub data_dir_bytes: BTreeMap<String, DiskUse>,
    /// Every call as its caller saw it (written to `<report>.calls.json`, not the report).
    #[serde(skip)]
    pub calls: Vec<CallRecord>,
    /// Every agent leg (written with the calls).
    #[serde(skip)]
    pub legs: Vec<AgentLeg>,
}

impl Report {
    /// The short Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Chaos run: seed {}, {} nodes, {:.0} s\n",
            self.seed, self.nodes, self.duration_s
        );
        let _ = writeln!(
            s,
            "**Invariants {}** ({} violations). Replay: `{}`\n",
            if self.invariants_held {
                "held"
            } else {
                "BROKEN"
            },
            self.violations.len(),
            self.replay
        );
        if let Some(v) = self.violations.first() {
            let _ = writeln!(s, "First violation: {v}\n");
        }
        let _ = writeln!(s, "| invariant | violations |\n|---|---|");
        for (k, n) in &self.invariants {
            let _ = writeln!(s, "| {k} | {n} |");
        }
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for f in &self.faults {
            *kinds.entry(f.kind.to_string()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(
            s,
            "\nFaults injected: {} ({}); not injected: {}.\n",
            self.faults.len(),
            kinds.join(", "),
            self.faults_not_injected.join("; ")
        );
        let _ = writeln!(
            s,
            "| calls | |\n|---|---|\n| placed | {} |\n| answered by the switch | {} |\n| answered by an agent | {} |\n| completed | {} |\n| abandoned (caller gave up waiting) | {} |\n| refused | {} |\n| failed to place | {} |\n| resumed after failover | {} |\n| lost | {} |\n| CDRs / missing / duplicated | {} / {} / {} |",
            self.calls_placed,
            self.calls_answered,
            self.calls_agent_answered,
            self.calls_completed,
            self.calls_abandoned,
            self.calls_refused,
            self.calls_failed,
            self.calls_resumed,
            self.calls_lost,
            self.cdrs,
            self.cdrs_missing,
            self.cdrs_duplicated
        );
        let g = &self.failover_gap_ms;
        let h = &self.heal_to_new_call_ms;
        let _ = writeln!(
            s,
            "\nFailover audio gap: p50 {} ms, p99 {} ms, max {} ms ({} failovers). \
             New-call uptime: {:.1}% ({} of {} probes). Heal to first new call on the healed \
             node: p50 {} ms, max {} ms.",
            g.p50,
            g.p99,
            g.max,
            g.count,
            self.new_call_uptime_pct,
            self.probes_answered,
            self.probes,
            h.p50,
            h.max
        );
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let disks: Vec<String> = self
            .data_dir_bytes
            .iter()
            .map(|(node, u)| {
                let by: Vec<String> = u
                    .end_by_dir
                    .iter()
                    .filter(|(_, b)| **b > 0)
                    .map(|(d, b)| format!("{d} {:.1}", mib(*b)))
                    .collect();
                format!(
                    "{node} {:.1} → {:.1} (peak {:.1}; {})",
                    mib(u.start),
                    mib(u.end),
                    mib(u.peak),
                    by.join(", ")
                )
            })
            .collect();
        let _ = writeln!(s, "\nData directories, MiB on disk: {}.", disks.join("; "));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let g = Gaps::of((1..=100).collect());
        assert_eq!((g.count, g.p50, g.p99, g.max), (100, 50, 99, 100));
        let g = Gaps::of(vec![7]);
        assert_eq!((g.p50, g.p99, g.max), (7, 7, 7));
        assert_eq!(Gaps::of(vec![]).count, 0);
    }
}
