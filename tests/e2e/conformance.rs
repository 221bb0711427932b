//! The SDK's test host answers as the runner does: one script (`tests/guests/conformance`)
//! calls every capability — storage conditions, revisions, paging and limits, secrets,
//! egress checks, metric rules, cache bounds, context — once through a real platform and
//! once natively against `palisade_sdk::testing::TestHost` built from the same manifest,
//! and every step's answer must be the same.

use std::collections::BTreeMap;

use palisade_bundle::CapabilityKey;
use palisade_registry::SecretValue;
use serde_json::Value;

use crate::support::{Platform, bundle, guest, ok_json};

#[path = "../guests/conformance/src/behaviour.rs"]
mod behaviour;

const EXT: &str = "com.example.conformance";
const TOKEN: &str = "conformance-token";

fn manifest_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/conformance/manifest.json"
    );
    std::fs::read_to_string(path).unwrap()
}

/// The script's answers through the gateway and a real runner.
async fn through_the_runner() -> Vec<(String, String)> {
    let platform = Platform::start().await;
    let manifest: Value = serde_json::from_str(&manifest_text()).unwrap();
    platform
        .publish(&bundle(&manifest, &guest("conformance")))
        .await;
    let approved = [
        CapabilityKey::Log,
        CapabilityKey::Storage,
        CapabilityKey::Secrets,
        CapabilityKey::Http,
        CapabilityKey::Metrics,
        CapabilityKey::Cache,
    ];
    let config = BTreeMap::from([("greeting".to_owned(), "hello".to_owned())]);
    platform
        .registry
        .install("acme", EXT, None, &approved, config)
        .await
        .unwrap();
    platform
        .registry
        .set_secret(
            &platform.sealer,
            "acme",
            EXT,
            "API_TOKEN",
            &SecretValue::new(TOKEN),
        )
        .await
        .unwrap();
    let answer = ok_json(platform.request("acme", reqwest::Method::GET, EXT, "/run")).await;
    serde_json::from_value(answer).unwrap()
}

/// The script's answers natively, against the SDK's test host.
fn against_the_test_host() -> (Vec<(String, String)>, palisade_sdk::testing::TestHost) {
    use palisade_sdk::http::{Method, Request};
    let host = palisade_sdk::testing::TestHost::from_manifest(&manifest_text())
        .unwrap()
        .with_tenant("acme")
        .with_config("greeting", "hello")
        .with_secret("API_TOKEN", TOKEN);
    let response = host.call(behaviour::handle, Request::new(Method::Get, "/run"));
    assert_eq!(response.status(), 200);
    (response.body_json().unwrap(), host)
}

#[tokio::test]
async fn the_sdk_test_host_answers_every_step_as_the_runner_does() {
    let real = through_the_runner().await;
    let (fake, host) = against_the_test_host();
    assert_eq!(real.len(), fake.len());
    let differing: Vec<String> = real
        .iter()
        .zip(&fake)
        .filter(|(real, fake)| real != fake)
        .map(|((step, real), (_, fake))| {
            format!("{step}:\n  runner:    {real}\n  test host: {fake}")
        })
        .collect();
    assert!(
        differing.is_empty(),
        "the test host differs from the runner:\n{}",
        differing.join("\n")
    );

    // The answers are the documented ones, not merely equal.
    let answers: BTreeMap<&str, &str> = real
        .iter()
        .map(|(step, outcome)| (step.as_str(), outcome.as_str()))
        .collect();
    for (step, expected) in [
        ("context tenant", "acme"),
        ("context greeting", "Some(\"hello\")"),
        ("create", "Ok(1)"),
        ("create again", "Err(Conflict { current: Some(1) })"),
        ("replace at revision", "Ok(2)"),
        ("delete absent", "Ok(false)"),
        ("recreate", "Ok(5)"),
        ("other namespace", "Err(AccessDenied)"),
        ("over quota", "Err(QuotaExceeded)"),
        ("secret", &format!("Ok({})", TOKEN.len())),
        ("secret unset", "Err(NotFound)"),
        ("secret not granted", "Err(NotGranted)"),
        (
            "egress other host",
            "Err(Denied { url: \"https://denied.example.com/\" })",
        ),
        (
            "egress private address",
            "Err(Prohibited { url: \"http://10.0.0.1/status\" })",
        ),
        ("kind mismatch", "Err(KindMismatch)"),
        ("cache get", "Ok(Some([99, 97, 99, 104, 101, 100]))"),
        ("cache zero ttl", "Err(InvalidTtl)"),
    ] {
        assert_eq!(answers.get(step).copied(), Some(expected), "step {step}");
    }
    assert!(answers["second page"].contains("key: \"c\""), "{answers:?}");

    // What the script left behind, as the test host shows it.
    assert_eq!(host.stored("data", "a").map(|e| e.revision), Some(5));
    assert_eq!(host.counter("runs", &[("kind", "script")]), Some(3));
    assert_eq!(
        host.observations("latency", &[("a", "1"), ("b", "2")]),
        [0.5]
    );
    let logs = host.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].message, "conformance ran");
}
