//! Hold and unhold by re-INVITE on either leg: the held side is sent nothing, the other side
//! hears music, the call is `held` in the API; unhold bridges the two again.

use lingxi_tests::msg::build_sdp;
use lingxi_tests::{Dialog, Rtp, TestNode, TestUa, WAIT, exchange};

/// A bridged call between caller `alice` and agent 1001.
async fn bridged(node: &TestNode) -> anyhow::Result<(TestUa, Dialog, Rtp, TestUa, Dialog, Rtp)> {
    let mut agent = node.agent_ua("1001").await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let (rtp_a, rtp_b) = (Rtp::bind().await?, Rtp::bind().await?);
    let leg_a = caller.call("support", &rtp_a).await?;
    let leg_b = agent.accept(&rtp_b, WAIT).await?;
    node.wait_agent_state("1001", "busy", WAIT).await?;
    Ok((caller, leg_a, rtp_a, agent, leg_b, rtp_b))
}

fn call_phase(calls: &serde_json::Value, call_id: &str) -> Option<String> {
    calls
        .as_array()?
        .iter()
        .find(|c| c["call_id"] == call_id)
        .and_then(|c| c["phase"].as_str().map(String::from))
}

async fn hold_and_resume(caller_holds: bool) -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (mut caller, mut leg_a, rtp_a, mut agent, mut leg_b, rtp_b) = bridged(&node).await?;
    let call_id = leg_a.call_id.clone();
    let (holder_ua, holder_leg, holder_rtp, other_rtp) = if caller_holds {
        (&mut caller, &mut leg_a, &rtp_a, &rtp_b)
    } else {
        (&mut agent, &mut leg_b, &rtp_b, &rtp_a)
    };

    // Hold: sendonly offer → the switch answers recvonly and stops sending to the holder.
    let hold_sdp =
        build_sdp(holder_rtp.local_addr(), &[0, 101]).replace("a=sendrecv", "a=sendonly");
    let r = holder_ua.reinvite(holder_leg, &hold_sdp).await?;
    assert_eq!(r.status, Some(200), "hold re-INVITE: {}", r.raw);
    let answer = r.sdp().expect("200 to re-INVITE carries SDP");
    assert_eq!(
        answer.direction, "recvonly",
        "answer to a sendonly offer: {}",
        r.raw
    );
    let mut phase = None;
    for _ in 0..100 {
        let (_, calls) = node.http_get("/api/v1/calls").await?;
        phase = call_phase(&calls, &call_id);
        if phase.as_deref() == Some("held") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(phase.as_deref(), Some("held"), "call phase while held");
    // The other side hears music (unmarked packets); the holder receives nothing.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    holder_rtp.reset();
    other_rtp.reset();
    other_rtp.wait_any(20, WAIT).await?;
    assert_eq!(
        other_rtp.stats().marked.values().sum::<u64>(),
        0,
        "music, not speech, while held"
    );
    assert_eq!(
        holder_rtp.stats().packets,
        0,
        "nothing is sent to the side that put the call on hold"
    );

    // Unhold: sendrecv again → bridged both ways.
    let resume_sdp = build_sdp(holder_rtp.local_addr(), &[0, 101]);
    let r = holder_ua.reinvite(holder_leg, &resume_sdp).await?;
    assert_eq!(r.status, Some(200), "unhold re-INVITE: {}", r.raw);
    assert_eq!(r.sdp().expect("SDP").direction, "sendrecv");
    let (to_b, to_a) = exchange(
        &rtp_a,
        leg_a.remote_rtp()?,
        &rtp_b,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    assert!(
        to_b >= 20 && to_a >= 20,
        "after unhold: {to_b} to agent, {to_a} to caller of 50"
    );

    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200));
    agent.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_holds_and_resumes() -> anyhow::Result<()> {
    hold_and_resume(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_holds_and_resumes() -> anyhow::Result<()> {
    hold_and_resume(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cseq_in_dialog_is_refused() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (mut caller, mut leg_a, rtp_a, mut agent, leg_b, _rtp_b) = bridged(&node).await?;
    // Re-use an old CSeq: RFC 3261 §12.2.2 says 500.
    leg_a.local_cseq = 0;
    let sdp = build_sdp(rtp_a.local_addr(), &[0, 101]);
    let r = caller.reinvite(&mut leg_a, &sdp).await?;
    assert_eq!(r.status, Some(500), "re-INVITE with an old CSeq: {}", r.raw);
    leg_a.local_cseq = 10;
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(
        r.status,
        Some(200),
        "BYE after the refused re-INVITE: {}",
        r.raw
    );
    agent.wait_bye(&leg_b, WAIT).await?;
    Ok(())
}
