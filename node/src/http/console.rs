//! What the agent console and the supervisor view need beyond the plain resources: the
//! configured codes, dispositions, the screen pop and the live overview.

use super::{ApiError, App, bad, body, call_json, forbidden};
use crate::auth::Principal;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use lingxi_actors::now_ms;
use lingxi_cluster::Command;
use lingxi_cluster::model::{AgentState, Cdr};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Recent CDRs searched for a call's CDR or a caller's history.
const CDR_SCAN: usize = 20_000;
/// Earlier interactions shown in a screen pop.
const HISTORY: usize = 20;
/// Longest note, in characters.
const MAX_NOTE: usize = 2000;
/// Service-level target of a queue that `[[queues]]` does not configure (created by API).
const DEFAULT_SERVICE_LEVEL_SECS: u64 = 20;
/// A registration whose User-Agent starts with this is the web gateway's (a browser agent).
const WEB_USER_AGENT: &str = "Lingxi-Web";

/// `GET /api/v1/console/config`: not-ready reasons and disposition codes, both languages.
pub(super) async fn config(State(app): State<App>, _p: Principal) -> Json<Value> {
    let c = &app.sw.config().console;
    let list = |l: &[lingxi_config::LabelledCode]| -> Vec<Value> {
        l.iter()
            .map(|c| json!({"code": c.code, "label_en": c.label_en, "label_zh": c.label_zh}))
            .collect()
    };
    Json(json!({
        "not_ready_reasons": list(&c.not_ready_reasons),
        "dispositions": list(&c.dispositions),
    }))
}

/// The CDR of an ended call, among the recent ones.
fn find_cdr(app: &App, call_id: &str) -> Result<Option<Cdr>, ApiError> {
    Ok(app
        .sw
        .log()
        .cdrs(CDR_SCAN, None)?
        .into_iter()
        .rev()
        .find(|c| c.call_id == call_id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DispositionBody {
    disposition: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    ready: bool,
}

/// `POST /api/v1/calls/{id}/disposition`: the call's agent, a supervisor or an admin records
/// the outcome and a note on the call's CDR; `ready: true` ends the agent's wrap-up.
pub(super) async fn disposition(
    State(app): State<App>,
    p: Principal,
    Path(call_id): Path<String>,
    b: Result<Json<DispositionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let codes = &app.sw.config().console.dispositions;
    if !codes.iter().any(|c| c.code == b.disposition) {
        return Err(bad(format!(
            "disposition: {:?} is not one of {}",
            b.disposition,
            codes
                .iter()
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if b.note.chars().count() > MAX_NOTE {
        return Err(bad(format!("note: at most {MAX_NOTE} characters")));
    }
    let live_agent = app
        .sw
        .log()
        .read(|sm| sm.call(&call_id).map(|c| c.agent.clone()));
    let agent = match live_agent {
        Some(agent) => agent,
        None => {
            find_cdr(&app, &call_id)?
                .ok_or_else(|| {
                    ApiError(StatusCode::NOT_FOUND, format!("call {call_id} not found"))
                })?
                .agent
        }
    };
    if !p.is_supervisor() && (agent.is_none() || agent != p.agent_id) {
        return Err(forbidden(format!("call {call_id}")));
    }
    app.sw
        .log()
        .propose(Command::SetDisposition {
            call_id: call_id.clone(),
            disposition: b.disposition.clone(),
            note: b.note.clone(),
            by: p.username.clone(),
            ready_agent: if b.ready { agent.clone() } else { None },
            at_ms: now_ms(),
        })
        .await?;
    Ok(Json(json!({
        "call_id": call_id,
        "disposition": b.disposition,
        "note": b.note,
        "by": p.username,
        "agent": agent,
    })))
}

/// `GET /api/v1/calls/{id}/context`: the screen pop — the call, its caller and the caller's
/// earlier interactions (CDRs with dispositions and notes), newest first.
pub(super) async fn context(
    State(app): State<App>,
    p: Principal,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = app.sw.log().read(|sm| sm.call(&call_id).cloned());
    let cdrs = app.sw.log().cdrs(CDR_SCAN, None)?;
    let (call, caller, agent) = match &live {
        Some(c) => (call_json(c), c.caller.clone(), c.agent.clone()),
        None => {
            let cdr = cdrs
                .iter()
                .rev()
                .find(|c| c.call_id == call_id)
                .ok_or_else(|| {
                    ApiError(StatusCode::NOT_FOUND, format!("call {call_id} not found"))
                })?;
            (
                serde_json::to_value(cdr).unwrap_or(Value::Null),
                cdr.caller.clone(),
                cdr.agent.clone(),
            )
        }
    };
    if !p.is_supervisor() && (agent.is_none() || agent != p.agent_id) {
        return Err(forbidden(format!("call {call_id}")));
    }
    let history: Vec<&Cdr> = cdrs
        .iter()
        .rev()
        .filter(|c| c.caller == caller && c.call_id != call_id)
        .take(HISTORY)
        .collect();
    Ok(Json(json!({
        "call": call,
        "caller": {"number": caller, "previous_calls": history.len()},
        "history": history,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverviewQuery {
    since_ms: Option<u64>,
}

/// Start of the current UTC day.
fn utc_midnight(now: u64) -> u64 {
    now - now % 86_400_000
}

/// `GET /api/v1/supervisor/overview[?since_ms=]` (supervisor, admin): queues with depth,
/// longest wait and the day's service level (answered within the queue's target / answered;
/// the day starts at `since_ms`, by default UTC midnight — the console passes local midnight),
/// agents with state and whether they are web agents, and live calls.
pub(super) async fn overview(
    State(app): State<App>,
    p: Principal,
    q: Result<Query<OverviewQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    p.require_supervisor()?;
    let Query(q) = q.map_err(|e| bad(format!("query: {}", e.body_text())))?;
    let now = now_ms();
    let since = q.since_ms.unwrap_or_else(|| utc_midnight(now));
    let cdrs = app.sw.log().cdrs(100_000, Some(since))?;
    let config = app.sw.config();
    // Per queue: (answered, answered within target, abandoned).
    let mut day: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let target = |queue: &str| -> u64 {
        config
            .queues
            .iter()
            .find(|c| c.id == queue)
            .map_or(DEFAULT_SERVICE_LEVEL_SECS, |c| c.service_level_secs)
            * 1000
    };
    for c in &cdrs {
        let Some(queue) = c.queue.as_deref() else {
            continue;
        };
        let e = day.entry(queue).or_default();
        if let Some(ans) = c.answered_ms {
            e.0 += 1;
            if ans.saturating_sub(c.arrived_ms) <= target(queue) {
                e.1 += 1;
            }
        } else if c.outcome == "queue.abandoned" {
            e.2 += 1;
        }
    }
    let v = app.sw.log().read(|sm| {
        let queues: Vec<Value> = sm
            .queues()
            .values()
            .map(|spec| {
                let (answered, within, abandoned) =
                    day.get(spec.id.as_str()).copied().unwrap_or_default();
                let ready = sm
                    .agents()
                    .values()
                    .filter(|a| {
                        a.state == AgentState::Ready
                            && a.registration.is_some()
                            && a.skills
                                .get(&spec.skill)
                                .is_some_and(|p| *p >= spec.min_proficiency)
                    })
                    .count();
                json!({
                    "id": spec.id,
                    "name": spec.name,
                    "waiting": sm.queue_depth(&spec.id),
                    "longest_wait_ms": sm.longest_wait_ms(&spec.id, now),
                    "service_level_pct": if answered == 0 { Value::Null } else {
                        json!((within as f64 * 1000.0 / answered as f64).round() / 10.0)
                    },
                    "service_level_secs": target(&spec.id) / 1000,
                    "answered": answered,
                    "abandoned": abandoned,
                    "agents_ready": ready,
                })
            })
            .collect();
        let agents: Vec<Value> = sm
            .agents()
            .values()
            .map(|a| {
                json!({
                    "id": a.id,
                    "name": a.name,
                    "state": a.state.as_str(),
                    "reason": a.reason,
                    "since_ms": a.state_since_ms,
                    "call_id": a.call_id,
                    "web": a.registration.as_ref().and_then(|r| r.user_agent.as_deref())
                        .is_some_and(|ua| ua.starts_with(WEB_USER_AGENT)),
                })
            })
            .collect();
        let calls: Vec<Value> = sm
            .calls()
            .values()
            .map(|c| {
                json!({
                    "call_id": c.call_id,
                    "caller": c.caller,
                    "queue": c.queue,
                    "agent": c.agent,
                    "phase": c.phase.as_str(),
                    "owner": c.owner,
                    "started_ms": c.arrived_ms,
                    "answered_ms": c.answered_ms,
                })
            })
            .collect();
        json!({"queues": queues, "agents": agents, "calls": calls, "since_ms": since, "now_ms": now})
    });
    Ok(Json(v))
}
