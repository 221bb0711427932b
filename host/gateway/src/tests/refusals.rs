//! Calls the gateway refuses before reaching a runner.

use super::*;

#[tokio::test]
async fn refused_callers_get_401_with_challenge_and_request_id() {
    let h = Harness::new(NO_RUNNER).await;
    let other = ServiceKeyPair::generate().unwrap();
    let exp = now() + 300;
    let valid = serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "tenant": TENANT});
    let mut expired = valid.clone();
    expired["exp"] = serde_json::json!(now() - 600);
    let mut wrong_aud = valid.clone();
    wrong_aud["aud"] = serde_json::json!("someone-else");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("malformed token", Some("Bearer not-a-jwt".to_owned())),
        (
            "wrong key",
            Some(format!("Bearer {}", sign(&other, valid.clone()))),
        ),
        (
            "expired",
            Some(format!("Bearer {}", sign(&h.caller_keys, expired))),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", sign(&h.caller_keys, wrong_aud))),
        ),
    ];
    for (name, authorization) in cases {
        let mut request = Request::get("/api/ext/com.example.hello/items");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let reply = h.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        let expected = match name {
            "missing header" => "Bearer",
            "not bearer" => "Bearer error=\"invalid_request\"",
            _ => "Bearer error=\"invalid_token\"",
        };
        assert_eq!(challenge, expected, "{name}");
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(uuid::Uuid::parse_str(reply.request_id()).is_ok(), "{name}");
    }
}

#[tokio::test]
async fn caller_request_id_is_echoed_when_valid() {
    let h = Harness::new(NO_RUNNER).await;
    let reply = h
        .send(
            Request::get("/api/ext/com.example.hello/")
                .header("x-request-id", "trace-42.a_b")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.request_id(), "trace-42.a_b");
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let reply = h
        .send(
            Request::get("/api/ext/com.example.hello")
                .header("x-request-id", "no spaces allowed")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(uuid::Uuid::parse_str(reply.request_id()).is_ok());
}

#[tokio::test]
async fn tenant_without_install_gets_404() {
    let h = Harness::new(NO_RUNNER).await;
    for uri in [
        "/api/ext/com.example.hello/items",
        "/api/ext/com.example.hello",
        "/api/ext/com.example.hello/",
    ] {
        let reply = h.get_as(TENANT, uri).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
        assert!(reply.headers.get("www-authenticate").is_none());
    }
}

#[tokio::test]
async fn unknown_routes_get_json_404_with_request_id() {
    let h = Harness::new(NO_RUNNER).await;
    for uri in ["/", "/api/ext", "/api/ext/", "/nope"] {
        let reply = h
            .send(Request::post(uri).body(Body::empty()).unwrap())
            .await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn healthz_answers() {
    let h = Harness::new(NO_RUNNER).await;
    let reply = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_names_the_failing_check() {
    let h = Harness::new(NO_RUNNER).await;
    let readyz = || h.send(Request::get("/readyz").body(Body::empty()).unwrap());
    let reply = readyz().await;
    assert_eq!(
        reply.json()["checks"],
        serde_json::json!({"database": "ok", "trust_set": "ok", "object_store": "ok"})
    );
    // The object store's directory replaced by a file.
    let objects = h._dir.path().join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let reply = readyz().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["object_store"], "failing");
    assert_eq!(body["checks"]["database"], "ok");
    // Liveness is another question.
    let reply = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = palisade_registry::testing::open(dir.path()).await;
    let keys = ServiceKeyPair::generate().unwrap();
    let minter = || TokenMinter::from_pem(keys.private_pem.as_bytes()).unwrap();
    let config = GatewayConfig::new(NO_RUNNER, CallerAuthConfig::new(ISS, AUD, "junk"));
    let err = GatewayState::new(config, registry.clone(), minter()).unwrap_err();
    assert!(err.to_string().starts_with("caller_auth:"), "{err}");
    let config = GatewayConfig::new(
        "ftp://runner",
        CallerAuthConfig::new(ISS, AUD, keys.public_pem.clone()),
    );
    let err = GatewayState::new(config, registry, minter()).unwrap_err();
    assert!(err.to_string().contains("runner_url"), "{err}");
}
