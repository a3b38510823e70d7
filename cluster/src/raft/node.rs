//! [`RaftLog`]: one task owns the `RawNode` and runs the ready loop; callers propose, read
//! and subscribe as with the single-node log.
//!
//! Choices, in one place:
//! - **Entries.** One raft entry carries a batch of commands, `serde_json` of `Vec<Command>`,
//!   at most [`SUB_INDEX`] of them. The entry's context is the proposer's `(node, tag)`.
//! - **State-machine indexes.** [`StateMachine::apply`] wants increasing indexes; command
//!   `i` of raft entry `n` is applied at `n * SUB_INDEX + i`. Every replica computes the same
//!   index, the raft entry stays recoverable (`index / SUB_INDEX`), and CDR keys and queue
//!   order (both use the index) stay unique. [`Applied::index`] is that index.
//! - **Proposals on any node.** A follower forwards its batch to the leader over the
//!   transport; the leader proposes it with the follower's `(node, tag)` context; when the
//!   follower applies that entry it answers its own callers with the results it computed
//!   itself (every replica computes the same ones). No leader known: the batch waits for one.
//!   A batch not applied within `propose_timeout` is answered with
//!   [`ClusterError::Stopped`]; it may still commit later (the outcome is unknown).
//! - **Membership.** `add_node`/`remove_node` are conf changes (forwarded like proposals);
//!   the new node's address travels in the conf change and in snapshots. A node that applies
//!   its own removal stops.
//! - **Snapshots.** Every `snapshot_every` applied entries the state machine (and the
//!   address book) is serialized into the raft snapshot and the log compacted, keeping
//!   `keep_entries` for slow followers; applying a conf change also triggers one (a node
//!   accepts only a snapshot whose membership includes it). A new cluster starts from a
//!   snapshot at index 1, so a node added later always catches up from a snapshot.
//! - **Reads** are local: a follower's state may lag the leader's by the replication delay.

use super::RaftError;
use super::storage::RaftStorage;
use super::transport::{Envelope, Forward, ForwardBody, Transport};
use crate::command::Command;
use crate::error::ClusterError;
use crate::log::Applied;
use crate::model::Cdr;
use crate::state::{Event, StateMachine};
use crate::store::LogStore;
use ::raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use ::raft::{RawNode, SnapshotStatus, StateRole};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// State-machine indexes per raft entry: command `i` of entry `n` is applied at
/// `n * SUB_INDEX + i`; so an entry holds at most this many commands.
pub const SUB_INDEX: u64 = 1000;

/// Configuration of one Raft node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (non-zero, unique in the cluster).
    pub id: u64,
    /// Voters of a new cluster, the same list on each of them; used only when the storage is
    /// empty. Empty for a node that will be added to a running cluster.
    pub initial_voters: Vec<u64>,
    /// Known peer addresses (for the transport); more are learnt from conf changes.
    pub peers: BTreeMap<u64, String>,
    /// How often raft's logical clock ticks.
    pub tick: Duration,
    /// Ticks without a leader before an election (raft randomizes up to twice this).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots (each snapshot compacts the log).
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot so slightly slow followers need no snapshot.
    pub keep_entries: u64,
    /// How long a proposal may wait to be applied before its caller gets an error.
    pub propose_timeout: Duration,
    /// Most commands in one entry (at most [`SUB_INDEX`]).
    pub max_batch: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            id: 1,
            initial_voters: vec![1],
            peers: BTreeMap::new(),
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 3,
            snapshot_every: 10_000,
            keep_entries: 1_000,
            propose_timeout: Duration::from_secs(5),
            max_batch: 512,
        }
    }
}

/// A node's role in its raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether an election could be won (pre-vote).
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads: proposals are appended here.
    Leader,
}

/// What a node knows of the cluster, as of its last ready loop turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaftStatus {
    /// This node.
    pub id: u64,
    /// Its role.
    pub role: RaftRole,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest raft index known committed.
    pub commit: u64,
    /// Highest raft index applied to the state machine here.
    pub applied: u64,
    /// Index of the latest snapshot here.
    pub snapshot_index: u64,
    /// Voting members (as applied here).
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// Known addresses of members.
    pub peers: BTreeMap<u64, String>,
    /// Whether this node has applied its own removal (it serves no more).
    pub removed: bool,
}

/// What the driver task and the handles share.
struct Shared {
    /// This node.
    id: u64,
    /// The applied state.
    state: RwLock<StateMachine>,
    /// Applied entries, to subscribers.
    applied: broadcast::Sender<Arc<Applied>>,
    /// Published after each loop turn.
    status: RwLock<RaftStatus>,
    /// CDRs.
    store: Arc<dyn LogStore>,
    /// Raft storage, kept to flush it.
    storage: RaftStorage,
    /// When a Raft message last came from each peer: the failure detector reads it.
    last_heard: Mutex<HashMap<u64, Instant>>,
    /// Until when this node may serve calls: the leader confirmed it still leads, through a
    /// ReadIndex round trip asked at `t`, and this node applied up to that read index; the
    /// lease then runs until `t + election_tick × tick` (see [`RaftLog::holds_lease`]).
    lease_until: Mutex<Option<Instant>>,
    /// Cancelled when the ready loop stopped on an error (storage full or failing): the node
    /// cannot go on (see [`RaftLog::failed`]).
    failed: CancellationToken,
    /// Why it stopped.
    failure: Mutex<Option<String>>,
}

enum Request {
    Propose(
        Box<Command>,
        oneshot::Sender<Result<Vec<Event>, ClusterError>>,
    ),
    Conf(ForwardBody, oneshot::Sender<Result<(), ClusterError>>),
}

/// Handle to the Raft log and the state machine it drives. Cheap to clone; the task stops
/// when every handle is dropped or on [`RaftLog::shutdown`].
#[derive(Clone)]
pub struct RaftLog {
    /// State, status, subscribers.
    shared: Arc<Shared>,
    /// To the driver task.
    requests: mpsc::Sender<Request>,
    /// Stops the driver task.
    stop: CancellationToken,
    /// The driver task, awaited by `shutdown`.
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The state machine and address book, as stored in a raft snapshot.
#[derive(Deserialize)]
struct SnapshotData {
    state: StateMachine,
    peers: BTreeMap<u64, String>,
    /// The newest CDRs (see [`SNAPSHOT_CDRS`]): a node that catches up from the snapshot
    /// stores those it lacks, so CDRs of calls that ended inside the snapshot are not lost.
    #[serde(default)]
    cdrs: Vec<Cdr>,
}

#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    state: &'a StateMachine,
    peers: &'a BTreeMap<u64, String>,
    cdrs: &'a [Cdr],
}

/// CDRs carried in a snapshot: the newest this many. A node that joins later than that holds
/// only these of the older history (the others stay on the nodes that saw them).
const SNAPSHOT_CDRS: usize = 50_000;

fn encode_snapshot(
    state: &StateMachine,
    peers: &BTreeMap<u64, String>,
    cdrs: &[Cdr],
    index: u64,
) -> Result<Vec<u8>, RaftError> {
    serde_json::to_vec(&SnapshotDataRef { state, peers, cdrs })
        .map_err(|source| ClusterError::Codec { index, source }.into())
}

fn decode_snapshot(data: &[u8], index: u64) -> Result<SnapshotData, RaftError> {
    let mut d: SnapshotData =
        serde_json::from_slice(data).map_err(|source| ClusterError::Codec { index, source })?;
    d.state.rebuild_indexes();
    Ok(d)
}

/// The error a caller gets when its proposal was not applied in time, the node has no
/// quorum, or it stopped. One place, so a dedicated `ClusterError` variant can replace it.
fn unavailable(node: u64, why: &str) -> ClusterError {
    tracing::debug!(node, why, "proposal not applied");
    ClusterError::Unavailable {
        node,
        detail: why.to_string(),
    }
}

fn context(origin: u64, tag: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(16);
    c.extend_from_slice(&origin.to_be_bytes());
    c.extend_from_slice(&tag.to_be_bytes());
    c
}

fn parse_context(c: &[u8]) -> Option<(u64, u64)> {
    if c.len() != 16 {
        return None;
    }
    let origin = u64::from_be_bytes(c[..8].try_into().ok()?);
    let tag = u64::from_be_bytes(c[8..].try_into().ok()?);
    Some((origin, tag))
}

impl RaftLog {
    /// Restores the state from `storage` (snapshot, then the committed log), then starts the
    /// ready loop. `inbox` receives what the transport delivers for this node. Must be called
    /// inside a tokio runtime.
    pub fn open(
        cfg: RaftConfig,
        storage: RaftStorage,
        store: Arc<dyn LogStore>,
        transport: Arc<dyn Transport>,
        inbox: mpsc::Receiver<Envelope>,
    ) -> Result<RaftLog, RaftError> {
        if cfg.max_batch == 0 || cfg.max_batch as u64 > SUB_INDEX {
            return Err(::raft::Error::ConfigInvalid(format!(
                "max_batch must be within 1..={SUB_INDEX}"
            ))
            .into());
        }
        if storage.is_empty() && !cfg.initial_voters.is_empty() {
            // A new cluster starts from the same snapshot on every initial voter.
            let mut snap = Snapshot::default();
            snap.data = encode_snapshot(&StateMachine::new(), &BTreeMap::new(), &[], 1)?.into();
            let meta = snap.mut_metadata();
            meta.index = 1;
            meta.term = 1;
            meta.mut_conf_state().voters = cfg.initial_voters.clone();
            storage.apply_snapshot(snap)?;
            storage.sync()?;
        }
        let snap = storage.snapshot_now();
        let snap_index = snap.get_metadata().index;
        let (state, mut peers) = if snap_index > 0 {
            let d = decode_snapshot(&snap.data, snap_index)?;
            (d.state, d.peers)
        } else {
            (StateMachine::new(), BTreeMap::new())
        };
        peers.extend(cfg.peers.clone());
        peers.remove(&cfg.id);
        for (id, addr) in &peers {
            transport.add_peer(*id, addr);
        }
        let mut hs = storage.hard_state();
        if hs.commit < snap_index {
            hs.commit = snap_index; // a snapshot is only ever of committed state
            storage.set_hardstate(hs)?;
        }

        let raft_cfg = ::raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied: snap_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let raw = RawNode::new(&raft_cfg, storage.clone(), &super::logger(cfg.id))?;

        let (applied, _) = broadcast::channel(16384);
        let shared = Arc::new(Shared {
            id: cfg.id,
            state: RwLock::new(state),
            applied,
            status: RwLock::new(RaftStatus {
                id: cfg.id,
                role: RaftRole::Follower,
                leader: None,
                term: 0,
                commit: 0,
                applied: snap_index,
                snapshot_index: snap_index,
                voters: vec![],
                learners: vec![],
                peers: BTreeMap::new(),
                removed: false,
            }),
            store,
            storage: storage.clone(),
            last_heard: Mutex::new(HashMap::new()),
            lease_until: Mutex::new(None),
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(8192);
        let stop = CancellationToken::new();
        let mut driver = Driver {
            cfg,
            raw,
            storage,
            shared: shared.clone(),
            transport,
            inbox,
            inbox_open: true,
            requests: rx,
            stop: stop.clone(),
            applied: snap_index,
            last_snapshot: snap_index,
            pending: HashMap::new(),
            unsent: VecDeque::new(),
            nonce: rand::random::<u32>(),
            counter: 0,
            peers,
            removed: false,
            unreachable: Vec::new(),
            snapshot_reports: Vec::new(),
            last_leader: 0,
            ticks: 0,
            conf_changed: false,
            reads_asked: HashMap::new(),
            reads_answered: Vec::new(),
        };
        // Replays the committed log now, so `read` sees the restored state at once.
        driver.on_ready()?;
        tracing::info!(
            node = driver.cfg.id,
            applied = driver.applied,
            snapshot = snap_index,
            "raft log restored"
        );
        driver.publish_status();
        let span = tracing::info_span!("raft", node = driver.cfg.id);
        let task = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok(RaftLog {
            shared,
            requests: tx,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// Proposes a command on any node; resolves once it is committed and applied here, with
    /// its events or the state machine's refusal. [`ClusterError::Stopped`] if it was not
    /// applied within the proposal timeout (no quorum, no leader, or stopping): it may still
    /// be applied later.
    pub async fn propose(&self, command: Command) -> Result<Vec<Event>, ClusterError> {
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Propose(Box::new(command), reply))
            .await
            .map_err(|_| ClusterError::Stopped)?;
        let r = rx.await.map_err(|_| ClusterError::Stopped)?;
        metrics::histogram!("lingxi_raft_commit_seconds").record(started.elapsed().as_secs_f64());
        r
    }

    /// Reads the applied state. Keep `f` short: it holds a read lock. Local: on a follower
    /// it may lag the leader.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.shared.state.read())
    }

    /// Every entry applied from now on (not those restored from a snapshot).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.shared.applied.subscribe()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> RaftStatus {
        self.shared.status.read().clone()
    }

    /// How long since a Raft message last came from each peer that ever sent one.
    pub fn silence(&self) -> BTreeMap<u64, Duration> {
        let now = Instant::now();
        self.shared
            .last_heard
            .lock()
            .iter()
            .map(|(id, t)| (*id, now.saturating_duration_since(*t)))
            .collect()
    }

    /// Whether this node holds the lease now: it may serve calls (see `Driver::ask_lease`).
    pub fn holds_lease(&self) -> bool {
        self.lease_remaining() > Duration::ZERO
    }

    /// Resolves if the ready loop stops on an error (e.g. the disk is full: sled keeps an I/O
    /// error for good), with the error. The node holds no lease from then on; the binary exits
    /// so that its service manager restarts it once storage works again.
    pub async fn failed(&self) -> String {
        self.shared.failed.cancelled().await;
        self.shared
            .failure
            .lock()
            .clone()
            .unwrap_or_else(|| "unknown error".into())
    }

    /// When the lease held now ends (`None`: none held, or it has ended).
    pub fn lease_until(&self) -> Option<Instant> {
        let until = *self.shared.lease_until.lock();
        until.filter(|t| *t > Instant::now())
    }

    /// How much of the lease is left (zero when none is held).
    pub fn lease_remaining(&self) -> Duration {
        self.shared.lease_until.lock().map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Adds node `id`, listening at `addr`, as a voter; resolves once applied here.
    pub async fn add_node(&self, id: u64, addr: impl Into<String>) -> Result<(), ClusterError> {
        self.conf(ForwardBody::AddNode {
            id,
            addr: addr.into(),
            learner: false,
        })
        .await
    }

    /// Adds node `id` as a learner (receives the log, does not vote); `add_node` promotes it.
    pub async fn add_learner(&self, id: u64, addr: impl Into<String>) -> Result<(), ClusterError> {
        self.conf(ForwardBody::AddNode {
            id,
            addr: addr.into(),
            learner: true,
        })
        .await
    }

    /// Removes node `id`; resolves once applied here. The removed node stops.
    pub async fn remove_node(&self, id: u64) -> Result<(), ClusterError> {
        self.conf(ForwardBody::RemoveNode { id }).await
    }

    async fn conf(&self, body: ForwardBody) -> Result<(), ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Conf(body, reply))
            .await
            .map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }

    /// CDRs stored on this node, newest `limit`, oldest first.
    pub fn cdrs(&self, limit: usize, since_ms: Option<u64>) -> Result<Vec<Cdr>, ClusterError> {
        self.shared.store.cdrs(limit, since_ms)
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ClusterError> {
        self.shared.storage.sync().map_err(|e| match e {
            RaftError::Cluster(c) => c,
            other => {
                tracing::error!(error = %other, "raft storage flush failed");
                ClusterError::Stopped
            }
        })?;
        self.shared.store.flush()
    }

    /// Stops the ready loop and waits for it (pending proposals get `Stopped`). The
    /// storage is released once every handle is dropped.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// Callers waiting for one proposed batch.
struct Pending {
    /// When they give up.
    deadline: Instant,
    /// Who waits.
    waiters: Waiters,
}

enum Waiters {
    Commands(Vec<oneshot::Sender<Result<Vec<Event>, ClusterError>>>),
    Conf(oneshot::Sender<Result<(), ClusterError>>),
}

impl Waiters {
    fn fail(self, err: impl Fn() -> ClusterError) {
        match self {
            Waiters::Commands(v) => v.into_iter().for_each(|w| {
                let _ = w.send(Err(err()));
            }),
            Waiters::Conf(w) => {
                let _ = w.send(Err(err()));
            }
        }
    }
}

/// The ready loop's state, owned by its task.
struct Driver {
    cfg: RaftConfig,
    raw: RawNode<RaftStorage>,
    storage: RaftStorage,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    inbox: mpsc::Receiver<Envelope>,
    /// Whether the transport still delivers.
    inbox_open: bool,
    requests: mpsc::Receiver<Request>,
    stop: CancellationToken,
    /// Last raft index applied to the state machine.
    applied: u64,
    /// Index of the latest snapshot.
    last_snapshot: u64,
    /// This node's batches in flight, by tag.
    pending: HashMap<u64, Pending>,
    /// Batches waiting for a leader to be known.
    unsent: VecDeque<(u64, ForwardBody)>,
    /// High half of tags: random per start, so entries proposed by an earlier run of this
    /// node (still in the log) never answer this run's callers.
    nonce: u32,
    /// Low half of tags.
    counter: u32,
    /// Addresses of the other members.
    peers: BTreeMap<u64, String>,
    /// This node applied its own removal.
    removed: bool,
    /// Peers a message could not be queued for, reported to raft after `advance`.
    unreachable: Vec<u64>,
    /// Snapshot sends to report to raft after `advance`.
    snapshot_reports: Vec<(u64, SnapshotStatus)>,
    /// Leader at the last status, to count changes.
    last_leader: u64,
    /// Ticks since start, to pace liveness pings.
    ticks: u64,
    /// A conf change was applied since the last snapshot: the next snapshot is taken at
    /// once, because a node only accepts a snapshot whose membership includes it.
    conf_changed: bool,
    /// Lease reads in flight: ReadIndex context tag → when it was asked.
    reads_asked: HashMap<u64, Instant>,
    /// Lease reads the leader confirmed: (asked at, read index), waiting for this node to
    /// apply up to the index.
    reads_answered: Vec<(Instant, u64)>,
}

impl Driver {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.cfg.max_batch);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.expire();
                    self.ticks = self.ticks.wrapping_add(1);
                    if self.ticks.is_multiple_of(2) {
                        self.ping_peers();
                    }
                    if self.ticks.is_multiple_of(self.lease_read_every()) {
                        self.ask_lease();
                    }
                }
                env = self.inbox.recv(), if self.inbox_open => match env {
                    Some(env) => self.on_envelope(env),
                    None => self.inbox_open = false,
                },
                n = self.requests.recv_many(&mut batch, self.cfg.max_batch) => {
                    if n == 0 {
                        break; // every handle dropped
                    }
                    self.on_requests(&mut batch);
                }
            }
            // Step what else has arrived before turning the crank once.
            for _ in 0..1024 {
                match self.inbox.try_recv() {
                    Ok(env) => self.on_envelope(env),
                    Err(_) => break,
                }
            }
            self.flush_unsent();
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft ready loop failed; node stops");
                *self.shared.failure.lock() = Some(e.to_string());
                *self.shared.lease_until.lock() = None;
                self.shared.failed.cancel();
                break;
            }
            self.publish_status();
            if self.removed {
                tracing::info!("this node was removed from the cluster; it stops");
                break;
            }
        }
        let node = self.cfg.id;
        for (_, p) in self.pending.drain() {
            p.waiters.fail(|| unavailable(node, "stopped"));
        }
        self.requests.close();
        while let Ok(r) = self.requests.try_recv() {
            match r {
                Request::Propose(_, w) => drop(w.send(Err(ClusterError::Stopped))),
                Request::Conf(_, w) => drop(w.send(Err(ClusterError::Stopped))),
            }
        }
        self.publish_status();
    }

    /// Tells every known peer this node is alive (see [`Envelope::Ping`]).
    fn ping_peers(&mut self) {
        let me = self.cfg.id;
        for id in self.peers.keys() {
            if *id != me {
                self.transport.send(*id, Envelope::Ping { from: me });
            }
        }
    }

    fn next_tag(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        (u64::from(self.nonce) << 32) | u64::from(self.counter)
    }

    fn on_requests(&mut self, batch: &mut Vec<Request>) {
        let mut commands = Vec::new();
        let mut waiters = Vec::new();
        for r in batch.drain(..) {
            match r {
                Request::Propose(c, w) if !w.is_closed() => {
                    commands.push(*c);
                    waiters.push(w);
                }
                Request::Propose(..) => {}
                Request::Conf(body, w) => self.submit(body, Waiters::Conf(w)),
            }
        }
        if !commands.is_empty() {
            metrics::histogram!("lingxi_raft_batch_size").record(commands.len() as f64);
            self.submit(ForwardBody::Commands(commands), Waiters::Commands(waiters));
        }
    }

    fn submit(&mut self, body: ForwardBody, waiters: Waiters) {
        if self.removed {
            waiters.fail(|| ClusterError::Stopped);
            return;
        }
        let tag = self.next_tag();
        self.pending.insert(
            tag,
            Pending {
                deadline: Instant::now() + self.cfg.propose_timeout,
                waiters,
            },
        );
        self.unsent.push_back((tag, body));
    }

    /// Proposes (as leader) or forwards (to the leader) the batches waiting for one.
    fn flush_unsent(&mut self) {
        let leader = self.raw.raft.leader_id;
        if leader == 0 {
            return;
        }
        while let Some((tag, body)) = self.unsent.pop_front() {
            if !self.pending.contains_key(&tag) {
                continue; // expired
            }
            if leader == self.cfg.id {
                if let Err(e) = self.propose(self.cfg.id, tag, body) {
                    let node = self.cfg.id;
                    if let Some(p) = self.pending.remove(&tag) {
                        let why = e.to_string();
                        p.waiters.fail(|| unavailable(node, &why));
                    }
                }
            } else {
                let fwd = Forward {
                    from: self.cfg.id,
                    tag,
                    body,
                };
                if !self.transport.send(leader, Envelope::Forward(fwd.clone())) {
                    self.unsent.push_front((tag, fwd.body));
                    break; // the leader's queue is full: retry on the next turn
                }
            }
        }
    }

    fn propose(&mut self, origin: u64, tag: u64, body: ForwardBody) -> Result<(), ::raft::Error> {
        let ctx = context(origin, tag);
        match body {
            ForwardBody::Commands(cmds) => {
                let data = serde_json::to_vec(&cmds).map_err(|e| {
                    ::raft::Error::ConfChangeError(format!("encoding commands: {e}"))
                })?;
                self.raw.propose(ctx, data)
            }
            ForwardBody::AddNode { id, addr, learner } => {
                let mut cc = ConfChange::default();
                cc.node_id = id;
                cc.set_change_type(if learner {
                    ConfChangeType::AddLearnerNode
                } else {
                    ConfChangeType::AddNode
                });
                cc.context = addr.into_bytes().into();
                self.raw.propose_conf_change(ctx, cc)
            }
            ForwardBody::RemoveNode { id } => {
                let mut cc = ConfChange::default();
                cc.node_id = id;
                cc.set_change_type(ConfChangeType::RemoveNode);
                self.raw.propose_conf_change(ctx, cc)
            }
        }
    }

    fn on_envelope(&mut self, env: Envelope) {
        match env {
            Envelope::Raft(m) => {
                self.shared.last_heard.lock().insert(m.from, Instant::now());
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft message not stepped");
                }
            }
            Envelope::Ping { from } => {
                self.shared.last_heard.lock().insert(from, Instant::now());
            }
            Envelope::Hello { id, addr } => {
                self.shared.last_heard.lock().insert(id, Instant::now());
                if id != self.cfg.id && !self.peers.contains_key(&id) {
                    tracing::info!(peer = id, %addr, "learned a member's address from its hello");
                    self.transport.add_peer(id, &addr);
                    self.peers.insert(id, addr);
                }
            }
            Envelope::Forward(f) => {
                if self.raw.raft.state != StateRole::Leader {
                    tracing::debug!(from = f.from, "forwarded proposal dropped: not the leader");
                    return;
                }
                if let Err(e) = self.propose(f.from, f.tag, f.body) {
                    tracing::debug!(from = f.from, error = %e, "forwarded proposal dropped");
                }
            }
        }
    }

    /// Answers callers whose batch was not applied in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        if expired.is_empty() {
            return;
        }
        let node = self.cfg.id;
        let why = format!(
            "not applied within {:?} (leader {})",
            self.cfg.propose_timeout, self.raw.raft.leader_id
        );
        for t in expired {
            if let Some(p) = self.pending.remove(&t) {
                metrics::counter!("lingxi_raft_proposals_timed_out_total").increment(1);
                p.waiters.fail(|| unavailable(node, &why));
            }
        }
    }

    /// Runs the ready loop while raft has something ready, in raft-rs's documented order.
    fn on_ready(&mut self) -> Result<(), RaftError> {
        for _ in 0..8 {
            if !self.raw.has_ready() {
                break;
            }
            self.ready_once()?;
            self.maybe_snapshot();
            for id in std::mem::take(&mut self.unreachable) {
                self.raw.report_unreachable(id);
            }
            for (id, s) in std::mem::take(&mut self.snapshot_reports) {
                self.raw.report_snapshot(id, s);
            }
        }
        Ok(())
    }

    fn ready_once(&mut self) -> Result<(), RaftError> {
        let mut ready = self.raw.ready();
        // 1. Messages that need nothing persisted first.
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        // 2. A snapshot from the leader.
        if *ready.snapshot() != Snapshot::default() {
            self.restore(ready.snapshot().clone())?;
        }
        // 3. Committed entries, then the leader's answers to lease reads.
        self.apply(ready.take_committed_entries())?;
        for rs in ready.take_read_states() {
            let asked = parse_context(&rs.request_ctx)
                .filter(|(origin, _)| *origin == self.cfg.id)
                .and_then(|(_, tag)| self.reads_asked.remove(&tag));
            if let Some(asked) = asked {
                self.reads_answered.push((asked, rs.index));
            }
        }
        // 4. Persist entries and hard state.
        self.storage.append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.storage.set_hardstate(hs.clone())?;
        }
        if ready.must_sync() {
            self.storage.sync()?;
        }
        // 5. Messages that needed them persisted.
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        // 6. Advance, then what the light ready has.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.renew_lease();
        Ok(())
    }

    /// The lease: how long a confirmed read lets this node serve.
    fn lease(&self) -> Duration {
        self.cfg.tick * self.cfg.election_tick as u32
    }

    /// Ticks between lease reads: several per lease, so one lost round trip does not lapse it.
    fn lease_read_every(&self) -> u64 {
        (self.cfg.election_tick as u64 * 2 / 5).max(1)
    }

    /// Asks the leader, through a ReadIndex round trip, to confirm that it still leads with a
    /// majority. The answer (in a later ready) renews the lease from the time of asking: the
    /// leader heard from this node after that time, so it cannot declare this node dead
    /// before `asked + cluster.failure_detection_ms`, which is longer than the lease; and a
    /// newer leader could only have been elected after that confirmation.
    fn ask_lease(&mut self) {
        let now = Instant::now();
        let lease = self.lease();
        self.reads_asked
            .retain(|_, asked| now.saturating_duration_since(*asked) < lease);
        let tag = self.next_tag();
        self.reads_asked.insert(tag, now);
        self.raw.read_index(context(self.cfg.id, tag));
    }

    /// Extends the lease by every confirmed read whose index this node has applied: it then
    /// knows everything the majority had committed when it asked (a `NodeDown` for it, say).
    fn renew_lease(&mut self) {
        if self.reads_answered.is_empty() {
            return;
        }
        let applied = self.applied;
        let lease = self.lease();
        let mut until = None;
        self.reads_answered.retain(|(asked, index)| {
            if *index <= applied {
                until = until.max(Some(*asked + lease));
                false
            } else {
                true
            }
        });
        if let Some(until) = until {
            let mut held = self.shared.lease_until.lock();
            *held = (*held).max(Some(until));
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let queued = self.transport.send(to, Envelope::Raft(Box::new(m)));
            if snapshot {
                // Reported at once: if it is lost, the follower's rejection makes raft
                // probe again and resend.
                self.snapshot_reports.push((
                    to,
                    if queued {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    },
                ));
            } else if !queued {
                self.unreachable.push(to);
            }
        }
    }

    /// Replaces the state machine with a snapshot received from the leader.
    fn restore(&mut self, snap: Snapshot) -> Result<(), RaftError> {
        let index = snap.get_metadata().index;
        let data = decode_snapshot(&snap.data, index)?;
        self.storage.apply_snapshot(snap)?;
        *self.shared.state.write() = data.state;
        for cdr in &data.cdrs {
            // Keyed by log index: storing one we have is a no-op overwrite.
            if let Err(e) = self.shared.store.put_cdr(cdr) {
                tracing::warn!(call_id = %cdr.call_id, error = %e, "CDR from the snapshot not stored");
            }
        }
        for (id, addr) in data.peers {
            if id != self.cfg.id && self.peers.get(&id) != Some(&addr) {
                self.transport.add_peer(id, &addr);
                self.peers.insert(id, addr);
            }
        }
        self.applied = index;
        self.last_snapshot = index;
        metrics::counter!("lingxi_raft_snapshots_restored_total").increment(1);
        tracing::info!(index, "state restored from the leader's snapshot");
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for e in entries {
            if e.index <= self.applied {
                continue; // already in the restored state
            }
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {} // a new leader's empty entry
                EntryType::EntryNormal => self.apply_commands(&e)?,
                EntryType::EntryConfChange => {
                    let cc: ConfChange =
                        protobuf::Message::parse_from_bytes(&e.data).map_err(|source| {
                            RaftError::Decode {
                                what: "conf change",
                                source,
                            }
                        })?;
                    self.apply_conf_change(&e, cc)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc: ConfChangeV2 =
                        protobuf::Message::parse_from_bytes(&e.data).map_err(|source| {
                            RaftError::Decode {
                                what: "conf change",
                                source,
                            }
                        })?;
                    // Never proposed by this module; applied so raft stays consistent.
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.storage.set_conf_state(cs)?;
                }
            }
        }
        metrics::gauge!("lingxi_raft_applied_index").set(self.applied as f64);
        Ok(())
    }

    fn take_pending(&mut self, e: &Entry) -> Option<Waiters> {
        let (origin, tag) = parse_context(&e.context)?;
        if origin != self.cfg.id {
            return None;
        }
        self.pending.remove(&tag).map(|p| p.waiters)
    }

    fn apply_commands(&mut self, e: &Entry) -> Result<(), RaftError> {
        let waiters = self.take_pending(e);
        let cmds: Vec<Command> = match serde_json::from_slice(&e.data) {
            Ok(c) => c,
            Err(err) => {
                // Every replica fails the same way: skipping keeps them identical.
                tracing::error!(index = e.index, error = %err, "undecodable entry skipped");
                if let Some(w) = waiters {
                    let msg = err.to_string();
                    w.fail(|| ClusterError::Conflict {
                        what: format!("entry {}", e.index),
                        detail: msg.clone(),
                    });
                }
                return Ok(());
            }
        };
        if cmds.len() as u64 > SUB_INDEX {
            tracing::error!(index = e.index, n = cmds.len(), "oversized entry skipped");
            return Ok(());
        }
        let base = e.index * SUB_INDEX;
        let results: Vec<_> = {
            let mut sm = self.shared.state.write();
            cmds.iter()
                .enumerate()
                .map(|(i, c)| sm.apply(base + i as u64, c))
                .collect()
        };
        // A store that cannot write (disk low, I/O) fails the node like its Raft storage
        // would: the CDRs are rewritten when the restarted node replays the log.
        let mut store_failed = None;
        for (i, r) in results.iter().enumerate() {
            let Ok(events) = r else { continue };
            // New CDRs, and dispositions on CDRs already stored.
            match crate::store::persist_events(&*self.shared.store, events) {
                Err(err @ (ClusterError::DiskLow { .. } | ClusterError::Storage { .. })) => {
                    store_failed.get_or_insert(err);
                }
                Err(err) => tracing::error!(error = %err, "cannot store CDR"),
                Ok(()) => {}
            }
            if self.shared.applied.receiver_count() > 0 {
                let _ = self.shared.applied.send(Arc::new(Applied {
                    index: base + i as u64,
                    events: events.clone(),
                }));
            }
        }
        match waiters {
            Some(Waiters::Commands(ws)) => {
                for (w, r) in ws.into_iter().zip(results) {
                    let _ = w.send(r);
                }
            }
            Some(other) => other.fail(|| ClusterError::Stopped),
            None => {}
        }
        match store_failed {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    fn apply_conf_change(&mut self, e: &Entry, cc: ConfChange) -> Result<(), RaftError> {
        let waiters = self.take_pending(e);
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "conf change refused");
                if let Some(w) = waiters {
                    let msg = err.to_string();
                    w.fail(|| ClusterError::Conflict {
                        what: format!("membership change of node {}", cc.node_id),
                        detail: msg.clone(),
                    });
                }
                return Ok(());
            }
        };
        self.storage.set_conf_state(cs)?;
        self.conf_changed = true;
        let id = cc.node_id;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let addr = String::from_utf8_lossy(&cc.context).into_owned();
                if id != self.cfg.id && !addr.is_empty() {
                    self.transport.add_peer(id, &addr);
                    self.peers.insert(id, addr);
                }
                tracing::info!(index = e.index, peer = id, "node added");
            }
            ConfChangeType::RemoveNode => {
                self.peers.remove(&id);
                if id == self.cfg.id {
                    self.removed = true;
                } else {
                    self.transport.remove_peer(id);
                }
                tracing::info!(index = e.index, peer = id, "node removed");
            }
        }
        match waiters {
            Some(Waiters::Conf(w)) => drop(w.send(Ok(()))),
            Some(other) => other.fail(|| ClusterError::Stopped),
            None => {}
        }
        Ok(())
    }

    /// Every `snapshot_every` applied entries: snapshot the state machine, compact the log.
    fn maybe_snapshot(&mut self) {
        let due = self.applied >= self.last_snapshot + self.cfg.snapshot_every.max(1);
        if !(due || self.conf_changed && self.applied > self.last_snapshot) {
            return;
        }
        let index = self.applied;
        let cdrs = match self.shared.store.cdrs(SNAPSHOT_CDRS, None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(index, error = %e, "snapshot without CDRs: cannot read them");
                Vec::new()
            }
        };
        let data = {
            let sm = self.shared.state.read();
            encode_snapshot(&sm, &self.peers, &cdrs, index)
        };
        let r = data.and_then(|d| {
            self.storage.create_snapshot(d, index)?;
            self.storage
                .compact((index + 1).saturating_sub(self.cfg.keep_entries))
        });
        match r {
            Ok(()) => {
                self.last_snapshot = index;
                self.conf_changed = false;
                metrics::counter!("lingxi_raft_snapshots_total").increment(1);
                tracing::debug!(index, "snapshot taken, log compacted");
            }
            Err(e) => tracing::warn!(index, error = %e, "snapshot failed"),
        }
    }

    fn publish_status(&mut self) {
        let r = &self.raw.raft;
        let mut cs = self.storage.conf_state();
        cs.voters.sort_unstable();
        cs.learners.sort_unstable();
        let role = match r.state {
            StateRole::Follower => RaftRole::Follower,
            StateRole::PreCandidate => RaftRole::PreCandidate,
            StateRole::Candidate => RaftRole::Candidate,
            StateRole::Leader => RaftRole::Leader,
        };
        if r.leader_id != self.last_leader {
            self.last_leader = r.leader_id;
            if r.leader_id != 0 {
                metrics::counter!("lingxi_raft_leader_changes_total").increment(1);
            }
        }
        metrics::gauge!("lingxi_raft_term").set(r.term as f64);
        metrics::gauge!("lingxi_raft_commit_index").set(r.raft_log.committed as f64);
        let status = RaftStatus {
            id: self.cfg.id,
            role,
            leader: (r.leader_id != 0).then_some(r.leader_id),
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.applied,
            snapshot_index: self.last_snapshot,
            voters: cs.voters,
            learners: cs.learners,
            peers: self.peers.clone(),
            removed: self.removed,
        };
        *self.shared.status.write() = status;
    }
}
