//! Test guest: `GET /fetch?url=<url>[&timeout_ms=<ms>]` sends one `GET` to `url` through
//! `wasi:http/outgoing-handler` and answers 200 with what happened:
//! `{"outcome":"response","status":..,"location":..,"body":..}` or
//! `{"outcome":"error","kind":..,"message":..}`.

use std::time::Duration;

use palisade_sdk::fetch::{self, FetchError};
use palisade_sdk::http::{Request, Response, Router};

fn handle(request: Request) -> Response {
    Router::new().get("/fetch", probe).handle(request)
}

fn probe(request: Request) -> Response {
    let Some(url) = request.query_param("url") else {
        return Response::bad_request("the query parameter `url` is missing");
    };
    let mut outgoing = fetch::Request::get(url.as_str());
    if let Some(ms) = request.query_param("timeout_ms") {
        match ms.parse::<u64>() {
            Ok(ms) => outgoing = outgoing.with_timeout(Duration::from_millis(ms)),
            Err(_) => return Response::bad_request("`timeout_ms` must be a number"),
        }
    }
    let report = match fetch::fetch(outgoing) {
        Ok(response) => serde_json::json!({
            "outcome": "response",
            "status": response.status(),
            "location": response.header("location"),
            "body": String::from_utf8_lossy(response.body()),
        }),
        Err(error) => serde_json::json!({
            "outcome": "error",
            "kind": kind(&error),
            "message": error.to_string(),
        }),
    };
    Response::json(200, &report)
}

fn kind(error: &FetchError) -> &'static str {
    match error {
        FetchError::InvalidUrl { .. } => "invalid_url",
        FetchError::InvalidRequest(_) => "invalid_request",
        FetchError::Denied { .. } => "denied",
        FetchError::Prohibited { .. } => "prohibited",
        FetchError::Timeout { .. } => "timeout",
        FetchError::ResponseTooLarge => "too_large",
        FetchError::Failed(_) => "failed",
    }
}

palisade_sdk::export_handler!(handle);
