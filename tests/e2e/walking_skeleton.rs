//! The whole path: publish → install → call through the gateway.

use crate::support::Platform;

#[tokio::test]
async fn installed_extension_answers_through_the_gateway() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;

    let response = platform
        .call("acme", "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "guest content-type is passed through"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "Hello, ada!");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["extension"], "com.example.hello");
    assert_eq!(body["version"], "0.1.0");
}

#[tokio::test]
async fn a_tenant_without_the_install_gets_404() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;

    let response = platform
        .call("globex", "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 404);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], request_id);
}

#[tokio::test]
async fn an_endpoint_the_manifest_does_not_declare_is_404() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    let response = platform.call("acme", "com.example.hello", "/secret").await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_callers_request_id_is_echoed() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    let response = platform
        .client
        .get(format!(
            "http://{}/api/ext/com.example.hello/hello/bob",
            platform.gateway
        ))
        .bearer_auth(platform.token("acme"))
        .header("x-request-id", "req-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-abc.123");
}

#[tokio::test]
async fn each_call_leaves_an_execution_log_row_with_what_it_consumed() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    let response = platform
        .call("acme", "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // Read to its end, which carries what the call consumed.
    response.bytes().await.unwrap();

    // The row is written off the response path; wait for it briefly.
    let mut row = None;
    for _ in 0..50 {
        let rows = platform
            .registry
            .recent_executions("acme", Some("com.example.hello"), 10)
            .await
            .unwrap();
        row = rows.into_iter().find(|r| r.request_id == request_id);
        if row.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let row = row.expect("an execution log row for the call");
    // Usage counters follow the row.
    let install_id = row.install_id.clone().unwrap();
    let mut calls = 0;
    for _ in 0..50 {
        calls = platform
            .registry
            .quota_usage(
                &install_id,
                palisade_registry::quota::METRIC_CALLS,
                row.created_at_ms,
            )
            .await
            .unwrap();
        if calls > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(calls, 1);
    assert_eq!(row.status, Some(200));
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.path, "/hello/:name");
    assert!(row.peak_memory_bytes.unwrap_or(0) > 0, "{row:?}");
    let excerpt = row.log_excerpt.unwrap_or_default();
    assert!(
        excerpt.contains("greeting") && excerpt.contains("name=ada"),
        "{excerpt}"
    );
}
