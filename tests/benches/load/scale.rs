//! Scenario 4: call latency through the gateway with 10,000 installs (100 tenants × 100
//! extensions) against calls with 10 installs. Two platforms (gateway + runner each, own
//! data directory) are seeded through the registry library, then measured in alternation,
//! the `wrk` script rotating over (tenant, extension) pairs with each tenant's caller token.

use std::time::Instant;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};

use crate::report::{self, Subject, count, latency, ratio, seconds};
use crate::setup::{self, Bench, DataDir, PLAIN_HELLO, Server};
use crate::wrk::{Request, Target};

const EXTENSIONS: usize = 100;
const TENANTS: usize = 100;
/// Installs of the small platform: tenant i installs extension i.
const SMALL: usize = 10;
/// Extensions each tenant calls in the spread rotation over the large platform.
const SPREAD_PER_TENANT: usize = 10;
/// Installs written at once (SQLite takes one writer at a time; this keeps it busy).
const INSTALL_CONCURRENCY: usize = 8;
/// The p99 target: within this factor of the p99 with 10 installs.
const P99_TARGET: f64 = 1.2;

fn tenant(i: usize) -> String {
    format!("tenant-{i:03}")
}

fn extension(i: usize) -> String {
    format!("com.example.bench-{i:03}")
}

/// A gateway and runner on one data directory.
struct Platform {
    data: DataDir,
    runner: Server,
    gateway: Server,
}

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let wasm = std::fs::read(PLAIN_HELLO)?;
    let template = setup::guest_manifest("plain-hello")?;

    let started = Instant::now();
    let small_pairs: Vec<(usize, usize)> = (0..SMALL).map(|i| (i, i)).collect();
    let small = platform(bench, "scale-small", &wasm, &template, &small_pairs).await?;
    let all_pairs: Vec<(usize, usize)> = (0..TENANTS)
        .flat_map(|t| (0..EXTENSIONS).map(move |e| (t, e)))
        .collect();
    let large = platform(bench, "scale-large", &wasm, &template, &all_pairs).await?;
    let seeded = started.elapsed();

    // What the connections call, in turn: the small platform's 10 pairs; the same 10 pairs
    // on the large one (only the size of the tables differs); 1,000 pairs of 100 tenants
    // over 10 extensions (many installs and tokens, 10 components); and 1,000 pairs that
    // also cover all 100 extensions (100 components as well).
    let same_ten: Vec<(usize, usize)> = (0..TENANTS)
        .flat_map(|t| (0..SPREAD_PER_TENANT).map(move |j| (t, j)))
        .collect();
    let all_hundred: Vec<(usize, usize)> = (0..TENANTS)
        .flat_map(|t| (0..SPREAD_PER_TENANT).map(move |j| (t, (t + j * 10) % EXTENSIONS)))
        .collect();
    let large_installs = count((TENANTS * EXTENSIONS) as f64);
    let spread = count(same_ten.len() as f64);
    let rotations = [
        (
            &small,
            format!("{SMALL} installs, {SMALL} pairs called"),
            &small_pairs,
        ),
        (
            &large,
            format!("{large_installs} installs, the same {SMALL} pairs called"),
            &small_pairs,
        ),
        (
            &large,
            format!(
                "{large_installs} installs, {spread} pairs called ({TENANTS} tenants × the same \
                 {SPREAD_PER_TENANT} extensions)"
            ),
            &same_ten,
        ),
        (
            &large,
            format!(
                "{large_installs} installs, {spread} pairs called ({TENANTS} tenants × \
                 {SPREAD_PER_TENANT} extensions, all {EXTENSIONS} covered)"
            ),
            &all_hundred,
        ),
    ];
    let mut subjects = Vec::new();
    let started = Instant::now();
    for (platform, label, pairs) in rotations {
        let requests = calls(bench, platform, pairs)?;
        warm(bench, &platform.gateway, &requests).await?;
        subjects.push(Subject::new(
            label,
            Target::new(&platform.gateway.url, requests),
        ));
    }
    let warmed = started.elapsed();

    report::measure(bench, &mut subjects).await?;
    for mut platform in [small, large] {
        platform.runner.check_alive()?;
        platform.gateway.check_alive()?;
    }

    let mut out = format!(
        "Gateway path (`GET /api/ext/<id>/hello`, caller JWT, runner behind it) on two \
         platforms with the same {EXTENSIONS} published extensions (the plain guest under \
         {EXTENSIONS} ids): {SMALL} installs, and {large_installs} installs ({TENANTS} tenants × \
         {EXTENSIONS}), written through the registry library. Each connection takes the \
         listed (tenant, extension) pairs in turn, each call with its tenant's token; every \
         pair was called once before measuring. Gateways and runners run with the default \
         settings (install and trust caches of 5 minutes, 100 warm pool slots) but for the \
         rate limits, which are off. {}. \
         Seeding took {}, warming {}.\n\n",
        bench.settings.method(),
        seconds(seeded),
        seconds(warmed),
    );
    out.push_str(&report::subjects_table(&subjects));
    let base = &subjects[0];
    let rows: Vec<Vec<String>> = subjects[1..]
        .iter()
        .map(|s| {
            let r = s.p99().median / base.p99().median;
            vec![
                s.label.clone(),
                latency(s.p99().median),
                ratio(r),
                format!("≤ {}", ratio(P99_TARGET)),
                if r <= P99_TARGET { "met" } else { "not met" }.into(),
                ratio(s.rps_ratio(base).0),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nAgainst {SMALL} installs (p99 {}, {} req/s):\n\n",
        latency(base.p99().median),
        count(base.rps().median)
    ));
    out.push_str(&report::table(
        &[
            "setup",
            "p99",
            "p99 ratio",
            "target",
            "verdict",
            "req/s ratio",
        ],
        &rows,
    ));
    Ok(out)
}

/// Publishes the extensions, installs `pairs` (tenant, extension) and starts a runner and
/// a gateway on a fresh data directory.
async fn platform(
    bench: &Bench,
    name: &str,
    wasm: &[u8],
    template: &serde_json::Value,
    pairs: &[(usize, usize)],
) -> Result<Platform> {
    let data = bench.data_dir(name).await?;
    for e in 0..EXTENSIONS {
        let mut manifest = template.clone();
        manifest["id"] = extension(e).into();
        data.publish(&manifest, wasm)
            .await
            .with_context(|| format!("publishing {}", extension(e)))?;
    }
    eprintln!("load bench:   {name}: writing {} installs", pairs.len());
    futures::stream::iter(pairs.iter().map(|&(t, e)| {
        let data = &data;
        async move { data.install(&tenant(t), &extension(e), &[]).await }
    }))
    .buffer_unordered(INSTALL_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    let runner = bench.runner(&data, None).await?;
    let gateway = bench.gateway(&data, &runner).await?;
    Ok(Platform {
        data,
        runner,
        gateway,
    })
}

/// The gateway requests of `pairs`, each with a token of its tenant.
fn calls(bench: &Bench, platform: &Platform, pairs: &[(usize, usize)]) -> Result<Vec<Request>> {
    let mut tokens = std::collections::HashMap::new();
    for &(t, _) in pairs {
        if let std::collections::hash_map::Entry::Vacant(entry) = tokens.entry(t) {
            entry.insert(bench.caller_token(&platform.data, &tenant(t))?);
        }
    }
    Ok(pairs
        .iter()
        .map(|&(t, e)| setup::gateway_request(&extension(e), "/hello", &tokens[&t]))
        .collect())
}

/// Calls every request once (compiling each extension on the runner) and checks the answer.
async fn warm(bench: &Bench, gateway: &Server, requests: &[Request]) -> Result<()> {
    futures::stream::iter(
        requests
            .iter()
            .map(|request| setup::expect_body(&bench.client, &gateway.url, request, b"hello")),
    )
    .buffer_unordered(4)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}
