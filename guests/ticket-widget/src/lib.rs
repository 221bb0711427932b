//! Sample Palisade extension with a UI: a list of tickets kept in the storage namespace
//! `tickets` (one key, `items`, holding the list as JSON, written with a revision check so
//! that simultaneous additions never lose one), and a UI under `ui/` that lists them and
//! adds one through the host page's bridge.
//!
//! * `GET /items` — `{"items": [{"id", "title"}, ...]}`, oldest first.
//! * `POST /items` with `{"title"}` — adds a ticket: 201 with it; 400 for a title that is
//!   empty or longer than 120 characters; 409 when the list holds 100 tickets already.
//!
//! Storage failures map to statuses: quota exceeded → 507, unavailable → 503.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{self, Condition, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::json;

const NAMESPACE: &str = "tickets";
const KEY: &str = "items";
/// Most tickets kept.
const MAX_ITEMS: usize = 100;
/// Longest title, in characters.
const MAX_TITLE_CHARS: usize = 120;
/// Attempts at a conditional write before answering 503.
const ATTEMPTS: usize = 5;

/// One ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: u32,
    title: String,
}

/// The body of `POST /items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    title: String,
}

fn handle(request: Request) -> Response {
    Router::new()
        .get("/items", list)
        .post("/items", add)
        .handle(request)
}

fn list(_request: Request) -> Response {
    match load() {
        Ok((items, _)) => Response::json(200, &json!({ "items": items })),
        Err(error) => storage_error(&error),
    }
}

fn add(request: Request) -> Response {
    let new: NewItem = match request.json() {
        Ok(new) => new,
        Err(e) => return Response::bad_request(format!("expected {{\"title\"}}: {e}")),
    };
    let title = match checked_title(&new.title) {
        Ok(title) => title,
        Err(message) => return Response::bad_request(message),
    };
    for _ in 0..ATTEMPTS {
        let (items, revision) = match load() {
            Ok(loaded) => loaded,
            Err(error) => return storage_error(&error),
        };
        let Some((items, item)) = appended(items, &title) else {
            return Response::json(
                409,
                &json!({ "error": format!("the list holds {MAX_ITEMS} tickets already") }),
            );
        };
        let condition = match revision {
            Some(revision) => Condition::MustEqualRevision(revision),
            None => Condition::MustNotExist,
        };
        let value = match serde_json::to_vec(&items) {
            Ok(value) => value,
            Err(e) => return Response::json(500, &json!({ "error": e.to_string() })),
        };
        match storage::set(NAMESPACE, KEY, &value, condition) {
            Ok(_) => return Response::json(201, &item),
            // Another call added one meanwhile: read again.
            Err(StorageError::Conflict { .. }) => continue,
            Err(error) => return storage_error(&error),
        }
    }
    Response::json(503, &json!({ "error": "the list is busy; try again" }))
}

/// The stored list and its revision (`None` before the first ticket).
fn load() -> Result<(Vec<Item>, Option<u64>), StorageError> {
    match storage::get(NAMESPACE, KEY)? {
        None => Ok((Vec::new(), None)),
        Some(entry) => {
            let items = serde_json::from_slice(&entry.value).map_err(|e| {
                StorageError::InvalidArgument(format!("the stored list is not JSON: {e}"))
            })?;
            Ok((items, Some(entry.revision)))
        }
    }
}

/// The title, trimmed, or why it is refused.
fn checked_title(title: &str) -> Result<String, String> {
    let title = title.trim();
    if title.is_empty() {
        return Err("the title is empty".into());
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!(
            "the title is longer than {MAX_TITLE_CHARS} characters"
        ));
    }
    Ok(title.to_owned())
}

/// `items` with a new ticket titled `title` (the next id), and that ticket; `None` when
/// the list is full.
fn appended(mut items: Vec<Item>, title: &str) -> Option<(Vec<Item>, Item)> {
    if items.len() >= MAX_ITEMS {
        return None;
    }
    let id = items
        .iter()
        .map(|item| item.id)
        .max()
        .map_or(1, |max| max + 1);
    let item = Item {
        id,
        title: title.to_owned(),
    };
    items.push(item.clone());
    Some((items, item))
}

fn storage_error(error: &StorageError) -> Response {
    let status = match error {
        StorageError::QuotaExceeded => 507,
        StorageError::Unavailable => 503,
        _ => 500,
    };
    Response::json(status, &json!({ "error": error.to_string() }))
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(checked_title("  Printer jam ").unwrap(), "Printer jam");
        assert!(checked_title("   ").is_err());
        assert!(checked_title(&"x".repeat(MAX_TITLE_CHARS + 1)).is_err());
        assert!(checked_title(&"é".repeat(MAX_TITLE_CHARS)).is_ok());
    }

    #[test]
    fn tickets_get_the_next_id_until_the_list_is_full() {
        let (items, first) = appended(Vec::new(), "a").unwrap();
        assert_eq!(first.id, 1);
        let (items, second) = appended(items, "b").unwrap();
        assert_eq!(second.id, 2);
        assert_eq!(items.len(), 2);
        let full: Vec<Item> = (1..=MAX_ITEMS as u32)
            .map(|id| Item {
                id,
                title: "t".into(),
            })
            .collect();
        assert!(appended(full, "one too many").is_none());
    }
}
