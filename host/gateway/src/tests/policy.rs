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
        {"method":"GET","path":"/cached"},
        {"method":"POST","path":"/items"},
        {"method":"POST","path":"/trap"}
    ]}}"#;

/// A gateway configured by `tweak` in front of a fake runner, with [`EXT`] installed for
/// [`TENANT`].
async fn setup(tweak: impl FnOnce(&mut GatewayConfig)) -> (Harness, FakeRunner) {
    let (h, runner) = Harness::with_fake_runner(tweak).await;
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
    let registry = palisade_registry::testing::open(dir.path()).await;
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
    assert_eq!(vary(&reply), ["authorization", "origin"]);
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
    assert_eq!(vary(&reply), ["authorization", "origin"]);
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
    ] {
        assert!(reply.headers.get(name).is_none(), "{name}");
    }
    assert_eq!(vary(&reply), ["authorization"]);
}

/// Every `vary` value of `reply`, in order.
fn vary(reply: &Reply) -> Vec<&str> {
    reply
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_guest_cannot_make_one_tenants_answer_cacheable_for_another() {
    let (h, runner) = setup(|_| {}).await;
    h.install("globex", MANIFEST).await;
    let uri = format!("/api/ext/{EXT}/cached");
    for tenant in [TENANT, "globex"] {
        // The guest says `public, s-maxage`; the endpoint is not declared public.
        let reply = h.get_as(tenant, &uri).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, format!("answer for {tenant}").as_bytes());
        assert_eq!(reply.headers["cache-control"], "private, max-age=3600");
        assert_eq!(vary(&reply), ["authorization"]);
        // HEAD answers carry the same.
        let head = h
            .send(
                Request::head(&uri)
                    .header("authorization", format!("Bearer {}", h.token(tenant)))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(head.headers["cache-control"], "private, max-age=3600");
        assert_eq!(vary(&head), ["authorization"]);
    }
    assert_eq!(runner.seen().len(), 4);
}

#[tokio::test]
async fn declared_public_endpoints_keep_the_guest_cache_control_per_caller() {
    let (h, _runner) = setup(|_| {}).await;
    h.install(
        TENANT,
        r#"{"id":"com.example.shared","name":"Shared","publisher":"Example",
        "version":"1.0.0","runtime":"wasi-http@0.2","component":"shared.wasm",
        "api":{"endpoints":[
            {"method":"GET","path":"/shared","cache":"public"},
            {"method":"GET","path":"/cached"}
        ]}}"#,
    )
    .await;
    let reply = h.get_as(TENANT, "/api/ext/com.example.shared/shared").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["cache-control"],
        "public, max-age=3600, s-maxage=3600"
    );
    // A shared cache keeps each caller's answer apart.
    assert_eq!(vary(&reply), ["authorization"]);
    // The other endpoint of the same extension stays private.
    let reply = h.get_as(TENANT, "/api/ext/com.example.shared/cached").await;
    assert_eq!(reply.headers["cache-control"], "private, max-age=3600");
}

#[tokio::test]
async fn idempotency_key_replays_the_guest_answer() {
    let (h, runner) = setup(|_| {}).await;
    let first = post_with_key(&h, "/items", "order-1", "one").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("x-idempotent-replay").is_none());
    let second = post_with_key(&h, "/items", "order-1", "one").await;
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
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(runner.seen().len(), 3);
}

#[tokio::test]
async fn a_retry_on_another_gateway_is_answered_from_the_shared_store() {
    let (first, runner) = setup(|_| {}).await;
    // Another gateway in front of the same runner, on the same database.
    let second = first.twin().await;
    let answer = post_with_key(&first, "/items", "order-9", "nine").await;
    assert_eq!(answer.status, StatusCode::CREATED);
    // The answer reaches the registry in the background, moments after it was sent.
    let scope = palisade_registry::idempotency::AnswerScope {
        tenant_id: TENANT,
        extension_id: EXT,
        key: "order-9",
    };
    for _ in 0..250 {
        let now = crate::quota::now_ms();
        if first
            .registry
            .idempotent_answer(scope, now)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay = post_with_key(&second, "/items", "order-9", "nine").await;
    assert_eq!(replay.headers["x-idempotent-replay"], "true");
    assert_eq!(
        runner.seen().len(),
        1,
        "the call ran once, on the first gateway"
    );
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, answer.body);
    assert_eq!(
        replay.headers.get("content-type"),
        answer.headers.get("content-type")
    );
    let ran = runner.seen().len();
    // Replayed again from the second gateway's own store now, without running.
    let again = post_with_key(&second, "/items", "order-9", "nine").await;
    assert_eq!(again.headers["x-idempotent-replay"], "true");
    assert_eq!(runner.seen().len(), ran);
    // Another body under the key is refused there too.
    let reply = post_with_key(&second, "/items", "order-9", "other").await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let fresh = post_with_key(&second, "/items", "order-10", "ten").await;
    assert!(fresh.headers.get("x-idempotent-replay").is_none());
}

#[tokio::test]
async fn idempotency_key_with_another_body_or_user_is_refused() {
    let (h, runner) = setup(|_| {}).await;
    let first = post_with_key(&h, "/items", "order-1", "one").await;
    assert_eq!(first.status, StatusCode::CREATED);

    // Another body under the same key gets no stored answer.
    let reply = post_with_key(&h, "/items", "order-1", "two").await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert!(reply.headers.get("x-idempotent-replay").is_none());
    // Nor does another user of the same tenant with the same body.
    let reply = h
        .send(
            Request::post(format!("/api/ext/{EXT}/items"))
                .header(
                    "authorization",
                    format!("Bearer {}", h.token_as(TENANT, "bob")),
                )
                .header("x-idempotency-key", "order-1")
                .body(Body::from("one"))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(runner.seen().len(), 1);

    // The same request by the same user is still replayed.
    let again = post_with_key(&h, "/items", "order-1", "one").await;
    assert_eq!(again.headers["x-idempotent-replay"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(runner.seen().len(), 1);
}

#[tokio::test]
async fn one_tenant_cannot_evict_another_tenants_idempotent_answers() {
    let (h, runner) = setup(|config| {
        config.idempotency.max_entries = 4;
    })
    .await;
    h.install("globex", MANIFEST).await;
    let first = post_with_key(&h, "/items", "acme-order", "one").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Another tenant stores many more answers than the store holds.
    for i in 0..10 {
        let reply = h
            .send(
                Request::post(format!("/api/ext/{EXT}/items"))
                    .header("authorization", format!("Bearer {}", h.token("globex")))
                    .header("x-idempotency-key", format!("globex-{i}"))
                    .body(Body::from("x"))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    assert_eq!(runner.seen().len(), 11);
    // The first tenant's answer is still replayed, not run again.
    let again = post_with_key(&h, "/items", "acme-order", "one").await;
    assert_eq!(
        again
            .headers
            .get("x-idempotent-replay")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.body, first.body);
    assert_eq!(runner.seen().len(), 11);
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

/// A limit of `burst` calls that refills too slowly to matter in a test.
fn tight(burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        per_second: 0.01,
        burst,
        ..RateLimitConfig::default()
    }
}

fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_tenant_limit_answers_429_before_resolution() {
    let (h, runner) = setup(|config| {
        config.tenant_rate_limit = tight(3);
    })
    .await;
    let before = h.state.installs.registry_resolutions();
    for i in 0..10 {
        let reply = h
            .get_as(TENANT, &format!("/api/ext/com.example.random{i}/x"))
            .await;
        if i < 3 {
            reply.assert_error(StatusCode::NOT_FOUND, "not_found");
        } else {
            reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "over_quota");
            // One token at 0.01 a second: 100 s away.
            assert!(
                (90..=100).contains(&retry_after(&reply)),
                "{}",
                retry_after(&reply)
            );
        }
    }
    // Only the calls within the tenant's budget were resolved.
    assert_eq!(h.state.installs.registry_resolutions() - before, 3);
    // The tenant's real install is limited as well; another tenant is not.
    let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "over_quota");
    h.install("globex", MANIFEST).await;
    let reply = h.get_as("globex", &format!("/api/ext/{EXT}/items")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(runner.seen().len(), 1);
    // Nothing was written to the execution log for the refused calls.
    h.state.flush_execution_log().await;
    let rows = h
        .registry
        .recent_executions(TENANT, None, 100)
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test]
async fn random_unknown_ids_do_not_each_reach_the_registry() {
    let (h, _runner) = setup(|config| {
        config.tenant_rate_limit = tight(20);
    })
    .await;
    let before = h.state.installs.registry_resolutions();
    let mut refused = 0;
    for i in 0..200 {
        let id = format!("com.example.{}", uuid::Uuid::new_v4().simple());
        let reply = h.get_as(TENANT, &format!("/api/ext/{id}/x")).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        } else {
            reply.assert_error(StatusCode::NOT_FOUND, "not_found");
            assert!(i < 20, "call {i} was not limited");
        }
    }
    assert_eq!(refused, 180);
    assert_eq!(h.state.installs.registry_resolutions() - before, 20);

    // The same unknown id again and again is answered from the cache.
    let before = h.state.installs.registry_resolutions();
    for _ in 0..10 {
        let reply = h.get_as("globex", "/api/ext/com.example.nowhere/x").await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(h.state.installs.registry_resolutions() - before, 1);
}

#[tokio::test]
async fn unknown_ids_do_not_push_installs_out_of_the_cache() {
    let (h, runner) = setup(|config| {
        config.install_cache_ttl = Duration::from_secs(3600);
        config.install_cache_capacity = 2;
        config.unknown_extension_capacity = 2;
    })
    .await;
    let uri = format!("/api/ext/{EXT}/items");
    assert_eq!(h.get_as(TENANT, &uri).await.status, StatusCode::CREATED);
    for i in 0..20 {
        h.get_as(TENANT, &format!("/api/ext/com.example.miss{i}/x"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let before = h.state.installs.registry_resolutions();
    assert_eq!(h.get_as(TENANT, &uri).await.status, StatusCode::CREATED);
    assert_eq!(h.state.installs.registry_resolutions(), before);
    assert_eq!(runner.seen().len(), 2);
}

#[tokio::test]
async fn the_caller_limit_is_per_user() {
    let (h, runner) = setup(|config| {
        config.caller_rate_limit = tight(2);
    })
    .await;
    let call_as = |user: &str| {
        Request::get(format!("/api/ext/{EXT}/items"))
            .header(
                "authorization",
                format!("Bearer {}", h.token_as(TENANT, user)),
            )
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(h.send(call_as("alice")).await.status, StatusCode::CREATED);
    }
    let reply = h.send(call_as("alice")).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "over_quota");
    assert!(retry_after(&reply) >= 1);
    // Another user of the same tenant has a budget of their own.
    assert_eq!(h.send(call_as("bob")).await.status, StatusCode::CREATED);
    assert_eq!(runner.seen().len(), 3);
}
