//! Caller authentication at the gateway and service tokens at the runner.

use std::time::Duration;

use palisade_protocol::{ServiceKeyPair, TokenMinter, TokenScope};

use crate::support::{AUDIENCE, HopCall, ISSUER, Platform};

async fn get_with(platform: &Platform, auth: Option<&str>) -> reqwest::Response {
    let mut request = platform.client.get(format!(
        "http://{}/api/ext/com.example.hello/hello/ada",
        platform.gateway
    ));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

fn assert_401(response: &reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn missing_invalid_and_expired_caller_tokens_are_401() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;

    assert_401(&get_with(&platform, None).await);
    assert_401(&get_with(&platform, Some("Bearer not-a-jwt")).await);
    assert_401(&get_with(&platform, Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")).await);

    // Signed by a key the gateway does not trust.
    let stranger = ServiceKeyPair::generate().unwrap();
    let forged = palisade_gateway::mint_dev_token(
        stranger.private_pem.as_bytes(),
        ISSUER,
        AUDIENCE,
        "acme",
        "mallory",
        Duration::from_secs(300),
    )
    .unwrap();
    assert_401(&get_with(&platform, Some(&format!("Bearer {forged}"))).await);

    // Expired long enough ago to be outside the allowed clock skew: a token whose payload
    // says exp in the past, signed with the right key.
    let expired = expired_token(&platform);
    assert_401(&get_with(&platform, Some(&format!("Bearer {expired}"))).await);

    // The same request with a good token works.
    let ok = get_with(
        &platform,
        Some(&format!("Bearer {}", platform.token("acme"))),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

fn expired_token(platform: &Platform) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "u", "tenant": "acme",
        "iat": now - 7200, "exp": now - 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_ed_pem(platform.caller_keys.private_pem.as_bytes())
        .unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn execute_without_or_with_a_forged_service_token_is_401() {
    let platform = Platform::start().await;
    let published = platform.install_hello("acme").await;
    let install = platform
        .registry
        .resolve("acme", "com.example.hello")
        .await
        .unwrap()
        .unwrap();
    let call = || HopCall::get("acme", &install.install_id, &published, "/hello/ada");

    let none = call().send(platform.runner).await;
    assert_eq!(none.status, 401);

    let stranger = ServiceKeyPair::generate().unwrap();
    let forged = call().signed(&stranger).send(platform.runner).await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.json()["error"], "unauthorized");
    assert_eq!(forged.headers["x-palisade-error"], "unauthorized");

    // A genuine token for another install does not open this one.
    let minter = TokenMinter::from_pem(platform.service_keys.private_pem.as_bytes()).unwrap();
    let mut other = call();
    let other_scope = TokenScope {
        install_id: "someone-else".into(),
        ..other.scope()
    };
    other.token = Some(minter.token(&other_scope).unwrap());
    assert_eq!(other.send(platform.runner).await.status, 401);

    // And the genuine token for this call works.
    let reply = call()
        .signed(&platform.service_keys)
        .send(platform.runner)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["tenant"], "acme");
    assert_eq!(reply.outcome().as_deref(), Some("complete"));
    assert!(reply.stats().is_some());
}

/// A token captured on the wire is good for its own call only: not for a second one, not
/// for another path or method, not under another request id.
#[tokio::test]
async fn a_replayed_service_token_is_401() {
    let platform = Platform::start().await;
    let published = platform.install_hello("acme").await;
    let install = platform
        .registry
        .resolve("acme", "com.example.hello")
        .await
        .unwrap()
        .unwrap();
    let call = HopCall::get("acme", &install.install_id, &published, "/hello/ada")
        .signed(&platform.service_keys);
    assert_eq!(call.send(platform.runner).await.status, 200);

    // The same call again.
    let replay = call.send(platform.runner).await;
    assert_eq!(replay.status, 401);
    assert_eq!(replay.json()["error"], "unauthorized");

    let fresh = || {
        HopCall::get("acme", &install.install_id, &published, "/hello/ada")
            .signed(&platform.service_keys)
    };
    // Another path.
    let mut moved = fresh();
    moved.path = "/hello/eve".into();
    assert_eq!(moved.send(platform.runner).await.status, 401);
    // Another method.
    let mut post = fresh();
    post.method = http::Method::POST;
    assert_eq!(post.send(platform.runner).await.status, 401);
    // Another request id.
    let mut renamed = fresh();
    renamed.context.request_id = "someone-elses-call".into();
    assert_eq!(renamed.send(platform.runner).await.status, 401);
    // The untouched fresh call still works: the refusals did not use its token up.
    let untouched = fresh();
    assert_eq!(untouched.send(platform.runner).await.status, 200);
}

#[tokio::test]
async fn a_context_that_does_not_match_the_install_is_404() {
    let platform = Platform::start().await;
    let published = platform.install_hello("acme").await;
    let install = platform
        .registry
        .resolve("acme", "com.example.hello")
        .await
        .unwrap()
        .unwrap();
    // The token and the context agree with each other, but claim another tenant.
    let reply = HopCall::get("globex", &install.install_id, &published, "/hello/ada")
        .signed(&platform.service_keys)
        .send(platform.runner)
        .await;
    assert_eq!(reply.status, 404);
}
