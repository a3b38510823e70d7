//! G.711 µ-law and A-law (ITU-T G.711), after the classic Sun reference code.
//!
//! Decoding and law-to-law transcoding are 256-entry tables built at compile time, so the
//! relay's per-packet work is one lookup per byte; encoding is a few integer operations.

use crate::Codec;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn segment(v: i32, table: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if v <= table[i] {
            return i;
        }
        i += 1;
    }
    8
}

const fn ulaw_encode_const(s: i16) -> u8 {
    let mut v = (s as i32) >> 2;
    let mask: i32 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    if v > ULAW_CLIP {
        v = ULAW_CLIP;
    }
    v += ULAW_BIAS >> 2;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let u = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0xF);
    (u ^ mask) as u8
}

const fn ulaw_decode_const(b: u8) -> i16 {
    let u = !b as i32 & 0xFF;
    let mut t = ((u & 0x0F) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

const fn alaw_encode_const(s: i16) -> u8 {
    let mut v = (s as i32) >> 3;
    let mask: i32 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut a = (seg as i32) << 4;
    if seg < 2 {
        a |= (v >> 1) & 0xF;
    } else {
        a |= (v >> seg) & 0xF;
    }
    (a ^ mask) as u8
}

const fn alaw_decode_const(b: u8) -> i16 {
    let a = (b ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn build_decode(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_const(i as u8)
        } else {
            ulaw_decode_const(i as u8)
        };
        i += 1;
    }
    t
}

const fn build_transcode(ulaw_to_alaw: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw_to_alaw {
            alaw_encode_const(ulaw_decode_const(i as u8))
        } else {
            ulaw_encode_const(alaw_decode_const(i as u8))
        };
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = build_decode(false);
static ALAW_DECODE: [i16; 256] = build_decode(true);
static ULAW_TO_ALAW: [u8; 256] = build_transcode(true);
static ALAW_TO_ULAW: [u8; 256] = build_transcode(false);

/// Encodes one 16-bit linear sample as µ-law (`0` → `0xFF`).
pub fn ulaw_encode(s: i16) -> u8 {
    ulaw_encode_const(s)
}

/// Decodes one µ-law byte to a 16-bit linear sample.
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_DECODE[b as usize]
}

/// Encodes one 16-bit linear sample as A-law (`0` → `0xD5`).
pub fn alaw_encode(s: i16) -> u8 {
    alaw_encode_const(s)
}

/// Decodes one A-law byte to a 16-bit linear sample.
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_DECODE[b as usize]
}

/// Encodes one sample with `codec`.
pub fn encode(codec: Codec, s: i16) -> u8 {
    match codec {
        Codec::Pcmu => ulaw_encode(s),
        Codec::Pcma => alaw_encode(s),
    }
}

/// Decodes one byte of `codec`.
pub fn decode(codec: Codec, b: u8) -> i16 {
    match codec {
        Codec::Pcmu => ULAW_DECODE[b as usize],
        Codec::Pcma => ALAW_DECODE[b as usize],
    }
}

/// Rewrites a G.711 payload from one law to the other, in place, one table lookup per
/// byte. Does nothing when `from == to`.
pub fn transcode(from: Codec, to: Codec, payload: &mut [u8]) {
    let table = match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => &ULAW_TO_ALAW,
        (Codec::Pcma, Codec::Pcmu) => &ALAW_TO_ULAW,
        _ => return,
    };
    for b in payload.iter_mut() {
        *b = table[*b as usize];
    }
}

#[cfg(test)]
mod tests;
