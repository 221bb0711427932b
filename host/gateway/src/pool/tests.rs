//! Rendezvous stability, health-check skipping and the failover rules, against small
//! stand-in runners on loopback.

use std::sync::atomic::{AtomicU16, AtomicUsize};

use axum::Router;
use axum::extract::State;
use axum::routing::{any, get};

use crate::runner::HopBody;
use tokio::io::AsyncReadExt;

use super::*;

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sha256:{i:064x}")).collect()
}

#[test]
fn rendezvous_is_deterministic_and_a_permutation() {
    let urls = ["http://a:1", "http://b:1", "http://c:1"];
    for key in keys(50) {
        let order = rendezvous_order(&urls, &key);
        assert_eq!(order, rendezvous_order(&urls, &key));
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
    }
}

#[test]
fn rendezvous_spreads_keys_evenly() {
    let urls = [
        "http://r0:8081",
        "http://r1:8081",
        "http://r2:8081",
        "http://r3:8081",
    ];
    let mut counts = [0usize; 4];
    for key in keys(4000) {
        counts[rendezvous_order(&urls, &key)[0]] += 1;
    }
    for count in counts {
        assert!((800..1200).contains(&count), "{counts:?}");
    }
}

#[test]
fn adding_a_runner_moves_only_its_share_of_keys() {
    let before = [
        "http://r0:8081",
        "http://r1:8081",
        "http://r2:8081",
        "http://r3:8081",
    ];
    let after = [
        "http://r0:8081",
        "http://r1:8081",
        "http://r2:8081",
        "http://r3:8081",
        "http://r4:8081",
    ];
    let keys = keys(5000);
    let mut moved = 0;
    for key in &keys {
        let old = rendezvous_order(&before, key)[0];
        let new = rendezvous_order(&after, key)[0];
        if old != new {
            // A key only ever moves to the new runner.
            assert_eq!(new, 4, "{key} moved between old runners");
            moved += 1;
        }
    }
    // About 1/5 of the keys move; allow for sampling noise.
    assert!((800..1200).contains(&moved), "{moved} of 5000 moved");
}

#[test]
fn removing_a_runner_keeps_the_others_keys_in_place() {
    let all = ["http://r0:1", "http://r1:1", "http://r2:1"];
    let without_r1 = ["http://r0:1", "http://r2:1"];
    for key in keys(1000) {
        let order = rendezvous_order(&all, &key);
        let expected = order.iter().find(|&&i| i != 1).map(|&i| all[i]);
        let got = without_r1[rendezvous_order(&without_r1, &key)[0]];
        assert_eq!(Some(got), expected, "{key}");
    }
}

#[test]
fn an_empty_pool_is_refused() {
    let err = RunnerPool::new(&[], Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, RunnerClientError::NoRunners), "{err}");
    let err = RunnerPool::new(&["ftp://x".to_owned()], Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("ftp://x"), "{err}");
}

/// A stand-in runner: `/healthz` answers `health`, `/v1/execute` answers `execute` and
/// counts calls.
struct Stub {
    url: String,
    health: Arc<AtomicU16>,
    execute: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct StubState {
    health: Arc<AtomicU16>,
    execute: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

impl Stub {
    async fn start() -> Stub {
        let state = StubState {
            health: Arc::new(AtomicU16::new(200)),
            execute: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route(
                "/healthz",
                get(|State(s): State<StubState>| async move {
                    StatusCode::from_u16(s.health.load(Ordering::SeqCst)).unwrap()
                }),
            )
            .route(
                "/v1/execute/{*path}",
                any(|State(s): State<StubState>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let status = StatusCode::from_u16(s.execute.load(Ordering::SeqCst)).unwrap();
                    if status.is_success() {
                        (status, [("content-type", "text/plain")], "ok".to_owned())
                    } else {
                        (
                            status,
                            [("x-palisade-error", "unavailable")],
                            r#"{"error":"unavailable","request_id":"r"}"#.to_owned(),
                        )
                    }
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub {
            url,
            health: state.health,
            execute: state.execute,
            hits: state.hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A URL where nothing listens.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A server that reads a request and hangs up without answering; returns its URL and
/// how many connections it took.
async fn hang_up_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&taken);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    (url, taken)
}

fn request(method: &str) -> HopRequest {
    HopRequest {
        method: method.parse().unwrap(),
        path: "/hello".into(),
        headers: http::HeaderMap::new(),
        body: HopBody::Buffered(bytes::Bytes::from_static(b"body")),
    }
}

/// A content hash whose first rendezvous choice among `urls` is `first`.
fn key_preferring(urls: &[String], first: usize) -> String {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    keys(1000)
        .into_iter()
        .find(|key| rendezvous_order(&urls, key)[0] == first)
        .unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn calls_follow_the_content_hash() {
    let a = Stub::start().await;
    let b = Stub::start().await;
    let urls = vec![a.url.clone(), b.url.clone()];
    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let to_a = key_preferring(&urls, 0);
    let to_b = key_preferring(&urls, 1);
    for _ in 0..3 {
        pool.execute(&to_a, &request("GET"), TIMEOUT).await.unwrap();
    }
    pool.execute(&to_b, &request("POST"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!((a.hits(), b.hits()), (3, 1));
}

#[tokio::test]
async fn unhealthy_runners_are_skipped_until_they_pass_again() {
    let a = Stub::start().await;
    let b = Stub::start().await;
    let urls = vec![a.url.clone(), b.url.clone()];
    let pool = RunnerPool::new(&urls, Duration::from_millis(50)).unwrap();
    let key = key_preferring(&urls, 0);
    assert_eq!(pool.order(&key), [0, 1]);

    a.health.store(503, Ordering::SeqCst);
    wait_until(|| !pool.is_healthy(0)).await;
    assert_eq!(pool.order(&key), [1, 0]);
    pool.execute(&key, &request("POST"), TIMEOUT).await.unwrap();
    assert_eq!((a.hits(), b.hits()), (0, 1));

    a.health.store(200, Ordering::SeqCst);
    wait_until(|| pool.is_healthy(0)).await;
    pool.execute(&key, &request("POST"), TIMEOUT).await.unwrap();
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn when_every_runner_is_unhealthy_they_are_still_tried() {
    let a = Stub::start().await;
    a.health.store(503, Ordering::SeqCst);
    let pool = RunnerPool::new(std::slice::from_ref(&a.url), Duration::from_millis(50)).unwrap();
    wait_until(|| !pool.is_healthy(0)).await;
    pool.execute("h", &request("GET"), TIMEOUT).await.unwrap();
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn unreachable_runners_fail_over_for_any_method() {
    let b = Stub::start().await;
    let urls = vec![closed_url(), b.url.clone()];
    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let key = key_preferring(&urls, 0);
    let reply = pool.execute(&key, &request("POST"), TIMEOUT).await.unwrap();
    assert!(matches!(reply, RunnerReply::Guest(_)), "{reply:?}");
    assert_eq!(b.hits(), 1);
    // The refused runner is marked down at once, without waiting for a health check.
    assert!(!pool.is_healthy(0));
}

#[tokio::test]
async fn draining_runners_fail_over_for_any_method() {
    let a = Stub::start().await;
    let b = Stub::start().await;
    a.execute.store(503, Ordering::SeqCst);
    let urls = vec![a.url.clone(), b.url.clone()];
    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let key = key_preferring(&urls, 0);
    let reply = pool.execute(&key, &request("POST"), TIMEOUT).await.unwrap();
    assert!(matches!(reply, RunnerReply::Guest(_)), "{reply:?}");
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn the_last_refusal_is_returned_when_no_runner_takes_the_call() {
    let a = Stub::start().await;
    a.execute.store(503, Ordering::SeqCst);
    let urls = vec![a.url.clone(), closed_url()];
    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let key = key_preferring(&urls, 1);
    let reply = pool.execute(&key, &request("GET"), TIMEOUT).await.unwrap();
    assert!(
        matches!(
            reply,
            RunnerReply::Platform {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_broken_exchange_is_repeated_for_get_only() {
    let (hang_up, taken) = hang_up_server().await;
    let b = Stub::start().await;
    let urls = vec![hang_up, b.url.clone()];
    let key = key_preferring(&urls, 0);

    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let reply = pool.execute(&key, &request("GET"), TIMEOUT).await.unwrap();
    assert!(matches!(reply, RunnerReply::Guest(_)), "{reply:?}");
    assert_eq!(b.hits(), 1);

    let pool = RunnerPool::new(&urls, Duration::from_secs(60)).unwrap();
    let before = taken.load(Ordering::SeqCst);
    let err = pool
        .execute(&key, &request("POST"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Transport { .. }), "{err}");
    assert!(taken.load(Ordering::SeqCst) > before);
    assert_eq!(b.hits(), 1, "the POST must not reach a second runner");
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
