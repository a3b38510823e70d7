//! Login, logout, `me` and user management (admin only).

use super::{ApiError, App, bad, body, check_user};
use crate::auth::{
    LoginError, Principal, Role, SESSION_COOKIE, hash_password_async, is_password_hash,
};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lingxi_actors::now_ms;
use lingxi_cluster::Command;
use lingxi_cluster::model::User;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Shortest password accepted for a user.
const MIN_PASSWORD: usize = 8;

/// A user as the API shows it (never the hash).
pub(super) fn user_json(u: &User) -> Value {
    json!({
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role.as_str(),
        "agent_id": u.agent_id,
        "created_ms": u.created_ms,
        "updated_ms": u.updated_ms,
    })
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Auth(a) => ApiError(a.status, a.message),
            LoginError::Cluster(c) => c.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/v1/auth/login`: a token and the session cookie, 401 or 429.
pub(super) async fn login(
    State(app): State<App>,
    ext: axum::http::Extensions,
    b: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, Response> {
    let l = body(b).map_err(IntoResponse::into_response)?;
    if l.username.is_empty() || l.username.len() > 64 || l.password.len() > 1024 {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong username or password / 用户名或密码错误".into(),
        )
        .into_response());
    }
    let client = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let ok = match app.auth.login(&l.username, &l.password, client).await {
        Ok(ok) => ok,
        Err(LoginError::Auth(a)) => return Err(a.into_response()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ok.token,
        app.auth.session_ttl().as_secs()
    );
    let mut r = Json(json!({
        "token": ok.token,
        "expires_at_ms": ok.expires_at_ms,
        "user": user_json(&ok.user),
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// `POST /api/v1/auth/logout`: closes the session and clears the cookie.
pub(super) async fn logout(
    State(app): State<App>,
    _p: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.auth.logout(&headers).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lingxi_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(r)
}

/// `GET /api/v1/auth/me`: who the token belongs to.
pub(super) async fn me(State(app): State<App>, p: Principal) -> Json<Value> {
    let user = app.sw.log().read(|sm| sm.user(&p.username).map(user_json));
    Json(user.unwrap_or_else(|| {
        json!({
            "username": p.username,
            "display_name": p.username,
            "role": p.role.as_str(),
            "agent_id": p.agent_id,
        })
    }))
}

/// `GET /api/v1/users` (admin).
pub(super) async fn list(State(app): State<App>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require_admin()?;
    Ok(Json(app.sw.log().read(|sm| {
        Value::Array(sm.users().values().map(user_json).collect())
    })))
}

/// `GET /api/v1/users/{username}` (admin, or the user itself).
pub(super) async fn get_one(
    State(app): State<App>,
    p: Principal,
    Path(username): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if p.username != username {
        p.require_admin()?;
    }
    app.sw
        .log()
        .read(|sm| sm.user(&username).map(user_json))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user {username} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserBody {
    username: Option<String>,
    display_name: Option<String>,
    role: Option<String>,
    agent_id: Option<String>,
    password: Option<String>,
    password_hash: Option<String>,
}

fn parse_role(r: &str) -> Result<Role, ApiError> {
    Role::parse(r).ok_or_else(|| {
        bad(format!(
            "role: {r:?} is not one of admin, supervisor, agent"
        ))
    })
}

/// The password hash for a new or changed password: hashed here (off the runtime) from
/// `password`, or a ready argon2 PHC string from `lingxi auth hash-password`.
async fn new_hash(b: &UserBody) -> Result<Option<String>, ApiError> {
    match (&b.password, &b.password_hash) {
        (Some(_), Some(_)) => Err(bad("give password or password_hash, not both")),
        (Some(pw), None) => {
            if pw.chars().count() < MIN_PASSWORD || pw.len() > 1024 {
                return Err(bad(format!(
                    "password: must be {MIN_PASSWORD}-1024 characters"
                )));
            }
            hash_password_async(pw.clone())
                .await
                .map(Some)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        (None, Some(h)) => {
            if is_password_hash(h) {
                Ok(Some(h.clone()))
            } else {
                Err(bad(
                    "password_hash: not an argon2 PHC string (see `lingxi auth hash-password`)",
                ))
            }
        }
        (None, None) => Ok(None),
    }
}

fn check_agent(app: &App, role: Role, agent_id: &Option<String>) -> Result<(), ApiError> {
    match agent_id {
        None if role == Role::Agent => Err(bad("agent_id: required for a user of role agent")),
        Some(a) if !app.sw.log().read(|sm| sm.agent_by_id(a).is_some()) => {
            Err(bad(format!("agent_id: agent {a} does not exist")))
        }
        _ => Ok(()),
    }
}

/// `POST /api/v1/users` (admin): {username, display_name?, role, agent_id?, password}.
pub(super) async fn create(
    State(app): State<App>,
    p: Principal,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require_admin()?;
    let b = body(b)?;
    let username = b
        .username
        .clone()
        .ok_or_else(|| bad("username: required"))?;
    check_user("username", &username)?;
    let role = parse_role(b.role.as_deref().ok_or_else(|| bad("role: required"))?)?;
    check_agent(&app, role, &b.agent_id)?;
    if app.sw.log().read(|sm| sm.user(&username).is_some()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("username: {username} exists already"),
        ));
    }
    let password_hash = new_hash(&b)
        .await?
        .ok_or_else(|| bad("password: required"))?;
    let display_name = b.display_name.clone().unwrap_or_else(|| username.clone());
    if display_name.chars().count() > 100 {
        return Err(bad("display_name: at most 100 characters"));
    }
    app.sw
        .log()
        .propose(Command::UpsertUser {
            username: username.clone(),
            display_name,
            role,
            agent_id: b.agent_id.clone(),
            password_hash,
            create_only: true,
            at_ms: now_ms(),
        })
        .await?;
    tracing::info!(by = %p.username, %username, role = role.as_str(), "user created");
    let v = app
        .sw
        .log()
        .read(|sm| sm.user(&username).map(user_json))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(v)))
}

/// `PUT /api/v1/users/{username}`: admins change anything; a user may change only its own
/// display name and password.
pub(super) async fn update(
    State(app): State<App>,
    p: Principal,
    Path(username): Path<String>,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let is_self = p.username == username;
    if !is_self || b.role.is_some() || b.agent_id.is_some() {
        p.require_admin()?;
    }
    if b.username.as_ref().is_some_and(|u| *u != username) {
        return Err(bad(
            "username: cannot be changed (delete and create instead)",
        ));
    }
    let old = app
        .sw
        .log()
        .read(|sm| sm.user(&username).cloned())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user {username} not found")))?;
    let role = match &b.role {
        Some(r) => parse_role(r)?,
        None => old.role,
    };
    let agent_id = match &b.agent_id {
        Some(a) if a.is_empty() => None,
        Some(a) => Some(a.clone()),
        None => old.agent_id.clone(),
    };
    check_agent(&app, role, &agent_id)?;
    let password_hash = new_hash(&b).await?.unwrap_or(old.password_hash);
    let display_name = b.display_name.clone().unwrap_or(old.display_name);
    if display_name.chars().count() > 100 {
        return Err(bad("display_name: at most 100 characters"));
    }
    app.sw
        .log()
        .propose(Command::UpsertUser {
            username: username.clone(),
            display_name,
            role,
            agent_id,
            password_hash,
            create_only: false,
            at_ms: now_ms(),
        })
        .await?;
    tracing::info!(by = %p.username, %username, "user changed");
    app.sw
        .log()
        .read(|sm| sm.user(&username).map(user_json))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user {username} not found")))
}

/// `DELETE /api/v1/users/{username}` (admin); its sessions close.
pub(super) async fn remove(
    State(app): State<App>,
    p: Principal,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require_admin()?;
    if app.sw.log().read(|sm| sm.user(&username).is_none()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("user {username} not found"),
        ));
    }
    app.sw
        .log()
        .propose(Command::RemoveUser {
            username: username.clone(),
        })
        .await?;
    tracing::info!(by = %p.username, %username, "user removed");
    Ok(StatusCode::NO_CONTENT)
}
