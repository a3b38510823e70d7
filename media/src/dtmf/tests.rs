use super::*;

fn ev(event: u8, end: bool, duration: u16) -> DtmfEvent {
    DtmfEvent {
        event,
        end,
        volume: 10,
        duration,
    }
}

#[test]
fn parse_and_write() {
    let e = parse(&[11, 0x8A, 0x03, 0x20]).unwrap();
    assert_eq!(
        e,
        DtmfEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800
        }
    );
    assert_eq!(write(&e), [11, 0x8A, 0x03, 0x20]);
    assert!(parse(&[1, 2, 3]).is_err());
}

#[test]
fn digits_round_trip() {
    for c in "0123456789*#ABCD".chars() {
        assert_eq!(digit(event_code(c).unwrap()), Some(c));
    }
    assert_eq!(event_code('b'), Some(13));
    assert_eq!(event_code('x'), None);
    assert_eq!(digit(16), None);
}

#[test]
fn detector_reports_each_press_once() {
    let mut d = DtmfDetector::new();
    let mut got = String::new();
    // "1" at ts 1000: 3 continuation + 3 end retransmits
    for (i, end) in [
        (1u16, false),
        (2, false),
        (3, false),
        (4, true),
        (4, true),
        (4, true),
    ] {
        if let Some(c) = d.on_packet(1000, &ev(1, end, i * 160)) {
            got.push(c);
        }
    }
    // "1" again, new timestamp: a second press
    for end in [false, true, true, true] {
        if let Some(c) = d.on_packet(5000, &ev(1, end, 400)) {
            got.push(c);
        }
    }
    // only end packets of "#" arrive (start lost)
    for _ in 0..3 {
        if let Some(c) = d.on_packet(9000, &ev(11, true, 800)) {
            got.push(c);
        }
    }
    // late retransmit of the first press
    assert_eq!(d.on_packet(5000, &ev(1, true, 400)), None);
    assert_eq!(got, "11#");
    // non-digit event never reported
    assert_eq!(d.on_packet(12000, &ev(16, false, 160)), None);
}
