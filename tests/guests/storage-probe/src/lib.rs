//! Test guest that drives `palisade:extension/storage` from the query string, so tests can
//! reach any namespace, key, condition and size. Every answer is 200 with a JSON body that
//! says what storage returned: `{"ok": ...}` or `{"error": {"kind", "current"?,
//! "message"}}`.
//!
//! * `GET /probe` — reads key `x` of namespace `notes` (the original probe).
//! * `GET /get?ns=&key=` — `ok` is the entry (`key`, `value` as text, `revision`) or null.
//! * `PUT /set?ns=&key=&if=&size=` — writes the body, or `size` bytes of `x` when given;
//!   `if` is `any` (default), `absent` or a revision. `ok` is the new revision.
//! * `DELETE /delete?ns=&key=&if=` — `ok` is whether a key was deleted.
//! * `GET /list?ns=&prefix=&cursor=&limit=` — `ok` is `{"entries": [...], "next_cursor"}`.
//! * `PUT /flood?ns=&key=&n=` — writes `key` (empty value) `n` times in this one call,
//!   stopping at the first error: `{"written": count, "error": {...} | null}`.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{self, Condition, Entry, StorageError};
use serde_json::{Value, json};

fn handle(request: Request) -> Response {
    Router::new()
        .get("/probe", probe)
        .get("/get", get)
        .put("/set", set)
        .delete("/delete", delete)
        .get("/list", list)
        .put("/flood", flood)
        .handle(request)
}

fn probe(_request: Request) -> Response {
    Response::json(200, &describe(storage::get("notes", "x")))
}

fn get(request: Request) -> Response {
    let (ns, key) = (param(&request, "ns"), param(&request, "key"));
    answer(storage::get(&ns, &key).map(|found| found.map(entry).unwrap_or(Value::Null)))
}

fn set(request: Request) -> Response {
    let (ns, key) = (param(&request, "ns"), param(&request, "key"));
    let condition = match condition(&request) {
        Ok(condition) => condition,
        Err(response) => return response,
    };
    let value = match request.query_param("size") {
        Some(size) => match size.parse::<usize>() {
            Ok(size) => vec![b'x'; size],
            Err(_) => return Response::bad_request("`size` is not a number"),
        },
        None => request.into_body(),
    };
    answer(storage::set(&ns, &key, &value, condition).map(Value::from))
}

fn delete(request: Request) -> Response {
    let (ns, key) = (param(&request, "ns"), param(&request, "key"));
    let condition = match condition(&request) {
        Ok(condition) => condition,
        Err(response) => return response,
    };
    answer(storage::delete(&ns, &key, condition).map(Value::from))
}

fn list(request: Request) -> Response {
    let ns = param(&request, "ns");
    let prefix = param(&request, "prefix");
    let cursor = request.query_param("cursor");
    let limit = match request.query_param("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => return Response::bad_request("`limit` is not a number"),
    };
    answer(
        storage::list(&ns, &prefix, cursor.as_deref(), limit).map(|page| {
            json!({
                "entries": page.entries.into_iter().map(entry).collect::<Vec<_>>(),
                "next_cursor": page.next_cursor,
            })
        }),
    )
}

fn flood(request: Request) -> Response {
    let (ns, key) = (param(&request, "ns"), param(&request, "key"));
    let Ok(n) = param(&request, "n").parse::<u32>() else {
        return Response::bad_request("`n` is not a number");
    };
    let mut written = 0u32;
    let mut error = Value::Null;
    for _ in 0..n {
        match storage::set(&ns, &key, b"", Condition::Any) {
            Ok(_) => written += 1,
            Err(e) => {
                error = error_json(&e);
                break;
            }
        }
    }
    Response::json(200, &json!({ "written": written, "error": error }))
}

fn param(request: &Request, name: &str) -> String {
    request.query_param(name).unwrap_or_default()
}

fn condition(request: &Request) -> Result<Condition, Response> {
    match request.query_param("if").as_deref() {
        None | Some("any") => Ok(Condition::Any),
        Some("absent") => Ok(Condition::MustNotExist),
        Some(revision) => revision
            .parse()
            .map(Condition::MustEqualRevision)
            .map_err(|_| Response::bad_request("`if` is any, absent or a revision")),
    }
}

fn entry(entry: Entry) -> Value {
    json!({
        "key": entry.key,
        "value": String::from_utf8_lossy(&entry.value),
        "revision": entry.revision,
    })
}

fn answer(result: Result<Value, StorageError>) -> Response {
    let body = match result {
        Ok(value) => json!({ "ok": value }),
        Err(error) => json!({ "error": error_json(&error) }),
    };
    Response::json(200, &body)
}

fn error_json(error: &StorageError) -> Value {
    let kind = match error {
        StorageError::AccessDenied => "access-denied",
        StorageError::Conflict { .. } => "conflict",
        StorageError::TooLarge => "too-large",
        StorageError::QuotaExceeded => "quota-exceeded",
        StorageError::InvalidArgument(_) => "invalid-argument",
        StorageError::Unavailable => "unavailable",
        StorageError::Serialize { .. } | StorageError::Deserialize { .. } => "json",
    };
    let mut value = json!({ "kind": kind, "message": error.to_string() });
    if let StorageError::Conflict { current } = error {
        value["current"] = json!(current);
    }
    value
}

fn describe(result: Result<Option<Entry>, StorageError>) -> Value {
    match result {
        Ok(Some(entry)) => json!({
            "found": true,
            "key": entry.key,
            "value": String::from_utf8_lossy(&entry.value),
            "revision": entry.revision,
        }),
        Ok(None) => json!({ "found": false }),
        Err(error) => json!({ "error": error.to_string() }),
    }
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use palisade_sdk::http::Method;

    use super::*;

    #[test]
    fn describes_every_outcome() {
        let entry = Entry {
            key: "x".into(),
            value: b"hi".to_vec(),
            revision: 2,
        };
        assert_eq!(
            describe(Ok(Some(entry))),
            json!({"found": true, "key": "x", "value": "hi", "revision": 2})
        );
        assert_eq!(describe(Ok(None)), json!({"found": false}));
        assert_eq!(
            describe(Err(StorageError::Unavailable)),
            json!({"error": "storage is unavailable"})
        );
    }

    #[test]
    fn errors_name_their_kind_and_conflicts_carry_the_revision() {
        let value = error_json(&StorageError::Conflict { current: Some(4) });
        assert_eq!(value["kind"], "conflict");
        assert_eq!(value["current"], 4);
        assert_eq!(
            error_json(&StorageError::Conflict { current: None })["current"],
            Value::Null
        );
        assert_eq!(
            error_json(&StorageError::AccessDenied)["kind"],
            "access-denied"
        );
        assert!(error_json(&StorageError::TooLarge).get("current").is_none());
    }

    #[test]
    fn conditions_come_from_the_query() {
        let parse = |q: &str| condition(&Request::new(Method::Put, &format!("/set?{q}")));
        assert_eq!(parse("").unwrap(), Condition::Any);
        assert_eq!(parse("if=any").unwrap(), Condition::Any);
        assert_eq!(parse("if=absent").unwrap(), Condition::MustNotExist);
        assert_eq!(parse("if=7").unwrap(), Condition::MustEqualRevision(7));
        assert_eq!(parse("if=x").unwrap_err().status(), 400);
    }
}
