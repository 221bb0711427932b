//! The registry's database going away under load (PostgreSQL suite): every connection
//! path to the server is cut for a few seconds by a TCP proxy on loopback in front of it,
//! as a server restart or a failover cuts them. Calls that need the database fail fast
//! with 503 while it is away, the platform recovers by itself, and no write that was
//! acknowledged is lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_bundle::CapabilityKey;
use palisade_registry::testing::{postgres_schema_url, postgres_url_or_skip};
use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::support::{Options, Platform};

const NOTES: &str = "com.example.notes";

/// A TCP proxy that can cut every connection through it and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (flag, held) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            connections,
        }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `url` (`postgres://user@host:port/db...`) with `host:port` replaced by `addr`, and the
/// `host:port` it named.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').map_or(("", rest), |(u, r)| (u, r));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let target = rest[..end].to_owned();
    let at = if user.is_empty() { "" } else { "@" };
    (
        format!("{scheme}://{user}{at}{addr}{}", &rest[end..]),
        target,
    )
}

async fn put_note(platform: &Platform, id: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = platform
        .request("acme", Method::PUT, NOTES, &format!("/notes/{id}"))
        .timeout(Duration::from_secs(30))
        .json(&json!({"title": id, "body": "kept"}))
        .send()
        .await;
    let status = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_calls_fast_loses_no_acknowledged_write_and_heals() {
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    let placeholder: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (_, target) = through(&server, placeholder);
    let proxy = Proxy::start(target).await;
    let (proxied, _) = through(&server, proxy.addr);
    let schema = format!("palisade_fail_{}", uuid::Uuid::new_v4().simple());
    let platform = Platform::start_with(Options {
        database_url: Some(postgres_schema_url(&proxied, &schema)),
        ..Options::default()
    })
    .await;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/notes/manifest.json");
    let notes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    platform
        .install_guest(
            &notes,
            "notes",
            &["acme"],
            &[CapabilityKey::Log, CapabilityKey::Storage],
        )
        .await;

    // Writes under way before, during and after the outage, one at a time.
    let platform = Arc::new(platform);
    let running = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (platform, running) = (platform.clone(), running.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let id = format!("n{n}");
                let (status, _) = put_note(&platform, &id).await;
                if (200..300).contains(&status) {
                    acknowledged.push(id);
                }
                n += 1;
            }
            acknowledged
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.cut();
    // Past the caches' few seconds, a call that needs the database fails fast, with 503.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, took) = put_note(&platform, "during").await;
    assert_eq!(status, 503, "a write while the database is away");
    assert!(took < Duration::from_secs(8), "it took {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    // It heals by itself.
    let healed = Instant::now();
    loop {
        let (status, _) = put_note(&platform, "after").await;
        if status == 200 || status == 201 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "no write succeeded 30 s after the database came back (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::SeqCst);
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() > 2, "{acknowledged:?}");

    // Every acknowledged write is there.
    for id in &acknowledged {
        let response = platform.call("acme", NOTES, &format!("/notes/{id}")).await;
        assert_eq!(response.status(), 200, "note {id} was acknowledged");
        let note: serde_json::Value = response.json().await.unwrap();
        assert_eq!(note["title"], id.as_str());
    }
}
