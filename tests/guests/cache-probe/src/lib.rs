//! Test guest that drives `palisade:extension/cache` from the query string. Every answer
//! is 200 with a JSON body that says what the cache returned: `{"ok": ...}` or
//! `{"error": "<message>"}`.
//!
//! * `GET /get?key=` — `ok` is the value as text, or null.
//! * `PUT /set?key=&ttl_ms=` — caches the body; `ok` is null.
//! * `DELETE /delete?key=` — `ok` is null.

use std::time::Duration;

use palisade_sdk::cache::{self, CacheError};
use palisade_sdk::http::{Request, Response, Router};
use serde_json::{Value, json};

fn handle(request: Request) -> Response {
    Router::new()
        .get("/get", get)
        .put("/set", set)
        .delete("/delete", delete)
        .handle(request)
}

fn get(request: Request) -> Response {
    let key = param(&request, "key");
    answer(cache::get(&key).map(|value| {
        value.map_or(Value::Null, |bytes| {
            Value::from(String::from_utf8_lossy(&bytes).into_owned())
        })
    }))
}

fn set(request: Request) -> Response {
    let key = param(&request, "key");
    let Ok(ttl_ms) = param(&request, "ttl_ms").parse::<u64>() else {
        return Response::bad_request("`ttl_ms` is not a number");
    };
    let value = request.into_body();
    answer(cache::set(&key, &value, Duration::from_millis(ttl_ms)).map(|()| Value::Null))
}

fn delete(request: Request) -> Response {
    let key = param(&request, "key");
    answer(cache::delete(&key).map(|()| Value::Null))
}

fn param(request: &Request, name: &str) -> String {
    request.query_param(name).unwrap_or_default()
}

fn answer(result: Result<Value, CacheError>) -> Response {
    match result {
        Ok(value) => Response::json(200, &json!({ "ok": value })),
        Err(error) => Response::json(200, &json!({ "error": error.to_string() })),
    }
}

palisade_sdk::export_handler!(handle);
