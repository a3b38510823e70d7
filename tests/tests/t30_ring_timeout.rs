//! An agent who does not answer: the switch CANCELs after the ring timeout, offers the call
//! to the next agent, and puts the first one in not_ready.

use std::time::Duration;

use lingxi_tests::{Rtp, TestNode, TestUa, WAIT, standard_config};

/// Registers 1001 then 1002, so 1001 has been idle longest and is offered first.
async fn two_agents(node: &TestNode) -> anyhow::Result<(TestUa, TestUa)> {
    let a1 = node.agent_ua("1001").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a2 = node.agent_ua("1002").await?;
    Ok((a1, a2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offer_moves_to_the_next_agent() -> anyhow::Result<()> {
    let mut config = standard_config();
    config.acd.ring_timeout_secs = 2;
    let node = TestNode::start(config).await?;
    let (mut a1, mut a2) = two_agents(&node).await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;

    // 1001 rings but never answers.
    let invite1 = a1.wait_invite(WAIT).await?;
    a1.ring(&invite1).await?;
    let cancel = a1.wait_cancel(WAIT).await?;
    assert_eq!(
        cancel.call_id(),
        invite1.call_id(),
        "CANCEL for another INVITE: {}",
        cancel.raw
    );
    assert_eq!(
        cancel.cseq().0,
        invite1.cseq().0,
        "CANCEL CSeq differs from the INVITE's: {}",
        cancel.raw
    );
    // The switch ACKs our 487.
    let branch = invite1.branch();
    a1.wait_for("ACK for the 487", WAIT, move |m| {
        m.is_request("ACK") && m.branch() == branch
    })
    .await?;

    let a1_state = node.wait_agent_state("1001", "not_ready", WAIT).await?;
    assert_eq!(
        a1_state["reason"], "agent.no_answer",
        "agent 1001: {a1_state}"
    );

    // 1002 is offered the call and answers; media flows.
    let leg_b = a2.accept(&rtp_agent, WAIT).await?;
    let (to_agent, to_caller) = lingxi_tests::exchange(
        &rtp_caller,
        leg_a.remote_rtp()?,
        &rtp_agent,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    assert!(
        to_agent >= 20 && to_caller >= 20,
        "RTP after re-offer: {to_agent} to agent, {to_caller} to caller"
    );
    // 1001 is not offered anything else.
    a1.expect_no_request("INVITE", Duration::from_millis(300))
        .await?;

    caller.bye(&mut leg_a).await?;
    a2.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    assert_eq!(cdr["offers"], 2, "{cdr}");
    assert_eq!(node.agent_state("1001").await?, "not_ready");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agent_is_skipped() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (mut a1, mut a2) = two_agents(&node).await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;

    let invite1 = a1.wait_invite(WAIT).await?;
    a1.reject(&invite1, 486, WAIT).await?;
    let leg_b = a2.accept(&rtp_agent, WAIT).await?;
    let a1_state = node.wait_agent_state("1001", "not_ready", WAIT).await?;
    assert_eq!(a1_state["reason"], "agent.busy", "agent 1001: {a1_state}");

    a2.bye(&mut leg_b.clone()).await?;
    caller.wait_bye(&leg_a, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    assert_eq!(cdr["ended_by"], "agent", "{cdr}");
    // The caller's dialog is over: a BYE now gets 481.
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(481), "BYE after the call ended: {}", r.raw);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_agent_made_ready_again_gets_calls() -> anyhow::Result<()> {
    let mut config = standard_config();
    config.acd.ring_timeout_secs = 2;
    let node = TestNode::start(config).await?;
    let mut a1 = node.agent_ua("1001").await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;
    let invite = a1.wait_invite(WAIT).await?;
    a1.ring(&invite).await?;
    a1.wait_cancel(WAIT).await?;
    node.wait_agent_state("1001", "not_ready", WAIT).await?;
    // The caller waits in the queue until the agent is made ready by hand.
    node.wait_queue_depth("support", 1, WAIT).await?;
    let (s, v) = node
        .http_put(
            "/api/v1/agents/1001/state",
            &serde_json::json!({"state": "ready"}),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let leg_b = a1.accept(&rtp_agent, WAIT).await?;
    caller.bye(&mut leg_a).await?;
    a1.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["offers"], 2, "{cdr}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_crossing_the_cancel_is_acked_and_hung_up() -> anyhow::Result<()> {
    // 1001 answers just as the ring timeout CANCELs it: its 200 OK crosses the CANCEL. The
    // switch must ACK that 200 and BYE it (the call already went back to the queue), and the
    // call goes to 1002.
    let mut config = standard_config();
    config.acd.ring_timeout_secs = 2;
    let node = TestNode::start(config).await?;
    let (mut a1, mut a2) = two_agents(&node).await?;
    let (rtp_caller, rtp1, rtp2) = (Rtp::bind().await?, Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;

    let invite = a1.wait_invite(WAIT).await?;
    a1.ring(&invite).await?;
    let cancel = a1.wait_request("CANCEL", WAIT).await?;
    // Too late to stop the phone: it answers, then says the CANCEL changed nothing.
    let late = a1.answer(&invite, &rtp1).await?;
    a1.respond(&cancel, 200, "OK", &[], None).await?;
    a1.wait_ack(&late, WAIT).await?;
    a1.wait_bye(&late, WAIT).await?;

    let leg_b = a2.accept(&rtp2, WAIT).await?;
    let (up, down) = lingxi_tests::exchange(
        &rtp_caller,
        leg_a.remote_rtp()?,
        &rtp2,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    assert!(up >= 20 && down >= 20, "{up} up, {down} down");
    assert_eq!(
        rtp1.stats().from_tag(rtp_caller.tag()),
        0,
        "the late-answering phone got the caller's audio"
    );
    caller.bye(&mut leg_a).await?;
    a2.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    node.shutdown().await;
    Ok(())
}
