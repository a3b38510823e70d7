//! Call recording: a stereo 16-bit 8 kHz WAV (left = leg A, right = leg B) per recorded
//! call, written by a small fixed pool of writer threads shared by every recording of
//! the engine ([`RecorderPool`]), so 1,000 recorded calls cost [`WRITERS`] threads, not
//! 1,000.
//!
//! Each writer owns many WAV files keyed by recording id and drains one bounded channel
//! of fixed-size messages ([`Msg`]: open, audio chunk, close). The packet path only
//! copies the payload into a message and `try_send`s it: it never allocates, blocks or
//! touches the disk. A writer with open recordings polls its channel every [`POLL`]
//! instead of sleeping in `recv`, so a send never has to wake a thread (a futex call per
//! packet); a stop unparks it. Audio is dropped (and counted in
//! `lingxi_recording_dropped_frames_total`) when the recording already has
//! [`PER_RECORDING`] chunks in flight or the writer's queue is full. Opening and closing
//! are never dropped: they wait for room (or, when closing from a `Drop`, hand the wait
//! to a blocking task).
//!
//! Alignment: each chunk is stamped with the recording clock (in samples) when it
//! arrived. The writer places it on its channel's timeline — right after the previous
//! chunk if it arrived within jitter, at its stamp after a real gap (silence
//! suppression, hold) — in a small ring of stereo frames, and writes frames once they
//! are [`JITTER`] behind the newest stamp. A silent channel is thus filled with silence
//! and both channels stay aligned.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::Thread;
use std::time::Duration;

use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{Codec, Leg, MediaError, g711};

/// Payload bytes per message; longer payloads are split.
const CHUNK: usize = 160;
/// Writer threads per engine at most, started one by one as recordings begin.
pub(crate) const WRITERS: usize = 2;
/// Messages one writer's channel holds (~1.6 MiB; at 1,000 recorded calls at 20 ms
/// packets split over two writers, ~160 ms of audio): bounds the pool's memory.
const QUEUE: usize = 8192;
/// Audio chunks one recording may have queued (~0.3 s of both legs at 20 ms packets):
/// one flooding call cannot take the whole queue, and bounds a call's share of it.
const PER_RECORDING: usize = 32;
/// How often a writer with open recordings looks at its channel. At 1,000 recorded calls
/// that is ~500 messages per writer per look, far below [`QUEUE`].
const POLL: Duration = Duration::from_millis(10);
/// How long `stop_recording` waits for the writer to finish the file.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Frames handed to hound at once; hound keeps a buffer of this many (×4 bytes) per
/// recording.
const WRITE_BATCH: usize = 256;
/// Stack of a writer thread: it keeps its state on the heap.
const WRITER_STACK: usize = 256 * 1024;
/// How far behind the newest stamp frames are held back for late chunks (150 ms).
const JITTER: u64 = 1200;
/// Size of the frame ring (0.5 s); must exceed `JITTER` plus a chunk.
const RING: usize = 4000;
/// A chunk starting more than this after its channel's end starts a new talkspurt at its
/// stamp; closer ones are appended back to back (absorbs network jitter).
const GAP: u64 = 480;

/// The WAV writer type: hound over a buffered file.
type Wav = hound::WavWriter<BufWriter<File>>;

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

/// What a writer thread is told, in order, on its channel.
pub(crate) enum Msg {
    /// A recording starts: the writer takes over its (already created) file.
    Open(Box<OpenMsg>),
    /// Audio for recording `id`.
    Samples {
        /// The recording.
        id: u64,
        /// The audio.
        chunk: Chunk,
    },
    /// Recording `id` ends: write what is left, finalise the header, then reply on
    /// `done` (absent when nobody waits, e.g. the call was dropped).
    Close {
        /// The recording.
        id: u64,
        /// Told once the file is complete.
        done: Option<SyncSender<()>>,
    },
}

/// The parts of an [`Msg::Open`], boxed to keep the per-packet message small.
pub(crate) struct OpenMsg {
    /// Recording id, unique within the engine.
    id: u64,
    /// For logs.
    call_id: Box<str>,
    /// For logs.
    path: PathBuf,
    /// The file, header already buffered.
    wav: Wav,
    /// Chunks of this recording in the channel, shared with its [`RecTap`].
    in_flight: Arc<AtomicUsize>,
}

/// The engine's writer threads, started lazily.
pub(crate) struct RecorderPool {
    /// Senders to the writers started so far (at most [`WRITERS`]); locked only when a
    /// recording starts.
    writers: Mutex<Vec<Writer>>,
    /// Round-robin cursor over `writers`.
    next: AtomicUsize,
    /// Source of recording ids.
    ids: AtomicU64,
    /// Writer threads alive, for [`RecorderPool::threads`]; each thread decrements it
    /// as it exits.
    live: Arc<AtomicUsize>,
    /// `lingxi_recording_dropped_frames_total`: samples (1/8000 s of one leg) of audio
    /// dropped because the writer was behind.
    dropped: Counter,
    /// `lingxi_recordings_active`: files open in the writers.
    active: Gauge,
}

/// One writer thread as the pool knows it.
#[derive(Clone)]
struct Writer {
    /// Its channel.
    tx: SyncSender<Msg>,
    /// The thread, to unpark it when someone waits for a close.
    thread: Thread,
}

/// The packet path's handle on a running recording.
pub(crate) struct RecTap {
    /// The recording's writer; full means the disk is behind, and audio is dropped.
    tx: SyncSender<Msg>,
    /// The recording, as the writer knows it.
    id: u64,
    /// Chunks queued and not yet taken by the writer; capped at [`PER_RECORDING`].
    in_flight: Arc<AtomicUsize>,
    /// Recording clock origin.
    start: Instant,
    /// `lingxi_recording_dropped_frames_total`.
    dropped: Counter,
}

impl RecTap {
    /// Queues what `leg` sent; never blocks or allocates. Returns false if audio had to
    /// be dropped.
    pub(crate) fn push(&self, leg: Leg, codec: Codec, payload: &[u8], now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.start);
        let stamp = elapsed.as_micros() as u64 * 8 / 1000;
        let mut ok = true;
        for piece in payload.chunks(CHUNK) {
            if self.in_flight.fetch_add(1, Ordering::AcqRel) >= PER_RECORDING {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.dropped.increment(piece.len() as u64);
                ok = false;
                continue;
            }
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
                self.tx.try_send(Msg::Samples { id: self.id, chunk })
            {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.dropped.increment(piece.len() as u64);
                ok = false;
            }
        }
        ok
    }
}

/// The owner's handle. [`finish`](Recording::finish) closes the file and waits for it;
/// dropping it closes the file without waiting.
pub(crate) struct Recording {
    /// The file being written, returned by `stop_recording`.
    pub(crate) path: PathBuf,
    /// The recording, as the writer knows it.
    id: u64,
    /// The recording's writer; taken when the close is sent.
    writer: Option<Writer>,
}

impl Recording {
    /// Waits (up to [`STOP_WAIT`]) for the writer to write what is queued and finalise
    /// the WAV header. The tap must already be dropped, so no audio follows the close.
    pub(crate) fn finish(mut self, call_id: &str) {
        let Some(Writer { tx, thread }) = self.writer.take() else {
            return;
        };
        let (done_tx, done_rx) = sync_channel(1);
        let close = Msg::Close {
            id: self.id,
            done: Some(done_tx),
        };
        // Waiting for room is fine here: the caller is prepared to wait for the file.
        if tx.send(close).is_err() {
            tracing::error!(call_id, path = %self.path.display(), "recording writer is gone");
            return;
        }
        thread.unpark();
        if done_rx.recv_timeout(STOP_WAIT).is_err() {
            tracing::warn!(call_id, path = %self.path.display(), "recording not finished in time; it completes in the background");
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let Some(Writer { tx, .. }) = self.writer.take() else {
            return;
        };
        let close = Msg::Close {
            id: self.id,
            done: None,
        };
        match tx.try_send(close) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            // The writer is far behind: wait for room off this thread.
            Err(TrySendError::Full(close)) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || {
                        let _ = tx.send(close);
                    });
                }
                Err(_) => {
                    let _ = tx.send(close);
                }
            },
        }
    }
}

impl RecorderPool {
    /// A pool with no thread yet; metric handles are looked up once here.
    pub(crate) fn new() -> Self {
        RecorderPool {
            writers: Mutex::new(Vec::with_capacity(WRITERS)),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
            live: Arc::new(AtomicUsize::new(0)),
            dropped: metrics::counter!("lingxi_recording_dropped_frames_total"),
            active: metrics::gauge!("lingxi_recordings_active"),
        }
    }

    /// Writer threads currently alive.
    pub(crate) fn threads(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The writer for a new recording: the next one round-robin, starting a thread while
    /// fewer than [`WRITERS`] run.
    fn writer(&self) -> std::io::Result<Writer> {
        let mut writers = self.writers.lock();
        if writers.len() < WRITERS {
            let (tx, rx) = sync_channel(QUEUE);
            let live = self.live.clone();
            let active = self.active.clone();
            live.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name(format!("lingxi-rec-w{}", writers.len()))
                .stack_size(WRITER_STACK)
                .spawn(move || {
                    write_loop(rx, &active);
                    live.fetch_sub(1, Ordering::AcqRel);
                });
            match spawned {
                Ok(handle) => writers.push(Writer {
                    tx,
                    thread: handle.thread().clone(),
                }),
                Err(e) => {
                    self.live.fetch_sub(1, Ordering::AcqRel);
                    // Running with the writers we have is better than not recording.
                    if writers.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % writers.len();
        Ok(writers[i].clone())
    }

    /// Creates the file (and its parent directories) and hands it to a writer.
    pub(crate) fn start(
        &self,
        call_id: &str,
        path: PathBuf,
        now: Instant,
    ) -> Result<(RecTap, Recording), MediaError> {
        let io_err = |source| MediaError::Recording {
            call_id: call_id.to_string(),
            path: path.clone(),
            source,
        };
        let writer = self.writer().map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let wav = hound::WavWriter::create(&path, spec).map_err(|source| match source {
            hound::Error::IoError(e) => io_err(e),
            other => MediaError::Wav {
                path: path.clone(),
                source: other,
            },
        })?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let open = OpenMsg {
            id,
            call_id: call_id.into(),
            path: path.clone(),
            wav,
            in_flight: in_flight.clone(),
        };
        // Opening must not be lost: wait for room (the writer always drains).
        if writer.tx.send(Msg::Open(Box::new(open))).is_err() {
            return Err(io_err(std::io::Error::other("recording writer is gone")));
        }
        let tap = RecTap {
            tx: writer.tx.clone(),
            id,
            in_flight,
            start: now,
            dropped: self.dropped.clone(),
        };
        Ok((
            tap,
            Recording {
                path,
                id,
                writer: Some(writer),
            },
        ))
    }
}

/// A recording as its writer holds it.
struct Open {
    /// For logs.
    call_id: Box<str>,
    /// For logs.
    path: PathBuf,
    /// The file.
    wav: Wav,
    /// Places both channels on one timeline.
    aligner: Aligner,
    /// Chunks queued for this recording, decremented as they are taken.
    in_flight: Arc<AtomicUsize>,
    /// The first write error; later audio is discarded, and it is logged at close.
    result: Result<(), hound::Error>,
}

impl Open {
    /// Decodes a chunk and places it.
    fn push(&mut self, chunk: &Chunk, pcm: &mut [i16; CHUNK]) {
        let n = chunk.len as usize;
        for (o, b) in pcm.iter_mut().zip(&chunk.data[..n]) {
            *o = g711::decode(chunk.codec, *b);
        }
        let Open {
            wav,
            aligner,
            result,
            ..
        } = self;
        let mut sink = |frames: &[(i16, i16)]| write_frames(wav, result, frames);
        aligner.push(chunk.channel as usize, chunk.stamp, &pcm[..n], &mut sink);
    }

    /// Writes what is left and finalises the header; logs a failure.
    fn close(self) {
        let Open {
            call_id,
            path,
            mut wav,
            mut aligner,
            mut result,
            ..
        } = self;
        aligner.finish(&mut |frames: &[(i16, i16)]| write_frames(&mut wav, &mut result, frames));
        if let Err(e) = result.and_then(|()| wav.finalize()) {
            tracing::warn!(call_id = %call_id, path = %path.display(), error = %e, "recording failed");
        }
    }
}

/// Appends stereo frames to the file in batches of [`WRITE_BATCH`] (hound's 16-bit
/// fast path: one buffer copy per batch instead of checks and a call per sample).
/// After the first error nothing more is written.
fn write_frames(wav: &mut Wav, result: &mut Result<(), hound::Error>, frames: &[(i16, i16)]) {
    if result.is_err() {
        return;
    }
    for batch in frames.chunks(WRITE_BATCH) {
        let mut w = wav.get_i16_writer(batch.len() as u32 * 2);
        for &(l, r) in batch {
            w.write_sample(l);
            w.write_sample(r);
        }
        if let Err(e) = w.flush() {
            *result = Err(e);
            return;
        }
    }
}

/// One writer thread: serves its channel until every sender is gone.
fn write_loop(rx: Receiver<Msg>, active: &Gauge) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut pcm = [0i16; CHUNK];
    loop {
        // Idle, block; while recording, poll every `POLL` so the packet path's
        // `try_send` never has a sleeping thread to wake (a syscall per packet).
        let msg = if open.is_empty() {
            match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => {
                    // `Recording::finish` unparks us so a stop does not wait for the tick.
                    std::thread::park_timeout(POLL);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        };
        match msg {
            Msg::Open(o) => {
                let OpenMsg {
                    id,
                    call_id,
                    path,
                    wav,
                    in_flight,
                } = *o;
                active.increment(1.0);
                open.insert(
                    id,
                    Open {
                        call_id,
                        path,
                        wav,
                        aligner: Aligner::new(),
                        in_flight,
                        result: Ok(()),
                    },
                );
            }
            Msg::Samples { id, chunk } => {
                if let Some(rec) = open.get_mut(&id) {
                    rec.in_flight.fetch_sub(1, Ordering::AcqRel);
                    rec.push(&chunk, &mut pcm);
                }
            }
            Msg::Close { id, done } => {
                if let Some(rec) = open.remove(&id) {
                    rec.close();
                    active.decrement(1.0);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
    // The engine and every recording handle are gone; nothing more will come.
    for (_, rec) in open.drain() {
        rec.close();
        active.decrement(1.0);
    }
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
        sink: &mut impl FnMut(&[(i16, i16)]),
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
    fn flush(&mut self, upto: u64, sink: &mut impl FnMut(&[(i16, i16)])) {
        while self.written < upto {
            // The frames up to `upto` or the ring's end, whichever comes first.
            let i = (self.written % RING as u64) as usize;
            let n = ((upto - self.written) as usize).min(RING - i);
            let frames = &mut self.ring[i..i + n];
            sink(frames);
            frames.fill((0, 0));
            self.written += n as u64;
        }
    }

    /// Writes everything placed so far; the shorter channel ends in silence.
    pub(crate) fn finish(&mut self, sink: &mut impl FnMut(&[(i16, i16)])) {
        let end = self.cursor[0].max(self.cursor[1]);
        self.flush(end, sink);
    }
}

#[cfg(test)]
mod tests;
