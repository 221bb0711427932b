//! Released WIT versions side by side, and the caller's identity: a component built once
//! against `palisade:extension@0.1.0` (checked in, never rebuilt) runs unmodified next to
//! one built against the newest version, which is told the calling user; the execution
//! log keeps the user, and `palisade logs` prints it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_bundle::CapabilityKey;
use palisade_registry::ExecutionRecord;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Platform, bundle, guest, palisade_binary};

const OLD: &str = "com.example.context-probe-old";
const HELLO: &str = "com.example.hello";

/// The component built against `palisade:extension@0.1.0`; see its README.
const OLD_COMPONENT: &[u8] = include_bytes!("../fixtures/wit-0.1-guest/context-probe-0.1.wasm");

fn old_manifest() -> Value {
    json!({
        "id": OLD,
        "name": "Context probe built against WIT 0.1.0",
        "publisher": "Palisade tests",
        "version": "1.0.0",
        "runtime": "wasi-http@0.2",
        "component": "probe.wasm",
        "capabilities": {"log": true, "storage": {"namespaces": ["data"]}},
        "api": {"endpoints": [
            {"method": "GET", "path": "/context"},
            {"method": "GET", "path": "/storage/:key"},
            {"method": "PUT", "path": "/storage/:key"}
        ]},
        "limits": {"timeout_ms": 5000, "memory_mb": 32}
    })
}

/// Publishes and installs the old probe and the hello sample for `acme`.
async fn install_both(platform: &Platform) {
    platform
        .publish(&bundle(&old_manifest(), OLD_COMPONENT))
        .await;
    platform
        .registry
        .install(
            "acme",
            OLD,
            None,
            &[CapabilityKey::Log, CapabilityKey::Storage],
            [("colour".to_owned(), "teal".to_owned())].into(),
        )
        .await
        .unwrap();
    platform.install_hello("acme").await;
}

/// The execution-log rows of `extension` for `acme`, which must come to `count`.
async fn rows(platform: &Platform, extension: &str, count: usize) -> Vec<ExecutionRecord> {
    let rows = platform.execution_rows("acme", extension, count).await;
    assert!(
        rows.len() >= count,
        "the execution log never held {count} rows of {extension}"
    );
    rows
}

#[tokio::test]
async fn a_guest_built_against_wit_0_1_runs_unmodified_beside_a_0_2_guest() {
    // The fixture really is an old component: it imports the 0.1.0 interfaces.
    let imports = palisade_bundle::imports::component_imports(OLD_COMPONENT).unwrap();
    for interface in ["context", "log", "storage"] {
        let name = format!("palisade:extension/{interface}@0.1.0");
        assert!(imports.contains(&name), "{imports:?}");
    }
    let new_imports = palisade_bundle::imports::component_imports(&guest("hello")).unwrap();
    assert!(
        new_imports.contains(&"palisade:extension/context@0.2.0".to_owned()),
        "{new_imports:?}"
    );

    let platform = Platform::start().await;
    install_both(&platform).await;

    // context@0.1.0: the old record, without the user, and the install's config.
    let response = platform.call("acme", OLD, "/context").await;
    assert_eq!(response.status(), 200);
    let context: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(context["wit"], "0.1.0");
    assert_eq!(context["tenant_id"], "acme");
    assert_eq!(context["extension_id"], OLD);
    assert_eq!(context["version"], "1.0.0");
    assert_eq!(context["trigger"], "http");
    assert_eq!(context["config"], json!({"colour": "teal"}));
    assert!(
        context["content_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:")),
        "{context}"
    );

    // storage@0.1.0, served by the current implementation: revisions and all.
    for (value, revision) in [("first", "1"), ("second", "2")] {
        let response = platform
            .request("acme", Method::PUT, OLD, "/storage/greeting")
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), revision);
    }
    let response = platform.call("acme", OLD, "/storage/greeting").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "second");
    let response = platform.call("acme", OLD, "/storage/missing").await;
    assert_eq!(response.status(), 404);

    // context@0.2.0 tells the new guest who called.
    let response = platform.call("acme", HELLO, "/hello/ada").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], "user-1", "{body}");

    // Both calls leave rows with the user; log@0.1.0 reached the old guest's row.
    let old_rows = rows(&platform, OLD, 5).await;
    assert!(
        old_rows
            .iter()
            .all(|r| r.user_id.as_deref() == Some("user-1"))
    );
    let context_row = old_rows
        .iter()
        .find(|r| r.path == "/context")
        .expect("a row of the context call");
    let excerpt = context_row.log_excerpt.as_deref().unwrap_or_default();
    assert!(
        excerpt.contains("context read by a 0.1.0 guest"),
        "{excerpt}"
    );
    let hello_rows = rows(&platform, HELLO, 1).await;
    assert_eq!(hello_rows[0].user_id.as_deref(), Some("user-1"));
}

#[tokio::test]
async fn a_caller_without_a_user_reaches_the_guest_as_none() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    // A token of the tenant that names no user (no `sub`).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": crate::support::ISSUER, "aud": crate::support::AUDIENCE, "tenant": "acme",
        "iat": now, "exp": now + 60,
    });
    let key = jsonwebtoken::EncodingKey::from_ed_pem(platform.caller_keys.private_pem.as_bytes())
        .unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &key,
    )
    .unwrap();
    let response = platform
        .client
        .get(format!(
            "http://{}/api/ext/{HELLO}/hello/ada",
            platform.gateway
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], Value::Null, "{body}");
    assert_eq!(rows(&platform, HELLO, 1).await[0].user_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palisade_logs_prints_calls_with_their_user_and_follows_new_ones() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    assert_eq!(platform.call_status("acme", HELLO, "/hello/ada").await, 200);
    assert_eq!(platform.call_status("acme", HELLO, "/nope").await, 404);
    rows(&platform, HELLO, 2).await;
    let server = format!("http://{}", platform.gateway);
    let work = tempfile::tempdir().unwrap();
    let logs = |extra: &[&str]| {
        let mut command = Command::new(palisade_binary());
        command
            .arg("--data-dir")
            .arg(work.path())
            .args(["logs", HELLO, "--tenant", "acme", "--server", &server])
            .args(extra)
            .env("PALISADE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn");
        command
    };

    let output = tokio::task::block_in_place(|| logs(&[]).output().unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("    |")).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains(" 200 ok ") && lines[0].contains("GET /hello/:name"),
        "{stdout}"
    );
    assert!(lines[0].contains("user=user-1"), "{stdout}");
    assert!(lines[1].contains(" 404 "), "{stdout}");
    assert!(
        stdout.contains("    | "),
        "the guest's log line is shown: {stdout}"
    );

    let output = tokio::task::block_in_place(|| logs(&["--status", "4xx"]).output().unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(" 404 "), "{stdout}");

    let output = tokio::task::block_in_place(|| logs(&["--status", "9xx"]).output().unwrap());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--status") && stderr.contains("`9xx`"),
        "{stderr}"
    );

    // --follow prints a call made after it started.
    let mut child = logs(&["--follow", "--status", "2xx", "--limit", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), lines_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.contains(" 200 "), "{first}");
    let response = platform.call("acme", HELLO, "/hello/bob").await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let followed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines_rx.recv().await {
            if line.contains(&request_id) {
                return line;
            }
        }
        panic!("--follow stopped");
    })
    .await
    .expect("--follow printed the new call");
    assert!(followed.contains("user=user-1"), "{followed}");
    child.kill().unwrap();
    child.wait().unwrap();
}
