use super::*;
use axum::body::to_bytes;

async fn get(path: &str, headers: HeaderMap) -> (StatusCode, HeaderMap, Vec<u8>) {
    let r = serve(path, &headers);
    let status = r.status();
    let h = r.headers().clone();
    let body = to_bytes(r.into_body(), 1 << 24).await.expect("body");
    (status, h, body.to_vec())
}

#[test]
fn every_console_file_is_embedded() {
    for name in ["index.html", "app.js", "i18n.js", "style.css"] {
        assert!(
            lookup(name).is_some(),
            "{name} is not embedded: {:?}",
            names()
        );
    }
}

fn names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _, _)| *n).collect()
}

#[test]
fn traversal_and_hidden_paths_are_refused() {
    for bad in [
        "../Cargo.toml",
        "..",
        "a/../index.html",
        "./index.html",
        ".git/config",
        "/etc/passwd",
        "a//b",
        "..\\Cargo.toml",
        "index.html\0",
    ] {
        assert!(!is_safe(bad), "{bad:?} should be refused");
        assert!(lookup(bad).is_none(), "{bad:?} was served");
    }
    assert!(is_safe(""));
    assert!(is_safe("app.js"));
    assert!(is_safe("sub/dir/"));
}

#[test]
fn content_types_follow_extensions() {
    assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
    assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
    assert_eq!(content_type("x.PNG"), "image/png");
    assert_eq!(content_type("LICENSE"), "application/octet-stream");
}

#[tokio::test]
async fn index_is_served_with_csp_and_etag() {
    let (status, h, body) = get("", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(h.contains_key(header::CONTENT_SECURITY_POLICY), "{h:?}");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert!(String::from_utf8_lossy(&body).contains("app.js"));

    // Revalidation with the ETag answers 304 without a body.
    let mut again = HeaderMap::new();
    again.insert(header::IF_NONE_MATCH, h[header::ETAG].clone());
    let (status, _, body) = get("index.html", again).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
}

#[tokio::test]
async fn scripts_have_a_javascript_type_and_unknown_files_404() {
    let (status, h, _) = get("app.js", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
    let (status, _, body) = get("nope.js", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("nope.js"));
    let (status, _, _) = get("../Cargo.toml", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
