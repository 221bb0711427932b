//! Quotas end to end: a real runner measures each call's fuel, the gateway's execution-log
//! writer adds it to the usage counters, the gateway refuses once a quota is used up, and
//! `palisade usage` reads back what the calls used.

use std::process::Command;

use palisade_gateway::quota::{QuotaConfig, QuotaLimits, TenantQuotas};
use palisade_runtime::RuntimeConfig;
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Options, Platform, palisade_binary};

const HELLO: &str = "com.example.hello";

fn options() -> Options {
    Options {
        runtime: RuntimeConfig {
            fuel: true,
            max_instances: 50,
            ..RuntimeConfig::default()
        },
        gateway: |config| {
            let mut quotas = QuotaConfig {
                default: TenantQuotas {
                    tenant: QuotaLimits::default(),
                    install: QuotaLimits {
                        calls: Some(3),
                        ..QuotaLimits::default()
                    },
                },
                usage_refresh: std::time::Duration::ZERO,
                ..QuotaConfig::default()
            };
            // `lean` may burn one fuel a day: its first call is admitted, and the fuel it
            // used refuses the next.
            quotas.tenants.insert(
                "lean".to_owned(),
                TenantQuotas {
                    tenant: QuotaLimits {
                        fuel: Some(1),
                        ..QuotaLimits::default()
                    },
                    install: QuotaLimits::default(),
                },
            );
            config.quotas = quotas;
        },
        ..Options::default()
    }
}

fn usage(platform: &Platform, tenant: &str) -> Value {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(palisade_binary())
        .arg("--data-dir")
        .arg(work.path())
        .args(["usage", "--tenant", tenant, "--json", "--server"])
        .arg(format!("http://{}", platform.gateway))
        .env("PALISADE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_quota_refuses_the_next_call_and_usage_matches_the_calls_made() {
    let platform = Platform::start_with(options()).await;
    platform.install_hello("acme").await;
    // Each answer is read to its end, which carries what the call consumed.
    for _ in 0..3 {
        let response = platform.call("acme", HELLO, "/hello/ada").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let refused = platform.call("acme", HELLO, "/hello/ada").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "calls_quota_exceeded", "{body}");
    assert_eq!(body["quota"]["scope"], "install", "{body}");
    assert_eq!(body["quota"]["limit"], 3, "{body}");

    // The usage read back is the calls that ran, with the fuel the runner measured.
    let rows = platform.execution_rows("acme", HELLO, 3).await;
    assert_eq!(rows.len(), 3);
    let fuel: u64 = rows.iter().map(|row| row.fuel_consumed.unwrap()).sum();
    assert!(fuel > 0);
    let report = usage(&platform, "acme");
    let extensions = report["extensions"].as_array().unwrap();
    assert_eq!(extensions.len(), 1, "{report}");
    assert_eq!(extensions[0]["extension_id"], HELLO);
    assert_eq!(extensions[0]["total"]["calls"], 3, "{report}");
    assert_eq!(extensions[0]["total"]["fuel"], fuel, "{report}");
    assert_eq!(extensions[0]["days"][0]["calls"], 3, "{report}");
    assert_eq!(report["quotas"]["install"]["calls"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_the_runner_measured_refuses_the_next_call_once_over_the_quota() {
    let platform = Platform::start_with(options()).await;
    platform.install_hello("lean").await;
    let response = platform.call("lean", HELLO, "/hello/ada").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    // The call's fuel reaches the counters with its execution-log row.
    platform.execution_rows("lean", HELLO, 1).await;
    let mut refused = None;
    for _ in 0..100 {
        let response = platform.call("lean", HELLO, "/hello/ada").await;
        if response.status() == 429 {
            refused = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let body = refused.expect("the fuel quota never refused a call");
    assert_eq!(body["error"], "fuel_quota_exceeded", "{body}");
    assert_eq!(body["quota"]["scope"], "tenant", "{body}");
    // The text table names the extension and the quota.
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(palisade_binary())
        .arg("--data-dir")
        .arg(work.path())
        .args(["usage", "--tenant", "lean", "--server"])
        .arg(format!("http://{}", platform.gateway))
        .env("PALISADE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tenant 1 fuel"), "{stdout}");
    assert!(
        stdout.contains(HELLO) && stdout.contains("total"),
        "{stdout}"
    );
}
