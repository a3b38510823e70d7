//! SDP offer/answer for one G.711 audio stream (RFC 3264 over RFC 4566), parsed and printed
//! with `rtc-sdp`.
//!
//! Lingxi only ever needs the first `m=audio` section of a peer's SDP: where to send RTP, which
//! payload types the peer offers, its `telephone-event` payload type (RFC 4733 DTMF), the
//! direction (hold) and the packetisation time. [`parse_audio`] extracts that into an
//! [`AudioOffer`], [`negotiate`] picks the codec of an answer, and [`build_audio`] prints our
//! own offer or answer.

use crate::sip::SipError;
use rtc_sdp::SessionDescription;
use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaDescription, MediaName, RangedPort};
use rtc_sdp::description::session::{Origin, TimeDescription, Timing};
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

/// The media direction of a stream (RFC 3264 §5.1), from the point of view of the side that
/// wrote the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default when no direction attribute is present).
    SendRecv,
    /// `a=sendonly`: the writer sends but does not want to receive (it put the call on hold).
    SendOnly,
    /// `a=recvonly`: the writer only receives.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    /// The direction seen from the other side: what an answer must say to mirror an offer
    /// (sendonly ↔ recvonly; sendrecv and inactive stay).
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The attribute name, e.g. `"sendrecv"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Parses a direction attribute name (case-insensitive); `None` for other attributes.
    fn from_attribute(key: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| key.eq_ignore_ascii_case(d.as_str()))
    }
}

/// What a peer's SDP says about its audio stream (the first `m=audio` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioOffer {
    /// Where the peer wants RTP: the `c=` address (media level, else session level) and the
    /// `m=` port. `0.0.0.0` is the RFC 2543 way of putting a call on hold.
    pub addr: SocketAddr,
    /// The audio codecs, in the order of the `m=` line (the peer's preference): payload type
    /// and upper-case encoding name, e.g. `(0, "PCMU")`. Static payload types (RFC 3551) are
    /// named without `a=rtpmap`; dynamic ones without an rtpmap are left out.
    /// `telephone-event` is not listed here but in `telephone_event_pt`.
    pub codecs: Vec<(u8, String)>,
    /// Payload type of `telephone-event/8000` (RFC 4733 DTMF), when offered.
    pub telephone_event_pt: Option<u8>,
    /// The stream's direction as the peer wrote it (media level, else session level, else
    /// sendrecv); `c=0.0.0.0` turns sendrecv into sendonly and recvonly into inactive
    /// (RFC 3264 §8.4 legacy hold).
    pub direction: Direction,
    /// `a=ptime` in milliseconds, when given.
    pub ptime: Option<u32>,
}

impl AudioOffer {
    /// Whether the peer put the call on hold: it does not want to receive media
    /// (sendonly, inactive, or a `0.0.0.0` connection address).
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.addr.ip().is_unspecified()
    }
}

/// Encoding names of the static audio payload types of RFC 3551 §6, understood without rtpmap.
fn static_payload_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        16 | 17 => "DVI4",
        18 => "G729",
        _ => return None,
    })
}

/// Parses the first `m=audio` section of `sdp` (the body of a call's INVITE, 200 or re-INVITE).
///
/// Errors ([`SipError::Sdp`], naming `call_id`) say what is missing or malformed: unparsable
/// SDP, no `m=audio`, port 0 (stream rejected), no `c=` at either level, a non-IP address,
/// or no codec Lingxi can name.
pub fn parse_audio(sdp: &str, call_id: &str) -> Result<AudioOffer, SipError> {
    let err = |detail: String| SipError::Sdp {
        call_id: call_id.to_owned(),
        detail,
    };
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| err(format!("unparsable SDP: {e}")))?;
    let media = desc
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media.eq_ignore_ascii_case("audio"))
        .ok_or_else(|| err("no m=audio line".to_owned()))?;

    let port = u16::try_from(media.media_name.port.value).map_err(|_| {
        err(format!(
            "m=audio port {} out of range",
            media.media_name.port
        ))
    })?;
    if port == 0 {
        return Err(err(
            "m=audio port 0: the audio stream is rejected".to_owned()
        ));
    }
    let connection = media
        .connection_information
        .as_ref()
        .and_then(|c| c.address.as_ref())
        .or_else(|| {
            desc.connection_information
                .as_ref()
                .and_then(|c| c.address.as_ref())
        })
        .ok_or_else(|| err("no c= connection address at session or media level".to_owned()))?;
    let ip: IpAddr = connection
        .address
        .split('/')
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(|_| {
            err(format!(
                "c= connection address {:?} is not an IP address",
                connection.address
            ))
        })?;

    let rtpmaps: Vec<(u8, &str, &str)> = media
        .attributes
        .iter()
        .filter(|a| a.key.eq_ignore_ascii_case("rtpmap"))
        .filter_map(|a| parse_rtpmap(a.value.as_deref()?))
        .collect();
    let mut codecs = Vec::new();
    let mut telephone_event_pt = None;
    for format in &media.media_name.formats {
        let Ok(pt) = format.parse::<u8>() else {
            continue;
        };
        let mapped = rtpmaps.iter().find(|(p, _, _)| *p == pt);
        let name = match (mapped, static_payload_name(pt)) {
            (Some((_, name, _)), _) => name.to_ascii_uppercase(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => continue,
        };
        if name == "TELEPHONE-EVENT" {
            let rate_8k = mapped.is_none_or(|(_, _, rate)| *rate == "8000");
            if telephone_event_pt.is_none() && rate_8k {
                telephone_event_pt = Some(pt);
            }
        } else if !codecs.iter().any(|(p, _)| *p == pt) {
            codecs.push((pt, name));
        }
    }
    if codecs.is_empty() {
        return Err(err(format!(
            "m=audio offers no codec Lingxi can name (formats {:?})",
            media.media_name.formats
        )));
    }

    let direction = direction_of(&media.attributes)
        .or_else(|| direction_of(&desc.attributes))
        .unwrap_or(Direction::SendRecv);
    let direction = if ip.is_unspecified() {
        match direction {
            Direction::SendRecv => Direction::SendOnly,
            Direction::RecvOnly => Direction::Inactive,
            other => other,
        }
    } else {
        direction
    };
    let ptime = attribute_value(&media.attributes, "ptime")
        .or_else(|| attribute_value(&desc.attributes, "ptime"))
        .and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok());

    Ok(AudioOffer {
        addr: SocketAddr::new(ip, port),
        codecs,
        telephone_event_pt,
        direction,
        ptime,
    })
}

/// Splits an rtpmap value `<pt> <name>/<rate>[/<channels>]` into pt, name and rate.
fn parse_rtpmap(value: &str) -> Option<(u8, &str, &str)> {
    let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.trim();
    let rate = parts.next().unwrap_or("").trim();
    Some((pt.parse().ok()?, name, rate))
}

/// The last direction attribute in `attributes`, if any.
fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter_map(|a| Direction::from_attribute(&a.key))
        .next_back()
}

/// The value of the first attribute named `key` (case-insensitive).
fn attribute_value<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.key.eq_ignore_ascii_case(key))
        .and_then(|a| a.value.as_deref())
}

/// Picks the codec of an answer: the first of the offerer's codecs (offer order, as
/// RFC 3264 §6.1 asks answerers to honour) whose name is in `supported` (case-insensitive).
/// `None` when there is no common codec (the call is then refused with 488).
pub fn negotiate(offer: &AudioOffer, supported: &[&str]) -> Option<(u8, String)> {
    offer
        .codecs
        .iter()
        .find(|(_, name)| supported.iter().any(|s| s.eq_ignore_ascii_case(name)))
        .cloned()
}

/// Prints an audio-only SDP offer or answer, with CRLF line ends:
///
/// ```text
/// v=0
/// o=Lingxi <session_id> <version> IN IP4 <ip>
/// s=Lingxi
/// c=IN IP4 <ip>
/// t=0 0
/// m=audio <port> RTP/AVP <pts...> [<te>]
/// a=rtpmap:<pt> <name>/8000           (one per codec)
/// a=rtpmap:<te> telephone-event/8000  (when telephone_event_pt)
/// a=fmtp:<te> 0-16
/// a=ptime:<ptime>
/// a=<direction>
/// ```
///
/// `codecs` are `(payload type, encoding name)` in our preference order (in an answer: the
/// negotiated codec). IPv6 addresses are written with `IP6`. `version` must grow with every
/// changed SDP of the session (RFC 3264 §8).
pub fn build_audio(
    session_id: u64,
    version: u64,
    addr: SocketAddr,
    codecs: &[(u8, &str)],
    telephone_event_pt: Option<u8>,
    direction: Direction,
    ptime: u32,
) -> String {
    let address_type = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip().to_string();
    let mut attributes: Vec<Attribute> = codecs
        .iter()
        .map(|(pt, name)| {
            Attribute::new(
                "rtpmap".to_owned(),
                Some(format!("{pt} {name}/{}", clock_rate(name))),
            )
        })
        .collect();
    let mut formats: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
    if let Some(te) = telephone_event_pt {
        formats.push(te.to_string());
        attributes.push(Attribute::new(
            "rtpmap".to_owned(),
            Some(format!("{te} telephone-event/8000")),
        ));
        attributes.push(Attribute::new(
            "fmtp".to_owned(),
            Some(format!("{te} 0-16")),
        ));
    }
    attributes.push(Attribute::new("ptime".to_owned(), Some(ptime.to_string())));
    attributes.push(Attribute::new(direction.as_str().to_owned(), None));

    let desc = SessionDescription {
        version: 0,
        origin: Origin {
            username: "Lingxi".to_owned(),
            session_id,
            session_version: version,
            network_type: "IN".to_owned(),
            address_type: address_type.to_owned(),
            unicast_address: ip.clone(),
        },
        session_name: "Lingxi".to_owned(),
        session_information: None,
        uri: None,
        email_address: None,
        phone_number: None,
        connection_information: Some(ConnectionInformation {
            network_type: "IN".to_owned(),
            address_type: address_type.to_owned(),
            address: Some(Address {
                address: ip,
                ttl: None,
                range: None,
            }),
        }),
        bandwidth: vec![],
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        time_zones: vec![],
        encryption_key: None,
        attributes: vec![],
        media_descriptions: vec![MediaDescription {
            media_name: MediaName {
                media: "audio".to_owned(),
                port: RangedPort {
                    value: isize::try_from(addr.port()).unwrap_or_default(),
                    range: None,
                },
                protos: vec!["RTP".to_owned(), "AVP".to_owned()],
                formats,
            },
            media_title: None,
            connection_information: None,
            bandwidth: vec![],
            encryption_key: None,
            attributes,
        }],
    };
    desc.marshal()
}

/// RTP clock rate written in rtpmap for an audio encoding (RFC 3551; G.722 is 8000 by its
/// historical erratum).
fn clock_rate(name: &str) -> u32 {
    match name.to_ascii_uppercase().as_str() {
        "L16" => 44100,
        "OPUS" => 48000,
        _ => 8000,
    }
}

/// The `o=` session version of an SDP body, when it has a well-formed `o=` line.
pub fn origin_version(sdp: &str) -> Option<u64> {
    let line = sdp.lines().find_map(|l| l.trim().strip_prefix("o="))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests;
