use std::rc::Rc;

use palisade_sdk::http::{Method, Request, Response};
use palisade_sdk::storage::StorageError;
use serde_json::{Value, json};

use super::router;
use crate::store::Memory;

struct Api {
    memory: Rc<Memory>,
}

impl Api {
    fn new() -> Api {
        Api {
            memory: Rc::new(Memory::default()),
        }
    }

    fn send(&self, request: Request) -> Response {
        router(self.memory.clone()).handle(request)
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = Request::new(method, path);
        if let Some(body) = body {
            request = request.with_body(body.to_string());
        }
        let response = self.send(request);
        let body = if response.body().is_empty() {
            Value::Null
        } else {
            response.body_json().unwrap()
        };
        (response.status(), body)
    }
}

#[test]
fn create_read_update_delete() {
    let api = Api::new();
    let (status, created) = api.call(
        Method::Post,
        "/notes",
        Some(json!({"id": "n1", "title": "First", "body": "hello"})),
    );
    assert_eq!(status, 201);
    assert_eq!(created["id"], "n1");
    assert_eq!(created["title"], "First");
    let revision = created["revision"].as_u64().unwrap();

    let response = api.send(Request::new(Method::Get, "/notes/n1"));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.header("etag"),
        Some(format!("\"{revision}\"").as_str())
    );
    let note: Value = response.body_json().unwrap();
    assert_eq!(note["body"], "hello");

    let (status, updated) = api.call(
        Method::Put,
        "/notes/n1",
        Some(json!({"title": "First, edited"})),
    );
    assert_eq!(status, 200);
    assert_eq!(updated["body"], "");
    assert!(updated["revision"].as_u64().unwrap() > revision);

    assert_eq!(api.call(Method::Delete, "/notes/n1", None).0, 204);
    assert_eq!(api.call(Method::Get, "/notes/n1", None).0, 404);
    assert_eq!(api.call(Method::Delete, "/notes/n1", None).0, 404);
}

#[test]
fn creating_a_taken_id_is_a_conflict_with_the_current_revision() {
    let api = Api::new();
    let (_, first) = api.call(
        Method::Post,
        "/notes",
        Some(json!({"id": "a", "title": "x"})),
    );
    let (status, body) = api.call(
        Method::Post,
        "/notes",
        Some(json!({"id": "a", "title": "y"})),
    );
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"error": "already_exists", "current_revision": first["revision"]})
    );
    assert_eq!(api.call(Method::Get, "/notes/a", None).1["title"], "x");
}

#[test]
fn if_match_guards_updates_and_deletes() {
    let api = Api::new();
    let (_, first) = api.call(Method::Put, "/notes/a", Some(json!({"title": "v1"})));
    let rev = first["revision"].as_u64().unwrap();

    let stale = Request::new(Method::Put, "/notes/a")
        .with_header("if-match", format!("\"{}\"", rev + 5))
        .with_body(json!({"title": "v2"}).to_string());
    let response = api.send(stale);
    assert_eq!(response.status(), 412);
    assert_eq!(
        response.body_json::<Value>().unwrap(),
        json!({"error": "revision_mismatch", "current_revision": rev})
    );

    let fresh = Request::new(Method::Put, "/notes/a")
        .with_header("if-match", rev.to_string())
        .with_body(json!({"title": "v2"}).to_string());
    assert_eq!(api.send(fresh).status(), 200);

    let missing = Request::new(Method::Put, "/notes/nope")
        .with_header("if-match", "1")
        .with_body(json!({"title": "v"}).to_string());
    let response = api.send(missing);
    assert_eq!(response.status(), 412);
    assert_eq!(
        response.body_json::<Value>().unwrap()["current_revision"],
        Value::Null
    );

    let any = Request::new(Method::Delete, "/notes/a").with_header("if-match", "*");
    assert_eq!(api.send(any).status(), 204);
    let any = Request::new(Method::Delete, "/notes/a").with_header("if-match", "*");
    assert_eq!(api.send(any).status(), 412);

    let bad = Request::new(Method::Delete, "/notes/a").with_header("if-match", "W/\"x\"");
    assert_eq!(api.send(bad).status(), 400);
}

#[test]
fn listing_pages_with_the_cursor() {
    let api = Api::new();
    for id in ["c", "a", "b"] {
        api.call(
            Method::Put,
            &format!("/notes/{id}"),
            Some(json!({"title": id})),
        );
    }
    let (status, first) = api.call(Method::Get, "/notes?limit=2", None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = first["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = api.call(
        Method::Get,
        &format!("/notes?limit=2&cursor={cursor}"),
        None,
    );
    assert_eq!(second["notes"][0]["id"], "c");
    assert_eq!(second["next_cursor"], Value::Null);

    for bad in ["0", "101", "x"] {
        assert_eq!(
            api.call(Method::Get, &format!("/notes?limit={bad}"), None)
                .0,
            400
        );
    }
}

#[test]
fn bad_input_is_400() {
    let api = Api::new();
    assert_eq!(api.call(Method::Get, "/notes/a%20b", None).0, 400);
    assert_eq!(
        api.call(Method::Put, "/notes/a", Some(json!({"title": ""})))
            .0,
        400
    );
    assert_eq!(
        api.call(
            Method::Put,
            "/notes/a",
            Some(json!({"title": "t", "extra": 1}))
        )
        .0,
        400
    );
    let long = "x".repeat(65);
    assert_eq!(
        api.call(
            Method::Post,
            "/notes",
            Some(json!({"id": long, "title": "t"}))
        )
        .0,
        400
    );
    let response = api.send(Request::new(Method::Post, "/notes").with_body("{"));
    assert_eq!(response.status(), 400);
}

#[test]
fn storage_failures_map_to_statuses() {
    let api = Api::new();
    for (error, status, code) in [
        (StorageError::TooLarge, 413, "too_large"),
        (StorageError::QuotaExceeded, 507, "quota_exceeded"),
        (StorageError::Unavailable, 503, "storage_unavailable"),
        (StorageError::AccessDenied, 500, "storage_error"),
    ] {
        *api.memory.failing.borrow_mut() = Some(error);
        let (got, body) = api.call(Method::Put, "/notes/a", Some(json!({"title": "t"})));
        assert_eq!((got, body["error"].as_str().unwrap()), (status, code));
    }
}

#[test]
fn a_corrupt_stored_note_is_reported() {
    let api = Api::new();
    use crate::store::NoteStore;
    api.memory
        .set("bad", b"not json", palisade_sdk::storage::Condition::Any)
        .unwrap();
    let (status, body) = api.call(Method::Get, "/notes/bad", None);
    assert_eq!(status, 500);
    assert_eq!(body["error"], "corrupt_note");
}
