//! Scenario: `palisade dev`'s loop, from saving a file to the new version answering.
//!
//! `palisade new` makes a crate (the `http` template) in the work directory and `palisade
//! dev` serves it. Once the first version answers, the answered text is edited in
//! `src/lib.rs` a number of times; each edit is timestamped when the file is written, and
//! the gateway is asked every 10 ms until the new text answers. `dev` prints, for each
//! reload, `reloaded ID@VERSION (...) in X ms (build Y ms)`: Y is cargo's own time, which
//! the target leaves out. The platform's part of an edit is its save-to-answer time minus
//! that cargo time: the debounce of the file watcher, the checks, packing, signing,
//! publishing, compiling the component and moving the install, and the first call.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::report::{Spread, table};
use crate::setup::{Bench, Server};

/// The target: the platform's part of a reload, at most.
const TARGET: Duration = Duration::from_secs(2);
/// The crate's name (and so the extension id's last part).
const NAME: &str = "bench-dev";
/// The path called; the template answers `{"greeting": "Hello, bench!"}`.
const PATH: &str = "/hello/bench";

/// One measured edit.
struct Edit {
    /// From writing the file to the first call answering the new text.
    save_to_answer: Duration,
    /// Cargo's time, as dev reported it.
    build: Duration,
    /// Dev's whole reload, from the start of the build to the install (as it reported it).
    reload: Duration,
}

pub(crate) async fn run(bench: &Bench) -> Result<String> {
    let edits = if bench.settings.quick { 3 } else { 10 };
    let parent = bench.work.path().join("dev-reload");
    std::fs::create_dir_all(&parent)?;
    let created = Command::new(&bench.palisade)
        .args(["new", NAME, "--parent"])
        .arg(&parent)
        .output()
        .context("running `palisade new`")?;
    ensure!(
        created.status.success(),
        "`palisade new` failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let crate_dir = parent.join(NAME);
    let lib = crate_dir.join("src/lib.rs");

    let addr = Bench::free_addr()?;
    let mut command = Command::new(&bench.palisade);
    command
        .arg("dev")
        .arg(&crate_dir)
        .args(["--listen", &addr])
        // The crate's own target directory, so that no other build holds cargo's lock.
        .env(
            "CARGO_TARGET_DIR",
            bench.work.path().join("dev-reload-target"),
        )
        .env_remove("RUST_LOG")
        .env_remove("PALISADE_CONFIG")
        .env_remove("PALISADE_DATA_DIR");
    let mut dev = Server::spawn("dev", command, bench, &addr)?;
    // The first build compiles the SDK and its dependencies for wasm32-wasip2.
    dev.wait_logged_within("try it:", Duration::from_secs(1800))
        .await?;
    let token = token_of(&dev.log_text())?;
    let url = format!("{}/api/ext/com.example.{NAME}{PATH}", dev.url);
    let first = answer(bench, &url, &token).await?;
    ensure!(
        first.contains("Hello, bench!"),
        "the first version answered {first}"
    );

    let mut current = "Hello, {name}!".to_owned();
    let mut measured = Vec::new();
    for i in 1..=edits {
        let next = format!("Hello #{i}, {{name}}!");
        let expected = format!("Hello #{i}, bench!");
        let text = std::fs::read_to_string(&lib)?;
        ensure!(
            text.contains(&current),
            "{} has no {current:?}",
            lib.display()
        );
        std::fs::write(&lib, text.replace(&current, &next))?;
        let saved = Instant::now();
        let deadline = saved + Duration::from_secs(600);
        loop {
            if answer(bench, &url, &token)
                .await
                .is_ok_and(|body| body.contains(&expected))
            {
                break;
            }
            dev.check_alive()?;
            if Instant::now() > deadline {
                bail!("edit {i} never answered:\n{}", dev.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let save_to_answer = saved.elapsed();
        let version = format!("com.example.{NAME}@0.1.0-dev.{}", i + 1);
        let prefix = format!("reloaded {version} (");
        dev.wait_logged_within(&prefix, Duration::from_secs(30))
            .await?;
        let log = dev.log_text();
        let line = log
            .lines()
            .find(|l| l.starts_with(&prefix))
            .with_context(|| format!("no reload line for {version}"))?;
        let (reload, build) = timings(line)?;
        eprintln!(
            "load bench:   edit {i}: answered after {} ms, cargo {} ms, dev's reload {} ms",
            save_to_answer.as_millis(),
            build.as_millis(),
            reload.as_millis()
        );
        measured.push(Edit {
            save_to_answer,
            build,
            reload,
        });
        current = next;
        // Let the watcher settle before the next edit.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    dev.check_alive()?;
    Ok(report_text(&measured))
}

/// The caller token of the `curl` line dev printed.
fn token_of(log: &str) -> Result<String> {
    log.lines()
        .find(|l| l.trim_start().starts_with("curl "))
        .and_then(|line| line.split("Bearer ").nth(1))
        .and_then(|rest| rest.split('\'').next())
        .map(str::to_owned)
        .context("dev printed no curl line with a token")
}

/// `X` and `Y` of `reloaded ... in X ms (build Y ms)`.
fn timings(line: &str) -> Result<(Duration, Duration)> {
    let parse = |after: &str| -> Result<Duration> {
        let rest = line
            .rsplit_once(after)
            .with_context(|| format!("no {after:?} in {line:?}"))?
            .1;
        let ms: u64 = rest
            .split(' ')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("reading the milliseconds after {after:?} in {line:?}"))?;
        Ok(Duration::from_millis(ms))
    };
    Ok((parse(") in ")?, parse("(build ")?))
}

/// `GET url` with `token`: the body of a 200.
async fn answer(bench: &Bench, url: &str, token: &str) -> Result<String> {
    let response = bench.client.get(url).bearer_auth(token).send().await?;
    ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(response.text().await?)
}

fn ms(secs: f64) -> String {
    format!("{:.0} ms", secs * 1e3)
}

fn report_text(edits: &[Edit]) -> String {
    let spread = |f: fn(&Edit) -> Duration| Spread::of(edits.iter().map(|e| f(e).as_secs_f64()));
    let total = spread(|e| e.save_to_answer);
    let build = spread(|e| e.build);
    let platform = spread(|e| e.save_to_answer.saturating_sub(e.build));
    let dev = spread(|e| e.reload.saturating_sub(e.build));
    let row = |label: &str, s: Spread| vec![label.to_owned(), ms(s.median), ms(s.max)];
    let rows = vec![
        row("save → new version answers", total),
        row("cargo build (as dev reports it)", build),
        row("**platform's part** (save → answer − cargo)", platform),
        row(
            "of which dev's reload after cargo (checks, pack, sign, publish, compile, install)",
            dev,
        ),
    ];
    let verdict = if platform.max <= TARGET.as_secs_f64() {
        "met"
    } else {
        "not met"
    };
    format!(
        "A crate from `palisade new {NAME}` (the `http` template, release profile with LTO) \
         served by `palisade dev`; {} edits of the answered text in `src/lib.rs`, each \
         timed from writing the file until `GET {PATH}` through the gateway (asked every \
         10 ms) answers the new text. Cargo's time is the `build` figure of dev's \
         `reloaded ... in X ms (build Y ms)` line.\n\n{}\n\
         Target: the platform's part under {} s on every edit: {verdict} (largest {}).\n",
        edits.len(),
        table(&["", "p50", "max"], &rows),
        TARGET.as_secs(),
        ms(platform.max),
    )
}
