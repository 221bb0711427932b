//! Sample extension: an audit trail of ticket events.
//!
//! * Every event on a `ticket.*` topic arrives as `POST /on/ticket`; it is kept in the
//!   storage namespace `audit` (once per event id, however often it is delivered), and only
//!   the newest [`KEEP`] are kept.
//! * A schedule (`@every 10s`) calls `POST /heartbeat`, which records the slot it fired for.
//! * `GET /events` lists the kept events, newest first, with the last heartbeat:
//!   `{"events": [{"event_id", "topic", "attempt", "published_at", "payload"}], "heartbeat"}`.

use palisade_sdk::events::{self, Delivery};
use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{self, Condition, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const NAMESPACE: &str = "audit";
/// Events kept; older ones are deleted.
const KEEP: usize = 100;
/// Prefix of event keys: `event/{published_at}/{event_id}`, so keys sort by publish time.
const EVENT_PREFIX: &str = "event/";
const HEARTBEAT: &str = "heartbeat";

/// One kept event.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    event_id: String,
    topic: String,
    attempt: u32,
    published_at: String,
    payload: Value,
}

fn router() -> Router {
    Router::new()
        .post("/on/ticket", on_ticket)
        .post("/heartbeat", heartbeat)
        .get("/events", list)
}

fn on_ticket(request: Request) -> Response {
    let Some(delivery) = Delivery::of(&request) else {
        return Response::bad_request("not an event delivery");
    };
    let payload: Value = events::payload(&request).unwrap_or(Value::Null);
    let key = format!(
        "{EVENT_PREFIX}{}/{}",
        delivery.published_at, delivery.event_id
    );
    let kept = Kept {
        event_id: delivery.event_id,
        topic: delivery.topic,
        attempt: delivery.attempt,
        published_at: delivery.published_at,
        payload,
    };
    let value = match serde_json::to_vec(&kept) {
        Ok(value) => value,
        Err(error) => return failed(&error.to_string()),
    };
    // A second delivery of the same event finds its key taken: done already.
    match storage::set(NAMESPACE, &key, &value, Condition::MustNotExist) {
        Ok(_) | Err(StorageError::Conflict { .. }) => {}
        Err(error) => return failed(&error.to_string()),
    }
    match trim() {
        Ok(()) => Response::new(204),
        Err(error) => failed(&error.to_string()),
    }
}

/// Deletes the oldest events beyond [`KEEP`].
fn trim() -> Result<(), StorageError> {
    let keys = event_keys()?;
    for key in keys.iter().take(keys.len().saturating_sub(KEEP)) {
        storage::delete(NAMESPACE, key, Condition::Any)?;
    }
    Ok(())
}

/// Every event key, oldest first.
fn event_keys() -> Result<Vec<String>, StorageError> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = storage::list(NAMESPACE, EVENT_PREFIX, cursor.as_deref(), 100)?;
        keys.extend(page.entries.into_iter().map(|entry| entry.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

fn heartbeat(request: Request) -> Response {
    let slot = Delivery::of(&request).map_or_else(String::new, |d| d.published_at);
    match storage::set(NAMESPACE, HEARTBEAT, slot.as_bytes(), Condition::Any) {
        Ok(_) => Response::new(204),
        Err(error) => failed(&error.to_string()),
    }
}

fn list(_request: Request) -> Response {
    let mut kept = Vec::new();
    let mut cursor = None;
    loop {
        let page = match storage::list(NAMESPACE, EVENT_PREFIX, cursor.as_deref(), 100) {
            Ok(page) => page,
            Err(error) => return failed(&error.to_string()),
        };
        kept.extend(
            page.entries
                .iter()
                .filter_map(|entry| serde_json::from_slice::<Value>(&entry.value).ok()),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    kept.reverse();
    let heartbeat = match storage::get(NAMESPACE, HEARTBEAT) {
        Ok(entry) => entry.map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        Err(error) => return failed(&error.to_string()),
    };
    Response::json(200, &json!({ "events": kept, "heartbeat": heartbeat }))
}

fn failed(error: &str) -> Response {
    Response::json(503, &json!({ "error": error }))
}

fn handle(request: Request) -> Response {
    router().handle(request)
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use palisade_sdk::http::Method;

    use super::*;

    #[test]
    fn a_call_that_is_not_a_delivery_is_refused() {
        let response = router().handle(Request::new(Method::Post, "/on/ticket"));
        assert_eq!(response.status(), 400);
    }

    #[test]
    fn unknown_paths_are_not_found() {
        let response = router().handle(Request::new(Method::Get, "/nowhere"));
        assert_eq!(response.status(), 404);
    }
}
