//! Scenario 1: hello throughput and latency of each server, one process each, on the same
//! plain `wasi:http` guest: the raw hyper ceiling, `wasmtime serve` (defaults and tuned),
//! the runner's execute hop called directly (a service token per call), and the whole gateway path.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use palisade_bundle::component_imports;

use crate::report::{self, Subject, ratio, verdict};
use crate::setup::{self, Bench, Direct, PLAIN_HELLO};
use crate::wrk::{Request, Target};

/// `wasmtime serve` tuned as the runner's engine is: pooling, slots kept resident, dirty
/// pages found with `PAGEMAP_SCAN`.
pub(crate) const TUNED: [&str; 8] = [
    "-O",
    "pooling-allocator=y",
    "-O",
    "pooling-memory-keep-resident=10485760",
    "-O",
    "pooling-table-keep-resident=1048576",
    "-O",
    "pooling-pagemap-scan=y",
];

const TENANT: &str = "bench";
const EXTENSION: &str = "com.example.plain-hello";

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let wasm = std::fs::read(PLAIN_HELLO)?;
    let palisade_imports: Vec<String> = component_imports(&wasm)?
        .into_iter()
        .filter(|name| name.starts_with("palisade:"))
        .collect();
    ensure!(
        palisade_imports.is_empty(),
        "the plain guest imports {palisade_imports:?}; `wasmtime serve` could not run it"
    );

    // Every server stays up for the whole scenario; only the one under load is busy.
    let mut servers = Vec::new();
    let mut subjects = Vec::new();
    let get_hello = Request {
        method: "GET".into(),
        path: "/hello".into(),
        headers: Vec::new(),
        body: None,
    };

    let hyper = bench.hyper_server().await.context("raw hyper server")?;
    subjects.push(Subject::new(
        "raw hyper (ceiling)",
        Target::new(&hyper.url, vec![get_hello.clone()]),
    ));
    servers.push(hyper);

    let mut notes = Vec::new();
    match &bench.wasmtime {
        Ok(_) => {
            for (label, name, options) in [
                ("wasmtime serve (defaults)", "wasmtime-defaults", &[][..]),
                ("wasmtime serve (tuned)", "wasmtime-tuned", &TUNED[..]),
            ] {
                let server = bench
                    .wasmtime_serve(name, options)
                    .await
                    .with_context(|| label.to_owned())?;
                subjects.push(Subject::new(
                    label,
                    Target::new(&server.url, vec![get_hello.clone()]),
                ));
                servers.push(server);
            }
        }
        Err(reason) => notes.push(format!("`wasmtime serve` baselines {reason}.")),
    }

    let data = bench.data_dir("throughput").await?;
    let manifest = setup::guest_manifest("plain-hello")?;
    let published = data.publish(&manifest, &wasm).await?;
    let install = data.install(TENANT, EXTENSION, &[]).await?;
    let runner = bench.runner(&data, None).await?;
    let gateway = bench.gateway(&data, &runner).await?;
    let direct = Arc::new(Direct::new(&data, install, &published)?);
    let caller = bench.caller_token(&data, TENANT)?;
    subjects.push(Subject::new(
        "runner `GET /v1/execute/hello`",
        Target::fed(
            &runner.url,
            Arc::new(move |i| direct.call("GET", "/hello", None, i)),
        ),
    ));
    subjects.push(Subject::new(
        "gateway `GET /api/ext/…` → runner",
        Target::new(
            &gateway.url,
            vec![setup::gateway_request(EXTENSION, "/hello", &caller)],
        ),
    ));
    servers.push(runner);
    servers.push(gateway);

    check(bench, &subjects).await?;
    report::measure(bench, &mut subjects).await?;
    for server in &mut servers {
        server.check_alive()?;
    }
    check(bench, &subjects).await?;

    let mut out = format!(
        "The same guest everywhere: `tests/guests/plain-hello` (`GET /hello` → 200 `hello`), \
         a `wasi:http` component that imports no Palisade interface, published with no \
         capabilities for the runner and the gateway. {}. `wasmtime serve` runs with \
         `-S cli=y`; tuned adds `{}`. The runner is called as the gateway calls it (the \
         execute hop, a fresh service token per call); the gateway with a caller token from `palisade token`, \
         rate limit off.\n\n",
        bench.settings.method(),
        TUNED.chunks(2).map(|c| c[1]).collect::<Vec<_>>().join(" ")
    );
    out.push_str(&report::subjects_table(&subjects));

    let find = |label: &str| subjects.iter().find(|s| s.label.starts_with(label));
    let hyper = find("raw hyper").context("no hyper figures")?;
    let runner = find("runner").context("no runner figures")?;
    let gateway = find("gateway").context("no gateway figures")?;
    let defaults = find("wasmtime serve (defaults)");
    let tuned = find("wasmtime serve (tuned)");
    let mut rows = Vec::new();
    let mut row = |name: &str, of: &Subject, to: Option<&Subject>, target: Option<f64>| {
        let Some(to) = to else {
            rows.push(vec![
                name.to_owned(),
                "n/a".into(),
                "n/a".into(),
                target.map_or("—".into(), |t| format!("≥ {}", ratio(t))),
                "skipped".into(),
            ]);
            return;
        };
        let (median, per_round) = of.rps_ratio(to);
        rows.push(vec![
            name.to_owned(),
            ratio(median),
            format!("{}–{}", ratio(per_round.min), ratio(per_round.max)),
            target.map_or("—".into(), |t| format!("≥ {}", ratio(t))),
            target.map_or("—", |t| verdict(median, t)).to_owned(),
        ]);
    };
    row(
        "runner ÷ wasmtime serve (defaults)",
        runner,
        defaults,
        Some(4.0),
    );
    row("runner ÷ wasmtime serve (tuned)", runner, tuned, Some(1.3));
    row(
        "gateway path ÷ wasmtime serve (tuned)",
        gateway,
        tuned,
        Some(1.0),
    );
    row("gateway path ÷ runner", gateway, Some(runner), Some(0.8));
    row("raw hyper ÷ runner (headroom)", hyper, Some(runner), None);
    out.push_str("\nThroughput ratios (of the medians; per-round range alongside):\n\n");
    out.push_str(&report::table(
        &["ratio", "median", "per round", "target", "verdict"],
        &rows,
    ));
    for note in notes {
        out.push_str(&format!("\n{note}\n"));
    }
    Ok(out)
}

/// Checks that every subject answers `hello`.
async fn check(bench: &Bench, subjects: &[Subject]) -> Result<()> {
    for subject in subjects {
        setup::expect_body(
            &bench.client,
            &subject.target.base,
            &subject.target.sample()?,
            b"hello",
        )
        .await
        .with_context(|| subject.label.clone())?;
    }
    Ok(())
}
