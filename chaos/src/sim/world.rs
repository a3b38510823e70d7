//! Everything outside the nodes: the fault schedule, and the people (callers who dial and
//! hang up, agents whose phones ring and answer), all drawn from the seed.

use lingxi_cluster::model::{Overflow, QueueSpec};
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, BTreeSet};

/// Which faults a run injects, and how hard.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMix {
    /// Name, printed with a failing seed.
    pub name: &'static str,
    /// Nodes in the cluster (3 to 5).
    pub nodes: usize,
    /// Faults scheduled over the load phase.
    pub faults: usize,
    /// Crash a node (it loses everything but its storage) and restart it.
    pub crash: bool,
    /// Freeze a node (SIGSTOP: it neither ticks nor reads) and thaw it.
    pub freeze: bool,
    /// Symmetric partitions: one node isolated, or the cluster split in two.
    pub partition: bool,
    /// Asymmetric and non-transitive cuts: one direction of a link, or one link only.
    pub asymmetric: bool,
    /// Bursts of message loss, up to this probability.
    pub loss: f64,
    /// Probability of a duplicated message, all run long.
    pub dup: f64,
    /// Bursts of extra delay, up to this many ms (reordering).
    pub delay_ms: u64,
}

/// The mixes seeds are spread over: seed `s` runs `MIXES[s % MIXES.len()]`, so a seed alone
/// replays a run.
pub const MIXES: &[FaultMix] = &[
    FaultMix {
        name: "calm",
        nodes: 3,
        faults: 0,
        crash: false,
        freeze: false,
        partition: false,
        asymmetric: false,
        loss: 0.0,
        dup: 0.0,
        delay_ms: 0,
    },
    FaultMix {
        name: "crashes",
        nodes: 3,
        faults: 5,
        crash: true,
        freeze: false,
        partition: false,
        asymmetric: false,
        loss: 0.0,
        dup: 0.0,
        delay_ms: 0,
    },
    FaultMix {
        name: "partitions",
        nodes: 5,
        faults: 6,
        crash: false,
        freeze: false,
        partition: true,
        asymmetric: false,
        loss: 0.0,
        dup: 0.0,
        delay_ms: 0,
    },
    FaultMix {
        name: "lossy",
        nodes: 3,
        faults: 6,
        crash: false,
        freeze: false,
        partition: false,
        asymmetric: false,
        loss: 0.3,
        dup: 0.02,
        delay_ms: 150,
    },
    FaultMix {
        name: "pauses",
        nodes: 3,
        faults: 5,
        crash: false,
        freeze: true,
        partition: false,
        asymmetric: false,
        loss: 0.0,
        dup: 0.0,
        delay_ms: 0,
    },
    FaultMix {
        name: "asymmetric",
        nodes: 3,
        faults: 5,
        crash: false,
        freeze: false,
        partition: false,
        asymmetric: true,
        loss: 0.0,
        dup: 0.0,
        delay_ms: 0,
    },
    FaultMix {
        name: "everything",
        nodes: 5,
        faults: 8,
        crash: true,
        freeze: true,
        partition: true,
        asymmetric: true,
        loss: 0.2,
        dup: 0.01,
        delay_ms: 100,
    },
];

/// The mix named `name`.
pub fn mix_named(name: &str) -> Option<&'static FaultMix> {
    MIXES.iter().find(|m| m.name == name)
}

/// One fault (node indexes are 0-based positions in the cluster).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The node dies; it restarts from its storage when the fault ends.
    Crash(usize),
    /// The node is frozen; it resumes when the fault ends.
    Freeze(usize),
    /// These nodes are cut from the others, both ways.
    Split(Vec<usize>),
    /// Messages from the first node to the second are lost (not the other way).
    OneWay(usize, usize),
    /// The link between two nodes is cut both ways; each still reaches the others.
    CutLink(usize, usize),
    /// Each message is lost with this probability.
    Loss(f64),
    /// Each message takes up to this many ms more.
    Delay(u64),
}

/// A fault and when it is active.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms (the node restarts, the link heals, ...).
    pub end_ms: u64,
    /// What.
    pub fault: Fault,
}

/// Draws `mix.faults` faults within `[from_ms, to_ms)`, at most two active at once.
pub(crate) fn schedule(
    rng: &mut StdRng,
    mix: &FaultMix,
    from_ms: u64,
    to_ms: u64,
) -> Vec<ScheduledFault> {
    let mut kinds: Vec<u8> = Vec::new();
    for (on, k) in [
        (mix.crash, 0),
        (mix.freeze, 1),
        (mix.partition, 2),
        (mix.asymmetric, 3),
        (mix.loss > 0.0, 4),
        (mix.delay_ms > 0, 5),
    ] {
        if on {
            kinds.push(k);
        }
    }
    let mut out: Vec<ScheduledFault> = Vec::new();
    if kinds.is_empty() || to_ms <= from_ms + 1000 {
        return out;
    }
    let n = mix.nodes;
    let mut attempts = 0;
    while out.len() < mix.faults && attempts < mix.faults * 20 {
        attempts += 1;
        let start_ms = rng.random_range(from_ms..to_ms - 500);
        let len = match rng.random_range(0..4) {
            0 => rng.random_range(100..600),
            1 => rng.random_range(600..1500),
            _ => rng.random_range(1500..5000),
        };
        let end_ms = (start_ms + len).min(to_ms);
        let overlapping = out
            .iter()
            .filter(|f| f.start_ms < end_ms && start_ms < f.end_ms)
            .count();
        if overlapping >= 2 {
            continue;
        }
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        let fault = match kinds[rng.random_range(0..kinds.len())] {
            0 => Fault::Crash(a),
            1 => Fault::Freeze(a),
            2 => {
                if rng.random_bool(0.5) {
                    Fault::Split(vec![a])
                } else {
                    let size = rng.random_range(1..=n / 2);
                    Fault::Split((0..size).map(|i| (a + i) % n).collect())
                }
            }
            3 => {
                if rng.random_bool(0.5) {
                    Fault::OneWay(a, b)
                } else {
                    Fault::CutLink(a, b)
                }
            }
            4 => Fault::Loss(rng.random_range(0.05..=mix.loss)),
            _ => Fault::Delay(rng.random_range(10..=mix.delay_ms)),
        };
        out.push(ScheduledFault {
            start_ms,
            end_ms,
            fault,
        });
    }
    out.sort_by_key(|f| f.start_ms);
    out
}

/// What the people involved in one call will do, drawn when the caller dials.
#[derive(Debug, Clone)]
pub(crate) struct CallPlan {
    /// Queue dialled.
    pub(crate) queue: String,
    /// How long the caller waits in queue before hanging up, ms.
    pub(crate) patience_ms: u64,
    /// How long the caller talks once answered, ms.
    pub(crate) talk_ms: u64,
    /// How long an agent's phone rings before it answers, ms.
    pub(crate) answer_ms: u64,
    /// Offers numbered below this ring out unanswered (offer 1 is the first).
    pub(crate) unanswered_offers: u32,
}

/// The people: callers and agents.
#[derive(Debug, Clone, Default)]
pub(crate) struct World {
    /// Calls dialled so far.
    pub(crate) next_call: u64,
    /// Plans of the calls dialled.
    pub(crate) plans: BTreeMap<String, CallPlan>,
    /// When each caller hung up (the switch must end the call with a CDR).
    pub(crate) hung_up: BTreeMap<String, u64>,
    /// Who answered each call, as the agents' phones saw it.
    pub(crate) answered_by: BTreeMap<String, String>,
    /// Calls refused with 503 (fenced node, or the arrival could not be committed in time).
    pub(crate) refused: BTreeSet<String>,
    /// Agent ids, with the node each one's phone registers at.
    pub(crate) agents: BTreeMap<String, AgentPhone>,
}

/// An agent's phone.
#[derive(Debug, Clone)]
pub(crate) struct AgentPhone {
    /// Node index it registers with.
    pub(crate) node: usize,
    /// When it (re-)registers next, ms.
    pub(crate) register_at: u64,
    /// Whether its latest registration was accepted.
    pub(crate) registered: bool,
}

/// The queues of every run.
pub(crate) fn queues() -> Vec<QueueSpec> {
    ["sales", "support"]
        .iter()
        .map(|q| QueueSpec {
            id: q.to_string(),
            name: q.to_string(),
            extensions: vec![],
            skill: q.to_string(),
            min_proficiency: 1,
            priority: 0,
            ring_timeout_secs: 2,
            max_wait_secs: 60,
            wrapup_secs: 1,
            not_ready_on_no_answer: false,
            overflow: Overflow::Hangup,
            overflow_when_no_agents: false,
        })
        .collect()
}

impl World {
    /// Agents `a1..=count`, each registering at a random node soon after start.
    pub(crate) fn new(rng: &mut StdRng, agents: usize, nodes: usize) -> Self {
        let mut w = World::default();
        for i in 1..=agents {
            w.agents.insert(
                format!("a{i}"),
                AgentPhone {
                    node: rng.random_range(0..nodes),
                    register_at: rng.random_range(300..1500),
                    registered: false,
                },
            );
        }
        w
    }

    /// A caller dials: the new call's id and plan.
    pub(crate) fn dial(&mut self, rng: &mut StdRng) -> String {
        self.next_call += 1;
        let id = format!("c{}", self.next_call);
        let queues = queues();
        let plan = CallPlan {
            queue: queues[rng.random_range(0..queues.len())].id.clone(),
            patience_ms: rng.random_range(3_000..15_000),
            talk_ms: rng.random_range(500..8_000),
            answer_ms: rng.random_range(100..1_500),
            unanswered_offers: if rng.random_bool(0.15) { 2 } else { 1 },
        };
        self.plans.insert(id.clone(), plan);
        id
    }

    /// The caller of `call` hangs up at `now` (if not already).
    pub(crate) fn hang_up(&mut self, call: &str, now: u64) {
        self.hung_up.entry(call.to_string()).or_insert(now);
    }
}
