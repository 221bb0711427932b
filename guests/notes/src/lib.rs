//! Sample Palisade extension: a JSON CRUD API over notes kept in the storage namespace
//! `notes` (manifest capability `storage`).
//!
//! A note is `{"id", "revision", "title", "body"}`; `revision` is the storage revision and
//! is also sent as the `etag` header of single-note answers.
//!
//! * `GET /notes?cursor=&limit=` — one page in id order: `{"notes": [...], "next_cursor"}`;
//!   pass `next_cursor` back as `cursor` until it is `null`. `limit` is 1–100 (default 20).
//! * `GET /notes/:id` — one note, or 404.
//! * `POST /notes` with `{"id", "title", "body"}` — creates the note only if the id is free
//!   (storage condition must-not-exist): 201, or 409 with the existing `current_revision`.
//! * `PUT /notes/:id` with `{"title", "body"}` — creates or replaces. With
//!   `if-match: <revision>` the write happens only if the note is at that revision
//!   (must-equal-revision); otherwise 412 with `current_revision` (`null` if there is no
//!   such note).
//! * `DELETE /notes/:id` — 204, or 404; `if-match` works as for `PUT`.
//!
//! Storage failures map to statuses: too large → 413, quota exceeded → 507, storage
//! unavailable → 503.

mod store;

use std::rc::Rc;

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{Condition, Entry, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use store::{NoteStore, Storage};

/// Longest note id.
const MAX_ID_LEN: usize = 64;
/// Longest title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Page size of `GET /notes` without `limit`, and the largest allowed.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// What is stored per note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    title: String,
    #[serde(default)]
    body: String,
}

/// The body of `POST /notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    id: String,
    title: String,
    #[serde(default)]
    body: String,
}

/// A note as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    id: String,
    revision: u64,
    title: String,
    body: String,
}

impl Note {
    fn from_entry(entry: Entry) -> Result<Note, Response> {
        let stored: NoteBody = serde_json::from_slice(&entry.value).map_err(|error| {
            error_response(
                500,
                "corrupt_note",
                &format!("note `{}` is not valid: {error}", entry.key),
            )
        })?;
        Ok(Note {
            id: entry.key,
            revision: entry.revision,
            title: stored.title,
            body: stored.body,
        })
    }

    fn response(&self, status: u16) -> Response {
        Response::json(status, self).with_header("etag", format!("\"{}\"", self.revision))
    }
}

fn handle(request: Request) -> Response {
    router(Rc::new(Storage)).handle(request)
}

fn router(store: Rc<dyn NoteStore>) -> Router {
    Router::new()
        .get("/notes", bind(&store, list_notes))
        .post("/notes", bind(&store, create_note))
        .get("/notes/:id", bind(&store, get_note))
        .put("/notes/:id", bind(&store, put_note))
        .delete("/notes/:id", bind(&store, delete_note))
}

/// A route handler calling `handler` with `store`.
fn bind(
    store: &Rc<dyn NoteStore>,
    handler: fn(&dyn NoteStore, &Request) -> Response,
) -> impl Fn(Request) -> Response + 'static {
    let store = store.clone();
    move |request| handler(&*store, &request)
}

fn list_notes(store: &dyn NoteStore, request: &Request) -> Response {
    let limit = match request.query_param("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
            _ => {
                return Response::bad_request(format!(
                    "`limit` must be a number from 1 to {MAX_PAGE}"
                ));
            }
        },
    };
    let cursor = request.query_param("cursor").filter(|c| !c.is_empty());
    let page = match store.list(cursor.as_deref(), limit) {
        Ok(page) => page,
        Err(error) => return storage_error(error),
    };
    let mut notes = Vec::with_capacity(page.entries.len());
    for entry in page.entries {
        match Note::from_entry(entry) {
            Ok(note) => notes.push(note),
            Err(response) => return response,
        }
    }
    Response::json(
        200,
        &json!({ "notes": notes, "next_cursor": page.next_cursor }),
    )
}

fn get_note(store: &dyn NoteStore, request: &Request) -> Response {
    let id = match note_id(request) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match store.get(id) {
        Ok(Some(entry)) => match Note::from_entry(entry) {
            Ok(note) => note.response(200),
            Err(response) => response,
        },
        Ok(None) => Response::not_found(),
        Err(error) => storage_error(error),
    }
}

fn create_note(store: &dyn NoteStore, request: &Request) -> Response {
    let new: NewNote = match request.json() {
        Ok(new) => new,
        Err(error) => return Response::bad_request(format!("invalid note: {error}")),
    };
    if let Err(message) = check_id(&new.id) {
        return Response::bad_request(message);
    }
    let body = NoteBody {
        title: new.title,
        body: new.body,
    };
    match write(store, &new.id, &body, Condition::MustNotExist) {
        Ok(note) => note.response(201),
        Err(StorageError::Conflict { current }) => Response::json(
            409,
            &json!({ "error": "already_exists", "current_revision": current }),
        ),
        Err(error) => storage_error(error),
    }
}

fn put_note(store: &dyn NoteStore, request: &Request) -> Response {
    let id = match note_id(request) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let body: NoteBody = match request.json() {
        Ok(body) => body,
        Err(error) => return Response::bad_request(format!("invalid note: {error}")),
    };
    let condition = match precondition(store, id, request) {
        Ok(condition) => condition,
        Err(response) => return response,
    };
    match write(store, id, &body, condition) {
        Ok(note) => note.response(200),
        Err(StorageError::Conflict { current }) => mismatch(current),
        Err(error) => storage_error(error),
    }
}

fn delete_note(store: &dyn NoteStore, request: &Request) -> Response {
    let id = match note_id(request) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let condition = match precondition(store, id, request) {
        Ok(condition) => condition,
        Err(response) => return response,
    };
    match store.delete(id, condition) {
        Ok(true) => Response::new(204),
        Ok(false) => Response::not_found(),
        Err(StorageError::Conflict { current }) => mismatch(current),
        Err(error) => storage_error(error),
    }
}

/// Validates and stores `body` under `id`.
fn write(
    store: &dyn NoteStore,
    id: &str,
    body: &NoteBody,
    condition: Condition,
) -> Result<Note, StorageError> {
    if body.title.trim().is_empty() || body.title.chars().count() > MAX_TITLE_CHARS {
        return Err(StorageError::InvalidArgument(format!(
            "`title` must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    let bytes = serde_json::to_vec(body).map_err(|error| StorageError::Serialize {
        key: id.to_owned(),
        message: error.to_string(),
    })?;
    let revision = store.set(id, &bytes, condition)?;
    Ok(Note {
        id: id.to_owned(),
        revision,
        title: body.title.clone(),
        body: body.body.clone(),
    })
}

/// The `:id` path parameter, checked.
fn note_id(request: &Request) -> Result<&str, Response> {
    let id = request
        .param("id")
        .ok_or_else(|| Response::bad_request("the path parameter `id` is missing"))?;
    check_id(id).map_err(Response::bad_request)?;
    Ok(id)
}

/// Ids are 1–64 characters of `A-Z a-z 0-9 _ -`.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a note id (1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 _ -)"
        ))
    }
}

/// The write condition from `if-match`: none → any; `"<rev>"` or `<rev>` → that
/// revision; `*` → whatever revision the note has now (412 if there is none).
fn precondition(store: &dyn NoteStore, id: &str, request: &Request) -> Result<Condition, Response> {
    let Some(header) = request.header("if-match") else {
        return Ok(Condition::Any);
    };
    let value = header.trim();
    if value == "*" {
        return match store.get(id) {
            Ok(Some(entry)) => Ok(Condition::MustEqualRevision(entry.revision)),
            Ok(None) => Err(mismatch(None)),
            Err(error) => Err(storage_error(error)),
        };
    }
    value
        .trim_matches('"')
        .parse::<u64>()
        .map(Condition::MustEqualRevision)
        .map_err(|_| {
            Response::bad_request(format!(
                "`if-match: {value}` is not a revision this API returned"
            ))
        })
}

/// 412 with the note's current revision.
fn mismatch(current: Option<u64>) -> Response {
    Response::json(
        412,
        &json!({ "error": "revision_mismatch", "current_revision": current }),
    )
}

fn error_response(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, &json!({ "error": code, "message": message }))
}

/// The answer for a storage failure.
fn storage_error(error: StorageError) -> Response {
    let message = error.to_string();
    let (status, code) = match error {
        StorageError::Conflict { .. } => (409, "conflict"),
        StorageError::InvalidArgument(_) => (400, "bad_request"),
        StorageError::TooLarge => (413, "too_large"),
        StorageError::QuotaExceeded => (507, "quota_exceeded"),
        StorageError::Unavailable => (503, "storage_unavailable"),
        StorageError::AccessDenied
        | StorageError::Serialize { .. }
        | StorageError::Deserialize { .. } => (500, "storage_error"),
    };
    error_response(status, code, &message)
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests;
