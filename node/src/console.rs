//! The agent console: the static files of `node/console/` (HTML, ES modules, CSS), embedded in
//! the binary at compile time by `build.rs` and served at `/console/`.
//!
//! The files are public (the page itself asks `/api/v1/auth/me` and shows the login form when
//! it answers 401). Responses carry a content ETag with `Cache-Control: no-cache`, so a browser
//! revalidates each file cheaply (304) and never runs a stale console after an upgrade. The
//! console's page gets a strict Content-Security-Policy (same-origin scripts, styles and
//! connections only; no framing). Paths are looked up in the embedded table, never on disk;
//! `..`, hidden and backslashed segments are refused before the lookup.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

/// Every console file: (path relative to `node/console/`, contents, quoted ETag).
static FILES: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// The console's entry page.
const INDEX: &str = "index.html";

/// Content-Security-Policy of the console's pages: everything from this origin, nothing inline,
/// no framing (clickjacking), WebSocket back to the same host for the phone.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'; object-src 'none'";

/// The routes: `/console` (redirects to `/console/`), `/console/` (the page) and
/// `/console/{path}` (any embedded file). No fallback, so it merges with the API's router.
pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// The embedded file at `path` (relative to the console's root), if it is a safe path.
/// A path ending in `/` names that directory's `index.html`.
fn lookup(path: &str) -> Option<(&'static str, &'static [u8], &'static str)> {
    if !is_safe(path) {
        return None;
    }
    let wanted = if path.is_empty() || path.ends_with('/') {
        format!("{path}{INDEX}")
    } else {
        path.to_string()
    };
    FILES.iter().copied().find(|(name, _, _)| *name == wanted)
}

/// Whether a request path may be looked up: relative, no `.`/`..`/hidden or empty inner
/// segments, no backslash or NUL (the table holds no such names; refusing them early keeps
/// traversal attempts out of logs and lookups alike).
fn is_safe(path: &str) -> bool {
    if path.len() > 512 || path.contains(['\\', '\0']) || path.starts_with('/') {
        return false;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    trimmed.is_empty()
        || trimmed
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.'))
}

/// The Content-Type for a file name, by its extension.
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "md" => "text/markdown; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Answers with the file at `path`, 304 when the browser's copy is current, or 404 JSON.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some((name, bytes, etag)) = lookup(path) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no console file {path:?}") })),
        )
            .into_response();
    };
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::ETAG, HeaderValue::from_static(etag));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if name.rsplit('/').next() == Some(INDEX) {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    (StatusCode::OK, out, bytes).into_response()
}

#[cfg(test)]
mod tests;
