//! Benchmark guest: a plain `wasi:http` component. It uses the SDK's router but calls no
//! host interface of its own, so it imports no `palisade:extension` interface and runs
//! unchanged under `wasmtime serve` as well as in the runner.
//!
//! * `GET /hello` — 200 `hello`.
//! * `GET /wait?ms=N` — sleeps N milliseconds (at most [`MAX_WAIT_MS`]), then 200
//!   `waited`. The sleep is a `wasi:clocks` monotonic-clock subscription polled through
//!   `wasi:io`, so the host parks the call without holding a thread.

use std::time::Duration;

use palisade_sdk::http::{Request, Response, Router};

/// The longest wait `/wait` accepts.
const MAX_WAIT_MS: u64 = 60_000;

fn handle(request: Request) -> Response {
    Router::new()
        .get("/hello", |_| Response::text(200, "hello"))
        .get("/wait", wait)
        .handle(request)
}

fn wait(request: Request) -> Response {
    let ms = match request.query_param("ms").map(|ms| ms.parse::<u64>()) {
        Some(Ok(ms)) if ms <= MAX_WAIT_MS => ms,
        _ => return Response::bad_request(format!("`ms` must be 0 to {MAX_WAIT_MS}")),
    };
    // std's sleep on wasm32-wasip2 subscribes to the monotonic clock and blocks on the
    // pollable: one host call that the host serves asynchronously.
    std::thread::sleep(Duration::from_millis(ms));
    Response::text(200, "waited")
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use palisade_sdk::http::Method;

    use super::*;

    #[test]
    fn hello_answers_hello() {
        let response = handle(Request::new(Method::Get, "/hello"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), b"hello");
    }

    #[test]
    fn wait_needs_a_bounded_number() {
        for query in ["", "?ms=x", "?ms=60001"] {
            let response = handle(Request::new(Method::Get, &format!("/wait{query}")));
            assert_eq!(response.status(), 400, "{query}");
        }
        assert_eq!(
            handle(Request::new(Method::Get, "/wait?ms=0")).status(),
            200
        );
    }
}
