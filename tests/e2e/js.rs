//! JavaScript extensions: the sample `guests/js-hello`, a componentize-js (StarlingMonkey)
//! component, published signed, installed and called through the gateway like any other.
//!
//! The component is built by npm, not by build.rs: `just test` runs `npm ci` and
//! `npm run build` in `guests/js-hello` first, and when `dist/js_hello.wasm` is missing or
//! older than its sources these tests run the same two commands themselves (once per test
//! binary), so `cargo test --workspace` alone works on a machine with Node.js and npm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use palisade_bundle::CapabilityKey;

use crate::support::{Platform, bundle};

const ID: &str = "com.example.js-hello";

/// `guests/js-hello`.
fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/js-hello")
}

/// The sample's manifest.
fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(sample_dir().join("manifest.json")).unwrap()).unwrap()
}

/// The sample's component, built first when it is missing or out of date.
fn component() -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build(&sample_dir()));
    match built {
        Ok(path) => std::fs::read(path).unwrap(),
        Err(why) => panic!("{why}"),
    }
}

/// `dir/dist/js_hello.wasm`, after `npm ci` (when `node_modules` is older than the lock
/// file) and `npm run build` (when the component is older than its sources).
fn build(dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join("dist/js_hello.wasm");
    let sources = newest(&[
        dir.join("src"),
        dir.join("wit"),
        dir.join("build.mjs"),
        dir.join("package.json"),
        dir.join("package-lock.json"),
    ]);
    if modified(&out).is_some_and(|built| sources.is_none_or(|newest| built >= newest)) {
        return Ok(out);
    }
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let locked = modified(&dir.join("package-lock.json"));
    if installed.is_none() || installed < locked {
        npm(dir, &["ci", "--no-audit", "--no-fund"])?;
    }
    npm(dir, &["run", "build"])?;
    if modified(&out).is_none() {
        return Err(format!("`npm run build` did not write {}", out.display()));
    }
    Ok(out)
}

/// Runs `npm args` in `dir`; the error says what failed and how to do it by hand.
fn npm(dir: &Path, args: &[&str]) -> Result<(), String> {
    let by_hand = format!(
        "build it with `cd {} && npm ci --no-audit --no-fund && npm run build` (Node.js 20 or newer)",
        dir.display()
    );
    let output = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!("the JavaScript sample needs npm, which did not start ({e}): {by_hand}")
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`npm {}` in {} failed ({}):\n{}\n{}\n{by_hand}",
        args.join(" "),
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of `paths` and everything under them.
fn newest(paths: &[PathBuf]) -> Option<SystemTime> {
    let mut pending = paths.to_vec();
    let mut newest = None;
    while let Some(path) = pending.pop() {
        newest = newest.max(modified(&path));
        if let Ok(entries) = std::fs::read_dir(&path) {
            pending.extend(entries.map(|entry| entry.unwrap().path()));
        }
    }
    newest
}

/// The newest execution-log row of `request_id`, waiting up to 5 s for it.
async fn row_of(platform: &Platform, request_id: &str) -> palisade_registry::ExecutionRecord {
    for _ in 0..250 {
        let rows = platform
            .registry
            .recent_executions("acme", Some(ID), 100)
            .await
            .unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.request_id == request_id) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no execution-log row for {request_id}");
}

#[tokio::test]
async fn js_hello_is_published_installed_and_called() {
    let component = component();
    let platform = Platform::start().await;
    let published = platform.publish(&bundle(&manifest(), &component)).await;
    assert_eq!(published.extension_id, ID);
    platform
        .registry
        .install("acme", ID, None, &[CapabilityKey::Log], Default::default())
        .await
        .unwrap();

    // Compiling the embedded engine can take longer than the 5 s the manifest gives a call
    // (about 20 s on two cores), so the first calls on a fresh runner may time out; the
    // compile carries on without them, and then the extension answers.
    let started = std::time::Instant::now();
    let response = loop {
        let response = platform.call("acme", ID, "/hello/Ada%20L.").await;
        if response.status() != 504 {
            break response;
        }
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "timeout");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "still not compiled after {:?}",
            started.elapsed()
        );
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "greeting": "Hello, Ada L.!",
            "tenant": "acme",
            "extension": ID,
            "version": "0.1.0",
            "user": "user-1",
        })
    );
    let row = row_of(&platform, &request_id).await;
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.status, Some(200));
    assert_eq!(row.path, "/hello/:name");
    let excerpt = row.log_excerpt.unwrap_or_default();
    assert!(excerpt.contains("info greeting name=Ada L."), "{excerpt}");

    // Each call is a fresh instance: the second one answers for its own request.
    let response = platform.call("acme", ID, "/hello/bob").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "Hello, bob!");

    // The guest's own refusals come back as it wrote them.
    let response = platform.call("acme", ID, "/hello/%ff").await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");

    // A streamed body arrives line by line, the first line before the last is written.
    let started = std::time::Instant::now();
    let mut response = platform
        .call("acme", ID, "/hello/ada/stream?lines=3&interval_ms=100")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let mut text = String::new();
    let mut first_line_after = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        first_line_after.get_or_insert(started.elapsed());
    }
    let total = started.elapsed();
    assert_eq!(
        text,
        "Hello, ada! (1/3)\nHello, ada! (2/3)\nHello, ada! (3/3)\n"
    );
    let first = first_line_after.unwrap();
    assert!(
        total >= first + Duration::from_millis(150),
        "the lines came together: first after {first:?}, all after {total:?}"
    );
}

#[tokio::test]
async fn js_hello_imports_only_what_its_manifest_grants() {
    let component = component();
    let imports = palisade_bundle::component_imports(&component).unwrap();
    for expected in [
        "palisade:extension/context@0.2.0",
        "palisade:extension/log@0.2.0",
        "wasi:http/types@0.2.10",
    ] {
        assert!(imports.iter().any(|i| i == expected), "{imports:?}");
    }
    // Built without componentize-js's `http` feature: no egress, no sockets.
    for absent in ["wasi:http/outgoing-handler", "wasi:sockets/"] {
        assert!(
            !imports.iter().any(|i| i.starts_with(absent)),
            "{imports:?}"
        );
    }

    let platform = Platform::start().await;
    let mut without_log = manifest();
    without_log["capabilities"]["log"] = serde_json::json!(false);
    let error = platform
        .publish_error(&bundle(&without_log, &component))
        .await;
    assert!(
        error.contains("palisade:extension/log@0.2.0") && error.contains("capabilities.log"),
        "{error}"
    );
}

/// The sample carries its own copy of the WIT it builds against (componentize-js reads
/// one directory); the Palisade interfaces in it are the released ones, unchanged.
#[test]
fn js_hello_wit_copies_the_released_interfaces() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["context.wit", "log.wit"] {
        let copy = sample_dir().join("wit/deps/palisade-extension").join(file);
        assert_eq!(
            std::fs::read_to_string(&copy).unwrap(),
            std::fs::read_to_string(root.join("wit").join(file)).unwrap(),
            "{} differs from wit/{file}",
            copy.display()
        );
    }
}
