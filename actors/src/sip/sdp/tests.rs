use super::*;

/// A typical desk phone offer: PCMU, PCMA, G729 and DTMF, media-level c=.
const PHONE_OFFER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 18 101\r\n\
c=IN IP4 192.0.2.10\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

#[test]
fn parses_a_phone_offer() {
    let offer = parse_audio(PHONE_OFFER, "c1").expect("offer parses");
    assert_eq!(
        offer.addr,
        "192.0.2.10:49170".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        offer.codecs,
        vec![
            (8, "PCMA".to_owned()),
            (0, "PCMU".to_owned()),
            (18, "G729".to_owned())
        ]
    );
    assert_eq!(offer.telephone_event_pt, Some(101));
    assert_eq!(offer.direction, Direction::SendRecv);
    assert_eq!(offer.ptime, Some(20));
    assert!(!offer.is_hold());
}

#[test]
fn static_payload_types_need_no_rtpmap_and_session_c_applies() {
    // sipp's uac scenario: session-level c=, static PT 0 only, LF line ends.
    let sdp = "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\n\
               t=0 0\nm=audio 6000 RTP/AVP 0 8 96\na=rtpmap:96 opus/48000/2\n";
    let offer = parse_audio(sdp, "c2").expect("offer parses");
    assert_eq!(
        offer.addr,
        "127.0.0.1:6000".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        offer.codecs,
        vec![
            (0, "PCMU".to_owned()),
            (8, "PCMA".to_owned()),
            (96, "OPUS".to_owned())
        ]
    );
    assert_eq!(offer.telephone_event_pt, None);
    assert_eq!(offer.ptime, None);
}

#[test]
fn hold_by_attribute_and_by_zero_address() {
    let sendonly = PHONE_OFFER.replace("a=sendrecv", "a=sendonly");
    let offer = parse_audio(&sendonly, "c3").unwrap();
    assert_eq!(offer.direction, Direction::SendOnly);
    assert!(offer.is_hold());

    let zero = PHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    let offer = parse_audio(&zero, "c3").unwrap();
    assert_eq!(offer.direction, Direction::SendOnly);
    assert!(offer.is_hold());

    // Session-level direction applies when the media has none.
    let session_level = PHONE_OFFER
        .replace("a=sendrecv\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    let offer = parse_audio(&session_level, "c3").unwrap();
    assert_eq!(offer.direction, Direction::Inactive);
}

#[test]
fn errors_name_what_is_missing() {
    let no_c = PHONE_OFFER.replace("c=IN IP4 192.0.2.10\r\n", "");
    let e = parse_audio(&no_c, "c4").unwrap_err().to_string();
    assert!(e.contains("c4") && e.contains("no c= connection"), "{e}");

    let video = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                 m=video 5000 RTP/AVP 96\r\n";
    let e = parse_audio(video, "c4").unwrap_err().to_string();
    assert!(e.contains("no m=audio"), "{e}");

    let rejected = PHONE_OFFER.replace("m=audio 49170", "m=audio 0");
    let e = parse_audio(&rejected, "c4").unwrap_err().to_string();
    assert!(e.contains("port 0"), "{e}");

    let host = PHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 pbx.example.com");
    let e = parse_audio(&host, "c4").unwrap_err().to_string();
    assert!(e.contains("not an IP"), "{e}");

    let unknown = PHONE_OFFER
        .replace("8 0 18 101", "97")
        .replace("a=rtpmap:8 PCMA/8000\r\n", "");
    let e = parse_audio(&unknown, "c4").unwrap_err().to_string();
    assert!(e.contains("no codec"), "{e}");
}

#[test]
fn garbage_never_panics() {
    for input in [
        "",
        "v=0",
        "garbage\r\n",
        "v=0\r\no=\r\n",
        "v=0\r\no=- x y IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5 RTP/AVP x 300\r\na=rtpmap:\r\na=rtpmap:0\r\na=ptime:abc\r\n",
    ] {
        assert!(parse_audio(input, "c5").is_err(), "{input:?}");
    }
}

#[test]
fn negotiate_honours_offer_order() {
    let offer = parse_audio(PHONE_OFFER, "c6").unwrap();
    // We prefer PCMU, but the offerer listed PCMA first.
    assert_eq!(
        negotiate(&offer, &["PCMU", "PCMA"]),
        Some((8, "PCMA".to_owned()))
    );
    assert_eq!(negotiate(&offer, &["pcmu"]), Some((0, "PCMU".to_owned())));
    assert_eq!(negotiate(&offer, &["OPUS"]), None);
}

#[test]
fn build_prints_the_expected_lines_and_parses_back() {
    let sdp = build_audio(
        42,
        7,
        "10.1.2.3:30000".parse().unwrap(),
        &[(0, "PCMU"), (8, "PCMA")],
        Some(101),
        Direction::SendRecv,
        20,
    );
    assert_eq!(
        sdp,
        "v=0\r\n\
         o=Lingxi 42 7 IN IP4 10.1.2.3\r\n\
         s=Lingxi\r\n\
         c=IN IP4 10.1.2.3\r\n\
         t=0 0\r\n\
         m=audio 30000 RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
    let back = parse_audio(&sdp, "c7").unwrap();
    assert_eq!(
        back.addr,
        "10.1.2.3:30000".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        back.codecs,
        vec![(0, "PCMU".to_owned()), (8, "PCMA".to_owned())]
    );
    assert_eq!(back.telephone_event_pt, Some(101));
    assert_eq!(back.ptime, Some(20));
    assert_eq!(origin_version(&sdp), Some(7));
}

#[test]
fn build_an_ipv6_hold_answer() {
    let sdp = build_audio(
        1,
        2,
        "[2001:db8::1]:4000".parse().unwrap(),
        &[(8, "PCMA")],
        None,
        Direction::SendOnly.reverse(),
        30,
    );
    assert!(sdp.contains("c=IN IP6 2001:db8::1\r\n"), "{sdp}");
    assert!(sdp.contains("a=recvonly\r\n"), "{sdp}");
    assert!(!sdp.contains("telephone-event"), "{sdp}");
    let back = parse_audio(&sdp, "c8").unwrap();
    assert_eq!(back.direction, Direction::RecvOnly);
    assert_eq!(back.ptime, Some(30));
}

#[test]
fn direction_reverse_and_names() {
    assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
    assert_eq!(Direction::RecvOnly.reverse(), Direction::SendOnly);
    assert_eq!(Direction::SendRecv.reverse(), Direction::SendRecv);
    assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
    assert_eq!(Direction::Inactive.as_str(), "inactive");
}

#[test]
fn truncated_and_mangled_offers_never_panic() {
    for cut in 0..PHONE_OFFER.len() {
        let _ = parse_audio(&PHONE_OFFER[..cut], "c9");
    }
    let bytes = PHONE_OFFER.as_bytes();
    for i in 0..bytes.len() {
        for b in [b' ', b'=', b'/', b':', b'\n', b'0', b'x'] {
            let mut mangled = bytes.to_vec();
            mangled[i] = b;
            let _ = parse_audio(&String::from_utf8_lossy(&mangled), "c9");
        }
    }
}
