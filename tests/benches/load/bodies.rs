//! Scenario: bodies that are large or slow to make. A 64 MiB download through the whole
//! gateway path against the same guest on a tuned `wasmtime serve` (MiB/s, and the peak
//! resident memory of each server process), and a guest that writes 100,000 lines to
//! stdout and as many to stderr before answering (time to its answer).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::report::{self, ratio};
use crate::setup::{Bench, RAW_HTTP, Server};
use crate::throughput::TUNED;

const TENANT: &str = "bench";
const EXTENSION: &str = "com.example.raw-http";
const DOWNLOAD_MIB: u64 = 64;
const PRINT_LINES: u64 = 100_000;
/// Calls of each kind per subject; the median is reported.
const CALLS: usize = 5;

fn manifest() -> serde_json::Value {
    serde_json::json!({
        "id": EXTENSION,
        "name": "Raw HTTP",
        "publisher": "Palisade bench",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": "raw_http.wasm",
        "capabilities": { "log": false },
        "api": { "endpoints": [
            { "method": "GET", "path": "/download" },
            { "method": "GET", "path": "/print" }
        ] },
        "limits": {
            "timeout_ms": 30000,
            "memory_mb": 64,
            "max_response_bytes": 134217728
        }
    })
}

/// Resident memory now and at its peak, of process `pid`, in MiB.
fn memory_mib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{name} missing"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib / 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// One GET of `url` read to its end; returns the bytes and the time it took.
async fn get(bench: &Bench, url: &str, token: Option<&str>) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut request = bench.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.with_context(|| url.to_owned())?;
    ensure!(
        response.status() == 200,
        "{url} answered {}",
        response.status()
    );
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok((bytes, started.elapsed()))
}

/// The median of `CALLS` GETs of `path` on `base`; fails unless each brings `bytes`.
async fn median(
    bench: &Bench,
    base: &str,
    path: &str,
    token: Option<&str>,
    bytes: u64,
) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..CALLS {
        let (got, took) = get(bench, &format!("{base}{path}"), token).await?;
        ensure!(got == bytes, "{base}{path}: {got} bytes, expected {bytes}");
        times.push(took);
    }
    times.sort();
    Ok(times[CALLS / 2])
}

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let wasm = std::fs::read(RAW_HTTP)?;
    let data = bench.data_dir("bodies").await?;
    data.publish(&manifest(), &wasm).await?;
    data.install(TENANT, EXTENSION, &[]).await?;
    let runner = bench
        .runner(
            &data,
            Some("[runtime]\nmax_response_bytes = 134217728\nmax_timeout_ms = 30000\n"),
        )
        .await?;
    let gateway = bench.gateway(&data, &runner).await?;
    let token = bench.caller_token(&data, TENANT)?;
    let palisade = format!("{}/api/ext/{EXTENSION}", gateway.url);
    let wasmtime: Option<Server> = match &bench.wasmtime {
        Ok(_) => Some(
            bench
                .wasmtime_serve_of("wasmtime-raw-http", Path::new(RAW_HTTP), &TUNED, "/ok")
                .await?,
        ),
        Err(_) => None,
    };

    let download = format!("/download?mib={DOWNLOAD_MIB}");
    let bytes = DOWNLOAD_MIB << 20;
    let print = format!("/print?lines={PRINT_LINES}");
    // Warm: compiled, connections open.
    get(bench, &format!("{palisade}/download?mib=1"), Some(&token)).await?;
    get(bench, &format!("{palisade}/print?lines=10"), Some(&token)).await?;
    let before = [memory_mib(runner.pid())?.0, memory_mib(gateway.pid())?.0];
    let ours = median(bench, &palisade, &download, Some(&token), bytes).await?;
    let (_, runner_peak) = memory_mib(runner.pid())?;
    let (_, gateway_peak) = memory_mib(gateway.pid())?;
    let ours_print = median(bench, &palisade, &print, Some(&token), 7).await?;

    let mib_s = |took: Duration| DOWNLOAD_MIB as f64 / took.as_secs_f64();
    let mut rows = vec![vec![
        "gateway → runner".to_owned(),
        format!("{:.0} MiB/s", mib_s(ours)),
        format!(
            "runner {} → {runner_peak} MiB, gateway {} → {gateway_peak} MiB",
            before[0], before[1]
        ),
        format!("{:.2} s", ours_print.as_secs_f64()),
    ]];
    let mut verdicts = String::new();
    if let Some(server) = &wasmtime {
        get(bench, &format!("{}/download?mib=1", server.url), None).await?;
        let rss = memory_mib(server.pid())?.0;
        let theirs = median(bench, &server.url, &download, None, bytes).await?;
        let (_, peak) = memory_mib(server.pid())?;
        let theirs_print = median(bench, &server.url, &print, None, 7).await?;
        rows.push(vec![
            "wasmtime serve (tuned)".to_owned(),
            format!("{:.0} MiB/s", mib_s(theirs)),
            format!("{rss} → {peak} MiB"),
            format!("{:.2} s", theirs_print.as_secs_f64()),
        ]);
        let throughput = theirs.as_secs_f64() / ours.as_secs_f64();
        let output = ours_print.as_secs_f64() / theirs_print.as_secs_f64();
        verdicts = format!(
            "\n* Download throughput, gateway path ÷ `wasmtime serve` (tuned): {}.\n\
             * Time to answer after {PRINT_LINES} + {PRINT_LINES} output lines, gateway path \
             ÷ `wasmtime serve` (tuned): {} (target ≤ 2×: {}).\n",
            ratio(throughput),
            ratio(output),
            if output <= 2.0 { "met" } else { "not met" }
        );
    }
    let mut out = format!(
        "`tests/guests/raw-http`: `GET {download}` writes {DOWNLOAD_MIB} MiB in 4 KiB writes \
         with a `content-length`; `GET {print}` writes {PRINT_LINES} lines to stdout and as \
         many to stderr (about 15 MB) before answering `printed`. Each is called {CALLS} \
         times in a row by one client reading the body as it arrives; medians. Memory: \
         resident memory of each server process before the downloads → its peak after \
         them.\n\n"
    );
    out.push_str(&report::table(
        &[
            "subject",
            "64 MiB download",
            "resident memory",
            "stdout flood",
        ],
        &rows,
    ));
    out.push_str(&verdicts);
    if wasmtime.is_none() {
        out.push_str("\n`wasmtime serve` baseline skipped (no wasmtime binary).\n");
    }
    Ok(out)
}
