//! Exactly one CDR per call: every call the state machine accepted has one CDR on every node
//! once the run has drained, none twice, all nodes' copies equal, and its fields agree with
//! what the load generator saw.

use super::Violation;
use lingxi_cluster::model::Cdr;
use std::collections::{BTreeMap, BTreeSet};

const NAME: &str = "cdr_once";

/// What a run recorded about calls and CDRs.
#[derive(Debug, Clone, Default)]
pub struct CdrHistory {
    /// Calls whose `CallArrived` was accepted (they exist, so they must end with a CDR).
    pub arrived: BTreeSet<String>,
    /// Each node's CDR store at the end of the run.
    pub stores: BTreeMap<String, Vec<Cdr>>,
    /// Calls still live in the final state (after the drain: lost).
    pub live_at_end: BTreeSet<String>,
    /// Calls the generator saw answered, and by which agent.
    pub answered_by: BTreeMap<String, String>,
    /// Calls the generator saw refused (503): if one arrived anyway, it is a ghost.
    pub refused: BTreeSet<String>,
}

/// Checks the end of a run.
pub fn check(h: &CdrHistory) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut first: BTreeMap<&str, (&str, &Cdr)> = BTreeMap::new();
    for (node, cdrs) in &h.stores {
        let mut by_call: BTreeMap<&str, Vec<&Cdr>> = BTreeMap::new();
        for c in cdrs {
            by_call.entry(&c.call_id).or_default().push(c);
        }
        for (call, cs) in &by_call {
            if cs.len() > 1 {
                let idx: Vec<String> = cs.iter().map(|c| c.index.to_string()).collect();
                out.push(Violation::new(
                    NAME,
                    None,
                    Some(node),
                    format!(
                        "call {call} has {} CDRs (indexes {})",
                        cs.len(),
                        idx.join(", ")
                    ),
                ));
            }
            let cdr = cs[0];
            if !h.arrived.contains(*call) {
                out.push(Violation::new(
                    NAME,
                    None,
                    Some(node),
                    format!("CDR for call {call}, which never arrived"),
                ));
            }
            match first.get(call) {
                None => {
                    first.insert(call, (node, cdr));
                }
                Some((other, c)) if *c != cdr => out.push(Violation::new(
                    NAME,
                    None,
                    Some(node),
                    format!("CDR of call {call} differs from {other}'s"),
                )),
                Some(_) => {}
            }
            if let Some(agent) = h.answered_by.get(*call)
                && (cdr.agent.as_deref() != Some(agent) || cdr.answered_ms.is_none())
            {
                out.push(Violation::new(
                    NAME,
                    None,
                    Some(node),
                    format!(
                        "CDR of call {call} says agent {:?} answered {:?}; {agent} answered it",
                        cdr.agent, cdr.answered_ms
                    ),
                ));
            }
        }
    }
    for call in &h.arrived {
        let missing: Vec<&str> = h
            .stores
            .iter()
            .filter(|(_, cdrs)| !cdrs.iter().any(|c| &c.call_id == call))
            .map(|(node, _)| node.as_str())
            .collect();
        if missing.is_empty() {
            continue;
        }
        let why = if h.refused.contains(call) {
            "its caller was refused (503), yet its arrival committed: a ghost call no node serves"
        } else if h.live_at_end.contains(call) {
            "still live after the drain (no node ended it: lost)"
        } else {
            "gone from the state without one"
        };
        out.push(Violation::new(
            NAME,
            None,
            None,
            format!("call {call} has no CDR on {}: {why}", missing.join(", ")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(call: &str, index: u64) -> Cdr {
        Cdr {
            call_id: call.into(),
            caller: "c".into(),
            called: "q".into(),
            queue: None,
            agent: None,
            arrived_ms: 0,
            answered_ms: None,
            ended_ms: 1,
            wait_secs: 0.0,
            talk_secs: 0.0,
            outcome: "queue.abandoned".into(),
            ended_by: "caller".into(),
            recording: None,
            offers: 0,
            node: "n1".into(),
            failovers: 0,
            recordings: vec![],
            index,
            disposition: None,
            note: None,
            disposition_by: None,
            transfers: vec![],
        }
    }

    #[test]
    fn duplicates_and_missing_cdrs_are_caught() {
        let mut h = CdrHistory::default();
        h.arrived.insert("c1".into());
        h.stores.insert("n1".into(), vec![cdr("c1", 5000)]);
        h.stores.insert("n2".into(), vec![cdr("c1", 5000)]);
        assert!(check(&h).is_empty());
        h.stores
            .insert("n2".into(), vec![cdr("c1", 5000), cdr("c1", 9000)]);
        assert_eq!(check(&h).len(), 1);
        h.stores.insert("n2".into(), vec![]);
        h.live_at_end.insert("c1".into());
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("lost"), "{}", v[0]);
    }
}
