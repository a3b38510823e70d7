//! [`MediaEngine`]: the node's media resources — the RTP port range, the hold music, the
//! recording writer threads, the metric handles — and the factory of [`CallMedia`].

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::call::{CallMedia, Meters};
use crate::prompt::{PcmClip, Prompt, SAMPLE_RATE};
use crate::recorder::RecorderPool;
use crate::{Leg, MediaError};

/// The node's media engine. Cheap to clone: all clones share one port pool.
#[derive(Clone)]
pub struct MediaEngine {
    /// Shared state; calls keep it alive until their ports are returned.
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("bind_ip", &self.inner.bind_ip)
            .field("active_calls", &self.active_calls())
            .finish()
    }
}

/// What every call of the engine shares.
pub(crate) struct EngineInner {
    /// Address the RTP sockets bind to.
    pub(crate) bind_ip: IpAddr,
    /// Address peers reach us at, put in SDP.
    pub(crate) advertised_ip: IpAddr,
    /// Lowest port of the range (as configured, for error messages).
    port_min: u16,
    /// Highest port of the range.
    port_max: u16,
    /// Free/used even ports; `None` when the OS picks ephemeral ports (`rtp_port_min == 0`).
    pool: Option<Mutex<PortPool>>,
    /// The hold music, decoded once and shared by every call playing it.
    pub(crate) hold: Arc<PcmClip>,
    /// Samples per RTP packet (ptime × 8).
    pub(crate) frame: usize,
    /// Calls allocated and not yet dropped, for `active_calls` and the sessions gauge.
    pub(crate) active: AtomicUsize,
    /// The writer threads every recording of the engine shares.
    pub(crate) recorder: RecorderPool,
    /// Metric handles, looked up once per engine instead of per call or per packet.
    pub(crate) meters: Meters,
    /// Whether this node may send media now (closed when its cluster lease lapses).
    pub(crate) gate: crate::ServeGate,
}

/// Which even ports of the range are taken.
struct PortPool {
    /// First even port of the range.
    base: u16,
    /// `used[i]` is port `base + 2i`.
    used: Vec<bool>,
    /// Where the next search starts: round-robin, so a just-freed port (maybe still
    /// receiving a late packet for the old call) is reused last.
    next: usize,
}

/// Ports a call holds; dropping it returns them to the pool. It is the last field of the
/// call's shared state, so it drops after the sockets are closed.
pub(crate) struct PortLease {
    /// The pool to return to.
    engine: Arc<EngineInner>,
    /// Pool slots taken (none for ephemeral ports).
    slots: [Option<usize>; 2],
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Some(pool) = &self.engine.pool {
            let mut pool = pool.lock();
            for slot in self.slots.iter().flatten() {
                if let Some(u) = pool.used.get_mut(*slot) {
                    *u = false;
                }
            }
        }
    }
}

impl MediaEngine {
    /// Builds the engine from `[media]`: checks the port range and loads the hold music
    /// (the configured WAV, else the built-in tune). Blocking file read: call at start-up,
    /// after the metrics recorder is installed (metric handles are taken here, once).
    pub fn new(cfg: &lingxi_config::MediaSection) -> Result<MediaEngine, MediaError> {
        let pool = if cfg.rtp_port_min == 0 {
            None
        } else {
            if cfg.rtp_port_max < cfg.rtp_port_min {
                return Err(MediaError::Config {
                    key: "rtp_port_max",
                    reason: format!(
                        "{} is below rtp_port_min {}",
                        cfg.rtp_port_max, cfg.rtp_port_min
                    ),
                });
            }
            let base = cfg.rtp_port_min.saturating_add(cfg.rtp_port_min % 2);
            if base > cfg.rtp_port_max || base == 0 {
                return Err(MediaError::Config {
                    key: "rtp_port_min",
                    reason: format!(
                        "range {}-{} holds no even port",
                        cfg.rtp_port_min, cfg.rtp_port_max
                    ),
                });
            }
            let slots = (cfg.rtp_port_max - base) as usize / 2 + 1;
            Some(Mutex::new(PortPool {
                base,
                used: vec![false; slots],
                next: 0,
            }))
        };
        if !(10..=60).contains(&cfg.ptime_ms) {
            return Err(MediaError::Config {
                key: "ptime_ms",
                reason: format!("{} is not within 10..=60", cfg.ptime_ms),
            });
        }
        let hold = match &cfg.hold_music {
            Some(path) => PcmClip::load_wav(path)?,
            None => PcmClip::hold_music(),
        };
        Ok(MediaEngine {
            inner: Arc::new(EngineInner {
                bind_ip: cfg.rtp_ip,
                advertised_ip: cfg.advertised_ip(),
                port_min: cfg.rtp_port_min,
                port_max: cfg.rtp_port_max,
                pool,
                hold: Arc::new(hold),
                frame: (cfg.ptime_ms * SAMPLE_RATE / 1000) as usize,
                active: AtomicUsize::new(0),
                recorder: RecorderPool::new(),
                meters: Meters::new(),
                gate: crate::ServeGate::default(),
            }),
        })
    }

    /// The gate every packet this engine sends passes (see [`crate::ServeGate`]).
    pub fn gate(&self) -> &crate::ServeGate {
        &self.inner.gate
    }

    /// Gives a call its media: two UDP sockets (leg A, leg B) on even ports of the range
    /// (OS-chosen ports when `rtp_port_min == 0`) and their relay tasks. The ports are
    /// freed when the [`CallMedia`] is dropped. Fails with
    /// [`MediaError::PortsExhausted`] when the range is full.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn allocate(&self, call_id: &str) -> Result<CallMedia, MediaError> {
        let (sockets, lease) = self.inner.bind_pair(call_id)?;
        CallMedia::start(self.inner.clone(), call_id, sockets, lease)
    }

    /// The hold music prompt (configured file or built-in tune).
    pub fn hold_music(&self) -> Prompt {
        Prompt::HoldMusic
    }

    /// The hold music clip itself.
    pub fn hold_music_clip(&self) -> Arc<PcmClip> {
        self.inner.hold.clone()
    }

    /// Calls whose media is allocated and not yet dropped.
    pub fn active_calls(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Recording writer threads alive: at most a small fixed number however many calls
    /// are recorded (0 until the first recording starts). For diagnostics and tests.
    pub fn writer_threads(&self) -> usize {
        self.inner.recorder.threads()
    }

    /// The address put in SDP for this engine's sockets.
    pub fn advertised_ip(&self) -> IpAddr {
        self.inner.advertised_ip
    }
}

impl EngineInner {
    /// Binds one socket per leg, taking even ports from the pool.
    fn bind_pair(
        self: &Arc<Self>,
        call_id: &str,
    ) -> Result<([StdUdpSocket; 2], PortLease), MediaError> {
        let legs = [Leg::A, Leg::B];
        let Some(pool) = &self.pool else {
            let bind = |leg: Leg| {
                let addr = SocketAddr::new(self.bind_ip, 0);
                StdUdpSocket::bind(addr).map_err(|source| MediaError::Bind {
                    call_id: call_id.into(),
                    leg,
                    addr,
                    source,
                })
            };
            let a = bind(Leg::A)?;
            let b = bind(Leg::B)?;
            return Ok((
                [a, b],
                PortLease {
                    engine: self.clone(),
                    slots: [None, None],
                },
            ));
        };
        let mut pool = pool.lock();
        let slots = pool.used.len();
        let mut taken: [Option<(usize, StdUdpSocket)>; 2] = [None, None];
        let mut tried = 0;
        let mut failure = None;
        for (n, leg) in legs.iter().enumerate() {
            while taken[n].is_none() && tried < slots {
                let i = pool.next;
                pool.next = (i + 1) % slots;
                tried += 1;
                if pool.used[i] {
                    continue;
                }
                let port = pool.base + 2 * i as u16;
                let addr = SocketAddr::new(self.bind_ip, port);
                match StdUdpSocket::bind(addr) {
                    Ok(s) => {
                        pool.used[i] = true;
                        taken[n] = Some((i, s));
                    }
                    // Someone outside the pool holds it: try the next one.
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                    Err(source) => {
                        failure = Some(MediaError::Bind {
                            call_id: call_id.into(),
                            leg: *leg,
                            addr,
                            source,
                        });
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        match taken {
            [Some((ia, a)), Some((ib, b))] if failure.is_none() => Ok((
                [a, b],
                PortLease {
                    engine: self.clone(),
                    slots: [Some(ia), Some(ib)],
                },
            )),
            taken => {
                for (i, _) in taken.into_iter().flatten() {
                    pool.used[i] = false;
                }
                Err(failure.unwrap_or_else(|| MediaError::PortsExhausted {
                    call_id: call_id.into(),
                    ip: self.bind_ip,
                    min: self.port_min,
                    max: self.port_max,
                }))
            }
        }
    }
}
