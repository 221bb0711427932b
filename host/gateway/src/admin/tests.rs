//! Router-level tests of the admin API's gatekeeping; the operations themselves are
//! exercised end to end in the workspace's e2e tests.

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;

use super::admin_route_list;
use crate::tests::{Harness, NO_RUNNER};

const TOKEN: &str = "admin-token-for-tests";

/// A gateway's router with the admin API behind `admin_token` (off without one), and the
/// test harness that keeps its registry.
async fn router(admin_token: Option<&str>) -> (Harness, Router) {
    let h = Harness::with_config(NO_RUNNER, |config| {
        config.admin_token = admin_token.map(str::to_owned);
    })
    .await;
    let app = h.app.clone();
    (h, app)
}

/// A concrete URI for a route template.
fn concrete(path: &str) -> String {
    path.replace("{tenant_id}", "acme")
        .replace("{extension_id}", "com.example.none")
        .replace("{name}", "api_key")
}

async fn status_and_json(
    app: &Router,
    method: &http::Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_route_refuses_missing_and_wrong_tokens() {
    let (_dir, app) = router(Some(TOKEN)).await;
    for (method, path) in admin_route_list() {
        let uri = concrete(path);
        for token in [None, Some("wrong"), Some("admin-token-for-test")] {
            let (status, json) = status_and_json(&app, &method, &uri, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert_eq!(json["error"], "unauthorized");
            assert!(json["message"].is_string(), "{json}");
        }
    }
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_not_there() {
    let (_dir, app) = router(None).await;
    for (method, path) in admin_route_list() {
        let uri = concrete(path);
        let (status, json) = status_and_json(&app, &method, &uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(json["error"], "not_found");
    }
}

#[tokio::test]
async fn the_right_token_reaches_the_handlers() {
    let (_dir, app) = router(Some(TOKEN)).await;
    let (status, json) = status_and_json(
        &app,
        &http::Method::GET,
        "/admin/v1/extensions",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, serde_json::json!([]));
    let (status, json) = status_and_json(
        &app,
        &http::Method::GET,
        "/admin/v1/extensions/com.example.none",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("com.example.none")
    );
}

#[tokio::test]
async fn secrets_need_their_configuration_and_publishing_the_registrys_trust_set() {
    let (_dir, app) = router(Some(TOKEN)).await;
    // Publishing verifies against the registry's trust set: no gateway setting is needed,
    // so a request without a signature is refused for what it lacks.
    let (status, json) = status_and_json(
        &app,
        &http::Method::POST,
        "/admin/v1/extensions",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"], "bad_request");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("x-palisade-signature")
    );
    let (status, _) = status_and_json(
        &app,
        &http::Method::PUT,
        "/admin/v1/tenants/acme/installs/com.example.none/secrets/api_key",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn bad_json_is_a_400_naming_the_field() {
    let (_dir, app) = router(Some(TOKEN)).await;
    let request = Request::put("/admin/v1/tenants/acme/installs/com.example.none")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"approve": ["log", "teleport"]}"#))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("approve[1]"), "{message}");
    assert!(message.contains("teleport"), "{message}");
}

#[tokio::test]
async fn an_oversized_bundle_is_a_413() {
    let (h, app) = router(Some(TOKEN)).await;
    // A gateway that can publish, so that the size check is what answers.
    let publisher = palisade_bundle::SigningKey::generate().unwrap();
    h.registry.trust_key(publisher.public_key()).await.unwrap();
    let request = Request::post("/admin/v1/extensions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-palisade-signature", "c2ln")
        .header("content-length", (super::MAX_BUNDLE_BYTES + 1).to_string())
        .body(Body::from("small"))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "too_large");
    assert!(json["message"].as_str().unwrap().contains("bundle"));
}
