//! What publishing refuses: components importing ungranted interfaces, bad manifests.

use crate::support::{Platform, bundle, guest, hello_manifest};

#[tokio::test]
async fn a_guest_importing_storage_without_the_grant_is_refused_naming_the_interface() {
    let platform = Platform::start().await;
    let manifest = serde_json::json!({
        "id": "com.example.storage-probe",
        "name": "Storage probe",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "storage_probe.wasm",
        "capabilities": { "log": true },
        "api": { "endpoints": [ { "method": "GET", "path": "/probe" } ] }
    });
    let bytes = bundle(&manifest, &guest("storage-probe"));
    let err = platform.publish_error(&bytes).await;
    assert!(err.contains("palisade:extension/storage"), "{err}");
    assert!(err.contains("capabilities.storage"), "{err}");
    assert!(
        platform
            .registry
            .list_extensions()
            .await
            .unwrap()
            .is_empty()
    );
}

async fn publish_error(platform: &Platform, manifest: serde_json::Value) -> String {
    // pack() validates the manifest too; build the archive from raw JSON so that the
    // registry's own validation is what answers.
    let component = guest("hello");
    let json = serde_json::to_vec(&manifest).unwrap();
    let bytes = raw_bundle(&json, &component);
    platform.publish_error(&bytes).await
}

/// A tar.zst with `manifest.json` and `hello.wasm`, without validating the manifest.
pub(crate) fn raw_bundle(manifest: &[u8], component: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("hello.wasm", component), ("manifest.json", manifest)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data).unwrap();
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
}

#[tokio::test]
async fn manifest_errors_name_the_field() {
    let platform = Platform::start().await;

    let mut bad_id = hello_manifest();
    bad_id["id"] = "Not A Reverse Domain".into();
    let err = publish_error(&platform, bad_id).await;
    assert!(err.contains("`id`"), "{err}");

    let mut bad_version = hello_manifest();
    bad_version["version"] = "1.0".into();
    let err = publish_error(&platform, bad_version).await;
    assert!(err.contains("`version`"), "{err}");

    let mut unknown = hello_manifest();
    unknown["capabilities"]["storage"] = serde_json::json!({ "namespacez": ["x"] });
    let err = publish_error(&platform, unknown).await;
    assert!(err.contains("capabilities.storage"), "{err}");
    assert!(err.contains("namespacez"), "{err}");

    // Sanity: the untouched manifest publishes.
    platform
        .publish(&bundle(&hello_manifest(), &guest("hello")))
        .await;
}

async fn refusal(platform: &Platform, name: &str, component: &str) -> String {
    let manifest = serde_json::json!({
        "id": "com.example.ungranted",
        "name": "Ungranted",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": component,
        "capabilities": { "log": true },
        "api": { "endpoints": [ { "method": "GET", "path": "/x" } ] }
    });
    let bytes = bundle(&manifest, &guest(name));
    platform.publish_error(&bytes).await
}

#[tokio::test]
async fn secrets_and_egress_without_their_grants_are_refused_at_publish() {
    let platform = Platform::start().await;
    let err = refusal(&platform, "secret-probe", "secret_probe.wasm").await;
    assert!(err.contains("palisade:extension/secrets"), "{err}");
    assert!(err.contains("capabilities.secrets"), "{err}");
    let err = refusal(&platform, "egress-probe", "egress_probe.wasm").await;
    assert!(err.contains("wasi:http/outgoing-handler"), "{err}");
    assert!(err.contains("capabilities.http"), "{err}");
    assert!(
        platform
            .registry
            .list_extensions()
            .await
            .unwrap()
            .is_empty()
    );
}
