//! Overflow and ordering: a caller who waits longer than the queue's max wait moves to the
//! overflow queue (keeping the call up) and is answered there; calls of higher priority are
//! offered first.

use lingxi_config::{OverflowAction, OverflowConfig, QueueConfig};
use lingxi_tests::{Rtp, TestNode, TestUa, WAIT, agent, base_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_moves_the_call_to_the_overflow_queue() -> anyhow::Result<()> {
    let mut c = base_config();
    c.queues.push(QueueConfig {
        id: "support".into(),
        skill: "support".into(),
        max_wait_secs: Some(2),
        overflow: OverflowConfig {
            action: OverflowAction::Queue,
            target: Some("sales".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    c.queues.push(QueueConfig {
        id: "sales".into(),
        skill: "sales".into(),
        ..Default::default()
    });
    let mut seller = agent("2001");
    seller.skills = [("sales".to_string(), 5u8)].into_iter().collect();
    c.agents.push(seller);
    c.agents.push(agent("1001"));
    let node = TestNode::start(c).await?;
    // 1001 (support) is logged in but not ready, so the support queue keeps the caller waiting.
    let _support = node.agent_ua("1001").await?;
    let (s, v) = node
        .http_put(
            "/api/v1/agents/1001/state",
            &serde_json::json!({"state": "not_ready", "reason": "break"}),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let mut seller = node.agent_ua("2001").await?;
    node.http_put(
        "/api/v1/agents/2001/state",
        &serde_json::json!({"state": "not_ready", "reason": "lunch"}),
    )
    .await?;

    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let (rtp_a, rtp_b) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut leg_a = caller.call("support", &rtp_a).await?;
    // After max wait (2 s) the call moves to sales.
    let mut moved = false;
    for _ in 0..200 {
        let (_, q) = node.http_get("/api/v1/queues/sales").await?;
        if q["depth"] == 1 {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(moved, "the call never reached the sales queue");
    let (_, support) = node.http_get("/api/v1/queues/support").await?;
    assert_eq!(support["depth"], 0, "{support}");
    // The seller becomes ready and gets the call.
    let (s, v) = node
        .http_put(
            "/api/v1/agents/2001/state",
            &serde_json::json!({"state": "ready"}),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let leg_b = seller.accept(&rtp_b, WAIT).await?;
    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200));
    seller.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["queue"], "sales", "{cdr}");
    assert_eq!(cdr["agent"], "2001", "{cdr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_with_hangup_overflow_ends_the_call_with_queue_timeout() -> anyhow::Result<()> {
    let mut c = base_config();
    c.queues.push(QueueConfig {
        id: "support".into(),
        skill: "support".into(),
        max_wait_secs: Some(1),
        ..Default::default()
    });
    c.agents.push(agent("1001"));
    let node = TestNode::start(c).await?;
    let _a = node.agent_ua("1001").await?;
    node.http_put(
        "/api/v1/agents/1001/state",
        &serde_json::json!({"state": "not_ready"}),
    )
    .await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let rtp = Rtp::bind().await?;
    let leg_a = caller.call("support", &rtp).await?;
    caller.wait_bye(&leg_a, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "queue.timeout", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    assert!(cdr["answered_ms"].is_null(), "{cdr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_idle_agent_is_offered_first() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    // 1002 becomes ready first, then 1001: 1002 has idled longest.
    let mut a1002 = node.agent_ua("1002").await?;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut a1001 = node.agent_ua("1001").await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let (rtp_a, rtp_b) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut leg_a = caller.call("support", &rtp_a).await?;
    let leg_b = a1002.accept(&rtp_b, WAIT).await?;
    a1001
        .expect_no_request("INVITE", std::time::Duration::from_millis(300))
        .await?;
    caller.bye(&mut leg_a).await?;
    a1002.wait_bye(&leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["agent"], "1002", "{cdr}");
    Ok(())
}
