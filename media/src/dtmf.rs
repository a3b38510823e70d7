//! RFC 4733 telephone-events: parsing the 4-byte event and turning the packet stream
//! into key presses.
//!
//! A phone sends several packets per key press, all with the RTP timestamp of the
//! event's start, and repeats the final (end) packet three times. [`DtmfDetector`]
//! reports a key once, on the first packet of an event it has not seen.

use crate::MediaError;

/// One RFC 4733 event payload (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Event code: 0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub event: u8,
    /// E bit: this packet ends the event (it is sent three times).
    pub end: bool,
    /// Power level in -dBm0 (0..=63); informational.
    pub volume: u8,
    /// Duration so far, in timestamp units (8 kHz samples).
    pub duration: u16,
}

/// Parses a telephone-event payload; only the first 4 bytes are read (RFC 4733 allows
/// several events per packet, the first is the current one).
pub fn parse(payload: &[u8]) -> Result<DtmfEvent, MediaError> {
    if payload.len() < 4 {
        return Err(MediaError::Truncated {
            what: "dtmf event",
            len: payload.len(),
        });
    }
    Ok(DtmfEvent {
        event: payload[0],
        end: payload[1] & 0x80 != 0,
        volume: payload[1] & 0x3F,
        duration: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// Writes `ev` as a 4-byte telephone-event payload.
pub fn write(ev: &DtmfEvent) -> [u8; 4] {
    let d = ev.duration.to_be_bytes();
    [
        ev.event,
        ((ev.end as u8) << 7) | (ev.volume & 0x3F),
        d[0],
        d[1],
    ]
}

/// The key for a DTMF event code: `0`-`9`, `*`, `#`, `A`-`D`; `None` for other events
/// (flash, tones).
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The event code for a key (`a`-`d` accepted as `A`-`D`).
pub fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// How many recent events are remembered, so a late retransmission of an earlier
/// event after a new one started is still recognised.
const REMEMBERED: usize = 4;

/// Turns a leg's telephone-event packets into key presses, each exactly once.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    /// `(rtp timestamp, event code)` of the most recent events, newest at `next - 1`:
    /// an RFC 4733 event is identified by its start timestamp.
    seen: [Option<(u32, u8)>; REMEMBERED],
    /// Ring index where the next new event is remembered.
    next: usize,
}

impl DtmfDetector {
    /// A detector that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet; returns the key if this packet starts a key
    /// press not reported yet. Retransmissions and continuation packets return `None`.
    pub fn on_packet(&mut self, rtp_timestamp: u32, ev: &DtmfEvent) -> Option<char> {
        let key = (rtp_timestamp, ev.event);
        if self.seen.contains(&Some(key)) {
            return None;
        }
        self.seen[self.next] = Some(key);
        self.next = (self.next + 1) % REMEMBERED;
        digit(ev.event)
    }
}

#[cfg(test)]
mod tests;
