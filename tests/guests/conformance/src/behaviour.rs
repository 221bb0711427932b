//! The script: each step calls the host once and records the SDK's answer as its `Debug`
//! text, so the runner's answers and the test host's can be compared one by one. Secret
//! values are recorded by length only.

use std::time::Duration;

use palisade_sdk::http::{Request, Response};
use palisade_sdk::storage::{self, Condition};
use palisade_sdk::{cache, context, fetch, log, metrics, secrets};

/// Runs the script and answers `[[step, outcome], ...]` as JSON.
pub(crate) fn handle(_request: Request) -> Response {
    let mut steps: Vec<(&str, String)> = Vec::new();
    let mut step = |name: &'static str, outcome: String| steps.push((name, outcome));

    let invocation = context::get();
    step("context tenant", invocation.tenant_id);
    step("context extension", invocation.extension_id);
    step("context version", invocation.version);
    step("context trigger", invocation.trigger);
    step(
        "context greeting",
        format!("{:?}", context::config_get("greeting")),
    );
    step(
        "context missing",
        format!("{:?}", context::config_get("missing")),
    );
    log::write(log::Level::Info, "conformance ran", &[("steps", "all")]);

    let big = vec![b'x'; 1024 * 1024 + 1];
    step("get absent", format!("{:?}", storage::get("data", "a")));
    step(
        "create",
        format!(
            "{:?}",
            storage::set("data", "a", b"v1", Condition::MustNotExist)
        ),
    );
    step(
        "create again",
        format!(
            "{:?}",
            storage::set("data", "a", b"v1", Condition::MustNotExist)
        ),
    );
    step(
        "replace at revision",
        format!(
            "{:?}",
            storage::set("data", "a", b"v2", Condition::MustEqualRevision(1))
        ),
    );
    step(
        "write b",
        format!("{:?}", storage::set("data", "b", b"b", Condition::Any)),
    );
    step(
        "write c",
        format!("{:?}", storage::set("data", "c", b"c", Condition::Any)),
    );
    step("get a", format!("{:?}", storage::get("data", "a")));
    step(
        "delete at old revision",
        format!(
            "{:?}",
            storage::delete("data", "a", Condition::MustEqualRevision(1))
        ),
    );
    step(
        "delete must-not-exist",
        format!(
            "{:?}",
            storage::delete("data", "a", Condition::MustNotExist)
        ),
    );
    step(
        "delete",
        format!("{:?}", storage::delete("data", "a", Condition::Any)),
    );
    step(
        "delete absent",
        format!("{:?}", storage::delete("data", "a", Condition::Any)),
    );
    step(
        "delete absent must-not-exist",
        format!(
            "{:?}",
            storage::delete("data", "a", Condition::MustNotExist)
        ),
    );
    step(
        "recreate",
        format!("{:?}", storage::set("data", "a", b"v3", Condition::Any)),
    );
    step(
        "other namespace",
        format!("{:?}", storage::get("other", "x")),
    );
    step("namespace case", format!("{:?}", storage::get("Data", "x")));
    step("empty key", format!("{:?}", storage::get("data", "")));
    step(
        "NUL key",
        format!("{:?}", storage::set("data", "a\0b", b"", Condition::Any)),
    );
    step(
        "long key",
        format!("{:?}", storage::get("data", &"k".repeat(513))),
    );
    step(
        "large value",
        format!("{:?}", storage::set("data", "big", &big, Condition::Any)),
    );
    step(
        "over quota",
        format!(
            "{:?}",
            storage::set("data", "huge", &[b'x'; 5000], Condition::Any)
        ),
    );
    step(
        "limit 0",
        format!("{:?}", storage::list("data", "", None, 0)),
    );
    step(
        "limit 1001",
        format!("{:?}", storage::list("data", "", None, 1001)),
    );
    step(
        "bad cursor",
        format!("{:?}", storage::list("data", "", Some("not a cursor!"), 10)),
    );
    step(
        "NUL prefix",
        format!("{:?}", storage::list("data", "\0", None, 10)),
    );
    let first = storage::list("data", "", None, 2);
    step("first page", format!("{first:?}"));
    let cursor = first.ok().and_then(|page| page.next_cursor);
    step(
        "second page",
        format!("{:?}", storage::list("data", "", cursor.as_deref(), 2)),
    );
    step(
        "prefix",
        format!("{:?}", storage::list("data", "b", None, 10)),
    );

    step(
        "secret",
        format!("{:?}", secrets::get("API_TOKEN").map(|value| value.len())),
    );
    step("secret unset", format!("{:?}", secrets::get("UNSET_TOKEN")));
    step(
        "secret not granted",
        format!("{:?}", secrets::get("OTHER_TOKEN")),
    );

    let fetched =
        |request: fetch::Request| format!("{:?}", fetch::fetch(request).map(|r| r.status()));
    step(
        "egress other host",
        fetched(fetch::Request::get("https://denied.example.com/")),
    );
    step(
        "egress other scheme",
        fetched(fetch::Request::get("http://api.example.com/")),
    );
    step(
        "egress other port",
        fetched(fetch::Request::get("https://api.example.com:8443/")),
    );
    step(
        "egress subdomain",
        fetched(fetch::Request::get("https://v2.api.example.com/")),
    );
    step(
        "egress trailing dot",
        fetched(fetch::Request::get("https://api.example.com./")),
    );
    step(
        "egress forbidden header",
        fetched(fetch::Request::get("https://api.example.com/").with_header("host", "other")),
    );
    step(
        "egress proxy header",
        fetched(
            fetch::Request::get("https://api.example.com/").with_header("proxy-authorization", "x"),
        ),
    );
    step(
        "egress private address",
        fetched(fetch::Request::get("http://10.0.0.1/status")),
    );
    step(
        "egress not a URL",
        fetched(fetch::Request::get("ftp://api.example.com/")),
    );

    step(
        "counter",
        format!(
            "{:?}",
            metrics::counter_add("runs_total", &[("kind", "script")], 1)
        ),
    );
    step(
        "counter without suffix",
        format!(
            "{:?}",
            metrics::counter_add("runs", &[("kind", "script")], 2)
        ),
    );
    step(
        "kind mismatch",
        format!("{:?}", metrics::gauge_set("runs", &[], 1.0)),
    );
    step(
        "gauge",
        format!("{:?}", metrics::gauge_set("depth", &[], 2.5)),
    );
    step(
        "histogram",
        format!(
            "{:?}",
            metrics::histogram_observe("latency", &[("b", "2"), ("a", "1")], 0.5)
        ),
    );
    step(
        "histogram NaN",
        format!("{:?}", metrics::histogram_observe("latency", &[], f64::NAN)),
    );
    step(
        "collision",
        format!("{:?}", metrics::gauge_set("latency_count", &[], 1.0)),
    );
    step(
        "upper-case name",
        format!("{:?}", metrics::counter_add("Runs", &[], 1)),
    );
    step(
        "gauge _total",
        format!("{:?}", metrics::gauge_set("depth_total", &[], 1.0)),
    );
    step(
        "reserved label",
        format!("{:?}", metrics::counter_add("runs", &[("tenant", "t")], 1)),
    );
    let nine: Vec<(String, String)> = (0..9).map(|i| (format!("l{i}"), "v".to_owned())).collect();
    let nine: Vec<(&str, &str)> = nine.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    step(
        "nine labels",
        format!("{:?}", metrics::counter_add("runs", &nine, 1)),
    );
    let long_value = "v".repeat(129);
    step(
        "long label value",
        format!(
            "{:?}",
            metrics::counter_add("runs", &[("kind", long_value.as_str())], 1)
        ),
    );
    step(
        "repeated label",
        format!(
            "{:?}",
            metrics::counter_add("runs", &[("a", "1"), ("a", "2")], 1)
        ),
    );

    let minute = Duration::from_secs(60);
    step(
        "cache set",
        format!("{:?}", cache::set("k", b"cached", minute)),
    );
    step("cache get", format!("{:?}", cache::get("k")));
    step("cache empty key", format!("{:?}", cache::get("")));
    step(
        "cache long key",
        format!("{:?}", cache::get(&"k".repeat(257))),
    );
    step("cache NUL key", format!("{:?}", cache::get("a\0b")));
    step(
        "cache zero ttl",
        format!("{:?}", cache::set("k", b"", Duration::ZERO)),
    );
    step(
        "cache large value",
        format!("{:?}", cache::set("k", &big, minute)),
    );
    step("cache delete", format!("{:?}", cache::delete("k")));
    step("cache get deleted", format!("{:?}", cache::get("k")));

    Response::json(200, &steps)
}
