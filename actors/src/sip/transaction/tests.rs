//! Transaction-layer tests over an in-memory network.
//!
//! tokio's `test-util` feature (needed for `tokio::time::pause`) is not enabled for this crate,
//! so these run in real time with timers scaled down (T1 = 40 ms); timing checks assert that a
//! timer never fires early and allow generous lateness, so a loaded machine cannot fail them.

use super::*;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const T1: Duration = Duration::from_millis(40);
const T2: Duration = Duration::from_millis(320);
const T4: Duration = Duration::from_millis(400);
const SLACK: Duration = Duration::from_millis(150);

fn us() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}
fn phone() -> Peer {
    Peer::udp("10.0.0.7:5062".parse().unwrap())
}

#[derive(Default)]
struct FakeNet {
    sent: parking_lot::Mutex<Vec<(Instant, Peer, Bytes)>>,
    wake: Notify,
}

impl SipTransportSink for FakeNet {
    fn send(&self, peer: &Peer, data: Bytes) -> Result<(), SipError> {
        self.sent.lock().push((Instant::now(), *peer, data));
        self.wake.notify_waiters();
        Ok(())
    }
    fn local_addr(&self, _t: SipTransport) -> Option<SocketAddr> {
        Some(us())
    }
}

impl FakeNet {
    fn count(&self) -> usize {
        self.sent.lock().len()
    }
    fn get(&self, i: usize) -> (Instant, Peer, rsip::SipMessage) {
        let (t, p, b) = self.sent.lock()[i].clone();
        (t, p, message::parse(&b, 65_535).expect("we send valid SIP"))
    }
    fn text(&self, i: usize) -> String {
        String::from_utf8(self.sent.lock()[i].2.to_vec()).unwrap()
    }
    /// Waits until at least `n` messages were sent.
    async fn wait(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            let notified = self.wake.notified();
            if self.count() >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} messages sent, got {}", self.count());
            }
        }
    }
}

struct Tu(mpsc::UnboundedSender<Incoming>);
impl TransactionUser for Tu {
    fn on_incoming(&self, incoming: Incoming) {
        let _ = self.0.send(incoming);
    }
}

fn setup() -> (Endpoint, Arc<FakeNet>, UnboundedReceiver<Incoming>) {
    let net = Arc::new(FakeNet::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg = EndpointConfig {
        t1: T1,
        t2: T2,
        t4: T4,
        max_message_bytes: 4096,
        user_agent: "test".into(),
        host: "127.0.0.1".into(),
    };
    (Endpoint::new(cfg, net.clone(), Arc::new(Tu(tx))), net, rx)
}

fn raw_request(method: &str, branch: &str, cseq: u32, call: &str) -> String {
    format!(
        "{method} sip:agent@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.7:5062;branch={branch};rport\r\n\
From: <sip:1001@lingxi.local>;tag=abc\r\n\
To: <sip:agent@lingxi.local>\r\n\
Call-ID: {call}\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn out_request(method: rsip::Method, call: &str) -> rsip::Request {
    let raw = format!(
        "{m} sip:1001@10.0.0.7:5062 SIP/2.0\r\nFrom: <sip:q@lingxi.local>;tag=ours\r\n\
To: <sip:1001@lingxi.local>\r\nCall-ID: {call}\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n",
        m = method_str(&method)
    );
    rsip::Request::try_from(raw.as_str()).unwrap()
}

fn as_request(m: rsip::SipMessage) -> rsip::Request {
    match m {
        rsip::SipMessage::Request(r) => r,
        other => panic!("expected a request, got {other}"),
    }
}

async fn next_incoming(rx: &mut UnboundedReceiver<Incoming>) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an incoming event")
        .expect("channel open")
}

fn assert_gap(actual: Duration, expected: Duration, what: &str) {
    assert!(
        actual + Duration::from_millis(2) >= expected && actual <= expected + SLACK,
        "{what}: expected {expected:?}, got {actual:?}"
    );
}

#[tokio::test]
async fn nict_retransmits_doubling_to_t2_and_times_out_at_64_t1() {
    let (ep, net, _rx) = setup();
    let start = Instant::now();
    let mut tx = ep
        .send_request(out_request(rsip::Method::Options, "nict-1"), phone())
        .unwrap();
    let first = as_request(net.get(0).2);
    assert!(
        message::top_via_branch(&first)
            .unwrap()
            .starts_with("z9hG4bK")
    );
    assert!(net.text(0).contains("Max-Forwards: 70\r\n") && net.text(0).contains(";rport"));
    let ev = tokio::time::timeout(Duration::from_secs(10), tx.next())
        .await
        .unwrap();
    assert!(matches!(ev, Some(ClientEvent::Timeout)), "{ev:?}");
    assert_gap(start.elapsed(), T1 * 64, "Timer F");
    assert!(tx.next().await.is_none());
    let times: Vec<Instant> = net.sent.lock().iter().map(|s| s.0).collect();
    // 0.5 s, 1 s, 2 s, 4 s, 4 s ... in units of T1 = 500 ms: 1, 2, 4, 8, 8, ...
    let expected = [1u32, 2, 4, 8, 8, 8];
    for (i, k) in expected.iter().enumerate() {
        assert_gap(
            times[i + 1] - times[i],
            T1 * *k,
            &format!("retransmission {}", i + 1),
        );
    }
    assert!(
        times.len() >= 9 && times.len() <= 11,
        "{} sends",
        times.len()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(ep.active_transactions(), 0);
}

#[tokio::test]
async fn nict_over_tcp_does_not_retransmit() {
    let (ep, net, _rx) = setup();
    let dest = Peer::tcp("10.0.0.7:5062".parse().unwrap());
    let mut tx = ep
        .send_request(out_request(rsip::Method::Options, "nict-tcp"), dest)
        .unwrap();
    assert!(
        net.text(0).starts_with("OPTIONS ")
            && net.text(0).contains("SIP/2.0/TCP 127.0.0.1:5060;branch=")
    );
    let req = as_request(net.get(0).2);
    tokio::time::sleep(T1 * 6).await;
    assert_eq!(net.count(), 1);
    let ok = message::response_for(&req, 200, None, Some("t"));
    ep.on_message(&message::encode_response(&ok), dest);
    assert!(matches!(tx.next().await, Some(ClientEvent::Final(r)) if r.status_code.code() == 200));
    assert!(tx.next().await.is_none());
}

#[tokio::test]
async fn ict_acks_a_486_itself_and_absorbs_its_retransmission() {
    let (ep, net, _rx) = setup();
    let mut tx = ep
        .send_request(out_request(rsip::Method::Invite, "ict-1"), phone())
        .unwrap();
    let invite = as_request(net.get(0).2);
    let ringing = message::response_for(&invite, 180, None, Some("far"));
    ep.on_message(&message::encode_response(&ringing), phone());
    assert!(
        matches!(tx.next().await, Some(ClientEvent::Provisional(r)) if r.status_code.code() == 180)
    );
    let busy = message::encode_response(&message::response_for(&invite, 486, None, Some("far")));
    ep.on_message(&busy, phone());
    assert!(matches!(tx.next().await, Some(ClientEvent::Final(r)) if r.status_code.code() == 486));
    assert!(tx.next().await.is_none());
    let n = net.count();
    let ack = as_request(net.get(n - 1).2);
    assert_eq!(ack.method, rsip::Method::Ack);
    assert_eq!(message::top_via_branch(&ack).unwrap(), tx.branch());
    assert_eq!(message::cseq(&ack).unwrap(), (1, rsip::Method::Ack));
    assert_eq!(message::to_tag(&ack).as_deref(), Some("far"));
    assert_eq!(ack.uri, invite.uri);
    // The 486 again (our ACK was lost): the transaction re-sends the ACK, the TU hears nothing.
    ep.on_message(&busy, phone());
    net.wait(n + 1, Duration::from_secs(1)).await;
    assert_eq!(as_request(net.get(n).2).method, rsip::Method::Ack);
}

#[tokio::test]
async fn ict_cancel_waits_for_a_provisional_then_gets_487() {
    let (ep, net, _rx) = setup();
    let mut tx = ep
        .send_request(out_request(rsip::Method::Invite, "ict-cancel"), phone())
        .unwrap();
    let invite = as_request(net.get(0).2);
    tx.cancel().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(net.count(), 1, "no CANCEL before a provisional");
    ep.on_message(
        &message::encode_response(&message::response_for(&invite, 100, None, None)),
        phone(),
    );
    assert!(matches!(tx.next().await, Some(ClientEvent::Provisional(_))));
    net.wait(2, Duration::from_secs(1)).await;
    let cancel = as_request(net.get(1).2);
    assert_eq!(cancel.method, rsip::Method::Cancel);
    assert_eq!(message::top_via_branch(&cancel).unwrap(), tx.branch());
    assert_eq!(message::cseq(&cancel).unwrap(), (1, rsip::Method::Cancel));
    assert_eq!(message::call_id(&cancel).unwrap(), "ict-cancel");
    assert_eq!(cancel.uri, invite.uri);
    ep.on_message(
        &message::encode_response(&message::response_for(&cancel, 200, None, None)),
        phone(),
    );
    ep.on_message(
        &message::encode_response(&message::response_for(&invite, 487, None, Some("x"))),
        phone(),
    );
    assert!(matches!(tx.next().await, Some(ClientEvent::Final(r)) if r.status_code.code() == 487));
    let last = as_request(net.get(net.count() - 1).2);
    assert_eq!(last.method, rsip::Method::Ack);
    assert!(
        ep.send_request(out_request(rsip::Method::Options, "o"), phone())
            .unwrap()
            .cancel()
            .is_err()
    );
}

#[tokio::test]
async fn uac_2xx_retransmission_gets_the_remembered_ack() {
    let (ep, net, _rx) = setup();
    let mut tx = ep
        .send_request(out_request(rsip::Method::Invite, "uac-2xx"), phone())
        .unwrap();
    let invite = as_request(net.get(0).2);
    let ok = message::encode_response(&message::response_for(&invite, 200, None, Some("far")));
    ep.on_message(&ok, phone());
    assert!(matches!(tx.next().await, Some(ClientEvent::Final(r)) if r.status_code.code() == 200));
    let mut ack = out_request(rsip::Method::Ack, "uac-2xx");
    ack.headers.retain(|h| !matches!(h, Header::CSeq(_)));
    ack.headers
        .push(Header::CSeq(rsip::headers::CSeq::new("1 ACK")));
    ep.send_ack(ack, phone()).unwrap();
    assert_eq!(net.count(), 2);
    let sent_ack = as_request(net.get(1).2);
    assert_ne!(message::top_via_branch(&sent_ack).unwrap(), tx.branch());
    ep.on_message(&ok, phone());
    assert_eq!(net.count(), 3);
    assert_eq!(net.text(2), net.text(1));
}

#[tokio::test]
async fn server_invite_2xx_is_retransmitted_until_the_ack() {
    let (ep, net, mut rx) = setup();
    ep.on_message(
        raw_request("INVITE", "z9hG4bKinv1", 5, "uas-1").as_bytes(),
        phone(),
    );
    let Incoming::Request {
        request,
        source,
        tx,
    } = next_incoming(&mut rx).await
    else {
        panic!("expected a request")
    };
    assert_eq!(source, phone());
    // RFC 3581: rport filled in, and responses go back to the source port.
    assert!(
        message::top_via_str(&request.headers)
            .unwrap()
            .contains("rport=5062")
    );
    tx.respond(message::response_for(&request, 180, None, Some("us")))
        .unwrap();
    tx.respond(message::response_for(&request, 200, None, Some("us")))
        .unwrap();
    assert!(
        tx.respond(message::response_for(&request, 486, None, Some("us")))
            .is_err()
    );
    assert_eq!(net.count(), 2);
    net.wait(4, T1 * 3 + SLACK * 2).await; // 200 again after T1 and 2*T1
    assert!(net.text(3).starts_with("SIP/2.0 200 OK\r\n"));
    assert_eq!(net.get(3).1, phone());
    let ack = request_with_to_tag("ACK", "z9hG4bKack1", 5, "uas-1", "us");
    ep.on_message(ack.as_bytes(), phone());
    assert!(matches!(next_incoming(&mut rx).await, Incoming::Ack { .. }));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let n = net.count();
    tokio::time::sleep(T2 + SLACK).await;
    assert_eq!(net.count(), n, "no 200 after the ACK");
    drop(tx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(ep.active_transactions(), 0);
}

fn request_with_to_tag(method: &str, branch: &str, cseq: u32, call: &str, tag: &str) -> String {
    raw_request(method, branch, cseq, call).replace(
        "To: <sip:agent@lingxi.local>",
        &format!("To: <sip:agent@lingxi.local>;tag={tag}"),
    )
}

#[tokio::test]
async fn ack_timeout_is_raised_when_no_ack_comes() {
    let (ep, _net, mut rx) = setup();
    ep.on_message(
        raw_request("INVITE", "z9hG4bKinv2", 9, "uas-2").as_bytes(),
        phone(),
    );
    let Incoming::Request { request, tx, .. } = next_incoming(&mut rx).await else {
        panic!()
    };
    let start = Instant::now();
    tx.respond(message::response_for(&request, 200, None, Some("us")))
        .unwrap();
    match next_incoming(&mut rx).await {
        Incoming::AckTimeout { call_id, cseq } => {
            assert_eq!((call_id.as_str(), cseq), ("uas-2", 9));
        }
        other => panic!("expected AckTimeout, got {other:?}"),
    }
    assert_gap(start.elapsed(), T1 * 64, "2xx retransmission window");
}

#[tokio::test]
async fn retransmitted_request_is_absorbed_and_last_response_resent() {
    let (ep, net, mut rx) = setup();
    let raw = raw_request("OPTIONS", "z9hG4bKopt1", 1, "opt-1");
    ep.on_message(raw.as_bytes(), phone());
    ep.on_message(raw.as_bytes(), phone());
    let Incoming::Request { request, tx, .. } = next_incoming(&mut rx).await else {
        panic!()
    };
    assert!(rx.try_recv().is_err(), "the retransmission reached the TU");
    assert_eq!(net.count(), 0);
    tx.respond(message::response_for(&request, 200, None, Some("us")))
        .unwrap();
    ep.on_message(raw.as_bytes(), phone());
    assert_eq!(net.count(), 2);
    assert_eq!(net.text(0), net.text(1));
    assert!(rx.try_recv().is_err());
    // An INVITE retransmitted before the TU answered gets 100 Trying.
    let inv = raw_request("INVITE", "z9hG4bKinv3", 2, "inv-3");
    ep.on_message(inv.as_bytes(), phone());
    ep.on_message(inv.as_bytes(), phone());
    assert!(net.text(2).starts_with("SIP/2.0 100 Trying\r\n"));
}

#[tokio::test]
async fn cancel_is_answered_200_and_raised_to_the_tu() {
    let (ep, net, mut rx) = setup();
    ep.on_message(
        raw_request("INVITE", "z9hG4bKinv4", 3, "can-1").as_bytes(),
        phone(),
    );
    let Incoming::Request { request, tx, .. } = next_incoming(&mut rx).await else {
        panic!()
    };
    tx.respond(message::response_for(&request, 180, None, Some("us")))
        .unwrap();
    ep.on_message(
        request_cancel("z9hG4bKinv4", 3, "can-1").as_bytes(),
        phone(),
    );
    let Incoming::Cancel { invite, .. } = next_incoming(&mut rx).await else {
        panic!("expected Cancel")
    };
    assert!(
        net.text(1).starts_with("SIP/2.0 200 OK\r\n") && net.text(1).contains("CSeq: 3 CANCEL")
    );
    invite
        .respond(message::response_for(&request, 487, None, Some("us")))
        .unwrap();
    assert!(
        net.text(2)
            .starts_with("SIP/2.0 487 Request Terminated\r\n")
    );
    // The ACK for the 487 is absorbed, and stops the retransmissions.
    ep.on_message(
        request_with_to_tag("ACK", "z9hG4bKinv4", 3, "can-1", "us").as_bytes(),
        phone(),
    );
    tokio::time::sleep(T1 * 3).await;
    assert!(rx.try_recv().is_err(), "the ACK for a 487 reached the TU");
    assert_eq!(net.count(), 3);
    // A CANCEL for an unknown transaction: 481.
    ep.on_message(
        request_cancel("z9hG4bKnone", 3, "can-2").as_bytes(),
        phone(),
    );
    assert!(net.text(3).starts_with("SIP/2.0 481 "));
}

fn request_cancel(branch: &str, cseq: u32, call: &str) -> String {
    raw_request("CANCEL", branch, cseq, call)
}

#[tokio::test]
async fn server_non_2xx_is_retransmitted_over_udp_until_ack() {
    let (ep, net, mut rx) = setup();
    ep.on_message(
        raw_request("INVITE", "z9hG4bKinv5", 3, "busy-1").as_bytes(),
        phone(),
    );
    let Incoming::Request { request, tx, .. } = next_incoming(&mut rx).await else {
        panic!()
    };
    tx.respond(message::response_for(&request, 486, None, Some("us")))
        .unwrap();
    net.wait(3, T1 * 3 + SLACK * 2).await; // Timer G
    assert_eq!(net.text(1), net.text(0));
}

#[tokio::test]
async fn malformed_request_gets_400_naming_the_problem() {
    let (ep, net, mut rx) = setup();
    let bad = raw_request("OPTIONS", "z9hG4bKbad", 1, "bad-1")
        .replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    ep.on_message(bad.as_bytes(), phone());
    let text = net.text(0);
    assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("Warning: 399 127.0.0.1 \"malformed SIP CSeq header"),
        "{text}"
    );
    assert!(rx.try_recv().is_err());
    // Oversized: 513.
    let big = raw_request("OPTIONS", "z9hG4bKbig", 1, "big-1")
        .replace("Max-Forwards: 70", &format!("X-Pad: {}", "a".repeat(5000)));
    ep.on_message(big.as_bytes(), phone());
    assert!(net.text(1).starts_with("SIP/2.0 513 Message Too Large\r\n"));
    // Garbage: dropped.
    ep.on_message(b"\x00\x01garbage", phone());
    ep.on_message(b"\r\n\r\n", phone());
    assert_eq!(net.count(), 2);
}

#[tokio::test]
async fn dropping_an_unanswered_transaction_answers_500() {
    let (ep, net, mut rx) = setup();
    ep.on_message(
        raw_request("OPTIONS", "z9hG4bKdrop", 1, "drop-1").as_bytes(),
        phone(),
    );
    let incoming = next_incoming(&mut rx).await;
    drop(incoming);
    assert!(net.text(0).starts_with("SIP/2.0 500 "));
    assert_eq!(ep.active_transactions(), 0);
}
