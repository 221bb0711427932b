//! Test guest: `GET /probe` reads key `x` of storage namespace `notes` and answers with
//! what it found. It imports `palisade:extension/storage`, so a manifest that does not
//! grant `storage` must be refused at publish and at install.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::storage::{self, Entry, StorageError};
use serde_json::{Value, json};

fn handle(request: Request) -> Response {
    Router::new().get("/probe", probe).handle(request)
}

fn probe(_request: Request) -> Response {
    Response::json(200, &describe(storage::get("notes", "x")))
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
}
