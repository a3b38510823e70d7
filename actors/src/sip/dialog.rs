//! Dialogs (RFC 3261 §12) over the plain-data [`DialogState`] record.
//!
//! All logic lives in free functions over the record, so a dialog restored on another node
//! (after failover) is usable at once: [`make_request`] from a restored record produces the
//! same request the original node would have sent.
//!
//! Conventions of the record as filled here:
//! - `route_set` holds bare URIs with their parameters (`sip:10.0.0.1;lr`), without `<>`;
//! - `local_uri`/`remote_uri`/`remote_target`/`local_contact` are bare URIs too;
//! - `peer` (where our in-dialog requests go) follows one rule, see [`uas_dialog`].
//!
//! Messages are built with rsip but carry no Via: the transaction layer adds it. They do carry
//! `Content-Length`, computed from the body.

use crate::sip::SipError;
use crate::sip::sdp::origin_version;
use lingxi_cluster::{DialogRole, DialogState, SipTransport};
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Creates the UAS side of a dialog from a dialog-creating INVITE we are answering
/// (RFC 3261 §12.1.1).
///
/// - remote target: the INVITE's Contact; route set: its Record-Route entries, in order;
/// - `remote_seq`: the INVITE's CSeq; `local_seq`: a random start in `1..2^30` (RFC 3261
///   §8.1.1.5 asks for less than 2^31; the margin leaves room to count up);
/// - `local_uri`/`remote_uri`: the To and From URIs; `remote_sdp`: the INVITE's body.
///
/// **Peer rule** (also used by [`uac_dialog`]): with a route set, the first route's address when
/// its host is a numeric IP (default port 5060, 5061 for `sips:`), else `source`. Without a
/// route set, always the address the dialog was observed at (`source` here): the Contact either
/// names that same address, or an address we could not reach (private address behind a NAT,
/// as rport/RFC 3581 assumes) or would have to resolve by DNS, which this layer does not do.
///
/// Errors: a missing Call-ID, From, To, CSeq or Contact ([`SipError::MissingHeader`]); a header
/// that cannot be read ([`SipError::Parse`]); an INVITE whose To already has a tag
/// ([`SipError::Dialog`], it belongs to an existing dialog).
pub fn uas_dialog(
    invite: &rsip::Request,
    source: SocketAddr,
    transport: SipTransport,
    local_tag: &str,
    local_contact: &str,
) -> Result<DialogState, SipError> {
    let headers = &invite.headers;
    let call_id = required(headers, Field::CallId, None)?.trim().to_owned();
    let cid = Some(call_id.as_str());
    let from = name_addr(required(headers, Field::From, cid)?, Field::From)?;
    let to = name_addr(required(headers, Field::To, cid)?, Field::To)?;
    if to.tag().is_some() {
        return Err(dialog_err(
            &call_id,
            "INVITE's To already has a tag: it belongs to an existing dialog",
        ));
    }
    let (remote_seq, _) = cseq(headers, cid)?;
    let contact = name_addr(required(headers, Field::Contact, cid)?, Field::Contact)?;
    let route_set = route_list(headers)?;
    let peer = pick_peer(&route_set, source);
    Ok(DialogState {
        call_id,
        local_tag: local_tag.to_owned(),
        remote_tag: from.tag().unwrap_or_default().to_owned(),
        role: DialogRole::Uas,
        local_seq: rand::random_range(1..(1u32 << 30)),
        remote_seq: Some(remote_seq),
        local_uri: to.uri,
        remote_uri: from.uri,
        remote_target: contact.uri,
        route_set,
        local_contact: bare_uri(local_contact),
        transport,
        peer,
        local_sdp: None,
        remote_sdp: body_text(&invite.body),
        sdp_version: 0,
    })
}

/// Builds a dialog-creating INVITE (RFC 3261 §8.1.1): From with our tag, To without tag,
/// Call-ID, `CSeq: <cseq> INVITE`, Contact, `Max-Forwards: 70`, and with `sdp`
/// `Content-Type: application/sdp`; Content-Length always. No Via (the transaction layer adds
/// it). URIs may be bare (`sip:a@b`) or name-addrs (`"Support" <sip:a@b>`). With
/// [`SipTransport::Tcp`], a Contact without a `transport` parameter gets `;transport=tcp`.
///
/// Errors only when `request_uri` is not a SIP URI rsip can parse ([`SipError::Parse`]).
#[allow(clippy::too_many_arguments)]
pub fn uac_invite(
    local_uri: &str,
    remote_uri: &str,
    request_uri: &str,
    local_contact: &str,
    call_id: &str,
    local_tag: &str,
    cseq: u32,
    sdp: Option<&str>,
    transport: SipTransport,
) -> Result<rsip::Request, SipError> {
    let uri = parse_uri(request_uri, "Request-URI")?;
    let mut contact = bare_uri(local_contact);
    if transport == SipTransport::Tcp && !uri_has_param(&contact, "transport") {
        contact.push_str(";transport=tcp");
    }
    let headers = vec![
        rsip::headers::MaxForwards::from(70u32).into(),
        rsip::headers::From::new(format!("{};tag={local_tag}", angle(local_uri))).into(),
        rsip::headers::To::new(angle(remote_uri)).into(),
        rsip::headers::CallId::new(call_id).into(),
        rsip::headers::CSeq::new(format!("{cseq} INVITE")).into(),
        rsip::headers::Contact::new(angle(&contact)).into(),
    ];
    let body = sdp.map(|s| ("application/sdp", s.as_bytes().to_vec()));
    Ok(finish(Method::Invite, uri, headers, body))
}

/// Creates the UAC side of a dialog from our INVITE and its 2xx, or a 1xx with a To tag for an
/// early dialog (RFC 3261 §12.1.2).
///
/// Remote tag from the response's To; remote target from its Contact (a 1xx without Contact
/// falls back to the INVITE's Request-URI); route set = the response's Record-Route reversed;
/// `local_seq` = the INVITE's CSeq; `peer` by the rule of [`uas_dialog`], observed address
/// `dest` (where we sent the INVITE). `local_sdp`/`remote_sdp` are the bodies, `sdp_version` the
/// `o=` version of our SDP.
///
/// Errors: a response that is not 1xx/2xx, has another Call-ID or From tag, or no To tag
/// ([`SipError::Dialog`]); missing or unreadable headers.
pub fn uac_dialog(
    invite: &rsip::Request,
    response: &rsip::Response,
    dest: SocketAddr,
    transport: SipTransport,
) -> Result<DialogState, SipError> {
    let call_id = required(&invite.headers, Field::CallId, None)?
        .trim()
        .to_owned();
    let cid = Some(call_id.as_str());
    let code = response.status_code.code();
    if !(101..300).contains(&code) {
        return Err(dialog_err(
            &call_id,
            &format!("a {code} response does not create a dialog"),
        ));
    }
    let response_call_id = required(&response.headers, Field::CallId, cid)?.trim();
    if response_call_id != call_id {
        return Err(dialog_err(
            &call_id,
            &format!("response has another Call-ID {response_call_id:?}"),
        ));
    }
    let from = name_addr(required(&invite.headers, Field::From, cid)?, Field::From)?;
    let to = name_addr(required(&invite.headers, Field::To, cid)?, Field::To)?;
    let local_tag = from
        .tag()
        .ok_or_else(|| dialog_err(&call_id, "our INVITE's From has no tag"))?
        .to_owned();
    let response_from = name_addr(required(&response.headers, Field::From, cid)?, Field::From)?;
    if !response_from
        .tag()
        .is_some_and(|t| t.eq_ignore_ascii_case(&local_tag))
    {
        return Err(dialog_err(&call_id, "response's From tag is not ours"));
    }
    let response_to = name_addr(required(&response.headers, Field::To, cid)?, Field::To)?;
    let remote_tag = response_to
        .tag()
        .ok_or_else(|| dialog_err(&call_id, &format!("{code} response's To has no tag")))?
        .to_owned();
    let (local_seq, _) = cseq(&invite.headers, cid)?;
    let remote_target = match first(&response.headers, Field::Contact) {
        Some(contact) => name_addr(contact, Field::Contact)?.uri,
        None if code < 200 => invite.uri.to_string(),
        None => {
            return Err(SipError::MissingHeader {
                header: Field::Contact.name(),
                call_id: Some(call_id),
            });
        }
    };
    let local_contact = name_addr(
        required(&invite.headers, Field::Contact, cid)?,
        Field::Contact,
    )?;
    let mut route_set = route_list(&response.headers)?;
    route_set.reverse();
    let peer = pick_peer(&route_set, dest);
    let local_sdp = body_text(&invite.body);
    let sdp_version = local_sdp.as_deref().and_then(origin_version).unwrap_or(0);
    Ok(DialogState {
        call_id,
        local_tag,
        remote_tag,
        role: DialogRole::Uac,
        local_seq,
        remote_seq: None,
        local_uri: from.uri,
        remote_uri: to.uri,
        remote_target,
        route_set,
        local_contact: local_contact.uri,
        transport,
        peer,
        local_sdp,
        remote_sdp: body_text(&response.body),
        sdp_version,
    })
}

/// Builds the next in-dialog request (RFC 3261 §12.2.1.1) and counts it in `d.local_seq`.
///
/// Request-URI and Route headers follow the route set: loose routing (first route has `;lr`)
/// keeps the remote target as Request-URI and sends every route; strict routing puts the first
/// route in the Request-URI and sends the rest plus the remote target as Route. From carries our
/// tag, To the peer's (none while the peer has not chosen one), Call-ID, `CSeq: <n> <METHOD>`,
/// `Max-Forwards: 70`, Contact for target-refresh and subscription methods (INVITE, UPDATE,
/// SUBSCRIBE, NOTIFY, REFER), and `body` as `(content type, bytes)`. No Via.
///
/// Use [`make_ack`] for ACK (it reuses the INVITE's number); CANCEL is not built here (it copies
/// the INVITE's headers). `d` is left unchanged on error (a remote target or route that rsip
/// cannot parse: [`SipError::Parse`]). Recording an SDP offer in `d.local_sdp` is up to the
/// caller once it is accepted.
pub fn make_request(
    d: &mut DialogState,
    method: Method,
    body: Option<(&str, Vec<u8>)>,
) -> Result<rsip::Request, SipError> {
    let seq = d.local_seq.saturating_add(1);
    let with_contact = matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    );
    let request = in_dialog(d, method, seq, with_contact, body)?;
    d.local_seq = seq;
    Ok(request)
}

/// Builds the ACK for a 2xx to our INVITE or re-INVITE (RFC 3261 §13.2.2.4): routed like
/// [`make_request`], `CSeq: <invite_cseq> ACK`, no Contact, optional body (an SDP answer when
/// the 2xx carried the offer). `d.local_seq` is not changed.
pub fn make_ack(
    d: &DialogState,
    invite_cseq: u32,
    body: Option<(&str, Vec<u8>)>,
) -> Result<rsip::Request, SipError> {
    in_dialog(d, Method::Ack, invite_cseq, false, body)
}

/// Checks an incoming in-dialog request against `d` and updates it (RFC 3261 §12.2.2).
///
/// The request must match the dialog (Call-ID and tags, see [`matches`]). Except for ACK and
/// CANCEL, its CSeq must be above `d.remote_seq`, which it then becomes; a lower or equal one
/// is an error ([`SipError::Dialog`]) and the TU answers 500. A re-INVITE or UPDATE with a
/// Contact refreshes `d.remote_target` (`d.peer` is kept: see the peer rule of [`uas_dialog`]).
/// While the peer's tag is unknown (early UAC dialog), it is learnt from the From tag.
/// `d` is left unchanged on error.
pub fn check_incoming(d: &mut DialogState, req: &rsip::Request) -> Result<(), SipError> {
    let headers = &req.headers;
    let cid = Some(d.call_id.as_str());
    let call_id = required(headers, Field::CallId, cid)?.trim();
    let from = name_addr(required(headers, Field::From, cid)?, Field::From)?;
    let to = name_addr(required(headers, Field::To, cid)?, Field::To)?;
    if !matches(d, call_id, from.tag(), to.tag(), true) {
        return Err(dialog_err(
            &d.call_id,
            &format!(
                "{} with Call-ID {call_id:?}, From tag {:?}, To tag {:?} is not in this dialog",
                req.method,
                from.tag(),
                to.tag()
            ),
        ));
    }
    let (seq, cseq_method) = cseq(headers, cid)?;
    if !cseq_method.eq_ignore_ascii_case(&req.method.to_string()) {
        return Err(SipError::Parse {
            what: "CSeq header".to_owned(),
            detail: format!(
                "method {cseq_method} differs from the request's {}",
                req.method
            ),
        });
    }
    let counted = !matches!(req.method, Method::Ack | Method::Cancel);
    match d.remote_seq {
        Some(last) if counted && seq <= last => {
            return Err(dialog_err(
                &d.call_id,
                &format!(
                    "{} with CSeq {seq} is not above the last one, {last}: out of order",
                    req.method
                ),
            ));
        }
        _ => {}
    }
    let new_target = match (req.method, first(headers, Field::Contact)) {
        (Method::Invite | Method::Update, Some(contact)) => {
            let target = name_addr(contact, Field::Contact)?.uri;
            parse_uri(&target, "Contact URI")?;
            Some(target)
        }
        _ => None,
    };
    if counted {
        d.remote_seq = Some(seq);
    }
    if let Some(target) = new_target {
        d.remote_target = target;
    }
    match from.tag() {
        Some(tag) if d.remote_tag.is_empty() => d.remote_tag = tag.to_owned(),
        _ => {}
    }
    Ok(())
}

/// Whether a message with these identifiers belongs to dialog `d` (RFC 3261 §12.1, §12.2.2).
///
/// For an incoming request the peer's tag is the From tag and ours the To tag; for an incoming
/// response (`incoming_request == false`) ours is the From tag and the peer's the To tag.
/// Call-IDs compare byte for byte, tags case-insensitively (RFC 3261 §7.3.1 tokens). While the
/// peer has not chosen a tag (`d.remote_tag` empty: early UAC dialog), any peer tag matches.
pub fn matches(
    d: &DialogState,
    call_id: &str,
    from_tag: Option<&str>,
    to_tag: Option<&str>,
    incoming_request: bool,
) -> bool {
    let (local, remote) = if incoming_request {
        (to_tag, from_tag)
    } else {
        (from_tag, to_tag)
    };
    d.call_id == call_id
        && local.is_some_and(|t| t.eq_ignore_ascii_case(&d.local_tag))
        && (d.remote_tag.is_empty()
            || remote.is_some_and(|t| t.eq_ignore_ascii_case(&d.remote_tag)))
}

/// Our Contact URI: `sip:user@host:port`, `sip:host:port` for an empty user, IPv6 hosts in
/// brackets, plus `;transport=tcp` for TCP.
pub fn local_contact(user: &str, host: &str, port: u16, transport: SipTransport) -> String {
    let host = match host.parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_owned(),
    };
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    let transport = match transport {
        SipTransport::Udp => "",
        SipTransport::Tcp => ";transport=tcp",
    };
    format!("sip:{user}{host}:{port}{transport}")
}

/// Builds an in-dialog request with CSeq `seq`; shared by [`make_request`] and [`make_ack`].
fn in_dialog(
    d: &DialogState,
    method: Method,
    seq: u32,
    with_contact: bool,
    body: Option<(&str, Vec<u8>)>,
) -> Result<rsip::Request, SipError> {
    let (request_uri, routes): (&str, Vec<&str>) = match d.route_set.split_first() {
        None => (d.remote_target.as_str(), vec![]),
        Some((first_route, _)) if uri_has_param(first_route, "lr") => (
            d.remote_target.as_str(),
            d.route_set.iter().map(String::as_str).collect(),
        ),
        Some((first_route, rest)) => (
            first_route.as_str(),
            rest.iter()
                .map(String::as_str)
                .chain([d.remote_target.as_str()])
                .collect(),
        ),
    };
    let uri = parse_uri(request_uri, "Request-URI")?;
    let mut headers: Vec<Header> = Vec::new();
    if !routes.is_empty() {
        let value = routes
            .iter()
            .map(|r| angle(r))
            .collect::<Vec<_>>()
            .join(", ");
        headers.push(rsip::headers::Route::new(value).into());
    }
    headers.push(rsip::headers::MaxForwards::from(70u32).into());
    headers.push(
        rsip::headers::From::new(format!("{};tag={}", angle(&d.local_uri), d.local_tag)).into(),
    );
    let to = if d.remote_tag.is_empty() {
        angle(&d.remote_uri)
    } else {
        format!("{};tag={}", angle(&d.remote_uri), d.remote_tag)
    };
    headers.push(rsip::headers::To::new(to).into());
    headers.push(rsip::headers::CallId::new(d.call_id.clone()).into());
    headers.push(rsip::headers::CSeq::new(format!("{seq} {method}")).into());
    if with_contact {
        headers.push(rsip::headers::Contact::new(angle(&d.local_contact)).into());
    }
    Ok(finish(method, uri, headers, body))
}

/// Appends Content-Type (with a body) and Content-Length and assembles the request.
fn finish(
    method: Method,
    uri: rsip::Uri,
    mut headers: Vec<Header>,
    body: Option<(&str, Vec<u8>)>,
) -> rsip::Request {
    let body = match body {
        Some((content_type, bytes)) => {
            headers.push(rsip::headers::ContentType::new(content_type).into());
            bytes
        }
        None => Vec::new(),
    };
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    headers.push(rsip::headers::ContentLength::from(length).into());
    rsip::Request {
        method,
        uri,
        version: rsip::Version::V2,
        headers: Headers::from(headers),
        body,
    }
}

/// The peer rule documented on [`uas_dialog`].
fn pick_peer(route_set: &[String], observed: SocketAddr) -> SocketAddr {
    route_set
        .first()
        .and_then(|route| uri_socket(route))
        .unwrap_or(observed)
}

/// The numeric socket address of a SIP URI (`sip:user@1.2.3.4:5070;lr` → 1.2.3.4:5070), with
/// the scheme's default port; `None` for host names and non-SIP URIs.
fn uri_socket(uri: &str) -> Option<SocketAddr> {
    let uri = uri.trim();
    let (default_port, rest) = if starts_with_ci(uri, "sips:") {
        (5061, uri.get(5..)?)
    } else if starts_with_ci(uri, "sip:") {
        (5060, uri.get(4..)?)
    } else {
        return None;
    };
    let host_part = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_part
        .split([';', '?'])
        .next()
        .unwrap_or_default()
        .trim();
    let (ip, port): (IpAddr, Option<&str>) = if let Some(v6) = host_port.strip_prefix('[') {
        let (ip, after) = v6.split_once(']')?;
        (IpAddr::V6(ip.parse().ok()?), after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (IpAddr::V4(h.parse().ok()?), Some(p)),
            None => (IpAddr::V4(host_port.parse().ok()?), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a URI has parameter `name` (`;lr`, `;lr=on`, `;transport=tcp`), case-insensitive.
fn uri_has_param(uri: &str, name: &str) -> bool {
    let host_part = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    let params = host_part.split('?').next().unwrap_or_default();
    params.split(';').skip(1).any(|p| {
        let key = p.split('=').next().unwrap_or_default().trim();
        key.eq_ignore_ascii_case(name)
    })
}

/// ASCII case-insensitive prefix test.
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Parses a URI for a Request-URI with rsip.
fn parse_uri(uri: &str, what: &str) -> Result<rsip::Uri, SipError> {
    rsip::Uri::try_from(uri.trim()).map_err(|e| SipError::Parse {
        what: what.to_owned(),
        detail: format!("{uri:?}: {e}"),
    })
}

/// `uri` as a name-addr: wrapped in `<>` unless it already is one.
fn angle(uri: &str) -> String {
    if uri.contains('<') {
        uri.trim().to_owned()
    } else {
        format!("<{}>", uri.trim())
    }
}

/// The bare URI of a URI or name-addr (`"A" <sip:a@b>` → `sip:a@b`).
fn bare_uri(value: &str) -> String {
    parse_name_addr(value).map_or_else(|| value.trim().to_owned(), |n| n.uri)
}

/// The request body as text, when there is one and it is UTF-8.
fn body_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

/// The error for a message that does not fit its dialog.
fn dialog_err(call_id: &str, detail: &str) -> SipError {
    SipError::Dialog {
        call_id: call_id.to_owned(),
        detail: detail.to_owned(),
    }
}

/// The headers this module reads, with their compact forms (RFC 3261 §7.3.3), which rsip
/// leaves as `Header::Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    From,
    To,
    CallId,
    CSeq,
    Contact,
    RecordRoute,
}

impl Field {
    /// The header's full name.
    fn name(self) -> &'static str {
        match self {
            Field::From => "From",
            Field::To => "To",
            Field::CallId => "Call-ID",
            Field::CSeq => "CSeq",
            Field::Contact => "Contact",
            Field::RecordRoute => "Record-Route",
        }
    }

    /// The header's compact name, if it has one.
    fn compact(self) -> Option<&'static str> {
        match self {
            Field::From => Some("f"),
            Field::To => Some("t"),
            Field::CallId => Some("i"),
            Field::Contact => Some("m"),
            Field::CSeq | Field::RecordRoute => None,
        }
    }

    /// The value of `header` if it is this field.
    fn pick(self, header: &Header) -> Option<&str> {
        match (self, header) {
            (Field::From, Header::From(h)) => Some(h.value()),
            (Field::To, Header::To(h)) => Some(h.value()),
            (Field::CallId, Header::CallId(h)) => Some(h.value()),
            (Field::CSeq, Header::CSeq(h)) => Some(h.value()),
            (Field::Contact, Header::Contact(h)) => Some(h.value()),
            (Field::RecordRoute, Header::RecordRoute(h)) => Some(h.value()),
            (_, Header::Other(name, value))
                if name.trim().eq_ignore_ascii_case(self.name())
                    || self
                        .compact()
                        .is_some_and(|c| name.trim().eq_ignore_ascii_case(c)) =>
            {
                Some(value.as_str())
            }
            _ => None,
        }
    }
}

/// The first value of a header.
fn first(headers: &Headers, field: Field) -> Option<&str> {
    headers.iter().find_map(|h| field.pick(h))
}

/// The first value of a header that must be present.
fn required<'a>(
    headers: &'a Headers,
    field: Field,
    call_id: Option<&str>,
) -> Result<&'a str, SipError> {
    first(headers, field).ok_or_else(|| SipError::MissingHeader {
        header: field.name(),
        call_id: call_id.map(str::to_owned),
    })
}

/// The CSeq number and method.
fn cseq(headers: &Headers, call_id: Option<&str>) -> Result<(u32, String), SipError> {
    let value = required(headers, Field::CSeq, call_id)?;
    let mut parts = value.split_whitespace();
    let seq = parts.next().and_then(|n| n.parse::<u32>().ok());
    match (seq, parts.next()) {
        (Some(seq), Some(method)) => Ok((seq, method.to_owned())),
        _ => Err(SipError::Parse {
            what: "CSeq header".to_owned(),
            detail: format!("{value:?} is not `<number> <method>`"),
        }),
    }
}

/// All Record-Route entries, in order, as bare URIs.
fn route_list(headers: &Headers) -> Result<Vec<String>, SipError> {
    let mut routes = Vec::new();
    for value in headers.iter().filter_map(|h| Field::RecordRoute.pick(h)) {
        for entry in split_list(value) {
            routes.push(name_addr(entry, Field::RecordRoute)?.uri);
        }
    }
    Ok(routes)
}

/// A From/To/Contact/Record-Route entry: its URI and the header parameters after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameAddr {
    /// The URI, without `<>` and display name.
    uri: String,
    /// Header parameters (`tag`, `expires`, ...), names lower-cased.
    params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// The `tag` parameter, when present and non-empty.
    fn tag(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(name, _)| name == "tag")
            .and_then(|(_, value)| value.as_deref())
            .filter(|t| !t.is_empty())
    }
}

/// Reads a name-addr or addr-spec entry, or fails naming the header.
fn name_addr(value: &str, field: Field) -> Result<NameAddr, SipError> {
    parse_name_addr(value).ok_or_else(|| SipError::Parse {
        what: format!("{} header", field.name()),
        detail: format!("{value:?} is not a name-addr or addr-spec"),
    })
}

/// Parses `"Display" <uri>;params`, `<uri>;params` or `uri;params` (where, per RFC 3261 §20,
/// the parameters of an addr-spec belong to the header).
fn parse_name_addr(value: &str) -> Option<NameAddr> {
    let value = value.trim();
    let (uri, rest) = match find_unquoted(value, '<') {
        Some(lt) => {
            let after = value.get(lt + 1..)?;
            let gt = after.find('>')?;
            (after.get(..gt)?.trim(), after.get(gt + 1..)?)
        }
        None => match value.find(';') {
            Some(i) => (value.get(..i)?.trim(), value.get(i..)?),
            None => (value, ""),
        },
    };
    if uri.is_empty() || uri.contains(char::is_whitespace) {
        return None;
    }
    let params = rest
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, v)) => (
                name.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_owned()),
            ),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect();
    Some(NameAddr {
        uri: uri.to_owned(),
        params,
    })
}

/// Byte index of the first `c` outside a quoted string.
fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if ch == c && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits a comma-separated header value, ignoring commas inside quotes and `<>`.
fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut angle_depth, mut start) = (false, false, 0u32, 0);
    for (i, ch) in value.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle_depth += 1,
            '>' if !quoted => angle_depth = angle_depth.saturating_sub(1),
            ',' if !quoted && angle_depth == 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
