//! Chaos testing for Lingxi.
//!
//! Nothing here yet: fault injection needs the Raft cluster (issue 3) before it can prove
//! anything. See `chaos/README.md` for what this crate will hold.
