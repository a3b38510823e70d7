use super::*;

#[test]
fn payload_types_and_names_round_trip() {
    for c in [Codec::Pcmu, Codec::Pcma] {
        assert_eq!(Codec::from_payload_type(c.payload_type()), Some(c));
        assert_eq!(Codec::from_name(c.name()), Some(c));
        assert_eq!(Codec::from_name(&c.name().to_lowercase()), Some(c));
    }
    assert_eq!(Codec::Pcmu.payload_type(), 0);
    assert_eq!(Codec::Pcma.payload_type(), 8);
    assert_eq!(Codec::from_payload_type(18), None);
    assert_eq!(Codec::from_name("G729"), None);
    assert_eq!(
        Codec::from_config(lingxi_config::CodecName::Pcma),
        Codec::Pcma
    );
}

#[test]
fn leg_other() {
    assert_eq!(Leg::A.other(), Leg::B);
    assert_eq!(Leg::B.other(), Leg::A);
}
