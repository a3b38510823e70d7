//! Failover with real `lingxi` processes: the owner of a call is killed with SIGKILL in the
//! middle of a conversation (or while the call waits in a queue) and a survivor carries it
//! on: re-INVITEs both legs to its own media, RTP flows again, BYE reaches it, one CDR.
//! Also a single node killed mid-call and restarted from its data directory.
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh does it).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use lingxi_tests::cluster::{
    Cluster, FAILOVER_WAIT, Talker, answer_reinvite, first_from_new_source,
};
use lingxi_tests::{Dialog, Rtp, TestUa, WAIT, exchange};
use serde_json::Value;
use tokio::time::Instant;

/// An established call through a cluster.
struct Call {
    caller: TestUa,
    leg_a: Dialog,
    agent: TestUa,
    leg_b: Dialog,
    rtp_caller: Arc<Rtp>,
    rtp_agent: Arc<Rtp>,
}

/// Agent `agent_id` registers through node `agent_node`, a caller calls 8000 through
/// `caller_node`, the agent answers.
async fn establish(
    cl: &Cluster,
    agent_node: usize,
    caller_node: usize,
    agent_id: &str,
) -> anyhow::Result<Call> {
    let mut agent = cl.agent_ua(agent_node, agent_id).await?;
    // Registrations are replicated: the caller's node sees the agent ready too.
    cl.wait_agent_state(caller_node, agent_id, "ready", WAIT)
        .await?;
    let (rtp_caller, rtp_agent) = (Arc::new(Rtp::bind().await?), Arc::new(Rtp::bind().await?));
    let mut caller = TestUa::new("alice", "", cl.sip(caller_node)).await?;
    let leg_a = caller.call("8000", &rtp_caller).await?;
    let leg_b = agent.accept(&rtp_agent, WAIT).await?;
    cl.wait_agent_state(caller_node, agent_id, "busy", WAIT)
        .await?;
    Ok(Call {
        caller,
        leg_a,
        agent,
        leg_b,
        rtp_caller,
        rtp_agent,
    })
}

impl Call {
    /// Sends 50 packets each way to the addresses the legs' SDP name; at least 20 must
    /// arrive each way. Returns the sources the packets came from (caller side, agent side).
    async fn assert_media(
        &self,
        what: &str,
    ) -> anyhow::Result<(HashSet<SocketAddr>, HashSet<SocketAddr>)> {
        self.rtp_caller.reset();
        self.rtp_agent.reset();
        let (up, down) = exchange(
            &self.rtp_caller,
            self.leg_a.remote_rtp()?,
            &self.rtp_agent,
            self.leg_b.remote_rtp()?,
            50,
            45,
            WAIT,
        )
        .await?;
        ensure!(
            up >= 20 && down >= 20,
            "{what}: {up} of 50 packets reached the agent, {down} of 50 the caller; caller got {:?}, agent got {:?}",
            self.rtp_caller.stats(),
            self.rtp_agent.stats()
        );
        Ok((
            self.rtp_caller.stats().sources.into_iter().collect(),
            self.rtp_agent.stats().sources.into_iter().collect(),
        ))
    }

    /// Both legs take the survivor's re-INVITE; returns (caller's re-INVITE, agent's).
    async fn take_reinvites(
        &mut self,
    ) -> anyhow::Result<(lingxi_tests::SipMsg, lingxi_tests::SipMsg)> {
        let (ra, rb) = tokio::join!(
            answer_reinvite(
                &mut self.caller,
                &mut self.leg_a,
                &self.rtp_caller,
                FAILOVER_WAIT
            ),
            answer_reinvite(
                &mut self.agent,
                &mut self.leg_b,
                &self.rtp_agent,
                FAILOVER_WAIT
            ),
        );
        Ok((ra.context("caller leg")?, rb.context("agent leg")?))
    }

    /// The caller hangs up (BYE to the Contact the last re-INVITE gave); the agent gets BYE.
    async fn hang_up(&mut self) -> anyhow::Result<()> {
        let r = self.caller.bye(&mut self.leg_a).await?;
        ensure!(r.status == Some(200), "BYE answered {}", r.raw);
        self.agent.wait_bye(&self.leg_b, WAIT).await?;
        Ok(())
    }
}

/// Every running node serves exactly one CDR for `call_id`; returns it.
async fn one_cdr_everywhere(cl: &mut Cluster, call_id: &str) -> anyhow::Result<Value> {
    let mut cdr = Value::Null;
    for i in cl.running() {
        let cdrs = cl.wait_cdrs(i, call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1,
            "{} serves {} CDRs for {call_id}: {cdrs:#?}",
            cl.name(i),
            cdrs.len()
        );
        cdr = cdrs[0].clone();
    }
    Ok(cdr)
}

/// The node (index) whose SIP socket sent `m`.
fn sender_node(cl: &Cluster, m: &lingxi_tests::SipMsg) -> Option<usize> {
    (0..cl.len()).find(|i| cl.sip(*i) == m.source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_killed_mid_call_survivor_resumes_both_legs() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = owner_killed_mid_call(&mut cl).await;
    cl.finish(r)
}

async fn owner_killed_mid_call(cl: &mut Cluster) -> anyhow::Result<()> {
    let (a, b) = (0, 1);
    let mut call = establish(cl, a, b, "1001").await?;
    let owner = cl.call_owner(a, &call.leg_a.call_id).await?;
    ensure!(
        owner.as_deref().is_none_or(|o| o == cl.name(b)),
        "a new call is owned by the node that took the INVITE ({}), the API says {owner:?}",
        cl.name(b)
    );
    let old = (call.leg_a.remote_rtp()?, call.leg_b.remote_rtp()?);
    ensure!(
        cl.rtp_owner(old.0) == Some(b) && cl.rtp_owner(old.1) == Some(b),
        "the owner relays the call: SDP addresses {old:?}, {} RTP range {:?}",
        cl.name(b),
        cl.nodes[b].rtp
    );
    call.assert_media("before the kill").await?;

    cl.kill(b);
    let killed_at = Instant::now();
    let (ia, ib) = call.take_reinvites().await?;
    eprintln!(
        "re-INVITEs answered {:?} after the SIGKILL",
        killed_at.elapsed()
    );
    for (leg, inv, d) in [("caller", &ia, &call.leg_a), ("agent", &ib, &call.leg_b)] {
        let from = sender_node(cl, inv);
        ensure!(
            from.is_some_and(|n| n != b),
            "the {leg} leg's re-INVITE came from {} (not a survivor's SIP socket)",
            inv.source
        );
        let new_rtp = d.remote_rtp()?;
        let relay = cl.rtp_owner(new_rtp);
        ensure!(
            relay.is_some_and(|n| n != b) && relay == from,
            "the {leg} leg's new SDP points at {new_rtp}: not the re-INVITing survivor's RTP range"
        );
        ensure!(
            d.target_addr == cl.sip(from.unwrap()),
            "the {leg} leg's new Contact {} is not the survivor's SIP address",
            d.remote_target
        );
    }
    ensure!(
        ib.cseq().0 > call.leg_b.invite_cseq,
        "the agent leg's re-INVITE CSeq {} is not above the switch's earlier {}",
        ib.cseq().0,
        call.leg_b.invite_cseq
    );
    ensure!(
        sender_node(cl, &ia) == sender_node(cl, &ib),
        "both legs are re-INVITEd by the one new owner"
    );
    let (src_c, src_a) = call.assert_media("after failover").await?;
    let new = (call.leg_a.remote_rtp()?, call.leg_b.remote_rtp()?);
    ensure!(
        src_c == HashSet::from([new.0]) && src_a == HashSet::from([new.1]),
        "after the re-INVITE, RTP comes only from the new owner: caller got from {src_c:?} (expected {}), agent from {src_a:?} (expected {})",
        new.0,
        new.1
    );
    call.hang_up().await?;
    let cdr = one_cdr_everywhere(cl, &call.leg_a.call_id).await?;
    ensure!(
        cdr["outcome"] == "failover.resumed" && cdr["failovers"].as_u64() >= Some(1),
        "CDR after a failover: {cdr:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_call_survives_owner_death_and_is_answered() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = queued_call_survives(&mut cl).await;
    cl.finish(r)
}

async fn queued_call_survives(cl: &mut Cluster) -> anyhow::Result<()> {
    let (a, b) = (0, 1);
    // Nobody logged in; the queue lets callers wait anyway (when_no_agents = false).
    let rtp_caller = Arc::new(Rtp::bind().await?);
    let mut caller = TestUa::new("bob", "", cl.sip(b)).await?;
    let mut leg_a = caller.call("8000", &rtp_caller).await?;
    rtp_caller
        .wait_any(20, WAIT)
        .await
        .context("hold music while queued")?;
    let old = leg_a.remote_rtp()?;
    ensure!(
        cl.rtp_owner(old) == Some(b),
        "queued call relayed by its owner"
    );

    cl.kill(b);
    let inv = answer_reinvite(&mut caller, &mut leg_a, &rtp_caller, FAILOVER_WAIT).await?;
    let new_owner = sender_node(cl, &inv);
    ensure!(
        new_owner.is_some_and(|n| n != b),
        "re-INVITE from {} is not a survivor's",
        inv.source
    );
    let new_rtp = leg_a.remote_rtp()?;
    ensure!(
        cl.rtp_owner(new_rtp) == new_owner,
        "new SDP {new_rtp} is the new owner's"
    );
    rtp_caller.reset();
    rtp_caller
        .wait_any(20, WAIT)
        .await
        .context("music after the failover")?;
    let sources = rtp_caller.stats().sources;
    ensure!(
        sources.iter().all(|s| cl.rtp_owner(*s) == new_owner),
        "music only from the new owner: {sources:?}"
    );

    // An agent logs in through A: the call is offered and answered.
    let mut agent = cl.agent_ua(a, "1002").await?;
    let rtp_agent = Arc::new(Rtp::bind().await?);
    let leg_b = agent.accept(&rtp_agent, FAILOVER_WAIT).await?;
    let (up, down) = exchange(
        &rtp_caller,
        leg_a.remote_rtp()?,
        &rtp_agent,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    ensure!(
        up >= 20 && down >= 20,
        "after the queued call was answered: {up} of 50 to the agent, {down} of 50 to the caller"
    );
    let mut call = Call {
        caller,
        leg_a,
        agent,
        leg_b,
        rtp_caller,
        rtp_agent,
    };
    call.hang_up().await?;
    let cdr = one_cdr_everywhere(cl, &call.leg_a.call_id).await?;
    ensure!(
        cdr["outcome"] == "failover.resumed" && cdr["agent"] == "1002",
        "CDR of a queued call answered after failover: {cdr:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_killed_mid_call_resumes_after_restart() -> anyhow::Result<()> {
    let mut cl = Cluster::single().await?;
    let r = single_node_restart(&mut cl).await;
    cl.finish(r)
}

async fn single_node_restart(cl: &mut Cluster) -> anyhow::Result<()> {
    let mut call = establish(cl, 0, 0, "1001").await?;
    call.assert_media("before the kill").await?;
    cl.kill(0);
    cl.restart(0).await?;
    let (ia, ib) = call.take_reinvites().await?;
    ensure!(
        ia.source == cl.sip(0) && ib.source == cl.sip(0),
        "re-INVITEs from the restarted node"
    );
    ensure!(
        ib.cseq().0 > call.leg_b.invite_cseq,
        "agent leg re-INVITE CSeq {} above {}",
        ib.cseq().0,
        call.leg_b.invite_cseq
    );
    call.assert_media("after the restart").await?;
    call.hang_up().await?;
    let cdrs = cl.wait_cdrs(0, &call.leg_a.call_id, WAIT).await?;
    ensure!(cdrs.len() == 1, "one CDR: {cdrs:#?}");
    eprintln!(
        "single node restart: CDR outcome {}, failovers {}",
        cdrs[0]["outcome"], cdrs[0]["failovers"]
    );
    ensure!(
        cdrs[0]["outcome"] == "failover.resumed" || cdrs[0]["outcome"] == "call.completed",
        "CDR after a restart: {:#}",
        cdrs[0]
    );
    Ok(())
}

/// One measurement of the failover audio gap: both sides talk continuously; the owner is
/// SIGKILLed; the gap on each leg is the time from the kill to the first packet of the other
/// side arriving from the new owner. Returns (caller leg, agent leg) gaps.
async fn measure_gap(cl: &mut Cluster, agent_id: &str) -> anyhow::Result<(Duration, Duration)> {
    let (a, b) = (0, 1);
    let mut call = establish(cl, a, b, agent_id).await?;
    let talk_c = Talker::start(call.rtp_caller.clone(), call.leg_a.remote_rtp()?);
    let talk_a = Talker::start(call.rtp_agent.clone(), call.leg_b.remote_rtp()?);
    call.rtp_caller
        .wait_from(call.rtp_agent.tag(), 10, WAIT)
        .await?;
    call.rtp_agent
        .wait_from(call.rtp_caller.tag(), 10, WAIT)
        .await?;
    let old_c: HashSet<SocketAddr> = call.rtp_caller.stats().sources.into_iter().collect();
    let old_a: HashSet<SocketAddr> = call.rtp_agent.stats().sources.into_iter().collect();
    cl.kill(b);
    let killed = Instant::now();
    call.rtp_caller.reset();
    call.rtp_agent.reset();
    let Call {
        caller,
        leg_a,
        agent,
        leg_b,
        rtp_caller,
        rtp_agent,
    } = &mut call;
    let (ra, rb) = tokio::join!(
        async {
            let r = answer_reinvite(caller, leg_a, rtp_caller, FAILOVER_WAIT).await?;
            talk_c.retarget(leg_a.remote_rtp()?);
            anyhow::Ok(r)
        },
        async {
            let r = answer_reinvite(agent, leg_b, rtp_agent, FAILOVER_WAIT).await?;
            talk_a.retarget(leg_b.remote_rtp()?);
            anyhow::Ok(r)
        }
    );
    let (ia, _ib) = (ra?, rb?);
    let reinvited = killed.elapsed();
    let (got_c, got_a) = tokio::join!(
        first_from_new_source(&call.rtp_caller, call.rtp_agent.tag(), &old_c, WAIT),
        first_from_new_source(&call.rtp_agent, call.rtp_caller.tag(), &old_a, WAIT),
    );
    let (gap_c, gap_a) = (got_c?.0 - killed, got_a?.0 - killed);
    eprintln!(
        "GAP caller_ms={} agent_ms={} reinvite_ms={} new_owner={:?}",
        gap_c.as_millis(),
        gap_a.as_millis(),
        reinvited.as_millis(),
        sender_node(cl, &ia).map(|i| cl.name(i).to_string())
    );
    drop((talk_c, talk_a));
    call.hang_up().await?;
    Ok((gap_c, gap_a))
}

/// Benchmark (run by bench/failover.sh): `FAILOVER_RUNS` (default 10) fresh 3-node clusters,
/// each killing the owner of a call in mid-conversation; prints every gap and the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/failover.sh runs it"]
async fn failover_gap() -> anyhow::Result<()> {
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let mut gaps = Vec::new();
    let mut failures = 0;
    for run in 0..runs {
        let mut cl = Cluster::start(3).await?;
        match measure_gap(&mut cl, "1001").await {
            Ok((c, a)) => {
                eprintln!("run {run}: caller leg {c:?}, agent leg {a:?}");
                gaps.push(c);
                gaps.push(a);
                for i in cl.running() {
                    for l in cl
                        .metrics(i, "lingxi_raft_commit_seconds")
                        .await
                        .unwrap_or_default()
                    {
                        eprintln!("METRIC run={run} node={} {l}", cl.name(i));
                    }
                }
            }
            Err(e) => {
                failures += 1;
                cl.print_logs();
                eprintln!("run {run} FAILED: {e:#}");
            }
        }
    }
    gaps.sort();
    let pct = |p: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0, |d| d.as_millis())
    };
    eprintln!(
        "SUMMARY runs={runs} failed={failures} legs={} median_ms={} p99_ms={} max_ms={}",
        gaps.len(),
        pct(0.5),
        pct(0.99),
        gaps.last().map_or(0, |d| d.as_millis())
    );
    ensure!(failures == 0, "{failures} of {runs} runs failed");
    Ok(())
}

/// Benchmark (run by bench/failover.sh): call set-up rate through consensus, a single node
/// against a 3-node cluster. `CALL_RATE_CONCURRENCY` (default 16) UAs, spread over the nodes,
/// call 8001 back to back for `CALL_RATE_SECS` (default 10): each attempt commits the call's
/// arrival before the node answers (480, nobody has the skill) and then its CDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/failover.sh runs it"]
async fn call_rate() -> anyhow::Result<()> {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("CALL_RATE_SECS", 10).clamp(1, 120);
    let conc = env("CALL_RATE_CONCURRENCY", 16).clamp(1, 200) as usize;
    for clustered in [false, true] {
        let cl = if clustered {
            Cluster::start(3).await?
        } else {
            Cluster::single().await?
        };
        let label = if clustered { "cluster3" } else { "single" };
        let n = cl.len();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for k in 0..conc {
            let sip = cl.sip(k % n);
            tasks.push(tokio::spawn(async move {
                let mut ua = TestUa::new(&format!("rate{k}"), "", sip).await?;
                let rtp = Rtp::bind().await?;
                let mut refused = 0u64;
                let mut other = std::collections::BTreeMap::<String, u64>::new();
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let out = ua.invite("8001", &rtp).await?;
                    if out.response.status == Some(480) {
                        refused += 1;
                        lat.push(t.elapsed());
                    } else {
                        let first = out.response.raw.lines().next().unwrap_or_default();
                        let status = first.trim_start_matches("SIP/2.0 ").replace(' ', "_");
                        *other.entry(status).or_default() += 1;
                    }
                }
                anyhow::Ok((refused, other, lat))
            }));
        }
        let (mut total, mut other_codes, mut lat) = (
            0u64,
            std::collections::BTreeMap::<String, u64>::new(),
            Vec::new(),
        );
        for t in tasks {
            let (r, o, l) = t.await??;
            total += r;
            for (code, n) in o {
                *other_codes.entry(code).or_default() += n;
            }
            lat.extend(l);
        }
        let other: u64 = other_codes.values().sum();
        let codes: Vec<String> = other_codes
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        let codes = if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(",")
        };
        let elapsed = started.elapsed().as_secs_f64();
        lat.sort();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        eprintln!(
            "RATE mode={label} concurrency={conc} secs={elapsed:.1} calls={total} other={other} cps={:.1} setup_p50_ms={:.1} setup_p99_ms={:.1} other_codes={codes}",
            total as f64 / elapsed,
            pct(0.5),
            pct(0.99)
        );
        for i in 0..n {
            for l in cl
                .metrics(i, "lingxi_raft_commit_seconds")
                .await
                .unwrap_or_default()
            {
                eprintln!("METRIC mode={label} node={} {l}", cl.name(i));
            }
        }
        if other > 0 {
            cl.print_logs();
        }
    }
    Ok(())
}

/// A node killed after the caller's hang-up committed but before the agent's phone answered
/// its BYE: the record still holds the agent's leg (the agent is offered nothing). Restarted,
/// the node finds it on the record, BYEs it again and frees the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_leg_left_up_by_a_killed_node_is_hung_up_after_its_restart() -> anyhow::Result<()>
{
    let mut cl = Cluster::single().await?;
    let r = async {
        let Call {
            mut caller,
            mut leg_a,
            mut agent,
            leg_b,
            ..
        } = establish(&cl, 0, 0, "1001").await?;
        let r = caller.bye(&mut leg_a).await?;
        ensure!(r.status == Some(200), "the caller's BYE: {}", r.raw);
        let cid = leg_b.call_id.clone();
        let is_bye = move |m: &lingxi_tests::SipMsg| m.is_request("BYE") && m.call_id() == cid;
        // The phone holds on: the BYE goes unanswered.
        let first = agent
            .wait_for("the BYE to the agent", WAIT, is_bye.clone())
            .await?;
        let held = cl.http_get(0, "/api/v1/agents/1001").await?.1;
        ensure!(
            held["leg_to_release"] == leg_a.call_id.as_str(),
            "the agent's leg on the record: {held}"
        );
        cl.kill(0);
        cl.restart(0).await?;
        let again = agent
            .wait_for("a BYE from the restarted node", FAILOVER_WAIT, move |m| {
                is_bye(m) && m.cseq().0 > first.cseq().0
            })
            .await?;
        agent.respond(&again, 200, "OK", &[], None).await?;
        lingxi_tests::wait_for("the agent's leg released", WAIT, || async {
            let (_, v) = cl.http_get(0, "/api/v1/agents/1001").await.ok()?;
            v["leg_to_release"].is_null().then_some(())
        })
        .await?;
        let cdrs = cl.wait_cdrs(0, &leg_a.call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1 && cdrs[0]["ended_by"] == "caller",
            "one CDR, ended by the caller: {cdrs:#?}"
        );
        Ok(())
    };
    let r = r.await;
    cl.finish(r)
}
