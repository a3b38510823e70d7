//! After the run: what the UAs saw, what the poller saw and what every node stores at the
//! end, checked against the invariants. Where the shared checkers of
//! [`lingxi_chaos::invariants`] fit (CDRs, rollback, agreement, progress) the history is
//! adapted to their input; what only real processes show (a caller whose hang-up finds no
//! call, RTP from a node that no longer owns the call) is checked here.

use super::load::{AgentLeg, CallEnd, CallKind, CallRecord};
use super::report::FaultRecord;
use lingxi_chaos::invariants::Violation;
use lingxi_chaos::invariants::agreement::{self, StateCheckpoint};
use lingxi_chaos::invariants::cdr_once::{self, CdrHistory};
use lingxi_chaos::invariants::progress::{self, HealWindow, NodeReadiness};
use lingxi_cluster::model::Cdr;
use std::collections::{BTreeMap, BTreeSet};

/// Switch-initiated ends of an answered call that are not a loss.
const NORMAL_SWITCH_ENDS: [&str; 1] = ["queue.timeout"];

/// What every node holds once the cluster settled.
#[derive(Debug, Clone, Default)]
pub struct Final {
    /// Node name → its CDRs.
    pub stores: BTreeMap<String, Vec<Cdr>>,
    /// Calls some node still shows live.
    pub live_at_end: BTreeSet<String>,
    /// Each node's CDRs and agents, digested at its applied index.
    pub states: Vec<StateCheckpoint>,
    /// Whether each node takes calls again.
    pub ready: Vec<NodeReadiness>,
    /// Ms since the load began when this was read.
    pub at_ms: u64,
}

/// Everything the run recorded.
pub struct History<'a> {
    /// Calls placed, all kinds.
    pub calls: &'a [CallRecord],
    /// Agent legs.
    pub legs: &'a [AgentLeg],
    /// Faults injected.
    pub faults: &'a [FaultRecord],
    /// Node names, by index.
    pub names: &'a [String],
    /// A call must move within this long of its fault (ms).
    pub failover_window_ms: u64,
}

/// Counts the checks produce for the report.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Answered load calls lost.
    pub lost: u64,
    /// Answered calls re-INVITEd at the caller.
    pub resumed: u64,
    /// Arrived calls lacking a CDR on some node.
    pub cdrs_missing: u64,
    /// Calls with more than one distinct CDR.
    pub cdrs_duplicated: u64,
    /// Distinct call ids with a CDR.
    pub cdrs: u64,
}

/// Every distinct CDR (by call id and index) over all nodes.
fn union(stores: &BTreeMap<String, Vec<Cdr>>) -> BTreeMap<String, BTreeMap<u64, Cdr>> {
    let mut u: BTreeMap<String, BTreeMap<u64, Cdr>> = BTreeMap::new();
    for cdrs in stores.values() {
        for c in cdrs {
            u.entry(c.call_id.clone())
                .or_default()
                .insert(c.index, c.clone());
        }
    }
    u
}

/// Settles how the calls whose hang-up was answered only by a 481 ended
/// ([`CallEnd::ByeUnconfirmed`]): a CDR saying the caller ended the call means one of our
/// BYEs did it (its 200 came after we stopped waiting), a normal hang-up; anything else is
/// a hang-up that failed. Returns how many were confirmed by their CDR.
pub fn reconcile(calls: &mut [CallRecord], f: &Final) -> usize {
    let all = union(&f.stores);
    let mut confirmed = 0;
    for r in calls.iter_mut() {
        let CallEnd::ByeUnconfirmed(detail) = &r.end else {
            continue;
        };
        let by_caller = r
            .call_id
            .as_ref()
            .and_then(|cid| all.get(cid))
            .is_some_and(|cs| cs.values().any(|c| c.ended_by == "caller"));
        r.end = if by_caller {
            confirmed += 1;
            CallEnd::CallerBye
        } else {
            CallEnd::ByeFailed(format!("{detail}, and no CDR says the caller ended it"))
        };
    }
    confirmed
}

/// Runs every post-run check; returns violations and the counts.
pub fn check_all(h: &History<'_>, f: &Final) -> (Vec<Violation>, Counts) {
    let mut counts = Counts::default();
    let mut out = Vec::new();
    out.extend(check_cdrs(h, f, &mut counts));
    out.extend(check_calls(h, f, &mut counts));
    out.extend(check_media_owner(h));
    out.extend(agreement::check(&[], &f.states, &[]));
    out.extend(progress::check_ready(f.at_ms, &f.ready));
    (out, counts)
}

/// `cdr_once`: every call that arrived has one CDR on every node, no call has two, they all
/// agree, and they say what the UAs saw (caller, answered or not, by whom, failovers).
pub fn check_cdrs(h: &History<'_>, f: &Final, counts: &mut Counts) -> Vec<Violation> {
    let all = union(&f.stores);
    counts.cdrs = all.len() as u64;
    let mut by_caller: BTreeMap<&str, Vec<&Cdr>> = BTreeMap::new();
    for cs in all.values() {
        for c in cs.values() {
            by_caller.entry(c.caller.as_str()).or_default().push(c);
        }
    }
    let mut hist = CdrHistory {
        stores: f.stores.clone(),
        live_at_end: f.live_at_end.clone(),
        ..Default::default()
    };
    for r in h.calls {
        let answered = r.answered_ms.is_some();
        if answered && let Some(cid) = &r.call_id {
            hist.arrived.insert(cid.clone());
        }
        if r.status == Some(503) {
            if let Some(cid) = &r.call_id {
                // An arrival that committed after its wait ran out: the switch ends it on the
                // record (`switch.refused`, checked below), so then it must have its one CDR.
                if all.contains_key(cid) {
                    hist.arrived.insert(cid.clone());
                } else {
                    hist.refused.insert(cid.clone());
                }
            }
        } else if !answered {
            // No 2xx (no response at all, or 480 after the arrival committed): a CDR may
            // exist, and then the call did arrive.
            for c in by_caller.get(r.caller.as_str()).into_iter().flatten() {
                hist.arrived.insert(c.call_id.clone());
            }
        }
    }
    for l in h.legs {
        if l.acked_ms.is_some() {
            hist.answered_by.insert(l.a_call.clone(), l.agent.clone());
        }
    }
    let mut out = cdr_once::check(&hist);
    for cid in &hist.arrived {
        if f.stores
            .values()
            .any(|s| !s.iter().any(|c| &c.call_id == cid))
        {
            counts.cdrs_missing += 1;
        }
    }
    for (cid, cs) in &all {
        let per_node = f
            .stores
            .values()
            .any(|s| s.iter().filter(|c| &c.call_id == cid).count() > 1);
        if cs.len() > 1 || per_node {
            counts.cdrs_duplicated += 1;
            if cs.len() > 1 && !per_node {
                let idx: Vec<String> = cs.keys().map(|i| i.to_string()).collect();
                out.push(Violation::new(
                    "cdr_once",
                    None,
                    None,
                    format!(
                        "call {cid} has CDRs at different indexes on different nodes ({})",
                        idx.join(", ")
                    ),
                ));
            }
        }
    }
    let acked_calls: BTreeSet<&str> = h
        .legs
        .iter()
        .filter(|l| l.acked_ms.is_some())
        .map(|l| l.a_call.as_str())
        .collect();
    let offered_calls: BTreeSet<(&str, &str)> = h
        .legs
        .iter()
        .map(|l| (l.a_call.as_str(), l.agent.as_str()))
        .collect();
    for r in h.calls {
        let Some(cid) = &r.call_id else { continue };
        let Some(cs) = all.get(cid) else { continue };
        for c in cs.values() {
            let mut bad = Vec::new();
            if c.caller != r.caller {
                bad.push(format!(
                    "caller {:?}, the generator's was {:?}",
                    c.caller, r.caller
                ));
            }
            if c.answered_ms.is_some() {
                match c.agent.as_deref() {
                    Some(a) if offered_calls.contains(&(cid.as_str(), a)) => {}
                    a => bad.push(format!("answered by agent {a:?}, who never saw this call")),
                }
                if !acked_calls.contains(cid.as_str()) && r.end == CallEnd::CallerBye {
                    bad.push("answered, but no agent's 200 was ever ACKed".into());
                }
            }
            if r.end == CallEnd::CallerBye {
                if !r.reinvites.is_empty() && c.failovers == 0 {
                    bad.push(format!(
                        "0 failovers, the caller took {} re-INVITE(s)",
                        r.reinvites.len()
                    ));
                }
                // A move the caller never heard of is right only when the caller's BYE beat
                // the new owner's re-INVITE: the record then says the caller ended the call
                // (and `cdr_times` holds it to the caller's duration). Ended any other way,
                // the caller's hang-up was lost and the call ran on without it.
                if r.reinvites.is_empty() && c.failovers > 0 && c.ended_by != "caller" {
                    bad.push(format!(
                        "{} failover(s), the caller took no re-INVITE",
                        c.failovers
                    ));
                }
                if !r.reinvites.is_empty()
                    && r.agent_answered_ms.is_some()
                    && c.outcome != "failover.resumed"
                {
                    bad.push(format!(
                        "outcome {} for a call resumed and completed (expected failover.resumed)",
                        c.outcome
                    ));
                }
            }
            if r.status == Some(503) {
                // The caller was refused: the record must say so, not that it was served —
                // ended by its owner (`switch.refused`), or, if the owner died first, by the
                // node that found the caller gone when it tried to resume it.
                let refused = ["switch.refused", "failover.failed"].contains(&c.outcome.as_str());
                if !refused || c.answered_ms.is_some() {
                    bad.push(format!(
                        "the caller got 503, the CDR says {} (answered: {})",
                        c.outcome,
                        c.answered_ms.is_some()
                    ));
                }
            } else {
                bad.extend(cdr_times(c, r));
            }
            if !bad.is_empty() {
                out.push(Violation::new(
                    "cdr_once",
                    Some(r.placed_ms),
                    None,
                    format!("CDR of call {cid} ({}): {}", r.caller, bad.join("; ")),
                ));
            }
        }
    }
    out
}

/// How far a CDR's duration may stray from what its caller saw (commit latency, a retried
/// hang-up); a node's wall clock stepped by minutes or hours shows far beyond it.
const CDR_TIME_SLACK_MS: i64 = 10_000;

/// A CDR's times against each other and against the caller: arrival, answer and end in
/// order, and the call about as long as the caller saw it (the nodes share one true clock
/// here, so only a stepped wall clock can break these).
fn cdr_times(c: &Cdr, r: &CallRecord) -> Vec<String> {
    let mut bad = Vec::new();
    let ordered = c.arrived_ms <= c.ended_ms
        && c.answered_ms
            .is_none_or(|a| c.arrived_ms <= a && a <= c.ended_ms);
    if !ordered {
        bad.push(format!(
            "times out of order: arrived {}, answered {:?}, ended {}",
            c.arrived_ms, c.answered_ms, c.ended_ms
        ));
    }
    if r.end == CallEnd::CallerBye && r.ended_ms > r.placed_ms {
        let seen = (r.ended_ms - r.placed_ms) as i64;
        let recorded = c.ended_ms as i64 - c.arrived_ms as i64;
        if (recorded - seen).abs() > CDR_TIME_SLACK_MS {
            bad.push(format!(
                "lasted {recorded} ms by its CDR, {seen} ms at the caller"
            ));
        }
    }
    bad
}

/// `no_call_lost`: every load call the switch answered either ended normally or was
/// resumed within the failover window; none went silent or vanished.
pub fn check_calls(h: &History<'_>, f: &Final, counts: &mut Counts) -> Vec<Violation> {
    let all = union(&f.stores);
    let mut out = Vec::new();
    for r in h.calls.iter().filter(|r| r.kind == CallKind::Load) {
        let (Some(_), Some(cid)) = (r.answered_ms, &r.call_id) else {
            continue;
        };
        if !r.reinvites.is_empty() {
            counts.resumed += 1;
        }
        let outcome = all
            .get(cid)
            .and_then(|cs| cs.values().next())
            .map(|c| c.outcome.clone());
        let via = &h.names[r.entry];
        let mut why = Vec::new();
        match &r.end {
            CallEnd::ByeFailed(d) => why.push(format!("the caller could not hang up: {d}")),
            CallEnd::SwitchBye
                if !outcome
                    .as_deref()
                    .is_some_and(|o| NORMAL_SWITCH_ENDS.contains(&o)) =>
            {
                why.push(format!(
                    "the switch hung up on it (CDR outcome {outcome:?})"
                ))
            }
            _ => {}
        }
        if r.media.longest_silence_ms > h.failover_window_ms {
            why.push(format!(
                "no RTP reached the caller for {} ms",
                r.media.longest_silence_ms
            ));
        }
        for (at, node) in &r.reinvites {
            let fault = h.faults.iter().rev().find(|f| f.at_ms <= *at);
            if let Some(fl) = fault
                && at - fl.at_ms > h.failover_window_ms
                && *at > fl.healed_at_ms + h.failover_window_ms
            {
                why.push(format!(
                    "re-INVITEd by {} at {at} ms, {} ms after the {} of {} began",
                    node.map_or("?", |n| h.names[n].as_str()),
                    at - fl.at_ms,
                    fl.kind,
                    fl.node
                ));
            }
        }
        // A call talking to an agent when it moved must move on both legs.
        if let (Some(answered), Some(first), CallEnd::CallerBye) =
            (r.agent_answered_ms, r.reinvites.first(), &r.end)
            && answered < first.0
        {
            let agent_moved = h
                .legs
                .iter()
                .any(|l| &l.a_call == cid && l.acked_ms.is_some() && !l.reinvites.is_empty());
            if !agent_moved {
                why.push(format!(
                    "the caller leg was re-INVITEd at {} ms but the agent leg ({:?}) never was",
                    first.0, r.agent
                ));
            }
        }
        if !why.is_empty() {
            counts.lost += 1;
            out.push(Violation::new(
                "no_call_lost",
                Some(r.placed_ms),
                Some(via),
                format!("call {cid} ({}): {}", r.caller, why.join("; ")),
            ));
        }
    }
    out
}

/// `single_owner`, as the UAs see it: after a re-INVITE moved a call, no RTP for it arrives
/// from any other node.
pub fn check_media_owner(h: &History<'_>) -> Vec<Violation> {
    let name = |i: usize| h.names.get(i).map_or("?", String::as_str);
    let mut out = Vec::new();
    let caller_side = h.calls.iter().filter_map(|r| {
        r.call_id
            .as_ref()
            .map(|c| (c.as_str(), "caller", r.placed_ms, &r.media.stale))
    });
    let agent_side = h
        .legs
        .iter()
        .map(|l| (l.a_call.as_str(), "agent", l.offered_ms, &l.media.stale));
    for (cid, side, at, stale) in caller_side.chain(agent_side) {
        for s in stale {
            out.push(Violation::new(
                "single_owner",
                Some(at),
                Some(name(s.from)),
                format!(
                    "call {cid}: the {side} got {} RTP packet(s) from {} while {} owned the call \
                     (first {} ms after the owner changed)",
                    s.packets,
                    name(s.from),
                    name(s.owner),
                    s.first_after_ms
                ),
            ));
        }
    }
    out
}

/// `progress`: after each heal, the healed node answered a new call within `bound_ms`.
pub fn check_heals(windows: &[HealWindow], bound_ms: u64) -> Vec<Violation> {
    progress::check(windows, bound_ms)
}

#[cfg(test)]
mod tests {
    //! Fabricated histories: the checks must catch what they are for (a checker that never
    //! fails proves nothing).
    use super::*;
    use crate::runner::media::{CallMedia, Stale};
    use crate::runner::schedule::FaultKind;

    fn names() -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }

    fn call(seq: u64, cid: &str) -> CallRecord {
        CallRecord {
            seq,
            kind: CallKind::Load,
            caller: format!("c{seq}"),
            entry: 0,
            placed_ms: 1000,
            status: Some(200),
            call_id: Some(cid.into()),
            answered_ms: Some(1100),
            agent: Some("1001".into()),
            agent_answered_ms: Some(1300),
            reinvites: vec![],
            end: CallEnd::CallerBye,
            ended_ms: 5000,
            media: CallMedia::default(),
            error: None,
        }
    }

    fn leg(cid: &str) -> AgentLeg {
        AgentLeg {
            agent: "1001".into(),
            a_call: cid.into(),
            b_call: format!("{cid}-b"),
            offered_ms: 1200,
            acked_ms: Some(1300),
            reinvites: vec![],
            ended_by: "bye",
            ended_ms: 5000,
            media: CallMedia::default(),
        }
    }

    fn cdr(seq: u64, cid: &str, index: u64) -> Cdr {
        Cdr {
            call_id: cid.into(),
            caller: format!("c{seq}"),
            called: "8000".into(),
            queue: Some("support".into()),
            agent: Some("1001".into()),
            arrived_ms: 1,
            answered_ms: Some(2),
            ended_ms: 3,
            wait_secs: 0.0,
            talk_secs: 0.0,
            outcome: "call.completed".into(),
            ended_by: "caller".into(),
            recording: None,
            offers: 1,
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

    fn fin(stores: &[(&str, Vec<Cdr>)]) -> Final {
        Final {
            stores: stores
                .iter()
                .map(|(n, c)| (n.to_string(), c.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn check(calls: &[CallRecord], legs: &[AgentLeg], f: &Final) -> (Vec<Violation>, Counts) {
        let names = names();
        let faults = [FaultRecord {
            at_ms: 2000,
            kind: FaultKind::Kill,
            node: "n1".into(),
            planned_at_ms: 2000,
            duration_ms: 1000,
            healed_at_ms: 3000,
            detail: String::new(),
            error: None,
            skipped: false,
        }];
        let h = History {
            calls,
            legs,
            faults: &faults,
            names: &names,
            failover_window_ms: 20_000,
        };
        check_all(&h, f)
    }

    #[test]
    fn a_clean_history_passes() {
        let f = fin(&[("n1", vec![cdr(1, "a", 10)]), ("n2", vec![cdr(1, "a", 10)])]);
        let (v, c) = check(&[call(1, "a")], &[leg("a")], &f);
        assert!(v.is_empty(), "{v:#?}");
        assert_eq!(
            (c.cdrs, c.cdrs_missing, c.cdrs_duplicated, c.lost),
            (1, 0, 0, 0)
        );
    }

    #[test]
    fn cdr_times_from_a_stepped_clock_are_caught() {
        // Answered and ended on a node whose wall clock ran an hour ahead.
        let mut ahead = cdr(1, "a", 10);
        ahead.answered_ms = Some(3_600_002);
        ahead.ended_ms = 3_600_003;
        // Arrived on a node whose clock was set back ten minutes: ends before it began.
        let mut behind = cdr(2, "b", 11);
        behind.arrived_ms = 600_000;
        let f = fin(&[("n1", vec![ahead.clone(), behind.clone()])]);
        let (v, _) = check(&[call(1, "a"), call(2, "b")], &[leg("a"), leg("b")], &f);
        let has = |s: &str| {
            v.iter()
                .any(|x| x.invariant == "cdr_once" && x.detail.contains(s))
        };
        assert!(
            has("lasted 3600002 ms by its CDR, 4000 ms at the caller"),
            "{v:#?}"
        );
        assert!(has("times out of order"), "{v:#?}");
    }

    #[test]
    fn a_duplicated_cdr_is_caught() {
        let f = fin(&[
            ("n1", vec![cdr(1, "a", 10), cdr(1, "a", 14)]),
            ("n2", vec![cdr(1, "a", 10), cdr(1, "a", 14)]),
        ]);
        let (v, c) = check(&[call(1, "a")], &[leg("a")], &f);
        assert_eq!(c.cdrs_duplicated, 1);
        assert!(
            v.iter()
                .any(|v| v.invariant == "cdr_once" && v.detail.contains("2 CDRs")),
            "{v:#?}"
        );
    }

    #[test]
    fn a_missing_cdr_a_ghost_and_wrong_fields_are_caught() {
        // Call a lost its CDR on n2; b was refused 503 yet has a CDR; c's CDR names another
        // agent and no failover although its caller was re-INVITEd.
        let mut refused = call(2, "b");
        refused.status = Some(503);
        refused.answered_ms = None;
        refused.agent = None;
        let mut moved = call(3, "c");
        moved.reinvites = vec![(2500, Some(1))];
        let mut moved_leg = leg("c");
        moved_leg.reinvites = vec![(2500, Some(1))];
        let mut wrong = cdr(3, "c", 12);
        wrong.agent = Some("1002".into());
        let f = fin(&[
            ("n1", vec![cdr(1, "a", 10), cdr(2, "b", 11), wrong.clone()]),
            ("n2", vec![cdr(2, "b", 11), wrong]),
        ]);
        let (v, c) = check(&[call(1, "a"), refused, moved], &[leg("a"), moved_leg], &f);
        assert_eq!(c.cdrs_missing, 1, "{v:#?}");
        let has = |s: &str| {
            v.iter()
                .any(|v| v.invariant == "cdr_once" && v.detail.contains(s))
        };
        assert!(has("no CDR on n2"), "{v:#?}");
        assert!(
            has("the caller got 503, the CDR says call.completed"),
            "{v:#?}"
        );
        assert!(has("1001 answered it"), "{v:#?}");
        assert!(has("0 failovers"), "{v:#?}");
    }

    #[test]
    fn a_refused_call_stored_late_needs_its_refusal_on_record_everywhere() {
        // b got 503 but its arrival committed later: the switch ended it `switch.refused`.
        let mut refused = call(2, "b");
        refused.status = Some(503);
        refused.answered_ms = None;
        refused.agent = None;
        let mut rec = cdr(2, "b", 11);
        rec.answered_ms = None;
        rec.agent = None;
        rec.outcome = "switch.refused".into();
        rec.ended_by = "switch".into();
        rec.ended_ms = 40_000; // ended on the record well after the caller was refused
        let both = fin(&[
            ("n1", vec![cdr(1, "a", 10), rec.clone()]),
            ("n2", vec![cdr(1, "a", 10), rec.clone()]),
        ]);
        let (v, _) = check(&[call(1, "a"), refused.clone()], &[leg("a")], &both);
        assert!(v.is_empty(), "{v:#?}");
        // The same record on one node only: a CDR is missing.
        let one = fin(&[
            ("n1", vec![cdr(1, "a", 10), rec]),
            ("n2", vec![cdr(1, "a", 10)]),
        ]);
        let (v, c) = check(&[call(1, "a"), refused], &[leg("a")], &one);
        assert_eq!(c.cdrs_missing, 1, "{v:#?}");
    }

    #[test]
    fn a_move_the_caller_never_heard_of_is_right_only_if_the_callers_bye_ended_the_call() {
        let mut raced = cdr(1, "a", 10);
        raced.failovers = 1;
        raced.outcome = "failover.resumed".into();
        // The caller's BYE was answered 200, yet the call ran on after a move and was ended
        // by the switch when the caller did not take its re-INVITE.
        let mut lost = cdr(2, "b", 11);
        lost.failovers = 1;
        lost.outcome = "failover.failed".into();
        lost.ended_by = "switch".into();
        let f = fin(&[
            ("n1", vec![raced.clone(), lost.clone()]),
            ("n2", vec![raced, lost]),
        ]);
        let (v, _) = check(&[call(1, "a"), call(2, "b")], &[leg("a"), leg("b")], &f);
        let took_none: Vec<_> = v
            .iter()
            .filter(|v| v.detail.contains("the caller took no re-INVITE"))
            .collect();
        assert_eq!(took_none.len(), 1, "{v:#?}");
        assert!(took_none[0].detail.contains("(c2)"), "{v:#?}");
    }

    #[test]
    fn a_hang_up_answered_481_on_a_retry_counts_only_if_a_cdr_says_the_caller_ended_it() {
        let unconfirmed = |seq, cid| {
            let mut c = call(seq, cid);
            c.end = CallEnd::ByeUnconfirmed(
                "1 BYE(s) went unanswered, then one was answered 481".into(),
            );
            c
        };
        let mut by_switch = cdr(2, "b", 11);
        by_switch.ended_by = "switch".into();
        by_switch.outcome = "failover.failed".into();
        let f = fin(&[
            ("n1", vec![cdr(1, "a", 10), by_switch.clone()]),
            ("n2", vec![cdr(1, "a", 10), by_switch]),
        ]);
        let mut calls = vec![
            unconfirmed(1, "a"),
            unconfirmed(2, "b"),
            unconfirmed(3, "c"),
        ];
        assert_eq!(reconcile(&mut calls, &f), 1);
        assert_eq!(
            calls[0].end,
            CallEnd::CallerBye,
            "its CDR: ended by the caller"
        );
        for r in &calls[1..] {
            assert!(
                matches!(&r.end, CallEnd::ByeFailed(d) if d.contains("no CDR says the caller ended it")),
                "{:?}",
                r.end
            );
        }
        let (v, _) = check(&calls[..2], &[leg("a")], &f);
        assert!(
            v.iter().any(|v| v.invariant == "no_call_lost"
                && v.detail.contains("could not hang up")
                && v.detail.contains("(c2)")),
            "{v:#?}"
        );
        assert!(!v.iter().any(|v| v.detail.contains("(c1)")), "{v:#?}");
    }

    #[test]
    fn lost_calls_and_a_second_media_source_are_caught() {
        let mut gone = call(1, "a");
        gone.end = CallEnd::ByeFailed("BYE answered 481".into());
        let mut silent = call(2, "b");
        silent.media.longest_silence_ms = 30_000;
        let mut half = call(3, "c");
        half.reinvites = vec![(2600, Some(2))];
        let mut twice = call(4, "d");
        twice.media.stale = vec![Stale {
            from: 0,
            owner: 1,
            packets: 12,
            first_after_ms: 900,
        }];
        let ok_cdr = |s, c: &str, i| {
            let mut x = cdr(s, c, i);
            if c == "c" {
                x.failovers = 1;
                x.outcome = "failover.resumed".into();
            }
            x
        };
        let all = vec![
            ok_cdr(1, "a", 1),
            ok_cdr(2, "b", 2),
            ok_cdr(3, "c", 3),
            ok_cdr(4, "d", 4),
        ];
        let f = fin(&[("n1", all.clone()), ("n2", all)]);
        let legs = [leg("a"), leg("b"), leg("c"), leg("d")];
        let (v, c) = check(&[gone, silent, half, twice], &legs, &f);
        assert_eq!(c.lost, 3, "{v:#?}");
        let has = |inv: &str, s: &str| v.iter().any(|v| v.invariant == inv && v.detail.contains(s));
        assert!(has("no_call_lost", "could not hang up"), "{v:#?}");
        assert!(has("no_call_lost", "no RTP reached the caller"), "{v:#?}");
        assert!(has("no_call_lost", "agent leg"), "{v:#?}");
        assert!(has("single_owner", "from n1 while n2 owned"), "{v:#?}");
    }

    #[test]
    fn nodes_that_disagree_at_one_index_are_caught() {
        let mut f = fin(&[]);
        for (node, digest) in [("n1", 1), ("n2", 1), ("n3", 2)] {
            f.states.push(StateCheckpoint {
                node: node.into(),
                at_ms: 0,
                raft_index: 40,
                digest,
            });
        }
        let (v, _) = check(&[], &[], &f);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(
            (v[0].invariant, v[0].node.as_deref()),
            ("agreement", Some("n3"))
        );
    }
}
