//! The HTTP/1.1 client behind `lingxi cluster …`: one blocking request per connection over
//! `std::net::TcpStream` (the API answers small JSON documents), and the text rendering of
//! `GET /api/v1/cluster`. Every error names the URL and what failed.

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Giving up on connecting to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Giving up on an answer (membership changes wait for a commit: up to the proposal timeout).
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest answer read.
const MAX_RESPONSE: u64 = 16 << 20;

/// A node's HTTP API, as given with `--api`: `http://host:port[/prefix]` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// `host:port`, as connected to and sent in `Host`.
    authority: String,
    /// Path prefix, without a trailing slash (usually empty).
    prefix: String,
    /// Bearer token sent with every request (`--token` / `LINGXI_TOKEN`): a session token
    /// from login or an API key.
    token: Option<String>,
}

impl Api {
    /// Parses `--api`. Only plain `http://` is spoken.
    pub fn parse(api: &str) -> anyhow::Result<Api> {
        let rest = if let Some(r) = api.strip_prefix("http://") {
            r
        } else if api.starts_with("https://") {
            bail!("--api {api}: https is not supported; use the node's plain http:// address");
        } else if api.contains("://") {
            bail!("--api {api}: expected http://host:port");
        } else {
            api
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            bail!("--api {api}: expected http://host:port (e.g. http://127.0.0.1:8181)");
        }
        Ok(Api {
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            token: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request (an empty token sends none).
    pub fn with_token(mut self, token: Option<String>) -> Api {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path)
    }

    /// Sends one request; returns the status and the JSON body (`Null` when empty).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = self.url(path);
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .with_context(|| format!("{method} {url}: cannot resolve {}", self.authority))?
            .collect();
        let mut last_err = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            anyhow!(
                "{method} {url}: cannot connect: {} (is the node running and is this its http.listen?)",
                last_err.map_or_else(|| "no address".to_string(), |e| e.to_string())
            )
        })?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lingxi-cli\r\nAccept: application/json\r\nConnection: close\r\n",
            self.prefix, self.authority
        );
        if let Some(t) = &self.token {
            let _ = write!(req, "Authorization: Bearer {}\r\n", t.trim());
        }
        if body.is_some() {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            );
        }
        req.push_str("\r\n");
        req.push_str(&payload);
        stream
            .write_all(req.as_bytes())
            .with_context(|| format!("{method} {url}: sending the request failed"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .with_context(|| format!("{method} {url}: reading the response failed"))?;
        let (status, body) =
            parse_response(&raw).with_context(|| format!("{method} {url}: bad HTTP response"))?;
        let value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&body).with_context(|| {
                format!(
                    "{method} {url}: HTTP {status} with a body that is not JSON: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
            })?
        };
        Ok((status, value))
    }

    /// Like [`Api::request`], but a status other than 2xx is an error carrying the API's
    /// `{"error": …}` message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, v) = self.request(method, path, body)?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| v.to_string(), str::to_string);
        if status == 401 {
            bail!(
                "{method} {}: HTTP 401: {msg} (pass --token or set LINGXI_TOKEN to an API key or a session token from POST /api/v1/auth/login)",
                self.url(path)
            )
        }
        bail!("{method} {}: HTTP {status}: {msg}", self.url(path))
    }
}

/// Splits an HTTP/1.1 response into status and body (`Content-Length`, chunked, or up to
/// the end of the connection).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().context("bad Content-Length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            bail!("body cut short: {} of {n} bytes", rest.len());
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// Decodes a chunked body.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("chunk size line not terminated"))?;
        let size_text = std::str::from_utf8(&rest[..eol]).context("chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// Renders `GET /api/v1/cluster` for people.
pub fn render_status(api: &str, v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "node {} via {api}: mode {}, {}",
        s(&v["node"]),
        s(&v["mode"]),
        if healthy {
            "healthy"
        } else {
            "NOT HEALTHY (fenced or stopping)"
        }
    );
    let raft = &v["raft"];
    if raft.is_object() {
        let leader = match (&v["leader_node"], &raft["leader"]) {
            (Value::String(n), id) => format!("{n} (raft id {})", s(id)),
            (_, Value::Null) => "NONE (no quorum?)".to_string(),
            (_, id) => format!("raft id {} (not announced yet)", s(id)),
        };
        let _ = writeln!(out, "leader:  {leader}");
        let _ = writeln!(
            out,
            "raft:    id {} {} term {} commit {} applied {} snapshot {}, voters {}{}",
            s(&raft["id"]),
            s(&raft["role"]),
            s(&raft["term"]),
            s(&raft["commit"]),
            s(&raft["applied"]),
            s(&raft["snapshot_index"]),
            s(&raft["voters"]),
            match raft["learners"].as_array() {
                Some(l) if !l.is_empty() => format!(", learners {}", s(&raft["learners"])),
                _ => String::new(),
            }
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:>5}  {:<6} {:<8} {:<22} {:<22} {:>5}",
        "MEMBER", "RAFT", "STATE", "VOTER", "SIP/UDP", "HTTP", "CALLS"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let voter = match m["voter"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<12} {:>5}  {:<6} {:<8} {:<22} {:<22} {:>5}",
            s(&m["node"]),
            s(&m["raft_id"]),
            if m["alive"].as_bool().unwrap_or(false) {
                "alive"
            } else {
                "DEAD"
            },
            voter,
            s(&m["sip_udp"]),
            s(&m["http"]),
            s(&m["calls_owned"]),
        );
    }
    for id in v["unannounced_voters"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<12} {:>5}  {:<6} {:<8} (a voter that has not announced itself yet)",
            "?",
            s(id),
            "-",
            "yes"
        );
    }
    if let Some(per) = v["calls_per_node"].as_object() {
        let list: Vec<String> = per.iter().map(|(n, c)| format!("{n}={c}")).collect();
        let _ = writeln!(
            out,
            "calls:   {}",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(" ")
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_addresses() {
        let a = Api::parse("http://127.0.0.1:8181").unwrap();
        assert_eq!(
            a.url("/api/v1/cluster"),
            "http://127.0.0.1:8181/api/v1/cluster"
        );
        let b = Api::parse("localhost:8182/").unwrap();
        assert_eq!(b.url("/x"), "http://localhost:8182/x");
        assert!(Api::parse("https://h:1").is_err());
        assert!(Api::parse("http://nohost").is_err());
    }

    #[test]
    fn parses_responses() {
        let (st, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((st, b.as_slice()), (200, &b"{}"[..]));
        let (st, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((st, b.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_err());
    }
}
