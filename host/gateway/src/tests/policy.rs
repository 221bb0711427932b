//! The request policies in front of the runner: caller keys, per-install rate limit,
//! CORS and idempotent replay.

use std::path::PathBuf;

use http::HeaderValue;

use super::fake_runner::FakeRunner;
use super::*;
use crate::jwks::{CallerKey, CallerKeyAlgorithm};
use crate::ratelimit::RateLimitConfig;

const EXT: &str = "com.example.policy";
const ORIGIN: &str = "https://app.example";
const SECRET: &[u8] = b"an HS256 secret of thirty-two or more bytes";

const MANIFEST: &str = r#"{"id":"com.example.policy","name":"Policy","publisher":"Example",
    "version":"1.0.0","runtime":"wasi-http@0.2","component":"policy.wasm",
    "api":{"endpoints":[
        {"method":"GET","path":"/items"},
        {"method":"POST","path":"/items"},
        {"method":"POST","path":"/trap"}
    ]}}"#;

/// A gateway configured by `tweak` in front of a fake runner, with [`EXT`] installed for
/// [`TENANT`].
async fn setup(tweak: impl FnOnce(&mut GatewayConfig)) -> (Harness, FakeRunner) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&RegistryConfig {
        database_url: format!("sqlite://{}", dir.path().join("registry.db").display()),
        object_store_dir: dir.path().join("objects"),
    })
    .await
    .unwrap();
    let caller_keys = ServiceKeyPair::generate().unwrap();
    let service_keys = ServiceKeyPair::generate().unwrap();
    let runner = FakeRunner::start(&service_keys.public_pem).await;
    let mut config = GatewayConfig::new(
        &runner.url,
        CallerAuthConfig::new(ISS, AUD, caller_keys.public_pem.clone()),
    );
    tweak(&mut config);
    let minter = TokenMinter::from_pem(service_keys.private_pem.as_bytes()).unwrap();
    let state = Arc::new(GatewayState::new(config, registry.clone(), minter).unwrap());
    let h = Harness {
        _dir: dir,
        registry,
        caller_keys,
        service_keys,
        app: app(state.clone()),
        state,
    };
    h.install(TENANT, MANIFEST).await;
    (h, runner)
}

fn call(h: &Harness, method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("/api/ext/{EXT}{path}"))
        .header("authorization", format!("Bearer {}", h.token(TENANT)))
}

async fn post_with_key(h: &Harness, path: &str, key: &str, body: &str) -> Reply {
    h.send(
        call(h, "POST", path)
            .header("x-idempotency-key", key)
            .body(Body::from(body.to_owned()))
            .unwrap(),
    )
    .await
}

fn hs256_token(secret: &[u8], kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() + 60, "tenant": TENANT});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn get_with_token(h: &Harness, token: &str) -> Reply {
    h.send(
        Request::get(format!("/api/ext/{EXT}/items"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn configured_hs256_and_jwks_keys_authenticate_callers() {
    let dir = tempfile::tempdir().unwrap();
    let jwks: PathBuf = dir.path().join("jwks.json");
    // base64url("a JWKS secret that is long enough!!")
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"oct","kid":"j1","k":"YSBKV0tTIHNlY3JldCB0aGF0IGlzIGxvbmcgZW5vdWdoISE"}]}"#,
    )
    .unwrap();
    let (h, runner) = setup(|config| {
        config
            .caller_auth
            .keys
            .push(CallerKey::hs256_secret(SECRET).with_kid("k1"));
        config.caller_auth.jwks_path = Some(jwks.clone());
    })
    .await;
    let reply = get_with_token(&h, &hs256_token(SECRET, Some("k1"))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let reply = get_with_token(&h, &hs256_token(SECRET, None)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = get_with_token(
        &h,
        &hs256_token(b"a JWKS secret that is long enough!!", Some("j1")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // The EdDSA key of `CallerAuthConfig::new` still works next to them.
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(runner.seen().len(), 4);

    let wrong = b"not the configured secret, though long enough";
    for token in [hs256_token(wrong, Some("k1")), hs256_token(wrong, None)] {
        let reply = get_with_token(&h, &token).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            reply.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    assert_eq!(runner.seen().len(), 4);
}

#[tokio::test]
async fn unusable_key_configuration_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&RegistryConfig {
        database_url: format!("sqlite://{}", dir.path().join("registry.db").display()),
        object_store_dir: dir.path().join("objects"),
    })
    .await
    .unwrap();
    let service_keys = ServiceKeyPair::generate().unwrap();
    let minter = TokenMinter::from_pem(service_keys.private_pem.as_bytes()).unwrap();
    let mut auth = CallerAuthConfig::new(ISS, AUD, "unused");
    auth.keys = vec![CallerKey::pem(CallerKeyAlgorithm::Rs256, "not a pem")];
    let err = GatewayState::new(GatewayConfig::new(NO_RUNNER, auth), registry, minter).unwrap_err();
    assert!(err.to_string().contains("keys[0] (RS256)"), "{err}");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_before_the_runner() {
    let (h, runner) = setup(|config| {
        config.rate_limit = RateLimitConfig {
            per_second: 0.5,
            burst: 2,
            ..RateLimitConfig::default()
        };
    })
    .await;
    let uri = format!("/api/ext/{EXT}/items");
    for _ in 0..2 {
        assert_eq!(h.get_as(TENANT, &uri).await.status, StatusCode::CREATED);
    }
    let reply = h.get_as(TENANT, &uri).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "over_quota");
    // 1 token at 0.5 a second: at most 2 s away.
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(runner.seen().len(), 2);

    // Another tenant's install has its own bucket.
    h.install("globex", MANIFEST).await;
    assert_eq!(h.get_as("globex", &uri).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn cors_preflight_and_headers_only_for_configured_origins() {
    let (h, runner) = setup(|config| {
        config.cors_allowed_origins = vec![ORIGIN.to_owned()];
    })
    .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri(format!("/api/ext/{EXT}/items"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let reply = h.send(preflight(ORIGIN)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(reply.headers["access-control-allow-credentials"], "true");
    assert!(
        reply.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        reply.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(reply.headers["vary"].to_str().unwrap().contains("origin"));

    // A preflight from another origin is not answered by the gateway (no token: 401).
    let reply = h.send(preflight("https://evil.example")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.get("access-control-allow-origin").is_none());
    assert!(
        reply
            .headers
            .get("access-control-allow-credentials")
            .is_none()
    );

    let reply = h
        .send(
            call(&h, "GET", "/items")
                .header("origin", ORIGIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(reply.headers["vary"], "origin");
    assert!(
        reply.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );

    let reply = h
        .send(
            call(&h, "GET", "/items")
                .header("origin", "https://evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.headers.get("access-control-allow-origin").is_none());
    assert!(
        reply
            .headers
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert_eq!(reply.headers["vary"], "origin");
    assert_eq!(runner.seen().len(), 2);
}

#[tokio::test]
async fn no_cors_headers_when_no_origin_is_configured() {
    let (h, _runner) = setup(|_| {}).await;
    let reply = h
        .send(
            Request::builder()
                .method("OPTIONS")
                .uri(format!("/api/ext/{EXT}/items"))
                .header("origin", ORIGIN)
                .header("access-control-request-method", "GET")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = h
        .send(
            call(&h, "GET", "/items")
                .header("origin", ORIGIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "vary",
    ] {
        assert!(reply.headers.get(name).is_none(), "{name}");
    }
}

#[tokio::test]
async fn idempotency_key_replays_the_guest_answer() {
    let (h, runner) = setup(|_| {}).await;
    let first = post_with_key(&h, "/items", "order-1", "one").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("x-idempotent-replay").is_none());
    let second = post_with_key(&h, "/items", "order-1", "two").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.headers["x-idempotent-replay"], "true");
    assert_eq!(second.body, first.body);
    assert_ne!(second.request_id(), first.request_id());
    assert_eq!(runner.seen().len(), 1);

    // Another key runs; so does a call without a key.
    let third = post_with_key(&h, "/items", "order-2", "three").await;
    assert_eq!(third.json()["body"], "three");
    let plain = h
        .send(call(&h, "POST", "/items").body(Body::empty()).unwrap())
        .await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_eq!(runner.seen().len(), 3);

    // The same key for another endpoint is refused without running.
    let reply = post_with_key(&h, "/trap", "order-1", "").await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_request");
    assert_eq!(runner.seen().len(), 3);
}

#[tokio::test]
async fn platform_errors_are_not_replayed_and_bad_keys_are_refused() {
    let (h, runner) = setup(|_| {}).await;
    for _ in 0..2 {
        let reply = post_with_key(&h, "/trap", "t-1", "").await;
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "trap");
        assert!(reply.headers.get("x-idempotent-replay").is_none());
    }
    assert_eq!(runner.seen().len(), 2);

    let long = "k".repeat(256);
    let reply = post_with_key(&h, "/items", &long, "").await;
    reply.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    let reply = h
        .send(
            call(&h, "POST", "/items")
                .header(
                    "x-idempotency-key",
                    HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(runner.seen().len(), 2);
    // A key at the bound is fine.
    let reply = post_with_key(&h, "/items", &"k".repeat(255), "").await;
    assert_eq!(reply.status, StatusCode::CREATED);
}
