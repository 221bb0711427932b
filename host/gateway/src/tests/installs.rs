//! Install resolution through the cache: reuse within the TTL, immediate effect of this
//! gateway's admin changes, and a repeated call when a runner finds a cached install stale.

use super::fake_runner::FakeRunner;
use super::*;
use crate::installs::ResolveCache;

const EXT: &str = "com.example.cached";
const ADMIN_TOKEN: &str = "admin-token-for-install-tests";
const HOUR: Duration = Duration::from_secs(3600);

fn manifest(version: &str) -> String {
    format!(
        r#"{{"id":"{EXT}","name":"Cached","publisher":"Example","version":"{version}",
        "runtime":"wasi-http@0.2","component":"cached.wasm",
        "api":{{"endpoints":[{{"method":"GET","path":"/items"}}]}}}}"#
    )
}

/// A gateway with install resolutions cached for an hour, in front of `runner`, with
/// [`EXT`] 1.0.0 installed for [`TENANT`].
async fn setup(checking: bool) -> (Harness, FakeRunner) {
    let h = Harness::new(NO_RUNNER).await;
    let runner = if checking {
        FakeRunner::start_checking(&h.service_keys.public_pem, h.registry.clone()).await
    } else {
        FakeRunner::start(&h.service_keys.public_pem).await
    };
    let h = h.rebind(&runner.url, |config| {
        config.install_cache_ttl = HOUR;
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
    });
    h.install(TENANT, &manifest("1.0.0")).await;
    (h, runner)
}

async fn call(h: &Harness) -> Reply {
    h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await
}

async fn admin(h: &Harness, method: &str, path: &str, body: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(format!("/admin/v1/tenants/{TENANT}/installs/{EXT}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    h.send(request).await.status
}

#[tokio::test]
async fn resolutions_and_absences_are_reused_until_forgotten() {
    let h = Harness::new(NO_RUNNER).await;
    let installed = h.install(TENANT, &manifest("1.0.0")).await;
    let cache = ResolveCache::new(HOUR, 100, HOUR, 100);
    let first = cache.resolve(&h.registry, TENANT, EXT).await.unwrap();
    assert!(!first.cached);
    assert_eq!(first.install.unwrap().install_id, installed.install_id);
    assert!(
        cache
            .resolve(&h.registry, TENANT, EXT)
            .await
            .unwrap()
            .cached
    );

    // A change made behind the cache's back is not seen while the entry lives...
    h.registry.set_enabled(TENANT, EXT, false).await.unwrap();
    let stale = cache.resolve(&h.registry, TENANT, EXT).await.unwrap();
    assert!(stale.cached && stale.install.is_some());
    // ...and is once the entry is forgotten.
    cache.invalidate(TENANT, EXT);
    let fresh = cache.resolve(&h.registry, TENANT, EXT).await.unwrap();
    assert!(!fresh.cached && fresh.install.is_none());
    // An absence is cached like an install.
    h.registry.set_enabled(TENANT, EXT, true).await.unwrap();
    let absent = cache.resolve(&h.registry, TENANT, EXT).await.unwrap();
    assert!(absent.cached && absent.install.is_none());
    // Each tenant has its own entry.
    assert!(
        cache
            .resolve(&h.registry, "globex", EXT)
            .await
            .unwrap()
            .install
            .is_none()
    );
    assert_eq!(cache.len(), 2);
}

#[tokio::test]
async fn a_zero_ttl_reads_the_registry_on_every_call() {
    let h = Harness::new(NO_RUNNER).await;
    h.install(TENANT, &manifest("1.0.0")).await;
    let cache = ResolveCache::new(Duration::ZERO, 100, Duration::ZERO, 100);
    for _ in 0..2 {
        let resolution = cache.resolve(&h.registry, TENANT, EXT).await.unwrap();
        assert!(!resolution.cached && resolution.install.is_some());
    }
    h.registry.set_enabled(TENANT, EXT, false).await.unwrap();
    assert!(
        cache
            .resolve(&h.registry, TENANT, EXT)
            .await
            .unwrap()
            .install
            .is_none()
    );
    assert_eq!(cache.len(), 0);
}

#[tokio::test]
async fn admin_changes_through_this_gateway_take_effect_at_once() {
    // The runner does not check installs: only the gateway's own cache decides.
    let (h, runner) = setup(false).await;
    assert_eq!(call(&h).await.status, StatusCode::CREATED);

    assert_eq!(admin(&h, "POST", "/disable", "").await, StatusCode::OK);
    call(&h)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(admin(&h, "POST", "/enable", "").await, StatusCode::OK);
    assert_eq!(call(&h).await.status, StatusCode::CREATED);

    let upgrade = h.publish(&manifest("2.0.0")).await;
    let body = r#"{"approve": ["log"]}"#;
    assert_eq!(admin(&h, "PUT", "", body).await, StatusCode::OK);
    assert_eq!(call(&h).await.status, StatusCode::CREATED);
    let seen = runner.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].context.version_id, upgrade.version_id);

    assert_eq!(admin(&h, "DELETE", "", "").await, StatusCode::NO_CONTENT);
    call(&h)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(runner.seen().len(), 3);
}

#[tokio::test]
async fn a_cached_install_the_runner_finds_stale_is_resolved_again() {
    let (h, runner) = setup(true).await;
    assert_eq!(call(&h).await.status, StatusCode::CREATED);

    // Upgraded behind the gateway's back: the cached 1.0.0 is refused by the runner, the
    // gateway resolves 2.0.0 and calls again.
    let upgrade = h.install(TENANT, &manifest("2.0.0")).await;
    let reply = call(&h).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let seen = runner.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].context.version_id, upgrade.version_id);
    h.state.flush_execution_log().await;
    let rows = h
        .registry
        .recent_executions(TENANT, Some(EXT), 10)
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.request_id == reply.request_id());
    assert_eq!(
        row.and_then(|r| r.version_id.as_deref()),
        Some(upgrade.version_id.as_str())
    );

    // Disabled behind its back: the runner refuses, and there is nothing to call again.
    h.registry.set_enabled(TENANT, EXT, false).await.unwrap();
    call(&h)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(runner.seen().len(), 2);
}
