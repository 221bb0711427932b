//! A guest whose output is hostile: the tests check that what it writes is bounded,
//! escaped, stored without harm to other rows, and kept when the call times out.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::log;

fn handle(request: Request) -> Response {
    Router::new()
        .get("/nul", |_| nul())
        .get("/flood/:lines/:bytes", flood)
        .get("/sleep", |_| log_then_sleep())
        .handle(request)
}

/// NUL and other control characters on stdout, stderr and in log lines.
fn nul() -> Response {
    println!("before\0after");
    eprintln!("bell\x07escape\x1b[31mred\rreturn");
    log::write(
        log::Level::Info,
        "line one\nERROR palisade_runner: forged line\0",
        &[("key\n", "value\0\x1b")],
    );
    Response::text(200, "printed")
}

/// `lines` log lines of `bytes` bytes each.
fn flood(request: Request) -> Response {
    let lines: usize = request
        .param("lines")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let bytes: usize = request
        .param("bytes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let message = "x".repeat(bytes);
    for _ in 0..lines {
        log::info(&message);
    }
    Response::text(200, lines.to_string())
}

/// Logs and prints, then sleeps in a host call far past any deadline.
fn log_then_sleep() -> Response {
    log::info("logged before the deadline");
    println!("printed before the deadline");
    std::thread::sleep(std::time::Duration::from_secs(30));
    Response::text(200, "woke up")
}

palisade_sdk::export_handler!(handle);
