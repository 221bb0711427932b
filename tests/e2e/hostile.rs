//! Hostile guests: each misbehaviour gets its documented status and code, and the runner
//! keeps serving a well-behaved guest during and after.

use crate::support::{Platform, bundle, guest};

const TENANT: &str = "acme";
const HOSTILE: &str = "com.example.hostile";

fn manifest() -> serde_json::Value {
    serde_json::json!({
        "id": HOSTILE,
        "name": "Hostile",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "hostile.wasm",
        "capabilities": { "log": true },
        "api": { "endpoints": [
            { "method": "GET", "path": "/ok" },
            { "method": "GET", "path": "/loop" },
            { "method": "GET", "path": "/alloc" },
            { "method": "GET", "path": "/alloc/:mib" },
            { "method": "GET", "path": "/panic" },
            { "method": "GET", "path": "/stack" },
            { "method": "GET", "path": "/exit" },
            { "method": "GET", "path": "/logs/:n" },
            { "method": "GET", "path": "/sandbox" }
        ] },
        "limits": { "timeout_ms": 1000, "memory_mb": 16 }
    })
}

async fn platform() -> Platform {
    let platform = Platform::start().await;
    platform.install_hello(TENANT).await;
    platform
        .publish(&bundle(&manifest(), &guest("hostile")))
        .await;
    platform
        .registry
        .install(
            TENANT,
            HOSTILE,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    platform
}

async fn expect_error(platform: &Platform, path: &str, status: u16, code: &str) {
    let response = platform.call(TENANT, HOSTILE, path).await;
    assert_eq!(response.status(), status, "{path}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{path}: {body}");
}

async fn hello_still_works(platform: &Platform) {
    let response = platform
        .call(TENANT, "com.example.hello", "/hello/ada")
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_infinite_loop_is_cut_at_the_deadline() {
    let platform = platform().await;
    let started = std::time::Instant::now();
    let (looping, ()) = tokio::join!(
        expect_error(&platform, "/loop", 504, "timeout"),
        hello_still_works(&platform),
    );
    let () = looping;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    hello_still_works(&platform).await;
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory_and_the_slot_is_reusable() {
    let platform = platform().await;
    expect_error(&platform, "/alloc", 500, "out_of_memory").await;
    // Right under the cap works; the next bomb fails the same way.
    let response = platform.call(TENANT, HOSTILE, "/alloc/8").await;
    assert_eq!(response.status(), 200);
    expect_error(&platform, "/alloc/64", 500, "out_of_memory").await;
    hello_still_works(&platform).await;
}

#[tokio::test]
async fn panics_stack_overflows_and_exits_are_traps() {
    let platform = platform().await;
    expect_error(&platform, "/panic", 500, "trap").await;
    expect_error(&platform, "/stack", 500, "trap").await;
    expect_error(&platform, "/exit", 500, "trap").await;
    hello_still_works(&platform).await;
    let response = platform.call(TENANT, HOSTILE, "/ok").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn thousands_of_log_lines_are_bounded_not_fatal() {
    let platform = platform().await;
    let response = platform.call(TENANT, HOSTILE, "/logs/5000").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "5000");
}

#[tokio::test]
async fn the_sandbox_has_no_environment_and_no_files() {
    let platform = platform().await;
    let response = platform.call(TENANT, HOSTILE, "/sandbox").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["env"], serde_json::json!([]));
    assert_eq!(body["root"], "denied");
    assert_eq!(body["etc_passwd"], "denied");
}
