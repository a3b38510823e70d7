//! Registration: digest authentication, the registrar's answers, and the agent state it gives.

use lingxi_tests::{TestNode, TestUa, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_password_registers_and_makes_the_agent_ready() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    assert_eq!(node.agent_state("1001").await?, "logged_out");
    let mut ua = TestUa::new("1001", "pass1001", node.sip).await?;
    let ok = ua.register().await?;
    assert_eq!(ok.status, Some(200), "REGISTER answered {}", ok.raw);
    let contact = ok.header("contact").unwrap_or_default().to_string();
    assert!(
        contact.contains(&ua.local_addr().to_string()),
        "200 OK Contact {contact:?} is not ours"
    );
    assert!(
        contact.contains("expires="),
        "200 OK Contact {contact:?} lacks ;expires"
    );
    let agent = node.wait_agent_state("1001", "ready", WAIT).await?;
    assert_eq!(
        agent["registered"]["source"],
        ua.local_addr().to_string(),
        "agent: {agent}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_is_digest_md5_with_qop_auth() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    // A REGISTER without credentials, by hand, to look at the challenge itself.
    let ua = TestUa::new("1001", "pass1001", node.sip).await?;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let me = sock.local_addr()?;
    let req = format!(
        "REGISTER sip:lingxi.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKchal1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:1001@lingxi.local>;tag=a1\r\nTo: <sip:1001@lingxi.local>\r\nCall-ID: chal-1@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@{me}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(req.as_bytes(), node.sip).await?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await??;
    let resp = lingxi_tests::SipMsg::parse(&buf[..n], node.sip).map_err(anyhow::Error::msg)?;
    assert_eq!(resp.status, Some(401), "{}", resp.raw);
    let c = lingxi_tests::msg::parse_challenge(resp.header("www-authenticate").unwrap_or_default());
    assert_eq!(c.get("realm").map(String::as_str), Some("lingxi"), "{c:?}");
    assert!(c.get("nonce").is_some_and(|n| !n.is_empty()), "{c:?}");
    assert!(
        c.get("qop")
            .is_some_and(|q| q.split(',').any(|x| x.trim() == "auth")),
        "{c:?}"
    );
    assert!(
        c.get("algorithm")
            .is_none_or(|a| a.eq_ignore_ascii_case("MD5")),
        "{c:?}"
    );
    drop(ua);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_agent_stays_logged_out() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut ua = TestUa::new("1001", "not-the-password", node.sip).await?;
    let resp = ua.register().await?;
    assert_eq!(
        resp.status,
        Some(403),
        "REGISTER with a wrong password answered {}",
        resp.raw
    );
    assert_eq!(node.agent_state("1001").await?, "logged_out");
    assert!(node.agent("1001").await?["registered"].is_null());
    // The right password afterwards still works.
    ua.set_password("pass1001");
    assert_eq!(ua.register().await?.status, Some(200));
    node.wait_agent_state("1001", "ready", WAIT).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_404() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut ua = TestUa::new("9999", "whatever", node.sip).await?;
    let resp = ua.register().await?;
    assert_eq!(
        resp.status,
        Some(404),
        "REGISTER for an unknown user answered {}",
        resp.raw
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_logs_the_agent_out() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut ua = TestUa::new("1002", "pass1002", node.sip).await?;
    assert_eq!(ua.register().await?.status, Some(200));
    node.wait_agent_state("1002", "ready", WAIT).await?;
    let resp = ua.unregister().await?;
    assert_eq!(resp.status, Some(200), "{}", resp.raw);
    node.wait_agent_state("1002", "logged_out", WAIT).await?;
    node.shutdown().await;
    Ok(())
}
