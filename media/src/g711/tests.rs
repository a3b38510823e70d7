use super::*;

#[test]
fn known_values() {
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(alaw_encode(0), 0xD5);
    assert_eq!(ulaw_decode(0xFF), 0);
    assert_eq!(alaw_decode(0xD5), 8);
    assert_eq!(ulaw_encode(i16::MAX), 0x80);
    assert_eq!(ulaw_encode(i16::MIN), 0x00);
    assert_eq!(alaw_encode(i16::MAX), 0xAA);
    assert_eq!(alaw_encode(i16::MIN), 0x2A);
    assert_eq!(ulaw_decode(0x80), 32124);
    assert_eq!(alaw_decode(0xAA), 32256);
}

#[test]
fn every_code_round_trips() {
    for b in 0..=255u8 {
        // 0x7F and 0xFF both decode to 0 in µ-law; 0 encodes as 0xFF.
        let u = ulaw_encode(ulaw_decode(b));
        assert_eq!(ulaw_decode(u), ulaw_decode(b), "ulaw {b:#x}");
        assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#x}");
    }
}

#[test]
fn linear_round_trip_error_is_small() {
    for s in (i16::MIN..=i16::MAX).step_by(7) {
        let u = ulaw_decode(ulaw_encode(s)) as i32;
        let a = alaw_decode(alaw_encode(s)) as i32;
        let tol = (s as i32).abs() / 16 + 40;
        assert!((u - s as i32).abs() <= tol, "ulaw {s} -> {u}");
        assert!((a - s as i32).abs() <= tol, "alaw {s} -> {a}");
    }
}

#[test]
fn transcode_in_place_matches_decode_encode() {
    let mut buf: Vec<u8> = (0..=255).collect();
    transcode(Codec::Pcmu, Codec::Pcma, &mut buf);
    for (i, b) in buf.iter().enumerate() {
        assert_eq!(*b, alaw_encode(ulaw_decode(i as u8)));
    }
    let mut same: Vec<u8> = (0..=255).collect();
    transcode(Codec::Pcma, Codec::Pcma, &mut same);
    assert!(same.iter().enumerate().all(|(i, b)| *b == i as u8));
    let mut back = vec![alaw_encode(1000); 4];
    transcode(Codec::Pcma, Codec::Pcmu, &mut back);
    let v = ulaw_decode(back[0]) as i32;
    assert!((v - 1000).abs() < 80, "{v}");
}
