//! A platform whose objects live in a real S3-compatible server (moto, on loopback):
//! bundles published there are served, and when the server stops, bundles already loaded
//! keep serving while a first load fails fast with a clear 503.

use std::time::{Duration, Instant};

use palisade_registry::ObjectStoreConfig;
use palisade_registry::testing::S3Server;
use serde_json::Value;

use crate::support::{Options, Platform, bundle, guest, hello_manifest, palisade_binary};

const HELLO: &str = "com.example.hello";
const OTHER: &str = "com.example.hello-other";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_served_from_s3_and_loaded_bundles_outlive_the_server() {
    let Some(mut server) = S3Server::start("palisade-e2e") else {
        return;
    };
    let platform = Platform::start_with(Options {
        objects: Some(ObjectStoreConfig::S3(server.config("platform"))),
        ..Options::default()
    })
    .await;
    platform.install_hello("acme").await;
    assert_eq!(platform.call_status("acme", HELLO, "/hello/ada").await, 200);
    // Another extension, published and installed, never called.
    let mut manifest = hello_manifest();
    manifest["id"] = Value::from(OTHER);
    platform
        .install_guest(
            &manifest,
            "hello",
            &["acme"],
            &[palisade_bundle::CapabilityKey::Log],
        )
        .await;

    server.stop();
    // What the runner has loaded keeps serving.
    for _ in 0..3 {
        platform.assert_hello_answers("acme").await;
    }
    // A first load cannot read its bundle: 503 `unavailable`, within seconds.
    let started = Instant::now();
    let response = platform.call("acme", OTHER, "/hello/ada").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_keeps_the_objects_in_the_bucket_of_object_store() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use futures::StreamExt as _;
    use palisade_bundle::signing::SigningKey;

    let Some(server) = S3Server::start("palisade-cli") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let public = work.path().join("publisher.pub.pem");
    std::fs::write(&public, key.public_key_pem().unwrap()).unwrap();
    let bytes = bundle(&hello_manifest(), &guest("hello"));
    let bundle_path = work.path().join("hello.tar.zst");
    std::fs::write(&bundle_path, &bytes).unwrap();
    std::fs::write(
        work.path().join("hello.tar.zst.sig"),
        STANDARD.encode(key.sign(&bytes).unwrap()),
    )
    .unwrap();
    let palisade = |args: &[&str]| {
        let output = std::process::Command::new(palisade_binary())
            .arg("--data-dir")
            .arg(work.path().join("data"))
            .args(["--object-store", "s3://palisade-cli/team/"])
            .args(args)
            .envs(server.aws_env())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    tokio::task::block_in_place(|| {
        palisade(&["trust", "add", public.to_str().unwrap()]);
        palisade(&["publish", bundle_path.to_str().unwrap()]);
    });
    assert!(!work.path().join("data/objects/bundles").exists());
    let bucket = palisade_registry::BundleStore::s3(&server.config("")).unwrap();
    let keys: Vec<String> = bucket
        .inner()
        .list(None)
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
        .await;
    let hash = palisade_bundle::ContentHash::of(&bytes);
    assert!(
        keys.contains(&format!("team/bundles/{}.tar.zst", hash.hex())),
        "{keys:?}"
    );
}
