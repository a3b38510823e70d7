//! Framing unit tests and an OPTIONS round trip between two endpoints over real loopback
//! sockets, on UDP and on TCP.

use super::*;
use lingxi_actors::sip::message;
use lingxi_actors::sip::transaction::{ClientEvent, EndpointConfig, Incoming, TransactionUser};
use std::net::Ipv4Addr;

const OPTIONS_HEAD: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\n";

#[test]
fn frames_by_content_length_across_reads() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&OPTIONS_HEAD[..30]);
    assert_eq!(next_frame(&mut buf, 4096), Ok(None));
    buf.extend_from_slice(&OPTIONS_HEAD[30..]);
    assert_eq!(next_frame(&mut buf, 4096), Ok(None), "body not there yet");
    buf.extend_from_slice(b"hello\r\n\r\nSIP/2.0 200 OK\r\nl: 0\r\n\r\n");
    let Ok(Some(Frame::Message(m))) = next_frame(&mut buf, 4096) else {
        panic!("a message")
    };
    assert!(m.ends_with(b"\r\n\r\nhello"));
    assert_eq!(next_frame(&mut buf, 4096), Ok(Some(Frame::Ping)));
    let Ok(Some(Frame::Message(m))) = next_frame(&mut buf, 4096) else {
        panic!("a second message")
    };
    assert!(m.starts_with(b"SIP/2.0 200 OK"));
    assert!(buf.is_empty());
}

#[test]
fn missing_content_length_means_no_body_and_pongs_are_skipped() {
    let mut buf = BytesMut::from(&b"\r\nBYE sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\nINV"[..]);
    let Ok(Some(Frame::Message(m))) = next_frame(&mut buf, 4096) else {
        panic!("a message")
    };
    assert!(m.starts_with(b"BYE ") && m.ends_with(b"\r\n\r\n"));
    assert_eq!(&buf[..], b"INV");
    let mut partial = BytesMut::from(&b"\r\n\r"[..]);
    assert_eq!(next_frame(&mut partial, 4096), Ok(None));
}

#[test]
fn oversize_and_bad_lengths_are_errors() {
    let mut buf = BytesMut::from(&b"INVITE sip:x SIP/2.0\r\nContent-Length: 100000\r\n\r\n"[..]);
    assert!(matches!(
        next_frame(&mut buf, 4096),
        Err(FrameError::TooLarge(_))
    ));
    let mut buf = BytesMut::from(vec![b'a'; 5000].as_slice());
    assert_eq!(
        next_frame(&mut buf, 4096),
        Err(FrameError::HeadersTooLarge(4096))
    );
    let mut buf = BytesMut::from(&b"X sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n"[..]);
    assert!(matches!(
        next_frame(&mut buf, 4096),
        Err(FrameError::BadContentLength(_))
    ));
}

/// Answers every request 200 OK.
struct Answer;
impl TransactionUser for Answer {
    fn on_incoming(&self, incoming: Incoming) {
        if let Incoming::Request { request, tx, .. } = incoming {
            let tag = message::new_tag();
            tx.respond(message::response_for(&request, 200, None, Some(&tag)))
                .unwrap();
        }
    }
}

/// Ignores everything (the client side).
struct Ignore;
impl TransactionUser for Ignore {
    fn on_incoming(&self, _incoming: Incoming) {}
}

async fn node(
    tu: Arc<dyn TransactionUser>,
    shutdown: &CancellationToken,
) -> (Arc<SipTransports>, Endpoint) {
    let cfg = lingxi_config::SipSection {
        listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        udp_port: 0,
        tcp_port: 0,
        ..Default::default()
    };
    let transports = SipTransports::bind(&cfg).await.expect("bind loopback");
    let endpoint = Endpoint::new(EndpointConfig::from_section(&cfg), transports.clone(), tu);
    transports.start(endpoint.clone(), shutdown.child_token());
    (transports, endpoint)
}

fn options(call_id: &str) -> rsip::Request {
    let raw = format!(
        "OPTIONS sip:server@127.0.0.1 SIP/2.0\r\nFrom: <sip:client@lingxi.local>;tag=c1\r\n\
To: <sip:server@lingxi.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    rsip::Request::try_from(raw.as_str()).unwrap()
}

async fn round_trip(client: &Endpoint, dest: Peer, call_id: &str) -> u16 {
    let mut tx = client.send_request(options(call_id), dest).expect("sent");
    let ev = tokio::time::timeout(Duration::from_secs(5), tx.next())
        .await
        .expect("an answer within 5 s");
    match ev {
        Some(ClientEvent::Final(r)) => r.status_code.code(),
        other => panic!("expected a final response, got {other:?}"),
    }
}

#[tokio::test]
async fn options_round_trip_over_udp_and_tcp() {
    let shutdown = CancellationToken::new();
    let (server, _server_ep) = node(Arc::new(Answer), &shutdown).await;
    let (client_t, client) = node(Arc::new(Ignore), &shutdown).await;
    let udp = server.udp_addr().unwrap();
    let tcp = server.tcp_addr().unwrap();
    assert_eq!(udp.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(udp.port(), 0);

    assert_eq!(round_trip(&client, Peer::udp(udp), "udp-1").await, 200);
    assert_eq!(round_trip(&client, Peer::tcp(tcp), "tcp-1").await, 200);
    // The second TCP request reuses the connection: one on each side.
    assert_eq!(round_trip(&client, Peer::tcp(tcp), "tcp-2").await, 200);
    assert_eq!(client_t.tcp_connections(), 1);
    assert_eq!(server.tcp_connections(), 1);

    // A keep-alive ping over a raw TCP connection is answered with CRLF.
    let mut raw = TcpStream::connect(tcp).await.unwrap();
    raw.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), raw.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    // A malformed request over UDP gets a 400.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let bad = format!(
        "OPTIONS sip:server@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbad\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad-1\r\nCSeq: x OPTIONS\r\n\r\n"
    );
    sock.send_to(bad.as_bytes(), udp).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 400 Bad Request\r\n"));

    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.tcp_connections(), 0);
}

/// Throughput smoke test: `cargo test -p lingxi-node --release transport::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement, run by hand"]
async fn throughput_smoke() {
    let shutdown = CancellationToken::new();
    let (server, _s) = node(Arc::new(Answer), &shutdown).await;
    let (_c, client) = node(Arc::new(Ignore), &shutdown).await;
    let dest = Peer::udp(server.udp_addr().unwrap());
    let n = 20_000;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        tasks.spawn(async move {
            let mut tx = client
                .send_request(options(&format!("load-{i}")), dest)
                .unwrap();
            matches!(tx.next().await, Some(ClientEvent::Final(_)))
        });
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += r.unwrap() as usize;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ok}/{n} transactions in {secs:.2}s = {:.0}/s (each: request+response parsed on both ends)",
        n as f64 / secs
    );
    shutdown.cancel();
}
