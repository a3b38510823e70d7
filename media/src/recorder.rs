//! Call recording: a stereo 16-bit 8 kHz WAV (left = leg A, right = leg B) written by a
//! dedicated std thread, fed through a bounded channel of fixed-size messages so the
//! packet path never allocates, blocks or touches the disk.
//!
//! Alignment: each chunk is stamped with the recording clock (in samples) when it
//! arrived. The writer places it on its channel's timeline — right after the previous
//! chunk if it arrived within jitter, at its stamp after a real gap (silence
//! suppression, hold) — in a small ring of stereo frames, and writes frames once they
//! are [`JITTER`] behind the newest stamp. A silent channel is thus filled with silence
//! and both channels stay aligned.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use tokio::time::Instant;

use crate::{Codec, Leg, MediaError, g711};

/// Payload bytes per message; longer payloads are split.
const CHUNK: usize = 160;
/// Messages the channel holds (~0.3 s of both legs at 20 ms packets): bounds memory.
const QUEUE: usize = 32;
/// How far behind the newest stamp frames are held back for late chunks (150 ms).
const JITTER: u64 = 1200;
/// Size of the frame ring (0.5 s); must exceed `JITTER` plus a chunk.
const RING: usize = 4000;
/// A chunk starting more than this after its channel's end starts a new talkspurt at its
/// stamp; closer ones are appended back to back (absorbs network jitter).
const GAP: u64 = 480;

/// One piece of audio from one leg, as it travels to the writer thread.
pub(crate) struct Chunk {
    /// Which channel: 0 = leg A (left), 1 = leg B (right).
    channel: u8,
    /// The law the bytes are in.
    codec: Codec,
    /// Recording clock, in samples, when the packet arrived (end of its audio).
    stamp: u64,
    /// Valid bytes in `data`.
    len: u8,
    /// G.711 bytes, decoded on the writer thread.
    data: [u8; CHUNK],
}

/// The packet path's handle on a running recording.
pub(crate) struct RecTap {
    /// Bounded channel to the writer; full means the disk is behind, and audio is dropped.
    tx: SyncSender<Chunk>,
    /// Recording clock origin.
    start: Instant,
}

impl RecTap {
    /// Queues what `leg` sent; never blocks. Returns false if audio had to be dropped.
    pub(crate) fn push(&self, leg: Leg, codec: Codec, payload: &[u8], now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.start);
        let stamp = elapsed.as_micros() as u64 * 8 / 1000;
        let mut ok = true;
        for piece in payload.chunks(CHUNK) {
            let mut data = [0u8; CHUNK];
            data[..piece.len()].copy_from_slice(piece);
            let chunk = Chunk {
                channel: leg.idx() as u8,
                codec,
                stamp,
                len: piece.len() as u8,
                data,
            };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.tx.try_send(chunk)
            {
                ok = false;
            }
        }
        ok
    }
}

/// The owner's handle: finishing joins the writer thread.
pub(crate) struct Recording {
    /// The file being written, returned by `stop_recording`.
    pub(crate) path: PathBuf,
    /// The writer thread; yields how it ended.
    thread: JoinHandle<Result<(), hound::Error>>,
}

impl Recording {
    /// Waits for the writer to drain and finalise the WAV header (the tap must already
    /// be dropped, which closes the channel).
    pub(crate) fn finish(self, call_id: &str) {
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(call_id, path = %self.path.display(), error = %e, "recording failed")
            }
            Err(_) => {
                tracing::error!(call_id, path = %self.path.display(), "recording thread panicked")
            }
        }
    }
}

/// Creates the file (and its parent directories) and starts the writer thread.
pub(crate) fn start(
    call_id: &str,
    path: PathBuf,
    now: Instant,
) -> Result<(RecTap, Recording), MediaError> {
    let io_err = |source| MediaError::Recording {
        call_id: call_id.to_string(),
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let writer = hound::WavWriter::create(&path, spec).map_err(|source| match source {
        hound::Error::IoError(e) => io_err(e),
        other => MediaError::Wav {
            path: path.clone(),
            source: other,
        },
    })?;
    let (tx, rx) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("lingxi-rec".into())
        .stack_size(128 * 1024)
        .spawn(move || write_loop(writer, rx))
        .map_err(io_err)?;
    Ok((RecTap { tx, start: now }, Recording { path, thread }))
}

fn write_loop(
    mut writer: hound::WavWriter<BufWriter<File>>,
    rx: Receiver<Chunk>,
) -> Result<(), hound::Error> {
    let mut aligner = Aligner::new();
    let mut result = Ok(());
    let mut sink = |l: i16, r: i16| {
        if result.is_ok() {
            result = writer.write_sample(l).and_then(|()| writer.write_sample(r));
        }
    };
    let mut pcm = [0i16; CHUNK];
    while let Ok(chunk) = rx.recv() {
        let n = chunk.len as usize;
        for (o, b) in pcm.iter_mut().zip(&chunk.data[..n]) {
            *o = g711::decode(chunk.codec, *b);
        }
        aligner.push(chunk.channel as usize, chunk.stamp, &pcm[..n], &mut sink);
    }
    aligner.finish(&mut sink);
    result?;
    writer.finalize()
}

/// Places each channel's audio on a shared timeline and emits stereo frames in order.
pub(crate) struct Aligner {
    /// Frames not yet written, indexed by absolute frame number modulo `RING`.
    ring: Box<[(i16, i16); RING]>,
    /// Absolute frame number of the next frame to write.
    written: u64,
    /// Per channel: absolute frame number just past its last sample.
    cursor: [u64; 2],
    /// Newest stamp seen: the writer's notion of "now".
    latest: u64,
}

impl Aligner {
    pub(crate) fn new() -> Self {
        Aligner {
            ring: Box::new([(0, 0); RING]),
            written: 0,
            cursor: [0; 2],
            latest: 0,
        }
    }

    pub(crate) fn push(
        &mut self,
        ch: usize,
        stamp: u64,
        pcm: &[i16],
        sink: &mut impl FnMut(i16, i16),
    ) {
        let ch = ch.min(1);
        let n = pcm.len() as u64;
        let start = stamp.saturating_sub(n);
        let mut at = self.cursor[ch].max(self.written);
        if start > at + GAP {
            at = start;
        }
        // Keep the chunk inside the ring: write out older frames if needed.
        if at + n > self.written + RING as u64 {
            let upto = at + n - RING as u64;
            self.flush(upto, sink);
        }
        for (i, s) in pcm.iter().enumerate() {
            let slot = &mut self.ring[((at + i as u64) % RING as u64) as usize];
            if ch == 0 {
                slot.0 = *s;
            } else {
                slot.1 = *s;
            }
        }
        self.cursor[ch] = at + n;
        self.latest = self.latest.max(stamp);
        self.flush(self.latest.saturating_sub(JITTER), sink);
    }

    /// Writes every frame before `upto` (silence where nothing was placed).
    fn flush(&mut self, upto: u64, sink: &mut impl FnMut(i16, i16)) {
        while self.written < upto {
            let slot = &mut self.ring[(self.written % RING as u64) as usize];
            sink(slot.0, slot.1);
            *slot = (0, 0);
            self.written += 1;
        }
    }

    /// Writes everything placed so far; the shorter channel ends in silence.
    pub(crate) fn finish(&mut self, sink: &mut impl FnMut(i16, i16)) {
        let end = self.cursor[0].max(self.cursor[1]);
        self.flush(end, sink);
    }
}

#[cfg(test)]
mod tests;
