//! The simulated network between nodes, in the spirit of raft-rs's `harness::Network`:
//! every message goes through [`Net::route`], which may drop it (a cut link, loss), delay it
//! (so messages overtake each other) or deliver it twice.

use lingxi_cluster::Command;
use raft::prelude::Message;
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::BTreeSet;

/// What travels between nodes (mirrors `lingxi_cluster::raft::Envelope`).
#[derive(Debug, Clone)]
pub(crate) enum Envelope {
    /// A raft message.
    Raft(Box<Message>),
    /// "I am alive", every two ticks to every peer (the lease and failure detector hear it).
    Ping,
    /// A follower's batch of proposals, for the leader to propose with the follower's tag.
    Forward {
        /// The proposer's tag (answers the proposer's callers when applied there).
        tag: u64,
        /// The batch.
        commands: Vec<Command>,
    },
}

impl Envelope {
    /// A short name for traces and the run digest.
    pub(crate) fn kind(&self) -> String {
        match self {
            Envelope::Raft(m) => format!("{:?}", m.get_msg_type()),
            Envelope::Ping => "Ping".into(),
            Envelope::Forward { commands, .. } => format!("Forward[{}]", commands.len()),
        }
    }
}

/// Link state and delivery odds, recomputed whenever a fault starts or ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Net {
    /// Directed links that deliver nothing: (from, to) raft ids.
    pub(crate) cut: BTreeSet<(u64, u64)>,
    /// Probability a message is lost.
    pub(crate) loss: f64,
    /// Probability a message (other than a forwarded batch) is delivered twice.
    pub(crate) dup: f64,
    /// Shortest one-way delay, ms.
    pub(crate) delay_min: u64,
    /// Longest one-way delay without a delay fault, ms.
    pub(crate) delay_max: u64,
    /// Extra delay a delay fault may add to any message, ms (0 when none is active).
    pub(crate) extra_delay: u64,
}

impl Net {
    /// Delays after which the message arrives: none (dropped), one, or two (duplicated).
    pub(crate) fn route(&self, rng: &mut StdRng, from: u64, to: u64, env: &Envelope) -> Vec<u64> {
        if self.cut.contains(&(from, to)) {
            return vec![];
        }
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return vec![];
        }
        let delay = |rng: &mut StdRng| {
            let mut d = rng.random_range(self.delay_min..=self.delay_max);
            if self.extra_delay > 0 {
                d += rng.random_range(0..=self.extra_delay);
            }
            d
        };
        let first = delay(rng);
        // A forwarded batch rides the cluster transport's TCP stream: never duplicated.
        let dup = !matches!(env, Envelope::Forward { .. }) && self.dup > 0.0;
        if dup && rng.random_bool(self.dup) {
            let second = delay(rng);
            vec![first, second]
        } else {
            vec![first]
        }
    }
}
