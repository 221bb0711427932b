//! Scenario 2: the storage capability through the runner, on the SQLite registry: `get`
//! and `set` calls of the `storage-probe` guest on `POST /v1/execute`, rotating over a set
//! of keys, alternated over rounds.

use anyhow::{Context, Result, ensure};
use palisade_bundle::CapabilityKey;
use palisade_protocol::ExecuteResponse;

use crate::report::{self, Subject};
use crate::setup::{self, Bench, Direct};
use crate::wrk::Target;

const TENANT: &str = "bench";
const EXTENSION: &str = "com.example.storage-probe";
/// Keys the calls rotate over.
const KEYS: usize = 32;
/// Bytes written by each `set`.
const VALUE_BYTES: usize = 32;
/// `{"ok":` in base64: how every successful storage-probe answer starts.
const OK_B64: &str = "eyJvayI6";

pub async fn run(bench: &Bench) -> Result<String> {
    let data = bench.data_dir("storage").await?;
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
    let mut runner = bench.runner(&data, None).await?;
    let direct = Direct::new(&data, install, &published)?;

    let key_query = |op: &str, key: usize| match op {
        "set" => format!("ns=probe&key=k{key}&size={VALUE_BYTES}"),
        _ => format!("ns=probe&key=k{key}"),
    };
    let requests = |method: &str, path: &str, op: &str| -> Result<Vec<_>> {
        (0..KEYS)
            .map(|key| direct.request(method, path, Some(&key_query(op, key))))
            .collect()
    };
    let sets = requests("PUT", "/set", "set")?;
    let gets = requests("GET", "/get", "get")?;

    // Write every key once, and check a write and a read answer what storage-probe does
    // on success (the runner's own status is 200 either way).
    for set in &sets {
        let reply = call(bench, &runner.url, set).await?;
        ensure!(reply["ok"].is_u64(), "set answered {reply}");
    }
    let reply = call(bench, &runner.url, &gets[0]).await?;
    ensure!(
        reply["ok"]["value"].as_str() == Some(&"x".repeat(VALUE_BYTES)),
        "get answered {reply}"
    );

    // The runner answers 200 whatever storage did; the guest's body says. Every answer
    // must be `{"ok":...}`: its base64 in the runner's reply starts with this.
    let succeeded = |requests| Target {
        expect: Some(format!("\"body_b64\":\"{OK_B64}")),
        ..Target::new(&runner.url, requests)
    };
    let mut subjects = vec![
        Subject::new("`get` (one key read)", succeeded(gets)),
        Subject::new("`set` (one key written)", succeeded(sets)),
    ];
    report::measure(bench, &mut subjects).await?;
    runner.check_alive()?;
    let reply = call(bench, &runner.url, &subjects[0].target.requests[0]).await?;
    ensure!(
        reply["ok"].is_object(),
        "get after the load answered {reply}"
    );

    let mut out = format!(
        "`tests/guests/storage-probe` on the runner's `POST /v1/execute` (service token, as \
         the gateway calls it), storage in the data directory's SQLite database (WAL). Each \
         call is one guest call doing one storage operation on one of {KEYS} keys, taken in \
         turn; `set` writes {VALUE_BYTES} bytes. {}.\n\n",
        bench.settings.method()
    );
    out.push_str(&report::subjects_table(&subjects));
    out.push_str(
        "\nPostgreSQL: skipped: no PostgreSQL backend (the registry and storage run on SQLite \
         only).\n",
    );
    Ok(out)
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
    let reply: ExecuteResponse = serde_json::from_slice(&body)?;
    ensure!(reply.status == 200, "guest answered {}", reply.status);
    serde_json::from_slice(&reply.body()?).context("the guest's answer is not JSON")
}
