//! Knowledge-base articles (replicated commands) and their search ([`crate::kb::KbIndex`],
//! rebuilt on each node when the articles change).

use super::{ApiError, App, bad, body};
use crate::auth::{Principal, new_token};
use crate::kb::{KbDoc, KbIndex, MAX_LIMIT};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use lingxi_actors::now_ms;
use lingxi_cluster::Command;
use lingxi_cluster::model::{Article, ArticleKind};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Longest title, in characters.
const MAX_TITLE: usize = 200;
/// Longest body, in characters.
const MAX_BODY_CHARS: usize = 20_000;
/// Most tags per article.
const MAX_TAGS: usize = 20;
/// Most articles kept (each search index holds them all in memory).
const MAX_ARTICLES: usize = 10_000;

/// The search index of this node, with the article revision it was built at.
#[derive(Default)]
pub(super) struct KbCache {
    /// `(kb_revision, index)`; `None` until the first search.
    built: Mutex<Option<(u64, Arc<KbIndex>)>>,
}

impl KbCache {
    /// The index for the articles as applied now, rebuilt (off the runtime) if they changed.
    async fn index(&self, app: &App) -> Arc<KbIndex> {
        let revision = app.sw.log().read(|sm| sm.kb_revision());
        if let Some((rev, idx)) = &*self.built.lock()
            && *rev == revision
        {
            return idx.clone();
        }
        let (revision, articles) = app.sw.log().read(|sm| {
            (
                sm.kb_revision(),
                sm.articles().values().cloned().collect::<Vec<_>>(),
            )
        });
        let idx = tokio::task::spawn_blocking(move || {
            Arc::new(KbIndex::build(articles.iter().map(|a| KbDoc {
                id: &a.id,
                title: &a.title,
                body: &a.body,
                tags: &a.tags,
            })))
        })
        .await
        .unwrap_or_default();
        let mut built = self.built.lock();
        if built.as_ref().is_none_or(|(rev, _)| *rev <= revision) {
            *built = Some((revision, idx.clone()));
        }
        idx
    }
}

fn article_json(a: &Article) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind.as_str(),
        "title": a.title,
        "body": a.body,
        "tags": a.tags,
        "lang": a.lang,
        "updated_at_ms": a.updated_at_ms,
        "updated_by": a.updated_by,
    })
}

fn parse_kind(k: &str) -> Result<ArticleKind, ApiError> {
    match k {
        "article" => Ok(ArticleKind::Article),
        "quick_reply" => Ok(ArticleKind::QuickReply),
        other => Err(bad(format!(
            "kind: {other:?} is not one of article, quick_reply"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    q: String,
    kind: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/kb/search?q=&kind=&limit=`: best matches first (every role).
pub(super) async fn search(
    State(app): State<App>,
    _p: Principal,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit: must be 1..={MAX_LIMIT}")));
    }
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let idx = app.kb.index(&app).await;
    // Ask for more when filtering by kind, so the filter still leaves `limit` hits.
    let want = if kind.is_some() { MAX_LIMIT } else { limit };
    let hits = idx.search(&q.q, want);
    let out: Vec<Value> = app.sw.log().read(|sm| {
        hits.iter()
            .filter_map(|h| sm.articles().get(&h.id).map(|a| (h, a)))
            .filter(|(_, a)| kind.is_none_or(|k| a.kind == k))
            .take(limit)
            .map(|(h, a)| {
                json!({
                    "id": a.id,
                    "kind": a.kind.as_str(),
                    "title": a.title,
                    "snippet": h.snippet,
                    "score": h.score,
                })
            })
            .collect()
    });
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    kind: Option<String>,
}

/// `GET /api/v1/kb/articles[?kind=]` (every role).
pub(super) async fn list(
    State(app): State<App>,
    _p: Principal,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(format!("query: {}", e.body_text())))?;
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    Ok(Json(app.sw.log().read(|sm| {
        Value::Array(
            sm.articles()
                .values()
                .filter(|a| kind.is_none_or(|k| a.kind == k))
                .map(article_json)
                .collect(),
        )
    })))
}

/// `GET /api/v1/kb/articles/{id}` (every role).
pub(super) async fn get_one(
    State(app): State<App>,
    _p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.sw
        .log()
        .read(|sm| sm.articles().get(&id).map(article_json))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("article {id} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArticleBody {
    kind: Option<String>,
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
    lang: Option<String>,
}

/// Checks the fields and builds the article (fields not given keep `old`'s values).
fn build(
    b: ArticleBody,
    id: String,
    old: Option<&Article>,
    p: &Principal,
) -> Result<Article, ApiError> {
    let kind = match &b.kind {
        Some(k) => parse_kind(k)?,
        None => old.map_or(ArticleKind::Article, |a| a.kind),
    };
    let title = b
        .title
        .or_else(|| old.map(|a| a.title.clone()))
        .ok_or_else(|| bad("title: required"))?;
    let title = title.trim().to_string();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(bad(format!("title: must be 1-{MAX_TITLE} characters")));
    }
    let text = b
        .body
        .or_else(|| old.map(|a| a.body.clone()))
        .ok_or_else(|| bad("body: required"))?;
    if text.chars().count() > MAX_BODY_CHARS {
        return Err(bad(format!("body: at most {MAX_BODY_CHARS} characters")));
    }
    let tags = b
        .tags
        .or_else(|| old.map(|a| a.tags.clone()))
        .unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(bad(format!("tags: at most {MAX_TAGS}")));
    }
    for (i, t) in tags.iter().enumerate() {
        if t.trim().is_empty() || t.chars().count() > 50 {
            return Err(bad(format!("tags[{i}]: must be 1-50 characters")));
        }
    }
    let lang = match b.lang.or_else(|| old.map(|a| a.lang.clone())) {
        Some(l) if l.is_empty() || l.len() > 16 => {
            return Err(bad("lang: must be a language tag such as zh-CN or en"));
        }
        Some(l) => l,
        // Guess from the text: any CJK ideograph makes it Chinese.
        None if title.chars().chain(text.chars()).any(is_cjk) => "zh-CN".into(),
        None => "en".into(),
    };
    Ok(Article {
        id,
        kind,
        title,
        body: text,
        tags,
        lang,
        updated_at_ms: now_ms(),
        updated_by: p.username.clone(),
    })
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// `POST /api/v1/kb/articles` (supervisor, admin): the id is chosen here.
pub(super) async fn create(
    State(app): State<App>,
    p: Principal,
    b: Result<Json<ArticleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require_supervisor()?;
    let b = body(b)?;
    if app.sw.log().read(|sm| sm.articles().len()) >= MAX_ARTICLES {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("the knowledge base holds {MAX_ARTICLES} articles already"),
        ));
    }
    let id = format!("kb-{}", &new_token()[..12]);
    let article = build(b, id, None, &p)?;
    let v = article_json(&article);
    app.sw
        .log()
        .propose(Command::UpsertArticle(article))
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `PUT /api/v1/kb/articles/{id}` (supervisor, admin): fields given replace the old ones.
pub(super) async fn update(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
    b: Result<Json<ArticleBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    p.require_supervisor()?;
    let b = body(b)?;
    let old = app
        .sw
        .log()
        .read(|sm| sm.articles().get(&id).cloned())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("article {id} not found")))?;
    let article = build(b, id, Some(&old), &p)?;
    let v = article_json(&article);
    app.sw
        .log()
        .propose(Command::UpsertArticle(article))
        .await?;
    Ok(Json(v))
}

/// `DELETE /api/v1/kb/articles/{id}` (supervisor, admin).
pub(super) async fn remove(
    State(app): State<App>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require_supervisor()?;
    if app.sw.log().read(|sm| !sm.articles().contains_key(&id)) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("article {id} not found"),
        ));
    }
    app.sw.log().propose(Command::RemoveArticle { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
