//! Authentication and roles for the HTTP API, the console and the web gateway.
//!
//! A request proves who it is with `Authorization: Bearer <token>` or the cookie
//! `lingxi_session=<token>`. A token is either a console session (random 32 bytes, base64url;
//! opened by `POST /api/v1/auth/login`, replicated as `SessionOpened` holding only the token's
//! SHA-256, so any node accepts it) or a machine API key from `[[auth.api_keys]]` (only its
//! SHA-256 is configured). Passwords are stored as argon2id PHC strings and checked off the
//! async runtime. Failed logins are counted per node ([`limiter`]).
//!
//! # Layout
//! - this file: [`Role`], [`Principal`], [`Auth`] (`check`, `login`, `logout`), [`AuthError`],
//!   password hashing and tokens.
//! - `limiter`: failed-login counting per username and client address.
//! - `bootstrap`: the first admin, created at start-up when none exists.

mod bootstrap;
mod limiter;

pub use bootstrap::{INITIAL_PASSWORD_FILE, spawn_first_admin};
pub use lingxi_cluster::model::Role;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use limiter::LoginLimiter;
use lingxi_cluster::model::{Millis, User};
use lingxi_cluster::{ClusterError, Command, Log};
use lingxi_config::AuthSection;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Name of the session cookie set at login.
pub const SESSION_COOKIE: &str = "lingxi_session";

/// Who is making a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Login name (`apikey:<name>` for an API key).
    pub username: String,
    /// Role.
    pub role: Role,
    /// The agent this principal works as, if any.
    pub agent_id: Option<String>,
}

impl Principal {
    /// Admin or supervisor: may read everything and manage agents' states.
    pub fn is_supervisor(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Supervisor)
    }

    /// Whether this principal may see and change agent `agent_id` (its state, calls, CDRs).
    pub fn may_act_for(&self, agent_id: &str) -> bool {
        self.is_supervisor() || self.agent_id.as_deref() == Some(agent_id)
    }

    /// `Ok` for admins, else 403.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(AuthError::forbidden("admin role required / 需要管理员权限"))
        }
    }

    /// `Ok` for admins and supervisors, else 403.
    pub fn require_supervisor(&self) -> Result<(), AuthError> {
        if self.is_supervisor() {
            Ok(())
        } else {
            Err(AuthError::forbidden(
                "supervisor or admin role required / 需要班长或管理员权限",
            ))
        }
    }
}

/// Why a request was not let through: 401 (who are you?), 403 (not allowed) or 429 (too many
/// failed logins). Renders as JSON `{"error": "..."}`.
#[derive(Debug, Clone)]
pub struct AuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong, in English and Chinese.
    pub message: String,
    /// Seconds to wait before trying again (429 only).
    pub retry_after_secs: Option<u64>,
}

impl AuthError {
    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 403 with a message.
    pub fn forbidden(message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for AuthError {}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// An API key from config, by the SHA-256 of the key.
struct ApiKey {
    /// Its name (principal `apikey:<name>`).
    name: String,
    /// Its role.
    role: Role,
    /// SHA-256 of the key.
    sha256: [u8; 32],
}

struct Inner {
    /// The replicated state: users and sessions.
    log: Log,
    /// Machine keys.
    api_keys: Vec<ApiKey>,
    /// Failed-login counts on this node.
    limiter: LoginLimiter,
    /// Session lifetime.
    session_ttl: Duration,
}

/// Checks tokens and logs users in. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOk {
    /// The bearer token (shown once; only its SHA-256 is kept).
    pub token: String,
    /// When it expires.
    pub expires_at_ms: Millis,
    /// The user logged in.
    pub user: User,
}

/// Milliseconds since the Unix epoch (wall clock: sessions expire at the same instant on every
/// node).
fn now_ms() -> Millis {
    lingxi_actors::clock::now_ms()
}

impl Auth {
    /// Auth over the replicated `log`, with the API keys and limits of `section` (already
    /// validated: an API key that does not parse is an error naming it).
    pub fn new(log: Log, section: &AuthSection) -> anyhow::Result<Auth> {
        let mut api_keys = Vec::new();
        for (i, k) in section.api_keys.iter().enumerate() {
            let role = Role::parse(&k.role).ok_or_else(|| {
                anyhow::anyhow!("auth.api_keys[{i}].role: {:?} is not a role", k.role)
            })?;
            let bytes = hex::decode(&k.sha256)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow::anyhow!("auth.api_keys[{i}].sha256: not 64 hex digits"))?;
            api_keys.push(ApiKey {
                name: k.name.clone(),
                role,
                sha256: bytes,
            });
        }
        Ok(Auth {
            inner: Arc::new(Inner {
                log,
                api_keys,
                limiter: LoginLimiter::new(
                    section.login_max_failures,
                    Duration::from_secs(section.login_window_secs),
                ),
                session_ttl: Duration::from_secs(section.session_ttl_secs),
            }),
        })
    }

    /// The token a request carries: `Authorization: Bearer <token>`, else the session cookie.
    pub fn token_from(headers: &HeaderMap) -> Option<&str> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let v = v.trim();
            if let Some(t) = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                let t = t.trim();
                if !t.is_empty() {
                    return Some(t);
                }
            }
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, v)| *k == SESSION_COOKIE && !v.is_empty())
            .map(|(_, v)| v)
    }

    /// Who the request is from: 401 when it carries no token, or an unknown or expired one.
    pub fn check(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let token = Self::token_from(headers).ok_or_else(|| {
            AuthError::unauthorized(
                "authentication required: log in, or send Authorization: Bearer <token> / 需要登录",
            )
        })?;
        self.check_token(token)
    }

    /// Who a bare token belongs to (for WebSocket `?token=`).
    pub fn check_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(k) = self
            .inner
            .api_keys
            .iter()
            .find(|k| constant_time_eq(&k.sha256, &digest))
        {
            return Ok(Principal {
                username: format!("apikey:{}", k.name),
                role: k.role,
                agent_id: None,
            });
        }
        let hash = hex::encode(digest);
        let now = now_ms();
        self.inner
            .log
            .read(|sm| {
                let s = sm.session(&hash, now)?;
                let u = sm.user(&s.username)?;
                Some(Principal {
                    username: u.username.clone(),
                    role: u.role,
                    agent_id: u.agent_id.clone(),
                })
            })
            .ok_or_else(|| {
                AuthError::unauthorized(
                    "the session has expired or the token is not valid; log in again / 会话已过期或令牌无效，请重新登录",
                )
            })
    }

    /// Checks a username and password (argon2id, off the runtime; an unknown user is
    /// checked against a dummy hash so it takes as long), counts failures, and opens a
    /// replicated session. 401 on wrong credentials, 429 with Retry-After when locked out.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<LoginOk, LoginError> {
        let limiter = &self.inner.limiter;
        if let Err(secs) = limiter.check(username, client) {
            return Err(LoginError::Auth(AuthError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "too many failed logins; try again in {secs} s / 登录失败次数过多，请 {secs} 秒后再试"
                ),
                retry_after_secs: Some(secs),
            }));
        }
        let user = self.inner.log.read(|sm| sm.user(username).cloned());
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => dummy_hash().await,
        };
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
            .await
            .unwrap_or(false);
        let user = match user {
            Some(u) if ok => u,
            _ => {
                limiter.fail(username, client);
                tracing::info!(%username, %client, "login refused");
                return Err(LoginError::Auth(AuthError::unauthorized(
                    "wrong username or password / 用户名或密码错误",
                )));
            }
        };
        limiter.succeed(username);
        let token = new_token();
        let at_ms = now_ms();
        let expires_at_ms = at_ms + self.inner.session_ttl.as_millis() as u64;
        self.inner
            .log
            .propose(Command::SessionOpened {
                token_sha256: sha256_hex(&token),
                username: user.username.clone(),
                expires_at_ms,
                at_ms,
            })
            .await
            .map_err(LoginError::Cluster)?;
        tracing::info!(username = %user.username, role = user.role.as_str(), "logged in");
        Ok(LoginOk {
            token,
            expires_at_ms,
            user,
        })
    }

    /// Closes the session the request carries (an API key cannot be logged out).
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), LoginError> {
        let Some(token) = Self::token_from(headers) else {
            return Ok(());
        };
        self.inner
            .log
            .propose(Command::SessionClosed {
                token_sha256: sha256_hex(token),
            })
            .await
            .map(|_| ())
            .map_err(LoginError::Cluster)
    }

    /// Session lifetime, for the cookie's Max-Age.
    pub fn session_ttl(&self) -> Duration {
        self.inner.session_ttl
    }
}

/// Why a login or logout failed: refused, or the log could not commit the session.
#[derive(Debug)]
pub enum LoginError {
    /// 401 or 429.
    Auth(AuthError),
    /// The session could not be committed (no leader, shutting down...).
    Cluster(ClusterError),
}

/// Lets handlers take a [`Principal`] argument: the request is checked with the router
/// state's [`Auth`], and refused with 401 before the handler runs.
impl<S> FromRequestParts<S> for Principal
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Auth::from_ref(state).check(&parts.headers)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of a token or key.
pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token: 32 bytes, base64url without padding.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hashes a password with argon2id (default parameters) and a random salt: a PHC string.
/// CPU-heavy (tens of milliseconds): call it from `spawn_blocking` or [`hash_password_async`].
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| anyhow::anyhow!("cannot encode a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// [`hash_password`] off the async runtime.
pub async fn hash_password_async(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await?
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Whether `hash` is an argon2 PHC string this node can verify against.
pub fn is_password_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// A hash of a random password, verified against for unknown usernames so a login for a
/// user that does not exist costs as much as one that does.
async fn dummy_hash() -> String {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return h.clone();
    }
    let h = hash_password_async(new_token()).await.unwrap_or_default();
    DUMMY.get_or_init(|| h).clone()
}

#[cfg(test)]
mod tests;
