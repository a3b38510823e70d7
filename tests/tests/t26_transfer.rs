//! Blind transfer by REFER on the agent's leg (RFC 3515): to another queue, to another agent,
//! and refused transfers that leave the call as it was. One CDR names the agents.

use lingxi_config::QueueConfig;
use lingxi_tests::node::{agent, standard_config};
use lingxi_tests::{Dialog, Rtp, TestNode, TestUa, WAIT, exchange};

/// Queue `support` (8000) and `cards` (8100), agents 1001–1003.
async fn node() -> anyhow::Result<TestNode> {
    let mut c = standard_config();
    c.queues.push(QueueConfig {
        id: "cards".into(),
        extensions: vec!["8100".into()],
        skill: "support".into(),
        ..Default::default()
    });
    c.agents.push(agent("1003"));
    TestNode::start(c).await
}

/// Audio flows both ways between the caller and whoever holds `leg_b`.
async fn talks(leg_a: &Dialog, rtp_a: &Rtp, leg_b: &Dialog, rtp_b: &Rtp) -> anyhow::Result<()> {
    let (to_b, to_a) = exchange(
        rtp_a,
        leg_a.remote_rtp()?,
        rtp_b,
        leg_b.remote_rtp()?,
        50,
        45,
        WAIT,
    )
    .await?;
    assert!(
        to_b >= 20 && to_a >= 20,
        "{to_b} packets to the agent, {to_a} to the caller, of 50"
    );
    Ok(())
}

/// The transferring agent's phone: 202 to its REFER, then NOTIFY (sipfrag 200) and BYE.
async fn transferred_away(
    agent: &mut TestUa,
    leg: &mut Dialog,
    target: &str,
) -> anyhow::Result<()> {
    let r = agent.refer(leg, target).await?;
    assert_eq!(r.status, Some(202), "REFER to {target}: {}", r.raw);
    let notify = agent.wait_request("NOTIFY", WAIT).await?;
    assert!(
        String::from_utf8_lossy(&notify.body).starts_with("SIP/2.0 200"),
        "NOTIFY body: {}",
        notify.raw
    );
    assert_eq!(notify.header("event"), Some("refer"), "{}", notify.raw);
    agent.respond(&notify, 200, "OK", &[], None).await?;
    agent.wait_bye(leg, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_another_queue_reaches_its_agent() -> anyhow::Result<()> {
    let node = node().await?;
    let mut a1 = node.agent_ua("1001").await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let (rtp_a, rtp_1, rtp_2) = (Rtp::bind().await?, Rtp::bind().await?, Rtp::bind().await?);
    let leg_a = caller.call("support", &rtp_a).await?;
    let mut leg_1 = a1.accept(&rtp_1, WAIT).await?;
    talks(&leg_a, &rtp_a, &leg_1, &rtp_1).await?;
    // 1002 logs in only now, so the queue can only give the call to it.
    let mut a2 = node.agent_ua("1002").await?;

    transferred_away(&mut a1, &mut leg_1, "sip:8100@lingxi.local").await?;
    let invite = a2.wait_invite(WAIT).await?;
    assert_eq!(
        invite.header("x-lingxi-queue"),
        Some("cards"),
        "{}",
        invite.raw
    );
    a2.ring(&invite).await?;
    let leg_2 = a2.answer(&invite, &rtp_2).await?;
    a2.wait_ack(&leg_2, WAIT).await?;
    node.wait_agent_state("1002", "busy", WAIT).await?;
    talks(&leg_a, &rtp_a, &leg_2, &rtp_2).await?;
    // The first agent wrapped up (1 s) and is ready again.
    node.wait_agent_state("1001", "ready", WAIT).await?;

    let mut leg_a = leg_a;
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200));
    a2.wait_bye(&leg_2, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    assert_eq!(cdr["queue"], "cards", "{cdr}");
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["transfers"][0]["from_agent"], "1001", "{cdr}");
    assert_eq!(cdr["transfers"][0]["to"]["queue"], "cards", "{cdr}");
    assert_eq!(node.cdrs().await?.len(), 1, "one CDR for the call");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_an_agent_and_refusals() -> anyhow::Result<()> {
    let node = node().await?;
    let mut a1 = node.agent_ua("1001").await?;
    let mut caller = TestUa::new("bob", "", node.sip).await?;
    let (rtp_a, rtp_1, rtp_3) = (Rtp::bind().await?, Rtp::bind().await?, Rtp::bind().await?);
    let mut leg_a = caller.call("8000", &rtp_a).await?;
    let mut leg_1 = a1.accept(&rtp_1, WAIT).await?;

    // Refused: nobody by that name; an agent who is not logged in. The call carries on.
    let r = a1.refer(&mut leg_1, "sip:9999@lingxi.local").await?;
    assert_eq!(r.status, Some(404), "{}", r.raw);
    let r = a1.refer(&mut leg_1, "sip:1003@lingxi.local").await?;
    assert_eq!(r.status, Some(480), "{}", r.raw);
    // Only the agent may transfer.
    let r = caller.refer(&mut leg_a, "sip:1003@lingxi.local").await?;
    assert_eq!(r.status, Some(403), "{}", r.raw);
    talks(&leg_a, &rtp_a, &leg_1, &rtp_1).await?;

    let mut a3 = node.agent_ua("1003").await?;
    transferred_away(&mut a1, &mut leg_1, "sip:1003@lingxi.local").await?;
    let leg_3 = a3.accept(&rtp_3, WAIT).await?;
    talks(&leg_a, &rtp_a, &leg_3, &rtp_3).await?;
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200));
    a3.wait_bye(&leg_3, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["agent"], "1003", "{cdr}");
    assert_eq!(cdr["transfers"][0]["to"]["agent"], "1003", "{cdr}");
    assert_eq!(cdr["transfers"].as_array().map(Vec::len), Some(1), "{cdr}");
    Ok(())
}
