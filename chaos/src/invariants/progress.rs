//! The cluster makes progress again after faults heal: a proposal made once every fault has
//! ended commits within a bound (unless a new fault starts first), and once everything has
//! settled every node can take new calls.

use super::Violation;

const NAME: &str = "progress";

/// One stretch of time that began with every fault healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealWindow {
    /// When the last fault ended.
    pub healed_at_ms: u64,
    /// When the first proposal made after that committed, if one did.
    pub committed_at_ms: Option<u64>,
    /// When a new fault began, if one did before a proposal committed.
    pub interrupted_at_ms: Option<u64>,
}

/// Windows in which nothing committed within `bound_ms` of the heal.
pub fn check(windows: &[HealWindow], bound_ms: u64) -> Vec<Violation> {
    windows
        .iter()
        .filter_map(|w| {
            let deadline = w.healed_at_ms + bound_ms;
            let late = match (w.committed_at_ms, w.interrupted_at_ms) {
                (Some(c), _) => c > deadline,
                (None, Some(i)) => i > deadline,
                (None, None) => true,
            };
            late.then(|| {
                Violation::new(
                    NAME,
                    Some(w.healed_at_ms),
                    None,
                    match w.committed_at_ms {
                        Some(c) => format!(
                            "after the heal at {} ms the first proposal committed only {} ms \
                             later (bound {bound_ms} ms)",
                            w.healed_at_ms,
                            c - w.healed_at_ms
                        ),
                        None => format!(
                            "after the heal at {} ms nothing committed within {bound_ms} ms",
                            w.healed_at_ms
                        ),
                    },
                )
            })
        })
        .collect()
}

/// Whether a node can take new calls once everything has healed and settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReadiness {
    /// The node.
    pub node: String,
    /// It would accept a new call now (not fenced, lease valid).
    pub serving: bool,
    /// Its own applied state says it was declared dead (so the state machine refuses the
    /// calls it accepts).
    pub declared_dead: bool,
}

/// Nodes that, with every fault healed, cannot take a new call.
pub fn check_ready(at_ms: u64, nodes: &[NodeReadiness]) -> Vec<Violation> {
    nodes
        .iter()
        .filter_map(|n| {
            let why = match (n.serving, n.declared_dead) {
                (true, false) => return None,
                (true, true) => {
                    "accepts calls but is declared dead: every arrival it proposes is refused"
                }
                (false, _) => "still fenced after every fault healed",
            };
            Some(Violation::new(NAME, Some(at_ms), Some(&n.node), why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_or_missing_commits_are_caught() {
        let w = |c, i| HealWindow {
            healed_at_ms: 1000,
            committed_at_ms: c,
            interrupted_at_ms: i,
        };
        assert!(check(&[w(Some(1500), None), w(None, Some(1200))], 1000).is_empty());
        assert_eq!(check(&[w(Some(2500), None)], 1000).len(), 1);
        assert_eq!(check(&[w(None, None)], 1000).len(), 1);
        assert_eq!(check(&[w(None, Some(5000))], 1000).len(), 1);
    }

    #[test]
    fn a_node_that_cannot_take_calls_is_caught() {
        let n = |serving, declared_dead| NodeReadiness {
            node: "n1".into(),
            serving,
            declared_dead,
        };
        assert!(check_ready(0, &[n(true, false)]).is_empty());
        assert_eq!(check_ready(0, &[n(true, true), n(false, false)]).len(), 2);
    }
}
