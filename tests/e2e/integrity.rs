//! Bundle integrity: signatures at publish, bytes re-checked when the runner loads them.

use crate::support::{Platform, bundle, guest, hello_manifest};

#[tokio::test]
async fn a_bundle_tampered_after_signing_is_refused_at_publish() {
    let platform = Platform::start().await;
    let mut bytes = bundle(&hello_manifest(), &guest("hello"));
    let signature = platform.publisher.sign(&bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let err = platform
        .registry
        .publish(&bytes, &signature, &platform.trust)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert!(
        platform
            .registry
            .list_extensions()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_bundle_signed_by_an_untrusted_key_is_refused() {
    let platform = Platform::start().await;
    let bytes = bundle(&hello_manifest(), &guest("hello"));
    let stranger = palisade_bundle::SigningKey::generate().unwrap();
    let signature = stranger.sign(&bytes).unwrap();
    let err = platform
        .registry
        .publish(&bytes, &signature, &platform.trust)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert!(
        platform
            .registry
            .list_extensions()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_blob_altered_in_the_object_store_is_502_and_never_runs() {
    let platform = Platform::start().await;
    let published = platform.install_hello("acme").await;

    // Replace the stored bundle with another valid, signed bundle: the runner must notice
    // that its hash is not the one the registry recorded.
    let mut manifest = hello_manifest();
    manifest["name"] = "Hello (altered)".into();
    let other = bundle(&manifest, &guest("hello"));
    let path = platform
        .dir
        .path()
        .join("objects/bundles")
        .join(format!("{}.tar.zst", published.content_hash.hex()));
    assert!(path.exists(), "bundle stored at {}", path.display());
    std::fs::write(&path, &other).unwrap();

    let response = platform
        .call("acme", "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bundle_integrity");
}

#[tokio::test]
async fn a_missing_blob_is_502() {
    let platform = Platform::start().await;
    let published = platform.install_hello("acme").await;
    let path = platform
        .dir
        .path()
        .join("objects/bundles")
        .join(format!("{}.tar.zst", published.content_hash.hex()));
    std::fs::remove_file(&path).unwrap();
    let response = platform
        .call("acme", "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 502);
}
