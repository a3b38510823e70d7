//! Committed state never rolls back: a node's commit and applied indexes only grow, across
//! crashes and restarts too (a restarted node replays its log before it is sampled again).

use super::Violation;
use std::collections::BTreeMap;

const NAME: &str = "no_rollback";

/// A node's indexes at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressSample {
    /// The node.
    pub node: String,
    /// When.
    pub at_ms: u64,
    /// Which run of the node (1 for the first start, +1 per restart).
    pub incarnation: u32,
    /// Highest raft index applied to its state machine.
    pub applied: u64,
    /// Highest raft index it knows committed.
    pub commit: u64,
}

/// Checks samples as they come.
#[derive(Debug, Default)]
pub struct NoRollback {
    /// The last sample of each node.
    last: BTreeMap<String, ProgressSample>,
}

impl NoRollback {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new sample: neither index may be below the node's previous sample.
    pub fn observe(&mut self, s: &ProgressSample) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(prev) = self.last.get(&s.node) {
            for (what, before, now) in [
                ("applied", prev.applied, s.applied),
                ("commit", prev.commit, s.commit),
            ] {
                if now < before {
                    out.push(Violation::new(
                        NAME,
                        Some(s.at_ms),
                        Some(&s.node),
                        format!(
                            "{what} index went back from {before} (run {}) to {now} (run {})",
                            prev.incarnation, s.incarnation
                        ),
                    ));
                }
            }
        }
        self.last.insert(s.node.clone(), s.clone());
        out
    }
}

/// Checks a whole recorded history at once.
pub fn check(samples: &[ProgressSample]) -> Vec<Violation> {
    let mut c = NoRollback::new();
    samples.iter().flat_map(|s| c.observe(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(incarnation: u32, applied: u64, commit: u64) -> ProgressSample {
        ProgressSample {
            node: "n1".into(),
            at_ms: 0,
            incarnation,
            applied,
            commit,
        }
    }

    #[test]
    fn growth_is_fine_and_a_restart_that_forgets_is_caught() {
        assert!(check(&[s(1, 3, 4), s(1, 4, 4), s(2, 4, 5)]).is_empty());
        let v = check(&[s(1, 9, 9), s(2, 5, 9)]);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("applied"), "{}", v[0]);
    }
}
