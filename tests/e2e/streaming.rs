//! The execute hop carries bodies as streams, both ways, through gateway and runner: a
//! guest's lines reach the caller as they are written, an endless body is cut at its limit
//! with its status already sent, an upload reaches the guest without being held whole, and
//! the headers a manifest declares pass in each direction while others do not.

use std::time::{Duration, Instant};

use crate::support::{Platform, bundle, guest};

const TENANT: &str = "acme";
pub(crate) const RAW: &str = "com.example.raw-http";

pub(crate) fn manifest(max_request_bytes: u64) -> serde_json::Value {
    serde_json::json!({
        "id": RAW,
        "name": "Raw HTTP",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "raw_http.wasm",
        "capabilities": { "log": false },
        "api": {
            "endpoints": [
                { "method": "GET", "path": "/lines" },
                { "method": "GET", "path": "/endless" },
                { "method": "GET", "path": "/download" },
                { "method": "POST", "path": "/upload" },
                { "method": "*", "path": "/headers" }
            ],
            "headers": {
                "request": ["x-hub-signature-256"],
                "response": ["x-response-extra"]
            }
        },
        "limits": {
            "timeout_ms": 10000,
            "memory_mb": 16,
            "max_request_bytes": max_request_bytes,
            "max_response_bytes": 1048576
        }
    })
}

async fn platform(max_request_bytes: u64) -> Platform {
    let platform = Platform::start_with(crate::support::Options {
        runner: palisade_runner::RunnerConfig {
            max_request_bytes: 16 << 20,
            ..Default::default()
        },
        gateway: |config| config.max_request_bytes = 16 << 20,
        ..Default::default()
    })
    .await;
    platform
        .publish(&bundle(&manifest(max_request_bytes), &guest("raw-http")))
        .await;
    platform
        .registry
        .install(TENANT, RAW, None, &[], Default::default())
        .await
        .unwrap();
    platform.install_hello(TENANT).await;
    platform
}

/// The first line arrives while the guest is still writing: by the time it is read, far
/// less time has passed than the guest needs for all of them.
#[tokio::test]
async fn a_guests_lines_reach_the_caller_as_they_are_written() {
    let platform = platform(1024).await;
    // Compile first, so that the timing below is the stream's alone.
    assert_eq!(
        platform.call_status(TENANT, RAW, "/lines?n=1&ms=0").await,
        200
    );
    let started = Instant::now();
    let response = platform.call(TENANT, RAW, "/lines?n=12&ms=250").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    let mut response = response;
    let first = response.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(first.starts_with(b"line 0\n"), "{first:?}");
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(text.ends_with("line 11\n"), "{text}");
    // 11 pauses of 250 ms: the whole body takes at least 2.75 s.
    assert!(total >= Duration::from_millis(2750), "{total:?}");
    assert!(
        first_at < Duration::from_millis(1500),
        "the first line took {first_at:?} of {total:?}"
    );
}

/// A guest that writes forever: the caller gets its 200 and headers, then a body cut at
/// the limit (an aborted read, not a clean end), and both servers go on serving.
#[tokio::test]
async fn an_endless_body_is_cut_at_its_limit_after_the_head() {
    let platform = platform(1024).await;
    let started = Instant::now();
    let response = platform.call(TENANT, RAW, "/endless").await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut response = response;
    let mut received = 0usize;
    let mut aborted = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break,
            Err(_) => {
                aborted = true;
                break;
            }
        }
    }
    assert!(aborted, "the cut body must not end cleanly");
    assert!(received <= 1048576, "{received} bytes passed the limit");
    // Cut at the limit, not at the deadline.
    assert!(started.elapsed() < Duration::from_secs(8));

    platform.assert_hello_answers(TENANT).await;
    let lines = platform.call(TENANT, RAW, "/lines?n=2&ms=0").await;
    assert_eq!(lines.text().await.unwrap(), "line 0\nline 1\n");

    // The execution log records the 200 that went out and why the body was cut.
    let mut row = None;
    for _ in 0..100 {
        row = platform
            .registry
            .recent_executions(TENANT, Some(RAW), 100)
            .await
            .unwrap()
            .into_iter()
            .find(|row| row.request_id == request_id);
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = row.expect("the call is logged");
    assert_eq!(row.status, Some(200));
    assert_eq!(row.error_code.as_deref(), Some("too_large"));
    assert_eq!(row.outcome, "rejected");
    let sent = row.response_bytes.expect("the bytes sent are logged");
    assert!(
        sent <= 1 << 20 && sent >= received as u64,
        "{sent} {received}"
    );
}

/// A download with a declared length arrives whole, with its `content-length`.
#[tokio::test]
async fn a_declared_length_download_arrives_whole() {
    let platform = platform(1024).await;
    let response = platform.call(TENANT, RAW, "/download?mib=1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1048576");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 1 << 20);
}

/// An upload larger than anything buffered on the way reaches the guest whole, read as
/// it streams; one past the limit is answered 413.
#[tokio::test]
async fn an_upload_streams_to_the_guest_and_its_limit_holds() {
    let platform = platform(8 << 20).await;
    let url = format!("http://{}/api/ext/{RAW}/upload", platform.gateway);
    // A body of `count` chunks of 64 KiB, made as it is sent, without a length.
    let chunks = |count: usize| {
        let frames = futures::stream::iter((0..count).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![
                1u8;
                64 * 1024
            ])))
        }));
        reqwest::Body::wrap(http_body_util::StreamBody::new(frames))
    };
    // 4 MiB, streamed without a length.
    let response = platform
        .client
        .post(&url)
        .bearer_auth(platform.token(TENANT))
        .body(chunks(64))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], 4 << 20);
    assert_eq!(answer["sum"], 4 << 20);

    // 16 MiB against the 8 MiB limit, without a length: cut on the way, answered 413.
    let response = platform
        .client
        .post(&url)
        .bearer_auth(platform.token(TENANT))
        .body(chunks(256))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    // With a declared length past the limit: refused before anything runs.
    let response = platform
        .client
        .post(&url)
        .bearer_auth(platform.token(TENANT))
        .body(vec![0u8; 9 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    platform.assert_hello_answers(TENANT).await;
}

/// Headers the manifest declares reach the guest and the caller; undeclared ones do not;
/// `location` passes on a redirect only.
#[tokio::test]
async fn declared_headers_pass_and_others_do_not() {
    let platform = platform(1024).await;
    let call = |status: u16| {
        platform
            .client
            .get(format!(
                "http://{}/api/ext/{RAW}/headers?status={status}",
                platform.gateway
            ))
            .bearer_auth(platform.token(TENANT))
            .header("x-hub-signature-256", "sha256=abc")
            .header("x-undeclared-request", "secret")
            .header("x-palisade-tenant", "globex")
            .send()
    };
    let response = call(200).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-response-extra"], "declared");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"seen.txt\""
    );
    assert!(response.headers().get("x-undeclared").is_none());
    assert!(response.headers().get("location").is_none());
    let seen = response.text().await.unwrap();
    assert!(seen.contains("x-hub-signature-256: sha256=abc"), "{seen}");
    assert!(!seen.contains("x-undeclared-request"), "{seen}");
    assert!(!seen.contains("x-palisade"), "{seen}");
    assert!(!seen.contains("authorization"), "{seen}");

    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "http://{}/api/ext/{RAW}/headers?status=302",
            platform.gateway
        ))
        .bearer_auth(platform.token(TENANT))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], "/elsewhere");
}

/// A manifest declaring a header that can never pass is refused at publish, naming it.
#[tokio::test]
async fn a_manifest_declaring_a_forbidden_header_is_refused() {
    let platform = Platform::start().await;
    for (direction, name) in [
        ("request", "authorization"),
        ("request", "cookie"),
        ("response", "set-cookie"),
        ("request", "x-palisade-tenant"),
        ("response", "transfer-encoding"),
    ] {
        let mut manifest = manifest(1024);
        manifest["api"]["headers"][direction] = serde_json::json!([name]);
        // Packing refuses it already; publishing checks again, for bundles packed by other
        // tools.
        let text = serde_json::to_string(&manifest).unwrap();
        let packed =
            palisade_bundle::pack(text.as_bytes(), "raw_http.wasm", &guest("raw-http"), &[]);
        assert!(packed.unwrap_err().to_string().contains(name));
        manifest["component"] = "hello.wasm".into();
        let text = serde_json::to_string(&manifest).unwrap();
        let error = platform
            .publish_error(&crate::publish::raw_bundle(
                text.as_bytes(),
                &guest("raw-http"),
            ))
            .await;
        assert!(error.contains(name), "{direction} {name}: {error}");
    }
}

/// The sample's SDK-built streaming route, through gateway and runner: every line, in
/// order, with the headers the guest set.
#[tokio::test]
async fn an_sdk_streaming_response_arrives_line_by_line() {
    let platform = platform(1024).await;
    let response = platform
        .call(
            TENANT,
            "com.example.hello",
            "/hello/ada/stream?lines=3&interval_ms=20",
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "Hello, ada! (1/3)\nHello, ada! (2/3)\nHello, ada! (3/3)\n"
    );
}
