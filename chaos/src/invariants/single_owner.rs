//! No call is served by two nodes at once, and no call is accepted from a node that was
//! declared dead.
//!
//! "Served" is what a node actually does, not what its copy of the state says: a node serves
//! a call while a call actor for it runs there (it relays the media, answers the legs'
//! requests, proposes the call's next steps). A node whose copy of the state lags may still
//! run a call the majority has already moved; that is exactly what this catches.

use super::Violation;
use lingxi_cluster::Command;
use std::collections::{BTreeMap, BTreeSet};

const NAME: &str = "single_owner";

/// Calls served by two or more nodes at this moment (`serving`: call id → nodes running it).
pub fn check_serving(at_ms: u64, serving: &BTreeMap<String, BTreeSet<String>>) -> Vec<Violation> {
    serving
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(call, nodes)| {
            let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            Violation::new(
                NAME,
                Some(at_ms),
                None,
                format!("call {call} is served by {} at once", nodes.join(" and ")),
            )
        })
        .collect()
}

/// Walks the committed log in order (index, command, whether the state machine accepted it)
/// and reports every `CallArrived` accepted while its owner was declared dead (a `NodeDown`
/// for it accepted, no later `MemberUp`).
pub fn check_arrivals<'a>(
    log: impl IntoIterator<Item = (u64, &'a Command, bool)>,
) -> Vec<Violation> {
    let mut dead: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for (index, cmd, accepted) in log {
        if !accepted {
            continue;
        }
        match cmd {
            Command::MemberUp(m) => {
                dead.remove(m.node.as_str());
            }
            Command::NodeDown { node, .. } => {
                dead.insert(node);
            }
            Command::CallArrived { call_id, owner, .. } if dead.contains(owner.as_str()) => {
                out.push(Violation::new(
                    NAME,
                    None,
                    Some(owner),
                    format!(
                        "call {call_id} accepted at index {index} from {owner}, which was declared dead"
                    ),
                ));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lingxi_cluster::model::Member;
    use lingxi_cluster::{DialogRole, DialogState, SipTransport};

    #[test]
    fn a_call_on_two_nodes_is_caught() {
        let mut m = BTreeMap::new();
        m.insert("c1".to_string(), BTreeSet::from(["n1".to_string()]));
        assert!(check_serving(5, &m).is_empty());
        m.get_mut("c1").unwrap().insert("n2".into());
        let v = check_serving(5, &m);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("n1 and n2"), "{}", v[0]);
    }

    #[test]
    fn a_call_from_a_dead_node_is_caught() {
        let member = Member {
            node: "n2".into(),
            raft_id: 2,
            sip_udp: None,
            sip_tcp: None,
            http: None,
            alive: true,
            since_ms: 0,
        };
        let arrived = Command::CallArrived {
            call_id: "c1".into(),
            caller: "a".into(),
            called: "q".into(),
            owner: "n2".into(),
            a_leg: DialogState {
                call_id: "c1".into(),
                local_tag: "t".into(),
                remote_tag: "r".into(),
                role: DialogRole::Uas,
                local_seq: 1,
                remote_seq: None,
                local_uri: "sip:q@x".into(),
                remote_uri: "sip:a@x".into(),
                remote_target: "sip:a@x".into(),
                route_set: vec![],
                local_contact: "sip:n2@x".into(),
                transport: SipTransport::Udp,
                peer: "127.0.0.1:5060".parse().unwrap(),
                local_sdp: None,
                remote_sdp: None,
                sdp_version: 1,
            },
            at_ms: 0,
        };
        let down = Command::NodeDown {
            node: "n2".into(),
            at_ms: 0,
        };
        let up = Command::MemberUp(member);
        let ok = [(1, &up, true), (2, &down, true), (3, &arrived, false)];
        assert!(check_arrivals(ok).is_empty());
        let back = [
            (1, &up, true),
            (2, &down, true),
            (3, &up, true),
            (4, &arrived, true),
        ];
        assert!(check_arrivals(back).is_empty());
        let bad = [(1, &up, true), (2, &down, true), (3, &arrived, true)];
        assert_eq!(check_arrivals(bad).len(), 1);
    }
}
