//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// All variants are fatal for start-up: none of them goes away by retrying
/// without changing the file or the environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file we tried to read, so the operator knows which one.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key or value the schema rejects.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (usually the file path).
        origin: String,
        /// What is wrong, starting with `line L, column C` when toml knows it.
        message: String,
    },
    /// A `LINGXI__…` environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The full variable name, e.g. `LINGXI__SIP__UDP_PORT`.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// The config parsed but breaks one or more rules; every problem found is listed.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

/// One rule a config breaks, named by the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `queues[1].overflow.target` or `sip.udp_port`.
    pub key: String,
    /// What is wrong with it, in words an operator can act on.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Renders `Invalid` as a header line followed by one problem per line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
