use super::*;
use rsip::SipMessage;

const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\ns=-\r\n\
c=IN IP4 192.168.1.20\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// An INVITE as it reaches us through two record-routing proxies.
fn invite_text() -> String {
    format!(
        "INVITE sip:support@lingxi.local SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2d4790.1\r\n\
         Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK776asdhds;rport=40000;received=203.0.113.9\r\n\
         Max-Forwards: 68\r\n\
         Record-Route: <sip:10.0.0.2;lr;ftag=1928301774>, <sip:10.0.0.3:5070;lr>\r\n\
         Record-Route: <sip:edge.example.com;lr>\r\n\
         To: \"Support, Tier 1\" <sip:support@lingxi.local>\r\n\
         From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:alice@192.168.1.20:5060;ob>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn parse_request(text: &str) -> rsip::Request {
    match SipMessage::try_from(text) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn parse_response(text: &str) -> rsip::Response {
    match SipMessage::try_from(text) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

fn header<'a>(req: &'a rsip::Request, field: Field) -> Vec<&'a str> {
    req.headers.iter().filter_map(|h| field.pick(h)).collect()
}

fn uas() -> DialogState {
    uas_dialog(
        &parse_request(&invite_text()),
        "10.0.0.2:5060".parse().unwrap(),
        SipTransport::Udp,
        "lx-tag-1",
        "sip:support@10.0.0.50:5060",
    )
    .expect("dialog")
}

#[test]
fn uas_dialog_from_a_record_routed_invite() {
    let d = uas();
    assert_eq!(d.call_id, "a84b4c76e66710@pc33.example.com");
    assert_eq!(d.local_tag, "lx-tag-1");
    assert_eq!(d.remote_tag, "1928301774");
    assert_eq!(d.role, DialogRole::Uas);
    assert!((1..(1 << 30)).contains(&d.local_seq));
    assert_eq!(d.remote_seq, Some(314159));
    assert_eq!(d.local_uri, "sip:support@lingxi.local");
    assert_eq!(d.remote_uri, "sip:alice@example.com");
    assert_eq!(d.remote_target, "sip:alice@192.168.1.20:5060;ob");
    assert_eq!(
        d.route_set,
        vec![
            "sip:10.0.0.2;lr;ftag=1928301774",
            "sip:10.0.0.3:5070;lr",
            "sip:edge.example.com;lr"
        ]
    );
    assert_eq!(d.local_contact, "sip:support@10.0.0.50:5060");
    assert_eq!(
        d.peer,
        "10.0.0.2:5060".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(d.remote_sdp.as_deref(), Some(SDP));
    assert_eq!(d.local_sdp, None);
}

#[test]
fn uas_peer_rule_without_route_set() {
    let text = invite_text()
        .replace(
            "Record-Route: <sip:10.0.0.2;lr;ftag=1928301774>, <sip:10.0.0.3:5070;lr>\r\n",
            "",
        )
        .replace("Record-Route: <sip:edge.example.com;lr>\r\n", "");
    let invite = parse_request(&text);
    // Behind a NAT: the Contact names a private address, the INVITE came from the public one.
    let nat = "203.0.113.9:40000".parse().unwrap();
    let d = uas_dialog(&invite, nat, SipTransport::Udp, "t", "sip:x@10.0.0.50").unwrap();
    assert!(d.route_set.is_empty());
    assert_eq!(d.peer, nat);
    // Same address: the Contact and the source agree.
    let direct = "192.168.1.20:5060".parse().unwrap();
    let d = uas_dialog(&invite, direct, SipTransport::Udp, "t", "sip:x@10.0.0.50").unwrap();
    assert_eq!(d.peer, direct);
    // A first route with a host name falls back to the source too.
    let named = invite_text().replace(
        "Record-Route: <sip:10.0.0.2;lr;ftag=1928301774>, <sip:10.0.0.3:5070;lr>\r\n",
        "",
    );
    let d = uas_dialog(
        &parse_request(&named),
        nat,
        SipTransport::Tcp,
        "t",
        "<sip:x@h>",
    )
    .unwrap();
    assert_eq!(d.route_set, vec!["sip:edge.example.com;lr"]);
    assert_eq!(d.peer, nat);
    assert_eq!(d.local_contact, "sip:x@h");
}

#[test]
fn uas_dialog_errors_name_the_problem() {
    let source = "10.0.0.2:5060".parse().unwrap();
    let no_contact = invite_text().replace("Contact: <sip:alice@192.168.1.20:5060;ob>\r\n", "");
    let e = uas_dialog(
        &parse_request(&no_contact),
        source,
        SipTransport::Udp,
        "t",
        "sip:x@y",
    )
    .unwrap_err();
    assert_eq!(
        e,
        SipError::MissingHeader {
            header: "Contact",
            call_id: Some("a84b4c76e66710@pc33.example.com".to_owned())
        }
    );
    let tagged = invite_text().replace(
        "<sip:support@lingxi.local>\r\n",
        "<sip:support@lingxi.local>;tag=abc\r\n",
    );
    let e = uas_dialog(
        &parse_request(&tagged),
        source,
        SipTransport::Udp,
        "t",
        "sip:x@y",
    )
    .unwrap_err();
    assert!(matches!(e, SipError::Dialog { .. }), "{e}");
    let bad_cseq = invite_text().replace("CSeq: 314159 INVITE", "CSeq: many INVITE");
    let e = uas_dialog(
        &parse_request(&bad_cseq),
        source,
        SipTransport::Udp,
        "t",
        "sip:x@y",
    )
    .unwrap_err();
    assert!(e.to_string().contains("CSeq"), "{e}");
}

#[test]
fn compact_header_forms_are_understood() {
    let text = "INVITE sip:support@lingxi.local SIP/2.0\r\n\
                v: SIP/2.0/UDP 198.51.100.4:5060;branch=z9hG4bKcompact\r\n\
                f: <sip:bob@example.com>;tag=bt\r\n\
                t: sip:support@lingxi.local\r\n\
                i: compact-1\r\n\
                CSeq: 1 INVITE\r\n\
                m: sip:bob@198.51.100.4\r\n\
                l: 0\r\n\r\n";
    let d = uas_dialog(
        &parse_request(text),
        "198.51.100.4:5060".parse().unwrap(),
        SipTransport::Udp,
        "me",
        "sip:support@10.0.0.50",
    )
    .unwrap();
    assert_eq!(d.call_id, "compact-1");
    assert_eq!(d.remote_tag, "bt");
    assert_eq!(d.local_uri, "sip:support@lingxi.local");
    assert_eq!(d.remote_target, "sip:bob@198.51.100.4");
    assert_eq!(d.remote_sdp, None);
}

#[test]
fn make_request_routes_loosely_and_round_trips() {
    let mut d = uas();
    let start = d.local_seq;
    let bye = make_request(&mut d, Method::Bye, None).unwrap();
    assert_eq!(d.local_seq, start + 1);
    let text = bye.to_string();
    let parsed = parse_request(&text);
    assert_eq!(parsed, bye, "{text}");
    assert_eq!(parsed.method, Method::Bye);
    assert_eq!(parsed.uri.to_string(), "sip:alice@192.168.1.20:5060;ob");
    assert_eq!(
        header(&parsed, Field::RecordRoute),
        Vec::<&str>::new(),
        "no Record-Route in requests"
    );
    let routes: Vec<&str> = parsed
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value()),
            _ => None,
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            "<sip:10.0.0.2;lr;ftag=1928301774>, <sip:10.0.0.3:5070;lr>, <sip:edge.example.com;lr>"
        ]
    );
    assert_eq!(
        header(&parsed, Field::From),
        vec!["<sip:support@lingxi.local>;tag=lx-tag-1"]
    );
    assert_eq!(
        header(&parsed, Field::To),
        vec!["<sip:alice@example.com>;tag=1928301774"]
    );
    assert_eq!(
        header(&parsed, Field::CallId),
        vec!["a84b4c76e66710@pc33.example.com"]
    );
    let cseq_value = format!("{} BYE", start + 1);
    assert_eq!(header(&parsed, Field::CSeq), vec![cseq_value.as_str()]);
    assert!(
        header(&parsed, Field::Contact).is_empty(),
        "no Contact in BYE"
    );
    assert!(text.contains("Max-Forwards: 70\r\n"), "{text}");
    assert!(text.contains("Content-Length: 0\r\n"), "{text}");
    assert!(!text.contains("Via:"), "{text}");

    // A re-INVITE carries Contact and the SDP body.
    let reinvite = make_request(
        &mut d,
        Method::Invite,
        Some(("application/sdp", SDP.as_bytes().to_vec())),
    )
    .unwrap();
    assert_eq!(d.local_seq, start + 2);
    let parsed = parse_request(&reinvite.to_string());
    assert_eq!(parsed, reinvite);
    assert_eq!(
        header(&parsed, Field::Contact),
        vec!["<sip:support@10.0.0.50:5060>"]
    );
    assert_eq!(parsed.body, SDP.as_bytes());
    let text = reinvite.to_string();
    assert!(text.contains("Content-Type: application/sdp\r\n"), "{text}");
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", SDP.len())),
        "{text}"
    );

    // ACK for it reuses the INVITE's number and leaves local_seq alone.
    let ack = make_ack(&d, start + 2, None).unwrap();
    assert_eq!(d.local_seq, start + 2);
    let ack_cseq = format!("{} ACK", start + 2);
    assert_eq!(header(&ack, Field::CSeq), vec![ack_cseq.as_str()]);
    assert_eq!(ack.method, Method::Ack);
    assert!(header(&ack, Field::Contact).is_empty());
    assert_eq!(ack.uri.to_string(), "sip:alice@192.168.1.20:5060;ob");
}

#[test]
fn make_request_strict_routing() {
    let mut d = uas();
    d.route_set = vec![
        "sip:10.0.0.9:5080".to_owned(),
        "sip:10.0.0.10;lr".to_owned(),
    ];
    let req = make_request(&mut d, Method::Info, None).unwrap();
    assert_eq!(req.uri.to_string(), "sip:10.0.0.9:5080");
    let routes: Vec<&str> = req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value()),
            _ => None,
        })
        .collect();
    assert_eq!(
        routes,
        vec!["<sip:10.0.0.10;lr>, <sip:alice@192.168.1.20:5060;ob>"]
    );
}

#[test]
fn make_request_leaves_the_dialog_alone_on_error() {
    let mut d = uas();
    d.remote_target = "sip:".to_owned();
    let before = d.clone();
    assert!(make_request(&mut d, Method::Bye, None).is_err());
    assert_eq!(d, before);
}

#[test]
fn uac_invite_and_dialog_from_a_record_routed_200() {
    let invite = uac_invite(
        "sip:support@lingxi.local",
        "sip:1001@lingxi.local",
        "sip:1001@192.168.1.30:5062",
        "sip:support@10.0.0.50:5060",
        "lx-call-7",
        "lx-from-7",
        1,
        Some(SDP),
        SipTransport::Tcp,
    )
    .unwrap();
    let text = invite.to_string();
    let parsed = parse_request(&text);
    assert_eq!(parsed, invite, "{text}");
    assert_eq!(parsed.uri.to_string(), "sip:1001@192.168.1.30:5062");
    assert_eq!(
        header(&parsed, Field::From),
        vec!["<sip:support@lingxi.local>;tag=lx-from-7"]
    );
    assert_eq!(header(&parsed, Field::To), vec!["<sip:1001@lingxi.local>"]);
    assert_eq!(header(&parsed, Field::CSeq), vec!["1 INVITE"]);
    assert_eq!(
        header(&parsed, Field::Contact),
        vec!["<sip:support@10.0.0.50:5060;transport=tcp>"]
    );
    assert!(text.contains("Max-Forwards: 70\r\n"), "{text}");
    assert!(text.contains("Content-Type: application/sdp\r\n"), "{text}");
    assert!(!text.contains("Via:"), "{text}");

    let ok = parse_response(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/TCP 10.0.0.50:5060;branch=z9hG4bKx\r\n\
         Record-Route: <sip:p1.example.com;lr>\r\n\
         Record-Route: <sip:10.0.0.7;lr>\r\n\
         From: <sip:support@lingxi.local>;tag=lx-from-7\r\n\
         To: <sip:1001@lingxi.local>;tag=agent-99\r\n\
         Call-ID: lx-call-7\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: \"Agent\" <sip:1001@192.168.1.30:5062;transport=tcp>;expires=60\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let dest = "192.168.1.30:5062".parse().unwrap();
    let mut d = uac_dialog(&invite, &ok, dest, SipTransport::Tcp).unwrap();
    assert_eq!(d.role, DialogRole::Uac);
    assert_eq!(d.call_id, "lx-call-7");
    assert_eq!(d.local_tag, "lx-from-7");
    assert_eq!(d.remote_tag, "agent-99");
    assert_eq!(d.local_seq, 1);
    assert_eq!(d.remote_seq, None);
    assert_eq!(d.local_uri, "sip:support@lingxi.local");
    assert_eq!(d.remote_uri, "sip:1001@lingxi.local");
    assert_eq!(d.remote_target, "sip:1001@192.168.1.30:5062;transport=tcp");
    assert_eq!(
        d.route_set,
        vec!["sip:10.0.0.7;lr", "sip:p1.example.com;lr"]
    );
    assert_eq!(
        d.peer,
        "10.0.0.7:5060".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(d.local_contact, "sip:support@10.0.0.50:5060;transport=tcp");
    assert_eq!(d.local_sdp.as_deref(), Some(SDP));
    assert_eq!(d.sdp_version, 2890844526);
    assert_eq!(d.remote_sdp, None);

    let ack = make_ack(&d, 1, None).unwrap();
    assert_eq!(header(&ack, Field::CSeq), vec!["1 ACK"]);
    assert_eq!(
        header(&ack, Field::To),
        vec!["<sip:1001@lingxi.local>;tag=agent-99"]
    );
    let bye = make_request(&mut d, Method::Bye, None).unwrap();
    assert_eq!(header(&bye, Field::CSeq), vec!["2 BYE"]);
    assert_eq!(
        bye.uri.to_string(),
        "sip:1001@192.168.1.30:5062;transport=TCP"
    );
}

#[test]
fn uac_dialog_early_and_rejected_responses() {
    let invite = uac_invite(
        "\"Support\" <sip:support@lingxi.local>",
        "sip:1001@lingxi.local",
        "sip:1001@192.168.1.30:5062",
        "sip:support@10.0.0.50:5060",
        "lx-call-8",
        "f8",
        5,
        None,
        SipTransport::Udp,
    )
    .unwrap();
    assert_eq!(
        header(&invite, Field::From),
        vec!["\"Support\" <sip:support@lingxi.local>;tag=f8"]
    );
    let response = |status: &str, to_tag: &str| {
        parse_response(&format!(
            "SIP/2.0 {status}\r\n\
             From: <sip:support@lingxi.local>;tag=f8\r\n\
             To: <sip:1001@lingxi.local>{to_tag}\r\n\
             Call-ID: lx-call-8\r\n\
             CSeq: 5 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    };
    let dest: SocketAddr = "198.51.100.30:5062".parse().unwrap();
    // 180 with a To tag and no Contact: early dialog towards the Request-URI.
    let d = uac_dialog(
        &invite,
        &response("180 Ringing", ";tag=e1"),
        dest,
        SipTransport::Udp,
    )
    .unwrap();
    assert_eq!(d.remote_tag, "e1");
    assert_eq!(d.remote_target, "sip:1001@192.168.1.30:5062");
    assert_eq!(d.peer, dest);
    assert_eq!(d.local_uri, "sip:support@lingxi.local");
    // 180 without To tag, 200 without Contact, 486: no dialog.
    for (status, tag) in [
        ("180 Ringing", ""),
        ("200 OK", ";tag=x"),
        ("486 Busy Here", ";tag=x"),
    ] {
        assert!(
            uac_dialog(&invite, &response(status, tag), dest, SipTransport::Udp).is_err(),
            "{status}"
        );
    }
}

#[test]
fn check_incoming_orders_cseq_and_refreshes_target() {
    let mut d = uas();
    let request = |method: &str, seq: u32, contact: &str| {
        parse_request(&format!(
            "{method} sip:support@10.0.0.50:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKin{seq}\r\n\
             From: <sip:alice@example.com>;tag=1928301774\r\n\
             To: <sip:support@lingxi.local>;tag=LX-TAG-1\r\n\
             Call-ID: a84b4c76e66710@pc33.example.com\r\n\
             CSeq: {seq} {method}\r\n\
             {contact}\
             Content-Length: 0\r\n\r\n"
        ))
    };
    // An old CSeq is refused and changes nothing.
    let before = d.clone();
    let e = check_incoming(&mut d, &request("BYE", 314158, "")).unwrap_err();
    assert!(e.to_string().contains("314158"), "{e}");
    assert_eq!(d, before);
    assert!(check_incoming(&mut d, &request("INFO", 314159, "")).is_err());
    // A re-INVITE with a new Contact refreshes the target.
    check_incoming(
        &mut d,
        &request(
            "INVITE",
            314160,
            "Contact: <sip:alice@192.168.1.21:5070>\r\n",
        ),
    )
    .unwrap();
    assert_eq!(d.remote_seq, Some(314160));
    assert_eq!(d.remote_target, "sip:alice@192.168.1.21:5070");
    // ACK and CANCEL are not counted.
    check_incoming(&mut d, &request("ACK", 314160, "")).unwrap();
    assert_eq!(d.remote_seq, Some(314160));
    // An in-dialog request with Contact that is not a target refresh leaves the target.
    check_incoming(
        &mut d,
        &request("INFO", 314161, "Contact: <sip:alice@192.168.1.99>\r\n"),
    )
    .unwrap();
    assert_eq!(d.remote_target, "sip:alice@192.168.1.21:5070");
    // Another dialog's request is refused.
    let mut other = request("BYE", 314170, "");
    other.headers.retain(|h| !matches!(h, Header::From(_)));
    other
        .headers
        .push(rsip::headers::From::new("<sip:alice@example.com>;tag=zzz").into());
    assert!(check_incoming(&mut d, &other).is_err());
    // CSeq method must match.
    let mut wrong = request("BYE", 314171, "");
    wrong.method = Method::Info;
    assert!(check_incoming(&mut d, &wrong).is_err());
}

#[test]
fn check_incoming_learns_the_remote_tag_of_an_early_dialog() {
    let mut d = uas();
    d.role = DialogRole::Uac;
    d.remote_tag.clear();
    d.remote_seq = None;
    let update = parse_request(
        "UPDATE sip:support@10.0.0.50:5060 SIP/2.0\r\n\
         From: <sip:alice@example.com>;tag=newtag\r\n\
         To: <sip:support@lingxi.local>;tag=lx-tag-1\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: 7 UPDATE\r\n\
         Content-Length: 0\r\n\r\n",
    );
    check_incoming(&mut d, &update).unwrap();
    assert_eq!(d.remote_tag, "newtag");
    assert_eq!(d.remote_seq, Some(7));
}

#[test]
fn matching_follows_the_dialog_id() {
    let d = uas();
    let cid = "a84b4c76e66710@pc33.example.com";
    assert!(matches(&d, cid, Some("1928301774"), Some("lx-tag-1"), true));
    assert!(matches(
        &d,
        cid,
        Some("lx-tag-1"),
        Some("1928301774"),
        false
    ));
    assert!(matches(&d, cid, Some("1928301774"), Some("LX-TAG-1"), true));
    assert!(!matches(
        &d,
        cid,
        Some("lx-tag-1"),
        Some("1928301774"),
        true
    ));
    assert!(!matches(
        &d,
        "A84B4C76E66710@pc33.example.com",
        Some("1928301774"),
        Some("lx-tag-1"),
        true
    ));
    assert!(!matches(&d, cid, None, Some("lx-tag-1"), true));
    assert!(!matches(&d, cid, Some("1928301774"), None, true));
    let mut early = d.clone();
    early.remote_tag.clear();
    assert!(matches(
        &early,
        cid,
        Some("lx-tag-1"),
        Some("anything"),
        false
    ));
    assert!(matches(&early, cid, Some("lx-tag-1"), None, false));
}

#[test]
fn restored_record_builds_the_identical_request() {
    let mut original = uas();
    original.local_sdp = Some(SDP.to_owned());
    // What another node holds after replication: an equal, separately owned record.
    let mut restored = original.clone();
    assert_eq!(restored, original);
    let a = make_request(&mut original, Method::Bye, None).unwrap();
    let b = make_request(&mut restored, Method::Bye, None).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    assert_eq!(original, restored);
}

#[test]
fn local_contact_forms() {
    assert_eq!(
        local_contact("support", "10.0.0.50", 5060, SipTransport::Udp),
        "sip:support@10.0.0.50:5060"
    );
    assert_eq!(
        local_contact("support", "10.0.0.50", 5070, SipTransport::Tcp),
        "sip:support@10.0.0.50:5070;transport=tcp"
    );
    assert_eq!(
        local_contact("", "2001:db8::5", 5060, SipTransport::Udp),
        "sip:[2001:db8::5]:5060"
    );
}

#[test]
fn uri_helpers() {
    assert_eq!(
        uri_socket("sip:user@10.1.2.3:5070;lr"),
        Some("10.1.2.3:5070".parse().unwrap())
    );
    assert_eq!(
        uri_socket("SIPS:10.1.2.3"),
        Some("10.1.2.3:5061".parse().unwrap())
    );
    assert_eq!(
        uri_socket("sip:[2001:db8::1]:5080;transport=tcp"),
        Some("[2001:db8::1]:5080".parse().unwrap())
    );
    assert_eq!(uri_socket("sip:proxy.example.com;lr"), None);
    assert_eq!(uri_socket("tel:+15551234"), None);
    assert_eq!(uri_socket("sip:1.2.3.4:99999"), None);
    assert_eq!(uri_socket("sip:"), None);
    assert!(uri_has_param("sip:p;LR", "lr"));
    assert!(uri_has_param("sip:p;lr=on", "lr"));
    assert!(!uri_has_param("sip:lr@p", "lr"));
    assert!(!uri_has_param("sip:p;flr", "lr"));
    assert_eq!(
        split_list("\"A, B\" <sip:a@b;x=1,2>, <sip:c>,, sip:d"),
        vec!["\"A, B\" <sip:a@b;x=1,2>", "<sip:c>", "sip:d"]
    );
    let n = parse_name_addr("\"<odd>\" <sip:a@b>;tag=1;expires=\"60\"").unwrap();
    assert_eq!(n.uri, "sip:a@b");
    assert_eq!(n.tag(), Some("1"));
    assert_eq!(parse_name_addr("sip:a@b;tag=2").unwrap().tag(), Some("2"));
    for junk in ["", "<>", "<sip:a", "\"unterminated <sip:a>", "a b"] {
        assert!(parse_name_addr(junk).is_none(), "{junk:?}");
    }
}
