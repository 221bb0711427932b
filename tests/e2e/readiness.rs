//! `/readyz` on the gateway and the runner: ready on a working platform; not ready, with
//! the failing check named, when the object store stops answering or the runner drains —
//! while `/healthz` (liveness) stays up for what is still alive. `palisade schema`, a
//! deployment's migration job, creates the schema and checks the same things.

use palisade_registry::ObjectStoreConfig;
use palisade_registry::testing::S3Server;
use serde_json::{Value, json};

use crate::support::{Options, Platform};

async fn get(platform: &Platform, addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let response = platform
        .client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_are_ready_until_the_object_store_stops_and_a_draining_runner_is_not() {
    let Some(mut server) = S3Server::start("palisade-readyz") else {
        return;
    };
    let platform = Platform::start_with(Options {
        objects: Some(ObjectStoreConfig::S3(server.config(""))),
        ..Options::default()
    })
    .await;
    let ok = json!({"database": "ok", "trust_set": "ok", "object_store": "ok"});
    let (status, body) = get(&platform, platform.gateway, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"], ok);
    assert_eq!(body["healthy_runners"], 1);
    let (status, body) = get(&platform, platform.runner, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"], ok);
    assert_eq!(body["draining"], false);

    server.stop();
    for addr in [platform.gateway, platform.runner] {
        let (status, body) = get(&platform, addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "not_ready");
        assert_eq!(
            body["checks"],
            json!({"database": "ok", "trust_set": "ok", "object_store": "failing"})
        );
        // Alive all the same: not a reason to restart the process.
        assert_eq!(get(&platform, addr, "/healthz").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_runner_is_not_ready() {
    let platform = Platform::start().await;
    assert_eq!(get(&platform, platform.runner, "/readyz").await.0, 200);
    platform.runner_state.drain().begin();
    let (status, body) = get(&platform, platform.runner, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["draining"], true);
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "trust_set": "ok", "object_store": "ok"})
    );
}

#[test]
fn palisade_schema_creates_the_registry_and_refuses_an_unready_one() {
    let dir = tempfile::tempdir().unwrap();
    let schema = || {
        std::process::Command::new(crate::support::palisade_binary())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("schema")
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let done = schema();
    assert!(done.status.success(), "{done:?}");
    assert!(String::from_utf8_lossy(&done.stdout).contains("registry schema is current"));
    assert!(dir.path().join("registry.db").is_file());
    // Again: nothing to do, still fine.
    assert!(schema().status.success());

    // The object store replaced by a file: the job fails and says why.
    let objects = dir.path().join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let failed = schema();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("object"), "{stderr}");
}
