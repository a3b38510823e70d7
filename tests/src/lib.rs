//! Test harness for Lingxi's end-to-end tests: a SIP user agent independent of the switch's
//! SIP stack, an RTP endpoint, and an in-process node with an HTTP client for its API.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use lingxi_tests::{Rtp, TestNode, TestUa, WAIT};
//! let node = TestNode::standard().await?;
//! let mut agent = TestUa::new("1001", "pass1001", node.sip).await?;
//! assert_eq!(agent.register().await?.status, Some(200));
//! node.wait_agent_state("1001", "ready", WAIT).await?;
//! let (rtp_a, rtp_b) = (Rtp::bind().await?, Rtp::bind().await?);
//! let mut caller = TestUa::new("alice", "", node.sip).await?;
//! let mut call = caller.call("support", &rtp_a).await?;
//! let leg_b = agent.accept(&rtp_b, WAIT).await?;
//! caller.bye(&mut call).await?;
//! agent.wait_bye(&leg_b, WAIT).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `msg`: received SIP messages (parsed with rsip), SDP, digest authentication.
//! - `ua`: [`TestUa`], the SIP user agent (UDP), and [`Dialog`].
//! - `rtp`: [`Rtp`], an RTP endpoint that sends marked PCMU and counts what arrives.
//! - `browser`: [`browser::Browser`], headless Chromium over WebDriver with fake audio devices.
//! - `node`: [`TestNode`], configs for tests, a tiny HTTP/1.1 client, polling helpers.
#![warn(missing_docs, unsafe_code)]

pub mod browser;
pub mod cluster;
pub mod msg;
pub mod node;
pub mod rtp;
pub mod ua;

pub use msg::{Sdp, SipMsg};
pub use node::{TestNode, WAIT, agent, base_config, standard_config, wait_for, wait_until};
pub use rtp::{Rtp, RtpStats, exchange};
pub use ua::{Dialog, InviteOutcome, TestUa};
