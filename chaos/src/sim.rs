//! A deterministic simulation of the cluster logic: raft-rs, the replicated state machine,
//! and the switch's ownership, fencing and failover rules, under a simulated clock and
//! network, all driven by one seed.
//!
//! No threads, sockets or wall clock: one event queue ordered by simulated time (ties by
//! insertion order) holds node ticks, message deliveries, fault starts and ends, and the
//! world's ticks (callers and agents' phones). A seed fixes everything (fault mix, fault
//! schedule, delays, losses, call plans), so a failing seed replays exactly: see
//! [`replay_command`]. raft-rs's own randomness (election timeouts) is overridden from the
//! seed; the run's digest ([`Report::digest`]) proves two runs of a seed identical.
//!
//! # Layout
//! - `net`: messages and the network (cuts, loss, duplicates, delays), harness-style.
//! - `world`: fault mixes and schedules, callers' and agents' plans.
//! - `node`: one node: ready loop, lease and fencing, failure detection, call actors.
//! - `record`: the trace, its digest, the committed log, step-by-step invariant checks.
//!
//! A run has three phases: load (callers dial, faults strike), drain (faults healed,
//! callers hang up), settle (nothing new; every node must converge). Invariants are checked
//! at every step and at the end; see [`crate::invariants`].

mod net;
mod node;
mod record;
mod world;

#[cfg(test)]
mod tests;

pub use record::Stats;
pub use world::{Fault, FaultMix, MIXES, ScheduledFault, mix_named};

use crate::invariants::{self, Digest, Violation, cdr_once, single_offer, single_owner};
use net::{Envelope, Net};
use node::{Ctx, SimNode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use record::Recorder;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use world::World;

/// Wall-clock origin of simulated time (commands carry `EPOCH_MS + now`).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// How the switch above the log behaves where the simulation can model either choice.
/// The defaults are what the product does today.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// After its `MemberUp` commits, a node resumes the calls the state says are its own
    /// (ARCHITECTURE.md's "a node restarted from its data dir resumes the calls still recorded
    /// as its own"); the product's cluster mode announces without resuming.
    pub resume_own_calls_on_announce: bool,
    /// A node that applies the move of one of its calls to another node stops its own actor
    /// for it; the product's pump ignores moves away from itself.
    pub stop_calls_moved_away: bool,
    /// `Switch::resume_call` resumes a call moved here only if the record it reads still
    /// names this node and the node is not fenced; the product checks neither.
    pub check_owner_on_resume: bool,
    /// Raft snapshots carry the CDRs written so far, and a node restoring one stores those
    /// it lacks; in the product a node that catches up from a snapshot never stores the
    /// CDRs of the calls that ended within it.
    pub cdrs_in_snapshots: bool,
    /// The lease is a raft ReadIndex round trip with the leader, counted from when it was
    /// asked: a node serves (and accepts calls) only until `asked + lease`, and only once it
    /// has applied the read index (the product does this now). Without it the lease is
    /// "heard a majority within the lease", counted on receipt, which the leader's failure
    /// detector does not mirror.
    pub leader_lease: bool,
    /// A node that sees itself declared dead in the applied state fences itself (stops its
    /// calls) and re-announces. In the product, a node whose announce committed just before
    /// the `NodeDown` that declared it dead stays unfenced and never announces again: every
    /// `CallArrived` it proposes is refused from then on.
    pub fence_when_declared_dead: bool,
}

impl Model {
    /// The switch as it is now: restarted nodes resume their own calls, resuming checks the
    /// current owner, a node declared dead fences itself, snapshots carry CDRs (fixed after
    /// this simulation found them), the lease is the leader's (a ReadIndex round trip).
    pub fn product() -> Self {
        Model {
            resume_own_calls_on_announce: true,
            stop_calls_moved_away: false,
            check_owner_on_resume: true,
            cdrs_in_snapshots: true,
            leader_lease: true,
            fence_when_declared_dead: true,
        }
    }

    /// The fixes that together hold every invariant over the sweep (`stop_calls_moved_away`
    /// is not needed once the lease is the leader's, and left out).
    pub fn fixed() -> Self {
        Model {
            resume_own_calls_on_announce: true,
            stop_calls_moved_away: false,
            check_owner_on_resume: true,
            cdrs_in_snapshots: true,
            leader_lease: true,
            fence_when_declared_dead: true,
        }
    }
}

/// Deliberate breakage, to prove the invariant checkers can fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Nodes never fence themselves (a cut-off node keeps its calls).
    pub skip_fencing: bool,
    /// This raft id skips applying its first `CallQueued` (its state diverges).
    pub diverge_on: Option<u64>,
    /// This raft id stores every CDR twice.
    pub duplicate_cdrs_on: Option<u64>,
}

/// Everything a run depends on. [`SimConfig::for_seed`] gives the standard run of a seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Faults to inject (and the cluster size).
    pub mix: FaultMix,
    /// Load phase: callers dial, faults strike, ms.
    pub load_ms: u64,
    /// Drain phase: no faults, callers hang up, ms.
    pub drain_ms: u64,
    /// Longest settle phase (nothing new; nodes must converge), ms.
    pub settle_ms: u64,
    /// Raft tick (`cluster.tick_ms`).
    pub tick_ms: u64,
    /// `cluster.election_ticks`: raft's election timeout, and with the tick the lease.
    pub election_ticks: usize,
    /// `cluster.heartbeat_ticks`.
    pub heartbeat_ticks: usize,
    /// `cluster.failure_detection_ms`: silence after which the leader declares a node dead.
    pub failure_detection_ms: u64,
    /// How long a proposal may wait to be applied before its caller gets an error.
    pub propose_timeout_ms: u64,
    /// Applied entries between snapshots (small, so snapshots and compaction happen).
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot.
    pub keep_entries: u64,
    /// Compare whole states every this many raft entries.
    pub checkpoint_every: u64,
    /// Agents.
    pub agents: usize,
    /// Chance a caller dials a given node in a given tick (during load).
    pub arrival_per_tick: f64,
    /// After every fault has healed, a proposal must commit within this many ms.
    pub progress_bound_ms: u64,
    /// Keep a human-readable trace.
    pub trace: bool,
    /// Stop at the first violation (faster; the trace ends there).
    pub stop_at_first: bool,
    /// Behaviour of the switch above the log.
    pub model: Model,
    /// Deliberate breakage.
    pub bugs: Bugs,
    /// Invariants (module names) whose violations are known open issues: reported in
    /// [`Report::tolerated`], not failing the run.
    pub tolerate: Vec<&'static str>,
}

impl SimConfig {
    /// The standard run of `seed`: mix `MIXES[seed % MIXES.len()]`, product defaults for
    /// raft and membership timing (`config/src/sections.rs`).
    pub fn for_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            mix: MIXES[(seed % MIXES.len() as u64) as usize].clone(),
            load_ms: 20_000,
            drain_ms: 12_000,
            settle_ms: 10_000,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            failure_detection_ms: 700,
            propose_timeout_ms: 5_000,
            snapshot_every: 64,
            keep_entries: 16,
            checkpoint_every: 16,
            agents: 5,
            arrival_per_tick: 0.02,
            progress_bound_ms: 2_000,
            trace: false,
            stop_at_first: true,
            model: Model::product(),
            bugs: Bugs::default(),
            tolerate: Vec::new(),
        }
    }

    /// The run of `seed` in the test suite: the switch with the fixes the simulation found
    /// it needs ([`Model::fixed`]; the product as it is fails, see `chaos/README.md`).
    pub fn ci(seed: u64) -> Self {
        let mut cfg = SimConfig::for_seed(seed);
        cfg.model = Model::fixed();
        cfg
    }

    /// [`SimConfig::ci`], changed by the environment: `LINGXI_SIM_MIX=<name>` picks another
    /// fault mix; `LINGXI_SIM_MODEL` replaces the model and tolerates nothing: `product`
    /// (the switch as it is), or a comma list of fixes `resume`, `stop-moved`,
    /// `check-owner`, `snapshot-cdrs`, `leader-lease`, `fence-dead`, or `fixed` (all; see [`Model`]).
    pub fn from_env(seed: u64) -> Self {
        let mut cfg = SimConfig::ci(seed);
        if let Ok(name) = std::env::var("LINGXI_SIM_MIX")
            && let Some(m) = mix_named(name.trim())
        {
            cfg.mix = m.clone();
        }
        if let Ok(model) = std::env::var("LINGXI_SIM_MODEL") {
            cfg.model = Model::default();
            cfg.tolerate.clear();
            for part in model.split(',').map(str::trim) {
                match part {
                    "resume" => cfg.model.resume_own_calls_on_announce = true,
                    "stop-moved" => cfg.model.stop_calls_moved_away = true,
                    "check-owner" => cfg.model.check_owner_on_resume = true,
                    "snapshot-cdrs" => cfg.model.cdrs_in_snapshots = true,
                    "leader-lease" => cfg.model.leader_lease = true,
                    "fence-dead" => cfg.model.fence_when_declared_dead = true,
                    "fixed" => cfg.model = Model::fixed(),
                    "product" => cfg.model = Model::product(),
                    _ => {}
                }
            }
        }
        cfg
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The fault mix's name.
    pub mix: &'static str,
    /// Nodes.
    pub nodes: usize,
    /// The faults injected.
    #[serde(skip)]
    pub faults: Vec<ScheduledFault>,
    /// Broken invariants, in the order seen.
    pub violations: Vec<Violation>,
    /// Violations of invariants the run was told to tolerate (known issues).
    pub tolerated: Vec<Violation>,
    /// Digest of the whole run: equal digests, identical runs.
    pub digest: u64,
    /// The trace, when asked for.
    #[serde(skip)]
    pub trace: Vec<String>,
    /// Counters.
    pub stats: Stats,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line: seed, mix, verdict, first violation, how to replay.
    pub fn summary(&self) -> String {
        match self.violations.first() {
            None => format!(
                "seed {} ({}, {} nodes): ok, {} calls, {} faults, digest {:016x}",
                self.seed,
                self.mix,
                self.nodes,
                self.stats.calls_placed,
                self.faults.len(),
                self.digest
            ),
            Some(v) => format!(
                "seed {} ({}, {} nodes, digest {:016x}): {} violation(s), first: {v}\n  replay: {}",
                self.seed,
                self.mix,
                self.nodes,
                self.digest,
                self.violations.len(),
                replay_command(self.seed)
            ),
        }
    }
}

/// The one-line command that replays `seed` with its full trace (carrying over
/// `LINGXI_SIM_MODEL` and `LINGXI_SIM_MIX` if they are set, as [`SimConfig::from_env`] reads
/// them).
pub fn replay_command(seed: u64) -> String {
    let mut env = String::new();
    for var in ["LINGXI_SIM_MODEL", "LINGXI_SIM_MIX"] {
        if let Ok(v) = std::env::var(var) {
            env.push_str(&format!("{var}={v} "));
        }
    }
    format!("{env}LINGXI_SIM_SEED={seed} cargo test -p lingxi-chaos --lib replay -- --nocapture")
}

/// What happens at a moment of simulated time.
enum Ev {
    /// A node's raft tick (and the switch's periodic work).
    Tick(usize),
    /// The world's tick: phones register, probes, callers hang up while draining.
    World,
    /// A message arrives at node index `to`.
    Deliver { from: u64, to: usize, env: Envelope },
    /// Fault `k` of the schedule starts.
    FaultStart(usize),
    /// Fault `k` ends.
    FaultEnd(usize),
    /// Load ends: no new calls, callers hang up.
    EndLoad,
    /// Drain ends: nothing new is proposed; nodes must converge.
    Settle,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq)) // min-heap
    }
}

/// Phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Drain,
    Settle,
}

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    world: World,
    rec: Recorder,
    net: Net,
    faults: Vec<ScheduledFault>,
    active: Vec<bool>,
    phase: Phase,
    out: Vec<(u64, u64, Envelope)>,
    /// Calls served by two nodes already reported (a violation is reported at its onset).
    doubly_served: BTreeSet<String>,
    /// Applied index at which each node's state was last checked for single offers.
    offer_checked: Vec<u64>,
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> Report {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.mix.nodes;
    let faults = world::schedule(&mut rng, &cfg.mix, 1_500, cfg.load_ms.saturating_sub(1_000));
    let world = World::new(&mut rng, cfg.agents, n);
    let voters: Vec<u64> = (1..=n as u64).collect();
    let mut sim = Sim {
        cfg: cfg.clone(),
        rng,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: voters
            .iter()
            .map(|id| SimNode::new(*id, voters.clone()))
            .collect(),
        world,
        rec: Recorder {
            keep_trace: cfg.trace,
            tolerate: cfg.tolerate.clone(),
            ..Default::default()
        },
        net: Net::default(),
        active: vec![false; faults.len()],
        faults,
        phase: Phase::Load,
        out: Vec::new(),
        doubly_served: BTreeSet::new(),
        offer_checked: vec![0; n],
    };
    sim.main();
    let stats = sim.rec.stats.clone();
    Report {
        seed: cfg.seed,
        mix: cfg.mix.name,
        nodes: n,
        faults: sim.faults,
        violations: sim.rec.violations,
        tolerated: sim.rec.tolerated,
        digest: sim.rec.digest.value(),
        trace: sim.rec.trace,
        stats,
    }
}

impl Sim {
    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Runs `f` on node `i` with a context, then routes what it sent and checks the
    /// step's invariants.
    fn with_node(&mut self, i: usize, f: impl FnOnce(&mut SimNode, &mut Ctx<'_>)) {
        let mut ctx = Ctx {
            now: self.now,
            cfg: &self.cfg,
            rng: &mut self.rng,
            out: &mut self.out,
            rec: &mut self.rec,
            world: &mut self.world,
            load: self.phase == Phase::Load,
        };
        f(&mut self.nodes[i], &mut ctx);
        self.route();
        self.check_step(i);
    }

    fn route(&mut self) {
        for (from, to, env) in std::mem::take(&mut self.out) {
            let delays = self.net.route(&mut self.rng, from, to, &env);
            self.rec.mix(&[from, to, delays.len() as u64]);
            if delays.is_empty() {
                self.rec.stats.dropped += 1;
            }
            let mut env = Some(env);
            let last = delays.len().saturating_sub(1);
            for (k, d) in delays.into_iter().enumerate() {
                let env = if k == last {
                    env.take().expect("moved once, last")
                } else {
                    env.clone().expect("still here")
                };
                let at = self.now + d;
                let to = (to - 1) as usize;
                self.at(at, Ev::Deliver { from, to, env });
            }
        }
    }

    fn main(&mut self) {
        let end = self.cfg.load_ms + self.cfg.drain_ms + self.cfg.settle_ms;
        for i in 0..self.nodes.len() {
            self.with_node(i, |n, ctx| n.start(ctx));
            let phase = self.rng.random_range(0..self.cfg.tick_ms);
            self.at(phase, Ev::Tick(i));
        }
        self.at(0, Ev::World);
        for k in 0..self.faults.len() {
            let (s, e) = (self.faults[k].start_ms, self.faults[k].end_ms);
            self.at(s, Ev::FaultStart(k));
            self.at(e, Ev::FaultEnd(k));
        }
        self.at(self.cfg.load_ms, Ev::EndLoad);
        self.at(self.cfg.load_ms + self.cfg.drain_ms, Ev::Settle);
        self.rec.healed(0);
        while let Some(s) = self.queue.pop() {
            if s.at > end {
                break;
            }
            self.now = s.at;
            self.rec.stats.events += 1;
            self.handle(s.ev);
            // Ownership is judged once everything due at this instant has run (a thawed node
            // reads all it was sent before its actors act again).
            if self.queue.peek().is_none_or(|n| n.at != self.now) {
                self.check_serving();
            }
            if self.cfg.stop_at_first && !self.rec.violations.is_empty() {
                break;
            }
            if self.phase == Phase::Settle && self.converged() {
                break;
            }
        }
        self.rec.stats.sim_ms = self.now;
        if self.cfg.stop_at_first && !self.rec.violations.is_empty() {
            return;
        }
        self.final_checks();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i) => {
                let next = self.now + self.cfg.tick_ms;
                self.at(next, Ev::Tick(i));
                if self.nodes[i].active() {
                    self.rec.mix(&[1, i as u64]);
                    self.with_node(i, |n, ctx| n.tick(ctx));
                }
            }
            Ev::World => {
                let next = self.now + self.cfg.tick_ms;
                self.at(next, Ev::World);
                self.world_tick();
            }
            Ev::Deliver { from, to, env } => {
                let node = &mut self.nodes[to];
                if node.run.is_none() {
                    self.rec.stats.dropped += 1;
                } else if node.frozen {
                    node.held.push((from, env));
                } else {
                    self.rec.stats.delivered += 1;
                    self.rec.mix(&[2, from, to as u64]);
                    let now = self.now;
                    if self.cfg.trace && !matches!(env, Envelope::Ping) {
                        let kind = env.kind();
                        self.rec
                            .trace(now, || format!("deliver n{from} -> n{} {kind}", to + 1));
                    }
                    self.with_node(to, |n, ctx| n.deliver(from, env, ctx));
                }
            }
            Ev::FaultStart(k) => self.fault(k, true),
            Ev::FaultEnd(k) => self.fault(k, false),
            Ev::EndLoad => {
                self.phase = Phase::Drain;
                self.rec.trace(self.now, || "load ends: draining".into());
            }
            Ev::Settle => {
                self.phase = Phase::Settle;
                self.rec.trace(self.now, || "drain ends: settling".into());
            }
        }
    }

    /// Callers and phones, once a tick.
    fn world_tick(&mut self) {
        let now = self.now;
        if self.phase == Phase::Settle {
            return;
        }
        if self.phase == Phase::Drain {
            let live: Vec<String> = self
                .world
                .plans
                .keys()
                .filter(|c| !self.world.hung_up.contains_key(*c))
                .cloned()
                .collect();
            for c in live {
                if self.rng.random_bool(0.05) {
                    self.world.hang_up(&c, now);
                }
            }
        }
        let agents: Vec<String> = self.world.agents.keys().cloned().collect();
        for a in agents {
            let phone = self.world.agents[&a].clone();
            if phone.register_at > now {
                continue;
            }
            let n = self.nodes.len();
            let ok = self.nodes[phone.node].active();
            if ok {
                self.with_node(phone.node, |node, ctx| {
                    node.propose_register(&a, ctx);
                });
            }
            let moves = !ok || self.rng.random_bool(0.2);
            let next_node = if moves {
                self.rng.random_range(0..n)
            } else {
                phone.node
            };
            let p = self.world.agents.get_mut(&a).expect("listed above");
            p.node = next_node;
            p.register_at = now + if ok { 20_000 } else { 1_000 };
        }
        if self.rec.open_heal().is_some() {
            for i in 0..self.nodes.len() {
                if self.nodes[i].active() {
                    self.with_node(i, |node, ctx| node.probe(ctx));
                }
            }
        }
    }

    /// Fault `k` starts or ends.
    fn fault(&mut self, k: usize, start: bool) {
        self.active[k] = start;
        let f = self.faults[k].fault.clone();
        self.rec.trace(self.now, || {
            format!("FAULT {} {f:?}", if start { "starts" } else { "ends" })
        });
        self.rec.mix(&[3, k as u64, u64::from(start)]);
        match (&f, start) {
            (Fault::Crash(i), true) => {
                let i = *i;
                self.with_node(i, |n, ctx| n.crash(ctx));
            }
            (Fault::Crash(i), false) => {
                let i = *i;
                let still =
                    self.faults.iter().enumerate().any(|(j, g)| {
                        self.active[j] && matches!(g.fault, Fault::Crash(x) if x == i)
                    });
                if !still && self.nodes[i].run.is_none() {
                    self.with_node(i, |n, ctx| n.start(ctx));
                }
            }
            (Fault::Freeze(i), true) if self.nodes[*i].run.is_some() => {
                self.nodes[*i].frozen = true;
            }
            (Fault::Freeze(i), false) => {
                let i = *i;
                let still =
                    self.faults.iter().enumerate().any(|(j, g)| {
                        self.active[j] && matches!(g.fault, Fault::Freeze(x) if x == i)
                    });
                if self.nodes[i].frozen && !still {
                    // SIGCONT: what arrived meanwhile is read, then the overdue tick fires.
                    self.nodes[i].frozen = false;
                    let held = std::mem::take(&mut self.nodes[i].held);
                    for (from, env) in held {
                        self.rec.stats.delivered += 1;
                        self.with_node(i, |n, ctx| n.deliver(from, env, ctx));
                    }
                    self.with_node(i, |n, ctx| n.tick(ctx));
                }
            }
            _ => {}
        }
        self.recompute_net();
        if start {
            self.rec.faulted(self.now);
        } else if !self.active.iter().any(|a| *a) {
            self.rec.healed(self.now);
        }
    }

    fn recompute_net(&mut self) {
        let mix = &self.cfg.mix;
        let n = self.nodes.len();
        let mut net = Net {
            dup: mix.dup,
            delay_min: 1,
            delay_max: 10,
            ..Default::default()
        };
        let id = |i: usize| i as u64 + 1;
        for (k, f) in self.faults.iter().enumerate() {
            if !self.active[k] {
                continue;
            }
            match &f.fault {
                Fault::Split(group) => {
                    for a in group {
                        for b in (0..n).filter(|b| !group.contains(b)) {
                            net.cut.insert((id(*a), id(b)));
                            net.cut.insert((id(b), id(*a)));
                        }
                    }
                }
                Fault::OneWay(a, b) => {
                    net.cut.insert((id(*a), id(*b)));
                }
                Fault::CutLink(a, b) => {
                    net.cut.insert((id(*a), id(*b)));
                    net.cut.insert((id(*b), id(*a)));
                }
                Fault::Loss(p) => net.loss = net.loss.max(*p),
                Fault::Delay(d) => net.extra_delay = net.extra_delay.max(*d),
                Fault::Crash(_) | Fault::Freeze(_) => {}
            }
        }
        self.net = net;
    }

    /// Invariants checked after every step on node `i`.
    fn check_step(&mut self, i: usize) {
        if let Some(r) = &self.nodes[i].run
            && r.applied != self.offer_checked[i]
        {
            self.offer_checked[i] = r.applied;
            let v = single_offer::check_state(&self.nodes[i].name, self.now, &r.sm);
            self.rec.violate(self.now, v);
        }
    }

    /// No call served by two nodes (reported when it starts).
    fn check_serving(&mut self) {
        let mut serving: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in &self.nodes {
            if let Some(r) = &n.run
                && !n.frozen
                && r.may_serve(self.now, &self.cfg)
            {
                for c in &r.actors {
                    serving.entry(c.clone()).or_default().insert(n.name.clone());
                }
            }
        }
        let v = single_owner::check_serving(self.now, &serving);
        let now_doubly: BTreeSet<String> = serving
            .iter()
            .filter(|(_, n)| n.len() > 1)
            .map(|(c, _)| c.clone())
            .collect();
        let new: Vec<Violation> = v
            .into_iter()
            .zip(now_doubly.iter())
            .filter(|(_, c)| !self.doubly_served.contains(*c))
            .map(|(v, _)| v)
            .collect();
        self.doubly_served = now_doubly;
        self.rec.violate(self.now, new);
    }

    /// Every node runs and has applied everything committed, at the same index.
    fn converged(&self) -> bool {
        let mut applied = None;
        for n in &self.nodes {
            let Some(r) = &n.run else { return false };
            if applied.is_some_and(|a| a != r.applied) {
                return false;
            }
            applied = Some(r.applied);
        }
        true
    }

    fn final_checks(&mut self) {
        let now = self.now;
        // Converged: the same state everywhere (the agreement checker compares digests).
        if !self.converged() {
            let status: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.run {
                    Some(r) => format!("{} applied {}", n.name, r.applied),
                    None => format!("{} down", n.name),
                })
                .collect();
            self.rec.violate(
                now,
                [Violation::new(
                    "progress",
                    Some(now),
                    None,
                    format!(
                        "nodes did not converge {} ms after the drain: {}",
                        self.cfg.settle_ms,
                        status.join(", ")
                    ),
                )],
            );
        }
        let mut ready = Vec::new();
        for n in &self.nodes {
            if let Some(r) = &n.run {
                let d = Digest::of(&serde_json::to_vec(&r.sm).expect("state serializes"));
                self.rec.state(&n.name, now, r.applied, d);
                ready.push(invariants::progress::NodeReadiness {
                    node: n.name.clone(),
                    serving: r.may_serve(now, &self.cfg),
                    declared_dead: r.declared_dead(),
                });
            }
        }
        let v = invariants::progress::check_ready(now, &ready);
        self.rec.violate(now, v);
        let log: Vec<(u64, &lingxi_cluster::Command, bool)> = self
            .rec
            .log
            .iter()
            .map(|(i, (c, ok))| (*i, c, *ok))
            .collect();
        let v = single_owner::check_arrivals(log);
        self.rec.violate(now, v);
        // Exactly one CDR per call.
        let mut h = cdr_once::CdrHistory::default();
        for (c, ok) in self.rec.log.values() {
            if let (lingxi_cluster::Command::CallArrived { call_id, .. }, true) = (c, ok) {
                h.arrived.insert(call_id.clone());
            }
        }
        for n in &self.nodes {
            let cdrs = match (&n.run, &n.disk) {
                (Some(r), _) => r.cdrs().values().cloned().collect(),
                (None, Some(d)) => d.cdrs.values().cloned().collect(),
                (None, None) => vec![],
            };
            h.stores.insert(n.name.clone(), cdrs);
        }
        if let Some(r) = self.nodes.iter().find_map(|n| n.run.as_ref()) {
            h.live_at_end = r.sm.calls().keys().cloned().collect();
            self.rec.stats.agents_stuck_in_wrapup =
                r.sm.agents()
                    .values()
                    .filter(|a| a.state == lingxi_cluster::model::AgentState::WrapUp)
                    .count() as u64;
            // After the drain every fault has healed: an agent still held back by a leg of an
            // ended call would be offered no call again.
            let held: Vec<String> =
                r.sm.agents()
                    .values()
                    .filter_map(|a| {
                        let leg = a.leg_to_release.as_ref()?;
                        Some(format!(
                            "{} (call {}, node {})",
                            a.id, leg.call_id, leg.node
                        ))
                    })
                    .collect();
            self.rec.stats.agents_left_holding_a_leg = held.len() as u64;
            if !held.is_empty() {
                let v = Violation::new(
                    "progress",
                    Some(now),
                    None,
                    format!(
                        "agents whose leg of an ended call was never released: {}",
                        held.join(", ")
                    ),
                );
                self.rec.violate(now, [v]);
            }
            self.rec.stats.raft_entries = r.applied;
        }
        h.answered_by = self.world.answered_by.clone();
        h.refused = self.world.refused.clone();
        let v = cdr_once::check(&h);
        self.rec.violate(now, v);
        // Progress after every heal (windows still open too close to the end are skipped).
        let bound = self.cfg.progress_bound_ms;
        let windows: Vec<_> = self
            .rec
            .heals
            .iter()
            .filter(|w| w.committed_at_ms.is_some() || w.healed_at_ms + bound < now)
            .cloned()
            .collect();
        let v = invariants::progress::check(&windows, bound);
        self.rec.violate(now, v);
        self.rec.stats.calls_refused = self.world.refused.len() as u64;
    }
}

/// Runs `seed` as [`SimConfig::from_env`] describes it, printing the trace (if `trace`), the
/// faults, the counters and the verdict. For the `replay` test, and for a binary's
/// `sim --seed N --trace` subcommand.
pub fn replay(seed: u64, trace: bool) -> Report {
    let mut cfg = SimConfig::from_env(seed);
    cfg.trace = trace;
    let r = run(&cfg);
    if trace {
        for l in &r.trace {
            println!("{l}");
        }
    }
    println!("faults: {:?}", r.faults);
    println!(
        "stats: {}",
        serde_json::to_string(&r.stats).unwrap_or_default()
    );
    for v in &r.tolerated {
        println!("KNOWN ISSUE {v}");
    }
    for v in &r.violations {
        println!("VIOLATION {v}");
    }
    println!("{}", r.summary());
    r
}
