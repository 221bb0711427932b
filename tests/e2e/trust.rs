//! Publisher trust on a running platform: an extension id belongs to its first key, an
//! upgrade that widens the grant waits for the tenant, install re-verifies the signature,
//! trust changes made by another process reach the gateway and the runner without a
//! restart, and a bundle whose key was removed runs again once signed again.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use palisade_bundle::SigningKey;
use palisade_registry::Registry;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Platform, bundle, guest, hello_manifest};

const HELLO: &str = "com.example.hello";
const TENANT: &str = "acme";

/// A second handle on the platform's registry, as another process (e.g. `palisade trust`)
/// would open it: it shares the database, not the platform's trust cache.
async fn other_process(platform: &Platform) -> Registry {
    palisade_registry::testing::open(platform.dir.path()).await
}

fn hello_bundle(version: &str, capabilities: Value) -> Vec<u8> {
    let mut manifest = hello_manifest();
    manifest["version"] = version.into();
    manifest["capabilities"] = capabilities;
    bundle(&manifest, &guest("hello"))
}

/// `POST /admin/v1/extensions` with `bytes` signed by `key`.
async fn publish(platform: &Platform, bytes: &[u8], key: &SigningKey) -> (StatusCode, Value) {
    let response = platform
        .client
        .post(format!("http://{}/admin/v1/extensions", platform.gateway))
        .bearer_auth(ADMIN_TOKEN)
        .header(
            "x-palisade-signature",
            STANDARD.encode(key.sign(bytes).unwrap()),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// `PUT /admin/v1/tenants/acme/installs/{HELLO}` with `body`.
async fn install(platform: &Platform, body: Value) -> (StatusCode, Value) {
    let response = platform
        .client
        .put(format!(
            "http://{}/admin/v1/tenants/{TENANT}/installs/{HELLO}",
            platform.gateway
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Calls hello until it answers `status` (the platform reads the trust set again within
/// its 1 s TTL); panics after 5 s.
async fn until_call_answers(platform: &Platform, status: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = platform.call(TENANT, HELLO, "/hello/ada").await;
        let got = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "still {got} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn trust_changes_by_another_process_apply_without_a_restart() {
    let platform = Platform::start().await;
    let operator = other_process(&platform).await;
    let key = SigningKey::generate().unwrap();
    let bytes = hello_bundle("0.1.0", json!({"log": true}));

    let (status, body) = publish(&platform, &bytes, &key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    // `palisade trust add` in another process: the running gateway accepts the key.
    operator.trust_key(key.public_key()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = publish(&platform, &bytes, &key).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = install(&platform, json!({"approve": ["log"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_call_answers(&platform, StatusCode::OK).await;

    // `palisade trust remove`: the running runner stops running what only that key signed,
    // although it has the component compiled and cached.
    operator
        .untrust_key(&key.public_key().fingerprint())
        .await
        .unwrap();
    let body = until_call_answers(&platform, StatusCode::BAD_GATEWAY).await;
    assert_eq!(body["error"], "bundle_integrity", "{body}");

    // Trusted again, it runs again.
    operator.trust_key(key.public_key()).await.unwrap();
    until_call_answers(&platform, StatusCode::OK).await;
}

#[tokio::test]
async fn another_trusted_key_cannot_publish_an_owned_id() {
    let platform = Platform::start().await;
    let (status, body) = publish(
        &platform,
        &hello_bundle("0.1.0", json!({"log": true})),
        &platform.publisher,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A key the operator trusts for other extensions signs a new version of hello.
    let other = SigningKey::generate().unwrap();
    platform
        .registry
        .trust_key(other.public_key())
        .await
        .unwrap();
    let hijack = hello_bundle(
        "0.2.0",
        json!({"log": true, "http": {"allow": ["https://collect.evil.example"]}}),
    );
    let (status, body) = publish(&platform, &hijack, &other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(platform.publisher.public_key().fingerprint().as_str()),
        "{message}"
    );
    assert!(
        message.contains(other.public_key().fingerprint().as_str()),
        "{message}"
    );
    let versions = platform.registry.list_versions(HELLO).await.unwrap();
    assert_eq!(versions.len(), 1);

    // `palisade trust add KEY --extension com.example.hello`.
    platform
        .registry
        .allow_signer(HELLO, &other.public_key().fingerprint())
        .await
        .unwrap();
    let (status, body) = publish(&platform, &hijack, &other).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_upgrade_to_new_origins_waits_for_the_tenants_approval() {
    let platform = Platform::start().await;
    let v1 = json!({"log": true, "http": {"allow": ["https://api.example.com"]}});
    let v2 = json!({"log": true, "http": {"allow": ["https://api.example.com", "https://collect.evil.example"]}});
    for (version, caps) in [("0.1.0", v1), ("0.2.0", v2)] {
        let (status, body) =
            publish(&platform, &hello_bundle(version, caps), &platform.publisher).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = install(
        &platform,
        json!({"version": "0.1.0", "approve": ["log", "http"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Same capability names: the upgrade still waits, naming the new origin.
    let (status, body) = install(&platform, json!({"approve": ["log", "http"]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("https://collect.evil.example"),
        "{message}"
    );
    let resolved = platform
        .registry
        .resolve(TENANT, HELLO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.version, "0.1.0");

    // Approving needs the version named.
    let (status, body) = install(
        &platform,
        json!({"approve": ["log", "http"], "approve_widened_grant": true}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = install(
        &platform,
        json!({"version": "0.2.0", "approve": ["log", "http"], "approve_widened_grant": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "0.2.0");
    assert_eq!(
        body["grant"]["http"]["allow"],
        json!(["https://api.example.com", "https://collect.evil.example"])
    );
}

#[tokio::test]
async fn a_bundle_whose_key_was_removed_is_signed_again_and_runs_again() {
    let platform = Platform::start().await;
    let bytes = hello_bundle("0.1.0", json!({"log": true}));
    let (status, body) = publish(&platform, &bytes, &platform.publisher).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = install(&platform, json!({"approve": ["log"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_call_answers(&platform, StatusCode::OK).await;

    // The publisher's key is removed: the extension stops, and install refuses it.
    let old = platform.publisher.public_key().fingerprint();
    platform.registry.untrust_key(&old).await.unwrap();
    let body = until_call_answers(&platform, StatusCode::BAD_GATEWAY).await;
    assert_eq!(body["error"], "bundle_integrity", "{body}");
    let (status, body) = install(&platform, json!({"approve": ["log"]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("sign the bundle again"),
        "{body}"
    );

    // The operator trusts the publisher's new key for hello; the same bytes, signed again.
    let new = SigningKey::generate().unwrap();
    platform.registry.trust_key(new.public_key()).await.unwrap();
    platform
        .registry
        .allow_signer(HELLO, &new.public_key().fingerprint())
        .await
        .unwrap();
    let (status, body) = publish(&platform, &bytes, &new).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_call_answers(&platform, StatusCode::OK).await;
    let (status, body) = install(&platform, json!({"approve": ["log"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let hash = body_hash(&platform).await;
    let history = platform.registry.signature_history(&hash).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].signer_fingerprint, old.as_str());
    let versions = platform.registry.list_versions(HELLO).await.unwrap();
    assert_eq!(
        versions[0].signer_fingerprint,
        new.public_key().fingerprint().as_str()
    );
}

async fn body_hash(platform: &Platform) -> palisade_bundle::ContentHash {
    platform.registry.list_versions(HELLO).await.unwrap()[0].content_hash
}
