//! Caches that hear about changes: two platforms (each a gateway and a runner with their
//! own registry handle) on one database, their caches set to keep entries for minutes. A
//! disable, an enable and a key removal made through one reach the other within 2 s,
//! because both follow the registry's change sequence.

use std::time::{Duration, Instant};

use palisade_registry::ObjectStoreConfig;
use palisade_registry::testing::{postgres_schema_url, postgres_url};
use palisade_runner::RunnerConfig;

use crate::support::{Options, Platform};

const HELLO: &str = "com.example.hello";
/// Long enough that nothing here expires by itself.
const LONG: Duration = Duration::from_secs(300);
/// The bound a change must meet.
const BOUND: Duration = Duration::from_secs(2);

fn options(database_url: &str, objects: &std::path::Path) -> Options {
    Options {
        database_url: Some(database_url.to_owned()),
        objects: Some(ObjectStoreConfig::Local(objects.to_owned())),
        gateway: |config| {
            config.install_cache_ttl = LONG;
            config.unknown_extension_ttl = LONG;
        },
        runner: RunnerConfig {
            install_cache_ttl: LONG,
            ..RunnerConfig::default()
        },
        trust_cache_ttl: Some(LONG),
        ..Options::default()
    }
}

/// The status `platform` answers for hello, read to the end.
async fn status(platform: &Platform) -> u16 {
    let response = platform.call("acme", HELLO, "/hello/ada").await;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

/// Waits until `platform` answers `expected`; how long it took.
async fn until(platform: &Platform, expected: u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = status(platform).await;
        if status == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} after 10 s, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_through_one_node_reaches_the_others_within_two_seconds() {
    let shared = tempfile::tempdir().unwrap();
    let database_url = match postgres_url() {
        Some(server) => postgres_schema_url(
            &server,
            &format!("palisade_changes_{}", uuid::Uuid::new_v4().simple()),
        ),
        None => format!("sqlite://{}", shared.path().join("registry.db").display()),
    };
    let objects = shared.path().join("objects");
    let a = Platform::start_with(options(&database_url, &objects)).await;
    let b = Platform::start_with(options(&database_url, &objects)).await;
    a.install_hello("acme").await;
    // Both warm their caches.
    assert_eq!(status(&a).await, 200);
    assert_eq!(status(&b).await, 200);

    a.registry.set_enabled("acme", HELLO, false).await.unwrap();
    let took = until(&b, 404).await;
    assert!(
        took < BOUND,
        "a disable took {took:?} to reach the other gateway"
    );

    a.registry.set_enabled("acme", HELLO, true).await.unwrap();
    let took = until(&b, 200).await;
    assert!(took < BOUND, "an enable took {took:?}");

    // The publisher's key removed through one handle: the other runner refuses at once.
    a.registry
        .untrust_key(&a.publisher.public_key().fingerprint())
        .await
        .unwrap();
    let took = until(&b, 502).await;
    assert!(
        took < BOUND,
        "a key removal took {took:?} to reach the other runner"
    );
}
