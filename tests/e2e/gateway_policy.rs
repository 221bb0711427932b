//! The gateway's request policies over real sockets, in front of a real runner and real
//! guests: caller keys of several algorithms, the per-install rate limit, CORS and
//! idempotent replay.

use std::net::SocketAddr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade_gateway::ratelimit::RateLimitConfig;
use palisade_gateway::{
    CallerAuthConfig, CallerKey, CallerKeyAlgorithm, GatewayConfig, GatewayState,
};
use palisade_protocol::TokenMinter;

use crate::support::{AUDIENCE, ISSUER, Platform, bundle, guest, serve};

const COUNTER: &str = "com.example.counter";
const ORIGIN: &str = "https://console.example";
const HS_SECRET: &[u8] = b"an HS256 secret shared with the identity provider";
const RS_PRIVATE: &str = include_str!("../../host/gateway/src/tests/fixtures/rs256_private.pem");
const RS_PUBLIC: &str = include_str!("../../host/gateway/src/tests/fixtures/rs256_public.pem");

/// A second gateway in front of the platform's runner, configured by `tweak`.
async fn gateway(platform: &Platform, tweak: impl FnOnce(&mut GatewayConfig)) -> SocketAddr {
    let mut config = GatewayConfig::new(
        format!("http://{}", platform.runner),
        CallerAuthConfig::new(ISSUER, AUDIENCE, platform.caller_keys.public_pem.clone()),
    );
    tweak(&mut config);
    let state = GatewayState::new(
        config,
        platform.registry.clone(),
        TokenMinter::from_pem(platform.service_keys.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    serve(palisade_gateway::app(Arc::new(state))).await
}

async fn install_counter(platform: &Platform, tenant: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/counter/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    platform
        .publish(&bundle(&manifest, &guest("counter")))
        .await;
    platform
        .registry
        .install(
            tenant,
            COUNTER,
            None,
            &[
                palisade_bundle::CapabilityKey::Log,
                palisade_bundle::CapabilityKey::Metrics,
            ],
            Default::default(),
        )
        .await
        .unwrap();
}

fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "nbf": now - 5,
        "tenant": "acme", "sub": "u1",
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn rs256_and_hs256_caller_tokens_reach_the_guest() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    let gateway = gateway(&platform, |config| {
        config.caller_auth.keys.extend([
            CallerKey::pem(CallerKeyAlgorithm::Rs256, RS_PUBLIC).with_kid("rsa-2026"),
            CallerKey::hs256_secret(HS_SECRET),
        ]);
    })
    .await;
    let url = format!("http://{gateway}/api/ext/com.example.hello/hello/ada");
    let rs = EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap();
    let hs = EncodingKey::from_secret(HS_SECRET);
    for token in [
        token(Algorithm::RS256, &rs, Some("rsa-2026")),
        token(Algorithm::RS256, &rs, None),
        token(Algorithm::HS256, &hs, None),
        platform.token("acme"),
    ] {
        let response = platform
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let forged = EncodingKey::from_secret(b"a guessed secret that is long enough to sign");
    for token in [
        token(Algorithm::HS256, &forged, None),
        token(Algorithm::RS256, &rs, Some("unknown-kid")),
    ] {
        let response = platform
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
}

#[tokio::test]
async fn an_install_over_its_rate_is_answered_429_with_retry_after() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    platform.install_hello("globex").await;
    let gateway = gateway(&platform, |config| {
        config.rate_limit = RateLimitConfig {
            per_second: 0.2,
            burst: 3,
            ..RateLimitConfig::default()
        };
    })
    .await;
    let call = |tenant: &'static str| {
        platform
            .client
            .get(format!(
                "http://{gateway}/api/ext/com.example.hello/hello/ada"
            ))
            .bearer_auth(platform.token(tenant))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(call("acme").await.unwrap().status(), 200);
    }
    let refused = call("acme").await.unwrap();
    assert_eq!(refused.status(), 429);
    // 1 token at 0.2 a second: at most 5 s away.
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "over_quota");
    // Another tenant's install is not affected.
    assert_eq!(call("globex").await.unwrap().status(), 200);
}

#[tokio::test]
async fn browsers_from_configured_origins_get_cors_answers() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    let gateway = gateway(&platform, |config| {
        config.cors_allowed_origins = vec![ORIGIN.to_owned()];
    })
    .await;
    let url = format!("http://{gateway}/api/ext/com.example.hello/hello/ada");
    let preflight = |origin: &str| {
        platform
            .client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight(ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let refused = preflight("https://attacker.example").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let response = platform
        .client
        .get(&url)
        .bearer_auth(platform.token("acme"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
    assert_eq!(vary, ["authorization", "origin"]);
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer() {
    let platform = Platform::start().await;
    install_counter(&platform, "acme").await;
    let gateway = platform.gateway;
    let hit = |key: &'static str, body: &'static str| {
        platform
            .client
            .post(format!("http://{gateway}/api/ext/{COUNTER}/hit/home"))
            .bearer_auth(platform.token("acme"))
            .header("x-idempotency-key", key)
            .body(body)
            .send()
    };
    let first = hit("order-7", "abc").await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("x-idempotent-replay"));
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["body_bytes"], 3);

    // The second call with the same key and body does not run.
    let second = hit("order-7", "abc").await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-idempotent-replay"], "true");
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(second, first);

    // The same key with another body is refused, not answered with the stored result.
    let reused = hit("order-7", "abcdef").await.unwrap();
    assert_eq!(reused.status(), 422);
    assert!(!reused.headers().contains_key("x-idempotent-replay"));
    let reused: serde_json::Value = reused.json().await.unwrap();
    assert_eq!(reused["error"], "idempotency_key_reused");

    let other = hit("order-8", "abcdef").await.unwrap();
    let other: serde_json::Value = other.json().await.unwrap();
    assert_eq!(other["body_bytes"], 6);

    let too_long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
    let refused = hit(too_long, "x").await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
}

#[tokio::test]
async fn concurrent_duplicates_run_once() {
    let platform = Platform::start().await;
    install_counter(&platform, "acme").await;
    let url = format!("http://{}/api/ext/{COUNTER}/hit/home", platform.gateway);
    let hit = |body: &'static str| {
        platform
            .client
            .post(&url)
            .bearer_auth(platform.token("acme"))
            .header("x-idempotency-key", "same-order")
            .body(body)
            .send()
    };
    let (a, b) = tokio::join!(hit("abc"), hit("abc"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let replays = [&a, &b]
        .iter()
        .filter(|r| r.headers().contains_key("x-idempotent-replay"))
        .count();
    assert_eq!(replays, 1);
    let a: serde_json::Value = a.json().await.unwrap();
    let b: serde_json::Value = b.json().await.unwrap();
    // One guest run answered both.
    assert_eq!(a, b);
    assert_eq!(a["body_bytes"], 3);
}
