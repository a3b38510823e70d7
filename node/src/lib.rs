//! The Lingxi node: network edges, HTTP API, start-up and shutdown.
#![warn(missing_docs, unreachable_pub, unsafe_code)]

pub mod transport;
