//! Every node's state machine agrees at the same applied index, and committed log entries
//! never differ between nodes.
//!
//! Three records feed it: the outcome of each applied command (events or refusal, as a
//! digest), the whole state at some raft indexes (a digest of its JSON), and the entries each
//! node learnt committed. The first node to report an index sets what every later report for
//! that index must match, on any node and in any incarnation.

use super::Violation;
use std::collections::BTreeMap;

const NAME: &str = "agreement";

/// One command as one node applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    /// The node that applied it.
    pub node: String,
    /// When.
    pub at_ms: u64,
    /// State-machine index (`raft_index * SUB_INDEX + position`).
    pub index: u64,
    /// Digest of the command and what applying it returned (events or the refusal).
    pub outcome: u64,
}

/// A node's whole state right after applying a raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCheckpoint {
    /// The node.
    pub node: String,
    /// When.
    pub at_ms: u64,
    /// The raft index just applied.
    pub raft_index: u64,
    /// Digest of the state machine's JSON.
    pub digest: u64,
}

/// A log entry a node knows is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    /// The node.
    pub node: String,
    /// When.
    pub at_ms: u64,
    /// Raft index.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// Digest of its type and data.
    pub digest: u64,
}

/// What was first reported at one index: by whom, and the value.
type First = (String, u64);

/// Checks records as they come (the simulation calls it at every step).
#[derive(Debug, Default)]
pub struct Agreement {
    /// Outcome per state-machine index.
    outcomes: BTreeMap<u64, First>,
    /// State digest per raft index.
    states: BTreeMap<u64, First>,
    /// (term, digest) per committed raft index.
    entries: BTreeMap<u64, (String, u64, u64)>,
}

impl Agreement {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A command applied somewhere: its outcome must match every other node's at that index.
    pub fn applied(&mut self, r: &AppliedRecord) -> Option<Violation> {
        match self.outcomes.get(&r.index) {
            None => {
                self.outcomes.insert(r.index, (r.node.clone(), r.outcome));
                None
            }
            Some((first, d)) if *d != r.outcome => Some(Violation::new(
                NAME,
                Some(r.at_ms),
                Some(&r.node),
                format!(
                    "applying index {} gave a different outcome than on {first} \
                     (digest {:016x} vs {d:016x})",
                    r.index, r.outcome
                ),
            )),
            Some(_) => None,
        }
    }

    /// A whole state at a raft index: must match every other node's at that index.
    pub fn state(&mut self, c: &StateCheckpoint) -> Option<Violation> {
        match self.states.get(&c.raft_index) {
            None => {
                self.states.insert(c.raft_index, (c.node.clone(), c.digest));
                None
            }
            Some((first, d)) if *d != c.digest => Some(Violation::new(
                NAME,
                Some(c.at_ms),
                Some(&c.node),
                format!(
                    "state at raft index {} differs from {first}'s at the same index",
                    c.raft_index
                ),
            )),
            Some(_) => None,
        }
    }

    /// An entry known committed: no node may ever commit another entry at that index.
    pub fn committed(&mut self, e: &CommittedEntry) -> Option<Violation> {
        match self.entries.get(&e.index) {
            None => {
                self.entries
                    .insert(e.index, (e.node.clone(), e.term, e.digest));
                None
            }
            Some((first, t, d)) if (*t, *d) != (e.term, e.digest) => Some(Violation::new(
                NAME,
                Some(e.at_ms),
                Some(&e.node),
                format!(
                    "committed entry {} (term {}) differs from the one {first} committed \
                     there (term {t})",
                    e.index, e.term
                ),
            )),
            Some(_) => None,
        }
    }
}

/// Checks a whole recorded history at once.
pub fn check(
    applied: &[AppliedRecord],
    states: &[StateCheckpoint],
    entries: &[CommittedEntry],
) -> Vec<Violation> {
    let mut a = Agreement::new();
    let mut out: Vec<Violation> = applied.iter().filter_map(|r| a.applied(r)).collect();
    out.extend(states.iter().filter_map(|c| a.state(c)));
    out.extend(entries.iter().filter_map(|e| a.committed(e)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, index: u64, outcome: u64) -> AppliedRecord {
        AppliedRecord {
            node: node.into(),
            at_ms: 0,
            index,
            outcome,
        }
    }

    #[test]
    fn same_outcomes_agree_and_a_different_one_is_caught() {
        assert!(check(&[rec("n1", 5000, 1), rec("n2", 5000, 1)], &[], &[]).is_empty());
        let v = check(&[rec("n1", 5000, 1), rec("n2", 5000, 2)], &[], &[]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].node.as_deref(), Some("n2"));
    }

    #[test]
    fn differing_committed_entries_are_caught() {
        let e = |node: &str, term| CommittedEntry {
            node: node.into(),
            at_ms: 0,
            index: 7,
            term,
            digest: 9,
        };
        assert_eq!(check(&[], &[], &[e("n1", 2), e("n3", 3)]).len(), 1);
        let s = |node: &str, digest| StateCheckpoint {
            node: node.into(),
            at_ms: 0,
            raft_index: 7,
            digest,
        };
        assert_eq!(check(&[], &[s("n1", 1), s("n2", 2)], &[]).len(), 1);
    }
}
