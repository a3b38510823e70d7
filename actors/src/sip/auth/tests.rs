use super::*;

/// RFC 2617 §3.5's worked example.
const RFC2617_AUTHORIZATION: &str = "Digest username=\"Mufasa\",\r\n \
    realm=\"testrealm@host.com\",\r\n \
    nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n \
    uri=\"/dir/index.html\",\r\n \
    qop=auth,\r\n \
    nc=00000001,\r\n \
    cnonce=\"0a4f113b\",\r\n \
    response=\"6629fae49393a05397450978507c4ef1\",\r\n \
    opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

#[test]
fn rfc2617_worked_example_verifies() {
    let creds = parse_authorization(RFC2617_AUTHORIZATION).expect("parses");
    assert_eq!(creds.username, "Mufasa");
    assert_eq!(creds.realm, "testrealm@host.com");
    assert_eq!(creds.uri, "/dir/index.html");
    assert_eq!(creds.qop.as_deref(), Some("auth"));
    assert_eq!(creds.nc.as_deref(), Some("00000001"));
    assert_eq!(creds.cnonce.as_deref(), Some("0a4f113b"));
    assert_eq!(
        creds.opaque.as_deref(),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );
    let h = ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
    assert!(verify(&creds, "GET", &h));
    assert!(!verify(&creds, "POST", &h));
    assert!(!verify(
        &creds,
        "GET",
        &ha1("Mufasa", "testrealm@host.com", "circle of life")
    ));
}

#[test]
fn respond_reproduces_the_rfc_example() {
    let challenge = Challenge {
        realm: "testrealm@host.com".to_owned(),
        nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".to_owned(),
        opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".to_owned()),
        stale: false,
    };
    let value = respond(
        &challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        "0a4f113b",
        1,
    );
    assert!(
        value.contains("response=\"6629fae49393a05397450978507c4ef1\""),
        "{value}"
    );
    let creds = parse_authorization(&value).unwrap();
    assert_eq!(creds.opaque, challenge.opaque);
    assert!(verify(
        &creds,
        "GET",
        &ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    ));
}

#[test]
fn sipp_like_header_in_any_order_and_case() {
    let keeper = NonceKeeper::new([7; 16]);
    let nonce = keeper.issue(1_000);
    let challenge = Challenge {
        realm: "lingxi.local".to_owned(),
        nonce: nonce.clone(),
        opaque: None,
        stale: false,
    };
    // What sipp's [authentication] produces, reordered and with odd spacing and case.
    let good = respond(
        &challenge,
        "REGISTER",
        "sip:127.0.0.1:5060",
        "1001",
        "secret",
        "6b8b4567",
        1,
    );
    let response = parse_authorization(&good).unwrap().response;
    let header = format!(
        "digest  USERNAME=\"1001\" , Realm=\"lingxi.local\",cnonce=\"6b8b4567\",nc=00000001,\
         qop=auth,uri=\"sip:127.0.0.1:5060\",nonce=\"{nonce}\",response=\"{}\",algorithm=MD5",
        response.to_uppercase()
    );
    let creds = parse_authorization(&header).unwrap();
    assert_eq!(creds.username, "1001");
    assert_eq!(creds.algorithm.as_deref(), Some("MD5"));
    assert!(verify(
        &creds,
        "REGISTER",
        &ha1("1001", "lingxi.local", "secret")
    ));
    assert_eq!(keeper.check(&creds.nonce, 1_010, 300), NonceCheck::Valid);
}

#[test]
fn without_qop_rfc2069_form() {
    let h = ha1("alice", "lingxi.local", "pw");
    let ha2 = md5_hex("INVITE:sip:bob@lingxi.local");
    let response = md5_hex(&format!("{h}:abc:{ha2}"));
    let creds = parse_authorization(&format!(
        "Digest username=\"alice\", realm=\"lingxi.local\", nonce=\"abc\", \
         uri=\"sip:bob@lingxi.local\", response=\"{response}\""
    ))
    .unwrap();
    assert!(verify(&creds, "INVITE", &h));
    // qop=auth without nc/cnonce, auth-int and unknown algorithms are refused.
    let mut bad = creds.clone();
    bad.qop = Some("auth".to_owned());
    assert!(!verify(&bad, "INVITE", &h));
    let mut bad = creds.clone();
    bad.qop = Some("auth-int".to_owned());
    assert!(!verify(&bad, "INVITE", &h));
    let mut bad = creds;
    bad.algorithm = Some("SHA-256".to_owned());
    assert!(!verify(&bad, "INVITE", &h));
}

#[test]
fn quoted_values_may_hold_commas_and_escapes() {
    let creds = parse_authorization(
        "Digest realm=\"a, b\",username=\"x\\\"y\",nonce=n,uri=\"sip:a,b@c\",response=\"r\"",
    )
    .unwrap();
    assert_eq!(creds.realm, "a, b");
    assert_eq!(creds.username, "x\"y");
    assert_eq!(creds.nonce, "n");
    assert_eq!(creds.uri, "sip:a,b@c");
}

#[test]
fn errors_name_the_missing_parameter() {
    let e = parse_authorization("Digest username=\"bob\", realm=\"r\", uri=\"u\", response=\"x\"")
        .unwrap_err();
    assert_eq!(
        e,
        SipError::Auth {
            user: "bob".to_owned(),
            detail: "Digest header lacks the nonce parameter".to_owned()
        }
    );
    let e = parse_authorization("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap_err();
    assert!(e.to_string().contains("Basic"), "{e}");
    for junk in [
        "",
        "Digest",
        "Digest ,,,",
        "Digest username",
        "Digest username=\"open",
        "Digest =x",
        "Digest username=\"é\"\\",
    ] {
        assert!(parse_authorization(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn challenge_header_value_and_parse_back() {
    let c = Challenge {
        realm: "lingxi.local".to_owned(),
        nonce: "abc".to_owned(),
        opaque: Some("op".to_owned()),
        stale: true,
    };
    assert_eq!(
        c.to_header_value(),
        "Digest realm=\"lingxi.local\",nonce=\"abc\",algorithm=MD5,qop=\"auth\",opaque=\"op\",stale=TRUE"
    );
    assert_eq!(Challenge::parse(&c.to_header_value()).unwrap(), c);
    let plain = Challenge {
        opaque: None,
        stale: false,
        ..c
    };
    assert_eq!(
        plain.to_header_value(),
        "Digest realm=\"lingxi.local\",nonce=\"abc\",algorithm=MD5,qop=\"auth\""
    );
}

#[test]
fn nonces_are_checked_for_origin_and_age() {
    let keeper = NonceKeeper::new([1; 16]);
    let nonce = keeper.issue(10_000);
    assert_eq!(nonce.len(), 48);
    assert_eq!(keeper.check(&nonce, 10_000, 60), NonceCheck::Valid);
    assert_eq!(keeper.check(&nonce, 10_060, 60), NonceCheck::Valid);
    assert_eq!(keeper.check(&nonce, 10_061, 60), NonceCheck::Stale);
    // Another node with the same secret accepts it; another secret does not.
    assert_eq!(
        NonceKeeper::new([1; 16]).check(&nonce, 10_001, 60),
        NonceCheck::Valid
    );
    assert_eq!(
        NonceKeeper::new([2; 16]).check(&nonce, 10_001, 60),
        NonceCheck::Invalid
    );
    assert_eq!(
        NonceKeeper::random().check(&nonce, 10_001, 60),
        NonceCheck::Invalid
    );
    // A tampered timestamp or mac, odd lengths, non-ASCII and far-future nonces are invalid.
    let mut tampered = nonce.clone().into_bytes();
    tampered[15] = if tampered[15] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(keeper.check(&tampered, 10_000, 60), NonceCheck::Invalid);
    assert_eq!(keeper.check("", 10_000, 60), NonceCheck::Invalid);
    assert_eq!(keeper.check(&nonce[..47], 10_000, 60), NonceCheck::Invalid);
    assert_eq!(
        keeper.check(&format!("{}é", &nonce[..46]), 10_000, 60),
        NonceCheck::Invalid
    );
    let future = keeper.issue(10_000 + NonceKeeper::MAX_SKEW_SECS + 1);
    assert_eq!(keeper.check(&future, 10_000, 60), NonceCheck::Invalid);
    let near_future = keeper.issue(10_005);
    assert_eq!(keeper.check(&near_future, 10_000, 60), NonceCheck::Valid);
    assert!(!format!("{keeper:?}").contains('1'));
}
