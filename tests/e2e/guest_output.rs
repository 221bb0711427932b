//! What a guest writes — log lines, stdout, stderr — is bounded, escaped, stored without
//! harm to other rows of the execution log, and kept when the call times out.

use palisade_protocol::ExecuteStats;
use palisade_registry::PublishedVersion;

use crate::support::{HopCall, Platform, bundle, guest};

const TENANT: &str = "acme";
const OTHER_TENANT: &str = "globex";
const NOISY: &str = "com.example.noisy";
const HELLO: &str = "com.example.hello";

fn manifest() -> serde_json::Value {
    serde_json::json!({
        "id": NOISY,
        "name": "Noisy",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "noisy.wasm",
        "capabilities": { "log": true },
        "api": { "endpoints": [
            { "method": "GET", "path": "/nul" },
            { "method": "GET", "path": "/flood/:lines/:bytes" },
            { "method": "GET", "path": "/sleep" }
        ] },
        "limits": { "timeout_ms": 1000, "memory_mb": 32 }
    })
}

/// A platform with the noisy guest installed for [`TENANT`] and hello for
/// [`OTHER_TENANT`].
async fn platform() -> (Platform, PublishedVersion) {
    let platform = Platform::start().await;
    platform.install_hello(OTHER_TENANT).await;
    let published = platform
        .publish(&bundle(&manifest(), &guest("noisy")))
        .await;
    platform
        .registry
        .install(
            TENANT,
            NOISY,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    (platform, published)
}

/// Calls `path` of the noisy guest on the runner directly, as the gateway does, and
/// returns the runner's status and what it reported the call consumed.
async fn execute_on_runner(
    platform: &Platform,
    published: &PublishedVersion,
    request_id: &str,
    path: &str,
) -> (u16, ExecuteStats) {
    let install = platform
        .registry
        .resolve(TENANT, NOISY)
        .await
        .unwrap()
        .unwrap();
    let mut call = HopCall::get(TENANT, &install.install_id, published, path);
    call.context.request_id = request_id.into();
    let reply = call
        .signed(&platform.service_keys)
        .send(platform.runner)
        .await;
    (
        reply.status,
        reply
            .stats()
            .expect("the runner reports what the call consumed"),
    )
}

/// PostgreSQL refuses NUL in text: a guest printing it once made the writer's whole batch
/// (other tenants' rows and usage included) fail. Now guest text is escaped, and every
/// row of both tenants is stored, on SQLite and on PostgreSQL.
#[tokio::test]
async fn nul_and_control_characters_in_guest_output_lose_no_execution_log_rows() {
    let (platform, _) = platform().await;
    for _ in 0..20 {
        let (noisy, hello) = tokio::join!(
            platform.call(TENANT, NOISY, "/nul"),
            platform.call(OTHER_TENANT, HELLO, "/hello/ada"),
        );
        assert_eq!(noisy.status(), 200);
        assert_eq!(hello.status(), 200);
        // Read to their ends, which carry what each call consumed and logged (a caller
        // that drops an answer early leaves a `cancelled` row without them).
        noisy.bytes().await.unwrap();
        hello.bytes().await.unwrap();
    }
    let hello_rows = platform.execution_rows(OTHER_TENANT, HELLO, 20).await;
    assert_eq!(
        hello_rows.len(),
        20,
        "the other tenant's rows are all stored"
    );
    let noisy_rows = platform.execution_rows(TENANT, NOISY, 20).await;
    assert_eq!(
        noisy_rows.len(),
        20,
        "the noisy guest's rows are all stored"
    );

    let install = platform
        .registry
        .resolve(OTHER_TENANT, HELLO)
        .await
        .unwrap()
        .unwrap();
    let mut calls = 0;
    for row in &hello_rows {
        calls = calls.max(
            platform
                .registry
                .quota_usage(
                    &install.install_id,
                    palisade_registry::quota::METRIC_CALLS,
                    row.created_at_ms,
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(calls, 20, "the other tenant's usage is counted");

    for row in &noisy_rows {
        let excerpt = row.log_excerpt.as_deref().unwrap_or_default();
        assert!(
            !excerpt.contains('\0') && !excerpt.contains('\r') && !excerpt.contains('\x1b'),
            "{excerpt:?}"
        );
        // One text line per guest line: the embedded newline did not start a new line.
        assert_eq!(excerpt.lines().count(), 3, "{excerpt:?}");
        assert!(excerpt.contains("stdout before\\0after"), "{excerpt:?}");
        assert!(
            excerpt.contains("stderr bell\\u{7}escape\\u{1b}[31mred\\rreturn"),
            "{excerpt:?}"
        );
        assert!(
            excerpt.contains(
                "info line one\\nERROR palisade_runner: forged line\\0 key\\n=value\\0\\u{1b}"
            ),
            "{excerpt:?}"
        );
    }
}

/// 1000 lines of 4 KiB (4 MiB) keep 256 KiB: the runner reports the lines kept and
/// dropped, and the excerpt ends with the mark of the cut.
#[tokio::test]
async fn a_flood_of_log_lines_is_capped_in_bytes_and_the_cut_is_marked() {
    let (platform, published) = platform().await;
    let (status, stats) =
        execute_on_runner(&platform, &published, "flood-1", "/flood/1000/4096").await;
    assert_eq!(status, 200);
    // Each line counts its level and message: 4 + 4096 bytes; 63 fit in 256 KiB.
    assert_eq!(stats.log_lines, 63, "{stats:?}");
    assert_eq!(stats.dropped_log_lines, 1000 - 63, "{stats:?}");
    let last = stats.log_excerpt.lines().last().unwrap_or_default();
    assert!(last.starts_with("cut "), "{last}");
    // The first line fits the 4 KiB excerpt only in part.
    assert!(last.contains("999 more lines not shown"), "{last}");
    assert!(stats.log_excerpt.starts_with("info xxxx"), "{stats:?}");
    assert!(stats.log_excerpt.len() <= 4096);
}

/// A guest that logs and then blocks in a host call past its deadline is cut by the
/// runner's own deadline; the lines it wrote before are in the runner's answer and in the
/// execution log.
#[tokio::test]
async fn a_call_that_times_out_keeps_the_lines_logged_before_the_deadline() {
    let (platform, published) = platform().await;
    let (status, stats) = execute_on_runner(&platform, &published, "sleep-1", "/sleep").await;
    assert_eq!(status, 504);
    assert_eq!(stats.log_lines, 2, "{stats:?}");
    assert!(
        stats
            .log_excerpt
            .contains("info logged before the deadline\n"),
        "{stats:?}"
    );
    assert!(
        stats
            .log_excerpt
            .contains("stdout printed before the deadline\n"),
        "{stats:?}"
    );

    let response = platform.call(TENANT, NOISY, "/sleep").await;
    assert_eq!(response.status(), 504);
    let rows = platform.execution_rows(TENANT, NOISY, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "timeout");
    let excerpt = rows[0].log_excerpt.as_deref().unwrap_or_default();
    assert!(
        excerpt.contains("logged before the deadline"),
        "{excerpt:?}"
    );
    assert!(
        excerpt.contains("printed before the deadline"),
        "{excerpt:?}"
    );
}
