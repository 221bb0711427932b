//! The `cache` capability end to end: values cached by a guest are read back within their
//! time to live, never by another tenant's install, and are gone once it has passed;
//! publishing refuses an ungranted import.

use std::path::PathBuf;
use std::time::Duration;

use palisade_bundle::CapabilityKey;
use serde_json::{Value, json};

use crate::support::{Platform, bundle, guest, ok_json};

const PROBE: &str = "com.example.cache-probe";

fn probe_manifest() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guests/cache-probe/manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A platform with the cache probe installed for each of `tenants`, `cache` approved.
async fn platform(tenants: &[&str]) -> Platform {
    let platform = Platform::start().await;
    let approved = [CapabilityKey::Log, CapabilityKey::Cache];
    platform
        .install_guest(&probe_manifest(), "cache-probe", tenants, &approved)
        .await;
    platform
}

/// `method {path}` on the probe for `tenant`, with `body`; the probe's JSON answer.
async fn probe(platform: &Platform, tenant: &str, method: &str, path: &str, body: &str) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    ok_json(
        platform
            .request(tenant, method, PROBE, path)
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn a_cached_value_is_read_back_by_its_install_only() {
    let platform = platform(&["acme", "globex"]).await;
    let set = probe(
        &platform,
        "acme",
        "PUT",
        "/set?key=rates&ttl_ms=60000",
        "EUR=1",
    )
    .await;
    assert_eq!(set, json!({ "ok": null }));
    let got = probe(&platform, "acme", "GET", "/get?key=rates", "").await;
    assert_eq!(got, json!({ "ok": "EUR=1" }));
    // The other tenant's install of the same extension has a cache of its own.
    let other = probe(&platform, "globex", "GET", "/get?key=rates", "").await;
    assert_eq!(other, json!({ "ok": null }));

    probe(&platform, "acme", "DELETE", "/delete?key=rates", "").await;
    let gone = probe(&platform, "acme", "GET", "/get?key=rates", "").await;
    assert_eq!(gone, json!({ "ok": null }));
}

#[tokio::test]
async fn a_value_is_gone_once_its_time_to_live_has_passed() {
    let platform = platform(&["acme"]).await;
    probe(&platform, "acme", "PUT", "/set?key=k&ttl_ms=100", "v").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = probe(&platform, "acme", "GET", "/get?key=k", "").await;
    assert_eq!(got, json!({ "ok": null }));
}

#[tokio::test]
async fn what_the_cache_refuses_is_reported_to_the_guest() {
    let platform = platform(&["acme"]).await;
    let long_key = "k".repeat(300);
    let cases = [
        (
            format!("/set?key={long_key}&ttl_ms=1000"),
            "longer than 256 bytes",
        ),
        ("/set?key=&ttl_ms=1000".to_owned(), "empty"),
        ("/set?key=k&ttl_ms=0".to_owned(), "time to live"),
    ];
    for (path, expected) in cases {
        let answer = probe(&platform, "acme", "PUT", &path, "v").await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{path}: {answer}");
    }
}

#[tokio::test]
async fn a_guest_importing_cache_without_the_grant_is_refused_at_publish() {
    let platform = Platform::start().await;
    let mut manifest = probe_manifest();
    manifest["capabilities"] = json!({ "log": true });
    let err = platform
        .publish_error(&bundle(&manifest, &guest("cache-probe")))
        .await;
    assert!(err.contains("palisade:extension/cache"), "{err}");
    assert!(err.contains("capabilities.cache"), "{err}");
}
