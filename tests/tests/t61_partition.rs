//! A node cut off from the majority (all its Raft traffic dropped by the harness's proxies)
//! stops serving its calls and refuses new ones with 503; the majority resumes its calls;
//! no call is relayed by two nodes at once; after the cut heals the node rejoins and takes
//! new calls again. A node cut off briefly (not declared dead) takes its own calls back, even
//! when it is cut off again while it re-INVITEs their legs.
//!
//! Needs the binary: `cargo build -p lingxi-node` (./test.sh does it).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use lingxi_tests::cluster::{
    Cluster, ClusterCall, FAILOVER_WAIT, Talker, accept_reinvite, answer_reinvite,
    first_from_new_source, view_leader, wait_reinvite,
};
use lingxi_tests::{Dialog, Rtp, TestUa, WAIT, exchange};

/// The node (index) whose SIP socket sent `m`.
fn sender_node(cl: &Cluster, m: &lingxi_tests::SipMsg) -> Option<usize> {
    (0..cl.len()).find(|i| cl.sip(*i) == m.source)
}

/// Index of the current leader as node 0 sees it.
async fn leader_index(cl: &Cluster) -> anyhow::Result<usize> {
    let v = cl.cluster_view(0).await?;
    let leader = view_leader(&v).context("no leader in the view")?;
    if let Some(i) = cl.index_of(&leader) {
        return Ok(i);
    }
    // A raft id: n<id>.
    cl.index_of(&format!("n{leader}"))
        .with_context(|| format!("leader {leader} is not one of ours: {v:#}"))
}

/// Exchanges 50 packets each way; at least 20 must cross each way. Returns the sources
/// each side received from.
async fn media(
    what: &str,
    rtp_c: &Rtp,
    leg_a: &Dialog,
    rtp_a: &Rtp,
    leg_b: &Dialog,
) -> anyhow::Result<(HashSet<SocketAddr>, HashSet<SocketAddr>)> {
    rtp_c.reset();
    rtp_a.reset();
    let (up, down) = exchange(
        rtp_c,
        leg_a.remote_rtp()?,
        rtp_a,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    ensure!(
        up >= 20 && down >= 20,
        "{what}: {up} of 50 to the agent, {down} of 50 to the caller"
    );
    Ok((
        rtp_c.stats().sources.into_iter().collect(),
        rtp_a.stats().sources.into_iter().collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_follower_owner_is_fenced_and_its_call_moves() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = async {
        let leader = leader_index(&cl).await?;
        let owner = (0..3).find(|i| *i != leader).expect("a follower");
        partition(&mut cl, owner).await
    }
    .await;
    cl.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_leader_owner_is_fenced_and_its_call_moves() -> anyhow::Result<()> {
    let mut cl = Cluster::start(3).await?;
    let r = async {
        let leader = leader_index(&cl).await?;
        partition(&mut cl, leader).await
    }
    .await;
    cl.finish(r)
}

/// A call owned by node `b` (the caller calls through it; the agent registered through
/// another node); `b` is cut off while both sides talk.
async fn partition(cl: &mut Cluster, b: usize) -> anyhow::Result<()> {
    let a = (b + 1) % 3;
    let c = (b + 2) % 3;
    eprintln!("owner and cut-off node: {}", cl.name(b));
    let mut agent = cl.agent_ua(a, "1001").await?;
    cl.wait_agent_state(b, "1001", "ready", WAIT).await?;
    let (rtp_c, rtp_a) = (Arc::new(Rtp::bind().await?), Arc::new(Rtp::bind().await?));
    let mut caller = TestUa::new("carol", "", cl.sip(b)).await?;
    let mut leg_a = caller.call("8000", &rtp_c).await?;
    let mut leg_b = agent.accept(&rtp_a, WAIT).await?;
    let old = (leg_a.remote_rtp()?, leg_b.remote_rtp()?);
    ensure!(
        cl.rtp_owner(old.0) == Some(b) && cl.rtp_owner(old.1) == Some(b),
        "{} relays the call it took",
        cl.name(b)
    );
    media("before the cut", &rtp_c, &leg_a, &rtp_a, &leg_b).await?;

    // Both sides talk to the old owner from now on, and keep doing so even after the
    // re-INVITE (stale talkers): a node that still relayed would show up.
    let _stale_c = Talker::start(rtp_c.clone(), old.0);
    let _stale_a = Talker::start(rtp_a.clone(), old.1);
    let old_sources_c: HashSet<SocketAddr> = HashSet::from([old.0]);
    let old_sources_a: HashSet<SocketAddr> = HashSet::from([old.1]);
    cl.cut(b);
    let (ra, rb) = tokio::join!(
        answer_reinvite(&mut caller, &mut leg_a, &rtp_c, FAILOVER_WAIT),
        answer_reinvite(&mut agent, &mut leg_b, &rtp_a, FAILOVER_WAIT),
    );
    let (ia, ib) = (ra.context("caller leg")?, rb.context("agent leg")?);
    let new_owner = sender_node(cl, &ia);
    ensure!(
        new_owner.is_some_and(|n| n != b) && sender_node(cl, &ib) == new_owner,
        "both re-INVITEs from one node of the majority: {} and {}",
        ia.source,
        ib.source
    );
    let new = (leg_a.remote_rtp()?, leg_b.remote_rtp()?);
    ensure!(
        cl.rtp_owner(new.0) == new_owner && cl.rtp_owner(new.1) == new_owner,
        "new SDP addresses {new:?} belong to the new owner"
    );
    // Talk to the new owner as well; the first packet relayed by it marks the hand-over.
    let _talk_c = Talker::start(rtp_c.clone(), new.0);
    let _talk_a = Talker::start(rtp_a.clone(), new.1);
    first_from_new_source(&rtp_c, rtp_a.tag(), &old_sources_c, WAIT).await?;
    first_from_new_source(&rtp_a, rtp_c.tag(), &old_sources_a, WAIT).await?;
    // From the hand-over on, nothing comes from the cut-off node although RTP still reaches it.
    rtp_c.reset();
    rtp_a.reset();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (sc, sa) = (rtp_c.stats(), rtp_a.stats());
    ensure!(
        sc.sources.iter().all(|s| cl.rtp_owner(*s) == new_owner)
            && sa.sources.iter().all(|s| cl.rtp_owner(*s) == new_owner),
        "after the hand-over both legs hear only the new owner {:?}: caller heard {:?}, agent heard {:?}",
        new_owner.map(|i| cl.name(i).to_string()),
        sc.sources,
        sa.sources
    );
    ensure!(
        sc.from_tag(rtp_a.tag()) > 20 && sa.from_tag(rtp_c.tag()) > 20,
        "the conversation goes on through the new owner: {sc:?} / {sa:?}"
    );
    drop((_stale_c, _stale_a, _talk_c, _talk_a));

    // The cut-off node says it is not healthy and refuses new calls with 503.
    cl.wait_healthy(b, false, FAILOVER_WAIT).await?;
    let rtp_x = Rtp::bind().await?;
    let mut refused = TestUa::new("dave", "", cl.sip(b)).await?;
    let out = refused.invite("8000", &rtp_x).await?;
    ensure!(
        out.response.status == Some(503),
        "a cut-off node answers a new INVITE with 503, got {}",
        out.response.raw
    );
    // The majority sees it dead.
    cl.wait_member(c, cl.name(b), false, FAILOVER_WAIT).await?;

    // Heal: the node rejoins, announces itself, and serves again.
    cl.heal(b);
    cl.wait_member(a, cl.name(b), true, FAILOVER_WAIT).await?;
    cl.wait_member(b, cl.name(b), true, FAILOVER_WAIT).await?;
    cl.wait_ready(&[0, 1, 2], FAILOVER_WAIT).await?;
    // It does not take the moved call back.
    caller
        .expect_no_request("INVITE", Duration::from_secs(1))
        .await
        .context("caller leg after the heal")?;
    agent
        .expect_no_request("INVITE", Duration::from_secs(1))
        .await
        .context("agent leg after the heal")?;
    media("after the heal", &rtp_c, &leg_a, &rtp_a, &leg_b).await?;

    // A new call through the healed node, answered by another agent.
    let mut agent2 = cl.agent_ua(c, "1002").await?;
    let (rtp_c2, rtp_a2) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller2 = TestUa::new("erin", "", cl.sip(b)).await?;
    let mut leg_a2 = caller2
        .call("8000", &rtp_c2)
        .await
        .context("a new call through the healed node")?;
    let leg_b2 = agent2.accept(&rtp_a2, WAIT).await?;
    ensure!(
        cl.rtp_owner(leg_a2.remote_rtp()?) == Some(b),
        "the healed node owns and relays the call it took"
    );
    media(
        "new call via the healed node",
        &rtp_c2,
        &leg_a2,
        &rtp_a2,
        &leg_b2,
    )
    .await?;
    let r = caller2.bye(&mut leg_a2).await?;
    ensure!(r.status == Some(200), "{}", r.raw);
    agent2.wait_bye(&leg_b2, WAIT).await?;

    // The moved call ends through its new owner: one CDR, on every node (the healed one too).
    let r = caller.bye(&mut leg_a).await?;
    ensure!(r.status == Some(200), "BYE answered {}", r.raw);
    agent.wait_bye(&leg_b, WAIT).await?;
    for i in 0..3 {
        let cdrs = cl.wait_cdrs(i, &leg_a.call_id, WAIT).await?;
        ensure!(
            cdrs.len() == 1 && cdrs[0]["outcome"] == "failover.resumed",
            "{}: CDRs of the moved call: {cdrs:#?}",
            cl.name(i)
        );
    }
    Ok(())
}

/// A follower owns a call and is cut off twice, each time for less than the failure detection
/// (so nobody takes its call over): after the first cut it takes the call back with a
/// re-INVITE to each leg; the second cut comes while those re-INVITEs wait for their answers.
/// The fence reaches the call's actor only once the node is back and the answers came: the
/// call is still the node's own, so it must carry on (found by the chaos suite: the actor
/// stopped, nobody resumed the call, the caller heard silence and got 481 to BYE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_cut_off_again_while_taking_back_its_call_keeps_it() -> anyhow::Result<()> {
    cut_twice(false).await
}

/// As above, but the legs answer while the node is still cut off: it cannot store the new
/// dialogs, gives the attempt up without ending the call (found by the chaos suite: it hung
/// up, `failover.failed`), and takes the call back again once in touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_cut_off_while_storing_a_taken_back_call_tries_again() -> anyhow::Result<()> {
    cut_twice(true).await
}

async fn cut_twice(answer_while_cut: bool) -> anyhow::Result<()> {
    let cl = Cluster::start_with_detection(3, Duration::from_secs(120)).await?;
    let r = async {
        let leader = leader_index(&cl).await?;
        let b = (0..3).find(|i| *i != leader).expect("a follower");
        eprintln!("owner and cut-off node: {}", cl.name(b));
        let mut call = ClusterCall::establish(&cl, leader, b, "1001", "carol").await?;
        ensure!(
            cl.rtp_owner(call.leg_a.remote_rtp()?) == Some(b),
            "{} relays the call it took",
            cl.name(b)
        );
        call.assert_media("before the cuts").await?;

        cl.cut(b);
        cl.wait_healthy(b, false, FAILOVER_WAIT).await?;
        cl.heal(b);
        // Back in touch, the node takes its call back: a re-INVITE to each leg, held here.
        let inv_a = wait_reinvite(&mut call.caller, &call.leg_a, FAILOVER_WAIT)
            .await
            .context("caller leg, after the first cut")?;
        let inv_b = wait_reinvite(&mut call.agent, &call.leg_b, FAILOVER_WAIT)
            .await
            .context("agent leg, after the first cut")?;
        ensure!(
            sender_node(&cl, &inv_a) == Some(b) && sender_node(&cl, &inv_b) == Some(b),
            "the owner takes its call back: re-INVITEs from {} and {}",
            inv_a.source,
            inv_b.source
        );
        cl.cut(b);
        cl.wait_healthy(b, false, FAILOVER_WAIT).await?;
        if !answer_while_cut {
            cl.heal(b);
            cl.wait_healthy(b, true, FAILOVER_WAIT).await?;
        }
        accept_reinvite(&mut call.caller, &mut call.leg_a, &call.rtp_c, inv_a, WAIT)
            .await
            .context("caller leg")?;
        accept_reinvite(&mut call.agent, &mut call.leg_b, &call.rtp_a, inv_b, WAIT)
            .await
            .context("agent leg")?;
        if answer_while_cut {
            lingxi_tests::wait_for(
                "the cut-off owner to give its attempt up",
                FAILOVER_WAIT,
                || async {
                    (!cl.log_lines(b, "resuming cut short by a fence").is_empty()).then_some(())
                },
            )
            .await?;
            cl.heal(b);
            let (ia, ib) = call
                .answer_reinvites(FAILOVER_WAIT)
                .await
                .context("taken back again")?;
            ensure!(
                sender_node(&cl, &ia) == Some(b) && sender_node(&cl, &ib) == Some(b),
                "the owner takes its call back again: re-INVITEs from {} and {}",
                ia.source,
                ib.source
            );
        } else {
            // Once resumed, the actor reads the fence that waited in its mailbox.
            lingxi_tests::wait_for("the resumed call to read its fence", WAIT, || async {
                (!cl.log_lines(b, "the fence passed while this call was busy")
                    .is_empty()
                    || !cl.log_lines(b, "fenced: call stopped here").is_empty())
                .then_some(())
            })
            .await?;
        }
        ensure!(
            cl.rtp_owner(call.leg_a.remote_rtp()?) == Some(b)
                && cl.rtp_owner(call.leg_b.remote_rtp()?) == Some(b),
            "the owner relays the call again"
        );
        call.assert_media("after the second cut").await?;
        let owner = cl.call_owner(leader, &call.leg_a.call_id).await?;
        ensure!(
            owner.as_deref() == Some(cl.name(b)),
            "the call is still {}'s: {owner:?}",
            cl.name(b)
        );
        let call_id = call.leg_a.call_id.clone();
        call.hang_up().await?;
        for i in 0..3 {
            let cdrs = cl.wait_cdrs(i, &call_id, WAIT).await?;
            ensure!(
                cdrs.len() == 1 && cdrs[0]["ended_by"] == "caller",
                "{}: one CDR, ended by the caller: {cdrs:#?}",
                cl.name(i)
            );
        }
        Ok(())
    }
    .await;
    cl.finish(r)
}

/// A call whose owner (a follower; the agent registered at the leader) is cut off; the
/// caller's BYE to it is answered 503 with Retry-After. Returns the call and the cut node.
async fn bye_to_a_cut_off_owner(cl: &Cluster) -> anyhow::Result<(ClusterCall, usize)> {
    let leader = leader_index(cl).await?;
    let b = (0..3).find(|i| *i != leader).expect("a follower");
    eprintln!("owner and cut-off node: {}", cl.name(b));
    let mut call = ClusterCall::establish(cl, leader, b, "1001", "carol").await?;
    call.assert_media("before the cut").await?;
    cl.cut(b);
    cl.wait_healthy(b, false, FAILOVER_WAIT).await?;
    let r = call.caller.bye(&mut call.leg_a).await?;
    ensure!(
        r.status == Some(503) && r.header("Retry-After").is_some(),
        "BYE to the cut-off owner: {}",
        r.raw
    );
    Ok((call, b))
}

/// The caller hangs up while its call's owner is cut off. The owner cannot put the end on
/// the record, so it answers 503 (Retry-After) instead of 200: it used to answer 200 and
/// forget the hang-up, and the majority resumed a call nobody was on any more (found by the
/// chaos suite: `failover.failed` CDRs for calls the caller had ended). The retry, once the
/// majority has resumed the call, ends it there: the agent gets its BYE, and every node one
/// CDR, ended by the caller, `failover.resumed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hanging_up_on_a_cut_off_owner_is_asked_to_retry() -> anyhow::Result<()> {
    let cl = Cluster::start(3).await?;
    let r = async {
        let (mut call, b) = bye_to_a_cut_off_owner(&cl).await?;
        let call_id = call.leg_a.call_id.clone();
        let (ia, ib) = call.answer_reinvites(FAILOVER_WAIT).await?;
        let owner = sender_node(&cl, &ia);
        ensure!(
            owner.is_some_and(|n| n != b) && sender_node(&cl, &ib) == owner,
            "the majority resumes the call the caller is leaving: {} and {}",
            ia.source,
            ib.source
        );
        call.hang_up().await.context("the caller's BYE, again")?;
        for i in (0..3).filter(|i| *i != b) {
            let cdrs = cl.wait_cdrs(i, &call_id, WAIT).await?;
            ensure!(
                cdrs.len() == 1
                    && cdrs[0]["ended_by"] == "caller"
                    && cdrs[0]["outcome"] == "failover.resumed",
                "{}: one CDR, the caller's hang-up after a move: {cdrs:#?}",
                cl.name(i)
            );
        }
        cl.heal(b);
        Ok(())
    }
    .await;
    cl.finish(r)
}

/// A phone told 503 for its BYE may give up (RFC 3261 §15.1.1 lets it consider the call
/// over): when the majority resumes the call, that phone answers the re-INVITE 481. That is
/// the caller's hang-up, not a failed failover: one CDR ended by the caller, the agent's leg
/// hung up and the agent free to take calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_by_the_resuming_re_invite_has_hung_up() -> anyhow::Result<()> {
    let cl = Cluster::start(3).await?;
    let r = async {
        let (mut call, b) = bye_to_a_cut_off_owner(&cl).await?;
        let call_id = call.leg_a.call_id.clone();
        // The caller does not try again, and no longer knows the dialog.
        let (inv_a, inv_b) = tokio::join!(
            wait_reinvite(&mut call.caller, &call.leg_a, FAILOVER_WAIT),
            wait_reinvite(&mut call.agent, &call.leg_b, FAILOVER_WAIT),
        );
        let (inv_a, inv_b) = (inv_a.context("caller leg")?, inv_b.context("agent leg")?);
        call.caller
            .respond(&inv_a, 481, "Call/Transaction Does Not Exist", &[], None)
            .await?;
        accept_reinvite(&mut call.agent, &mut call.leg_b, &call.rtp_a, inv_b, WAIT).await?;
        call.agent.wait_bye(&call.leg_b, WAIT).await?;
        let owner = sender_node(&cl, &inv_a).context("the re-INVITE's node")?;
        for i in (0..3).filter(|i| *i != b) {
            let cdrs = cl.wait_cdrs(i, &call_id, WAIT).await?;
            ensure!(
                cdrs.len() == 1
                    && cdrs[0]["ended_by"] == "caller"
                    && cdrs[0]["outcome"] == "failover.resumed",
                "{}: one CDR, the caller's hang-up read from its 481: {cdrs:#?}",
                cl.name(i)
            );
        }
        // The agent's BYE was answered: its leg is released and it may take calls again.
        let released = lingxi_tests::wait_for("the agent's leg released", WAIT, || async {
            let (_, v) = cl.http_get(owner, "/api/v1/agents/1001").await.ok()?;
            (v["state"] == "ready" && v["leg_to_release"].is_null()).then_some(())
        })
        .await;
        released.with_context(|| format!("agent 1001 on {}", cl.name(owner)))?;
        cl.heal(b);
        Ok(())
    }
    .await;
    cl.finish(r)
}
