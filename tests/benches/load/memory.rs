//! Scenario 3: the runner's resident memory with 1,000 calls in flight at once. Each call
//! is a `GET /wait?ms=` of the plain guest, which parks in a `wasi:clocks` subscription;
//! 1,000 tasks call the runner directly, each on its own connection, while the bench
//! samples `/proc/<runner>/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::report::{self, count, kib, mib, seconds};
use crate::setup::{self, Bench, Direct, PLAIN_HELLO};

const TENANT: &str = "bench";
const EXTENSION: &str = "com.example.plain-hello";
const CALLS: usize = 1000;
const TARGET_BYTES: u64 = 2 << 30;

/// Caps raised above 1,000 so that admission refuses nothing; the pool holds one instance
/// per in-flight call.
const CONFIG: &str = "[runtime]\nmax_instances = 1100\n\n\
                      [runner]\nmax_in_flight_per_install = 2000\nmax_in_flight_per_tenant = 2000\n";

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let data = bench.data_dir("memory").await?;
    let wasm = std::fs::read(PLAIN_HELLO)?;
    let published = data
        .publish(&setup::guest_manifest("plain-hello")?, &wasm)
        .await?;
    let install = data.install(TENANT, EXTENSION, &[]).await?;
    let mut runner = bench.runner(&data, Some(CONFIG)).await?;
    let direct = Direct::new(&data, install, &published)?;
    let hold = bench.settings.hold;
    let hellos = direct.requests("GET", "/hello", None, 20)?;
    let waits = direct.requests(
        "GET",
        "/wait",
        Some(&format!("ms={}", hold.as_millis())),
        CALLS,
    )?;

    // Idle: compiled, a few calls served, nothing in flight.
    for hello in &hellos {
        setup::expect_body(&bench.client, &runner.url, hello, b"hello").await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = runner.pid();
    let idle = read_status(pid)?;

    let client = reqwest::Client::builder()
        .timeout(hold * 4 + Duration::from_secs(30))
        .build()?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = read_status(pid) {
                    peak = peak.max(status.rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let started = Instant::now();
    let calls: Vec<_> = waits
        .into_iter()
        .map(|wait| {
            let client = client.clone();
            let url = runner.url.clone();
            tokio::spawn(async move { one_call(&client, &url, &wait).await })
        })
        .collect();
    let mut failures = Vec::new();
    for call in calls {
        if let Err(err) = call.await.context("call task")? {
            failures.push(format!("{err:#}"));
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak_sampled = sampler.await?;
    let after = read_status(pid)?;
    runner.check_alive()?;
    if !failures.is_empty() {
        bail!(
            "{} of {CALLS} calls failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    // Every call waited `hold` inside the runner and began after `started`; if all ended
    // within 2 × hold of `started`, there is an instant every one of them was in flight.
    ensure!(
        elapsed < hold * 2,
        "the {CALLS} calls took {} (≥ 2 × {}): they were not all in flight at once",
        seconds(elapsed),
        seconds(hold)
    );

    let calls = count(CALLS as f64);
    let peak = peak_sampled.max(after.rss);
    let per_call = peak.saturating_sub(idle.rss) / CALLS as u64;
    let rows = vec![
        vec!["idle (warm, nothing in flight)".into(), mib(idle.rss)],
        vec![
            format!("peak with {calls} calls in flight (VmRSS, sampled every 20 ms)"),
            mib(peak),
        ],
        vec!["high-water mark (VmHWM)".into(), mib(after.hwm)],
        vec![
            format!("per in-flight call, (peak − idle) ÷ {calls}"),
            kib(per_call),
        ],
    ];
    let mut out = format!(
        "{calls} concurrent runner calls (execute hop) of `GET /wait?ms={}` (the plain guest \
         parks in a monotonic-clock subscription), each on its own connection, runner caps \
         raised to 1,100 instances and 2,000 calls per install and tenant. All {calls} \
         answered 200 in {} (< 2 × the wait, so all were in flight together).\n\n",
        hold.as_millis(),
        seconds(elapsed)
    );
    out.push_str(&report::table(&["runner resident memory", "value"], &rows));
    out.push_str(&format!(
        "\nTarget: {calls} in-flight calls within 2 GiB: peak {} of 2048 MiB ({:.0} %), {}; \
         {:.1}× the idle figure.\n",
        mib(peak),
        peak as f64 * 100.0 / TARGET_BYTES as f64,
        if peak <= TARGET_BYTES {
            "met"
        } else {
            "not met"
        },
        peak as f64 / idle.rss.max(1) as f64
    ));
    Ok(out)
}

async fn one_call(
    client: &reqwest::Client,
    base: &str,
    request: &crate::wrk::Request,
) -> Result<()> {
    let (status, body) = setup::send(client, base, request).await?;
    ensure!(
        status == 200,
        "runner answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    ensure!(
        body == b"waited",
        "guest answered {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Resident memory of a process, in bytes.
struct Status {
    rss: u64,
    hwm: u64,
}

fn read_status(pid: u32) -> Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{name} missing from /proc/{pid}/status"))?;
        let kib: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{name} {line}"))?;
        Ok(kib * 1024)
    };
    Ok(Status {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}
