//! Quotas at the gateway: calls claimed from the registry and refused past the limit with
//! the quota's code and `retry-after`, fuel and egress refused once the consumption read
//! back reaches the limit, several gateways on one registry admitting exactly the limit,
//! and the usage read back through the admin API matching the calls made.

use palisade_registry::quota::{METRIC_EGRESS_BYTES, METRIC_FUEL, QUOTA_WINDOW_MS, window_start};

use super::fake_runner::FakeRunner;
use super::*;
use crate::quota::{QuotaConfig, QuotaLimits, TenantQuotas, now_ms};
use crate::ratelimit::RateLimitConfig;

const EXT: &str = "com.example.metered";
const OTHER: &str = "com.example.other";
const ADMIN_TOKEN: &str = "admin-token-for-quota-tests";

fn manifest(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"Metered","publisher":"Example",
        "version":"1.0.0","runtime":"wasi-http@0.2","component":"metered.wasm",
        "api":{{"endpoints":[{{"method":"GET","path":"/items"}}]}}}}"#
    )
}

fn calls(limit: u64) -> QuotaLimits {
    QuotaLimits {
        calls: Some(limit),
        ..QuotaLimits::default()
    }
}

/// A gateway with `quotas` (and the admin API) in front of a fake runner, with [`EXT`]
/// and [`OTHER`] installed for [`TENANT`]; the install ids.
async fn setup(quotas: QuotaConfig) -> (Harness, FakeRunner, String, String) {
    let (h, runner) = Harness::with_fake_runner(|config| {
        config.quotas = quotas;
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        // Quotas alone refuse here.
        config.rate_limit = RateLimitConfig::off();
        config.tenant_rate_limit = RateLimitConfig::off();
        config.caller_rate_limit = RateLimitConfig::off();
    })
    .await;
    let ext = h.install(TENANT, &manifest(EXT)).await.install_id;
    let other = h.install(TENANT, &manifest(OTHER)).await.install_id;
    (h, runner, ext, other)
}

async fn call(h: &Harness, tenant: &str, extension: &str) -> Reply {
    h.get_as(tenant, &format!("/api/ext/{extension}/items"))
        .await
}

/// Checks a quota refusal: its code, the quota named in the body, and a `retry-after`
/// that reaches the end of the UTC day.
fn assert_refused(reply: &Reply, code: &str, scope: &str, limit: u64) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        reply.body
    );
    let body = reply.json();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["quota"]["scope"], scope, "{body}");
    assert_eq!(body["quota"]["limit"], limit, "{body}");
    let resets_at = body["quota"]["resets_at_ms"].as_i64().unwrap();
    let now = now_ms();
    assert_eq!(resets_at, window_start(now) + QUOTA_WINDOW_MS);
    let retry_after: i64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = (resets_at - now) / 1000;
    assert!(
        (1..=QUOTA_WINDOW_MS / 1000).contains(&retry_after) && (retry_after - left).abs() <= 2,
        "retry-after {retry_after}, {left} s left in the day"
    );
}

#[tokio::test]
async fn the_calls_quota_of_a_tenant_refuses_the_call_past_it_without_calling_the_runner() {
    let quotas = QuotaConfig {
        default: TenantQuotas {
            tenant: calls(3),
            install: QuotaLimits::default(),
        },
        ..QuotaConfig::default()
    };
    let (h, runner, _, _) = setup(quotas).await;
    // Both installs count against the tenant's quota.
    for extension in [EXT, OTHER, EXT] {
        assert_eq!(
            call(&h, TENANT, extension).await.status,
            StatusCode::CREATED
        );
    }
    let refused = call(&h, TENANT, OTHER).await;
    assert_refused(&refused, "calls_quota_exceeded", "tenant", 3);
    assert_eq!(runner.seen().len(), 3);

    // Another tenant has a quota of its own.
    let beta = h.install("beta", &manifest(EXT)).await;
    assert!(beta.enabled);
    assert_eq!(call(&h, "beta", EXT).await.status, StatusCode::CREATED);

    // A refusal is not a call: no execution-log row, nothing added to the usage.
    h.state.execution_log.flush().await;
    let rows = h
        .registry
        .recent_executions(TENANT, None, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row.status == Some(201)));
}

#[tokio::test]
async fn install_quotas_count_each_install_and_a_tenant_of_its_own_replaces_the_default() {
    let mut quotas = QuotaConfig {
        default: TenantQuotas {
            tenant: QuotaLimits::default(),
            install: calls(2),
        },
        ..QuotaConfig::default()
    };
    quotas
        .tenants
        .insert("beta".to_owned(), TenantQuotas::default());
    let (h, runner, _, _) = setup(quotas).await;
    for extension in [EXT, EXT, OTHER, OTHER] {
        assert_eq!(
            call(&h, TENANT, extension).await.status,
            StatusCode::CREATED
        );
    }
    assert_refused(
        &call(&h, TENANT, EXT).await,
        "calls_quota_exceeded",
        "install",
        2,
    );
    assert_refused(
        &call(&h, TENANT, OTHER).await,
        "calls_quota_exceeded",
        "install",
        2,
    );
    assert_eq!(runner.seen().len(), 4);
    // `beta` is named in `tenants` with no limits: it has none.
    h.install("beta", &manifest(EXT)).await;
    for _ in 0..4 {
        assert_eq!(call(&h, "beta", EXT).await.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn fuel_and_egress_quotas_refuse_once_the_consumption_reaches_them() {
    let quotas = QuotaConfig {
        default: TenantQuotas {
            tenant: QuotaLimits {
                fuel: Some(1_000),
                ..QuotaLimits::default()
            },
            install: QuotaLimits {
                egress_bytes: Some(500),
                ..QuotaLimits::default()
            },
        },
        usage_refresh: Duration::ZERO,
        ..QuotaConfig::default()
    };
    let (h, _runner, ext, other) = setup(quotas).await;
    let now = now_ms();
    // Under both limits: admitted.
    h.registry
        .add_quota_usage(&ext, METRIC_EGRESS_BYTES, now, 499)
        .await
        .unwrap();
    h.registry
        .add_quota_usage(&other, METRIC_FUEL, now, 999)
        .await
        .unwrap();
    assert_eq!(call(&h, TENANT, EXT).await.status, StatusCode::CREATED);
    // The install's egress reaches its limit: that install is refused, the other is not.
    h.registry
        .add_quota_usage(&ext, METRIC_EGRESS_BYTES, now, 1)
        .await
        .unwrap();
    assert_refused(
        &call(&h, TENANT, EXT).await,
        "egress_quota_exceeded",
        "install",
        500,
    );
    assert_eq!(call(&h, TENANT, OTHER).await.status, StatusCode::CREATED);
    // The tenant's fuel, summed over its installs, reaches its limit: every install is
    // refused.
    h.registry
        .add_quota_usage(&ext, METRIC_FUEL, now, 1)
        .await
        .unwrap();
    assert_refused(
        &call(&h, TENANT, OTHER).await,
        "fuel_quota_exceeded",
        "tenant",
        1_000,
    );
    // Yesterday's consumption does not count today.
    let (h, _runner, ext, _) = setup(QuotaConfig {
        default: TenantQuotas {
            tenant: QuotaLimits::default(),
            install: QuotaLimits {
                egress_bytes: Some(10),
                ..QuotaLimits::default()
            },
        },
        usage_refresh: Duration::ZERO,
        ..QuotaConfig::default()
    })
    .await;
    h.registry
        .add_quota_usage(&ext, METRIC_EGRESS_BYTES, now - QUOTA_WINDOW_MS, 1_000)
        .await
        .unwrap();
    assert_eq!(call(&h, TENANT, EXT).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn gateways_sharing_a_registry_admit_exactly_the_limit_together() {
    // 250 calls a day: each gateway claims 2 at a time.
    let limit = 250;
    let quotas = QuotaConfig {
        default: TenantQuotas {
            tenant: calls(limit),
            install: QuotaLimits::default(),
        },
        ..QuotaConfig::default()
    };
    let (first, runner, _, _) = setup(quotas).await;
    // A gateway with a registry handle of its own (its own connection pool), on the same
    // database: as a gateway in another process would have (PostgreSQL in the PostgreSQL
    // suite).
    let second = first.twin().await.app;
    let token = first.token(TENANT);
    let request = || {
        Request::get(format!("/api/ext/{EXT}/items"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    // Both gateways call at once, each until it is refused: what one holds unspent, it
    // spends before it is refused, so together they make exactly the limit.
    let run = |router: Router| {
        let request = &request;
        async move {
            let mut admitted = 0;
            loop {
                let response = router.clone().oneshot(request()).await.unwrap();
                let status = response.status();
                let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
                match status {
                    StatusCode::CREATED => admitted += 1,
                    StatusCode::TOO_MANY_REQUESTS => return admitted,
                    other => panic!("unexpected {other}"),
                }
            }
        }
    };
    let (a, b) = tokio::join!(run(first.app.clone()), run(second));
    assert_eq!(a + b, limit, "first {a}, second {b}");
    assert!(a > 0 && b > 0, "first {a}, second {b}");
    assert_eq!(runner.seen().len() as u64, limit);
}

#[tokio::test]
async fn the_usage_read_back_matches_the_calls_made() {
    let quotas = QuotaConfig {
        default: TenantQuotas {
            tenant: calls(1_000),
            install: QuotaLimits {
                fuel: Some(5),
                ..QuotaLimits::default()
            },
        },
        ..QuotaConfig::default()
    };
    let (h, _runner, _, _) = setup(quotas).await;
    for extension in [EXT, EXT, EXT, OTHER] {
        assert_eq!(
            call(&h, TENANT, extension).await.status,
            StatusCode::CREATED
        );
    }
    h.state.execution_log.flush().await;
    let reply = h
        .send(
            Request::get(format!("/admin/v1/tenants/{TENANT}/usage"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let report = reply.json();
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(report["tenant_id"], TENANT);
    assert_eq!(report["to"], today);
    assert_eq!(
        report["quotas"],
        serde_json::json!({"tenant": {"calls": 1000}, "install": {"fuel": 5}})
    );
    let extensions = report["extensions"].as_array().unwrap();
    let summary: Vec<(&str, u64, &str, u64)> = extensions
        .iter()
        .map(|e| {
            (
                e["extension_id"].as_str().unwrap(),
                e["total"]["calls"].as_u64().unwrap(),
                e["days"][0]["date"].as_str().unwrap(),
                e["days"][0]["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(EXT, 3, today.as_str(), 3), (OTHER, 1, today.as_str(), 1)]
    );

    // A day before any call: nothing.
    let reply = h
        .send(
            Request::get(format!(
                "/admin/v1/tenants/{TENANT}/usage?from=2020-01-01&to=2020-01-31"
            ))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(reply.json()["extensions"], serde_json::json!([]));
    // A bad date is a 400 naming it.
    let reply = h
        .send(
            Request::get(format!("/admin/v1/tenants/{TENANT}/usage?from=yesterday"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["message"].as_str().unwrap().contains("`from`"),
        "{:?}",
        reply.body
    );
}
