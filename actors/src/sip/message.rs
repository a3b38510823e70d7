//! SIP messages: parsing (with the checks RFC 3261 §8.2 and §18.3 ask for), reading the headers
//! the transaction and dialog layers need, building responses, and encoding to wire bytes.
//!
//! Parsing is done by rsip 0.4. rsip can panic on some malformed input, so every call into its
//! tokenizers here is wrapped in [`std::panic::catch_unwind`] and a panic is reported as a
//! [`SipError::Parse`]: a datagram from the network must never take the node down.
//!
//! The header readers take anything that implements [`AsHeaders`] (`rsip::Headers`,
//! `rsip::Request`, `rsip::Response`, `rsip::SipMessage`), so `call_id(&msg)`,
//! `call_id(&request)` and `call_id(&request.headers)` all work. They read the raw header text
//! directly where they can (branch, tags, CSeq) instead of going through rsip's typed headers,
//! which allocate a lot; these run for every message.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use rand::Rng as _;
use rsip::Header;
use rsip::prelude::*;

use super::SipError;

#[cfg(test)]
mod tests;

/// Anything that carries SIP headers, so the readers below accept a whole message, a request, a
/// response or a bare header list alike.
pub trait AsHeaders {
    /// The header list.
    fn sip_headers(&self) -> &rsip::Headers;
}

impl AsHeaders for rsip::Headers {
    fn sip_headers(&self) -> &rsip::Headers {
        self
    }
}
impl AsHeaders for rsip::Request {
    fn sip_headers(&self) -> &rsip::Headers {
        &self.headers
    }
}
impl AsHeaders for rsip::Response {
    fn sip_headers(&self) -> &rsip::Headers {
        &self.headers
    }
}
impl AsHeaders for rsip::SipMessage {
    fn sip_headers(&self) -> &rsip::Headers {
        match self {
            rsip::SipMessage::Request(r) => &r.headers,
            rsip::SipMessage::Response(r) => &r.headers,
        }
    }
}

/// A request, response or message whose headers and body can be changed together, for
/// [`with_body`] (which must keep Content-Type, Content-Length and the body consistent).
pub trait HasBody: AsHeaders {
    /// Headers and body, both mutable.
    fn parts_mut(&mut self) -> (&mut rsip::Headers, &mut Vec<u8>);
}
impl HasBody for rsip::Request {
    fn parts_mut(&mut self) -> (&mut rsip::Headers, &mut Vec<u8>) {
        (&mut self.headers, &mut self.body)
    }
}
impl HasBody for rsip::Response {
    fn parts_mut(&mut self) -> (&mut rsip::Headers, &mut Vec<u8>) {
        (&mut self.headers, &mut self.body)
    }
}
impl HasBody for rsip::SipMessage {
    fn parts_mut(&mut self) -> (&mut rsip::Headers, &mut Vec<u8>) {
        match self {
            rsip::SipMessage::Request(r) => (&mut r.headers, &mut r.body),
            rsip::SipMessage::Response(r) => (&mut r.headers, &mut r.body),
        }
    }
}

/// Longest error detail kept from rsip, whose messages can quote the whole remaining input.
const MAX_DETAIL: usize = 160;

fn parse_error(what: &str, detail: impl Into<String>) -> SipError {
    let mut detail: String = detail.into();
    if detail.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    SipError::Parse {
        what: what.to_string(),
        detail,
    }
}

/// Runs an rsip call that may panic on hostile input and turns a panic into a parse error.
/// rsip 0.4's nom tokenizers index into slices in a few places without checking bounds; a
/// panic there must cost one message, not the receive loop.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, rsip::Error>) -> Result<T, SipError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(parse_error(what, e.to_string())),
        Err(_) => Err(parse_error(
            what,
            "the parser rejected the input (internal panic)",
        )),
    }
}

/// Parses one SIP message from a datagram or a framed TCP message and checks what RFC 3261
/// requires before any layer may use it:
///
/// * the size is at most `limit` ([`SipError::TooLarge`] otherwise);
/// * leading CRLFs (keep-alives, RFC 3261 §7.5) are skipped;
/// * compact header names (`v`, `i`, `f`, `t`, `m`, `l`, `c`, `k`, `s`, `e`) are expanded to their
///   full headers so the readers find them;
/// * Via, From, To, Call-ID and CSeq are present ([`SipError::MissingHeader`]), CSeq is readable
///   and, in a request, names the request's method;
/// * Content-Length, when present, is a number no larger than the body received (a truncated
///   UDP datagram is an error); bytes beyond it are dropped (RFC 3261 §18.3).
pub fn parse(data: &[u8], limit: usize) -> Result<rsip::SipMessage, SipError> {
    if data.len() > limit {
        return Err(SipError::TooLarge {
            size: data.len(),
            limit,
        });
    }
    let start = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(data.len());
    let data = &data[start..];
    if data.is_empty() {
        return Err(parse_error("message", "empty (only line breaks)"));
    }
    let mut msg = match guarded("message", || rsip::SipMessage::try_from(data)) {
        Ok(m) => m,
        Err(SipError::Parse { detail, .. }) => {
            let what = if start_line_looks_valid(data) {
                "headers"
            } else {
                "start line"
            };
            return Err(parse_error(what, detail));
        }
        Err(e) => return Err(e),
    };
    expand_compact_headers(&mut msg);
    check_message(&mut msg)?;
    Ok(msg)
}

/// Whether the first line looks like `SIP/2.0 200 OK` or `METHOD uri SIP/2.0`, so a parse failure
/// can be blamed on the start line or on the headers.
fn start_line_looks_valid(data: &[u8]) -> bool {
    let end = data
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(data.len());
    let Ok(line) = std::str::from_utf8(&data[..end]) else {
        return false;
    };
    let mut parts = line.split(' ');
    let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if a == "SIP/2.0" {
        b.len() == 3 && b.bytes().all(|d| d.is_ascii_digit())
    } else {
        method_from_str(a).is_some() && !b.is_empty() && c == "SIP/2.0" && parts.next().is_none()
    }
}

/// Replaces compact-form headers (RFC 3261 §7.3.3), which rsip leaves as `Header::Other`, with
/// their full typed variants.
fn expand_compact_headers(msg: &mut rsip::SipMessage) {
    let headers = match msg {
        rsip::SipMessage::Request(r) => &mut r.headers,
        rsip::SipMessage::Response(r) => &mut r.headers,
    };
    for h in headers.iter_mut() {
        let Header::Other(name, value) = h else {
            continue;
        };
        if name.len() != 1 {
            continue;
        }
        let value = std::mem::take(value);
        let full = match name.as_bytes()[0].to_ascii_lowercase() {
            b'i' => Header::CallId(rsip::headers::CallId::new(value)),
            b'm' => Header::Contact(rsip::headers::Contact::new(value)),
            b'e' => Header::ContentEncoding(rsip::headers::ContentEncoding::new(value)),
            b'l' => Header::ContentLength(rsip::headers::ContentLength::new(value)),
            b'c' => Header::ContentType(rsip::headers::ContentType::new(value)),
            b'f' => Header::From(rsip::headers::From::new(value)),
            b's' => Header::Subject(rsip::headers::Subject::new(value)),
            b'k' => Header::Supported(rsip::headers::Supported::new(value)),
            b't' => Header::To(rsip::headers::To::new(value)),
            b'v' => Header::Via(rsip::headers::Via::new(value)),
            _ => Header::Other(std::mem::take(name), value),
        };
        *h = full;
    }
}

fn check_message(msg: &mut rsip::SipMessage) -> Result<(), SipError> {
    let headers = msg.sip_headers();
    let call = headers.iter().find_map(|h| match h {
        Header::CallId(c) => Some(c.value().trim().to_string()),
        _ => None,
    });
    let missing = |header: &'static str| SipError::MissingHeader {
        header,
        call_id: call.clone(),
    };
    let mut has = [false; 4];
    for h in headers.iter() {
        match h {
            Header::Via(_) => has[0] = true,
            Header::From(_) => has[1] = true,
            Header::To(_) => has[2] = true,
            Header::CSeq(_) => has[3] = true,
            _ => {}
        }
    }
    for (present, name) in has.iter().zip(["Via", "From", "To", "CSeq"]) {
        if !present {
            return Err(missing(name));
        }
    }
    if call.as_deref().is_none_or(str::is_empty) {
        return Err(missing("Call-ID"));
    }
    let (_, cseq_method) = cseq(headers)?;
    if let rsip::SipMessage::Request(r) = &*msg
        && r.method != cseq_method
    {
        return Err(parse_error(
            "CSeq header",
            format!(
                "CSeq method {} does not match the request method {}",
                method_str(&cseq_method),
                method_str(&r.method)
            ),
        ));
    }
    let declared = headers.iter().find_map(|h| match h {
        Header::ContentLength(l) => Some(l.value().trim().to_string()),
        _ => None,
    });
    if let Some(declared) = declared {
        let len: usize = declared.parse().map_err(|_| {
            parse_error(
                "Content-Length header",
                format!("{declared:?} is not a number"),
            )
        })?;
        let (_, body) = msg.parts_mut();
        if len > body.len() {
            return Err(parse_error(
                "body",
                format!(
                    "Content-Length says {len} bytes but only {} arrived (truncated message)",
                    body.len()
                ),
            ));
        }
        body.truncate(len);
    }
    Ok(())
}

/// Maps a method name to rsip's method (case-insensitively, as rsip's own parser does).
pub(crate) fn method_from_str(s: &str) -> Option<rsip::Method> {
    use rsip::Method::*;
    const ALL: [(&str, rsip::Method); 14] = [
        ("INVITE", Invite),
        ("ACK", Ack),
        ("BYE", Bye),
        ("CANCEL", Cancel),
        ("OPTIONS", Options),
        ("REGISTER", Register),
        ("INFO", Info),
        ("MESSAGE", Message),
        ("NOTIFY", Notify),
        ("PRACK", PRack),
        ("PUBLISH", Publish),
        ("REFER", Refer),
        ("SUBSCRIBE", Subscribe),
        ("UPDATE", Update),
    ];
    ALL.iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, m)| *m)
}

/// The method's wire name, without allocating (rsip's `Display` upper-cases into a new String).
pub fn method_str(m: &rsip::Method) -> &'static str {
    use rsip::Method::*;
    match m {
        Ack => "ACK",
        Bye => "BYE",
        Cancel => "CANCEL",
        Info => "INFO",
        Invite => "INVITE",
        Message => "MESSAGE",
        Notify => "NOTIFY",
        Options => "OPTIONS",
        PRack => "PRACK",
        Publish => "PUBLISH",
        Refer => "REFER",
        Register => "REGISTER",
        Subscribe => "SUBSCRIBE",
        Update => "UPDATE",
    }
}

/// The Call-ID (trimmed). Errors with [`SipError::MissingHeader`] when absent or empty.
pub fn call_id(msg: &impl AsHeaders) -> Result<String, SipError> {
    call_id_str(msg.sip_headers())
        .map(str::to_string)
        .ok_or(SipError::MissingHeader {
            header: "Call-ID",
            call_id: None,
        })
}

/// The Call-ID as a borrowed string, for lookups that need no copy.
pub(crate) fn call_id_str(headers: &rsip::Headers) -> Option<&str> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CallId(c) => Some(c.value().trim()),
            _ => None,
        })
        .filter(|s| !s.is_empty())
}

/// The CSeq number and method. Errors when the header is absent or not `<number> <METHOD>`.
pub fn cseq(msg: &impl AsHeaders) -> Result<(u32, rsip::Method), SipError> {
    let headers = msg.sip_headers();
    let value = headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(c) => Some(c.value()),
            _ => None,
        })
        .ok_or_else(|| SipError::MissingHeader {
            header: "CSeq",
            call_id: call_id_str(headers).map(str::to_string),
        })?;
    let mut parts = value.split_ascii_whitespace();
    let bad = || {
        parse_error(
            "CSeq header",
            format!("{value:?} is not \"<number> <METHOD>\""),
        )
    };
    let seq = parts
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(bad)?;
    let method = parts.next().and_then(method_from_str).ok_or_else(bad)?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((seq, method))
}

/// The raw value of the top Via (the first Via header, up to its first comma).
pub(crate) fn top_via_str(headers: &rsip::Headers) -> Option<&str> {
    headers.iter().find_map(|h| match h {
        Header::Via(v) => Some(split_first_value(v.value()).0),
        _ => None,
    })
}

/// Splits a header value holding several comma-separated values into the first and the rest
/// (commas inside quoted strings and `<...>` are skipped).
fn split_first_value(value: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    let mut angle = false;
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => return (value[..i].trim(), Some(&value[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (value.trim(), None)
}

/// The parts of one Via value the transaction layer uses (RFC 3261 §18.2, RFC 3581).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaInfo<'a> {
    /// The transport in the sent-protocol, e.g. `UDP`.
    pub(crate) transport: &'a str,
    /// The sent-by host (an IPv6 address keeps its brackets).
    pub(crate) host: &'a str,
    /// The sent-by port, when given.
    pub(crate) port: Option<u16>,
    /// The `branch` parameter.
    pub(crate) branch: Option<&'a str>,
    /// `rport`: `None` when absent, `Some(None)` when present without a value.
    pub(crate) rport: Option<Option<u16>>,
}

/// Parses one Via value `SIP/2.0/UDP host:port;params`.
pub(crate) fn parse_via(value: &str) -> Option<ViaInfo<'_>> {
    let value = value.trim();
    let (proto, rest) = value.split_once([' ', '\t'])?;
    let mut p = proto.split('/');
    let (name, _version, transport) = (p.next()?, p.next()?, p.next()?);
    if !name.eq_ignore_ascii_case("SIP") || transport.is_empty() {
        return None;
    }
    let rest = rest.trim_start();
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (rest[..i].trim(), &rest[i + 1..]),
        None => (rest.trim(), ""),
    };
    let (host, port) = split_host_port(sent_by)?;
    let mut info = ViaInfo {
        transport,
        host,
        port,
        branch: None,
        rport: None,
    };
    for param in params.split(';') {
        let (name, val) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param.trim(), None),
        };
        if name.eq_ignore_ascii_case("branch") {
            info.branch = val.filter(|v| !v.is_empty());
        } else if name.eq_ignore_ascii_case("rport") {
            info.rport = Some(val.and_then(|v| v.parse().ok()));
        }
    }
    Some(info)
}

/// Splits `host[:port]` (IPv6 in brackets) without panicking on odd input.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if s.starts_with('[') {
        let end = s.find(']')?;
        let host = &s[..=end];
        let rest = &s[end + 1..];
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => Some((s, None)), // a bare IPv6 address without brackets
        None => Some((s, None)),
    }
}

/// Parses a Via/Contact host (IPv6 may be in brackets) as an IP address.
pub(crate) fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Rewrites the top Via of a received request per RFC 3261 §18.2.1 and RFC 3581: adds
/// `received=<source ip>` when the sent-by host is not the source address (always when `rport`
/// is present) and fills `rport` with the source port. Returns `None` when nothing changes.
pub(crate) fn stamp_top_via(value: &str, source: SocketAddr) -> Option<String> {
    let (top, rest) = split_first_value(value);
    let info = parse_via(top)?;
    let same_host = host_ip(info.host) == Some(source.ip());
    let want_received = info.rport.is_some() || !same_host;
    if !want_received && info.rport.is_none() {
        return None;
    }
    let (head, params) = match top.find(';') {
        Some(i) => (&top[..i], &top[i + 1..]),
        None => (top, ""),
    };
    let mut out = String::with_capacity(value.len() + 40);
    out.push_str(head.trim_end());
    for param in params.split(';') {
        let name = param.split('=').next().unwrap_or("").trim();
        if name.is_empty()
            || name.eq_ignore_ascii_case("received")
            || name.eq_ignore_ascii_case("rport")
        {
            continue;
        }
        out.push(';');
        out.push_str(param.trim());
    }
    if want_received {
        let _ = write!(out, ";received={}", source.ip());
    }
    if info.rport.is_some() {
        let _ = write!(out, ";rport={}", source.port());
    }
    if let Some(rest) = rest {
        out.push(',');
        out.push_str(rest);
    }
    Some(out)
}

/// The `branch` parameter of the top Via: the transaction id (RFC 3261 §17.2.3).
pub fn top_via_branch(msg: &impl AsHeaders) -> Result<String, SipError> {
    let headers = msg.sip_headers();
    let top = top_via_str(headers).ok_or_else(|| SipError::MissingHeader {
        header: "Via",
        call_id: call_id_str(headers).map(str::to_string),
    })?;
    let info =
        parse_via(top).ok_or_else(|| parse_error("Via header", format!("cannot read {top:?}")))?;
    info.branch
        .map(str::to_string)
        .ok_or_else(|| parse_error("Via header", "the top Via has no branch parameter"))
}

/// The header parameters of a From/To/Contact value (after the `<uri>`, or after the URI when
/// there are no angle brackets), skipping a quoted display name.
fn header_params(value: &str) -> &str {
    let bytes = value.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => {
                return match value[i..].find('>') {
                    Some(j) => &value[i + j + 1..],
                    None => "",
                };
            }
            b';' if !quoted => return &value[i..],
            _ => {}
        }
        i += 1;
    }
    ""
}

/// The value of parameter `name` in a `;a=b;c` list.
fn param_value<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The tag parameter of a From or To value.
pub(crate) fn tag_of(value: &str) -> Option<&str> {
    param_value(header_params(value), "tag").filter(|t| !t.is_empty())
}

/// The From tag, when present.
pub fn from_tag(msg: &impl AsHeaders) -> Option<String> {
    msg.sip_headers().iter().find_map(|h| match h {
        Header::From(f) => tag_of(f.value()).map(str::to_string),
        _ => None,
    })
}

/// The To tag, when present (absent in a request outside a dialog).
pub fn to_tag(msg: &impl AsHeaders) -> Option<String> {
    msg.sip_headers().iter().find_map(|h| match h {
        Header::To(t) => tag_of(t.value()).map(str::to_string),
        _ => None,
    })
}

/// The URI of the first Contact (None when absent, `*`, or unreadable).
pub fn contact_uri(msg: &impl AsHeaders) -> Option<rsip::Uri> {
    let contact = msg.sip_headers().iter().find_map(|h| match h {
        Header::Contact(c) => Some(c),
        _ => None,
    })?;
    if contact.value().trim() == "*" {
        return None;
    }
    guarded("Contact header", || contact.typed().map(|c| c.uri)).ok()
}

/// The Expires header in seconds (None when absent or not a number).
pub fn expires(msg: &impl AsHeaders) -> Option<u32> {
    msg.sip_headers().iter().find_map(|h| match h {
        Header::Expires(e) => e.value().trim().parse().ok(),
        _ => None,
    })
}

/// Builds a response to `req` (RFC 3261 §8.2.6): copies every Via (in order), From, To, Call-ID,
/// CSeq and, for 101–299, Record-Route (§12.1.1); adds `;tag=<to_tag>` to To when given and To has
/// no tag yet; sets Content-Length 0. `reason` overrides the standard reason phrase (the status
/// code is then `StatusCode::Other(code, reason)`: compare codes with `.code()`).
pub fn response_for(
    req: &rsip::Request,
    code: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> rsip::Response {
    let mut headers: Vec<Header> = Vec::with_capacity(8);
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::RecordRoute(_) if (101..300).contains(&code) => headers.push(h.clone()),
            Header::To(t) => match to_tag {
                Some(tag) if tag_of(t.value()).is_none() => {
                    let mut v = String::with_capacity(t.value().len() + tag.len() + 5);
                    v.push_str(t.value().trim_end());
                    v.push_str(";tag=");
                    v.push_str(tag);
                    headers.push(Header::To(rsip::headers::To::new(v)));
                }
                _ => headers.push(h.clone()),
            },
            _ => {}
        }
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    let status_code = match reason {
        Some(r) => rsip::StatusCode::Other(code, sanitize_line(r)),
        None => rsip::StatusCode::from(code),
    };
    rsip::Response {
        status_code,
        version: rsip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// A 503 to `req` with `reason` and `Retry-After: <secs>`: the request may succeed if sent
/// again then (a node at capacity, or cut off from the cluster while the call moves).
pub fn retry_later(req: &rsip::Request, reason: &str, secs: u32) -> rsip::Response {
    let mut r = response_for(req, 503, Some(reason), None);
    r.headers
        .push(Header::RetryAfter(rsip::headers::RetryAfter::new(
            secs.to_string(),
        )));
    r
}

/// Removes line breaks so caller-supplied text cannot inject headers.
fn sanitize_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// A fresh Via branch: the RFC 3261 magic cookie `z9hG4bK` plus 16 random characters.
pub fn new_branch() -> String {
    let mut s = String::with_capacity(23);
    s.push_str("z9hG4bK");
    push_random(&mut s, 16);
    s
}

/// A fresh From/To tag (12 random alphanumerics, RFC 3261 §19.3 asks for ≥ 32 bits of randomness).
pub fn new_tag() -> String {
    let mut s = String::with_capacity(12);
    push_random(&mut s, 12);
    s
}

fn push_random(s: &mut String, n: usize) {
    let mut rng = rand::rng();
    s.extend((0..n).map(|_| char::from(rng.sample(rand::distr::Alphanumeric))));
}

/// Sets the body with its Content-Type and Content-Length (replacing any previous ones).
/// Returns the message, builder-style: `with_body(response_for(..), "application/sdp", sdp)`.
pub fn with_body<M: HasBody>(mut msg: M, content_type: &str, body: Vec<u8>) -> M {
    let (headers, b) = msg.parts_mut();
    headers.retain(|h| !matches!(h, Header::ContentType(_) | Header::ContentLength(_)));
    headers.push(Header::ContentType(rsip::headers::ContentType::new(
        sanitize_line(content_type),
    )));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        body.len().to_string(),
    )));
    *b = body;
    msg
}

/// The standard reason phrase of a status code (RFC 3261 §21 and later RFCs), "Unknown" else.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        _ => "Unknown",
    }
}

/// Writes every header except Content-Length, then a Content-Length equal to the body's length,
/// so what goes on the wire always frames correctly over TCP whatever the header said.
fn encode_tail(out: &mut String, headers: &rsip::Headers, body: &[u8]) -> Vec<u8> {
    for h in headers.iter() {
        if matches!(h, Header::ContentLength(_)) {
            continue;
        }
        let _ = write!(out, "{h}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Encodes a request for the wire (one buffer, standard header names, correct Content-Length).
pub fn encode_request(req: &rsip::Request) -> Bytes {
    let mut out = String::with_capacity(512 + req.body.len());
    let _ = write!(out, "{} {} SIP/2.0\r\n", method_str(&req.method), req.uri);
    Bytes::from(encode_tail(&mut out, &req.headers, &req.body))
}

/// Encodes a response for the wire, with standard reason phrases for known codes (rsip's own
/// `Display` would write e.g. `486 BusyHere`).
pub fn encode_response(resp: &rsip::Response) -> Bytes {
    let mut out = String::with_capacity(384 + resp.body.len());
    let code = resp.status_code.code();
    let phrase = match &resp.status_code {
        rsip::StatusCode::Other(_, r) if !r.is_empty() && r != "Other" => r.as_str(),
        _ => reason_phrase(code),
    };
    let _ = write!(out, "SIP/2.0 {code} {phrase}\r\n");
    Bytes::from(encode_tail(&mut out, &resp.headers, &resp.body))
}

/// Encodes either kind of message (see [`encode_request`] and [`encode_response`]).
pub fn encode(msg: &rsip::SipMessage) -> Bytes {
    match msg {
        rsip::SipMessage::Request(r) => encode_request(r),
        rsip::SipMessage::Response(r) => encode_response(r),
    }
}

/// The headers of a request rsip could not parse, read line by line from the raw bytes, so the
/// endpoint can still answer 400 or 513 (RFC 3261 §8.2 / §21.5.13) when enough of them are there.
#[derive(Debug)]
pub(crate) struct Salvaged<'a> {
    /// Every Via value, in order.
    pub(crate) vias: Vec<&'a str>,
    /// The From value.
    pub(crate) from: &'a str,
    /// The To value.
    pub(crate) to: &'a str,
    /// The Call-ID value.
    pub(crate) call_id: &'a str,
    /// The CSeq value.
    pub(crate) cseq: &'a str,
}

/// Reads Via, From, To, Call-ID and CSeq from the raw text of a request that failed to parse.
/// Returns `None` for responses, ACKs (never answered) or when any of the five is missing.
pub(crate) fn salvage_request(data: &[u8]) -> Option<Salvaged<'_>> {
    let start = data.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let data = &data[start..];
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    let head = &data[..head_end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    if first.starts_with(b"SIP/") || first.starts_with(b"ACK ") {
        return None;
    }
    let (mut from, mut to, mut call, mut cseq) = (None, None, None, None);
    let mut vias = Vec::new();
    for line in lines {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        let is = |full: &str, short: &str| {
            name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(short)
        };
        if value.is_empty() || value.contains('\r') {
            continue;
        }
        if is("Via", "v") {
            vias.push(value);
        } else if is("From", "f") {
            from.get_or_insert(value);
        } else if is("To", "t") {
            to.get_or_insert(value);
        } else if is("Call-ID", "i") {
            call.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("CSeq") {
            cseq.get_or_insert(value);
        }
    }
    let cseq = cseq?;
    if cseq
        .split_ascii_whitespace()
        .nth(1)
        .is_some_and(|m| m.eq_ignore_ascii_case("ACK"))
        || vias.is_empty()
    {
        return None;
    }
    Some(Salvaged {
        vias,
        from: from?,
        to: to?,
        call_id: call?,
        cseq,
    })
}

/// Encodes an error response from salvaged headers, with a `Warning: 399` naming the problem.
pub(crate) fn encode_salvaged_response(
    s: &Salvaged<'_>,
    code: u16,
    warn_host: &str,
    problem: &str,
) -> Bytes {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {code} {}\r\n", reason_phrase(code));
    for v in &s.vias {
        let _ = write!(out, "Via: {v}\r\n");
    }
    let _ = write!(
        out,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        s.from, s.to, s.call_id, s.cseq
    );
    let _ = write!(
        out,
        "Warning: 399 {warn_host} \"{}\"\r\nContent-Length: 0\r\n\r\n",
        warning_text(problem)
    );
    Bytes::from(out.into_bytes())
}

/// Text safe for a quoted Warning value: no quotes, backslashes or line breaks, bounded length.
pub(crate) fn warning_text(problem: &str) -> String {
    problem
        .chars()
        .take(200)
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}
