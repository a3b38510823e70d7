//! Digest authentication (RFC 2617 as used by RFC 3261 §22, with MD5 as RFC 8760 keeps it):
//! the registrar's side (challenges, stateless nonces, verification) and the client's side
//! ([`respond`], for agents and tests that must answer a challenge).
//!
//! Nonces are stateless ([`NonceKeeper`]): every node of the cluster that shares the secret can
//! check a nonce another node issued, so a REGISTER challenged by one node may be answered at
//! another. Replay within a nonce's lifetime is not detected (no `nc` bookkeeping); nonces are
//! short-lived instead.

use crate::sip::SipError;
use md5::{Digest, Md5};

/// A `WWW-Authenticate` (or `Proxy-Authenticate`) challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space, usually the SIP domain; part of HA1, so it must match the stored hash.
    pub realm: String,
    /// Server nonce the client must hash into its response (see [`NonceKeeper`]).
    pub nonce: String,
    /// Opaque string the client must echo back unchanged, when the server sets one.
    pub opaque: Option<String>,
    /// True when the previous response was right but its nonce had expired: the client retries
    /// with the new nonce without asking the user again.
    pub stale: bool,
}

impl Challenge {
    /// The header value: `Digest realm="..",nonce="..",algorithm=MD5,qop="auth"`, followed by
    /// `,opaque=".."` and `,stale=TRUE` when set.
    pub fn to_header_value(&self) -> String {
        let mut value = format!(
            "Digest realm=\"{}\",nonce=\"{}\",algorithm=MD5,qop=\"auth\"",
            escape(&self.realm),
            escape(&self.nonce)
        );
        if let Some(opaque) = &self.opaque {
            value.push_str(&format!(",opaque=\"{}\"", escape(opaque)));
        }
        if self.stale {
            value.push_str(",stale=TRUE");
        }
        value
    }

    /// Parses a `WWW-Authenticate`/`Proxy-Authenticate` value (the client side). Errors
    /// ([`SipError::Auth`]) name the missing parameter or the unsupported scheme.
    pub fn parse(value: &str) -> Result<Challenge, SipError> {
        let params = parse_digest_params(value, "?")?;
        let realm = required(&params, "realm", "?")?;
        let nonce = required(&params, "nonce", "?")?;
        Ok(Challenge {
            realm,
            nonce,
            opaque: optional(&params, "opaque"),
            stale: optional(&params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Result of checking a nonce with [`NonceKeeper::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// We issued it and it is still fresh.
    Valid,
    /// We issued it but it is older than allowed: challenge again with `stale=TRUE`.
    Stale,
    /// Not one of ours (forged, mangled, from another secret, or from the future).
    Invalid,
}

/// Issues and checks stateless nonces: `hex(timestamp, 16 digits) + hex(md5(secret ":" timestamp))`.
///
/// Nodes sharing the secret accept each other's nonces; a nonce up to [`NonceKeeper::MAX_SKEW_SECS`]
/// in the future is tolerated for clock skew between nodes.
#[derive(Clone)]
pub struct NonceKeeper {
    /// The key that makes nonces unforgeable; never leaves the node (nor its Debug output).
    secret: [u8; 16],
}

impl std::fmt::Debug for NonceKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKeeper { secret: <hidden> }")
    }
}

impl NonceKeeper {
    /// How far in the future (seconds) a nonce's timestamp may be, for clock skew between nodes.
    pub const MAX_SKEW_SECS: u64 = 30;

    /// A keeper with a given secret (shared by the cluster's nodes).
    pub fn new(secret: [u8; 16]) -> NonceKeeper {
        NonceKeeper { secret }
    }

    /// A keeper with a random secret: its nonces are only valid on this node, until restart.
    pub fn random() -> NonceKeeper {
        NonceKeeper {
            secret: rand::random(),
        }
    }

    /// A fresh nonce stamped with `now_secs` (Unix seconds).
    pub fn issue(&self, now_secs: u64) -> String {
        format!("{now_secs:016x}{}", self.mac(now_secs))
    }

    /// Whether `nonce` is ours and younger than `max_age_secs` at `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64, max_age_secs: u64) -> NonceCheck {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (stamp, mac) = nonce.split_at(16);
        let Ok(issued) = u64::from_str_radix(stamp, 16) else {
            return NonceCheck::Invalid;
        };
        if !constant_time_eq(
            mac.to_ascii_lowercase().as_bytes(),
            self.mac(issued).as_bytes(),
        ) {
            return NonceCheck::Invalid;
        }
        if issued > now_secs.saturating_add(Self::MAX_SKEW_SECS) {
            return NonceCheck::Invalid;
        }
        if now_secs.saturating_sub(issued) > max_age_secs {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    /// Hex MD5 of `secret ":" timestamp-hex`.
    fn mac(&self, stamp: u64) -> String {
        let mut h = Md5::new();
        h.update(self.secret);
        h.update(format!(":{stamp:016x}").as_bytes());
        hex::encode(h.finalize())
    }
}

/// The parameters of an `Authorization` (or `Proxy-Authorization`) header with the Digest scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// The user name: which account's HA1 to verify against.
    pub username: String,
    /// The realm the client answered for; must be ours.
    pub realm: String,
    /// The nonce the client used; check it with [`NonceKeeper::check`].
    pub nonce: String,
    /// The digest-uri the client hashed (normally the Request-URI).
    pub uri: String,
    /// The 32-hex-digit response to compare.
    pub response: String,
    /// `MD5` (the default when absent) or `MD5-sess`.
    pub algorithm: Option<String>,
    /// `auth` when the client used quality of protection; absent for RFC 2069 responses.
    pub qop: Option<String>,
    /// Nonce count, 8 hex digits, with qop.
    pub nc: Option<String>,
    /// Client nonce, with qop.
    pub cnonce: Option<String>,
    /// The challenge's opaque, echoed.
    pub opaque: Option<String>,
}

/// Parses an `Authorization` value: `Digest name=value, ...` with quoted strings (which may hold
/// commas and escaped quotes), parameters in any order and names in any case. Errors
/// ([`SipError::Auth`]) name the user when known and the missing parameter or the syntax problem.
pub fn parse_authorization(value: &str) -> Result<DigestCredentials, SipError> {
    let params = parse_digest_params(value, "?")?;
    let user = optional(&params, "username").unwrap_or_else(|| "?".to_owned());
    Ok(DigestCredentials {
        username: required(&params, "username", &user)?,
        realm: required(&params, "realm", &user)?,
        nonce: required(&params, "nonce", &user)?,
        uri: required(&params, "uri", &user)?,
        response: required(&params, "response", &user)?,
        algorithm: optional(&params, "algorithm"),
        qop: optional(&params, "qop"),
        nc: optional(&params, "nc"),
        cnonce: optional(&params, "cnonce"),
        opaque: optional(&params, "opaque"),
    })
}

/// `HA1 = hex(md5(username ":" realm ":" password))`, what a registrar stores instead of the
/// password.
pub fn ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&format!("{username}:{realm}:{password}"))
}

/// Whether `creds` is a correct response for `method` given the account's `ha1`.
///
/// Supports qop `auth` (needs nc and cnonce) and the RFC 2069 form without qop, algorithms
/// `MD5` and `MD5-sess`; anything else (e.g. `auth-int`, SHA-256) is refused. The comparison is
/// constant-time. The nonce, realm and uri are not checked here: check the nonce with
/// [`NonceKeeper::check`] and the realm against ours.
pub fn verify(creds: &DigestCredentials, method: &str, ha1: &str) -> bool {
    match expected_response(creds, method, ha1) {
        Some(expected) => constant_time_eq(
            creds.response.trim().to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        ),
        None => false,
    }
}

/// The response a correct client computes for `creds`, or `None` when the parameters are
/// unsupported or incomplete.
fn expected_response(creds: &DigestCredentials, method: &str, ha1: &str) -> Option<String> {
    let ha1 = ha1.to_ascii_lowercase();
    let ha1 = match creds.algorithm.as_deref() {
        None => ha1,
        Some(a) if a.eq_ignore_ascii_case("MD5") => ha1,
        Some(a) if a.eq_ignore_ascii_case("MD5-sess") => {
            let cnonce = creds.cnonce.as_deref()?;
            md5_hex(&format!("{ha1}:{}:{cnonce}", creds.nonce))
        }
        Some(_) => return None,
    };
    let ha2 = md5_hex(&format!("{method}:{}", creds.uri));
    match creds.qop.as_deref() {
        None => Some(md5_hex(&format!("{ha1}:{}:{ha2}", creds.nonce))),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let nc = creds.nc.as_deref()?;
            let cnonce = creds.cnonce.as_deref()?;
            Some(md5_hex(&format!(
                "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
                creds.nonce
            )))
        }
        Some(_) => None,
    }
}

/// The client side: the `Authorization` value answering `challenge` for a request with `method`
/// and Request-URI `uri`, using qop `auth` with client nonce `cnonce` and nonce count `nc`
/// (1 for the first request with this nonce).
pub fn respond(
    challenge: &Challenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let nc = format!("{nc:08x}");
    let creds = DigestCredentials {
        username: username.to_owned(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response: String::new(),
        algorithm: Some("MD5".to_owned()),
        qop: Some("auth".to_owned()),
        nc: Some(nc.clone()),
        cnonce: Some(cnonce.to_owned()),
        opaque: challenge.opaque.clone(),
    };
    let response = expected_response(&creds, method, &ha1(username, &challenge.realm, password))
        .unwrap_or_default();
    let mut value = format!(
        "Digest username=\"{}\",realm=\"{}\",nonce=\"{}\",uri=\"{}\",response=\"{response}\",\
         algorithm=MD5,cnonce=\"{}\",qop=auth,nc={nc}",
        escape(username),
        escape(&challenge.realm),
        escape(&challenge.nonce),
        escape(uri),
        escape(cnonce),
    );
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(",opaque=\"{}\"", escape(opaque)));
    }
    value
}

/// Hex MD5 of a string.
fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Escapes `"` and `\` for a quoted-string.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Lower-cased parameter names with their (unquoted, unescaped) values.
type Params = Vec<(String, String)>;

/// Checks the `Digest` scheme and splits the rest into parameters.
fn parse_digest_params(value: &str, user: &str) -> Result<Params, SipError> {
    let fail = |detail: String| SipError::Auth {
        user: user.to_owned(),
        detail,
    };
    let value = value.trim();
    let (scheme, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(fail(format!(
            "unsupported authentication scheme {scheme:?}"
        )));
    }
    let mut params = Params::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        // Skip separators.
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c == ',' || c.is_ascii_whitespace() {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let name = rest[start..end].to_ascii_lowercase();
        while chars.peek().is_some_and(|(_, c)| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(fail(format!("parameter {name:?} has no value")));
        }
        while chars.peek().is_some_and(|(_, c)| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            val.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(fail(format!(
                    "parameter {name:?} has an unterminated quoted value"
                )));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        if name.is_empty() {
            return Err(fail("a parameter has no name".to_owned()));
        }
        params.push((name, val));
    }
    Ok(params)
}

/// The value of parameter `name` (lower-case), if present.
fn optional(params: &Params, name: &str) -> Option<String> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// The value of parameter `name`, or an error naming it.
fn required(params: &Params, name: &'static str, user: &str) -> Result<String, SipError> {
    optional(params, name).ok_or_else(|| SipError::Auth {
        user: user.to_owned(),
        detail: format!("Digest header lacks the {name} parameter"),
    })
}

#[cfg(test)]
mod tests;
