//! Test guest: `GET /secret/:name` reads the secret `name` and answers with whether it got
//! a value, its length and its SHA-256 (hex) — never the value itself — or the host's
//! error (`not-granted`, `not-found`, `unavailable`).

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::secrets::{self, SecretError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn handle(request: Request) -> Response {
    Router::new().get("/secret/:name", probe).handle(request)
}

fn probe(request: Request) -> Response {
    let name = request.param("name").unwrap_or_default();
    Response::json(200, &describe(secrets::get(name)))
}

fn describe(result: Result<String, SecretError>) -> Value {
    match result {
        Ok(value) => json!({
            "ok": true,
            "length": value.len(),
            "sha256": hex(&Sha256::digest(value.as_bytes())),
        }),
        Err(error) => json!({
            "ok": false,
            "error": match error {
                SecretError::NotGranted => "not-granted",
                SecretError::NotFound => "not-found",
                SecretError::Unavailable => "unavailable",
            },
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_value_without_showing_it() {
        let described = describe(Ok("abc".into()));
        assert_eq!(described["ok"], true);
        assert_eq!(described["length"], 3);
        assert_eq!(
            described["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!described.to_string().contains("\"abc\""));
    }

    #[test]
    fn describes_every_error() {
        for (error, text) in [
            (SecretError::NotGranted, "not-granted"),
            (SecretError::NotFound, "not-found"),
            (SecretError::Unavailable, "unavailable"),
        ] {
            assert_eq!(describe(Err(error)), json!({"ok": false, "error": text}));
        }
    }
}
