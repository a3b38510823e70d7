//! RTP fixed header (RFC 3550 §5.1): parse what arrives, write what we send.
//!
//! Parsing never panics and never allocates: a malformed datagram is an `Err` the relay
//! counts and drops. Writing reuses the caller's buffer.

use std::ops::Range;

use crate::MediaError;

/// Length of the fixed RTP header we write (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

/// The fields of an RTP header the switch reads or rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit: start of a talkspurt (audio) or of a DTMF event.
    pub marker: bool,
    /// Payload type: which codec, or telephone-event, the payload is.
    pub payload_type: u8,
    /// Sequence number: lets the receiver detect loss and reordering.
    pub sequence: u16,
    /// Media timestamp in 8 kHz sample units: drives the receiver's playout.
    pub timestamp: u32,
    /// Synchronisation source: identifies one continuous stream.
    pub ssrc: u32,
}

/// Parses an RTP packet. Returns the header and the range of `buf` holding the payload,
/// past CSRCs and any header extension, with padding removed.
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, Range<usize>), MediaError> {
    let len = buf.len();
    if len < HEADER_LEN {
        return Err(MediaError::Truncated {
            what: "rtp header",
            len,
        });
    }
    let b0 = buf[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(MediaError::BadVersion { version });
    }
    let padding = b0 & 0x20 != 0;
    let extension = b0 & 0x10 != 0;
    let csrc_count = (b0 & 0x0F) as usize;
    let header = RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7F,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    let mut start = HEADER_LEN + 4 * csrc_count;
    if start > len {
        return Err(MediaError::Truncated {
            what: "csrc list",
            len,
        });
    }
    if extension {
        if start + 4 > len {
            return Err(MediaError::Truncated {
                what: "header extension",
                len,
            });
        }
        let words = u16::from_be_bytes([buf[start + 2], buf[start + 3]]) as usize;
        start += 4 + 4 * words;
        if start > len {
            return Err(MediaError::Truncated {
                what: "header extension",
                len,
            });
        }
    }
    let mut end = len;
    if padding {
        let pad = buf[len - 1] as usize;
        let available = len - start;
        if pad == 0 || pad > available {
            return Err(MediaError::BadPadding {
                padding: pad,
                available,
            });
        }
        end -= pad;
    }
    Ok((header, start..end))
}

/// Clears `out` and writes a 12-byte header (version 2, no padding, extension or CSRCs)
/// followed by `payload`. `out` keeps its capacity, so a reused buffer never reallocates.
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push(((h.marker as u8) << 7) | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests;
