//! Several runner processes behind one gateway process, all real `palisade` processes on
//! one data directory and one registry database (a PostgreSQL server when
//! `PALISADE_TEST_POSTGRES_URL` is set): a runner killed under load costs no GET and
//! repeats no POST, and runner and gateway stop cleanly on SIGTERM.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_bundle::CapabilityKey;
use palisade_gateway::pool::rendezvous_order;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::process::{Server, dev_caller_token, free_addr};
use crate::support::{Seeder, hello_manifest};

const TENANT: &str = "acme";

/// Starts `palisade ARGS... --listen ADDR` on `data_dir` and its registry, at WARN, its
/// log in the directory.
fn spawn(name: &'static str, data_dir: &Path, addr: &str, args: &[&str]) -> Server {
    let database_url = palisade_registry::testing::database_url(data_dir);
    let log = data_dir.join(format!("{name}.log"));
    let args: Vec<&str> = args.iter().copied().chain(["--listen", addr]).collect();
    Server::spawn(name, data_dir, &database_url, addr, log, "warn", &args)
}

/// Free loopback addresses for two runners such that rendezvous hashing sends every one of
/// `keys` to the first.
fn runner_addrs(keys: &[String]) -> (String, String) {
    let listeners: Vec<TcpListener> = (0..8)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    for first in &addrs {
        for second in &addrs {
            if first == second {
                continue;
            }
            let urls = [format!("http://{first}"), format!("http://{second}")];
            let urls = [urls[0].as_str(), urls[1].as_str()];
            if keys.iter().all(|key| rendezvous_order(&urls, key)[0] == 0) {
                return (first.clone(), second.clone());
            }
        }
    }
    panic!("no pair of ports prefers one runner for every key");
}

/// The data directory's registry, with a new publisher key in its trust set.
async fn publishing(data_dir: &Path) -> Seeder {
    let database_url = palisade_registry::testing::database_url(data_dir);
    Seeder::open(&database_url, data_dir.join("objects")).await
}

/// Publishes hello and notes into the data directory's registry and installs both for
/// [`TENANT`]; returns their content hashes.
async fn seed(data_dir: &Path) -> Vec<String> {
    let seeder = publishing(data_dir).await;
    let notes_manifest: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{}/../guests/notes/manifest.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let mut hashes = Vec::new();
    for (manifest, component, approved) in [
        (hello_manifest(), "hello", &[CapabilityKey::Log][..]),
        (
            notes_manifest,
            "notes",
            &[CapabilityKey::Log, CapabilityKey::Storage][..],
        ),
    ] {
        let published = seeder.install(TENANT, &manifest, component, approved).await;
        hashes.push(published.content_hash.to_string());
    }
    hashes
}

/// Pause between two calls of one loop, keeping the load under the gateway's default
/// per-install rate limit (50 a second).
const PACE: Duration = Duration::from_millis(80);

/// GETs hello in a loop until `stop`; returns how many were made and the answers that
/// were not 200.
async fn get_loop(
    client: reqwest::Client,
    url: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        count += 1;
        match client.get(&url).bearer_auth(&token).send().await {
            Ok(response) if response.status() == StatusCode::OK => {}
            Ok(response) => failures.push(format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            )),
            Err(err) => failures.push(err.to_string()),
        }
        tokio::time::sleep(PACE).await;
    }
    (count, failures)
}

/// POSTs notes `{prefix}-{i}` one after another until `stop`; returns each id's status.
async fn post_loop(
    client: reqwest::Client,
    url: String,
    token: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u16)> {
    let mut results = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let id = format!("{prefix}-{i:05}");
        let status = client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json!({"id": id, "title": "t", "body": "b"}).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        results.push((id, status));
        tokio::time::sleep(PACE).await;
    }
    results
}

/// Every note id, following the cursor.
async fn all_note_ids(client: &reqwest::Client, gateway: &str, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{gateway}/api/ext/com.example.notes/notes?limit=100&cursor={cursor}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for note in page["notes"].as_array().unwrap() {
            ids.push(note["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_runner_costs_no_get_and_repeats_no_post() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let hashes = seed(data_dir).await;
    let (addr_a, addr_b) = runner_addrs(&hashes);
    let client = reqwest::Client::new();

    // One after the other, so the first creates the data directory's keys.
    let mut runner_a = spawn("runner-a", data_dir, &addr_a, &["runner"]);
    runner_a.wait_healthy(&client).await;
    let mut runner_b = spawn("runner-b", data_dir, &addr_b, &["runner"]);
    runner_b.wait_healthy(&client).await;
    let gateway_addr = free_addr();
    let mut gateway = spawn(
        "gateway",
        data_dir,
        &gateway_addr,
        &[
            "gateway",
            "--dev",
            "--runner",
            &runner_a.url,
            "--runner",
            &runner_b.url,
            "--health-interval-ms",
            "200",
        ],
    );
    gateway.wait_healthy(&client).await;
    let token = dev_caller_token(data_dir, TENANT);
    let hello = format!("{}/api/ext/com.example.hello/hello/world", gateway.url);
    let notes = format!("{}/api/ext/com.example.notes/notes", gateway.url);

    // Warm both extensions on runner A (their rendezvous choice).
    let warm = client.get(&hello).bearer_auth(&token).send().await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK, "{}", gateway.log_text());
    let warm = client.get(&notes).bearer_auth(&token).send().await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);

    let stop = Arc::new(AtomicBool::new(false));
    let getters: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(get_loop(
                client.clone(),
                hello.clone(),
                token.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let poster = tokio::spawn(post_loop(
        client.clone(),
        notes.clone(),
        token.clone(),
        "n",
        Arc::clone(&stop),
    ));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    runner_a.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    for getter in getters {
        let (count, failures) = getter.await.unwrap();
        total += count;
        assert!(
            failures.is_empty(),
            "{} GETs failed, first: {:?}",
            failures.len(),
            failures.iter().take(5).collect::<Vec<_>>()
        );
    }
    assert!(total > 30, "only {total} GETs were made");
    let posts = poster.await.unwrap();
    assert!(posts.len() > 5, "only {} POSTs were made", posts.len());
    // A POST is answered 201, or 503 when its runner died under it; never 409, which a
    // repetition on the second runner would produce.
    let unexpected: Vec<_> = posts
        .iter()
        .filter(|(_, status)| !matches!(status, 201 | 503))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected POST answers: {unexpected:?}"
    );
    let failed = posts.iter().filter(|(_, status)| *status == 503).count();
    assert!(failed <= 1, "{failed} POSTs failed: {posts:?}");

    // Every created note exists exactly once; nothing beyond what was posted exists.
    let ids = all_note_ids(&client, &gateway.url, &token).await;
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate notes: {ids:?}");
    let posted: BTreeSet<&String> = posts.iter().map(|(id, _)| id).collect();
    assert!(unique.is_subset(&posted), "notes nobody posted: {ids:?}");
    for (id, status) in &posts {
        if *status == 201 {
            assert!(unique.contains(id), "created note {id} is missing");
        }
    }

    // The surviving runner and the gateway stop cleanly on SIGTERM.
    let status = runner_b.terminate().await;
    assert!(
        status.success(),
        "runner-b: {status}\n{}",
        runner_b.log_text()
    );
    let status = gateway.terminate().await;
    assert!(
        status.success(),
        "gateway: {status}\n{}",
        gateway.log_text()
    );
}

/// Resident and peak resident memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 100 MiB uploaded through a gateway and a runner process, each holding a small, bounded
/// part of it at a time: neither process's peak memory grows by anything near the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_upload_streams_through_with_bounded_memory() {
    const LIMIT: u64 = 128 << 20;
    const BODY: usize = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    publishing(data_dir)
        .await
        .install(TENANT, &crate::streaming::manifest(LIMIT), "raw-http", &[])
        .await;
    let config = data_dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!("[runner]\nmax_request_bytes = {LIMIT}\n[gateway]\nmax_request_bytes = {LIMIT}\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let client = reqwest::Client::new();
    let runner_addr = free_addr();
    let mut runner = spawn(
        "runner",
        data_dir,
        &runner_addr,
        &["--config", config, "runner"],
    );
    runner.wait_healthy(&client).await;
    let gateway_addr = free_addr();
    let mut gateway = spawn(
        "gateway",
        data_dir,
        &gateway_addr,
        &[
            "--config",
            config,
            "gateway",
            "--dev",
            "--runner",
            &runner.url,
        ],
    );
    gateway.wait_healthy(&client).await;
    let token = dev_caller_token(data_dir, TENANT);
    let url = format!("{}/api/ext/{}/upload", gateway.url, crate::streaming::RAW);
    let upload = |size: usize| {
        let frames = futures::stream::iter((0..size / (64 << 10)).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![
                1u8;
                64 << 10
            ])))
        }));
        client
            .post(&url)
            .bearer_auth(&token)
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(frames)))
            .send()
    };

    // Warm: the component compiled, connections open.
    let warm = upload(1 << 20).await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK, "{}", gateway.log_text());
    let before = [memory(runner.pid()).0, memory(gateway.pid()).0];

    let response = upload(BODY).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", runner.log_text());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], BODY);
    assert_eq!(answer["sum"], BODY);

    for (name, pid, before) in [
        ("runner", runner.pid(), before[0]),
        ("gateway", gateway.pid(), before[1]),
    ] {
        let (_, peak) = memory(pid);
        let grew = peak.saturating_sub(before);
        assert!(
            grew < 40 << 20,
            "{name}: peak {} MiB, {} MiB above its resident memory before the upload",
            peak >> 20,
            grew >> 20
        );
    }
}
