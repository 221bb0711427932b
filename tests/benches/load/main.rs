//! Load benchmark: real `palisade runner` and `palisade gateway` processes on loopback,
//! driven by `wrk`, against a raw hyper server and `wasmtime serve` running the same guest.
//! Prints a Markdown section on stdout (progress goes to stderr); `just bench` writes it
//! into docs/benchmarks.md.
//!
//! Scenarios, in order: hello throughput and latency per server (`throughput`), storage
//! get/set through the runner on SQLite and PostgreSQL (`storage`), runner memory at 1,000 in-flight calls
//! (`memory`), call latency with 10,000 installs (`scale`), event publishing and
//! delivery lag on SQLite and PostgreSQL (`events`), and `palisade dev`'s time from
//! saving a file to the new version answering (`dev-reload`). A scenario that errors is
//! reported as failed and makes the bench exit non-zero; every process it started is
//! killed when it ends, panics included.
//!
//! Environment:
//! * `PALISADE_BIN` (required): the release `palisade` binary to run.
//! * `PALISADE_BENCH_WASMTIME`: the `wasmtime` binary for the `wasmtime serve` baselines
//!   (default: [`setup::DEFAULT_WASMTIME`]); the baselines are skipped when it is missing.
//! * `PALISADE_BENCH_QUICK=1`: 2 rounds of 3 s instead of 5 rounds of 10 s (a check that
//!   the bench works, not figures to publish).
//! * `PALISADE_BENCH_ONLY=throughput,storage,...`: run only the named scenarios.
//! * `PALISADE_BENCH_KEEP=1`: keep the work directory (servers' logs, data directories)
//!   for inspection; its path is printed.
//! * `PALISADE_BENCH_POSTGRES_URL`: the PostgreSQL server of the storage scenario (default
//!   [`setup::DEFAULT_POSTGRES`]; the bench makes and drops a schema of its own there).
//!   Set it empty to measure SQLite only.
//!
//! `load --serve-hyper PORT` runs the raw hyper hello-world server (the ceiling) in this
//! process; the bench starts it that way.

#![allow(clippy::unwrap_used, missing_docs)]

mod bodies;
mod dev_reload;
mod events;
mod hyper_server;
mod memory;
mod report;
mod scale;
mod setup;
mod storage;
mod throughput;
mod wrk;

use std::process::ExitCode;

use setup::Bench;

/// The scenarios: name (for `PALISADE_BENCH_ONLY` and error messages) and title.
const SCENARIOS: [(&str, &str); 7] = [
    ("throughput", "Hello throughput and latency"),
    (
        "bodies",
        "Large and slow bodies: a 64 MiB download, a flood of guest output",
    ),
    ("storage", "Storage capability (SQLite and PostgreSQL)"),
    ("memory", "Runner memory at 1,000 in-flight calls"),
    ("scale", "Call latency with 10,000 installs"),
    ("events", "Events: publishing and delivery lag"),
    (
        "dev-reload",
        "`palisade dev`: from saving a file to the new version answering",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == hyper_server::FLAG) {
        return hyper_server::main(args.get(at + 1).map(String::as_str));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let names = SCENARIOS.map(|(name, _)| name);
    let bench = match Bench::new()
        .await
        .and_then(|bench| bench.settings.check_only(&names).map(|()| bench))
    {
        Ok(bench) => bench,
        Err(err) => {
            eprintln!("load bench: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", bench.header());
    let mut failed = Vec::new();
    for (name, title) in SCENARIOS {
        if !bench.settings.selected(name) {
            continue;
        }
        eprintln!("load bench: scenario `{name}` ...");
        let result = match name {
            "throughput" => throughput::run(&bench).await,
            "bodies" => bodies::run(&bench).await,
            "storage" => storage::run(&bench).await,
            "memory" => memory::run(&bench).await,
            "scale" => scale::run(&bench).await,
            "events" => events::run(&bench).await,
            "dev-reload" => dev_reload::run(&bench).await,
            other => unreachable!("scenario {other} has no runner"),
        };
        match result {
            Ok(section) => println!("### {title}\n\n{section}"),
            Err(err) => {
                println!("### {title}\n\n**Failed:** {err:#}\n");
                eprintln!("load bench: scenario `{name}` failed: {err:#}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("load bench: failed scenarios: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
