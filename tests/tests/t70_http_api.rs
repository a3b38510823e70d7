//! The management API: errors are JSON naming the problem, the OpenAPI document, metrics, and
//! agents and queues created at run time working for real calls.

use lingxi_tests::{Rtp, TestNode, TestUa, WAIT};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_400_naming_the_problem() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (s, body) = node
        .http(
            "PUT",
            "/api/v1/agents/1001/state",
            Some(("application/json", b"{\"state\": ")),
        )
        .await?;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("error body is not JSON ({e}): {body}"))?;
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "no error message: {body}");
    assert!(
        msg.to_lowercase().contains("json") || msg.contains("EOF") || msg.contains("line"),
        "{msg}"
    );

    // A field of the wrong type is named.
    let (s, v) = node
        .http_put("/api/v1/agents/1001/state", &json!({"state": 5}))
        .await?;
    assert!(s == 400 || s == 422, "wrong field type answered {s} {v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("state"),
        "{v}"
    );
    // An unknown field is named.
    let (s, v) = node
        .http_put(
            "/api/v1/agents/1001/state",
            &json!({"state": "ready", "mood": "happy"}),
        )
        .await?;
    assert!((400..500).contains(&s), "{s} {v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("mood"),
        "{v}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agent_state_is_400() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (s, v) = node
        .http_put("/api/v1/agents/1001/state", &json!({"state": "sleeping"}))
        .await?;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains("state") && msg.contains("sleeping"), "{v}");
    assert_eq!(node.agent_state("1001").await?, "logged_out");
    // Unknown agent: 404, JSON.
    let (s, v) = node
        .http_put("/api/v1/agents/7777/state", &json!({"state": "ready"}))
        .await?;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");
    // Unknown route: 404, JSON.
    let (s, v) = node.http_get("/api/v1/nothing").await?;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_the_routes() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let (s, body) = node.http("GET", "/api/v1/openapi.json", None).await?;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("openapi.json is not JSON: {e}"))?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "openapi version: {}",
        doc["openapi"]
    );
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths"))?;
    for p in [
        "/api/v1/cdrs",
        "/api/v1/agents",
        "/api/v1/agents/{id}/state",
        "/api/v1/queues",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "openapi.json lacks {p}: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_agents_and_queues() -> anyhow::Result<()> {
    let node = TestNode::standard().await?;
    let _agent = node.agent_ua("1001").await?;
    let (s, text) = node.http("GET", "/metrics", None).await?;
    assert_eq!(s, 200);
    assert!(text.contains("lingxi_agents"), "{text}");
    assert!(text.contains("lingxi_queue_depth"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("lingxi_agents{") && l.contains("state=\"ready\"")),
        "no ready-agents gauge: {text}"
    );
    let (s, v) = node.http_get("/healthz").await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_queue_created_by_api_take_a_call() -> anyhow::Result<()> {
    let node = TestNode::start(lingxi_tests::base_config()).await?;
    let (s, v) = node
        .http_post(
            "/api/v1/queues",
            &json!({"id": "sales", "extensions": ["7000"]}),
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    let (s, v) = node
        .http_post(
            "/api/v1/agents",
            &json!({"id": "3001", "password": "secret3001", "skills": {"sales": 3}}),
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    // Bad input is refused with the field named.
    let (s, v) = node
        .http_post("/api/v1/agents", &json!({"id": "3002", "password": "x"}))
        .await?;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("password"),
        "{v}"
    );
    let (s, v) = node
        .http_post(
            "/api/v1/agents",
            &json!({"id": "7000", "password": "longenough"}),
        )
        .await?;
    assert_eq!(s, 409, "an agent may not take a queue's number: {v}");

    let mut agent = TestUa::new("3001", "secret3001", node.sip).await?;
    assert_eq!(agent.register().await?.status, Some(200));
    node.wait_agent_state("3001", "ready", WAIT).await?;
    let (rtp_caller, rtp_agent) = (Rtp::bind().await?, Rtp::bind().await?);
    let mut caller = TestUa::new("dave", "", node.sip).await?;
    let mut a = caller.call("7000", &rtp_caller).await?;
    let b = agent.accept(&rtp_agent, WAIT).await?;
    caller.bye(&mut a).await?;
    agent.wait_bye(&b, WAIT).await?;
    let cdr = node.wait_cdr(&a.call_id, WAIT).await?;
    assert_eq!(cdr["outcome"], "call.completed", "{cdr}");
    assert_eq!(cdr["queue"], "sales", "{cdr}");
    assert_eq!(cdr["agent"], "3001", "{cdr}");
    // CDR query parameters.
    let (s, v) = node.http_get("/api/v1/cdrs?limit=0").await?;
    assert_eq!(s, 400, "{v}");
    let (s, v) = node.http_get("/api/v1/cdrs?limit=1").await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    node.shutdown().await;
    Ok(())
}
