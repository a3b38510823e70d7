//! The HTTP API (`/api/v1`, JSON), its OpenAPI document, `/metrics` and `/healthz`.
//!
//! Reads come from the applied state; writes are commands proposed to the log. Every error is
//! JSON `{"error": "..."}` naming what was wrong.
//!
//! Every route but `/healthz` takes a [`Principal`] (401 without a valid token) and checks its
//! role: admins may do everything; supervisors read everything, set any agent's state and edit
//! the knowledge base; an agent sees and changes only its own agent, calls and CDRs.
//!
//! # Layout
//! - this file: the router, errors, agents, queues, calls, CDRs, cluster membership.
//! - `users`: login, logout, `me`, user management.
//! - `console`: console config, dispositions, screen pop, the supervisor overview.
//! - `kb`: knowledge-base articles and search.

mod console;
mod kb;
mod users;

use crate::auth::{Auth, AuthError, Principal};
use axum::extract::FromRef;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use lingxi_actors::sip::auth;
use lingxi_actors::{ActorError, Switch, now_ms};
use lingxi_cluster::model::{AgentState, Overflow, QueueSpec};
use lingxi_cluster::{ClusterError, Command};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest request body accepted (JSON documents here are small).
const MAX_BODY: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
struct App {
    /// The switch: log, config, actors.
    sw: Arc<Switch>,
    /// Renders `/metrics`.
    prometheus: PrometheusHandle,
    /// Token checks and logins.
    auth: Auth,
    /// The knowledge-base search index, rebuilt when the articles change.
    kb: Arc<kb::KbCache>,
}

impl FromRef<App> for Auth {
    fn from_ref(app: &App) -> Auth {
        app.auth.clone()
    }
}

/// Builds the router.
pub(crate) fn router(sw: Arc<Switch>, prometheus: PrometheusHandle, auth: Auth) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/auth/login", post(users::login))
        .route("/api/v1/auth/logout", post(users::logout))
        .route("/api/v1/auth/me", get(users::me))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::get_one).put(users::update).delete(users::remove),
        )
        .route("/api/v1/console/config", get(console::config))
        .route("/api/v1/calls/{id}/disposition", post(console::disposition))
        .route("/api/v1/calls/{id}/context", get(console::context))
        .route("/api/v1/supervisor/overview", get(console::overview))
        .route("/api/v1/kb/search", get(kb::search))
        .route("/api/v1/kb/articles", get(kb::list).post(kb::create))
        .route(
            "/api/v1/kb/articles/{id}",
            get(kb::get_one).put(kb::update).delete(kb::remove),
        )
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/agents", get(list_agents).post(create_agent))
        .route("/api/v1/agents/{id}", get(get_agent).delete(delete_agent))
        .route("/api/v1/agents/{id}/state", put(set_agent_state))
        .route("/api/v1/queues", get(list_queues).post(create_queue))
        .route("/api/v1/queues/{id}", get(get_queue).delete(delete_queue))
        .route("/api/v1/calls", get(list_calls))
        .route("/api/v1/calls/{id}/fault", post(fault))
        .route("/api/v1/cdrs", get(list_cdrs))
        .route("/api/v1/cluster", get(cluster_status))
        .route("/api/v1/cluster/members", post(add_member))
        .route("/api/v1/cluster/members/{id}", delete(remove_member))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            sw,
            prometheus,
            auth,
            kb: Arc::new(kb::KbCache::default()),
        })
}

/// An API error: status and message.
struct ApiError(StatusCode, String);

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError(e.status, e.message)
    }
}

/// 403 naming what the principal may not do.
fn forbidden(what: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        format!("{what}: not allowed for your role / 无权操作"),
    )
}

/// 403 unless the principal may act for `agent`.
fn own_agent(p: &Principal, agent: &str) -> Result<(), ApiError> {
    if p.may_act_for(agent) {
        Ok(())
    } else {
        Err(forbidden(format!("agent {agent}")))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = match &e {
            ClusterError::UnknownAgent { .. }
            | ClusterError::UnknownQueue { .. }
            | ClusterError::UnknownCall { .. } => StatusCode::NOT_FOUND,
            ClusterError::AgentUnavailable { .. } | ClusterError::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Cluster(c) => c.into(),
            ActorError::NotFound { .. } => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Unwraps a JSON body, turning axum's rejection into our JSON error.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError(e.status(), format!("request body: {}", e.body_text())))
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such route; see /api/v1/openapi.json".into(),
    )
}

async fn healthz(State(app): State<App>) -> Response {
    if app.sw.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    let applied = app.sw.log().read(|sm| sm.applied_index());
    let node = &app.sw.config().node.id;
    match app.sw.log().raft_status() {
        None => {
            Json(json!({"status": "ok", "node": node, "applied_index": applied})).into_response()
        }
        Some(raft) => {
            let body = json!({
                "status": if app.sw.is_fenced() { "fenced" } else { "ok" },
                "node": node,
                "applied_index": applied,
                "raft": {"id": raft.id, "role": raft.role, "leader": raft.leader, "term": raft.term},
            });
            if app.sw.is_fenced() {
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            } else {
                Json(body).into_response()
            }
        }
    }
}

async fn metrics_text(State(app): State<App>, _p: Principal) -> Response {
    // Gauges that describe state are set from the state at scrape time.
    let now = now_ms();
    app.sw.log().read(|sm| {
        let mut by_state: BTreeMap<&str, u64> =
            AgentState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for a in sm.agents().values() {
            *by_state.entry(a.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            metrics::gauge!("lingxi_agents", "state" => state).set(n as f64);
        }
        for q in sm.queues().keys() {
            metrics::gauge!("lingxi_queue_depth", "queue" => q.clone())
                .set(sm.queue_depth(q) as f64);
            metrics::gauge!("lingxi_queue_longest_wait_seconds", "queue" => q.clone())
                .set(sm.longest_wait_ms(q, now) as f64 / 1000.0);
        }
        metrics::gauge!("lingxi_calls_live").set(sm.calls().len() as f64);
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.prometheus.render(),
    )
        .into_response()
}

async fn openapi(_p: Principal) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("http/openapi.json"),
    )
        .into_response()
}

fn agent_json(a: &lingxi_cluster::model::Agent) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "skills": a.skills,
        "state": a.state.as_str(),
        "reason": a.reason,
        "state_since_ms": a.state_since_ms,
        "call_id": a.call_id,
        "calls_answered": a.calls_answered,
        // An ended call whose BYE to this agent's phone is not over yet: offered nothing.
        "leg_to_release": a.leg_to_release.as_ref().map(|l| &l.call_id),
        "registered": a.registration.as_ref().map(|r| json!({
            "contact": r.contact,
            "source": r.peer.to_string(),
            "transport": r.transport.to_string(),
            "expires_at_ms": r.expires_at_ms,
            "user_agent": r.user_agent,
        })),
    })
}

async fn list_agents(State(app): State<App>, p: Principal) -> Json<Value> {
    Json(app.sw.log().read(|sm| {
        Value::Array(
            sm.agents()
                .values()
                .filter(|a| p.may_act_for(&a.id))
                .map(agent_json)
                .collect(),
        )
    }))
}

async fn get_agent(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    own_agent(&p, &id)?;
    app.sw
        .log()
        .read(|sm| sm.agent_by_id(&id).map(agent_json))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("agent {id} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgent {
    id: String,
    name: Option<String>,
    password: String,
    #[serde(default)]
    skills: BTreeMap<String, u8>,
}

fn check_user(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{field}: {v:?} must be 1-64 characters of letters, digits or -_.!~*'()&=+$,"
        )))
    }
}

async fn create_agent(
    State(app): State<App>,
    p: Principal,
    b: Result<Json<NewAgent>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require_admin()?;
    let a = body(b)?;
    check_user("id", &a.id)?;
    if a.password.len() < 4 {
        return Err(bad("password: must be at least 4 characters"));
    }
    for (skill, p) in &a.skills {
        if skill.is_empty() || !(1..=10).contains(p) {
            return Err(bad(format!(
                "skills.{skill}: proficiency must be 1..=10, got {p}"
            )));
        }
    }
    if app.sw.log().read(|sm| sm.queue_for_user(&a.id).is_some()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("id: {} is already a queue id or extension", a.id),
        ));
    }
    let ha1 = auth::ha1(&a.id, &app.sw.config().sip.realm, &a.password);
    let cmd = Command::UpsertAgent {
        id: a.id.clone(),
        name: a.name.unwrap_or_else(|| a.id.clone()),
        ha1,
        skills: a.skills,
        at_ms: now_ms(),
    };
    app.sw.log().propose(cmd).await?;
    let v = app
        .sw
        .log()
        .read(|sm| sm.agent_by_id(&a.id).map(agent_json))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(v)))
}

async fn delete_agent(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require_admin()?;
    app.sw.log().propose(Command::RemoveAgent { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: String,
    reason: Option<String>,
}

async fn set_agent_state(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
    b: Result<Json<StateChange>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    own_agent(&p, &id)?;
    let c = body(b)?;
    let state = match c.state.as_str() {
        "ready" => AgentState::Ready,
        "not_ready" => AgentState::NotReady,
        "logged_out" => AgentState::LoggedOut,
        other => {
            return Err(bad(format!(
                "state: {other:?} is not one of ready, not_ready, logged_out"
            )));
        }
    };
    if c.reason.as_ref().is_some_and(|r| r.len() > 100) {
        return Err(bad("reason: at most 100 characters"));
    }
    app.sw.set_agent_state(&id, state, c.reason).await?;
    get_agent(State(app), p, Path(id)).await
}

fn queue_json(sm: &lingxi_cluster::StateMachine, q: &QueueSpec, now: u64, p: &Principal) -> Value {
    let mut v = json!({
        "id": q.id,
        "name": q.name,
        "extensions": q.extensions,
        "skill": q.skill,
        "min_proficiency": q.min_proficiency,
        "priority": q.priority,
        "ring_timeout_secs": q.ring_timeout_secs,
        "max_wait_secs": q.max_wait_secs,
        "wrapup_secs": q.wrapup_secs,
        "overflow": q.overflow,
        "overflow_when_no_agents": q.overflow_when_no_agents,
        "depth": sm.queue_depth(&q.id),
        "longest_wait_secs": sm.longest_wait_ms(&q.id, now) as f64 / 1000.0,
    });
    // Waiting callers' numbers are for supervisors; agents see the depth only.
    if p.is_supervisor() {
        v["waiting"] = sm.waiting(&q.id).map(|c| json!({"call_id": c.call_id, "caller": c.caller, "priority": c.priority, "arrived_ms": c.arrived_ms})).collect::<Vec<_>>().into();
    }
    v
}

async fn list_queues(State(app): State<App>, p: Principal) -> Json<Value> {
    let now = now_ms();
    Json(app.sw.log().read(|sm| {
        Value::Array(
            sm.queues()
                .values()
                .map(|q| queue_json(sm, q, now, &p))
                .collect(),
        )
    }))
}

async fn get_queue(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    app.sw
        .log()
        .read(|sm| sm.queues().get(&id).map(|q| queue_json(sm, q, now, &p)))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("queue {id} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQueue {
    id: String,
    name: Option<String>,
    #[serde(default)]
    extensions: Vec<String>,
    skill: Option<String>,
    min_proficiency: Option<u8>,
    priority: Option<u8>,
    ring_timeout_secs: Option<u64>,
    max_wait_secs: Option<u64>,
    wrapup_secs: Option<u64>,
    overflow_queue: Option<String>,
    overflow_when_no_agents: Option<bool>,
}

async fn create_queue(
    State(app): State<App>,
    p: Principal,
    b: Result<Json<NewQueue>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require_admin()?;
    let q = body(b)?;
    check_user("id", &q.id)?;
    for (i, e) in q.extensions.iter().enumerate() {
        check_user(&format!("extensions[{i}]"), e)?;
    }
    let acd = &app.sw.config().acd;
    let min_proficiency = q.min_proficiency.unwrap_or(1);
    if !(1..=10).contains(&min_proficiency) {
        return Err(bad("min_proficiency: must be 1..=10"));
    }
    let clash = app.sw.log().read(|sm| {
        let mut names = vec![q.id.clone()];
        names.extend(q.extensions.iter().cloned());
        names.into_iter().find(|n| {
            sm.agent_by_id(n).is_some()
                || sm.queue_for_user(n).is_some_and(|other| other.id != q.id)
        })
    });
    if let Some(n) = clash {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{n} is already an agent id or another queue's number"),
        ));
    }
    let overflow = match &q.overflow_queue {
        Some(t) if t == &q.id => {
            return Err(bad("overflow_queue: a queue cannot overflow into itself"));
        }
        Some(t) => {
            if !app.sw.log().read(|sm| sm.queues().contains_key(t)) {
                return Err(bad(format!("overflow_queue: queue {t} does not exist")));
            }
            Overflow::Queue(t.clone())
        }
        None => Overflow::Hangup,
    };
    let spec = QueueSpec {
        id: q.id.clone(),
        name: q.name.unwrap_or_else(|| q.id.clone()),
        extensions: q.extensions,
        skill: q.skill.unwrap_or_else(|| q.id.clone()),
        min_proficiency,
        priority: q.priority.unwrap_or(5),
        ring_timeout_secs: q.ring_timeout_secs.unwrap_or(acd.ring_timeout_secs).max(1),
        max_wait_secs: q.max_wait_secs.unwrap_or(acd.max_wait_secs).max(1),
        wrapup_secs: q.wrapup_secs.unwrap_or(acd.wrapup_secs),
        not_ready_on_no_answer: acd.not_ready_on_no_answer,
        overflow,
        overflow_when_no_agents: q.overflow_when_no_agents.unwrap_or(true),
    };
    app.sw.log().propose(Command::UpsertQueue(spec)).await?;
    let now = now_ms();
    let v = app
        .sw
        .log()
        .read(|sm| sm.queues().get(&q.id).map(|s| queue_json(sm, s, now, &p)))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(v)))
}

async fn delete_queue(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require_admin()?;
    app.sw.log().propose(Command::RemoveQueue { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A live call as the API shows it.
fn call_json(c: &lingxi_cluster::model::CallRecord) -> Value {
    json!({
                        "call_id": c.call_id,
                        "caller": c.caller,
                        "called": c.called,
                        "queue": c.queue,
                        "agent": c.agent,
                        "phase": c.phase.as_str(),
                        "priority": c.priority,
                        "arrived_ms": c.arrived_ms,
                        "answered_ms": c.answered_ms,
                        "owner": c.owner,
                        "offers": c.offers,
                        "recording": c.recording,
    })
}

/// Whether the principal may see this live call: supervisors all, an agent those offered or
/// assigned to it.
fn may_see_call(p: &Principal, c: &lingxi_cluster::model::CallRecord) -> bool {
    p.is_supervisor() || (c.agent.is_some() && c.agent == p.agent_id)
}

async fn list_calls(State(app): State<App>, p: Principal) -> Json<Value> {
    Json(app.sw.log().read(|sm| {
        Value::Array(
            sm.calls()
                .values()
                .filter(|c| may_see_call(&p, c))
                .map(call_json)
                .collect(),
        )
    }))
}

async fn fault(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require_admin()?;
    if !app.sw.config().debug.fault_injection {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "fault injection is disabled (debug.fault_injection)".into(),
        ));
    }
    if app.sw.inject_call_panic(&id) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("call {id} not found on this node"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CdrQuery {
    limit: Option<usize>,
    since_ms: Option<u64>,
}

/// How many recent CDRs are searched for an agent's own (it sees only those).
const AGENT_CDR_SCAN: usize = 100_000;

async fn list_cdrs(
    State(app): State<App>,
    p: Principal,
    q: Result<Query<CdrQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 100_000 {
        return Err(bad("limit: must be 1..=100000"));
    }
    let cdrs = if p.is_supervisor() {
        app.sw.log().cdrs(limit, q.since_ms)?
    } else {
        let mut own: Vec<_> = app
            .sw
            .log()
            .cdrs(AGENT_CDR_SCAN, q.since_ms)?
            .into_iter()
            .filter(|c| c.agent.is_some() && c.agent == p.agent_id)
            .collect();
        let skip = own.len().saturating_sub(limit);
        own.drain(..skip);
        own
    };
    Ok(Json(serde_json::to_value(cdrs).unwrap_or(Value::Null)))
}

/// `GET /api/v1/cluster`: the cluster as this node's applied state sees it (every node serves
/// the same view, a follower's lagging by the replication delay).
async fn cluster_status(State(app): State<App>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require_supervisor()?;
    let sw = &app.sw;
    let raft = sw.log().raft_status();
    let silence = sw.log().as_raft().map(|r| r.silence()).unwrap_or_default();
    let healthy = !sw.is_shutting_down() && !sw.is_fenced();
    Ok(Json(sw.log().read(|sm| {
        let mut per_node: BTreeMap<&str, u64> =
            sm.members().keys().map(|n| (n.as_str(), 0)).collect();
        for c in sm.calls().values() {
            *per_node.entry(c.owner.as_str()).or_default() += 1;
        }
        let members: Vec<Value> = sm
            .members()
            .values()
            .map(|m| {
                let me = raft.as_ref().is_some_and(|r| r.id == m.raft_id);
                json!({
                    "node": m.node,
                    "raft_id": m.raft_id,
                    "alive": m.alive,
                    "since_ms": m.since_ms,
                    "voter": raft.as_ref().map(|r| r.voters.contains(&m.raft_id)),
                    "last_heard_ms": if me { Some(0) } else {
                        silence.get(&m.raft_id).map(|d| d.as_millis() as u64)
                    },
                    "sip_udp": m.sip_udp.map(|a| a.to_string()),
                    "sip_tcp": m.sip_tcp.map(|a| a.to_string()),
                    "http": m.http.map(|a| a.to_string()),
                    "calls_owned": per_node.get(m.node.as_str()).copied().unwrap_or(0),
                })
            })
            .collect();
        let leader_node = raft.as_ref().and_then(|r| r.leader).and_then(|id| {
            sm.members()
                .values()
                .find(|m| m.raft_id == id)
                .map(|m| m.node.clone())
        });
        let unannounced: Vec<u64> = raft
            .as_ref()
            .map(|r| {
                r.voters
                    .iter()
                    .copied()
                    .filter(|v| !sm.members().values().any(|m| m.raft_id == *v))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "node": sw.config().node.id,
            "mode": if raft.is_some() { "raft" } else { "single" },
            "raft": raft,
            "leader_node": leader_node,
            "members": members,
            "unannounced_voters": unannounced,
            "calls_per_node": per_node,
            "healthy": healthy,
        })
    })))
}

fn raft_of(app: &App) -> Result<&lingxi_cluster::raft::RaftLog, ApiError> {
    app.sw.log().as_raft().ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "this node runs alone (cluster.enabled = false): it has no members to change".into(),
        )
    })
}

/// A membership change that was not applied in time: name what may have happened.
fn conf_error(what: String, e: ClusterError) -> ApiError {
    match e {
        ClusterError::Stopped => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{what}: not applied in time (no leader or no quorum?); it may still be applied, check GET /api/v1/cluster"
            ),
        ),
        other => {
            let ApiError(status, msg) = other.into();
            ApiError(status, format!("{what}: {msg}"))
        }
    }
}

/// Waits (briefly) until the published Raft status shows an applied membership change: it is
/// published after the ready loop's turn, a moment after the change resolves.
async fn settle(
    raft: &lingxi_cluster::raft::RaftLog,
    done: impl Fn(&lingxi_cluster::raft::RaftStatus) -> bool,
) {
    for _ in 0..50 {
        if done(&raft.status()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    id: u64,
    addr: String,
}

/// `POST /api/v1/cluster/members`: adds a voter (forwarded to the leader from any node).
async fn add_member(
    State(app): State<App>,
    p: Principal,
    b: Result<Json<NewMember>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require_admin()?;
    let m = body(b)?;
    let raft = raft_of(&app)?;
    if m.id == 0 {
        return Err(bad("id: a raft id must not be 0"));
    }
    if m.addr
        .rsplit_once(':')
        .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(bad(format!(
            "addr: {:?} is not host:port (the new node's cluster.listen)",
            m.addr
        )));
    }
    let status = raft.status();
    if status.removed {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this node was removed from the cluster; ask another member".into(),
        ));
    }
    if status.voters.contains(&m.id) && status.peers.get(&m.id) == Some(&m.addr) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("raft id {} is already a voter at {}", m.id, m.addr),
        ));
    }
    raft.add_node(m.id, m.addr.clone())
        .await
        .map_err(|e| conf_error(format!("adding raft id {} at {}", m.id, m.addr), e))?;
    tracing::info!(raft_id = m.id, addr = %m.addr, "cluster member added");
    settle(raft, |s| s.voters.contains(&m.id)).await;
    Ok((StatusCode::CREATED, Json(json!({"raft": raft.status()}))))
}

/// `DELETE /api/v1/cluster/members/{id}`: removes a member; the removed node stops serving.
async fn remove_member(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require_admin()?;
    let raft = raft_of(&app)?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad(format!("id: {id:?} is not a raft id (a positive integer)")))?;
    let status = raft.status();
    if !status.voters.contains(&id) && !status.learners.contains(&id) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("raft id {id} is not a member (voters {:?})", status.voters),
        ));
    }
    raft.remove_node(id)
        .await
        .map_err(|e| conf_error(format!("removing raft id {id}"), e))?;
    tracing::info!(raft_id = id, "cluster member removed");
    settle(raft, |s| !s.voters.contains(&id)).await;
    Ok(Json(json!({"raft": raft.status()})))
}
