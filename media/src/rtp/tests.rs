use super::*;

fn header() -> RtpHeader {
    RtpHeader {
        marker: true,
        payload_type: 8,
        sequence: 0xBEEF,
        timestamp: 0xDEAD_0001,
        ssrc: 0x1234_5678,
    }
}

#[test]
fn write_then_parse() {
    let mut out = Vec::new();
    write(&header(), &[1, 2, 3], &mut out);
    assert_eq!(out.len(), 15);
    let (h, r) = parse(&out).unwrap();
    assert_eq!(h, header());
    assert_eq!(&out[r], &[1, 2, 3]);
    // reuse clears
    write(
        &RtpHeader {
            marker: false,
            ..header()
        },
        &[9],
        &mut out,
    );
    assert_eq!(out.len(), 13);
    assert!(!parse(&out).unwrap().0.marker);
}

#[test]
fn csrcs_extension_and_padding_are_skipped() {
    // V=2, P=1, X=1, CC=2
    let mut p = vec![0x80 | 0x20 | 0x10 | 2, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    p.extend_from_slice(&[0xAA; 8]); // 2 CSRCs
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1]); // extension header, 1 word
    p.extend_from_slice(&[0xCC; 4]);
    p.extend_from_slice(&[5, 6, 7]); // payload
    p.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
    let (h, r) = parse(&p).unwrap();
    assert_eq!(h.payload_type, 0);
    assert_eq!(h.ssrc, 7);
    assert_eq!(&p[r], &[5, 6, 7]);
}

#[test]
fn truncated_and_malformed_are_rejected() {
    let mut good = Vec::new();
    write(&header(), &[1; 160], &mut good);
    for n in 0..12 {
        assert!(parse(&good[..n]).is_err(), "len {n}");
    }
    // CSRC count larger than packet
    let mut p = good[..12].to_vec();
    p[0] |= 3;
    assert!(matches!(
        parse(&p),
        Err(MediaError::Truncated {
            what: "csrc list",
            ..
        })
    ));
    // extension header cut
    let mut p = good[..14].to_vec();
    p[0] |= 0x10;
    assert!(parse(&p).is_err());
    // extension length beyond end
    let mut p = good[..12].to_vec();
    p[0] |= 0x10;
    p.extend_from_slice(&[0, 0, 0, 9]);
    assert!(parse(&p).is_err());
    // padding too long / zero
    let mut p = good[..14].to_vec();
    p[0] |= 0x20;
    p[13] = 5;
    assert!(matches!(parse(&p), Err(MediaError::BadPadding { .. })));
    p[13] = 0;
    assert!(parse(&p).is_err());
    // version
    let mut p = good.clone();
    p[0] = 0x40;
    assert!(matches!(
        parse(&p),
        Err(MediaError::BadVersion { version: 1 })
    ));
    // padding on a bare header
    let mut p = good[..12].to_vec();
    p[0] |= 0x20;
    assert!(parse(&p).is_err());
}

#[test]
fn fuzz_never_panics() {
    let mut seed = 0x1234_5678u32;
    let mut buf = [0u8; 64];
    for _ in 0..20_000 {
        for b in buf.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        buf[0] = (buf[0] & 0x3F) | 0x80;
        let n = (seed % 64) as usize;
        if let Ok((_, r)) = parse(&buf[..n]) {
            assert!(r.start <= r.end && r.end <= n);
        }
    }
}
