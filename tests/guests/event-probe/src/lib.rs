//! Test guest that receives events and records each delivery it gets, so tests can see
//! what the platform delivered, how often and with which headers.
//!
//! * `POST /on/ticket` (topic `ticket.*`) — records the delivery; answers 503 while the
//!   attempt number is at most the payload's `fail_attempts` (default 0), else 204, after
//!   sleeping the payload's `sleep_ms` on the attempts up to `sleep_attempts` (default 0).
//! * `POST /on/broken` (topic `broken.#`) — records the delivery and answers 500.
//! * `POST /on/tick` (schedule `0 0 29 2 *`, so that it fires in a test only when the test
//!   makes it due) — records the firing and answers 204.
//! * `GET /seen` — every recorded delivery, in key order: `[{"path", "trigger", "topic",
//!   "id", "key", "attempt", "published_at", "content_type", "payload"}]`.
//!
//! A delivery is recorded in namespace `events` under `{key}/{attempt:03}`.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{self, Condition};
use serde_json::{Value, json};

fn handle(request: Request) -> Response {
    Router::new()
        .post("/on/ticket", on_ticket)
        .post("/on/broken", on_broken)
        .post("/on/tick", on_tick)
        .get("/seen", seen)
        .handle(request)
}

fn on_ticket(request: Request) -> Response {
    let (attempt, record) = match record(&request) {
        Ok(recorded) => recorded,
        Err(response) => return response,
    };
    let payload = &record["payload"];
    if attempt <= payload["sleep_attempts"].as_u64().unwrap_or(0) {
        let ms = payload["sleep_ms"].as_u64().unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let fail_attempts = payload["fail_attempts"].as_u64().unwrap_or(0);
    if attempt <= fail_attempts {
        return Response::text(503, "failing on purpose");
    }
    Response::new(204)
}

fn on_tick(request: Request) -> Response {
    match record(&request) {
        Ok(_) => Response::new(204),
        Err(response) => response,
    }
}

fn on_broken(request: Request) -> Response {
    match record(&request) {
        Ok(_) => Response::text(500, "always broken"),
        Err(response) => response,
    }
}

/// Stores what the delivery carried; returns its attempt number and the record.
fn record(request: &Request) -> Result<(u64, Value), Response> {
    let header = |name: &str| request.header(name).unwrap_or_default().to_owned();
    let attempt: u64 = header("x-palisade-event-attempt").parse().unwrap_or(0);
    let payload: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
    let record = json!({
        "path": request.path(),
        "trigger": header("x-palisade-trigger"),
        "topic": header("x-palisade-event-topic"),
        "id": header("x-palisade-event-id"),
        "key": header("x-palisade-event-key"),
        "attempt": attempt,
        "published_at": header("x-palisade-event-published-at"),
        "content_type": header("content-type"),
        "payload": payload,
    });
    let key = format!("{}/{attempt:03}", header("x-palisade-event-key"));
    storage::set(
        "events",
        &key,
        record.to_string().as_bytes(),
        Condition::Any,
    )
    .map_err(|e| Response::text(500, format!("storage: {e}")))?;
    Ok((attempt, record))
}

fn seen(_request: Request) -> Response {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = match storage::list("events", "", cursor.as_deref(), 100) {
            Ok(page) => page,
            Err(e) => return Response::text(500, format!("storage: {e}")),
        };
        for entry in page.entries {
            all.push(serde_json::from_slice(&entry.value).unwrap_or(Value::Null));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Response::json(200, &Value::from(all))
}

palisade_sdk::export_handler!(handle);
