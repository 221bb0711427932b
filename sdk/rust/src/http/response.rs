//! The response a handler returns.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An HTTP response: status, headers and the whole body.
///
/// Header names are case-insensitive and stored in lower case. `content-length` is computed
/// by the platform from the body, so a value set here is not sent.
///
/// ```
/// use palisade_sdk::http::Response;
///
/// let response = Response::json(200, &serde_json::json!({"ok": true}))
///     .with_header("Cache-Control", "no-store");
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.header("content-type"), Some("application/json"));
/// assert_eq!(response.body(), br#"{"ok":true}"#);
///
/// let response = Response::new(204);
/// assert!(response.body().is_empty());
///
/// assert_eq!(Response::not_found().body(), br#"{"error":"not_found"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response whose body is `value` as JSON, with `content-type: application/json`.
    ///
    /// If `value` cannot be serialized (a map with non-string keys, or a `Serialize` impl
    /// that fails), the result is a 500 response with body
    /// `{"error":"json_serialization_failed","message":"…"}` instead.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(error) => Response::error_json(
                500,
                "json_serialization_failed",
                Some(&format!(
                    "the response body could not be serialized as JSON: {error}"
                )),
            ),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// 404 with body `{"error":"not_found"}`.
    pub fn not_found() -> Self {
        Response::error_json(404, "not_found", None)
    }

    /// 400 with body `{"error":"bad_request","message":"<message>"}`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Response::error_json(400, "bad_request", Some(&message.into()))
    }

    /// A JSON error body `{"error":code}` or `{"error":code,"message":message}`.
    pub(crate) fn error_json(status: u16, code: &str, message: Option<&str>) -> Self {
        let mut body = serde_json::Map::new();
        body.insert("error".to_owned(), code.into());
        if let Some(message) = message {
            body.insert("message".to_owned(), message.into());
        }
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(serde_json::Value::Object(body).to_string())
    }

    /// Sets header `name` to `value`, replacing every earlier value of that name.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.remove_header(name);
        self.append_header(name, value)
    }

    /// Adds a value for header `name`, keeping earlier values of that name.
    pub fn append_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every header as `(lower-case name, value)`, in the order set.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Parses the body as JSON into `T` (useful in tests of handlers).
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// Splits the response into status, headers and body.
    pub fn into_parts(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }

    pub(crate) fn remove_header(&mut self, name: &str) {
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn new_has_no_headers_or_body() {
        let response = Response::new(204);
        assert_eq!(response.status(), 204);
        assert!(response.headers().is_empty());
        assert!(response.body().is_empty());
    }

    #[test]
    fn json_sets_content_type_and_body() {
        let response = Response::json(201, &json!({"id": 1}));
        assert_eq!(response.status(), 201);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.body_json::<Value>().unwrap(), json!({"id": 1}));
    }

    #[test]
    fn json_serialization_failure_is_a_500() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        let response = Response::json(200, &map);
        assert_eq!(response.status(), 500);
        let body: Value = response.body_json().unwrap();
        assert_eq!(body["error"], "json_serialization_failed");
        assert!(body["message"].as_str().unwrap().contains("JSON"));
    }

    #[test]
    fn text_sets_plain_content_type() {
        let response = Response::text(418, "teapot");
        assert_eq!(response.status(), 418);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(response.body(), b"teapot");
    }

    #[test]
    fn error_helpers() {
        let response = Response::not_found();
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "not_found"})
        );

        let response = Response::bad_request("name is \"required\"");
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "bad_request", "message": "name is \"required\""})
        );
    }

    #[test]
    fn with_header_replaces_and_append_header_keeps() {
        let response = Response::new(200)
            .with_header("X-Ext-A", "1")
            .append_header("x-ext-a", "2")
            .with_header("X-Ext-B", "3");
        assert_eq!(
            response.headers(),
            [
                ("x-ext-a".to_owned(), "1".to_owned()),
                ("x-ext-a".to_owned(), "2".to_owned()),
                ("x-ext-b".to_owned(), "3".to_owned()),
            ]
        );
        let response = response.with_header("x-ext-a", "4");
        assert_eq!(response.header("X-EXT-A"), Some("4"));
        assert_eq!(response.headers().len(), 2);
        assert_eq!(response.header("absent"), None);
    }

    #[test]
    fn into_parts_returns_everything() {
        let (status, headers, body) = Response::text(200, "x").into_parts();
        assert_eq!(status, 200);
        assert_eq!(headers.len(), 1);
        assert_eq!(body, b"x");
    }
}
