//! Cluster mode: the Raft log a node runs on when `[cluster] enabled = true`, announcing the
//! node to the cluster once its sockets are bound, and the small HTTP client behind
//! `lingxi cluster status|join|leave`.
//!
//! Start-up order in cluster mode: Raft storage (`<data_dir>/raft`) and CDR storage
//! (`<data_dir>/state`) are opened, the Raft transport binds `cluster.listen`, the
//! [`RaftLog`] restores what it has and starts its ready loop; the node then waits for a
//! leader (a bootstrapped cluster needs a majority of its voters up, a joining node needs to be
//! added with `lingxi cluster join`) before the switch provisions its queues and agents; after
//! SIP and HTTP are bound a background task announces the node (`MemberUp`) until it commits.

pub mod client;

use anyhow::Context as _;
use lingxi_actors::Switch;
use lingxi_cluster::raft::{RaftConfig, RaftLog, RaftStorage, TcpConfig, TcpTransport};
use lingxi_cluster::{Log, SledStore, SpaceGuard};
use lingxi_config::Config;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages the transport may queue for the ready loop before it takes them.
const INBOX: usize = 8192;

/// First wait between announce attempts; doubles up to [`ANNOUNCE_BACKOFF_MAX`].
const ANNOUNCE_BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest wait between announce attempts.
const ANNOUNCE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the wait for a leader says it is still waiting.
const LEADER_WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// The Raft side of a clustered node, kept to stop it.
pub(crate) struct RaftParts {
    /// The Raft log (also inside the switch's [`Log`]).
    pub(crate) raft: RaftLog,
    /// Where the Raft transport listens.
    pub(crate) addr: SocketAddr,
    /// Stops the transport's accept loop, readers and writers.
    pub(crate) transport_stop: CancellationToken,
}

/// The [`RaftConfig`] a `[cluster]` section describes: the initial voters are this node and
/// its peers when bootstrapping, none when joining; the address book holds them all.
pub(crate) fn raft_config(config: &Config) -> RaftConfig {
    let c = &config.cluster;
    let mut peers: BTreeMap<u64, String> = c.peers.iter().map(|p| (p.id, p.addr.clone())).collect();
    peers.insert(c.raft_id, c.listen.to_string());
    let initial_voters = if c.bootstrap {
        peers.keys().copied().collect()
    } else {
        Vec::new()
    };
    RaftConfig {
        id: c.raft_id,
        initial_voters,
        peers,
        tick: Duration::from_millis(c.tick_ms.max(1)),
        election_tick: c.election_ticks,
        heartbeat_tick: c.heartbeat_ticks,
        snapshot_every: c.snapshot_every,
        ..RaftConfig::default()
    }
}

/// Opens Raft storage and CDR storage under `node.data_dir`, binds the Raft transport and
/// starts the Raft log.
pub(crate) async fn open_raft(config: &Config) -> anyhow::Result<(Log, RaftParts)> {
    let c = &config.cluster;
    let raft_dir = config.node.data_dir.join("raft");
    let state_dir = config.node.data_dir.join("state");
    for dir in [&raft_dir, &state_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    // Below the reserve the node would only fail stop again at its first write.
    let guard = SpaceGuard::new(&config.node.data_dir, config.node.min_free_disk_mb);
    guard.check().context("not starting")?;
    let storage = RaftStorage::open(&raft_dir)
        .with_context(|| format!("cannot open Raft storage in {}", raft_dir.display()))?;
    storage.set_guard(guard.clone());
    let cdrs = SledStore::open(&state_dir)
        .with_context(|| format!("cannot open CDR storage in {}", state_dir.display()))?
        .with_guard(guard);
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let transport_stop = CancellationToken::new();
    let transport = TcpTransport::bind(
        c.raft_id,
        c.listen,
        inbox_tx,
        TcpConfig::default(),
        transport_stop.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot bind the Raft transport on {} (cluster.listen)",
            c.listen
        )
    })?;
    let addr = transport.local_addr();
    let raft_cfg = raft_config(config);
    tracing::info!(
        node = %config.node.id,
        raft_id = c.raft_id,
        raft = %addr,
        bootstrap = c.bootstrap,
        voters = ?raft_cfg.initial_voters,
        peers = ?raft_cfg.peers,
        "starting the Raft log"
    );
    let raft = RaftLog::open(raft_cfg, storage, Arc::new(cdrs), transport, inbox)
        .context("cannot start the Raft log")?;
    Ok((
        Log::Raft(raft.clone()),
        RaftParts {
            raft,
            addr,
            transport_stop,
        },
    ))
}

/// Waits until this node can propose: it is a voter, knows a leader and that leader's address.
/// A bootstrapped cluster needs a majority of its voters up; a node started with
/// `bootstrap = false` waits until it is added (and has caught up from the leader's snapshot,
/// so provisioning compares against the cluster's state, not an empty one). Says every few
/// seconds that it is still waiting, and why.
pub(crate) async fn wait_for_leader(config: &Config, raft: &RaftLog) {
    let started = tokio::time::Instant::now();
    let mut last_said = started;
    loop {
        let s = raft.status();
        let member = s.voters.contains(&s.id);
        let leader_reachable = s
            .leader
            .is_some_and(|l| l == s.id || s.peers.contains_key(&l));
        if member && leader_reachable {
            tracing::info!(
                raft_id = s.id,
                leader = s.leader,
                term = s.term,
                applied = s.applied,
                waited_ms = started.elapsed().as_millis() as u64,
                "Raft leader known"
            );
            return;
        }
        if last_said.elapsed() >= LEADER_WAIT_LOG_EVERY {
            last_said = tokio::time::Instant::now();
            let waited_s = started.elapsed().as_secs();
            match s.leader {
                Some(l) if !leader_reachable => tracing::warn!(
                    raft_id = s.id,
                    leader = l,
                    known = ?s.peers.keys().collect::<Vec<_>>(),
                    waited_s,
                    "the leader's Raft address is unknown here: list every member in cluster.peers"
                ),
                _ if !member => tracing::warn!(
                    raft_id = s.id,
                    raft = %config.cluster.listen,
                    waited_s,
                    "not a voter of the cluster yet: add this node with `lingxi cluster join --api <a member's HTTP> --id {} --addr {}`",
                    s.id,
                    config.cluster.listen
                ),
                _ => tracing::warn!(
                    raft_id = s.id,
                    voters = ?s.voters,
                    waited_s,
                    "no Raft leader yet: waiting for a majority of the voters to be up"
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Announces this node (`MemberUp`) with its SIP and HTTP addresses, retrying with backoff
/// until it commits (there may be no leader yet) or `stop` is cancelled.
pub(crate) fn spawn_announce(
    sw: Arc<Switch>,
    sip_udp: Option<SocketAddr>,
    sip_tcp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = ANNOUNCE_BACKOFF_MIN;
        let mut attempt = 1u32;
        loop {
            let announced = tokio::select! {
                _ = stop.cancelled() => return,
                r = sw.announce_and_resume(sip_udp, sip_tcp, http) => r,
            };
            match announced {
                Ok(()) => {
                    tracing::info!(
                        node = %sw.config().node.id,
                        attempt,
                        "announced to the cluster: serving calls"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        node = %sw.config().node.id,
                        attempt,
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "announcing this node to the cluster failed (no leader or no quorum yet?); retrying"
                    );
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(ANNOUNCE_BACKOFF_MAX);
            attempt += 1;
        }
    })
}
