//! Hostile guests: each misbehaviour gets its documented status and code, and the runner
//! keeps serving a well-behaved guest during and after.

use crate::support::{Platform, bundle, guest};

const TENANT: &str = "acme";
const HOSTILE: &str = "com.example.hostile";

/// The hostile guest's manifest: one endpoint per misbehaviour.
pub(crate) fn manifest() -> serde_json::Value {
    serde_json::json!({
        "id": HOSTILE,
        "name": "Hostile",
        "publisher": "Palisade tests",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "hostile.wasm",
        "capabilities": { "log": true },
        "api": { "endpoints": [
            { "method": "GET", "path": "/ok" },
            { "method": "GET", "path": "/loop" },
            { "method": "GET", "path": "/alloc" },
            { "method": "GET", "path": "/alloc/:mib" },
            { "method": "GET", "path": "/panic" },
            { "method": "GET", "path": "/stack" },
            { "method": "GET", "path": "/exit" },
            { "method": "GET", "path": "/logs/:n" },
            { "method": "GET", "path": "/sandbox" }
        ] },
        "limits": { "timeout_ms": 1000, "memory_mb": 16 }
    })
}

async fn platform() -> Platform {
    platform_with(crate::support::Options::default()).await
}

async fn expect_error(platform: &Platform, ext: &str, path: &str, status: u16, code: &str) {
    let response = platform.call(TENANT, ext, path).await;
    assert_eq!(response.status(), status, "{path}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{path}: {body}");
}

async fn hello_still_works(platform: &Platform) {
    platform.assert_hello_answers(TENANT).await;
}

#[tokio::test]
async fn an_infinite_loop_is_cut_at_the_deadline() {
    let platform = platform().await;
    let started = std::time::Instant::now();
    let (looping, ()) = tokio::join!(
        expect_error(&platform, HOSTILE, "/loop", 504, "timeout"),
        hello_still_works(&platform),
    );
    let () = looping;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    hello_still_works(&platform).await;
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory_and_the_slot_is_reusable() {
    let platform = platform().await;
    expect_error(&platform, HOSTILE, "/alloc", 500, "out_of_memory").await;
    // Right under the cap works; the next bomb fails the same way.
    let response = platform.call(TENANT, HOSTILE, "/alloc/8").await;
    assert_eq!(response.status(), 200);
    expect_error(&platform, HOSTILE, "/alloc/64", 500, "out_of_memory").await;
    hello_still_works(&platform).await;
}

#[tokio::test]
async fn panics_stack_overflows_and_exits_are_traps() {
    let platform = platform().await;
    expect_error(&platform, HOSTILE, "/panic", 500, "trap").await;
    expect_error(&platform, HOSTILE, "/stack", 500, "trap").await;
    expect_error(&platform, HOSTILE, "/exit", 500, "trap").await;
    hello_still_works(&platform).await;
    let response = platform.call(TENANT, HOSTILE, "/ok").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn thousands_of_log_lines_are_bounded_not_fatal() {
    let platform = platform().await;
    let response = platform.call(TENANT, HOSTILE, "/logs/5000").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "5000");
}

#[tokio::test]
async fn the_sandbox_has_no_environment_and_no_files() {
    let platform = platform().await;
    let response = platform.call(TENANT, HOSTILE, "/sandbox").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["env"], serde_json::json!([]));
    assert_eq!(body["root"], "denied");
    assert_eq!(body["etc_passwd"], "denied");
}

/// Spinning guests never keep the serving thread: with the whole platform on one thread,
/// a well-behaved call is answered while two spinning calls are still running.
#[tokio::test(flavor = "current_thread")]
async fn spinning_guests_leave_the_serving_thread_to_other_calls() {
    let platform = platform().await;
    // Compile both guests first, so only guest code runs below. (On a busy machine the
    // first call may time out while its compile finishes; the compile is cached anyway.)
    for _ in 0..5 {
        if platform.call_status(TENANT, HOSTILE, "/ok").await == 200 {
            break;
        }
    }
    hello_still_works(&platform).await;

    let loops = futures::future::join(
        expect_error(&platform, HOSTILE, "/loop", 504, "timeout"),
        expect_error(&platform, HOSTILE, "/loop", 504, "timeout"),
    );
    let mut loops = std::pin::pin!(loops);
    let meanwhile = async {
        // Give both loops time to start spinning.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        hello_still_works(&platform).await;
    };
    tokio::select! {
        biased;
        _ = &mut loops => panic!("the spinning calls ended before the other call was answered"),
        () = meanwhile => {}
    }
    loops.await;
}

#[tokio::test]
async fn in_flight_calls_are_capped_per_install_with_429() {
    let platform = platform_with(crate::support::Options {
        runner: palisade_runner::RunnerConfig {
            max_in_flight_per_install: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // Warm the compile cache so both calls below overlap inside the guest.
    assert_eq!(platform.call_status(TENANT, HOSTILE, "/ok").await, 200);

    let slow = platform.call(TENANT, HOSTILE, "/loop");
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let response = platform.call(TENANT, HOSTILE, "/ok").await;
        // Another install of the same tenant is not blocked by this install's cap.
        hello_still_works(&platform).await;
        response
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.status(), 504);
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"], "over_quota");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs [`thousand_hostile_calls_leak_nothing`] alone in a child process, so that the
/// descriptors and memory of tests running in parallel do not blur the measurement.
#[test]
fn a_thousand_hostile_calls_leak_no_memory_or_descriptors() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile::thousand_hostile_calls_leak_nothing",
            "--ignored",
            "--test-threads=1",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the measurement in the child process failed"
    );
}

#[tokio::test]
#[ignore = "run in its own process by a_thousand_hostile_calls_leak_no_memory_or_descriptors"]
async fn thousand_hostile_calls_leak_nothing() {
    let platform = platform().await;
    let paths = ["/panic", "/alloc/64", "/exit", "/ok", "/stack"];
    let run = |n: usize| {
        let platform = &platform;
        async move {
            for i in 0..n {
                let path = paths[i % paths.len()];
                let response = platform.call(TENANT, HOSTILE, path).await;
                let expected = if path == "/ok" { 200 } else { 500 };
                assert_eq!(response.status(), expected, "{path}");
                response.bytes().await.unwrap();
            }
        }
    };
    // Warm up: compile, fill the pool's warm slots and the client's connections.
    run(100).await;
    let (fds, rss) = (open_fds(), rss_kib());
    run(1000).await;
    hello_still_works(&platform).await;
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    assert!(
        fds_after <= fds + 8,
        "file descriptors grew from {fds} to {fds_after}"
    );
    assert!(
        rss_after <= rss + 64 * 1024,
        "resident memory grew from {rss} KiB to {rss_after} KiB"
    );
}

const RAW: &str = crate::streaming::RAW;

/// A platform with the raw-http guest, as the streaming tests install it, also routing
/// `/huge-headers` and with a shorter deadline.
async fn raw_platform() -> Platform {
    let platform = Platform::start().await;
    platform.install_hello(TENANT).await;
    let mut manifest = crate::streaming::manifest(1 << 20);
    manifest["api"]["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "method": "GET", "path": "/huge-headers" }));
    manifest["limits"]["timeout_ms"] = 3000.into();
    platform
        .install_guest(&manifest, "raw-http", &[TENANT], &[])
        .await;
    platform
}

#[tokio::test]
async fn an_endless_response_body_is_cut_off_at_the_cap() {
    let platform = raw_platform().await;
    let started = std::time::Instant::now();
    let mut response = platform.call(TENANT, RAW, "/endless").await;
    // The head went out before the body reached its cap: the status stands, the body is
    // aborted there.
    assert_eq!(response.status(), 200);
    let mut received = 0;
    let aborted = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(aborted, "a cut body must not end cleanly");
    assert!(received <= 1048576, "{received}");
    // Cut at the cap, not at the deadline.
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
    hello_still_works(&platform).await;
}

#[tokio::test]
async fn huge_response_headers_end_the_call_as_a_trap() {
    let platform = raw_platform().await;
    // The host refuses a header map past `max_header_bytes`; wasi-http makes that refusal
    // fatal for the guest, which the runner reports as a trap.
    expect_error(&platform, RAW, "/huge-headers", 500, "trap").await;
    hello_still_works(&platform).await;
}

async fn platform_with(options: crate::support::Options) -> Platform {
    let platform = crate::support::Platform::start_with(options).await;
    platform.install_hello(TENANT).await;
    platform
        .publish(&bundle(&manifest(), &guest("hostile")))
        .await;
    platform
        .registry
        .install(
            TENANT,
            HOSTILE,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    platform
}

#[tokio::test]
async fn with_fuel_on_a_loop_runs_out_of_fuel_and_consumption_is_logged() {
    let platform = platform_with(crate::support::Options {
        runtime: palisade_runtime::RuntimeConfig {
            fuel: true,
            fuel_per_call: 50_000_000,
            max_instances: 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // Compile first, so that the timing below is the loop's alone.
    assert_eq!(platform.call_status(TENANT, HOSTILE, "/ok").await, 200);
    let started = std::time::Instant::now();
    expect_error(&platform, HOSTILE, "/loop", 500, "trap").await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "fuel, not the deadline, ended the loop"
    );
    let response = platform.call(TENANT, HOSTILE, "/ok").await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // Read to its end, which carries what the call consumed.
    response.bytes().await.unwrap();
    let mut fuel = None;
    for _ in 0..50 {
        let rows = platform
            .registry
            .recent_executions(TENANT, Some(HOSTILE), 10)
            .await
            .unwrap();
        fuel = rows
            .into_iter()
            .find(|r| r.request_id == request_id)
            .and_then(|r| r.fuel_consumed);
        if fuel.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(fuel.unwrap_or(0) > 0, "consumed fuel is logged");
}

#[tokio::test]
async fn an_exhausted_instance_pool_is_503_not_a_crash() {
    let platform = platform_with(crate::support::Options {
        runtime: palisade_runtime::RuntimeConfig {
            max_instances: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert_eq!(platform.call_status(TENANT, HOSTILE, "/ok").await, 200);
    let calls = (0..3).map(|_| platform.call(TENANT, HOSTILE, "/loop"));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 504),
        "{statuses:?}"
    );
    // The pool recovers once the loops are cut.
    assert_eq!(platform.call_status(TENANT, HOSTILE, "/ok").await, 200);
}
