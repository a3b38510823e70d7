//! What a run records as it goes: the trace (and its digest, which proves a replay is
//! exact), the committed log as first applied, and the step-by-step invariant checkers.

use crate::invariants::agreement::{Agreement, AppliedRecord, CommittedEntry, StateCheckpoint};
use crate::invariants::no_rollback::{NoRollback, ProgressSample};
use crate::invariants::progress::HealWindow;
use crate::invariants::{Digest, Violation};
use lingxi_cluster::Command;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Calls dialled.
    pub calls_placed: u64,
    /// Calls whose arrival committed.
    pub calls_arrived: u64,
    /// Calls refused (503: fenced node, or the arrival did not commit in time).
    pub calls_refused: u64,
    /// Calls answered by an agent.
    pub calls_answered: u64,
    /// Calls moved to another node by a `NodeDown`.
    pub calls_moved: u64,
    /// `NodeDown`s that took effect.
    pub nodes_declared_dead: u64,
    /// Times a node fenced itself.
    pub fences: u64,
    /// Leader elections won.
    pub elections: u64,
    /// Snapshots taken (all nodes).
    pub snapshots: u64,
    /// Snapshots installed from a leader.
    pub snapshots_restored: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (cut links, loss, dead or frozen-then-crashed receivers).
    pub dropped: u64,
    /// Raft entries committed (highest index at the end).
    pub raft_entries: u64,
    /// Longest time from a heal to the first commit after it, ms.
    pub max_heal_to_commit_ms: u64,
    /// Agents left in wrap-up at the end (their wrap-up timer died with a node).
    pub agents_stuck_in_wrapup: u64,
    /// Agents whose leg of an ended call was still to hang up at the end (offered nothing).
    pub agents_left_holding_a_leg: u64,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// Events processed.
    pub events: u64,
}

/// The record of one run.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Keep trace lines (replays); the digest is kept either way.
    pub(crate) keep_trace: bool,
    /// Trace lines, `t=<ms> <what>`.
    pub(crate) trace: Vec<String>,
    /// Digest of everything that happened, in order.
    pub(crate) digest: Digest,
    /// Violations, in the order seen.
    pub(crate) violations: Vec<Violation>,
    /// Invariants whose violations are known issues: recorded in `tolerated` instead.
    pub(crate) tolerate: Vec<&'static str>,
    /// Violations of tolerated invariants.
    pub(crate) tolerated: Vec<Violation>,
    /// The committed commands as first applied: index → (command, accepted).
    pub(crate) log: BTreeMap<u64, (Command, bool)>,
    /// Outcomes, states and committed entries agree across nodes.
    pub(crate) agreement: Agreement,
    /// Indexes never go back.
    pub(crate) rollback: NoRollback,
    /// Heal windows, the last one possibly open.
    pub(crate) heals: Vec<HealWindow>,
    /// Counters.
    pub(crate) stats: Stats,
}

impl Recorder {
    /// A trace line, built only when lines are kept. The digest never depends on whether
    /// they are: a replay with its trace has the digest of the run that failed.
    pub(crate) fn trace(&mut self, now: u64, line: impl FnOnce() -> String) {
        if self.keep_trace {
            let l = line();
            self.trace.push(format!("t={now} {l}"));
        }
    }

    /// Mixes numbers into the run digest (cheap; always on).
    pub(crate) fn mix(&mut self, values: &[u64]) {
        for v in values {
            self.digest.u64(*v);
        }
    }

    /// Records violations (and traces them).
    pub(crate) fn violate(&mut self, now: u64, v: impl IntoIterator<Item = Violation>) {
        for v in v {
            let known = self.tolerate.contains(&v.invariant);
            if self.keep_trace {
                let what = if known { "KNOWN ISSUE" } else { "VIOLATION" };
                self.trace.push(format!("t={now} {what} {v}"));
            }
            self.mix(&[Digest::of(v.detail.as_bytes())]);
            if known {
                self.tolerated.push(v);
            } else {
                self.violations.push(v);
            }
        }
    }

    /// A node applied command `cmd` at state-machine index `index` with `outcome` (digest).
    pub(crate) fn applied(
        &mut self,
        node: &str,
        now: u64,
        index: u64,
        cmd: &Command,
        accepted: bool,
        outcome: u64,
    ) {
        self.mix(&[index, outcome]);
        self.log
            .entry(index)
            .or_insert_with(|| (cmd.clone(), accepted));
        let r = AppliedRecord {
            node: node.to_string(),
            at_ms: now,
            index,
            outcome,
        };
        if let Some(v) = self.agreement.applied(&r) {
            self.violate(now, [v]);
        }
    }

    /// A node knows entry `index` committed.
    pub(crate) fn committed(&mut self, node: &str, now: u64, index: u64, term: u64, digest: u64) {
        let e = CommittedEntry {
            node: node.to_string(),
            at_ms: now,
            index,
            term,
            digest,
        };
        if let Some(v) = self.agreement.committed(&e) {
            self.violate(now, [v]);
        }
    }

    /// A node's whole state after raft entry `raft_index`.
    pub(crate) fn state(&mut self, node: &str, now: u64, raft_index: u64, digest: u64) {
        let c = StateCheckpoint {
            node: node.to_string(),
            at_ms: now,
            raft_index,
            digest,
        };
        if let Some(v) = self.agreement.state(&c) {
            self.violate(now, [v]);
        }
    }

    /// A node's indexes now.
    pub(crate) fn progress(&mut self, s: ProgressSample) {
        let v = self.rollback.observe(&s);
        self.violate(s.at_ms, v);
    }

    /// Every fault has ended: a heal window opens.
    pub(crate) fn healed(&mut self, now: u64) {
        if self.heals.last().is_some_and(Self::open) {
            return;
        }
        self.heals.push(HealWindow {
            healed_at_ms: now,
            committed_at_ms: None,
            interrupted_at_ms: None,
        });
    }

    /// A fault began: an open heal window is interrupted.
    pub(crate) fn faulted(&mut self, now: u64) {
        if let Some(w) = self.heals.last_mut()
            && Self::open(w)
        {
            w.interrupted_at_ms = Some(now);
        }
    }

    /// Whether a heal window waits for its first commit.
    pub(crate) fn open(w: &HealWindow) -> bool {
        w.committed_at_ms.is_none() && w.interrupted_at_ms.is_none()
    }

    /// When the open heal window (if any) began.
    pub(crate) fn open_heal(&self) -> Option<u64> {
        self.heals
            .last()
            .filter(|w| Self::open(w))
            .map(|w| w.healed_at_ms)
    }

    /// A probe proposed at `proposed_at` committed at `now`.
    pub(crate) fn probe_committed(&mut self, proposed_at: u64, now: u64) {
        if let Some(w) = self.heals.last_mut()
            && Self::open(w)
            && proposed_at >= w.healed_at_ms
        {
            w.committed_at_ms = Some(now);
            let gap = now - w.healed_at_ms;
            self.stats.max_heal_to_commit_ms = self.stats.max_heal_to_commit_ms.max(gap);
        }
    }
}
