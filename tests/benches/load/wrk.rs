//! Running `wrk` and reading its figures. Every run gets a generated Lua script: one fixed
//! request (method, path, headers, body), a list of requests taken in turn (several
//! tenants' tokens, several keys), or a feed of requests made fresh for the run, each sent
//! once (calls straight to a runner: it refuses a service token presented twice);
//! optionally a check of every response body; and a `done` hook that prints one
//! machine-readable line.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// A server and what to send it.
#[derive(Clone)]
pub(crate) struct Target {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Sent in turn, one after the other, by every connection.
    pub requests: Vec<Request>,
    /// Text every response body must contain, for answers whose HTTP status does not say
    /// whether the work succeeded (checking costs the load generator some time).
    pub expect: Option<String>,
    /// When set, `requests` is ignored: request `i` of a run is `feed(i)`, each sent once.
    pub feed: Option<Feed>,
}

/// Makes request `i` of a run.
pub(crate) type Feed = Arc<dyn Fn(usize) -> Result<Request> + Send + Sync>;

/// Calls a fed run may make per second of its duration, at most: sized well above what
/// one runner answers on the machines this runs on (a run that exhausts its feed fails).
const FEED_PER_SECOND: usize = 60_000;

impl Target {
    /// `requests` to `base`, with no body check.
    pub(crate) fn new(base: &str, requests: Vec<Request>) -> Target {
        Target {
            base: base.to_owned(),
            requests,
            expect: None,
            feed: None,
        }
    }

    /// Requests made by `feed` for each run, to `base`.
    pub(crate) fn fed(base: &str, feed: Feed) -> Target {
        Target {
            base: base.to_owned(),
            requests: Vec::new(),
            expect: None,
            feed: Some(feed),
        }
    }

    /// One request of this target, for a check outside a run.
    pub(crate) fn sample(&self) -> Result<Request> {
        match &self.feed {
            Some(feed) => feed(usize::MAX / 2),
            None => self.requests.first().cloned().context("no request to send"),
        }
    }
}

/// The raw HTTP/1.1 text of `request` to `host`, padded with an `x-pad` header to `size`
/// bytes (the length of the longest record, so the script reads records by size).
fn raw(request: &Request, host: &str) -> Vec<u8> {
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\n",
        request.method, request.path
    );
    for (name, value) in &request.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = &request.body {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.into_bytes()
}

/// Writes `count` records of `feed` into `path`, each `x-pad`ded to the same size; returns
/// the size. Made on two threads (minting a service token is most of the cost).
fn write_feed(feed: &Feed, count: usize, host: &str, path: &Path) -> Result<usize> {
    let halves: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = [0..count / 2, count / 2..count]
            .into_iter()
            .map(|range| {
                scope.spawn(move || -> Result<Vec<Vec<u8>>> {
                    range
                        .map(|i| {
                            let request = feed(i)?;
                            let mut head = raw(&request, host);
                            head.extend_from_slice(b"\0");
                            if let Some(body) = &request.body {
                                head.extend_from_slice(body.as_bytes());
                            }
                            Ok(head)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("feed thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let pad = "x-pad: \r\n\r\n".len();
    let size = halves
        .iter()
        .flatten()
        .map(|record| record.len() - 1 + pad)
        .max()
        .unwrap_or(0);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in halves.iter().flatten() {
        let split = record.iter().position(|b| *b == 0).unwrap_or(record.len());
        let (head, body) = (&record[..split], &record[(split + 1).min(record.len())..]);
        let filler = size - (head.len() + body.len() + pad);
        out.write_all(head)?;
        out.write_all(b"x-pad: ")?;
        out.write_all(&vec![b'p'; filler])?;
        out.write_all(b"\r\n\r\n")?;
        out.write_all(body)?;
    }
    out.flush()?;
    Ok(size)
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    /// Completed requests per second.
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Connect, read, write and timeout errors (status errors fail the run).
    pub socket_errors: u64,
}

/// Marks the line the script's `done` hook prints.
const MARK: &str = "WRK_RESULT";

/// Runs `wrk` against `target`; fails if any answer was not 2xx/3xx or failed the body
/// check, or if nothing completed.
pub(crate) async fn run(wrk: &Path, work: &Path, target: &Target, load: Load) -> Result<Figures> {
    ensure!(
        !target.requests.is_empty() || target.feed.is_some(),
        "no request to send"
    );
    let script = tempfile::Builder::new()
        .prefix("wrk-")
        .suffix(".lua")
        .tempfile_in(work)?;
    let feed_file = tempfile::Builder::new()
        .prefix("wrk-feed-")
        .tempfile_in(work)?;
    let feed = match &target.feed {
        Some(feed) => {
            let count = FEED_PER_SECOND * (load.duration.as_secs() as usize + 2);
            let host = target.base.trim_start_matches("http://").to_owned();
            let (feed, path) = (Arc::clone(feed), feed_file.path().to_owned());
            let size = tokio::task::spawn_blocking(move || write_feed(&feed, count, &host, &path))
                .await??;
            Some((feed_file.path().to_owned(), size, load.threads))
        }
        None => None,
    };
    std::fs::write(script.path(), script_text(target, feed.as_ref()))?;
    let output = tokio::process::Command::new(wrk)
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .args(["--timeout", "10s", "-s"])
        .arg(script.path())
        .arg(format!("{}/", target.base))
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .with_context(|| {
            format!(
                "wrk printed no result line:\n{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    parse(line).with_context(|| format!("wrk output:\n{stdout}"))
}

/// Reads ` key=value ...` as printed by the script.
fn parse(line: &str) -> Result<Figures> {
    let values: HashMap<&str, f64> = line
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| Ok((k, v.parse::<f64>()?)))
        .collect::<Result<_>>()?;
    let get = |key: &str| {
        values
            .get(key)
            .copied()
            .with_context(|| format!("`{key}` missing"))
    };
    let requests = get("requests")?;
    let status_errors = get("status")?;
    if requests < 1.0 {
        bail!("no request completed");
    }
    if status_errors > 0.0 {
        bail!("{status_errors} of {requests} answers were not 2xx or 3xx");
    }
    let unexpected = get("unexpected")?;
    if unexpected > 0.0 {
        bail!("{unexpected} of {requests} answers failed the body check");
    }
    let micros = |us: f64| Duration::from_nanos((us * 1000.0) as u64);
    Ok(Figures {
        rps: requests / (get("duration_us")? / 1e6),
        p50: micros(get("p50_us")?),
        p99: micros(get("p99_us")?),
        socket_errors: (get("connect")? + get("read")? + get("write")? + get("timeout")?) as u64,
    })
}

/// The Lua script sending `target`'s requests, or the records of `feed` (a file of
/// records of one size, each sent once; with several threads each takes its own stride).
fn script_text(target: &Target, feed: Option<&(std::path::PathBuf, usize, u32)>) -> String {
    // `unexpected` is a global of each thread's Lua state; `done` reads it through the
    // thread objects `setup` collected.
    let mut lua = String::from(
        "unexpected = 0\nlocal threads = {}\n\
         setup = function(thread) threads[#threads + 1] = thread end\n",
    );
    if let Some(expect) = &target.expect {
        lua.push_str(&format!(
            "local expect = {}\n\
             response = function(status, headers, body)\n  \
             if not string.find(body, expect, 1, true) then unexpected = unexpected + 1 end\n\
             end\n",
            quote(expect)
        ));
    }
    if let Some((path, size, threads)) = feed {
        lua.push_str(&format!(
            "local feed_path = {}\nlocal record = {size}\nlocal next_thread = 0\n\
             local previous_setup = setup\n\
             setup = function(thread)\n  previous_setup(thread)\n  \
             thread:set(\"stride_id\", next_thread)\n  next_thread = next_thread + 1\nend\n\
             local feed_file\nlocal taken = 0\n\
             init = function(args)\n  feed_file = io.open(feed_path, \"rb\")\nend\n\
             request = function()\n  \
             local at = (taken * {threads} + stride_id) * record\n  taken = taken + 1\n  \
             feed_file:seek(\"set\", at)\n  \
             local r = feed_file:read(record)\n  \
             if r == nil then error(\"the request feed ran out\") end\n  return r\nend\n",
            quote(&path.display().to_string()),
        ));
    } else if let [request] = target.requests.as_slice() {
        // One request: wrk builds it once and sends the same bytes every time.
        lua.push_str(&format!(
            "wrk.method = {}\nwrk.path = {}\n",
            quote(&request.method),
            quote(&request.path)
        ));
        if let Some(body) = &request.body {
            lua.push_str(&format!("wrk.body = {}\n", quote(body)));
        }
        for (name, value) in &request.headers {
            lua.push_str(&format!(
                "wrk.headers[ {} ] = {}\n",
                quote(name),
                quote(value)
            ));
        }
    } else {
        // Several: formatted once per thread in `init`, then taken in turn.
        lua.push_str("local requests = {}\nlocal next_index = 0\ninit = function(args)\n");
        for request in &target.requests {
            let headers: String = request
                .headers
                .iter()
                .map(|(n, v)| format!("[ {} ] = {}, ", quote(n), quote(v)))
                .collect();
            let body = request.body.as_deref().map_or("nil".to_owned(), quote);
            lua.push_str(&format!(
                "  requests[#requests + 1] = wrk.format({}, {}, {{{headers}}}, {body})\n",
                quote(&request.method),
                quote(&request.path)
            ));
        }
        lua.push_str(
            "end\nrequest = function()\n  next_index = next_index % #requests + 1\n  \
             return requests[next_index]\nend\n",
        );
    }
    lua.push_str(&format!(
        "done = function(summary, latency, requests)\n  local e = summary.errors\n  \
         local failed = 0\n  \
         for _, thread in ipairs(threads) do failed = failed + thread:get(\"unexpected\") end\n  \
         io.write(string.format(\"{MARK} requests=%.0f duration_us=%.0f p50_us=%.0f \
         p99_us=%.0f status=%.0f connect=%.0f read=%.0f write=%.0f timeout=%.0f \
         unexpected=%.0f\\n\", summary.requests, summary.duration, latency:percentile(50), \
         latency:percentile(99), e.status, e.connect, e.read, e.write, e.timeout, failed))\nend\n"
    ));
    lua
}

/// `text` as a Lua long string literal whose delimiter does not occur in it.
fn quote(text: &str) -> String {
    let mut level = String::new();
    // The first closing bracket in `text` + closing must be the closing itself.
    while format!("{text}]{level}]").find(&format!("]{level}]")) != Some(text.len()) {
        level.push('=');
    }
    // A newline right after the opening bracket would be dropped by Lua: start with one.
    format!("[{level}[\n{text}]{level}]")
}
