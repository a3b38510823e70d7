//! Lingxi's actors and SIP layers.
#![warn(missing_docs, unreachable_pub, unsafe_code)]

pub mod sip;
