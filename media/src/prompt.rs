//! What can be played to a leg: [`PcmClip`] (8 kHz mono audio, loaded from WAV or the
//! built-in hold music) and [`Prompt`].

use std::f32::consts::TAU;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::{Codec, MediaError, g711};

/// Sample rate of everything the switch plays and records.
pub const SAMPLE_RATE: u32 = 8000;

/// What to play to a leg.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// The engine's hold music (configured file or the built-in tune).
    HoldMusic,
    /// A clip loaded by the caller (IVR prompt, announcement); shared, never copied.
    Clip(Arc<PcmClip>),
}

/// 8 kHz mono 16-bit audio, ready to play. Its G.711 encodings are computed once, on
/// first use, so playback to many legs is a copy per frame.
pub struct PcmClip {
    /// The audio, 8000 samples per second.
    samples: Vec<i16>,
    /// `samples` encoded in µ-law and A-law (index [`Codec::idx`]), filled lazily.
    encoded: [OnceLock<Box<[u8]>>; 2],
}

impl std::fmt::Debug for PcmClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcmClip")
            .field("samples", &self.samples.len())
            .field("ms", &self.duration_ms())
            .finish()
    }
}

impl PcmClip {
    /// A clip from 8 kHz mono samples.
    pub fn from_samples(samples: Vec<i16>) -> PcmClip {
        PcmClip {
            samples,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Loads a 16-bit PCM WAV (8, 16, 44.1 or 48 kHz — any rate works — mono or stereo),
    /// downmixes it to mono and resamples it to 8 kHz. Blocking: call it at start-up or
    /// from `spawn_blocking`.
    pub fn load_wav(path: &Path) -> Result<PcmClip, MediaError> {
        let wav_err = |source| MediaError::Wav {
            path: path.to_path_buf(),
            source,
        };
        let fmt_err = |reason: String| MediaError::WavFormat {
            path: path.to_path_buf(),
            reason,
        };
        let reader = hound::WavReader::open(path).map_err(wav_err)?;
        let spec = reader.spec();
        if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            return Err(fmt_err(format!(
                "need 16-bit integer PCM, found {}-bit {:?}",
                spec.bits_per_sample, spec.sample_format
            )));
        }
        if spec.channels != 1 && spec.channels != 2 {
            return Err(fmt_err(format!(
                "need mono or stereo, found {} channels",
                spec.channels
            )));
        }
        if !(4000..=192_000).contains(&spec.sample_rate) {
            return Err(fmt_err(format!(
                "unsupported sample rate {} Hz",
                spec.sample_rate
            )));
        }
        let channels = spec.channels as usize;
        let mut mono = Vec::with_capacity(reader.len() as usize / channels);
        let mut acc = 0i32;
        let mut n = 0usize;
        for s in reader.into_samples::<i16>() {
            acc += s.map_err(wav_err)? as i32;
            n += 1;
            if n == channels {
                mono.push((acc / channels as i32) as i16);
                acc = 0;
                n = 0;
            }
        }
        if mono.is_empty() {
            return Err(fmt_err("contains no audio".into()));
        }
        Ok(PcmClip::from_samples(resample(
            &mono,
            spec.sample_rate,
            SAMPLE_RATE,
        )))
    }

    /// The built-in hold music: about 8 s of a soft pentatonic melody over a slow bass,
    /// synthesised with envelopes so it loops without a click.
    pub fn hold_music() -> PcmClip {
        PcmClip::from_samples(synth_hold_music())
    }

    /// The audio, 8 kHz mono.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / SAMPLE_RATE as u64
    }

    /// The clip encoded with `codec`, computed on first use.
    pub(crate) fn encoded(&self, codec: Codec) -> &[u8] {
        self.encoded[codec.idx()].get_or_init(|| {
            self.samples
                .iter()
                .map(|&s| g711::encode(codec, s))
                .collect()
        })
    }
}

/// Linear-interpolation resampler; when shrinking, each output sample averages the
/// input samples it covers (a box filter) to keep aliasing down.
fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let ratio = from as f64 / to as f64;
    let out_len = ((input.len() as f64) / ratio).floor().max(1.0) as usize;
    let mut out = Vec::with_capacity(out_len);
    let last = input.len() - 1;
    for i in 0..out_len {
        let pos = i as f64 * ratio;
        let v = if ratio > 1.0 {
            let lo = pos.floor() as usize;
            let hi = ((pos + ratio).floor() as usize)
                .min(input.len())
                .max(lo + 1);
            let sum: i64 = input[lo.min(last)..hi.min(input.len())]
                .iter()
                .map(|&s| s as i64)
                .sum();
            sum as f64 / (hi - lo.min(last)).max(1) as f64
        } else {
            let lo = (pos.floor() as usize).min(last);
            let hi = (lo + 1).min(last);
            let frac = pos - lo as f64;
            input[lo] as f64 * (1.0 - frac) + input[hi] as f64 * frac
        };
        out.push(v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16);
    }
    out
}

/// Renders the built-in tune: 16 half-second steps of a C-major pentatonic melody
/// (plucked tone, three harmonics, exponential decay) over a soft sustained bass.
fn synth_hold_music() -> Vec<i16> {
    const STEP: usize = 4000; // 0.5 s
    // Semitones from C4; -1 is a rest.
    const MELODY: [i32; 16] = [4, 7, 9, 12, 9, 7, 4, 2, 0, 2, 4, 7, 4, 2, 0, -1];
    // Bass root per 2 s bar, semitones from C4: C3, A2, G2, C3.
    const BASS: [i32; 4] = [-12, -15, -17, -12];
    let total = STEP * MELODY.len();
    let mut mix = vec![0f32; total];
    let freq = |semi: i32| 261.626f32 * 2f32.powf(semi as f32 / 12.0);
    let sr = SAMPLE_RATE as f32;
    for (i, &semi) in MELODY.iter().enumerate() {
        if semi < 0 {
            continue;
        }
        let f = freq(semi);
        let start = i * STEP;
        let len = (STEP * 2).min(total - start); // let notes ring into the next step
        for n in 0..len {
            let t = n as f32 / sr;
            let attack = (t / 0.015).min(1.0);
            let release = ((len - n) as f32 / (0.05 * sr)).min(1.0);
            let env = attack * (-t / 0.45).exp() * release;
            let ph = TAU * f * t;
            let tone = ph.sin() + 0.35 * (2.0 * ph).sin() + 0.12 * (3.0 * ph).sin();
            mix[start + n] += 0.30 * env * tone;
        }
    }
    let bar = STEP * 4;
    for (i, &semi) in BASS.iter().enumerate() {
        let f = freq(semi);
        let start = i * bar;
        for n in 0..bar.min(total - start) {
            let t = n as f32 / sr;
            let env = (t / 0.3).min(1.0) * ((bar - n) as f32 / (0.3 * sr)).min(1.0);
            let ph = TAU * f * t;
            mix[start + n] += 0.16 * env * (ph.sin() + 0.2 * (2.0 * ph).sin());
        }
    }
    let peak = mix.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let gain = 0.35 * i16::MAX as f32 / peak;
    // fade the last 30 ms so the loop point is click-free
    let fade = (0.03 * sr) as usize;
    mix.iter()
        .enumerate()
        .map(|(n, v)| {
            let tail = ((total - n) as f32 / fade as f32).min(1.0);
            (v * gain * tail) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests;
