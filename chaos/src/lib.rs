//! Chaos testing for Lingxi: attack the cluster, then prove nothing was lost.
//!
//! Today this crate holds level 2 of the chaos plan (issue 4): a deterministic simulation of
//! the cluster logic (raft-rs, the replicated state machine, ownership, fencing and failover)
//! under a simulated network and clock, run for thousands of seeds in the test suite; and the
//! invariants every chaos run is checked against, as pure functions of recorded history, to
//! be shared with the real-process runner (level 1).
//!
//! # Layout
//! - `sim`: the simulation ([`sim::run`], [`sim::SimConfig`], [`sim::Report`]): seeded
//!   faults (crashes, pauses, partitions, one-way cuts, loss, duplicates, delays) against a
//!   seeded call load; any failing seed replays exactly ([`sim::replay_command`]).
//! - `invariants`: one file per invariant, each `history in, Vec<Violation> out`.
//!
//! Replay a seed with its trace:
//! `LINGXI_SIM_SEED=<seed> cargo test -p lingxi-chaos --lib replay -- --nocapture`.
#![warn(missing_docs, unreachable_pub, unsafe_code)]

pub mod invariants;
pub mod sim;
