//! Calls at the same time: each bridged to its own agent, media never crossing between calls.

use lingxi_config::QueueConfig;
use lingxi_tests::{Rtp, TestNode, TestUa, WAIT, agent, base_config, exchange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_two_agents_at_once() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut a1 = node.agent_ua("1001").await?;
    let mut a2 = node.agent_ua("1002").await?;
    let rtp = [
        Rtp::bind().await?,
        Rtp::bind().await?,
        Rtp::bind().await?,
        Rtp::bind().await?,
    ];
    let (rc1, rc2, ra1, ra2) = (&rtp[0], &rtp[1], &rtp[2], &rtp[3]);
    let mut c1 = TestUa::new("alice", "", node.sip).await?;
    let mut c2 = TestUa::new("bob", "", node.sip).await?;

    // Both callers dial; both agents answer whichever call they are offered.
    let (l1, l2) = tokio::join!(c1.call("support", rc1), c2.call("8000", rc2));
    let (mut l1, mut l2) = (l1?, l2?);
    let (b1, b2) = tokio::join!(a1.accept(ra1, WAIT), a2.accept(ra2, WAIT));
    let (b1, b2) = (b1?, b2?);
    // Which caller went to which agent: the agent INVITE carries the caller's name in From.
    let calls = node.calls().await?;
    assert_eq!(calls.len(), 2, "{calls:?}");
    let agent_of = |call_id: &str| {
        calls
            .iter()
            .find(|c| c["call_id"] == call_id)
            .map(|c| c["agent"].as_str().unwrap_or("").to_string())
    };
    let (g1, g2) = (agent_of(&l1.call_id), agent_of(&l2.call_id));
    let ((ca, ra_for_1, b_for_1), (cb, ra_for_2, b_for_2)) = if g1.as_deref() == Some("1001") {
        ((rc1, ra1, &b1), (rc2, ra2, &b2))
    } else {
        ((rc1, ra2, &b2), (rc2, ra1, &b1))
    };
    assert!(
        matches!(
            (g1.as_deref(), g2.as_deref()),
            (Some("1001"), Some("1002")) | (Some("1002"), Some("1001"))
        ),
        "each call has its own agent: {g1:?} {g2:?}"
    );

    // Media on both calls at the same time.
    let (r1, r2) = tokio::join!(
        exchange(
            ca,
            l1.remote_rtp()?,
            ra_for_1,
            b_for_1.remote_rtp()?,
            50,
            45,
            WAIT
        ),
        exchange(
            cb,
            l2.remote_rtp()?,
            ra_for_2,
            b_for_2.remote_rtp()?,
            50,
            45,
            WAIT
        ),
    );
    let ((up1, down1), (up2, down2)) = (r1?, r2?);
    assert!(up1 >= 20 && down1 >= 20, "call 1: {up1} up, {down1} down");
    assert!(up2 >= 20 && down2 >= 20, "call 2: {up2} up, {down2} down");
    // No cross-talk.
    assert_eq!(
        ra_for_1.stats().from_tag(cb.tag()),
        0,
        "call 2's caller heard by call 1's agent"
    );
    assert_eq!(
        ra_for_2.stats().from_tag(ca.tag()),
        0,
        "call 1's caller heard by call 2's agent"
    );
    assert_eq!(
        ca.stats().from_tag(ra_for_2.tag()),
        0,
        "call 2's agent heard by call 1's caller"
    );

    let (e1, e2) = tokio::join!(c1.bye(&mut l1), c2.bye(&mut l2));
    assert_eq!(e1?.status, Some(200));
    assert_eq!(e2?.status, Some(200));
    let (w1, w2) = tokio::join!(a1.wait_bye(&b1, WAIT), a2.wait_bye(&b2, WAIT));
    w1?;
    w2?;
    for leg in [&l1, &l2] {
        let cdr = node.wait_cdr(&leg.call_id, WAIT).await?;
        assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
        assert!(cdr["talk_secs"].as_f64().unwrap_or(0.0) > 0.0, "{cdr}");
    }
    let cdrs = node.cdrs().await?;
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    assert_ne!(cdrs[0]["agent"], cdrs[1]["agent"], "{cdrs:?}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_calls_at_once() -> anyhow::Result<()> {
    const N: usize = 8;
    let mut config = base_config();
    config.queues.push(QueueConfig {
        id: "support".into(),
        skill: "support".into(),
        ..Default::default()
    });
    let ids: Vec<String> = (0..N).map(|i| format!("20{i:02}")).collect();
    for id in &ids {
        config.agents.push(agent(id));
    }
    let node = TestNode::start(config).await?;
    let mut agents = Vec::new();
    for id in &ids {
        agents.push((node.agent_ua(id).await?, Rtp::bind().await?));
    }
    let mut callers = Vec::new();
    for i in 0..N {
        callers.push((
            TestUa::new(&format!("caller{i}"), "", node.sip).await?,
            Rtp::bind().await?,
        ));
    }

    // Every caller dials and every agent answers, all concurrently.
    let dials = callers
        .iter_mut()
        .map(|(ua, rtp)| async move { ua.call("support", rtp).await });
    let answers = agents
        .iter_mut()
        .map(|(ua, rtp)| async move { ua.accept(rtp, WAIT).await });
    let (legs_a, legs_b) = tokio::join!(join_all(dials), join_all(answers));
    let mut legs_a = legs_a.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let legs_b = legs_b.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    assert_eq!(node.calls().await?.len(), N);

    // Each agent sends 25 packets; each caller must hear its own agent only.
    let sends = agents
        .iter()
        .zip(&legs_b)
        .map(|((_, rtp), b)| async move { rtp.send_pcmu(b.remote_rtp()?, 25).await });
    for r in join_all(sends).await {
        r?;
    }
    let calls = node.calls().await?;
    for ((_, rtp), a) in callers.iter().zip(&legs_a) {
        let agent_id = calls
            .iter()
            .find(|c| c["call_id"] == a.call_id.as_str())
            .map(|c| c["agent"].clone());
        let idx = ids
            .iter()
            .position(|id| Some(serde_json::Value::from(id.as_str())) == agent_id);
        let idx =
            idx.ok_or_else(|| anyhow::anyhow!("call {} has no agent: {calls:?}", a.call_id))?;
        let own = agents[idx].1.tag();
        let got = rtp.wait_from(own, 10, WAIT).await?;
        let stats = rtp.stats();
        assert_eq!(
            stats.marked.len(),
            1,
            "caller heard several agents: {stats:?} (own agent got {got})"
        );
    }

    let byes = callers
        .iter_mut()
        .zip(legs_a.iter_mut())
        .map(|((ua, _), d)| async move { ua.bye(d).await });
    for r in join_all(byes).await {
        assert_eq!(r?.status, Some(200));
    }
    let waits = agents
        .iter_mut()
        .zip(&legs_b)
        .map(|((ua, _), d)| async move { ua.wait_bye(d, WAIT).await });
    for r in join_all(waits).await {
        r?;
    }
    lingxi_tests::wait_until("all CDRs", WAIT, || async {
        node.cdrs().await.map(|c| c.len()).unwrap_or(0) == N
    })
    .await?;
    for cdr in node.cdrs().await? {
        assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    }
    node.shutdown().await;
    Ok(())
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}
