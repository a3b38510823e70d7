//! Callers who give up: while queued, while an agent's phone rings, and callers who find
//! nobody logged in.

use std::time::Duration;

use lingxi_tests::{Rtp, TestNode, TestUa, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hangs_up_while_agent_rings() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut agent = node.agent_ua("1001").await?;
    let rtp_caller = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;
    let invite = agent.wait_invite(WAIT).await?;
    agent.ring(&invite).await?;
    node.wait_agent_state("1001", "ringing", WAIT).await?;

    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200), "{}", r.raw);
    let cancel = agent.wait_cancel(WAIT).await?;
    assert_eq!(cancel.call_id(), invite.call_id());

    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "queue.abandoned", "{cdr}");
    assert_eq!(cdr["ended_by"], "caller", "{cdr}");
    assert!(cdr["answered_ms"].is_null(), "{cdr}");
    // The agent did nothing wrong: back to ready (after any wrap-up), no BYE for a call it never had.
    node.wait_agent_state("1001", "ready", WAIT).await?;
    agent
        .expect_no_request("BYE", Duration::from_millis(300))
        .await?;
    node.wait_queue_depth("support", 0, WAIT).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hangs_up_while_queued() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    // Logged in but not ready: the caller queues instead of overflowing.
    let mut agent = node.agent_ua("1001").await?;
    let (s, v) = node
        .http_put(
            "/api/v1/agents/1001/state",
            &json!({"state": "not_ready", "reason": "lunch"}),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "not_ready", "{v}");

    let rtp_caller = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let mut leg_a = caller.call("support", &rtp_caller).await?;
    node.wait_queue_depth("support", 1, WAIT).await?;
    let q = node.queue("support").await?;
    assert_eq!(q["waiting"][0]["call_id"], leg_a.call_id.as_str(), "{q}");
    // Music while waiting.
    rtp_caller.wait_any(25, WAIT).await?;

    let r = caller.bye(&mut leg_a).await?;
    assert_eq!(r.status, Some(200), "{}", r.raw);
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "queue.abandoned", "{cdr}");
    assert_eq!(cdr["queue"], "support", "{cdr}");
    assert!(cdr["agent"].is_null(), "{cdr}");
    assert!(cdr["wait_secs"].as_f64().unwrap_or(-1.0) >= 0.0, "{cdr}");
    node.wait_queue_depth("support", 0, WAIT).await?;
    // The agent was never rung.
    agent
        .expect_no_request("INVITE", Duration::from_millis(300))
        .await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_logged_in_overflows_at_once() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let rtp_caller = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let out = caller.invite("support", &rtp_caller).await?;
    // Nobody to answer and no prompt configured: refused with 480 rather than answered and
    // hung up (commit cba5843).
    assert_eq!(out.response.status, Some(480), "{}", out.response.raw);
    let call_id = out.response.call_id();
    let cdr = node.wait_cdr(&call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "queue.no_agents", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    node.wait_queue_depth("support", 0, WAIT).await?;
    node.shutdown().await;
    Ok(())
}

/// Writes `ms` milliseconds of a quiet 400 Hz tone as 8 kHz mono 16-bit WAV.
fn write_wav(path: &std::path::Path, ms: u32) -> std::io::Result<()> {
    let samples = 8 * ms;
    let data_len = samples * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let v = ((i as f64 * 2.0 * std::f64::consts::PI * 400.0 / 8000.0).sin() * 3000.0) as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_logged_in_with_a_prompt_plays_it_then_hangs_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let prompt = dir.path().join("closed.wav");
    write_wav(&prompt, 600)?;
    let mut config = lingxi_tests::standard_config();
    config.queues[0].overflow.prompt = Some(prompt);
    let node = TestNode::start(config).await?;
    let rtp_caller = Rtp::bind().await?;
    let mut caller = TestUa::new("alice", "", node.sip).await?;
    let leg_a = caller.call("support", &rtp_caller).await?;
    caller.wait_bye(&leg_a, WAIT).await?;
    // 600 ms of prompt is ~30 packets; allow for start-up and loss.
    let got = rtp_caller.stats().packets;
    assert!(got >= 10, "prompt packets heard before BYE: {got}");
    let cdr = node.wait_cdr(&leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "queue.no_agents", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    node.shutdown().await;
    Ok(())
}
