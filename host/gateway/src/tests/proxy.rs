//! Calls that reach a (fake) runner, and the answers and execution-log rows they produce.

use palisade_registry::ExecutionRecord;

use super::fake_runner::FakeRunner;
use super::*;

const EXT: &str = "com.example.hello";

fn manifest(limits: &str) -> String {
    format!(
        r#"{{"id":"{EXT}","name":"Hello","publisher":"Example","version":"1.0.0",
        "runtime":"wasi-http@0.2","component":"hello.wasm",
        "api":{{"endpoints":[
            {{"method":"GET","path":"/items"}},
            {{"method":"POST","path":"/items"}},
            {{"method":"GET","path":"/items/:id"}},
            {{"method":"GET","path":"/trap"}},
            {{"method":"GET","path":"/quota"}},
            {{"method":"GET","path":"/garbage"}},
            {{"method":"GET","path":"/weird"}},
            {{"method":"GET","path":"/slow"}}
        ]}}{limits}}}"#
    )
}

/// A gateway in front of a fake runner, with the extension installed for [`TENANT`].
async fn setup() -> (Harness, FakeRunner, Install) {
    setup_with(|_| {}, "").await
}

async fn setup_with(
    tweak: impl FnOnce(&mut GatewayConfig),
    limits: &str,
) -> (Harness, FakeRunner, Install) {
    let (h, runner) = Harness::with_fake_runner(tweak).await;
    let install = h.install(TENANT, &manifest(limits)).await;
    (h, runner, install)
}

impl Harness {
    fn call(&self, method: &str, uri: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token(TENANT)))
    }

    /// The execution-log rows of [`EXT`], once the background writer has written them;
    /// there must be `count`.
    async fn log_rows(&self, count: usize) -> Vec<ExecutionRecord> {
        self.state.flush_execution_log().await;
        let rows = self
            .registry
            .recent_executions(TENANT, Some(EXT), 100)
            .await
            .unwrap();
        assert_eq!(rows.len(), count, "{rows:?}");
        rows
    }
}

#[tokio::test]
async fn call_is_forwarded_and_the_guest_answer_filtered() {
    let (h, runner, install) = setup().await;
    let reply = h
        .send(
            h.call("POST", &format!("/api/ext/{EXT}/items?x=1&y=%20"))
                .header("content-type", "text/plain")
                .header("x-idempotency-key", "k-1")
                .header("x-request-id", "req-1")
                .header("cookie", "session=secret")
                .header("x-forwarded-for", "10.0.0.1")
                .body(Body::from("payload"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.request_id(), "req-1");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["etag"], "\"v1\"");
    assert_eq!(reply.headers["x-ext-trace"], "t-1");
    for refused in ["set-cookie", "x-powered-by", "x-palisade-stats"] {
        assert!(reply.headers.get(refused).is_none(), "{refused}");
    }
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/items");
    assert_eq!(echo["query"], "x=1&y=%20");
    assert_eq!(echo["body"], "payload");
    assert_eq!(
        echo["headers"],
        serde_json::json!([
            ["content-type", "text/plain"],
            ["x-idempotency-key", "k-1"],
            ["x-request-id", "req-1"]
        ])
    );

    let seen = runner.seen();
    assert_eq!(seen.len(), 1);
    let context = &seen[0].context;
    assert_eq!(context.request_id, "req-1");
    assert_eq!(context.tenant_id, TENANT);
    assert_eq!(context.extension_id, EXT);
    assert_eq!(context.install_id, install.install_id);
    assert_eq!(context.version_id, install.version_id);
    assert!(context.content_hash.starts_with("sha256:"));
    // The manifest's default 10 s deadline is below the gateway's 30 s.
    assert_eq!(seen[0].context.timeout_ms, Some(10_000));

    let rows = h.log_rows(1).await;
    let row = &rows[0];
    assert_eq!(row.request_id, "req-1");
    assert_eq!(row.trigger, "http");
    assert_eq!(row.method, "POST");
    assert_eq!(row.path, "/items");
    assert_eq!(row.status, Some(201));
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.error_code, None);
    assert_eq!(row.install_id.as_deref(), Some(install.install_id.as_str()));
    assert_eq!(
        row.content_hash.as_deref(),
        Some(context.content_hash.as_str())
    );
}

#[tokio::test]
async fn head_reaches_a_get_endpoint_as_get_without_body() {
    let (h, runner, _) = setup().await;
    let reply = h
        .send(
            h.call("HEAD", &format!("/api/ext/{EXT}/items/42"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.body.is_empty());
    let length: usize = reply.headers["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 0);
    assert_eq!(runner.seen()[0].http.method, "GET");
    assert_eq!(runner.seen()[0].http.path, "/items/42");
    let rows = h.log_rows(1).await;
    assert_eq!(rows[0].method, "HEAD");
    assert_eq!(rows[0].path, "/items/:id");
}

#[tokio::test]
async fn undeclared_endpoints_are_404_and_never_forwarded() {
    let (h, runner, _) = setup().await;
    for (method, path) in [
        ("DELETE", "/items"),
        ("GET", "/nope"),
        ("GET", "/items/1/x"),
        ("PUT", "/"),
    ] {
        let reply = h
            .send(
                h.call(method, &format!("/api/ext/{EXT}{path}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert!(runner.seen().is_empty());
    let rows = h.log_rows(4).await;
    assert!(
        rows.iter()
            .all(|r| r.outcome == "rejected" && r.path.is_empty())
    );
    assert!(
        rows.iter()
            .all(|r| r.error_code.as_deref() == Some("not_found"))
    );
}

#[tokio::test]
async fn other_tenants_do_not_see_the_install() {
    let (h, runner, _) = setup().await;
    let reply = h.get_as("globex", &format!("/api/ext/{EXT}/items")).await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(runner.seen().is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let (h, runner, _) = setup_with(|c| c.max_request_bytes = 1024, "").await;
    // Declared too large: refused before reading.
    let reply = h
        .send(
            h.call("POST", &format!("/api/ext/{EXT}/items"))
                .header("content-length", "2048")
                .body(Body::from(vec![b'a'; 2048]))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Undeclared: counted while reading.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![b'a'; 1000])),
        Ok(Bytes::from(vec![b'b'; 100])),
    ];
    let reply = h
        .send(
            h.call("POST", &format!("/api/ext/{EXT}/items"))
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(runner.seen().is_empty());
}

#[tokio::test]
async fn manifest_limits_lower_the_gateway_limits() {
    let limits = r#","limits":{"max_request_bytes":8,"timeout_ms":1500}"#;
    let (h, runner, _) = setup_with(|_| {}, limits).await;
    let reply = h
        .send(
            h.call("POST", &format!("/api/ext/{EXT}/items"))
                .body(Body::from("123456789"))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let reply = h
        .send(
            h.call("POST", &format!("/api/ext/{EXT}/items"))
                .body(Body::from("12345678"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(runner.seen()[0].context.timeout_ms, Some(1500));
}

#[tokio::test]
async fn runner_platform_errors_keep_status_and_code() {
    let (h, _, _) = setup().await;
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/trap")).await;
    reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "trap");
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/quota")).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "over_quota");
    assert_eq!(reply.headers["retry-after"], "7");
    let rows = h.log_rows(2).await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| (r.outcome.as_str(), r.error_code.as_deref(), r.status))
        .collect();
    assert!(
        outcomes.contains(&("trap", Some("trap"), Some(500))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("rejected", Some("over_quota"), Some(429))),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn invalid_runner_replies_are_internal_errors() {
    let (h, _, _) = setup().await;
    for path in ["/garbage"] {
        let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}{path}")).await;
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
        assert!(!String::from_utf8_lossy(&reply.body).contains("execute"));
    }
}

#[tokio::test]
async fn unreachable_runner_is_503() {
    let h = Harness::new(NO_RUNNER).await;
    h.install(TENANT, &manifest("")).await;
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let rows = h.log_rows(1).await;
    assert_eq!(rows[0].outcome, "error");
    assert_eq!(rows[0].error_code.as_deref(), Some("unavailable"));
}

#[tokio::test]
async fn slow_runner_is_504() {
    let (h, _, _) = setup_with(|c| c.request_timeout = Duration::from_millis(100), "").await;
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/slow")).await;
    reply.assert_error(StatusCode::GATEWAY_TIMEOUT, "timeout");
}

#[tokio::test]
async fn refused_service_token_is_internal_not_401() {
    let (h, runner, _) = setup().await;
    // A gateway whose service key the runner does not trust.
    let mut h = h;
    h.service_keys = ServiceKeyPair::generate().unwrap();
    let h = Harness::rebind(h, &runner.url, |_| {});
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await;
    reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(reply.headers.get("www-authenticate").is_none());
    assert!(runner.seen().is_empty());
}
