//! The playback ticker of one leg: every ptime, the next frame of the clip, encoded in
//! the leg's codec (pre-encoded once per clip), stamped into the leg's outbound stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::stream::Source;
use super::{CallShared, MediaEvent};
use crate::prompt::PcmClip;
use crate::rtp::{self, RtpHeader};
use crate::{Leg, g711};

/// Plays `clip` to `leg` while the leg's `play_gen` is `gen_`.
pub(crate) async fn run(
    shared: Arc<CallShared>,
    leg: Leg,
    gen_: u64,
    clip: Arc<PcmClip>,
    looped: bool,
) {
    let frame = shared.engine.frame.max(1);
    let mut ticker = tokio::time::interval(Duration::from_micros(frame as u64 * 125));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut payload = vec![0u8; frame];
    let mut out = Vec::with_capacity(rtp::HEADER_LEN + frame);
    let len = clip.samples().len();
    let mut pos = 0usize;
    let mut k: u32 = 0;
    let ls = shared.leg(leg);
    loop {
        ticker.tick().await;
        if !looped && pos >= len {
            let mine = {
                let mut st = ls.state.lock();
                let mine = st.play_gen == gen_;
                if mine {
                    st.play_gen = 0;
                }
                mine
            };
            if mine {
                shared.emit(MediaEvent::PlaybackEnded { leg });
            }
            return;
        }
        let now = Instant::now();
        let step = {
            let mut st = ls.state.lock();
            if st.play_gen != gen_ {
                return;
            }
            match st.remote {
                Some(dest) if !st.held => {
                    let (sequence, timestamp, marker) = st.out.stamp(
                        Source::Playback(gen_),
                        k as u16,
                        k.wrapping_mul(frame as u32),
                        false,
                        now,
                    );
                    let pt = st.codec.payload_type();
                    Some((
                        dest,
                        RtpHeader {
                            marker,
                            payload_type: pt,
                            sequence,
                            timestamp,
                            ssrc: st.out.ssrc,
                        },
                        st.codec,
                    ))
                }
                _ => None,
            }
        };
        // Fill the frame: clip bytes, wrapping when looped, silence past the end.
        let mut filled = 0;
        let enc = step.as_ref().map(|s| clip.encoded(s.2));
        while filled < frame {
            if pos >= len {
                if looped && len > 0 {
                    pos = 0;
                } else {
                    if let Some((_, _, codec)) = &step {
                        payload[filled..].fill(g711::encode(*codec, 0));
                    }
                    break;
                }
            }
            let n = (frame - filled).min(len - pos);
            if let Some(enc) = enc {
                payload[filled..filled + n].copy_from_slice(&enc[pos..pos + n]);
            }
            filled += n;
            pos += n;
        }
        if let Some((dest, header, _)) = step {
            rtp::write(&header, &payload, &mut out);
            ls.send(&out, dest, &shared.engine);
        }
        k = k.wrapping_add(1);
    }
}
