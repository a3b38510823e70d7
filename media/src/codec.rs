//! [`Codec`] and [`Leg`]: the two small enums everything else is keyed by.

/// An audio codec the switch relays, plays and records: G.711 in both laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law (North America, Japan), static payload type 0.
    Pcmu,
    /// G.711 A-law (China, Europe), static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name as in SDP `a=rtpmap`: `"PCMU"` / `"PCMA"`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec carried by a static payload type, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The codec named in SDP (`"PCMU"`, `"pcma"`...), case-insensitive.
    pub fn from_name(s: &str) -> Option<Codec> {
        if s.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if s.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    /// The codec a `[media] codecs` entry names.
    pub fn from_config(c: lingxi_config::CodecName) -> Codec {
        match c {
            lingxi_config::CodecName::Pcmu => Codec::Pcmu,
            lingxi_config::CodecName::Pcma => Codec::Pcma,
        }
    }

    /// Position in per-codec arrays.
    pub(crate) fn idx(self) -> usize {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
        }
    }
}

/// One side of a bridged call. The switch anchors media, so each leg has its own socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The caller (customer).
    A,
    /// The agent (or whatever the call is connected to).
    B,
}

impl Leg {
    /// The leg on the other side of the bridge.
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    /// Position in per-leg arrays.
    pub(crate) fn idx(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

#[cfg(test)]
mod tests;
