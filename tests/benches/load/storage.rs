//! Scenario 2: the storage capability through the runner, on each registry backend:
//! `get` and `set` calls of the `storage-probe` guest on the runner's execute hop, rotating over
//! a set of keys, one runner per backend, every subject alternated over the same rounds.
//! PostgreSQL is the server of `PALISADE_BENCH_POSTGRES_URL` (default
//! [`setup::DEFAULT_POSTGRES`]; set it empty to skip that backend).

use anyhow::{Context, Result, ensure};
use palisade_bundle::CapabilityKey;

use crate::report::{self, Subject, ratio};
use crate::setup::{self, Bench, DataDir, Direct, Server};
use std::sync::Arc;

use crate::wrk::{Feed, Target};

const TENANT: &str = "bench";
const EXTENSION: &str = "com.example.storage-probe";
/// Keys the calls rotate over.
const KEYS: usize = 32;
/// Bytes written by each `set`.
const VALUE_BYTES: usize = 32;
/// How every successful storage-probe answer starts.
const OK: &str = "{\"ok\":";

/// One backend's runner and its `get` and `set` calls.
struct OnBackend {
    name: &'static str,
    data: DataDir,
    runner: Server,
    gets: Feed,
    sets: Feed,
}

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let mut backends = vec![prepare(bench, "SQLite", bench.data_dir("storage").await?).await?];
    let mut skipped = None;
    match &bench.postgres {
        Ok(server) => {
            let data = bench.data_dir_on_postgres("storage", server).await?;
            backends.push(prepare(bench, "PostgreSQL", data).await?);
        }
        Err(reason) => skipped = Some(format!("\nPostgreSQL: {reason}.\n")),
    }

    // The guest answers 200 whatever storage did; its body says. Every answer must be
    // `{"ok":...}`.
    let mut subjects = Vec::new();
    for backend in &backends {
        let succeeded = |feed: &Feed| Target {
            expect: Some(OK.to_owned()),
            ..Target::fed(&backend.runner.url, Arc::clone(feed))
        };
        subjects.push(Subject::new(
            format!("`get` on {} (one key read)", backend.name),
            succeeded(&backend.gets),
        ));
        subjects.push(Subject::new(
            format!("`set` on {} (one key written)", backend.name),
            succeeded(&backend.sets),
        ));
    }
    report::measure(bench, &mut subjects).await?;
    for backend in &mut backends {
        backend.runner.check_alive()?;
        let reply = call(bench, &backend.runner.url, &(backend.gets)(usize::MAX / 4)?).await?;
        ensure!(
            reply["ok"].is_object(),
            "get on {} after the load answered {reply}",
            backend.name
        );
        backend.data.drop_schema().await?;
    }

    let mut out = format!(
        "`tests/guests/storage-probe` on the runner's execute hop (a service token per call, as \
         the gateway calls it): one runner on the data directory's SQLite database (WAL), \
         one on a schema of the local PostgreSQL server (`--database-url`). Each call is one \
         guest call doing one storage operation on one of {KEYS} keys, taken in turn; `set` \
         writes {VALUE_BYTES} bytes (the per-install write rate off). {}.\n\n",
        bench.settings.method()
    );
    out.push_str(&report::subjects_table(&subjects));
    if let [sqlite_get, sqlite_set, pg_get, pg_set] = &subjects[..] {
        let mut rows = Vec::new();
        for (op, pg, sqlite) in [("get", pg_get, sqlite_get), ("set", pg_set, sqlite_set)] {
            let (median, per_round) = pg.rps_ratio(sqlite);
            rows.push(vec![
                format!("`{op}` PostgreSQL ÷ SQLite"),
                ratio(median),
                format!("{}–{}", ratio(per_round.min), ratio(per_round.max)),
                ratio(pg.p99().median / sqlite.p99().median),
            ]);
        }
        out.push_str("\nPostgreSQL against SQLite (throughput of the medians, per-round range; p99 of the medians):\n\n");
        out.push_str(&report::table(
            &["ratio", "throughput", "per round", "p99"],
            &rows,
        ));
    }
    out.extend(skipped);
    Ok(out)
}

/// Publishes and installs storage-probe in `data`, starts a runner on it, writes every key
/// once and checks that a write and a read answer what storage-probe does on success (the
/// runner's own status is 200 either way).
async fn prepare(bench: &Bench, name: &'static str, data: DataDir) -> Result<OnBackend> {
    let wasm = std::fs::read(env!("PALISADE_GUEST_STORAGE_PROBE"))?;
    let published = data
        .publish(&setup::guest_manifest("storage-probe")?, &wasm)
        .await?;
    let install = data
        .install(
            TENANT,
            EXTENSION,
            &[CapabilityKey::Log, CapabilityKey::Storage],
        )
        .await?;
    // The per-install write rate is off: this measures the database path, and every call
    // here writes for one install.
    let runner = bench
        .runner(&data, Some("[storage]\ninstall_writes_per_second = 0\n"))
        .await?;
    let direct = Arc::new(Direct::new(&data, install, &published)?);

    // Call `i` of `op` uses key `i % KEYS`.
    let feed = |method: &'static str, path: &'static str, op: &'static str| -> Feed {
        let direct = Arc::clone(&direct);
        Arc::new(move |i| {
            let key = i % KEYS;
            let query = match op {
                "set" => format!("ns=probe&key=k{key}&size={VALUE_BYTES}"),
                _ => format!("ns=probe&key=k{key}"),
            };
            direct.call(method, path, Some(&query), i)
        })
    };
    let sets = feed("PUT", "/set", "set");
    let gets = feed("GET", "/get", "get");
    for key in 0..KEYS {
        let reply = call(bench, &runner.url, &sets(key)?)
            .await
            .with_context(|| format!("set on {name}"))?;
        ensure!(reply["ok"].is_u64(), "set on {name} answered {reply}");
    }
    let reply = call(bench, &runner.url, &gets(0)?).await?;
    ensure!(
        reply["ok"]["value"].as_str() == Some(&"x".repeat(VALUE_BYTES)),
        "get on {name} answered {reply}"
    );
    Ok(OnBackend {
        name,
        data,
        runner,
        gets,
        sets,
    })
}

/// One call through the runner; returns the guest's JSON answer.
async fn call(
    bench: &Bench,
    base: &str,
    request: &crate::wrk::Request,
) -> Result<serde_json::Value> {
    let (status, body) = setup::send(&bench.client, base, request).await?;
    ensure!(
        status == 200,
        "runner answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).context("the guest's answer is not JSON")
}
