//! A call through the queue: the caller is answered and hears music, the agent is rung and
//! answers, RTP crosses the switch both ways, either side hangs up, the CDR is written and the
//! agent wraps up and becomes ready again.

use std::time::Duration;

use lingxi_tests::{Dialog, Rtp, TestNode, TestUa, WAIT, exchange};

/// Which side hangs up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HangUp {
    Caller,
    Agent,
}

/// One full call to `dialled`, answered by agent 1001, ended by `who`; over TCP when `tcp`.
async fn full_call(dialled: &str, who: HangUp, tcp: bool) -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (mut agent, mut caller) = if tcp {
        let tcp_addr = node
            .node()
            .sip_tcp_addr()
            .ok_or_else(|| anyhow::anyhow!("no SIP TCP listener"))?;
        let mut agent = TestUa::new_tcp("1001", "pass1001", tcp_addr).await?;
        let r = agent.register().await?;
        assert_eq!(r.status, Some(200), "REGISTER over TCP: {}", r.raw);
        let a = node.wait_agent_state("1001", "ready", WAIT).await?;
        assert_eq!(
            a["registered"]["transport"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("tcp"),
            "{a}"
        );
        (agent, TestUa::new_tcp("alice", "", tcp_addr).await?)
    } else {
        (
            node.agent_ua("1001").await?,
            TestUa::new("alice", "", node.sip).await?,
        )
    };
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);

    let out = caller.invite(dialled, &rtp_caller).await?;
    assert_eq!(
        out.response.status,
        Some(200),
        "INVITE {dialled}: {}",
        out.response.raw
    );
    let mut leg_a: Dialog = out.dialog.expect("2xx makes a dialog");
    let sdp = leg_a.remote_sdp.clone().expect("200 OK carries SDP");
    assert_eq!(
        sdp.addr.ip().to_string(),
        "127.0.0.1",
        "answer SDP: {sdp:?}"
    );
    assert_eq!(
        sdp.encoding(sdp.payload_types[0]).as_deref(),
        Some("PCMU"),
        "answer SDP: {sdp:?}"
    );

    // The switch INVITEs the agent at the address it registered from, offering SDP.
    let invite = agent.wait_invite(WAIT).await?;
    assert!(
        invite.sdp().is_some(),
        "INVITE to the agent without SDP: {}",
        invite.raw
    );
    // While the phone rings, the caller hears music.
    rtp_caller.wait_any(10, WAIT).await?;
    agent.ring(&invite).await?;
    let mut leg_b = agent.answer(&invite, &rtp_agent).await?;
    agent.wait_ack(&leg_b, WAIT).await?;
    node.wait_agent_state("1001", "busy", WAIT).await?;

    let (to_agent, to_caller) = exchange(
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
        to_agent >= 20,
        "caller → agent: {to_agent} of 50 packets arrived; agent stats {:?}",
        rtp_agent.stats()
    );
    assert!(
        to_caller >= 20,
        "agent → caller: {to_caller} of 50 arrived; caller stats {:?}",
        rtp_caller.stats()
    );
    let (sa, sb) = (rtp_caller.stats(), rtp_agent.stats());
    assert_eq!(
        sa.marked_pts.iter().copied().collect::<Vec<_>>(),
        vec![0],
        "payload types relayed to caller: {sa:?}"
    );
    assert_eq!(
        sb.marked_pts.iter().copied().collect::<Vec<_>>(),
        vec![0],
        "payload types relayed to agent: {sb:?}"
    );
    // One outbound stream per leg: music and conversation share an SSRC.
    assert_eq!(sa.ssrcs.len(), 1, "the caller saw several SSRCs: {sa:?}");

    match who {
        HangUp::Caller => {
            let r = caller.bye(&mut leg_a).await?;
            assert_eq!(r.status, Some(200), "BYE from caller: {}", r.raw);
            agent.wait_bye(&leg_b, WAIT).await?;
        }
        HangUp::Agent => {
            let r = agent.bye(&mut leg_b).await?;
            assert_eq!(r.status, Some(200), "BYE from agent: {}", r.raw);
            caller.wait_bye(&leg_a, WAIT).await?;
        }
    }

    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "CDR {cdr}");
    assert_eq!(cdr["agent"], "1001", "CDR {cdr}");
    assert_eq!(cdr["queue"], "support", "CDR {cdr}");
    assert_eq!(cdr["caller"], "alice", "CDR {cdr}");
    assert_eq!(cdr["called"], dialled, "CDR {cdr}");
    assert_eq!(
        cdr["ended_by"],
        if who == HangUp::Caller {
            "caller"
        } else {
            "agent"
        },
        "CDR {cdr}"
    );
    assert!(cdr["talk_secs"].as_f64().unwrap_or(0.0) > 0.0, "CDR {cdr}");
    assert!(cdr["answered_ms"].as_u64().is_some(), "CDR {cdr}");
    assert!(cdr["offers"].as_u64().unwrap_or(0) >= 1, "CDR {cdr}");

    // Wrap-up (1 s in tests), then ready again.
    node.wait_agent_state("1001", "ready", WAIT).await?;
    assert_eq!(node.agent("1001").await?["calls_answered"], 1);
    assert!(
        node.calls().await?.is_empty(),
        "calls left: {:?}",
        node.calls().await?
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hangs_up() -> anyhow::Result<()> {
    full_call("support", HangUp::Caller, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hangs_up() -> anyhow::Result<()> {
    full_call("support", HangUp::Agent, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialled_by_extension() -> anyhow::Result<()> {
    full_call("8000", HangUp::Caller, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp() -> anyhow::Result<()> {
    full_call("support", HangUp::Agent, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_phone_sees_invite_retransmissions_absorbed() -> anyhow::Result<()> {
    // The agent's phone says nothing for 2 s: the switch retransmits its INVITE (UDP), the
    // phone then rings and answers once, and the call works.
    let node = TestNode::standard().await?;
    let mut agent = node.agent_ua("1001").await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;
    let invite = agent.wait_invite(WAIT).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let copies = agent
        .trace()
        .iter()
        .filter(|l| l.starts_with("<- INVITE"))
        .count();
    assert!(
        copies >= 2,
        "the switch did not retransmit its INVITE within 2 s: {:#?}",
        agent.trace()
    );
    let leg_b = agent.answer(&invite, &rtp_agent).await?;
    agent.wait_ack(&leg_b, WAIT).await?;
    agent
        .expect_no_request("INVITE", Duration::from_millis(500))
        .await?;
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
    assert!(up >= 20 && down >= 20, "{up} up, {down} down");
    caller.bye(&mut leg_a).await?;
    agent.wait_bye(&leg_b, WAIT).await?;
    assert_eq!(
        node.wait_cdr(&leg_a.call_id, WAIT).await?["outcome"],
        "call.completed"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_is_404() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let rtp = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let out = caller.invite("4242", &rtp).await?;
    assert_eq!(out.response.status, Some(404), "{}", out.response.raw);
    node.shutdown().await;
    Ok(())
}

/// A single node with `wrapup_secs` of wrap-up, and alice talking to agent 1001 through it.
struct Talking {
    node: TestNode,
    agent: TestUa,
    rtp_agent: Rtp,
    caller: TestUa,
    _rtp_caller: Rtp,
    a: Dialog,
    b: Dialog,
}

async fn talking(wrapup_secs: u64) -> anyhow::Result<Talking> {
    let mut config = lingxi_tests::standard_config();
    config.acd.wrapup_secs = wrapup_secs;
    let node = TestNode::start(config).await?;
    let mut agent = node.agent_ua("1001").await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let a = caller.call("support", &rtp_caller).await?;
    let b = agent.accept(&rtp_agent, WAIT).await?;
    Ok(Talking {
        node,
        agent,
        rtp_agent,
        caller,
        _rtp_caller: rtp_caller,
        a,
        b,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_up_holds_the_next_call_back() -> anyhow::Result<()> {
    // With a long wrap-up the agent is not offered a second call until it ends.
    let Talking {
        node,
        mut agent,
        rtp_agent,
        mut caller,
        mut a,
        b,
        ..
    } = talking(3).await?;
    caller.bye(&mut a).await?;
    agent.wait_bye(&b, WAIT).await?;
    node.wait_agent_state("1001", "wrap_up", WAIT).await?;
    // A second caller waits while the agent wraps up, then is offered to it.
    let rtp2 = Rtp::bind().await?;
    let mut caller2 = TestUa::new("bob", "", node.sip).await?;
    let mut a2 = caller2.call("support", &rtp2).await?;
    agent
        .expect_no_request("INVITE", Duration::from_millis(1500))
        .await?;
    let b2 = agent.accept(&rtp_agent, WAIT).await?;
    caller2.bye(&mut a2).await?;
    agent.wait_bye(&b2, WAIT).await?;
    let cdr = node.wait_cdr(&a2.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert!(
        cdr["wait_secs"].as_f64().unwrap_or(0.0) > 0.5,
        "second caller waited for wrap-up: {cdr}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_offered_nothing_while_its_phone_still_holds_the_last_call()
-> anyhow::Result<()> {
    // The caller hangs up; the BYE to the agent's phone is not answered yet. The record says
    // the call is over (CDR written, no wrap-up: ready), but the phone still holds it: no
    // call may be offered to the agent until its BYE is over.
    let Talking {
        node,
        mut agent,
        rtp_agent,
        mut caller,
        mut a,
        b,
        ..
    } = talking(0).await?;
    caller.bye(&mut a).await?;
    let cid = b.call_id.clone();
    let bye = agent
        .wait_for("the BYE to the agent", WAIT, move |m| {
            m.is_request("BYE") && m.call_id() == cid
        })
        .await?;
    node.wait_cdr(&a.call_id, WAIT).await?;
    let held = node.agent("1001").await?;
    assert_eq!(held["state"], "ready", "{held}");
    assert_eq!(held["leg_to_release"], a.call_id.as_str(), "{held}");
    let rtp2 = Rtp::bind().await?;
    let mut caller2 = TestUa::new("bob", "", node.sip).await?;
    let a2 = caller2.call("support", &rtp2).await?;
    agent
        .expect_no_request("INVITE", Duration::from_millis(1500))
        .await?;
    // The phone lets go: now the waiting call is offered.
    agent.respond(&bye, 200, "OK", &[], None).await?;
    let mut b2 = agent.accept(&rtp_agent, WAIT).await?;
    assert!(node.agent("1001").await?["leg_to_release"].is_null());
    agent.bye(&mut b2).await?;
    caller2.wait_bye(&a2, WAIT).await?;
    let cdr = node.wait_cdr(&a2.call_id, WAIT).await?;
    assert_eq!(cdr["ended_by"], "agent", "{cdr}");
    node.shutdown().await;
    Ok(())
}
