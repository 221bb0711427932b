//! Traces and logs of real `palisade` processes: a call carrying the caller's
//! `traceparent` is exported over OTLP to a receiver on loopback as one trace — the
//! gateway's span, the runner's child of it, and the egress request's child of that, whose
//! id the third party receives — and every JSON log line about the call names it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use palisade_bundle::CapabilityKey;
use serde_json::{Value, json};

use crate::process::{Server, free_addr};
use crate::support::{Seeder, serve};

const TENANT: &str = "acme";
const PROBE: &str = "com.example.egress-probe";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One exported span: its service, name, ids and parent.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// Every span in the OTLP/JSON export requests `bodies`.
fn spans(bodies: &[Value]) -> Vec<Exported> {
    let mut found = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                    found.push(Exported {
                        service: service.clone(),
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                    });
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_is_one_exported_trace_from_caller_to_egress_and_its_log_lines_name_it() {
    // The OTLP receiver, and the third party the extension calls.
    let exports: Arc<Mutex<Vec<Value>>> = Arc::default();
    let received = exports.clone();
    let receiver = serve(Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                received.lock().unwrap().push(body);
                axum::Json(json!({}))
            }
        }),
    ))
    .await;
    let upstream_traces: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = upstream_traces.clone();
    let upstream = serve(Router::new().route(
        "/teapot",
        get(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                if let Some(trace) = headers.get("traceparent") {
                    seen.lock()
                        .unwrap()
                        .push(trace.to_str().unwrap_or_default().to_owned());
                }
                "short and stout"
            }
        }),
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let database_url = palisade_registry::testing::database_url(data_dir);
    let seeder = Seeder::open(&database_url, data_dir.join("objects")).await;
    let manifest_path = format!(
        "{}/guests/egress-probe/manifest.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    manifest["capabilities"]["http"]["allow"] = json!([format!("http://{upstream}")]);
    seeder
        .install(
            TENANT,
            &manifest,
            "egress-probe",
            &[CapabilityKey::Log, CapabilityKey::Http],
        )
        .await;
    let config = data_dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\n\
             [telemetry]\notlp_endpoint = \"http://{receiver}\"\notlp_protocol = \"http/json\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let client = reqwest::Client::new();
    let runner_addr = free_addr();
    let mut runner = Server::spawn(
        "runner",
        data_dir,
        &database_url,
        &runner_addr,
        data_dir.join("runner.log"),
        "info",
        &[
            "--config",
            config,
            "--log-json",
            "runner",
            "--listen",
            &runner_addr,
        ],
    );
    runner.wait_healthy(&client).await;
    let gateway_addr = free_addr();
    let runner_url = runner.url.clone();
    let mut gateway = Server::spawn(
        "gateway",
        data_dir,
        &database_url,
        &gateway_addr,
        data_dir.join("gateway.log"),
        "info",
        &[
            "--config",
            config,
            "--log-json",
            "gateway",
            "--dev",
            "--runner",
            &runner_url,
            "--listen",
            &gateway_addr,
        ],
    );
    gateway.wait_healthy(&client).await;

    let pem = std::fs::read(data_dir.join("keys/caller-issuer.key.pem")).unwrap();
    let token = palisade_gateway::mint_dev_token(
        &pem,
        "palisade-dev",
        "palisade",
        TENANT,
        "user-1",
        Duration::from_secs(600),
    )
    .unwrap();
    let url = format!(
        "{}/api/ext/{PROBE}/fetch?url=http%3A%2F%2F{}%2Fteapot",
        gateway.url,
        upstream.to_string().replace(':', "%3A")
    );
    let response = client
        .get(&url)
        .bearer_auth(&token)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["body"], "short and stout", "{body}");
    // A call the gateway refuses itself (no such endpoint) is logged there.
    let refused = client
        .get(format!("{}/api/ext/{PROBE}/nope", gateway.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // Stopping flushes the spans not yet exported.
    assert!(gateway.terminate().await.success());
    assert!(runner.terminate().await.success());

    let exported = spans(&exports.lock().unwrap());
    let in_trace: Vec<&Exported> = exported
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    let find = |name: &str| -> Exported {
        let found: Vec<&&Exported> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` span in {exported:#?}");
        (*found[0]).clone()
    };
    let call = find("extension_call");
    let invocation = find("invocation");
    let egress = find("egress");
    assert_eq!(call.service, "palisade-gateway");
    assert_eq!(
        call.parent_span_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(invocation.service, "palisade-runner");
    assert_eq!(invocation.parent_span_id, call.span_id);
    assert_eq!(egress.service, "palisade-runner");
    assert_eq!(egress.parent_span_id, invocation.span_id);
    let upstream_saw = upstream_traces.lock().unwrap().clone();
    assert_eq!(
        upstream_saw,
        [format!("00-{CALLER_TRACE}-{}-01", egress.span_id)],
        "the third party sees the egress span as its parent"
    );

    // Every JSON log line inside a call's spans names the call: its request id, trace id,
    // tenant, extension, version and content hash.
    let mut about_the_calls = 0;
    for server in [&gateway, &runner] {
        for line in server.log_text().lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                panic!("{} wrote a line that is not JSON: {line}", server.name);
            };
            let mut fields = serde_json::Map::new();
            for span in entry["spans"].as_array().into_iter().flatten() {
                if let Some(span) = span.as_object() {
                    fields.extend(span.clone());
                }
            }
            let Some(id) = fields.get("request_id").and_then(Value::as_str) else {
                continue;
            };
            about_the_calls += 1;
            for key in ["trace_id", "tenant", "extension", "version", "content_hash"] {
                assert!(fields.contains_key(key), "no `{key}` in {line}");
            }
            if id == request_id {
                assert_eq!(fields["trace_id"], CALLER_TRACE, "{line}");
            } else {
                assert_eq!(id, refused_id, "{line}");
            }
            assert_eq!(fields["tenant"], TENANT, "{line}");
            assert_eq!(fields["extension"], PROBE, "{line}");
        }
    }
    assert!(about_the_calls >= 1, "no log line about the calls");
}
