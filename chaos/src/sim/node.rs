//! One simulated node: a `raft::RawNode` over the product's own in-memory
//! [`RaftStorage`] (what survives a crash), the [`StateMachine`] it drives, and a model of
//! the switch above it: the ready loop of `cluster/src/raft/node.rs`, the lease, fencing and
//! failure detection of `actors/src/membership.rs`, and call actors driving their calls the
//! way `actors/src/call.rs` and the queue actors do. Each piece names the product code it
//! mirrors; where the product has a choice the simulation could make either way, the
//! product's is the default and [`Model`](super::Model) holds the alternative.

// raft's protobuf types are built field by field, as raft-rs's own examples do.
#![allow(clippy::field_reassign_with_default)]

use super::net::Envelope;
use super::record::Recorder;
use super::world::{World, queues};
use super::{EPOCH_MS, SimConfig};
use crate::invariants::Digest;
use crate::invariants::no_rollback::ProgressSample;
use lingxi_cluster::model::{AgentState, CallPhase, Cdr, Member, Registration};
use lingxi_cluster::raft::{RaftStorage, SUB_INDEX};
use lingxi_cluster::{Command, DialogRole, DialogState, Event, SipTransport, StateMachine};
use raft::prelude::{Entry, EntryType, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What one event handler may touch besides the node itself.
pub(crate) struct Ctx<'a> {
    /// Simulated time, ms since the run began.
    pub(crate) now: u64,
    /// The run's settings.
    pub(crate) cfg: &'a SimConfig,
    /// The run's one random source.
    pub(crate) rng: &'a mut StdRng,
    /// Messages sent: (from, to, what), routed by the simulation afterwards.
    pub(crate) out: &'a mut Vec<(u64, u64, Envelope)>,
    /// The record.
    pub(crate) rec: &'a mut Recorder,
    /// Callers and agents.
    pub(crate) world: &'a mut World,
    /// Whether callers still dial (false while draining).
    pub(crate) load: bool,
}

impl Ctx<'_> {
    /// Wall-clock milliseconds as a node would read them (commands carry them).
    fn at_ms(&self) -> u64 {
        EPOCH_MS + self.now
    }
}

/// What survives a crash: the raft storage and the CDR store.
pub(crate) struct Disk {
    /// Raft log, hard state, conf state, snapshot (the product's storage, memory mode).
    pub(crate) storage: RaftStorage,
    /// CDRs by state-machine index, like `MemStore`/`SledStore`.
    pub(crate) cdrs: BTreeMap<u64, Cdr>,
}

/// One node of the simulated cluster.
pub(crate) struct SimNode {
    /// Raft id (1-based).
    pub(crate) id: u64,
    /// Node name, the owner calls carry (`n1`...).
    pub(crate) name: String,
    /// Every voter's raft id.
    pub(crate) voters: Vec<u64>,
    /// Starts so far (the nonce of proposal tags, like the product's random nonce).
    pub(crate) incarnation: u32,
    /// Storage while the node is down (moved into [`Running`] while it runs).
    pub(crate) disk: Option<Disk>,
    /// The process, while it runs.
    pub(crate) run: Option<Running>,
    /// Frozen (SIGSTOP): nothing runs, messages wait in `held`.
    pub(crate) frozen: bool,
    /// Messages that arrived while frozen, read on thaw.
    pub(crate) held: Vec<(u64, Envelope)>,
}

/// Callers waiting for one proposed batch (as in the product's ready loop).
struct Pending {
    /// When they give up.
    deadline: u64,
    /// One per command, in batch order.
    waiters: Vec<Waiter>,
}

/// Who waits for a proposed command, and what they do with its result.
#[derive(Debug, Clone)]
enum Waiter {
    /// A call actor committing `CallArrived`: on failure the INVITE gets 503, the actor ends.
    Arrival(String),
    /// An actor committing a step of its call or agent (key `call:<id>` / `agent:<id>`).
    Step(String),
    /// The call's agent answered: the ACK goes out once this commits.
    Answer(String, String),
    /// `MemberUp`: start-up (`false`), or back in touch after fencing (`true`: unfence).
    Announce(bool),
    /// Start-up provisioning of queues and agents.
    Provision,
    /// A phone's REGISTER.
    Register(String),
    /// A progress probe proposed at this time.
    Probe(u64),
}

/// The state machine and address book as the product stores them in a raft snapshot
/// (plus, with [`Model::cdrs_in_snapshots`](super::Model), the CDRs).
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: StateMachine,
    peers: BTreeMap<u64, String>,
    #[serde(default)]
    cdrs: Vec<Cdr>,
}

/// A running node: everything here is lost in a crash, except `disk`.
pub(crate) struct Running {
    /// Raft id.
    id: u64,
    /// Node name.
    name: String,
    /// The other voters.
    peers: Vec<u64>,
    /// What survives a crash.
    disk: Disk,
    /// raft-rs.
    raw: RawNode<RaftStorage>,
    /// The applied state.
    pub(crate) sm: StateMachine,
    /// Last raft index applied.
    pub(crate) applied: u64,
    /// Index of the latest snapshot.
    last_snapshot: u64,
    /// This node's batches in flight, by tag.
    pending: BTreeMap<u64, Pending>,
    /// Batches waiting for a leader to be known.
    unsent: VecDeque<(u64, Vec<Command>)>,
    /// Commands proposed during the current turn, submitted as one batch at its end.
    batch: Vec<(Command, Waiter)>,
    /// High half of tags (the incarnation), so an earlier run's entries answer no one.
    nonce: u64,
    /// Low half of tags.
    counter: u64,
    /// When a message last came from each peer (lease, failure detection).
    last_heard: BTreeMap<u64, u64>,
    /// Ticks since start (pings every two).
    ticks: u64,
    /// When this incarnation started.
    started_ms: u64,
    /// (term, role, leader) when the election timeout was last drawn.
    election_key: Option<(u64, u8, u64)>,
    /// Cut off from the majority: its calls are stopped, new ones refused.
    pub(crate) fenced: bool,
    /// When to propose `MemberUp` next (start-up and unfencing), if due.
    announce_at: Option<u64>,
    /// Current wait between announce attempts.
    announce_backoff: u64,
    /// An announce is in flight.
    announcing: bool,
    /// Leader since (failure detection waits `failure_detection_ms` after winning).
    leader_since: Option<u64>,
    /// When each node was last declared dead from here (at most once a second).
    declared: BTreeMap<String, u64>,
    /// Calls a call actor runs here.
    pub(crate) actors: BTreeSet<String>,
    /// Actors (by key) waiting for a proposal's result before acting again.
    inflight: BTreeSet<String>,
    /// Agents whose wrap-up timer runs here, with when it ends.
    wrapups: BTreeMap<String, u64>,
    /// Start-up provisioning: done, or in flight.
    provision: (bool, bool),
    /// A progress probe is in flight.
    probing: bool,
    /// Replaying the log at start: the pump is not subscribed yet, actors see nothing.
    replaying: bool,
    /// Snapshot results to report to raft after `advance`.
    snapshot_reports: Vec<(u64, SnapshotStatus)>,
    /// The deliberate divergence bug already fired.
    diverged: bool,
    /// Calls moved here by applied entries, for the pump to resume after the batch.
    to_resume: Vec<String>,
    /// With [`Model::leader_lease`](super::Model): serving allowed until then.
    lease_until: u64,
    /// An announce committed: resume this node's calls once the batch is applied.
    resume_mine: bool,
    /// Answered ReadIndex requests (asked at, read index) waiting for the index to apply.
    reads: Vec<(u64, u64)>,
}

/// A command in a few words, for traces.
pub(crate) fn brief(c: &Command) -> String {
    match c {
        Command::CallArrived { call_id, owner, .. } => {
            format!("call_arrived {call_id} owner={owner}")
        }
        Command::CallQueued { call_id, queue, .. } => format!("call_queued {call_id} in {queue}"),
        Command::CallOffered { call_id, agent, .. } => format!("call_offered {call_id} to {agent}"),
        Command::CallOfferFailed {
            call_id,
            agent,
            reason,
            ..
        } => {
            format!("call_offer_failed {call_id} by {agent} ({reason})")
        }
        Command::CallAnswered { call_id, agent, .. } => {
            format!("call_answered {call_id} by {agent}")
        }
        Command::CallEnded {
            call_id, outcome, ..
        } => format!("call_ended {call_id} ({outcome})"),
        Command::NodeDown { node, .. } => format!("node_down {node}"),
        Command::MemberUp(m) => format!("member_up {}", m.node),
        Command::Register {
            id, registration, ..
        } => format!(
            "register {id} at {}",
            registration.as_ref().map_or("-", |r| r.node.as_str())
        ),
        Command::SetAgentState {
            id, state, only_if, ..
        } => {
            format!("set_agent_state {id} {} if {only_if:?}", state.as_str())
        }
        Command::UpsertAgent { id, .. } => format!("upsert_agent {id}"),
        Command::UpsertQueue(q) => format!("upsert_queue {}", q.id),
        Command::RemoveQueue { id } => format!("remove_queue {id}"),
        other => other.kind().to_string(),
    }
}

fn role(r: StateRole) -> u8 {
    match r {
        StateRole::Follower => 0,
        StateRole::Candidate => 1,
        StateRole::Leader => 2,
        StateRole::PreCandidate => 3,
    }
}

fn encode_snapshot(sm: &StateMachine, cdrs: Option<&BTreeMap<u64, Cdr>>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Ref<'a> {
        state: &'a StateMachine,
        peers: BTreeMap<u64, String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cdrs: Vec<&'a Cdr>,
    }
    serde_json::to_vec(&Ref {
        state: sm,
        peers: BTreeMap::new(),
        cdrs: cdrs.map(|c| c.values().collect()).unwrap_or_default(),
    })
    .expect("a state machine always serializes")
}

fn decode_snapshot(data: &[u8]) -> (StateMachine, Vec<Cdr>) {
    let mut d: SnapshotData =
        serde_json::from_slice(data).expect("snapshots are written by this simulation");
    d.state.rebuild_indexes();
    (d.state, d.cdrs)
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
    Some((
        u64::from_be_bytes(c[..8].try_into().ok()?),
        u64::from_be_bytes(c[8..].try_into().ok()?),
    ))
}

/// A plausible SIP dialog for a leg of `call` (the state machine only stores it).
fn dialog(call: &str, role: DialogRole, node: &str) -> DialogState {
    DialogState {
        call_id: call.to_string(),
        local_tag: format!("{node}-{call}"),
        remote_tag: format!("peer-{call}"),
        role,
        local_seq: 1,
        remote_seq: Some(1),
        local_uri: "sip:queue@lingxi.sim".into(),
        remote_uri: "sip:peer@lingxi.sim".into(),
        remote_target: "sip:peer@192.0.2.1:5060".into(),
        route_set: vec![],
        local_contact: format!("sip:lingxi@{node}.sim"),
        transport: SipTransport::Udp,
        peer: "192.0.2.1:5060".parse().expect("literal address"),
        local_sdp: None,
        remote_sdp: None,
        sdp_version: 1,
    }
}

impl SimNode {
    /// A node that has never run (empty storage).
    pub(crate) fn new(id: u64, voters: Vec<u64>) -> Self {
        SimNode {
            id,
            name: format!("n{id}"),
            voters,
            incarnation: 0,
            disk: Some(Disk {
                storage: RaftStorage::memory(),
                cdrs: BTreeMap::new(),
            }),
            run: None,
            frozen: false,
            held: Vec::new(),
        }
    }

    /// Whether the process runs and is not frozen (it acts, and serves its calls).
    pub(crate) fn active(&self) -> bool {
        self.run.is_some() && !self.frozen
    }

    /// Starts (or restarts) the process from its storage, as `RaftLog::open` does: a new
    /// cluster begins from a snapshot at index 1; the state is restored from the latest
    /// snapshot and the committed log replayed before anything else runs.
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) {
        let disk = self.disk.take().expect("a stopped node has its disk");
        self.incarnation += 1;
        self.frozen = false;
        self.held.clear();
        let storage = disk.storage.clone();
        if storage.is_empty() {
            let mut snap = Snapshot::default();
            snap.data = encode_snapshot(&StateMachine::new(), None).into();
            let meta = snap.mut_metadata();
            meta.index = 1;
            meta.term = 1;
            meta.mut_conf_state().voters = self.voters.clone();
            storage
                .apply_snapshot(snap)
                .expect("fresh storage takes a snapshot");
        }
        let snap = storage.snapshot_now();
        let snap_index = snap.get_metadata().index;
        let sm = if snap_index > 0 {
            decode_snapshot(&snap.data).0
        } else {
            StateMachine::new()
        };
        let mut hs = storage.hard_state();
        if hs.commit < snap_index {
            hs.commit = snap_index;
            storage.set_hardstate(hs).expect("memory storage");
        }
        let c = ctx.cfg;
        let raft_cfg = raft::Config {
            id: self.id,
            election_tick: c.election_ticks,
            heartbeat_tick: c.heartbeat_ticks,
            applied: snap_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_cfg, storage, &logger).expect("valid raft config");
        let mut r = Running {
            id: self.id,
            name: self.name.clone(),
            peers: self
                .voters
                .iter()
                .copied()
                .filter(|v| *v != self.id)
                .collect(),
            disk,
            raw,
            sm,
            applied: snap_index,
            last_snapshot: snap_index,
            pending: BTreeMap::new(),
            unsent: VecDeque::new(),
            batch: Vec::new(),
            nonce: u64::from(self.incarnation) << 32,
            counter: 0,
            last_heard: BTreeMap::new(),
            ticks: 0,
            started_ms: ctx.now,
            election_key: None,
            fenced: false,
            announce_at: Some(ctx.now),
            announce_backoff: 200,
            announcing: false,
            leader_since: None,
            declared: BTreeMap::new(),
            actors: BTreeSet::new(),
            inflight: BTreeSet::new(),
            wrapups: BTreeMap::new(),
            provision: (false, false),
            probing: false,
            replaying: true,
            snapshot_reports: Vec::new(),
            diverged: false,
            to_resume: Vec::new(),
            lease_until: 0,
            resume_mine: false,
            reads: Vec::new(),
        };
        r.fix_election_timeout(ctx, self.incarnation);
        r.on_ready(ctx);
        r.replaying = false;
        let inc = self.incarnation;
        ctx.rec.trace(ctx.now, || {
            format!(
                "{} start #{inc}: snapshot {snap_index}, replayed to {}",
                self.name, r.applied
            )
        });
        self.run = Some(r);
        self.sample(ctx);
    }

    /// Kills the process: everything but the disk is lost.
    pub(crate) fn crash(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(r) = self.run.take() {
            let lost = r.actors.len();
            ctx.rec.trace(ctx.now, || {
                format!("{} CRASH ({lost} call actors lost)", self.name)
            });
            self.disk = Some(r.disk);
        }
        self.frozen = false;
        self.held.clear();
    }

    /// One tick of the node: raft's clock, then the switch's periodic work.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let inc = self.incarnation;
        let Some(r) = self.run.as_mut() else { return };
        r.raw.tick();
        r.fix_election_timeout(ctx, inc);
        r.expire(ctx);
        r.ticks += 1;
        if r.ticks % 2 == 0 {
            for p in r.peers.clone() {
                ctx.out.push((r.id, p, Envelope::Ping));
            }
        }
        // The leader lease: a ReadIndex every 4 ticks (200 ms; the lease is 500 ms).
        if ctx.cfg.model.leader_lease && r.ticks % 4 == 0 {
            r.raw.read_index(context(r.id, ctx.now));
        }
        r.watch(ctx);
        r.drive(ctx);
        r.turn(ctx, inc);
        self.sample(ctx);
    }

    /// A message arrives.
    pub(crate) fn deliver(&mut self, from: u64, env: Envelope, ctx: &mut Ctx<'_>) {
        let inc = self.incarnation;
        let Some(r) = self.run.as_mut() else { return };
        match env {
            Envelope::Raft(m) => {
                r.last_heard.insert(from, ctx.now);
                let _ = r.raw.step(*m);
                r.fix_election_timeout(ctx, inc);
            }
            Envelope::Ping => {
                r.last_heard.insert(from, ctx.now);
            }
            Envelope::Forward { tag, commands } => {
                if r.raw.raft.state == StateRole::Leader {
                    let data = serde_json::to_vec(&commands).expect("commands serialize");
                    let _ = r.raw.propose(context(from, tag), data);
                }
            }
        }
        r.turn(ctx, inc);
        self.sample(ctx);
    }

    /// Proposes `cmd` from this node on behalf of the world (a phone's REGISTER, a probe).
    pub(crate) fn propose_register(&mut self, agent: &str, ctx: &mut Ctx<'_>) -> bool {
        let inc = self.incarnation;
        let Some(r) = self.run.as_mut() else {
            return false;
        };
        if r.inflight.contains(&format!("agent:{agent}:register")) {
            return true;
        }
        r.inflight.insert(format!("agent:{agent}:register"));
        let at_ms = ctx.at_ms();
        r.batch.push((
            Command::Register {
                id: agent.to_string(),
                registration: Some(Registration {
                    contact: format!("sip:{agent}@192.0.2.10:5060"),
                    peer: "192.0.2.10:5060".parse().expect("literal address"),
                    transport: SipTransport::Udp,
                    expires_at_ms: at_ms + 3_600_000,
                    node: r.name.clone(),
                    user_agent: None,
                }),
                at_ms,
            },
            Waiter::Register(agent.to_string()),
        ));
        r.turn(ctx, inc);
        self.sample(ctx);
        true
    }

    /// Proposes a progress probe (a command every replica refuses, but commits) unless one
    /// is in flight here.
    pub(crate) fn probe(&mut self, ctx: &mut Ctx<'_>) {
        let inc = self.incarnation;
        let Some(r) = self.run.as_mut() else { return };
        if r.probing {
            return;
        }
        r.probing = true;
        r.batch.push((
            Command::RemoveQueue { id: "probe".into() },
            Waiter::Probe(ctx.now),
        ));
        r.turn(ctx, inc);
        self.sample(ctx);
    }

    /// Feeds the no-rollback checker.
    fn sample(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(r) = &self.run {
            ctx.rec.progress(ProgressSample {
                node: self.name.clone(),
                at_ms: ctx.now,
                incarnation: self.incarnation,
                applied: r.applied,
                commit: r.raw.raft.raft_log.committed,
            });
        }
    }
}

impl Running {
    /// The CDR store.
    pub(crate) fn cdrs(&self) -> &BTreeMap<u64, Cdr> {
        &self.disk.cdrs
    }

    /// The node's role now.
    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// raft-rs draws election timeouts from `thread_rng`; to replay exactly, every time it
    /// may have drawn one (a new term, role or leader) the simulation overrides it with one
    /// derived from the seed, within raft's own range `[election_tick, 2 × election_tick)`.
    fn fix_election_timeout(&mut self, ctx: &mut Ctx<'_>, incarnation: u32) {
        let r = &self.raw.raft;
        let key = (r.term, role(r.state), r.leader_id);
        if self.election_key == Some(key) {
            return;
        }
        if r.state == StateRole::Leader {
            ctx.rec.stats.elections += 1;
            let (id, term) = (self.id, r.term);
            ctx.rec
                .trace(ctx.now, || format!("n{id} LEADER term {term}"));
        }
        self.election_key = Some(key);
        let e = ctx.cfg.election_ticks as u64;
        let mut d = Digest::default();
        d.u64(ctx.cfg.seed)
            .u64(self.id)
            .u64(u64::from(incarnation))
            .u64(key.0)
            .u64(u64::from(key.1))
            .u64(key.2);
        let t = e + d.value() % e;
        self.raw.raft.set_randomized_election_timeout(t as usize);
        ctx.rec.mix(&[self.id, key.0, u64::from(key.1), key.2, t]);
    }

    /// Submits this turn's batch, forwards or proposes what waits, and runs the ready loop.
    fn turn(&mut self, ctx: &mut Ctx<'_>, inc: u32) {
        if !self.batch.is_empty() {
            let (cmds, waiters): (Vec<Command>, Vec<Waiter>) =
                std::mem::take(&mut self.batch).into_iter().unzip();
            self.counter += 1;
            let tag = self.nonce | self.counter;
            self.pending.insert(
                tag,
                Pending {
                    deadline: ctx.now + ctx.cfg.propose_timeout_ms,
                    waiters,
                },
            );
            let (name, n) = (&self.name, cmds.len());
            ctx.rec.trace(ctx.now, || {
                let kinds: Vec<String> = cmds.iter().map(brief).collect();
                format!("{name} propose tag {tag:x} [{n}] {}", kinds.join("; "))
            });
            self.unsent.push_back((tag, cmds));
        }
        self.flush_unsent(ctx);
        self.on_ready(ctx);
        self.fix_election_timeout(ctx, inc);
    }

    /// `Driver::flush_unsent`: propose (as leader) or forward (to the leader) waiting batches.
    fn flush_unsent(&mut self, ctx: &mut Ctx<'_>) {
        let leader = self.raw.raft.leader_id;
        if leader == 0 {
            return;
        }
        while let Some((tag, cmds)) = self.unsent.pop_front() {
            if !self.pending.contains_key(&tag) {
                continue;
            }
            if leader == self.id {
                let data = serde_json::to_vec(&cmds).expect("commands serialize");
                if self.raw.propose(context(self.id, tag), data).is_err()
                    && let Some(p) = self.pending.remove(&tag)
                {
                    for w in p.waiters {
                        self.on_result(w, None, ctx);
                    }
                }
            } else {
                ctx.out.push((
                    self.id,
                    leader,
                    Envelope::Forward {
                        tag,
                        commands: cmds,
                    },
                ));
            }
        }
    }

    /// `Driver::expire`: callers whose batch was not applied in time get an error.
    fn expire(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(p) = self.pending.remove(&t) {
                let name = &self.name;
                ctx.rec
                    .trace(now, || format!("{name} tag {t:x} not applied in time"));
                for w in p.waiters {
                    self.on_result(w, None, ctx);
                }
            }
        }
    }

    /// `Driver::on_ready`: the ready loop while raft has something, in raft-rs's order.
    fn on_ready(&mut self, ctx: &mut Ctx<'_>) {
        for _ in 0..8 {
            if !self.raw.has_ready() {
                break;
            }
            self.ready_once(ctx);
            self.maybe_snapshot(ctx);
            for (id, s) in std::mem::take(&mut self.snapshot_reports) {
                self.raw.report_snapshot(id, s);
            }
        }
        self.resume(ctx);
        let lease = ctx.cfg.election_ticks as u64 * ctx.cfg.tick_ms;
        let applied = self.applied;
        let mut until = self.lease_until;
        self.reads.retain(|(asked, index)| {
            if *index <= applied {
                until = until.max(asked + lease);
                false
            } else {
                true
            }
        });
        self.lease_until = until;
    }

    /// Whether the applied state says this node was declared dead (and it has not announced
    /// itself since).
    pub(crate) fn declared_dead(&self) -> bool {
        self.sm.members().get(&self.name).is_some_and(|m| !m.alive)
    }

    /// Whether this node's call actors may act now: not fenced, and (with the leader lease)
    /// within a lease.
    pub(crate) fn may_serve(&self, now: u64, cfg: &SimConfig) -> bool {
        !self.fenced && (!cfg.model.leader_lease || now < self.lease_until)
    }

    /// `Switch::resume_call` for every call moved here: it reads the call's record as
    /// applied now and starts an actor, if the call still exists. The product checks
    /// neither that the record still names this node nor that the node is fenced; with
    /// [`Model::check_owner_on_resume`](super::Model) the simulation does.
    fn resume(&mut self, ctx: &mut Ctx<'_>) {
        if std::mem::take(&mut self.resume_mine) && !self.fenced {
            let mine = self.sm.calls().values().filter(|c| c.owner == self.name);
            self.to_resume.extend(mine.map(|c| c.call_id.clone()));
        }
        for call in std::mem::take(&mut self.to_resume) {
            let Some(rec) = self.sm.call(&call) else {
                continue;
            };
            if ctx.cfg.model.check_owner_on_resume && (rec.owner != self.name || self.fenced) {
                continue;
            }
            let name = &self.name;
            ctx.rec.trace(ctx.now, || {
                format!("{name} resumes {call} (owner {})", rec.owner)
            });
            self.actors.insert(call);
        }
    }

    fn ready_once(&mut self, ctx: &mut Ctx<'_>) {
        let storage = self.disk.storage.clone();
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages(), ctx);
        }
        if *ready.snapshot() != Snapshot::default() {
            self.restore(ready.snapshot().clone(), ctx);
        }
        self.apply(ready.take_committed_entries(), ctx);
        for rs in ready.take_read_states() {
            if let Some((_, asked)) = parse_context(&rs.request_ctx) {
                self.reads.push((asked, rs.index));
            }
        }
        storage.append(ready.entries()).expect("memory storage");
        if let Some(hs) = ready.hs() {
            storage.set_hardstate(hs.clone()).expect("memory storage");
        }
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages(), ctx);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            storage.set_commit(commit).expect("memory storage");
        }
        self.send(light.take_messages(), ctx);
        self.apply(light.take_committed_entries(), ctx);
        self.raw.advance_apply();
    }

    fn send(&mut self, msgs: Vec<raft::prelude::Message>, ctx: &mut Ctx<'_>) {
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_reports.push((to, SnapshotStatus::Finish));
            }
            ctx.out.push((self.id, to, Envelope::Raft(Box::new(m))));
        }
    }

    /// `Driver::restore`: the leader's snapshot replaces the state machine. As in the
    /// product, subscribers see no events for what the snapshot brought.
    fn restore(&mut self, snap: Snapshot, ctx: &mut Ctx<'_>) {
        let index = snap.get_metadata().index;
        let (sm, cdrs) = decode_snapshot(&snap.data);
        for c in cdrs {
            self.disk.cdrs.entry(c.index).or_insert(c);
        }
        self.disk
            .storage
            .apply_snapshot(snap)
            .expect("raft hands over only newer snapshots");
        self.sm = sm;
        self.applied = index;
        self.last_snapshot = index;
        ctx.rec.stats.snapshots_restored += 1;
        let name = &self.name;
        ctx.rec
            .trace(ctx.now, || format!("{name} restored snapshot at {index}"));
        let digest = Digest::of(&serde_json::to_vec(&self.sm).expect("state serializes"));
        ctx.rec.state(&self.name, ctx.now, index, digest);
    }

    /// `Driver::maybe_snapshot`: every `snapshot_every` entries, snapshot and compact.
    fn maybe_snapshot(&mut self, ctx: &mut Ctx<'_>) {
        if self.applied < self.last_snapshot + ctx.cfg.snapshot_every.max(1) {
            return;
        }
        let index = self.applied;
        let storage = &self.disk.storage;
        storage
            .create_snapshot(
                encode_snapshot(
                    &self.sm,
                    ctx.cfg.model.cdrs_in_snapshots.then_some(&self.disk.cdrs),
                ),
                index,
            )
            .expect("snapshot of applied, committed state");
        storage
            .compact((index + 1).saturating_sub(ctx.cfg.keep_entries))
            .expect("compacting behind a snapshot");
        self.last_snapshot = index;
        ctx.rec.stats.snapshots += 1;
    }

    /// `Driver::apply`.
    fn apply(&mut self, entries: Vec<Entry>, ctx: &mut Ctx<'_>) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            let mut d = Digest::default();
            d.u64(e.get_entry_type() as u64).bytes(&e.data);
            ctx.rec
                .committed(&self.name, ctx.now, e.index, e.term, d.value());
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => self.apply_commands(&e, ctx),
                other => panic!("the simulation proposes no conf change, yet got {other:?}"),
            }
            if e.index % ctx.cfg.checkpoint_every.max(1) == 0 {
                let digest = Digest::of(&serde_json::to_vec(&self.sm).expect("state serializes"));
                ctx.rec.state(&self.name, ctx.now, e.index, digest);
            }
        }
    }

    /// `Driver::apply_commands`: command `i` of entry `n` at `n * SUB_INDEX + i`.
    fn apply_commands(&mut self, e: &Entry, ctx: &mut Ctx<'_>) {
        let waiters = parse_context(&e.context)
            .filter(|(origin, _)| *origin == self.id)
            .and_then(|(_, tag)| self.pending.remove(&tag))
            .map(|p| p.waiters);
        let cmds: Vec<Command> =
            serde_json::from_slice(&e.data).expect("the simulation proposes valid batches");
        let base = e.index * SUB_INDEX;
        let mut oks = Vec::with_capacity(cmds.len());
        for (i, c) in cmds.iter().enumerate() {
            let index = base + i as u64;
            let skip = ctx.cfg.bugs.diverge_on == Some(self.id)
                && !self.diverged
                && matches!(c, Command::CallQueued { .. });
            let result = if skip {
                self.diverged = true;
                Ok(vec![])
            } else {
                self.sm.apply(index, c)
            };
            let outcome = {
                let mut d = Digest::default();
                let _ = std::fmt::Write::write_fmt(&mut d, format_args!("{c:?} {result:?}"));
                d.value()
            };
            let first = !ctx.rec.log.contains_key(&index);
            ctx.rec
                .applied(&self.name, ctx.now, index, c, result.is_ok(), outcome);
            let name = &self.name;
            ctx.rec.trace(ctx.now, || match &result {
                Ok(_) => format!("{name} apply {index} {}", brief(c)),
                Err(err) => format!("{name} apply {index} {} REFUSED: {err}", brief(c)),
            });
            match result {
                Ok(events) => {
                    oks.push(true);
                    for ev in events {
                        self.on_event(ev, first, ctx);
                    }
                }
                Err(_) => oks.push(false),
            }
        }
        if let Some(ws) = waiters {
            for (w, ok) in ws.into_iter().zip(oks) {
                self.on_result(w, Some(ok), ctx);
            }
        }
    }

    /// What the node's pump does with an applied event (`actors/src/switch.rs`).
    fn on_event(&mut self, ev: Event, first: bool, ctx: &mut Ctx<'_>) {
        match ev {
            Event::CallEnded(cdr) => {
                if ctx.cfg.bugs.duplicate_cdrs_on == Some(self.id) {
                    let mut twin = cdr.clone();
                    twin.index += 1;
                    self.disk.cdrs.insert(twin.index, twin);
                }
                if !self.replaying
                    && cdr.node == self.name
                    && let (Some(agent), Some(queue)) = (&cdr.agent, &cdr.queue)
                {
                    let secs = self.sm.queues().get(queue).map_or(0, |q| q.wrapup_secs);
                    self.wrapups.insert(agent.clone(), ctx.now + secs * 1000);
                }
                self.disk.cdrs.insert(cdr.index, cdr);
            }
            Event::CallOwnerChanged { call_id, from, to } => {
                if first {
                    ctx.rec.stats.calls_moved += 1;
                }
                if self.replaying {
                    return;
                }
                if to == self.name {
                    // The pump resumes it once the batch is applied (`Switch::resume_call`).
                    self.to_resume.push(call_id);
                } else if from == self.name && ctx.cfg.model.stop_calls_moved_away {
                    self.actors.remove(&call_id);
                }
            }
            Event::MemberChanged { alive: false, .. } if first => {
                ctx.rec.stats.nodes_declared_dead += 1;
            }
            _ => {}
        }
    }

    /// A proposal's result reached its waiter: `Some(accepted)` once applied, `None` if it
    /// was not applied in time (or could not be proposed).
    fn on_result(&mut self, w: Waiter, result: Option<bool>, ctx: &mut Ctx<'_>) {
        match w {
            Waiter::Arrival(call) => {
                self.inflight.remove(&format!("call:{call}"));
                if result == Some(true) {
                    ctx.rec.stats.calls_arrived += 1;
                } else {
                    // `actors/src/call.rs`: 503 to the caller, the actor ends. If the arrival
                    // still commits later, nothing here runs the call.
                    self.actors.remove(&call);
                    ctx.world.refused.insert(call.clone());
                    ctx.world.hang_up(&call, ctx.now);
                }
            }
            Waiter::Step(key) => {
                self.inflight.remove(&key);
            }
            Waiter::Answer(call, agent) => {
                self.inflight.remove(&format!("call:{call}"));
                if result == Some(true) {
                    ctx.rec.stats.calls_answered += 1;
                    ctx.world.answered_by.insert(call, agent);
                }
            }
            Waiter::Announce(unfence) => {
                self.announcing = false;
                if result == Some(true) {
                    self.announce_at = None;
                    self.announce_backoff = 200;
                    if unfence && self.fenced {
                        self.fenced = false;
                        let name = &self.name;
                        ctx.rec.trace(ctx.now, || format!("{name} unfenced"));
                    }
                    if ctx.cfg.model.resume_own_calls_on_announce {
                        // `resume_orphans` once the batch is applied: it reads the state then.
                        self.resume_mine = true;
                    }
                } else if !unfence {
                    self.announce_at = Some(ctx.now + self.announce_backoff);
                    self.announce_backoff = (self.announce_backoff * 2).min(5_000);
                }
            }
            Waiter::Provision => {
                self.provision = (result.is_some(), false);
            }
            Waiter::Register(agent) => {
                self.inflight.remove(&format!("agent:{agent}:register"));
                if let Some(p) = ctx.world.agents.get_mut(&agent) {
                    p.registered = result == Some(true);
                }
            }
            Waiter::Probe(at) => {
                self.probing = false;
                if result.is_some() {
                    ctx.rec.probe_committed(at, ctx.now);
                }
            }
        }
    }

    /// Stops every call actor here (`Switch::fence`).
    fn fence(&mut self, ctx: &mut Ctx<'_>) {
        if self.fenced {
            return;
        }
        self.fenced = true;
        self.actors.clear();
        ctx.rec.stats.fences += 1;
        let name = &self.name;
        ctx.rec
            .trace(ctx.now, || format!("{name} FENCED (lost the majority)"));
    }

    /// `membership::watch`, once a tick: the lease and fencing on every node, failure
    /// detection on the leader; plus `spawn_announce`'s retries.
    fn watch(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let cfg = ctx.cfg;
        let lease = cfg.election_ticks as u64 * cfg.tick_ms;
        let voters = self.disk.storage.conf_state().voters;
        let heard = voters
            .iter()
            .filter(|v| {
                **v == self.id
                    || self
                        .last_heard
                        .get(v)
                        .is_some_and(|t| now.saturating_sub(*t) < lease)
            })
            .count();
        let healthy = if cfg.model.leader_lease {
            now < self.lease_until
        } else {
            !voters.is_empty() && heard > voters.len() / 2
        };
        // `spawn_announce` retries on its own; the watch announces a fenced node once it
        // hears the majority again, and unfences it when that commits.
        let unfence = self.fenced && healthy;
        let due = self.announce_at.is_some_and(|at| at <= now);
        if !self.announcing && (due || unfence) {
            self.announcing = true;
            self.announce_at = None;
            self.batch.push((
                Command::MemberUp(Member {
                    node: self.name.clone(),
                    raft_id: self.id,
                    sip_udp: None,
                    sip_tcp: None,
                    http: None,
                    alive: true,
                    since_ms: ctx.at_ms(),
                }),
                Waiter::Announce(unfence),
            ));
        }
        if !healthy {
            if now.saturating_sub(self.started_ms) > lease * 2 && !cfg.bugs.skip_fencing {
                self.fence(ctx);
            }
            self.leader_since = None;
            return;
        }
        if cfg.model.fence_when_declared_dead && !self.fenced && self.declared_dead() {
            self.fence(ctx); // and re-announce at the next tick, as after any fencing
            return;
        }
        if self.fenced {
            return;
        }
        if !self.is_leader() {
            self.leader_since = None;
            return;
        }
        let since = *self.leader_since.get_or_insert(now);
        let detect = cfg.failure_detection_ms;
        let suspects: Vec<String> = self
            .sm
            .members()
            .values()
            .filter(|m| m.alive && m.raft_id != self.id && m.raft_id != 0)
            .filter(|m| {
                let quiet = self
                    .last_heard
                    .get(&m.raft_id)
                    .map_or(now - since, |t| now.saturating_sub(*t));
                quiet > detect && now - since > detect
            })
            .map(|m| m.node.clone())
            .collect();
        for node in suspects {
            if self
                .declared
                .get(&node)
                .is_some_and(|t| now.saturating_sub(*t) < 1000)
            {
                continue;
            }
            self.declared.insert(node.clone(), now);
            let me = &self.name;
            ctx.rec.trace(now, || {
                format!("{me} declares {node} dead (silent > {detect} ms)")
            });
            self.batch.push((
                Command::NodeDown {
                    node,
                    at_ms: ctx.at_ms(),
                },
                Waiter::Step("membership".into()),
            ));
        }
    }

    /// The switch above the log, once a tick: start-up provisioning, new calls, wrap-up
    /// timers, and every call actor taking its call's next step.
    fn drive(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let at_ms = ctx.at_ms();
        if !self.provision.0 && !self.provision.1 {
            self.provision.1 = true;
            let mut cmds: Vec<Command> = queues().into_iter().map(Command::UpsertQueue).collect();
            let qs = queues();
            for (i, agent) in ctx.world.agents.keys().enumerate() {
                let mut skills = BTreeMap::new();
                skills.insert(qs[i % qs.len()].skill.clone(), 5);
                if i % 3 == 0 {
                    skills.insert(qs[(i + 1) % qs.len()].skill.clone(), 3);
                }
                cmds.push(Command::UpsertAgent {
                    id: agent.clone(),
                    name: agent.to_uppercase(),
                    ha1: String::new(),
                    skills,
                    at_ms,
                });
            }
            let n = cmds.len();
            for (i, c) in cmds.into_iter().enumerate() {
                let w = if i + 1 == n {
                    Waiter::Provision
                } else {
                    Waiter::Step("provision".into())
                };
                self.batch.push((c, w));
            }
        }
        // A caller dials this node.
        if ctx.load && ctx.rng.random_bool(ctx.cfg.arrival_per_tick) {
            let call = ctx.world.dial(ctx.rng);
            ctx.rec.stats.calls_placed += 1;
            if !self.may_serve(now, ctx.cfg) {
                ctx.world.refused.insert(call.clone());
                ctx.world.hang_up(&call, now);
            } else {
                let queue = ctx.world.plans[&call].queue.clone();
                self.actors.insert(call.clone());
                self.inflight.insert(format!("call:{call}"));
                self.batch.push((
                    Command::CallArrived {
                        call_id: call.clone(),
                        caller: format!("caller-{call}"),
                        called: queue,
                        owner: self.name.clone(),
                        a_leg: dialog(&call, DialogRole::Uas, &self.name),
                        at_ms,
                    },
                    Waiter::Arrival(call),
                ));
            }
        }
        if !self.may_serve(now, ctx.cfg) {
            return;
        }
        let due: Vec<String> = self
            .wrapups
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(a, _)| a.clone())
            .collect();
        for agent in due {
            self.wrapups.remove(&agent);
            self.batch.push((
                Command::SetAgentState {
                    id: agent.clone(),
                    state: AgentState::Ready,
                    reason: None,
                    only_if: Some(AgentState::WrapUp),
                    at_ms,
                },
                Waiter::Step(format!("agent:{agent}")),
            ));
        }
        // An agent's leg of an ended call: the call's node BYEs it and releases the agent
        // (`call::release_agent_leg`); a dead node's, the first live member
        // (`switch::release_forgotten_agent_legs`; its patience with a live node that forgot
        // is not modelled: a node here forgets only by crashing, and then it is this node).
        let first_live = self
            .sm
            .members()
            .values()
            .find(|m| m.alive)
            .is_some_and(|m| m.node == self.name);
        let releases: Vec<(String, String)> = self
            .sm
            .agents()
            .values()
            .filter_map(|a| {
                let leg = a.leg_to_release.as_ref()?;
                let node_alive = self.sm.members().get(&leg.node).is_some_and(|m| m.alive);
                (leg.node == self.name || (first_live && !node_alive))
                    .then(|| (a.id.clone(), leg.call_id.clone()))
            })
            .collect();
        for (agent, call_id) in releases {
            let key = format!("release:{agent}");
            if self.inflight.insert(key.clone()) {
                self.batch.push((
                    Command::AgentLegReleased { id: agent, call_id },
                    Waiter::Step(key),
                ));
            }
        }
        for call_id in self.actors.clone() {
            let key = format!("call:{call_id}");
            if self.inflight.contains(&key) {
                continue;
            }
            let Some(call) = self.sm.call(&call_id) else {
                self.actors.remove(&call_id); // ended (here or elsewhere): the actor stops
                continue;
            };
            let plan = ctx.world.plans[&call_id].clone();
            let wrapup_secs = self
                .sm
                .queues()
                .get(&plan.queue)
                .map_or(0, |q| q.wrapup_secs);
            let end = |outcome: &str| Command::CallEnded {
                call_id: call_id.clone(),
                outcome: outcome.into(),
                ended_by: "caller".into(),
                wrapup_secs,
                at_ms,
            };
            let talking = matches!(call.phase, CallPhase::Talking | CallPhase::Held);
            let mut waiter = Waiter::Step(key.clone());
            let cmd = if ctx.world.hung_up.contains_key(&call_id) {
                Some(end(if talking {
                    "call.completed"
                } else {
                    "queue.abandoned"
                }))
            } else {
                match call.phase {
                    CallPhase::Routing => Some(Command::CallQueued {
                        call_id: call_id.clone(),
                        queue: plan.queue.clone(),
                        priority: 0,
                        at_ms,
                    }),
                    CallPhase::Queued => {
                        if at_ms >= call.arrived_ms + plan.patience_ms {
                            ctx.world.hang_up(&call_id, now);
                            Some(end("queue.abandoned"))
                        } else {
                            self.sm.pick_agent(&plan.queue, at_ms, &[]).map(|a| {
                                Command::CallOffered {
                                    call_id: call_id.clone(),
                                    agent: a.id.clone(),
                                    at_ms,
                                }
                            })
                        }
                    }
                    CallPhase::Ringing => {
                        let agent = call.agent.clone().unwrap_or_default();
                        let rang = self
                            .sm
                            .agent_by_id(&agent)
                            .filter(|a| a.call_id.as_deref() == Some(call_id.as_str()))
                            .map_or(at_ms, |a| a.state_since_ms);
                        let ring_timeout = self
                            .sm
                            .queues()
                            .get(&plan.queue)
                            .map_or(2, |q| q.ring_timeout_secs);
                        if call.offers < plan.unanswered_offers {
                            (at_ms >= rang + ring_timeout * 1000).then(|| {
                                Command::CallOfferFailed {
                                    call_id: call_id.clone(),
                                    agent: agent.clone(),
                                    reason: "agent.no_answer".into(),
                                    agent_not_ready: false,
                                    at_ms,
                                }
                            })
                        } else if at_ms >= rang + plan.answer_ms {
                            waiter = Waiter::Answer(call_id.clone(), agent.clone());
                            Some(Command::CallAnswered {
                                call_id: call_id.clone(),
                                agent: agent.clone(),
                                b_leg: dialog(&call_id, DialogRole::Uac, &self.name),
                                recording: None,
                                at_ms,
                            })
                        } else {
                            None
                        }
                    }
                    CallPhase::Talking | CallPhase::Held => {
                        let answered = call.answered_ms.unwrap_or(at_ms);
                        (at_ms >= answered + plan.talk_ms).then(|| {
                            ctx.world.hang_up(&call_id, now);
                            end("call.completed")
                        })
                    }
                }
            };
            if let Some(cmd) = cmd {
                self.inflight.insert(key);
                self.batch.push((cmd, waiter));
            }
        }
    }
}
