//! Caller authentication at the gateway and service tokens at the runner.

use std::time::Duration;

use base64::Engine as _;
use palisade_protocol::{
    ExecuteRequest, HttpRequest, InvocationContext, ServiceKeyPair, TokenMinter, TokenScope,
};

use crate::support::{AUDIENCE, ISSUER, Platform};

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

fn execute_request(
    published: &palisade_registry::PublishedVersion,
    install_id: &str,
) -> ExecuteRequest {
    ExecuteRequest {
        context: InvocationContext {
            request_id: "req-1".into(),
            tenant_id: "acme".into(),
            extension_id: published.extension_id.clone(),
            install_id: install_id.into(),
            version_id: published.version_id.clone(),
            content_hash: published.content_hash.to_string(),
        },
        http: HttpRequest {
            method: "GET".into(),
            path: "/hello/ada".into(),
            query: None,
            headers: vec![],
            body_b64: base64::engine::general_purpose::STANDARD.encode(b""),
        },
        limits: Default::default(),
    }
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
    let request = execute_request(&published, &install.install_id);
    let url = format!("http://{}/v1/execute", platform.runner);
    let scope = TokenScope {
        tenant_id: "acme".into(),
        extension_id: published.extension_id.clone(),
        install_id: install.install_id.clone(),
        content_hash: published.content_hash.to_string(),
    };

    let none = platform
        .client
        .post(&url)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);

    let stranger = ServiceKeyPair::generate().unwrap();
    let forged = TokenMinter::from_pem(stranger.private_pem.as_bytes())
        .unwrap()
        .token(&scope)
        .unwrap();
    let response = platform
        .client
        .post(&url)
        .bearer_auth(forged)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    // A genuine token for another install does not open this one.
    let minter = TokenMinter::from_pem(platform.service_keys.private_pem.as_bytes()).unwrap();
    let other_scope = TokenScope {
        install_id: "someone-else".into(),
        ..scope.clone()
    };
    let response = platform
        .client
        .post(&url)
        .bearer_auth(minter.token(&other_scope).unwrap())
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // And the genuine token for this install works.
    let response = platform
        .client
        .post(&url)
        .bearer_auth(minter.token(&scope).unwrap())
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: palisade_protocol::ExecuteResponse = response.json().await.unwrap();
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&reply.body().unwrap()).unwrap();
    assert_eq!(body["tenant"], "acme");
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
    let mut request = execute_request(&published, &install.install_id);
    request.context.tenant_id = "globex".into();
    let scope = TokenScope {
        tenant_id: "globex".into(),
        extension_id: published.extension_id.clone(),
        install_id: install.install_id.clone(),
        content_hash: published.content_hash.to_string(),
    };
    let minter = TokenMinter::from_pem(platform.service_keys.private_pem.as_bytes()).unwrap();
    let response = platform
        .client
        .post(format!("http://{}/v1/execute", platform.runner))
        .bearer_auth(minter.token(&scope).unwrap())
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
