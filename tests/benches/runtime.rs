//! Runtime benchmark: cold first load with and without a precompiled artifact, and the
//! per-call cost of instantiate + handle + drop on a warm pre-instance (hello guest).
//! Prints a Markdown section; `just bench` writes it into docs/benchmarks.md.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_bundle::Capabilities;
use palisade_runtime::{
    ArtifactKey, Artifacts, CallLimits, GrantSet, HostServices, Invocation, Runtime, RuntimeConfig,
};

const COLD_ROUNDS: usize = 5;
const CALLS: usize = 3000;

fn runtime(artifacts: Option<Artifacts>) -> Runtime {
    let services = HostServices {
        artifacts,
        ..HostServices::default()
    };
    Runtime::new(RuntimeConfig::default(), services).unwrap()
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

    // Per call: instantiate + handle + drop on a warm pre-instance, one call at a time.
    let rt = runtime(None);
    let prepared = rt.prepare("sha256:warm", wasm, grants).await.unwrap();
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
    let call = |rt: &Runtime| {
        let request = http::Request::get("/hello/bench")
            .body(Bytes::new())
            .unwrap();
        let invocation = invocation.clone();
        let prepared = prepared.clone();
        let rt = rt.clone();
        async move {
            let outcome = rt.execute(&prepared, invocation, request, limits).await;
            assert_eq!(outcome.result.unwrap().status, 200);
        }
    };
    for _ in 0..200 {
        call(&rt).await;
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        call(&rt).await;
    }
    let per_call = started.elapsed() / CALLS as u32;

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("## Runtime (hello guest)\n");
    println!("Measured with `cargo bench -p palisade-tests --bench runtime` on {cpus} CPUs;");
    println!("medians of {COLD_ROUNDS} cold loads, mean of {CALLS} sequential calls.\n");
    println!("| scenario | time | ratio |");
    println!("|---|---|---|");
    println!("| first load, compiling (baseline) | {compile:.2?} | 1.0× |");
    println!(
        "| first load, sealed precompiled artifact | {from_artifact:.2?} | {:.1}× faster |",
        compile.as_secs_f64() / from_artifact.as_secs_f64()
    );
    println!(
        "| per call: instantiate + handle + drop, incl. execute bookkeeping | {:.1} µs | — |",
        per_call.as_secs_f64() * 1e6
    );
}
