//! The outbound stream toward one leg: one SSRC, continuous sequence numbers and
//! timestamps whatever feeds it (relay from the other leg, playback).
//!
//! Each feed ("source") keeps its own numbering; when the source changes, new offsets
//! are chosen so the stream continues right after the last packet sent — with the
//! timestamp advanced by the wall time that passed — and the marker bit is set. Within
//! one source, sequence gaps and reordering are passed through, so the phone's jitter
//! buffer still sees loss.

use rand::Rng;
use tokio::time::Instant;

/// What feeds a leg's outbound stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Nothing sent yet.
    None,
    /// Relayed from the other leg's stream with this SSRC.
    Relay(u32),
    /// A playback of this generation.
    Playback(u64),
}

/// Rewriting state of one leg's outbound stream.
#[derive(Debug)]
pub(crate) struct OutStream {
    /// Our SSRC toward the leg, fixed for the call.
    pub(crate) ssrc: u32,
    /// The current feed.
    source: Source,
    /// Added to the feed's sequence numbers.
    seq_off: u16,
    /// Added to the feed's timestamps.
    ts_off: u32,
    /// Highest sequence number sent.
    last_seq: u16,
    /// Highest timestamp sent.
    last_ts: u32,
    /// When the last packet was sent; `None` before the first.
    last_sent: Option<Instant>,
}

impl OutStream {
    /// A stream with a random SSRC, first sequence number and first timestamp (RFC 3550).
    pub(crate) fn new() -> Self {
        let mut rng = rand::rng();
        OutStream {
            ssrc: rng.random(),
            source: Source::None,
            seq_off: 0,
            ts_off: 0,
            last_seq: rng.random::<u16>() & 0x7FFF,
            last_ts: rng.random(),
            last_sent: None,
        }
    }

    /// Maps a packet of `source` numbered `(seq, ts)` into the outbound stream; returns the
    /// sequence number, timestamp and marker to send.
    pub(crate) fn stamp(
        &mut self,
        source: Source,
        seq: u16,
        ts: u32,
        marker: bool,
        now: Instant,
    ) -> (u16, u32, bool) {
        let mut marker = marker;
        if self.source != source {
            let (next_seq, next_ts) = match self.last_sent {
                Some(t) => {
                    let gap = now.saturating_duration_since(t).as_micros() as u64 * 8 / 1000;
                    let gap = gap.clamp(160, u32::MAX as u64 / 4) as u32;
                    (
                        self.last_seq.wrapping_add(1),
                        self.last_ts.wrapping_add(gap),
                    )
                }
                None => (self.last_seq.wrapping_add(1), self.last_ts),
            };
            self.seq_off = next_seq.wrapping_sub(seq);
            self.ts_off = next_ts.wrapping_sub(ts);
            self.source = source;
            marker = true;
        }
        let out_seq = seq.wrapping_add(self.seq_off);
        let out_ts = ts.wrapping_add(self.ts_off);
        let first = self.last_sent.is_none();
        if first || (out_seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = out_seq;
        }
        if first || (out_ts.wrapping_sub(self.last_ts) as i32) > 0 {
            self.last_ts = out_ts;
        }
        self.last_sent = Some(now);
        (out_seq, out_ts, marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuous_across_source_switches() {
        let mut s = OutStream::new();
        let t0 = Instant::now();
        let (s0, t_0, m0) = s.stamp(Source::Playback(1), 0, 0, false, t0);
        assert!(m0);
        let (s1, t_1, m1) = s.stamp(
            Source::Playback(1),
            1,
            160,
            false,
            t0 + Duration::from_millis(20),
        );
        assert_eq!(
            (s1, t_1, m1),
            (s0.wrapping_add(1), t_0.wrapping_add(160), false)
        );
        // switch to relay of a stream with wild numbering, 40 ms later
        let (s2, t_2, m2) = s.stamp(
            Source::Relay(9),
            60000,
            4_000_000_000,
            false,
            t0 + Duration::from_millis(60),
        );
        assert!(m2);
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(t_2, t_1.wrapping_add(320));
        // a lost packet in the relay stays a gap; a late one goes back in place
        let (s3, _, _) = s.stamp(
            Source::Relay(9),
            60002,
            4_000_000_320,
            false,
            t0 + Duration::from_millis(100),
        );
        assert_eq!(s3, s2.wrapping_add(2));
        let (s4, t_4, _) = s.stamp(
            Source::Relay(9),
            60001,
            4_000_000_160,
            false,
            t0 + Duration::from_millis(101),
        );
        assert_eq!((s4, t_4), (s2.wrapping_add(1), t_2.wrapping_add(160)));
        // back to playback: continues after the highest sent
        let (s5, _, m5) = s.stamp(
            Source::Playback(2),
            0,
            0,
            false,
            t0 + Duration::from_millis(120),
        );
        assert!(m5);
        assert_eq!(s5, s3.wrapping_add(1));
    }
}
