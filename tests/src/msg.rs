//! SIP messages as the test UA sees them: parsed with rsip, then read as plain strings, so
//! the UA shares no SIP code with the switch it tests. Also SDP reading/writing and RFC 2617
//! digest computation.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use md5::{Digest as _, Md5};

/// A received SIP message, parsed by rsip and flattened into strings.
#[derive(Debug, Clone)]
pub struct SipMsg {
    /// Where the datagram came from (responses to requests go back there).
    pub source: SocketAddr,
    /// Request method (`INVITE`, `BYE`, ...); `None` for a response.
    pub method: Option<String>,
    /// Request-URI of a request.
    pub uri: Option<String>,
    /// Status code of a response; `None` for a request.
    pub status: Option<u16>,
    /// Headers in order: canonical lower-case long name (compact forms expanded), value.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The datagram as received, for error messages.
    pub raw: String,
}

/// The long lower-case name of a header name (expands RFC 3261 compact forms).
pub fn canonical_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "v" => "via".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "i" => "call-id".into(),
        "m" => "contact".into(),
        "l" => "content-length".into(),
        "c" => "content-type".into(),
        "k" => "supported".into(),
        "s" => "subject".into(),
        _ => lower,
    }
}

impl SipMsg {
    /// Parses a datagram with rsip.
    pub fn parse(bytes: &[u8], source: SocketAddr) -> Result<SipMsg, String> {
        let parsed = rsip::SipMessage::try_from(bytes).map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let flatten = |hs: &rsip::Headers| -> Vec<(String, String)> {
            hs.iter()
                .filter_map(|h| {
                    let line = h.to_string();
                    let (name, value) = line.split_once(':')?;
                    Some((canonical_name(name), value.trim().to_string()))
                })
                .collect()
        };
        Ok(match parsed {
            rsip::SipMessage::Request(r) => SipMsg {
                source,
                method: Some(r.method.to_string()),
                uri: Some(r.uri.to_string()),
                status: None,
                headers: flatten(&r.headers),
                body: r.body,
                raw,
            },
            rsip::SipMessage::Response(r) => SipMsg {
                source,
                method: None,
                uri: None,
                status: Some(r.status_code.code()),
                headers: flatten(&r.headers),
                body: r.body,
                raw,
            },
        })
    }

    /// First value of header `name` (any case, compact forms accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = canonical_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> String {
        self.header("call-id").unwrap_or_default().to_string()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("cseq").unwrap_or_default();
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let m = it.next().unwrap_or_default().to_ascii_uppercase();
        (n, m)
    }

    /// The branch parameter of the top Via.
    pub fn branch(&self) -> String {
        let top = self.header("via").unwrap_or_default();
        let top = top.split(',').next().unwrap_or_default();
        param(top, "branch").unwrap_or_default()
    }

    /// The tag of the To header.
    pub fn to_tag(&self) -> Option<String> {
        self.header("to").and_then(|v| param(after_uri(v), "tag"))
    }

    /// The tag of the From header.
    pub fn from_tag(&self) -> Option<String> {
        self.header("from").and_then(|v| param(after_uri(v), "tag"))
    }

    /// The URI of the (first) Contact header.
    pub fn contact_uri(&self) -> Option<String> {
        self.header("contact").map(uri_of)
    }

    /// Whether this is a request with `method`.
    pub fn is_request(&self, method: &str) -> bool {
        self.method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(method))
    }

    /// Whether this is a response to a `method` request.
    pub fn is_response_to(&self, method: &str) -> bool {
        self.status.is_some() && self.cseq().1.eq_ignore_ascii_case(method)
    }

    /// The body as text.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The SDP body, if any and readable.
    pub fn sdp(&self) -> Option<Sdp> {
        Sdp::parse(&self.body_str())
    }

    /// One line describing the message, for traces and errors.
    pub fn summary(&self) -> String {
        let (n, m) = self.cseq();
        match (&self.method, self.status) {
            (Some(method), _) => format!(
                "{method} {} (Call-ID {}, CSeq {n} {m}) from {}",
                self.uri.as_deref().unwrap_or("?"),
                self.call_id(),
                self.source
            ),
            (None, Some(code)) => {
                format!(
                    "{code} to {m} (Call-ID {}, CSeq {n}) from {}",
                    self.call_id(),
                    self.source
                )
            }
            _ => "?".into(),
        }
    }
}

impl fmt::Display for SipMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The part of a name-addr header value after the URI (where header parameters live).
fn after_uri(v: &str) -> &str {
    match v.find('>') {
        Some(i) => &v[i + 1..],
        None => v.find(';').map_or("", |i| &v[i..]),
    }
}

/// The URI inside a name-addr (`"Bob" <sip:b@h>;tag=x` → `sip:b@h`) or addr-spec.
pub fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].trim().to_string(),
        _ => v.split(';').next().unwrap_or_default().trim().to_string(),
    }
}

/// The value of `;name=value` in a parameter list (case-insensitive name, quotes removed).
pub fn param(v: &str, name: &str) -> Option<String> {
    v.split(';')
        .skip_while(|p| p.contains(':') && !p.contains('='))
        .find_map(|p| {
            let (k, val) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| val.trim().trim_matches('"').to_string())
        })
}

/// The socket address of a `sip:user@host:port;...` URI, if its host is an IP address.
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split([';', '?']).next()?;
    if let Some(stripped) = hostport.strip_prefix('[') {
        let (host, port) = stripped.split_once(']')?;
        let port = port
            .strip_prefix(':')
            .map_or(Some(5060), |p| p.parse().ok())?;
        return Some(SocketAddr::new(host.parse().ok()?, port));
    }
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 5060),
    };
    Some(SocketAddr::new(host.parse::<IpAddr>().ok()?, port))
}

/// `z9hG4bK` + random hex: an RFC 3261 branch.
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// A random tag.
pub fn new_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A random Call-ID.
pub fn new_call_id() -> String {
    format!("{:016x}@lingxi-test", rand::random::<u64>())
}

/// The audio part of an SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// Where the media goes: `c=` address with the `m=audio` port.
    pub addr: SocketAddr,
    /// Payload types on the `m=audio` line, in order.
    pub payload_types: Vec<u8>,
    /// `a=rtpmap` entries: payload type → encoding name (`PCMU`, `telephone-event`).
    pub rtpmap: HashMap<u8, String>,
    /// The direction attribute (`sendrecv` when absent).
    pub direction: String,
}

impl Sdp {
    /// Reads the first audio stream of an SDP body.
    pub fn parse(text: &str) -> Option<Sdp> {
        let mut session_ip: Option<IpAddr> = None;
        let mut media_ip: Option<IpAddr> = None;
        let mut port = None;
        let mut pts = Vec::new();
        let mut rtpmap = HashMap::new();
        let mut direction = "sendrecv".to_string();
        let mut in_audio = false;
        for line in text.lines().map(str::trim) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "c" => {
                    let ip = v
                        .split_whitespace()
                        .nth(2)
                        .and_then(|a| a.split('/').next()?.parse().ok());
                    if in_audio {
                        media_ip = ip;
                    } else if port.is_none() {
                        session_ip = ip;
                    }
                }
                "m" => {
                    let mut it = v.split_whitespace();
                    let kind = it.next().unwrap_or_default();
                    if kind == "audio" && port.is_none() {
                        in_audio = true;
                        port = it.next().and_then(|p| p.parse::<u16>().ok());
                        let _proto = it.next();
                        pts = it.filter_map(|p| p.parse().ok()).collect();
                    } else {
                        in_audio = false;
                    }
                }
                "a" if in_audio || port.is_none() => {
                    if let Some(rest) = v.strip_prefix("rtpmap:") {
                        let mut it = rest.split_whitespace();
                        if let (Some(pt), Some(enc)) =
                            (it.next().and_then(|p| p.parse().ok()), it.next())
                        {
                            rtpmap
                                .insert(pt, enc.split('/').next().unwrap_or_default().to_string());
                        }
                    } else if ["sendrecv", "sendonly", "recvonly", "inactive"].contains(&v) {
                        direction = v.to_string();
                    }
                }
                _ => {}
            }
        }
        let ip = media_ip.or(session_ip)?;
        Some(Sdp {
            addr: SocketAddr::new(ip, port?),
            payload_types: pts,
            rtpmap,
            direction,
        })
    }

    /// The encoding name of payload type `pt` (static types 0 and 8 need no rtpmap).
    pub fn encoding(&self, pt: u8) -> Option<String> {
        self.rtpmap.get(&pt).cloned().or(match pt {
            0 => Some("PCMU".into()),
            8 => Some("PCMA".into()),
            _ => None,
        })
    }

    /// The payload type of the first offered codec named `name` (e.g. `telephone-event`).
    pub fn pt_of(&self, name: &str) -> Option<u8> {
        self.payload_types.iter().copied().find(|pt| {
            self.encoding(*pt)
                .is_some_and(|e| e.eq_ignore_ascii_case(name))
        })
    }
}

/// An SDP body for audio at `addr` with payload types `pts` (0 PCMU, 8 PCMA, 101
/// telephone-event).
pub fn build_sdp(addr: SocketAddr, pts: &[u8]) -> String {
    let session = rand::random::<u32>();
    let mut s = format!(
        "v=0\r\no=lingxi-test {session} {session} IN IP4 {ip}\r\ns=lingxi-test\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP",
        ip = addr.ip(),
        port = addr.port()
    );
    for pt in pts {
        s.push_str(&format!(" {pt}"));
    }
    s.push_str("\r\n");
    for pt in pts {
        match pt {
            0 => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            8 => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            pt => s.push_str(&format!(
                "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
            )),
        }
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

/// Parameters of a `Digest ...` challenge (`realm`, `nonce`, `qop`, `algorithm`, `opaque`).
pub fn parse_challenge(value: &str) -> HashMap<String, String> {
    let v = value.trim();
    let v = v
        .strip_prefix("Digest")
        .or_else(|| v.strip_prefix("digest"))
        .unwrap_or(v);
    let mut out = HashMap::new();
    // Split on commas outside quotes.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in v.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    parts.push(cur);
    for p in parts {
        if let Some((k, val)) = p.split_once('=') {
            out.insert(
                k.trim().to_ascii_lowercase(),
                val.trim().trim_matches('"').to_string(),
            );
        }
    }
    out
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The digest `response` of RFC 2617 §3.2.2.1 (MD5; with `qop=auth` when `qop` is given).
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some((qop, nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// An `Authorization` header value answering `challenge` (a `WWW-Authenticate` value).
pub fn authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let c = parse_challenge(challenge);
    let realm = c.get("realm").cloned().unwrap_or_default();
    let nonce = c.get("nonce").cloned().unwrap_or_default();
    let qop_auth = c
        .get("qop")
        .is_some_and(|q| q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")));
    let cnonce = format!("{:016x}", rand::random::<u64>());
    let nc = format!("{nc:08x}");
    let mut h = if qop_auth {
        let resp = digest_response(
            user,
            &realm,
            password,
            method,
            uri,
            &nonce,
            Some(("auth", &nc, &cnonce)),
        );
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
        )
    } else {
        let resp = digest_response(user, &realm, password, method, uri, &nonce, None);
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5"
        )
    };
    if let Some(o) = c.get("opaque") {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_digest() {
        // RFC 2617 §3.5.
        let r = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("auth", "00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn parses_a_response_with_rsip() {
        let raw = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\nFrom: <sip:a@x>;tag=1\r\nTo: \"B\" <sip:b@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContact: <sip:q@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";
        let m = SipMsg::parse(raw.as_bytes(), "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(m.status, Some(200));
        assert_eq!(m.branch(), "z9hG4bKabc");
        assert_eq!(m.to_tag().as_deref(), Some("2"));
        assert_eq!(m.from_tag().as_deref(), Some("1"));
        assert_eq!(m.cseq(), (7, "INVITE".into()));
        assert_eq!(
            uri_addr(&m.contact_uri().unwrap()),
            Some("127.0.0.1:5070".parse().unwrap())
        );
    }

    #[test]
    fn reads_sdp() {
        let s = build_sdp("127.0.0.1:4000".parse().unwrap(), &[0, 8, 101]);
        let sdp = Sdp::parse(&s).unwrap();
        assert_eq!(sdp.addr, "127.0.0.1:4000".parse::<SocketAddr>().unwrap());
        assert_eq!(sdp.payload_types, vec![0, 8, 101]);
        assert_eq!(sdp.pt_of("telephone-event"), Some(101));
    }
}
