//! Parsing and building tests, including a mutation fuzz that must never panic.

use super::*;
use rand::{Rng, SeedableRng};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice; A\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Expires: 120\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn parses_a_good_invite() {
    let msg = parse(INVITE.as_bytes(), 65_535).expect("parses");
    let rsip::SipMessage::Request(req) = &msg else {
        panic!("not a request")
    };
    assert_eq!(req.method, rsip::Method::Invite);
    assert_eq!(
        call_id(&msg).unwrap(),
        "a84b4c76e66710@pc33.atlanta.example.com"
    );
    assert_eq!(cseq(req).unwrap(), (314159, rsip::Method::Invite));
    assert_eq!(top_via_branch(&req.headers).unwrap(), "z9hG4bK776asdhds");
    assert_eq!(from_tag(req).as_deref(), Some("1928301774"));
    assert_eq!(to_tag(req), None);
    assert_eq!(expires(req), Some(120));
    let uri = contact_uri(req).expect("contact");
    assert_eq!(uri.to_string(), "sip:alice@pc33.atlanta.example.com");
    assert_eq!(req.body, b"v=0\n");
}

#[test]
fn compact_headers_are_expanded() {
    let raw = "OPTIONS sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\n\
f: <sip:a@b>;tag=1\r\nt: <sip:x@y>\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
    let msg = parse(raw.as_bytes(), 4096).expect("parses");
    assert_eq!(call_id(&msg).unwrap(), "abc");
    assert_eq!(top_via_branch(&msg).unwrap(), "z9hG4bKa");
}

#[test]
fn missing_call_id_is_named() {
    let raw = INVITE.replace("Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", "");
    match parse(raw.as_bytes(), 65_535) {
        Err(SipError::MissingHeader { header, .. }) => assert_eq!(header, "Call-ID"),
        other => panic!("expected MissingHeader, got {other:?}"),
    }
}

#[test]
fn truncated_body_is_an_error() {
    let raw = &INVITE[..INVITE.len() - 2];
    match parse(raw.as_bytes(), 65_535) {
        Err(SipError::Parse { what, detail }) => {
            assert_eq!(what, "body");
            assert!(detail.contains("truncated"), "{detail}");
        }
        other => panic!("expected a body parse error, got {other:?}"),
    }
}

#[test]
fn extra_bytes_beyond_content_length_are_dropped() {
    let raw = format!("{INVITE}garbage");
    let msg = parse(raw.as_bytes(), 65_535).unwrap();
    assert_eq!(msg.body(), b"v=0\n");
}

#[test]
fn cseq_method_must_match() {
    let raw = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
    assert!(matches!(
        parse(raw.as_bytes(), 65_535),
        Err(SipError::Parse { what, .. }) if what == "CSeq header"
    ));
}

#[test]
fn oversized_is_too_large() {
    assert_eq!(
        parse(INVITE.as_bytes(), 100).unwrap_err(),
        SipError::TooLarge {
            size: INVITE.len(),
            limit: 100
        }
    );
}

#[test]
fn garbage_is_a_parse_error() {
    for g in [
        &b""[..],
        b"\r\n\r\n",
        b"hello",
        b"\xff\xfe\x00\x01",
        b"SIP/2.0 abc\r\n\r\n",
    ] {
        assert!(parse(g, 65_535).is_err(), "{g:?}");
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        let n = rng.random_range(0..600);
        let data: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let _ = parse(&data, 65_535);
        let _ = salvage_request(&data);
    }
}

#[test]
fn mutations_of_a_valid_message_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let base = INVITE.as_bytes();
    const ALPHABET: &[u8] = b" :;,<>\"=\r\n@/0123456789zZ\x00\xff[]";
    let mut parsed = 0;
    for _ in 0..5_000 {
        let mut m = base.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..m.len().max(1));
            match rng.random_range(0..4) {
                0 if !m.is_empty() => {
                    m.remove(at.min(m.len() - 1));
                }
                1 => m.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
                2 if !m.is_empty() => {
                    let i = at.min(m.len() - 1);
                    m[i] = ALPHABET[rng.random_range(0..ALPHABET.len())];
                }
                _ => m.truncate(at),
            }
        }
        if let Ok(msg) = parse(&m, 65_535) {
            parsed += 1;
            // Every reader must also survive whatever got through.
            let _ = call_id(&msg);
            let _ = top_via_branch(&msg);
            let _ = from_tag(&msg);
            let _ = to_tag(&msg);
            let _ = contact_uri(&msg);
            let _ = expires(&msg);
            let _ = encode(&msg);
            if let rsip::SipMessage::Request(r) = &msg {
                let _ = response_for(r, 200, None, Some("t"));
                let _ = stamp_top_via(
                    top_via_str(&r.headers).unwrap_or(""),
                    "9.9.9.9:1".parse().unwrap(),
                );
            }
        }
        let _ = salvage_request(&m);
    }
    assert!(parsed > 0, "some mutations should still parse");
}

#[test]
fn response_for_copies_and_tags() {
    let rsip::SipMessage::Request(req) = parse(INVITE.as_bytes(), 65_535).unwrap() else {
        unreachable!()
    };
    let resp = response_for(&req, 486, None, Some("xyz"));
    assert_eq!(resp.status_code.code(), 486);
    assert_eq!(to_tag(&resp).as_deref(), Some("xyz"));
    assert_eq!(from_tag(&resp).as_deref(), Some("1928301774"));
    assert_eq!(cseq(&resp).unwrap(), (314159, rsip::Method::Invite));
    let wire = encode_response(&resp);
    let text = std::str::from_utf8(&wire).unwrap();
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    let back = parse(&wire, 65_535).unwrap();
    assert!(back.is_response());
    // A To that already has a tag keeps it.
    let again = response_for(
        &rsip::Request {
            headers: resp.headers.clone(),
            ..req.clone()
        },
        200,
        Some("Fine"),
        Some("other"),
    );
    assert_eq!(to_tag(&again).as_deref(), Some("xyz"));
    assert!(encode_response(&again).starts_with(b"SIP/2.0 200 Fine\r\n"));
}

#[test]
fn with_body_sets_length_and_type() {
    let rsip::SipMessage::Request(req) = parse(INVITE.as_bytes(), 65_535).unwrap() else {
        unreachable!()
    };
    let resp = with_body(
        response_for(&req, 200, None, Some("a")),
        "application/sdp",
        b"v=0\r\n".to_vec(),
    );
    let wire = encode_response(&resp);
    let back = parse(&wire, 65_535).unwrap();
    assert_eq!(back.body(), b"v=0\r\n");
    assert!(
        std::str::from_utf8(&wire)
            .unwrap()
            .contains("Content-Type: application/sdp\r\n")
    );
}

#[test]
fn branches_and_tags_are_random() {
    let a = new_branch();
    assert!(a.starts_with("z9hG4bK") && a.len() == 23);
    assert_ne!(a, new_branch());
    assert_ne!(new_tag(), new_tag());
}

#[test]
fn via_stamping_follows_rfc3581() {
    let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let v = stamp_top_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport", src).unwrap();
    assert_eq!(
        v,
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;received=203.0.113.9;rport=40000"
    );
    let v = stamp_top_via(
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx, SIP/2.0/UDP p;branch=z9hG4bKy",
        src,
    )
    .unwrap();
    assert_eq!(
        v,
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;received=203.0.113.9, SIP/2.0/UDP p;branch=z9hG4bKy"
    );
    assert_eq!(
        stamp_top_via("SIP/2.0/UDP 203.0.113.9:40000;branch=z9hG4bKx", src),
        None
    );
    let info = parse_via("SIP/2.0/TCP [::1]:5070;branch=z9hG4bKq;rport=5").unwrap();
    assert_eq!(
        (
            info.transport,
            info.host,
            info.port,
            info.branch,
            info.rport
        ),
        ("TCP", "[::1]", Some(5070), Some("z9hG4bKq"), Some(Some(5)))
    );
}

#[test]
fn salvage_reads_raw_headers() {
    let raw = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70 broken");
    assert!(parse(raw.as_bytes(), 65_535).is_err());
    let s = salvage_request(raw.as_bytes()).expect("salvageable");
    assert_eq!(s.call_id, "a84b4c76e66710@pc33.atlanta.example.com");
    let wire = encode_salvaged_response(&s, 400, "lingxi", "bad \"header\"\r\n");
    let resp = parse(&wire, 65_535).expect("our 400 parses");
    assert!(resp.is_response());
}
