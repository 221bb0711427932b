//! The `metrics` capability end to end: samples recorded by guests appear at the runner's
//! `/metrics` with the host's `tenant` and `extension` labels; what the host refuses is
//! reported to the guest; publishing refuses an ungranted import.

use std::path::PathBuf;

use palisade_bundle::CapabilityKey;

use crate::support::{Platform, bundle, guest, ok_json};

const COUNTER: &str = "com.example.counter";
const PROBE: &str = "com.example.metrics-probe";
/// The exposition prefix of [`COUNTER`]'s metrics.
const C: &str = "ext_com_example_counter__";
/// The exposition prefix of [`PROBE`]'s metrics.
const P: &str = "ext_com_example_metrics_0probe__";

fn manifest(relative: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn counter_manifest() -> serde_json::Value {
    manifest("../guests/counter/manifest.json")
}

fn probe_manifest() -> serde_json::Value {
    manifest("guests/metrics-probe/manifest.json")
}

/// Publishes `component` under `manifest` and installs it for each tenant, approving
/// `log` and `metrics`.
async fn install(
    platform: &Platform,
    manifest: &serde_json::Value,
    component: &str,
    tenants: &[&str],
) {
    let approved = [CapabilityKey::Log, CapabilityKey::Metrics];
    platform
        .install_guest(manifest, component, tenants, &approved)
        .await;
}

/// `POST /hit/{page}` on the counter extension for `tenant`.
async fn hit(platform: &Platform, tenant: &str, page: &str, body: &str) -> serde_json::Value {
    let path = format!("/hit/{page}");
    let request = platform.request(tenant, reqwest::Method::POST, COUNTER, &path);
    ok_json(
        request
            .header("content-type", "text/plain")
            .body(body.to_owned()),
    )
    .await
}

/// `GET /probe?{query}` on the metrics probe for `tenant`.
async fn probe(platform: &Platform, tenant: &str, query: &str) -> serde_json::Value {
    let response = platform
        .call(tenant, PROBE, &format!("/probe?{query}"))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The runner's `/metrics` exposition.
async fn scrape(platform: &Platform) -> String {
    let response = platform
        .client
        .get(format!("http://{}/metrics", platform.runner))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn granted_metrics_appear_at_the_runner_with_tenant_and_extension_labels() {
    let platform = Platform::start().await;
    install(&platform, &counter_manifest(), "counter", &["acme"]).await;

    let answer = hit(&platform, "acme", "home", "hello").await;
    assert_eq!(
        answer,
        serde_json::json!({ "page": "home", "body_bytes": 5, "errors": [] })
    );
    hit(&platform, "acme", "home", "hi").await;
    hit(&platform, "acme", "about", "").await;

    let text = scrape(&platform).await;
    let series = format!(r#"tenant="acme",extension="{COUNTER}""#);
    for line in [
        format!("# TYPE {C}page_hits counter"),
        format!(r#"{C}page_hits_total{{{series},page="home"}} 2"#),
        format!(r#"{C}page_hits_total{{{series},page="about"}} 1"#),
        format!("# TYPE {C}last_body_bytes gauge"),
        format!(r#"{C}last_body_bytes{{{series},page="home"}} 2.0"#),
        format!("# TYPE {C}hit_body_bytes histogram"),
        format!(r#"{C}hit_body_bytes_count{{{series}}} 3"#),
        format!(r#"{C}hit_body_bytes_sum{{{series}}} 7.0"#),
        format!(r#"{C}hit_body_bytes_bucket{{le="0.005",{series}}} 1"#),
        format!(r#"palisade_extension_series_dropped_total{{{series}}} 0"#),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn a_guest_importing_metrics_without_the_grant_is_refused_at_publish() {
    let platform = Platform::start().await;
    let mut manifest = probe_manifest();
    manifest["capabilities"] = serde_json::json!({ "log": true });
    let bytes = bundle(&manifest, &guest("metrics-probe"));
    let err = platform.publish_error(&bytes).await;
    assert!(err.contains("palisade:extension/metrics"), "{err}");
    assert!(err.contains("capabilities.metrics"), "{err}");
    assert!(
        platform
            .registry
            .list_extensions()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_samples_are_reported_to_the_guest() {
    let platform = Platform::start().await;
    install(&platform, &probe_manifest(), "metrics-probe", &["acme"]).await;

    let answer = probe(&platform, "acme", "name=Bad-Name").await;
    assert_eq!(answer["recorded"], 0);
    assert_eq!(answer["first_error"]["error"], "invalid-name", "{answer}");
    let message = answer["first_error"]["message"].as_str().unwrap();
    assert!(message.contains("`Bad-Name`"), "{message}");

    let answer = probe(&platform, "acme", "name=ok&label.tenant=other").await;
    assert_eq!(answer["first_error"]["error"], "invalid-label", "{answer}");
    let message = answer["first_error"]["message"].as_str().unwrap();
    assert!(message.contains("`tenant` is reserved"), "{message}");

    let answer = probe(&platform, "acme", "name=jobs&kind=counter").await;
    assert_eq!(answer["recorded"], 1, "{answer}");
    let answer = probe(&platform, "acme", "name=jobs&kind=gauge").await;
    assert_eq!(answer["first_error"]["error"], "kind-mismatch", "{answer}");

    let text = scrape(&platform).await;
    assert!(!text.contains("Bad"), "{text}");
    assert!(!text.contains(&format!("{P}ok")), "{text}");
    assert!(
        text.contains(&format!(
            r#"{P}jobs_total{{tenant="acme",extension="{PROBE}"}} 1"#
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_series_bound_refuses_new_series_and_counts_the_drops() {
    let platform = Platform::start().await;
    install(
        &platform,
        &probe_manifest(),
        "metrics-probe",
        &["acme", "globex"],
    )
    .await;

    // The default bound is 1000 series per install.
    let answer = probe(&platform, "acme", "name=spam&series=1003").await;
    assert_eq!(answer["recorded"], 1000, "{answer}");
    assert_eq!(answer["refused"]["too-many-series"], 3, "{answer}");
    assert_eq!(answer["first_error"]["error"], "too-many-series");

    // Existing series still record; new ones are refused.
    let answer = probe(&platform, "acme", "name=spam&value=5&series=2").await;
    assert_eq!(answer["recorded"], 2, "{answer}");
    let answer = probe(&platform, "acme", "name=fresh").await;
    assert_eq!(
        answer["first_error"]["error"], "too-many-series",
        "{answer}"
    );

    // Another tenant's install has its own bound.
    let answer = probe(&platform, "globex", "name=fresh").await;
    assert_eq!(answer["recorded"], 1, "{answer}");

    let text = scrape(&platform).await;
    let acme = format!(r#"tenant="acme",extension="{PROBE}""#);
    let globex = format!(r#"tenant="globex",extension="{PROBE}""#);
    for line in [
        format!("palisade_extension_series_dropped_total{{{acme}}} 4"),
        format!("palisade_extension_series_dropped_total{{{globex}}} 0"),
        format!(r#"{P}spam_total{{{acme},series="0"}} 6"#),
        format!(r#"{P}spam_total{{{acme},series="999"}} 1"#),
        format!("{P}fresh_total{{{globex}}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(!text.contains(r#"series="1000""#));
    assert_eq!(
        text.matches(&format!("{P}spam_total{{{acme}")).count(),
        1000
    );
}

#[tokio::test]
async fn two_tenants_series_are_separate() {
    let platform = Platform::start().await;
    install(
        &platform,
        &counter_manifest(),
        "counter",
        &["acme", "globex"],
    )
    .await;

    hit(&platform, "acme", "home", "a").await;
    hit(&platform, "acme", "home", "b").await;
    hit(&platform, "globex", "home", "c").await;

    let text = scrape(&platform).await;
    for line in [
        format!(r#"{C}page_hits_total{{tenant="acme",extension="{COUNTER}",page="home"}} 2"#),
        format!(r#"{C}page_hits_total{{tenant="globex",extension="{COUNTER}",page="home"}} 1"#),
        format!(r#"{C}hit_body_bytes_count{{tenant="acme",extension="{COUNTER}"}} 2"#),
        format!(r#"{C}hit_body_bytes_count{{tenant="globex",extension="{COUNTER}"}} 1"#),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[tokio::test]
async fn extensions_have_their_own_metric_names_and_collisions_are_refused() {
    const TWIN: &str = "com.example.metrics-probe-twin";
    let platform = Platform::start().await;
    install(&platform, &probe_manifest(), "metrics-probe", &["acme"]).await;
    let mut twin = probe_manifest();
    twin["id"] = TWIN.into();
    install(&platform, &twin, "metrics-probe", &["acme"]).await;

    // The probe claims `jobs` as a counter first; the twin's `jobs` is its own gauge.
    let answer = probe(&platform, "acme", "name=jobs&kind=counter").await;
    assert_eq!(answer["recorded"], 1, "{answer}");
    let response = platform
        .call("acme", TWIN, "/probe?name=jobs&kind=gauge&value=7")
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["recorded"], 1, "{answer}");

    // Within one extension, a gauge beside a histogram's `_count` series is refused.
    let answer = probe(&platform, "acme", "name=latency&kind=histogram&value=0.2").await;
    assert_eq!(answer["recorded"], 1, "{answer}");
    let answer = probe(&platform, "acme", "name=latency_count&kind=gauge").await;
    assert_eq!(answer["first_error"]["error"], "invalid-name", "{answer}");
    let message = answer["first_error"]["message"].as_str().unwrap();
    assert!(message.contains("histogram `latency`"), "{message}");

    let text = scrape(&platform).await;
    let twin_prefix = "ext_com_example_metrics_0probe_0twin__";
    for line in [
        format!("# TYPE {P}jobs counter"),
        format!(r#"{P}jobs_total{{tenant="acme",extension="{PROBE}"}} 1"#),
        format!("# TYPE {twin_prefix}jobs gauge"),
        format!(r#"{twin_prefix}jobs{{tenant="acme",extension="{TWIN}"}} 7.0"#),
        format!("# TYPE {P}latency histogram"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(
        !text.contains(&format!("# TYPE {P}latency_count")),
        "{text}"
    );
    // Every family is declared once.
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let declared = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), declared, "{text}");
}

/// Runs `promtool check metrics` (Debian's `prometheus`, which `.ci/run` installs) on a
/// Prometheus text exposition. Without promtool the check is skipped, except under CI.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool check skipped: {error} (install Debian's prometheus)");
            return;
        }
        Err(error) => panic!("promtool: {error}; .ci/run installs Debian's prometheus"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_runner_and_the_gateway_export_their_own_series_after_real_calls() {
    let platform = Platform::start().await;
    platform.install_hello("acme").await;
    platform
        .install_guest(
            &crate::hostile::manifest(),
            "hostile",
            &["acme"],
            &[CapabilityKey::Log],
        )
        .await;
    for _ in 0..3 {
        // Read whole: a caller that drops the answer early makes a `cancelled` call.
        let response = platform
            .call("acme", "com.example.hello", "/hello/ada")
            .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let panicked = platform.call("acme", "com.example.hostile", "/panic").await;
    assert_eq!(panicked.status(), 500);

    let counter = r#"extension="com.example.hello""#;
    let hostile = r#"extension="com.example.hostile""#;
    let expected = [
        format!(r#"palisade_runner_calls_total{{{counter},trigger="http",outcome="ok"}} 3"#),
        format!(r#"palisade_runner_calls_total{{{hostile},trigger="http",outcome="trap"}} 1"#),
        format!(r#"palisade_runner_call_errors_total{{{hostile},trigger="http",code="trap"}} 1"#),
        format!(r#"palisade_runner_guest_duration_seconds_count{{{counter},trigger="http"}} 3"#),
        format!(r#"palisade_runner_guest_peak_memory_bytes_count{{{counter}}} 3"#),
        "palisade_runner_calls_in_flight 0".to_owned(),
        r#"palisade_runner_component_loads_total{source="compiled"} 2"#.to_owned(),
    ];
    // A streamed call is counted when the runner's body reaches its end, which can be just
    // after the caller read the answer: wait for the last ones.
    let runner = &platform;
    let text = until_exported(move || scrape(runner), &expected, 5).await;
    // The registry's query latency: the runner loaded the installs it served.
    let loads = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"palisade_runner_registry_query_seconds_count{operation="load_install"} "#,
            )
        })
        .and_then(|count| count.parse::<u64>().ok());
    assert!(loads.is_some_and(|n| n >= 1), "{text}");
    // No tenant label by default.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("palisade_runner") && l.contains("tenant=")),
        "{text}"
    );

    let plain = platform
        .client
        .get(format!("http://{}/metrics", platform.runner))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let plain = plain.text().await.unwrap();
    assert!(
        plain.contains("# TYPE palisade_runner_calls_total counter"),
        "{plain}"
    );
    promtool_check(&plain);

    // The gateway's, behind the admin token or a `metrics` credential.
    let gateway_metrics = |token: Option<&str>, accept: &str| {
        let mut request = platform
            .client
            .get(format!("http://{}/metrics", platform.gateway))
            .header("accept", accept);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = gateway_metrics(None, "*/*").await.unwrap();
    assert_eq!(refused.status(), 401);
    let scraper = platform
        .registry
        .add_credential("prometheus", palisade_registry::CredentialScope::Metrics)
        .await
        .unwrap();
    let events_only = platform
        .registry
        .add_credential("helpdesk", palisade_registry::CredentialScope::Events)
        .await
        .unwrap();
    let refused = gateway_metrics(Some(&events_only), "*/*").await.unwrap();
    assert_eq!(refused.status(), 401);
    let expected = [
        format!(r#"palisade_gateway_calls_total{{{counter},outcome="ok"}} 3"#),
        format!(r#"palisade_gateway_calls_total{{{hostile},outcome="trap"}} 1"#),
        format!(r#"palisade_gateway_call_duration_seconds_count{{{counter}}} 3"#),
        "palisade_gateway_calls_in_flight 0".to_owned(),
        r#"palisade_gateway_execution_log_rows_total{result="dropped"} 0"#.to_owned(),
    ];
    // A call's row is counted when its answer's body is dropped, just after the caller
    // read it: wait for the last ones.
    let gateway_metrics = &gateway_metrics;
    let scraper = scraper.as_str();
    let scrape_gateway = move || async move {
        let response = gateway_metrics(Some(scraper), "*/*").await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let text = until_exported(scrape_gateway, &expected, 5).await;
    assert!(text.ends_with("# EOF\n"));
    let gateway_plain = gateway_metrics(Some(crate::support::ADMIN_TOKEN), "text/plain")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&gateway_plain);

    // The dashboard shipped in docs/ queries only series that these servers export and
    // that docs/operations.md lists.
    let exported: Vec<(String, String)> = [plain.as_str(), gateway_plain.as_str()]
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();
    let operations = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    let queried = dashboard_series();
    assert!(queried.len() >= 10, "{queried:?}");
    // Fuel is counted only where the operator turned fuel metering on; it is off here.
    let not_produced_here = ["palisade_runner_fuel_consumed_total"];
    for name in queried {
        if not_produced_here.contains(&name.as_str()) {
            assert!(operations.contains(&format!("`{name}`")), "{name}");
            continue;
        }
        let family = exported.iter().find(|(family, kind)| {
            *family == name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str())))
        });
        let Some((family, _)) = family else {
            panic!("the dashboard queries `{name}`, which neither server exports")
        };
        assert!(
            operations.contains(&format!("`{family}`")),
            "docs/operations.md does not list `{family}`"
        );
    }

    // A caller that goes away mid-answer: the runner's body is dropped before its end, and
    // the call is counted as `cancelled`.
    let streaming = platform
        .call("acme", "com.example.hello", "/hello/ada/stream?lines=40")
        .await;
    assert_eq!(streaming.status(), 200);
    drop(streaming);
    let cancelled =
        format!(r#"palisade_runner_calls_total{{{counter},trigger="http",outcome="cancelled"}} 1"#);
    until_exported(move || scrape(runner), &[cancelled], 10).await;
}

/// Scrapes with `scrape` until every line of `expected` is in the exposition, failing after
/// `within_secs`; returns the exposition.
async fn until_exported<F, Fut>(mut scrape: F, expected: &[String], within_secs: u64) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(within_secs);
    loop {
        let text = scrape().await;
        let missing = expected
            .iter()
            .find(|line| !text.lines().any(|l| l == line.as_str()));
        match missing {
            None => return text,
            Some(line) if std::time::Instant::now() > deadline => {
                panic!("missing `{line}` in:\n{text}")
            }
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Every series name the Grafana dashboard in docs/ queries.
fn dashboard_series() -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/palisade.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("palisade_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    names
}
