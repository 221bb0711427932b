//! Runtime benchmark: cold first load with and without a precompiled artifact, and the
//! per-call cost of instantiate + handle + drop on a warm pre-instance (hello guest).
//! Prints a Markdown section; `just bench` writes it into docs/benchmarks.md.

#![allow(clippy::unwrap_used, missing_docs)]

mod bare_host;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use palisade_bundle::Capabilities;
use palisade_runtime::{
    ArtifactKey, Artifacts, CallLimits, GrantSet, HostServices, Invocation, RequestBodyError,
    Runtime, RuntimeConfig,
};

const COLD_ROUNDS: usize = 5;
const CALLS: usize = 2000;
const ROUNDS: usize = 5;

fn runtime(artifacts: Option<Artifacts>) -> Runtime {
    runtime_with(RuntimeConfig::default(), artifacts)
}

fn runtime_with(config: RuntimeConfig, artifacts: Option<Artifacts>) -> Runtime {
    let services = HostServices {
        artifacts,
        ..HostServices::default()
    };
    Runtime::new(config, services).unwrap()
}

/// Every call handed to the guest threads from its start (the behaviour before calls
/// started inline).
fn handed_off() -> RuntimeConfig {
    RuntimeConfig {
        inline_calls: false,
        ..RuntimeConfig::default()
    }
}

/// The engine with wasmtime's pooling defaults: nothing kept resident, no page scan.
fn untuned() -> RuntimeConfig {
    RuntimeConfig {
        memory_keep_resident: 0,
        table_keep_resident: 0,
        pagemap_scan: false,
        ..RuntimeConfig::default()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let wasm = std::fs::read(env!("PALISADE_GUEST_HELLO")).unwrap();
    let grants = GrantSet::of(&Capabilities::default());
    let cache = tempfile::tempdir().unwrap();
    let artifacts = Artifacts {
        local_dir: Some(cache.path().to_path_buf()),
        remote: None,
        key: ArtifactKey::new([9; 32]),
        trusted: None,
        signer: None,
    };

    // Cold load, compiling: a fresh runtime each round, so nothing is cached.
    let mut compile = Vec::new();
    for round in 0..COLD_ROUNDS {
        let rt = runtime(None);
        let started = Instant::now();
        rt.prepare(&format!("sha256:compile{round}"), wasm.clone(), grants)
            .await
            .unwrap();
        compile.push(started.elapsed());
    }
    // Cold load from a sealed artifact on disk: stored once, then a fresh runtime a round.
    runtime(Some(artifacts.clone()))
        .precompile("sha256:artifact", wasm.clone())
        .await
        .unwrap();
    let mut from_artifact = Vec::new();
    for _ in 0..COLD_ROUNDS {
        let rt = runtime(Some(artifacts.clone()));
        let started = Instant::now();
        rt.prepare("sha256:artifact", wasm.clone(), grants)
            .await
            .unwrap();
        assert_eq!(rt.compile_stats().compiled, 0);
        from_artifact.push(started.elapsed());
    }
    let compile = median(compile);
    let from_artifact = median(from_artifact);

    // Per call: instantiate + handle + drop on a warm pre-instance, one call at a time,
    // with the engine as configured and with wasmtime's pooling defaults. Alternated over
    // rounds because the machine is shared; medians reported.
    let tuned_rt = runtime(None);
    let untuned_rt = runtime_with(untuned(), None);
    let handed_off_rt = runtime_with(handed_off(), None);
    let mut tuned = Vec::new();
    let mut plain = Vec::new();
    let mut hand_off = Vec::new();
    for _ in 0..ROUNDS {
        tuned.push(per_call(&tuned_rt, &wasm, grants).await);
        plain.push(per_call(&untuned_rt, &wasm, grants).await);
        hand_off.push(per_call(&handed_off_rt, &wasm, grants).await);
    }
    let tuned = median(tuned);
    let plain = median(plain);
    let hand_off = median(hand_off);

    // The same plain wasi-http guest in a bare wasmtime host and in the runtime: what
    // `Runtime::execute` adds to wasmtime's own instantiate + handle + drop.
    let plain_wasm = std::fs::read(env!("PALISADE_GUEST_PLAIN_HELLO")).unwrap();
    let bare = bare_host::BareHost::new(&plain_wasm);
    let plain_rt = runtime(None);
    let mut bare_calls = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..ROUNDS {
        bare_calls.push(bare_host::per_call(&bare, CALLS).await);
        ours.push(per_call_at(&plain_rt, &plain_wasm, grants, "/hello").await);
    }
    let bare_call = median(bare_calls);
    let ours = median(ours);

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("## Runtime (hello guest)\n");
    println!("Measured with `cargo bench -p palisade-tests --bench runtime` on {cpus} CPUs;");
    println!(
        "medians of {COLD_ROUNDS} cold loads and of {ROUNDS} rounds of {CALLS} sequential calls.\n"
    );
    println!("| scenario | time | speed-up (baseline time ÷ time) |");
    println!("|---|---|---|");
    println!("| first load, compiling (baseline) | {compile:.2?} | 1.0× |");
    println!(
        "| first load, sealed precompiled artifact | {from_artifact:.2?} | {:.1}× |",
        compile.as_secs_f64() / from_artifact.as_secs_f64()
    );
    println!(
        "| per call, pooling defaults (baseline) | {:.1} µs | 1.0× |",
        plain.as_secs_f64() * 1e6
    );
    println!(
        "| per call, tuned engine, every call handed to the guest threads | {:.1} µs | {:.2}× |",
        hand_off.as_secs_f64() * 1e6,
        plain.as_secs_f64() / hand_off.as_secs_f64()
    );
    println!(
        "| per call, tuned engine, inline until the first epoch tick (default) | {:.1} µs | {:.2}× |",
        tuned.as_secs_f64() * 1e6,
        plain.as_secs_f64() / tuned.as_secs_f64()
    );
    println!(
        "| per call, plain-hello guest, bare wasmtime host (baseline) | {:.1} µs | 1.0× |",
        bare_call.as_secs_f64() * 1e6
    );
    println!(
        "| per call, plain-hello guest, `Runtime::execute` | {:.1} µs | {:.2}× |",
        ours.as_secs_f64() * 1e6,
        bare_call.as_secs_f64() / ours.as_secs_f64()
    );
    println!("\nPer call = instantiate + handle + drop through `Runtime::execute` (fresh store,");
    println!("limiter, log capture, response collection), sequential. The bare host has the");
    println!("runtime's engine settings and nothing else (no limiter, capture, capabilities,");
    println!("deadline or accounting).");
}

/// Mean time of one call over `CALLS` calls on a warm pre-instance (hello guest).
async fn per_call(rt: &Runtime, wasm: &[u8], grants: GrantSet) -> Duration {
    per_call_at(rt, wasm, grants, "/hello/bench").await
}

/// Mean time of one `GET path` over `CALLS` calls on a warm pre-instance of `wasm`.
async fn per_call_at(rt: &Runtime, wasm: &[u8], grants: GrantSet, path: &str) -> Duration {
    let prepared = rt
        .prepare("sha256:warm", wasm.to_vec(), grants)
        .await
        .unwrap();
    let limits = CallLimits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        fuel: None,
        max_response_bytes: 1 << 20,
    };
    let invocation = Invocation {
        tenant_id: "bench".into(),
        extension_id: "com.example.hello".into(),
        grants: Capabilities::default(),
        ..Invocation::default()
    };
    let call = || async {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| -> RequestBodyError { match never {} });
        let request = http::Request::get(path).body(body).unwrap();
        let answer = rt
            .execute(&prepared, invocation.clone(), request, limits)
            .await
            .collect()
            .await;
        answer.outcome.result.unwrap();
        answer.status
    };
    for _ in 0..100 {
        assert_eq!(call().await, Some(http::StatusCode::OK));
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        assert_eq!(call().await, Some(http::StatusCode::OK));
    }
    started.elapsed() / CALLS as u32
}
