//! [`CallMedia`]: one call's two RTP legs, the relay between them, playback and
//! recording.
//!
//! Each leg has one socket and one relay task ([`relay`]) that receives from it, and
//! forwards to the other leg when bridged. A playing leg also has a playback ticker
//! ([`playback`]). Whatever feeds a leg, its outbound stream keeps one SSRC and
//! continuous sequence numbers and timestamps ([`stream`]), so phones do not glitch
//! when the switch moves between music and conversation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{EngineInner, PortLease};
use crate::recorder::{RecTap, Recording};
use crate::{Codec, Leg, MediaError, Prompt};

mod playback;
mod relay;
mod stream;

pub(crate) use relay::Meters;
use stream::OutStream;

/// Something the call actor should know about, from the media path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A key press (RFC 4733) received from `leg`, reported once per press.
    Dtmf {
        /// The leg that pressed it.
        leg: Leg,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// The first valid RTP packet arrived from `leg`: its media path works.
    FirstPacket {
        /// The leg heard from.
        leg: Leg,
    },
    /// A non-looped prompt played to `leg` reached its end (not sent on `stop_play`).
    PlaybackEnded {
        /// The leg it was played to.
        leg: Leg,
    },
}

/// Counters of one leg, for the call record and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Valid RTP packets received from the leg.
    pub packets_in: u64,
    /// RTP packets sent to the leg (relayed or played).
    pub packets_out: u64,
    /// Bytes of valid RTP received (whole datagrams).
    pub bytes_in: u64,
    /// Bytes of RTP sent.
    pub bytes_out: u64,
    /// Datagrams that were not valid RTP (or DTMF) and were dropped.
    pub malformed: u64,
    /// Valid packets dropped: from a source other than the latched one, of an unknown
    /// payload type, or refused by a full socket buffer.
    pub dropped: u64,
    /// Where the leg's media goes now (from SDP, or latched from what arrived).
    pub remote: Option<SocketAddr>,
}

/// Counters of both legs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Leg A, the caller.
    pub a: LegStats,
    /// Leg B, the agent.
    pub b: LegStats,
}

/// Lock-free counters updated on the packet path.
#[derive(Default)]
pub(crate) struct LegCounters {
    /// See [`LegStats::packets_in`].
    pub(crate) packets_in: AtomicU64,
    /// See [`LegStats::packets_out`].
    pub(crate) packets_out: AtomicU64,
    /// See [`LegStats::bytes_in`].
    pub(crate) bytes_in: AtomicU64,
    /// See [`LegStats::bytes_out`].
    pub(crate) bytes_out: AtomicU64,
    /// See [`LegStats::malformed`].
    pub(crate) malformed: AtomicU64,
    /// See [`LegStats::dropped`].
    pub(crate) dropped: AtomicU64,
}

/// What the relay and playback of one leg need to know, behind a short-held lock.
pub(crate) struct LegState {
    /// Where to send; from SDP, then latched to the real source (symmetric RTP).
    pub(crate) remote: Option<SocketAddr>,
    /// Whether `remote` was confirmed by a packet; until then any source is accepted.
    pub(crate) latched: bool,
    /// When the latched source last sent: a source silent for long may be replaced
    /// (NAT rebinding).
    pub(crate) last_rx: Option<Instant>,
    /// The codec the leg negotiated: what we send to it.
    pub(crate) codec: Codec,
    /// The leg's telephone-event payload type, if it negotiated one.
    pub(crate) te_pt: Option<u8>,
    /// Held: nothing is sent to the leg.
    pub(crate) held: bool,
    /// Generation of the playback feeding the leg, 0 when none: while playing, relayed
    /// audio toward the leg is dropped, and a stale ticker knows to stop.
    pub(crate) play_gen: u64,
    /// Sequence/timestamp/SSRC rewriting of what we send to the leg.
    pub(crate) out: OutStream,
}

/// One leg: its socket and state.
pub(crate) struct LegShared {
    /// The socket the leg's phone talks to.
    pub(crate) socket: UdpSocket,
    /// Bound port with the advertised IP: what goes into SDP.
    pub(crate) local: SocketAddr,
    /// Mutable state; never held across an await.
    pub(crate) state: Mutex<LegState>,
    /// Packet counters.
    pub(crate) counters: LegCounters,
    /// The playback ticker feeding this leg, to abort on stop.
    pub(crate) playback: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the owner and the call's tasks.
pub(crate) struct CallShared {
    /// Call id, for logs and events.
    pub(crate) call_id: Box<str>,
    /// The engine (hold music, frame size).
    pub(crate) engine: Arc<EngineInner>,
    /// Leg A then leg B.
    pub(crate) legs: [LegShared; 2],
    /// Whether the relay forwards between the legs.
    pub(crate) bridged: AtomicBool,
    /// Source of playback generations.
    pub(crate) next_gen: AtomicU64,
    /// Events to the call actor.
    pub(crate) events: UnboundedSender<MediaEvent>,
    /// Fast check before taking the `tap` lock on every packet.
    pub(crate) recording: AtomicBool,
    /// The running recording's input, if any.
    pub(crate) tap: Mutex<Option<RecTap>>,
    /// Runtime the tasks run on, so `play` works from any thread.
    pub(crate) rt: tokio::runtime::Handle,
    /// The ports; declared last so it drops after the sockets are closed.
    pub(crate) _lease: PortLease,
}

impl CallShared {
    pub(crate) fn leg(&self, leg: Leg) -> &LegShared {
        &self.legs[leg.idx()]
    }

    pub(crate) fn emit(&self, ev: MediaEvent) {
        // The owner may have dropped the receiver: nothing to do then.
        let _ = self.events.send(ev);
    }
}

/// One call's media, owned by the call actor. Dropping it stops its tasks, finishes any
/// recording and frees its ports.
pub struct CallMedia {
    /// Shared with the relay and playback tasks.
    shared: Arc<CallShared>,
    /// The two relay tasks, aborted on drop.
    relays: [JoinHandle<()>; 2],
    /// Event receiver until `take_events`.
    events: Option<UnboundedReceiver<MediaEvent>>,
    /// The running recording's writer, if any.
    recording: Mutex<Option<Recording>>,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("call_id", &self.shared.call_id)
            .field("a", &self.shared.legs[0].local)
            .field("b", &self.shared.legs[1].local)
            .finish()
    }
}

impl CallMedia {
    /// Wraps freshly bound sockets and starts the relay tasks.
    pub(crate) fn start(
        engine: Arc<EngineInner>,
        call_id: &str,
        sockets: [std::net::UdpSocket; 2],
        lease: PortLease,
    ) -> Result<CallMedia, MediaError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime {
            call_id: call_id.into(),
        })?;
        let [sa, sb] = sockets;
        let make = |leg: Leg, s: std::net::UdpSocket| -> Result<LegShared, MediaError> {
            let bind_err = |addr: SocketAddr| {
                move |source: std::io::Error| MediaError::Bind {
                    call_id: call_id.into(),
                    leg,
                    addr,
                    source,
                }
            };
            let addr = s
                .local_addr()
                .map_err(bind_err(SocketAddr::new(engine.bind_ip, 0)))?;
            s.set_nonblocking(true).map_err(bind_err(addr))?;
            let socket = UdpSocket::from_std(s).map_err(bind_err(addr))?;
            let port = addr.port();
            Ok(LegShared {
                socket,
                local: SocketAddr::new(engine.advertised_ip, port),
                state: Mutex::new(LegState {
                    remote: None,
                    latched: false,
                    last_rx: None,
                    codec: Codec::Pcmu,
                    te_pt: None,
                    held: false,
                    play_gen: 0,
                    out: OutStream::new(),
                }),
                counters: LegCounters::default(),
                playback: Mutex::new(None),
            })
        };
        let legs = [make(Leg::A, sa)?, make(Leg::B, sb)?];
        let (tx, rx) = unbounded_channel();
        engine.active.fetch_add(1, Ordering::Relaxed);
        engine.meters.sessions.increment(1.0);
        let shared = Arc::new(CallShared {
            call_id: call_id.into(),
            engine,
            legs,
            bridged: AtomicBool::new(false),
            next_gen: AtomicU64::new(1),
            events: tx,
            recording: AtomicBool::new(false),
            tap: Mutex::new(None),
            rt: rt.clone(),
            _lease: lease,
        });
        let relays = [
            rt.spawn(relay::run(shared.clone(), Leg::A)),
            rt.spawn(relay::run(shared.clone(), Leg::B)),
        ];
        tracing::debug!(call_id, a = %shared.legs[0].local, b = %shared.legs[1].local, "media allocated");
        Ok(CallMedia {
            shared,
            relays,
            events: Some(rx),
            recording: Mutex::new(None),
        })
    }

    /// The call id the media was allocated for.
    pub fn call_id(&self) -> &str {
        &self.shared.call_id
    }

    /// The leg's socket address as peers must see it (advertised IP, bound port): what
    /// goes into SDP `c=`/`m=`.
    pub fn local_addr(&self, leg: Leg) -> SocketAddr {
        self.shared.leg(leg).local
    }

    /// Sets where the leg's media goes, its codec and telephone-event payload type, from
    /// SDP. The next packet received decides the real address (symmetric RTP latching).
    pub fn set_remote(
        &self,
        leg: Leg,
        remote: SocketAddr,
        codec: Codec,
        telephone_event_pt: Option<u8>,
    ) {
        let mut st = self.shared.leg(leg).state.lock();
        st.remote = Some(remote);
        st.latched = false;
        st.codec = codec;
        st.te_pt = telephone_event_pt;
    }

    /// Streams `prompt` to `leg` in ptime frames with the leg's codec, instead of bridged
    /// audio, until it ends (unless `looped`), `stop_play` or `bridge`.
    pub fn play(&self, leg: Leg, prompt: Prompt, looped: bool) {
        let clip = match prompt {
            Prompt::HoldMusic => self.shared.engine.hold.clone(),
            Prompt::Clip(c) => c,
        };
        let gen_ = self.shared.next_gen.fetch_add(1, Ordering::Relaxed);
        let l = self.shared.leg(leg);
        l.state.lock().play_gen = gen_;
        let task =
            self.shared
                .rt
                .spawn(playback::run(self.shared.clone(), leg, gen_, clip, looped));
        if let Some(old) = l.playback.lock().replace(task) {
            old.abort();
        }
    }

    /// Stops what is playing to `leg`; bridged audio (if bridged) flows again.
    pub fn stop_play(&self, leg: Leg) {
        let l = self.shared.leg(leg);
        l.state.lock().play_gen = 0;
        if let Some(task) = l.playback.lock().take() {
            task.abort();
        }
    }

    /// Connects the legs: A's audio to B and B's to A, transcoding PCMU↔PCMA when their
    /// codecs differ and rewriting DTMF to each side's telephone-event type. Stops any
    /// playback.
    pub fn bridge(&self) {
        self.stop_play(Leg::A);
        self.stop_play(Leg::B);
        self.shared.bridged.store(true, Ordering::Release);
    }

    /// Disconnects the legs (each can still be played to).
    pub fn unbridge(&self) {
        self.shared.bridged.store(false, Ordering::Release);
    }

    /// Whether the legs are bridged.
    pub fn is_bridged(&self) -> bool {
        self.shared.bridged.load(Ordering::Acquire)
    }

    /// Holds (or resumes) a leg: while held nothing is sent to it.
    pub fn set_hold(&self, leg: Leg, held: bool) {
        self.shared.leg(leg).state.lock().held = held;
    }

    /// Starts recording to a stereo 16-bit 8 kHz WAV at `path` (left: what leg A says,
    /// right: what leg B says), creating parent directories. The file is written by one of
    /// the engine's few recording writer threads, shared by all calls.
    pub fn start_recording(&self, path: PathBuf) -> Result<(), MediaError> {
        let mut slot = self.recording.lock();
        if let Some(rec) = slot.as_ref() {
            return Err(MediaError::AlreadyRecording {
                call_id: self.call_id().into(),
                path: rec.path.clone(),
            });
        }
        let (tap, rec) = self
            .shared
            .engine
            .recorder
            .start(self.call_id(), path, Instant::now())?;
        *self.shared.tap.lock() = Some(tap);
        self.shared.recording.store(true, Ordering::Release);
        tracing::debug!(call_id = self.call_id(), path = %rec.path.display(), "recording started");
        *slot = Some(rec);
        Ok(())
    }

    /// Stops the recording, waits for the WAV to be finalised (a few milliseconds) and
    /// returns its path; `None` if not recording.
    pub fn stop_recording(&self) -> Option<PathBuf> {
        let rec = self.recording.lock().take()?;
        self.shared.recording.store(false, Ordering::Release);
        drop(self.shared.tap.lock().take());
        let path = rec.path.clone();
        rec.finish(self.call_id());
        Some(path)
    }

    /// Packet counters of both legs.
    pub fn stats(&self) -> MediaStats {
        let leg = |l: Leg| {
            let s = self.shared.leg(l);
            let c = &s.counters;
            LegStats {
                packets_in: c.packets_in.load(Ordering::Relaxed),
                packets_out: c.packets_out.load(Ordering::Relaxed),
                bytes_in: c.bytes_in.load(Ordering::Relaxed),
                bytes_out: c.bytes_out.load(Ordering::Relaxed),
                malformed: c.malformed.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                remote: s.state.lock().remote,
            }
        };
        MediaStats {
            a: leg(Leg::A),
            b: leg(Leg::B),
        }
    }

    /// The event stream; the first call gets it, later calls a closed receiver.
    pub fn take_events(&mut self) -> UnboundedReceiver<MediaEvent> {
        self.events.take().unwrap_or_else(|| unbounded_channel().1)
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        for task in &self.relays {
            task.abort();
        }
        for leg in &self.shared.legs {
            if let Some(task) = leg.playback.lock().take() {
                task.abort();
            }
        }
        self.shared.recording.store(false, Ordering::Release);
        drop(self.shared.tap.lock().take());
        // Dropping the handle asks the writer to finish the WAV; it does not wait.
        drop(self.recording.lock().take());
        self.shared.engine.active.fetch_sub(1, Ordering::Relaxed);
        self.shared.engine.meters.sessions.decrement(1.0);
        tracing::debug!(call_id = %self.shared.call_id, "media closed");
    }
}

#[cfg(test)]
mod tests;
