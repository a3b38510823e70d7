//! The invariants every chaos run is checked against, one per file.
//!
//! Each is a pure function of plain data recorded during a run (what nodes applied, which
//! node ran which call, the CDRs each node stored, ...): history in, [`Violation`]s out. The
//! deterministic simulation ([`crate::sim`]) feeds them step by step; a runner of real
//! processes can feed them the same records read back from the nodes' APIs.
//!
//! # Layout
//! - `agreement`: every node applies the same outcome at the same index, and holds the same
//!   state at the same raft index; committed log entries never differ between nodes.
//! - `no_rollback`: a node's applied and committed indexes never go back, crashes included.
//! - `single_owner`: no call is served by two nodes at once; no call accepted from a node
//!   declared dead.
//! - `single_offer`: no call rings or talks with two agents, no agent holds two calls.
//! - `cdr_once`: every call that arrived has exactly one CDR on every node; none lost.
//! - `progress`: after faults heal, a new proposal commits within a bound.

pub mod agreement;
pub mod cdr_once;
pub mod no_rollback;
pub mod progress;
pub mod single_offer;
pub mod single_owner;

use serde::Serialize;
use std::fmt;

/// One broken invariant, with enough context to find it in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (its module name, e.g. `single_owner`).
    pub invariant: &'static str,
    /// When it was seen (simulated or wall milliseconds since the run began), if known.
    pub at_ms: Option<u64>,
    /// The node it was seen on, if it concerns one.
    pub node: Option<String>,
    /// What is wrong, naming the call, agent or index.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant` seen at `at_ms` (on `node`, if any).
    pub fn new(
        invariant: &'static str,
        at_ms: Option<u64>,
        node: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Violation {
            invariant,
            at_ms,
            node: node.map(str::to_string),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.invariant)?;
        if let Some(t) = self.at_ms {
            write!(f, " t={t}ms")?;
        }
        if let Some(n) = &self.node {
            write!(f, " node={n}")?;
        }
        write!(f, " {}", self.detail)
    }
}

/// A 64-bit digest (FNV-1a style, eight bytes at a step), stable across runs, platforms and
/// Rust versions (unlike `DefaultHasher`): what the records carry instead of whole states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Mixes bytes in.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("eight bytes"));
            self.0 = (self.0 ^ w).wrapping_mul(0x0100_0000_01b3);
            self.0 ^= self.0 >> 29;
        }
        for x in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Mixes a number in.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        self.0
    }

    /// The digest of one byte string.
    pub fn of(b: &[u8]) -> u64 {
        Digest::default().bytes(b).value()
    }

    /// The digest of a value's `Debug` rendering, without building the string.
    pub fn of_debug(v: &impl fmt::Debug) -> u64 {
        let mut d = Digest::default();
        let _ = fmt::write(&mut d, format_args!("{v:?}"));
        d.value()
    }
}

impl fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}
