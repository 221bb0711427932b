//! HTTP egress end to end: a guest's `wasi:http/outgoing-handler` requests reach a local
//! upstream only through the install's allow-list ∩ the operator's egress policy, with
//! checked addresses, no redirects followed, size caps and the call's deadline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use palisade_bundle::CapabilityKey;
use palisade_registry::SecretValue;
use palisade_runtime::RuntimeConfig;
use palisade_runtime::capability::egress::{EgressPolicy, HostPattern};
use serde_json::{Value, json};

use crate::support::{Options, Platform, bundle, guest};

const PROBE: &str = "com.example.egress-probe";
const PROXY: &str = "com.example.github-proxy";
/// The operator's response cap in these tests.
const RESPONSE_CAP: u64 = 16 * 1024;

/// A local upstream; `auth` records the `authorization` header of each `/repos` request,
/// `traces` the `traceparent` of every request.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    traces: Arc<Mutex<Vec<Option<String>>>>,
}

async fn upstream() -> Upstream {
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let auth: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let traces: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = auth.clone();
    let app = Router::new()
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://elsewhere.example/landing")],
                    "moved",
                )
            }),
        )
        .route(
            "/big",
            get(|| async { vec![b'x'; RESPONSE_CAP as usize * 4] }),
        )
        .route(
            "/big-stream",
            get(|| async {
                let chunks =
                    (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1024])));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "too late"
            }),
        )
        .route(
            "/repos/{owner}/{repo}",
            get(
                move |Path((owner, repo)): Path<(String, String)>, headers: HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(
                            headers
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        );
                        if repo == "missing" {
                            return (
                                StatusCode::NOT_FOUND,
                                axum::Json(json!({"message": "Not Found"})),
                            );
                        }
                        (
                            StatusCode::OK,
                            axum::Json(json!({
                                "id": 1,
                                "full_name": format!("{owner}/{repo}"),
                                "description": "A test repository",
                                "html_url": format!("https://github.com/{owner}/{repo}"),
                                "language": "Rust",
                                "stargazers_count": 42,
                                "forks_count": 7,
                                "open_issues_count": 3,
                                "default_branch": "main",
                                "archived": false,
                                "pushed_at": "2024-05-01T12:00:00Z",
                                "owner": { "login": owner, "id": 9 },
                                "permissions": { "admin": true }
                            })),
                        )
                    }
                },
            ),
        )
        .layer(axum::middleware::from_fn({
            let hits = hits.clone();
            let traces = traces.clone();
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let hits = hits.clone();
                let traces = traces.clone();
                async move {
                    hits.lock().unwrap().push(req.uri().path().to_owned());
                    let trace = req.headers().get("traceparent");
                    traces
                        .lock()
                        .unwrap()
                        .push(trace.map(|v| v.to_str().unwrap().to_owned()));
                    next.run(req).await
                }
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream {
        addr,
        hits,
        auth,
        traces,
    }
}

impl Upstream {
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// The operator's policy of these tests: loopback 127.0.0.1 explicitly allowed.
fn loopback_policy() -> EgressPolicy {
    EgressPolicy {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        max_response_bytes: RESPONSE_CAP,
        ..EgressPolicy::default()
    }
}

async fn platform(egress: EgressPolicy) -> Platform {
    Platform::start_with(Options {
        runtime: RuntimeConfig {
            max_instances: 50,
            egress,
            ..RuntimeConfig::default()
        },
        ..Options::default()
    })
    .await
}

fn manifest(dir: &str, allow: &[String], timeout_ms: u64) -> Value {
    let path = format!("{}/{dir}/manifest.json", env!("CARGO_MANIFEST_DIR"));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    manifest["capabilities"]["http"]["allow"] = json!(allow);
    manifest["limits"]["timeout_ms"] = json!(timeout_ms);
    manifest
}

/// Publishes the probe allowing `allow` and installs it for `acme`.
async fn install_probe(platform: &Platform, allow: &[String], timeout_ms: u64) {
    let manifest = manifest("guests/egress-probe", allow, timeout_ms);
    platform
        .publish(&bundle(&manifest, &guest("egress-probe")))
        .await;
    platform
        .registry
        .install(
            "acme",
            PROBE,
            None,
            &[CapabilityKey::Log, CapabilityKey::Http],
            Default::default(),
        )
        .await
        .unwrap();
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the probe reported for a `GET url`.
async fn probe(platform: &Platform, url: &str, extra: &str) -> Value {
    let response = platform
        .call("acme", PROBE, &format!("/fetch?url={}{extra}", encode(url)))
        .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn an_allowed_origin_is_reached_and_the_guest_sees_the_upstream_answer() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 5000).await;

    let got = probe(&platform, &format!("{}/teapot", up.origin()), "").await;
    assert_eq!(got["outcome"], "response", "{got}");
    assert_eq!(got["status"], 418);
    assert_eq!(got["body"], "short and stout");
    assert_eq!(up.hits(), ["/teapot"]);
}

#[tokio::test]
async fn egress_requests_carry_the_calls_trace_from_the_caller_or_a_new_one() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 5000).await;
    let path = format!("/fetch?url={}", encode(&format!("{}/teapot", up.origin())));
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";

    let with_trace = platform
        .request("acme", reqwest::Method::GET, PROBE, &path)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_trace.status(), 200);
    let without = platform.call("acme", PROBE, &path).await;
    assert_eq!(without.status(), 200);

    let traces = up.traces.lock().unwrap().clone();
    assert_eq!(traces.len(), 2, "{traces:?}");
    let parts = |trace: &Option<String>| -> Vec<String> {
        let trace = trace.as_deref().expect("the upstream got a traceparent");
        trace.split('-').map(str::to_owned).collect()
    };
    let first = parts(&traces[0]);
    assert_eq!(first[0], "00");
    assert_eq!(
        first[1], caller_trace,
        "the caller's trace reaches the upstream"
    );
    assert_ne!(
        first[2], caller_span,
        "as a child span, not the caller's own"
    );
    let second = parts(&traces[1]);
    assert_ne!(second[1], caller_trace, "a call without a trace starts one");
    assert_eq!(second[1].len(), 32);

    // The execution log keeps each call's trace id.
    let rows = platform.execution_rows("acme", PROBE, 2).await;
    let logged: Vec<Option<&str>> = rows.iter().rev().map(|r| r.trace_id.as_deref()).collect();
    assert_eq!(
        logged,
        [Some(caller_trace), Some(second[1].as_str())],
        "{rows:?}"
    );
}

#[tokio::test]
async fn an_origin_outside_the_allow_list_is_denied() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 5000).await;

    let other_port = format!("http://127.0.0.1:{}/teapot", up.addr.port() + 1);
    for url in [
        other_port.as_str(),
        "https://api.github.com/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let got = probe(&platform, url, "").await;
        assert_eq!(got["outcome"], "error", "{url}: {got}");
        assert_eq!(got["kind"], "denied", "{url}: {got}");
    }
    let https_same_host = format!("https://{}/teapot", up.addr);
    let got = probe(&platform, &https_same_host, "").await;
    assert_eq!(got["kind"], "denied", "{got}");
    assert!(up.hits().is_empty());
}

#[tokio::test]
async fn an_allowed_name_resolving_to_a_refused_address_fails_closed() {
    let up = upstream().await;
    let by_name = format!("http://localhost:{}", up.addr.port());

    // The operator's policy does not allow loopback: the name resolves, the address is refused.
    let closed = platform(EgressPolicy::default()).await;
    install_probe(&closed, std::slice::from_ref(&by_name), 5000).await;
    let got = probe(&closed, &format!("{by_name}/teapot"), "").await;
    assert_eq!(got["outcome"], "error", "{got}");
    assert_eq!(got["kind"], "prohibited", "{got}");
    assert!(up.hits().is_empty(), "no connection was made");

    // With 127.0.0.1/32 allowed by the operator, the same request goes through.
    let open = platform(loopback_policy()).await;
    install_probe(&open, std::slice::from_ref(&by_name), 5000).await;
    let got = probe(&open, &format!("{by_name}/teapot"), "").await;
    assert_eq!(got["status"], 418, "{got}");
    assert_eq!(up.hits(), ["/teapot"]);
}

#[tokio::test]
async fn operator_policy_applies_on_top_of_the_manifest() {
    let up = upstream().await;
    let deny_all = platform(EgressPolicy {
        deny_all: true,
        ..loopback_policy()
    })
    .await;
    install_probe(&deny_all, &[up.origin()], 5000).await;
    let got = probe(&deny_all, &format!("{}/teapot", up.origin()), "").await;
    assert_eq!(got["kind"], "denied", "{got}");

    let deny_host = platform(EgressPolicy {
        deny_hosts: vec![HostPattern::parse("127.0.0.1").unwrap()],
        ..loopback_policy()
    })
    .await;
    install_probe(&deny_host, &[up.origin()], 5000).await;
    let got = probe(&deny_host, &format!("{}/teapot", up.origin()), "").await;
    assert_eq!(got["kind"], "denied", "{got}");
    assert!(up.hits().is_empty());
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 5000).await;

    let got = probe(&platform, &format!("{}/redirect", up.origin()), "").await;
    assert_eq!(got["outcome"], "response", "{got}");
    assert_eq!(got["status"], 302);
    assert_eq!(got["location"], "http://elsewhere.example/landing");
    assert_eq!(up.hits(), ["/redirect"]);
}

#[tokio::test]
async fn a_response_over_the_operator_cap_is_an_error() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 5000).await;

    for path in ["/big", "/big-stream"] {
        let got = probe(&platform, &format!("{}{path}", up.origin()), "").await;
        assert_eq!(got["outcome"], "error", "{path}: {got}");
        assert_eq!(got["kind"], "too_large", "{path}: {got}");
    }
}

#[tokio::test]
async fn timeouts_respect_the_guest_options_and_the_call_deadline() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_probe(&platform, &[up.origin()], 1500).await;
    let slow = format!("{}/slow", up.origin());

    // The guest's own first-byte timeout.
    let started = Instant::now();
    let got = probe(&platform, &slow, "&timeout_ms=200").await;
    assert_eq!(got["kind"], "timeout", "{got}");
    assert!(started.elapsed() < Duration::from_millis(1400));

    // No guest timeout: the upstream sleeps past the manifest's deadline; the exchange is
    // cut at the deadline, so the call ends by it, either with the epoch trap (504) or with
    // the guest's own report of the timed-out request if it answers first.
    let started = Instant::now();
    let response = platform
        .call("acme", PROBE, &format!("/fetch?url={}", encode(&slow)))
        .await;
    let elapsed = started.elapsed();
    let status = response.status();
    let text = response.text().await.unwrap();
    match status.as_u16() {
        504 => {}
        200 => {
            let got: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(got["kind"], "timeout", "{got}");
        }
        other => panic!("unexpected status {other}: {text}"),
    }
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(up.hits(), ["/slow", "/slow"]);
}

async fn install_proxy(platform: &Platform, up: &Upstream) {
    let manifest = manifest("../guests/github-proxy", &[up.origin()], 5000);
    platform
        .publish(&bundle(&manifest, &guest("github-proxy")))
        .await;
    platform
        .registry
        .install(
            "acme",
            PROXY,
            None,
            &[
                CapabilityKey::Log,
                CapabilityKey::Secrets,
                CapabilityKey::Http,
            ],
            [("api_base".to_owned(), up.origin())].into_iter().collect(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn github_proxy_summarises_a_repository_with_and_without_a_token() {
    let up = upstream().await;
    let platform = platform(loopback_policy()).await;
    install_proxy(&platform, &up).await;

    let response = platform.call("acme", PROXY, "/repos/octo/hello").await;
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(
        summary,
        json!({
            "full_name": "octo/hello",
            "description": "A test repository",
            "url": "https://github.com/octo/hello",
            "language": "Rust",
            "stars": 42,
            "forks": 7,
            "open_issues": 3,
            "default_branch": "main",
            "archived": false,
            "pushed_at": "2024-05-01T12:00:00Z"
        })
    );
    assert_eq!(up.auth.lock().unwrap().clone(), [None::<String>]);

    platform
        .registry
        .set_secret(
            &platform.sealer,
            "acme",
            PROXY,
            "GITHUB_TOKEN",
            &SecretValue::new("ghp_e2e"),
        )
        .await
        .unwrap();
    let response = platform.call("acme", PROXY, "/repos/octo/hello").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        up.auth.lock().unwrap().last().cloned().flatten().as_deref(),
        Some("Bearer ghp_e2e")
    );

    let missing = platform.call("acme", PROXY, "/repos/octo/missing").await;
    assert_eq!(missing.status(), 404);
    let bad = platform.call("acme", PROXY, "/repos/octo/a..b%2Fc").await;
    assert_ne!(bad.status(), 200);
}

#[tokio::test]
async fn github_proxy_with_the_default_base_is_denied_when_not_allowed() {
    let up = upstream().await;
    // The manifest allows only the test upstream, but the install keeps the default base.
    let platform = platform(loopback_policy()).await;
    let manifest = manifest("../guests/github-proxy", &[up.origin()], 5000);
    platform
        .publish(&bundle(&manifest, &guest("github-proxy")))
        .await;
    platform
        .registry
        .install(
            "acme",
            PROXY,
            None,
            &[
                CapabilityKey::Log,
                CapabilityKey::Secrets,
                CapabilityKey::Http,
            ],
            Default::default(),
        )
        .await
        .unwrap();
    let response = platform.call("acme", PROXY, "/repos/octo/hello").await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_not_allowed", "{body}");
}
