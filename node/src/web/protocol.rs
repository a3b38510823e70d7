//! The JSON messages of the two WebSockets (documented for page authors in
//! `node/console/PROTOCOL.md`). Every message is an object with a `type`.

use serde::{Deserialize, Serialize};

/// What a browser sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientMsg {
    /// Agent: take the ringing call; `sdp` is the browser's WebRTC offer.
    Answer {
        /// The browser's SDP offer (audio, sendrecv).
        sdp: String,
    },
    /// Agent: refuse the ringing call (the switch offers it to someone else).
    Reject,
    /// Agent or web caller: end the call (or cancel it while it rings).
    Hangup,
    /// Agent: put the call on hold (`true`) or take it off hold (`false`).
    Hold {
        /// Hold on or off.
        on: bool,
    },
    /// Agent or web caller: send a key press (RFC 4733 towards the SIP side).
    Dtmf {
        /// One of `0-9 * # A-D`.
        digit: String,
    },
    /// Agent: blind transfer to a queue or an agent (exactly one of the two).
    Transfer {
        /// Queue id or extension.
        #[serde(default)]
        queue: Option<String>,
        /// Agent id.
        #[serde(default)]
        agent: Option<String>,
    },
    /// Web caller: call `queue`; `sdp` is the browser's WebRTC offer.
    Call {
        /// Queue id or extension.
        queue: String,
        /// The browser's SDP offer.
        sdp: String,
    },
    /// Keep-alive; answered with `pong`.
    Ping,
}

/// What the node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMsg {
    /// First message on a socket: who the node thinks you are.
    Hello {
        /// Agent id (agent socket) or the web caller id (customer socket).
        id: String,
        /// Display name, when known.
        name: String,
    },
    /// The agent's phone (this gateway) is registered with the switch.
    Registered {
        /// Agent id.
        agent: String,
        /// Seconds granted.
        expires: u32,
    },
    /// A call is ringing for the agent.
    Incoming {
        /// The switch's call id (use it with `/api/v1/calls/{id}/…`).
        call_id: String,
        /// Who is calling (the caller's SIP user, e.g. a phone number).
        from: String,
        /// The queue the call came through, when known.
        queue: Option<String>,
    },
    /// The node's SDP answer to the browser's offer.
    Sdp {
        /// The answer.
        sdp: String,
    },
    /// The call's state changed: `idle`, `ringing`, `connecting`, `talking`, `held`.
    State {
        /// The new state.
        state: &'static str,
    },
    /// A blind transfer was accepted by the switch.
    Transferred {
        /// The SIP URI the call was sent to.
        target: String,
    },
    /// The call ended.
    Ended {
        /// The switch's call id (empty for a web call that never got one).
        call_id: String,
        /// Stable reason code: `remote_hangup`, `local_hangup`, `cancelled`, `rejected`,
        /// `media_failed`, `refused`, `transferred`, `disconnected`, `shutdown`.
        reason: String,
    },
    /// Something went wrong; `message` (English) and `message_zh` (Chinese) are for people.
    Error {
        /// What went wrong, in English.
        message: String,
        /// The same in Chinese.
        message_zh: String,
    },
    /// Answer to `ping`.
    Pong,
}

impl ServerMsg {
    /// An error message in both languages.
    pub(crate) fn error(en: impl Into<String>, zh: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            message: en.into(),
            message_zh: zh.into(),
        }
    }

    /// The message as JSON text.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"message\":\"cannot encode a message: {e}\"}}")
        })
    }
}

/// Parses a browser message, with an error naming what is wrong.
pub(crate) fn parse_client(text: &str) -> Result<ClientMsg, String> {
    if text.len() > 64 * 1024 {
        return Err(format!(
            "message of {} bytes is over the 64 KiB limit",
            text.len()
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("unreadable message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            parse_client(r#"{"type":"answer","sdp":"v=0"}"#).unwrap(),
            ClientMsg::Answer { sdp: "v=0".into() }
        );
        assert_eq!(
            parse_client(r#"{"type":"transfer","queue":"sales"}"#).unwrap(),
            ClientMsg::Transfer {
                queue: Some("sales".into()),
                agent: None
            }
        );
        assert!(parse_client(r#"{"type":"bogus"}"#).is_err());
        assert!(
            parse_client(r#"{"type":"hold"}"#)
                .unwrap_err()
                .contains("on")
        );
        assert_eq!(
            ServerMsg::State { state: "talking" }.to_json(),
            r#"{"type":"state","state":"talking"}"#
        );
        let e = ServerMsg::error("bad", "坏").to_json();
        assert!(e.contains(r#""message_zh":"坏""#), "{e}");
    }
}
