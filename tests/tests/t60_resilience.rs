//! What must not take the switch down: malformed SIP on its sockets, and a call actor that
//! panics (the other calls carry on).

use std::time::Duration;

use lingxi_tests::{Dialog, Rtp, TestNode, TestUa, WAIT, exchange};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};

/// An established call: caller UA and dialog, agent UA and dialog, both RTP endpoints.
struct Call {
    caller: TestUa,
    leg_a: Dialog,
    agent: TestUa,
    leg_b: Dialog,
    rtp_caller: Rtp,
    rtp_agent: Rtp,
}

async fn establish(node: &TestNode, agent_id: &str, caller_name: &str) -> anyhow::Result<Call> {
    let mut agent = node.agent_ua(agent_id).await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new(caller_name, "", node.sip).await?;
    let leg_a = caller.call("support", &rtp_caller).await?;
    let leg_b = agent.accept(&rtp_agent, WAIT).await?;
    node.wait_agent_state(agent_id, "busy", WAIT).await?;
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
    /// Sends 50 packets each way and asserts at least 20 arrive each way.
    async fn assert_media(&self, what: &str) -> anyhow::Result<()> {
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
        assert!(
            up >= 20 && down >= 20,
            "{what}: {up} of 50 to the agent, {down} of 50 to the caller"
        );
        Ok(())
    }

    /// Caller hangs up; the agent gets BYE; returns the CDR.
    async fn hang_up(mut self, node: &TestNode) -> anyhow::Result<serde_json::Value> {
        let r = self.caller.bye(&mut self.leg_a).await?;
        assert_eq!(r.status, Some(200), "{}", r.raw);
        self.agent.wait_bye(&self.leg_b, WAIT).await?;
        node.wait_cdr(&self.leg_a.call_id, WAIT).await
    }
}

/// A well-formed INVITE to a number nobody serves (so a variant the switch still accepts
/// ends in 404 instead of queueing a call), with a fresh Call-ID and branch, to cut up.
fn sample_invite(from: std::net::SocketAddr) -> String {
    let sdp = lingxi_tests::msg::build_sdp(from, &[0, 101]);
    let (branch, call_id) = (
        lingxi_tests::msg::new_branch(),
        lingxi_tests::msg::new_call_id(),
    );
    format!(
        "INVITE sip:nobody-here@lingxi.local SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:mallory@lingxi.local>;tag=m1\r\nTo: <sip:nobody-here@lingxi.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_do_not_disturb_a_call() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let call = establish(&node, "1001", "alice").await?;
    call.assert_media("before the junk").await?;

    let junk = UdpSocket::bind("127.0.0.1:0").await?;
    let me = junk.local_addr()?;
    let invite = || sample_invite(me);
    let no_call_id = {
        let i = invite();
        let start = i.find("Call-ID:").expect("has Call-ID");
        let end = start + i[start..].find("\r\n").expect("line end") + 2;
        format!("{}{}", &i[..start], &i[end..])
    };
    let mut datagrams: Vec<Vec<u8>> = vec![
        b"garbage\x00\x01\x02\xff\xfe".to_vec(),
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        { let i = invite(); i.as_bytes()[..i.len() / 3].to_vec() },
        { let i = invite(); i.as_bytes()[..i.len() - 40].to_vec() },
        invite().replace("CSeq: 1 INVITE", "CSeq: banana INVITE").into_bytes(),
        no_call_id.into_bytes(),
        invite().replace("Via: SIP/2.0/UDP", "Via: SIP/9.9/XYZ").into_bytes(),
        invite().replace("Content-Length: ", "Content-Length: 9").into_bytes(),
        invite().replace("SIP/2.0\r\n", "SIP/7.0\r\n").into_bytes(),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKnothing\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            .as_bytes()
            .to_vec(),
        vec![0xAB; 65_000],
        {
            // A huge header in an otherwise fine request.
            let mut v = invite().replacen("Max-Forwards: 70\r\n", &format!("X-Pad: {}\r\n", "p".repeat(60_000)), 1).into_bytes();
            v.truncate(65_000);
            v
        },
    ];
    // Random bytes too.
    datagrams.extend((0..20).map(|_| {
        (0..rand::random_range(1..1400))
            .map(|_| rand::random::<u8>())
            .collect()
    }));
    for d in &datagrams {
        junk.send_to(d, node.sip).await?;
    }
    // 70 KB of junk over TCP, where it cannot be one datagram.
    if let Some(tcp) = node.node().sip_tcp_addr() {
        let mut s = TcpStream::connect(tcp).await?;
        let _ = s.write_all(&vec![b'x'; 70 * 1024]).await;
        let _ = s.write_all(b"\r\n\r\n").await;
        drop(s);
        // And a request whose Content-Length promises far more than comes.
        let mut s = TcpStream::connect(tcp).await?;
        let lying = sample_invite(me).replace("Content-Length: ", "Content-Length: 99999");
        let _ = s.write_all(lying.as_bytes()).await;
        drop(s);
    }
    // Whatever came back must be parseable SIP responses, and none a success: junk is dropped
    // or refused (400, or 404 for a variant still readable as an INVITE to nobody).
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), junk.recv_from(&mut buf)).await
    {
        let m = lingxi_tests::SipMsg::parse(&buf[..n], node.sip).map_err(|e| {
            anyhow::anyhow!(
                "the switch sent unparsable bytes back ({e}): {:?}",
                String::from_utf8_lossy(&buf[..n])
            )
        })?;
        assert!(
            m.status.is_some_and(|s| !(200..400).contains(&s)),
            "junk got a success answer: {}",
            m.raw
        );
    }

    call.assert_media("after the junk").await?;
    let mut probe = TestUa::new("probe", "", node.sip).await?;
    let opt = probe.options().await?;
    assert_eq!(opt.status, Some(200), "OPTIONS after the junk: {}", opt.raw);
    assert!(node.http_get("/healthz").await?.0 == 200);

    let cdr = call.hang_up(&node).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    // And a new call still works end to end.
    let call2 = establish(&node, "1002", "bob").await?;
    call2.assert_media("a new call after the junk").await?;
    assert_eq!(call2.hang_up(&node).await?["outcome"], "call.completed");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_rtp_junk_does_not_break_the_bridge() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let call = establish(&node, "1001", "alice").await?;
    // Junk to the switch's RTP ports, before either side spoke, from the caller's own socket
    // and from a stranger.
    let stranger = UdpSocket::bind("127.0.0.1:0").await?;
    for to in [call.leg_a.remote_rtp()?, call.leg_b.remote_rtp()?] {
        for junk in [
            &b"x"[..],
            &[0x80u8; 11][..],
            &[0xFFu8; 1500][..],
            &[0u8; 172][..],
        ] {
            call.rtp_caller.send_raw(junk, to).await?;
            stranger.send_to(junk, to).await?;
        }
    }
    call.assert_media("after non-RTP junk").await?;
    let cdr = call.hang_up(&node).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_of_an_unnegotiated_payload_type_does_not_steal_a_leg() -> anyhow::Result<()> {
    // A stranger who finds the switch's RTP ports sends one packet of payload type 77 (never
    // negotiated) to each, before the caller and the agent speak. The relay drops such
    // packets as "unknown payload type"; they must not decide where the leg's media goes.
    let node = TestNode::standard().await?;
    let call = establish(&node, "1001", "alice").await?;
    let stranger = Rtp::bind().await?;
    let pkt = lingxi_tests::rtp::packet(77, 1, 1, 0x5157_4e47, false, &[1; 160]);
    for to in [call.leg_a.remote_rtp()?, call.leg_b.remote_rtp()?] {
        stranger.send_raw(&pkt, to).await?;
    }
    call.assert_media("after a stray payload-type-77 packet")
        .await?;
    assert_eq!(
        stranger.stats().from_tag(call.rtp_caller.tag()),
        0,
        "the stranger got the caller's audio"
    );
    let cdr = call.hang_up(&node).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_hijack_an_active_stream() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let call = establish(&node, "1001", "alice").await?;
    call.assert_media("before the stranger").await?;
    // While both sides talk, a stranger sends PCMU to the agent's leg port.
    let stranger = Rtp::bind().await?;
    let to_b = call.leg_b.remote_rtp()?;
    let (talk, noise) = tokio::join!(
        call.assert_media("while a stranger sends"),
        stranger.send_pcmu(to_b, 50)
    );
    talk?;
    noise?;
    assert_eq!(
        stranger.stats().from_tag(call.rtp_caller.tag()),
        0,
        "the stranger got the caller's audio"
    );
    assert_eq!(
        call.rtp_caller.stats().from_tag(stranger.tag()),
        0,
        "the caller heard the stranger"
    );
    let cdr = call.hang_up(&node).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_ends_alone() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let mut doomed = establish(&node, "1001", "alice").await?;
    let healthy = establish(&node, "1002", "bob").await?;
    assert_eq!(node.calls().await?.len(), 2);

    let path = format!("/api/v1/calls/{}/fault", doomed.leg_a.call_id);
    let (s, body) = node.http("POST", &path, None).await?;
    assert_eq!(s, 202, "fault injection answered {s} {body}");

    // The failed call's legs both get BYE.
    doomed.caller.wait_bye(&doomed.leg_a, WAIT).await?;
    doomed.agent.wait_bye(&doomed.leg_b, WAIT).await?;
    let cdr = node.wait_cdr(&doomed.leg_a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.actor_failed", "{cdr}");
    assert_eq!(cdr["agent"], "1001", "{cdr}");

    // The other call is untouched: media flows and it ends normally.
    healthy
        .assert_media("the healthy call after the other one's panic")
        .await?;
    let cdr2 = healthy.hang_up(&node).await?;
    assert_eq!(cdr2["outcome"], "call.completed", "{cdr2}");

    // The failed call's agent is freed (after wrap-up) and can take calls again.
    node.wait_agent_state("1001", "ready", WAIT).await?;
    let again = establish(&node, "1001", "carol").await?;
    again
        .assert_media("a new call to the failed call's agent")
        .await?;
    assert_eq!(again.hang_up(&node).await?["outcome"], "call.completed");
    // A stale BYE from the failed call's caller is refused cleanly.
    let r = doomed.caller.bye(&mut doomed.leg_a).await?;
    assert_eq!(
        r.status,
        Some(481),
        "BYE in a dialog the switch ended: {}",
        r.raw
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_for_an_unknown_call_is_404() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (s, body) = node
        .http("POST", "/api/v1/calls/no-such-call/fault", None)
        .await?;
    assert_eq!(s, 404, "{body}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_off_unless_configured() -> anyhow::Result<()> {
    let mut config = lingxi_tests::standard_config();
    config.debug.fault_injection = false;
    let node = TestNode::start(config).await?;
    let call = establish(&node, "1001", "alice").await?;
    let (s, body) = node
        .http(
            "POST",
            &format!("/api/v1/calls/{}/fault", call.leg_a.call_id),
            None,
        )
        .await?;
    assert_eq!(s, 403, "{body}");
    call.assert_media("after a refused fault request").await?;
    assert_eq!(call.hang_up(&node).await?["outcome"], "call.completed");
    node.shutdown().await;
    Ok(())
}
