//! The response a handler returns.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BodyWriter, StreamClosed};

/// An HTTP response: status, headers and a body that is either buffered (a byte vector
/// written at once) or streamed (produced chunk by chunk, see [`Response::stream`]).
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
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

/// What produces a streaming body.
type Producer = Box<dyn FnOnce(&mut BodyWriter) -> Result<(), StreamClosed>>;

enum Body {
    Buffered(Vec<u8>),
    Streaming(Producer),
}

/// The body of a response on its way out: what the export writes after the head.
pub(crate) enum PendingBody {
    Buffered(Vec<u8>),
    Streaming(Producer),
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Response");
        debug
            .field("status", &self.status)
            .field("headers", &self.headers);
        match &self.body {
            Body::Buffered(bytes) => debug.field("body", bytes),
            Body::Streaming(_) => debug.field("body", &format_args!("<streaming>")),
        };
        debug.finish()
    }
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Buffered(Vec::new()),
        }
    }

    /// A response whose body is written by `producer` while it is being sent.
    ///
    /// The status and headers (set as on any response, e.g. with
    /// [`with_header`](Self::with_header)) go out first; then `producer` runs with a
    /// [`BodyWriter`], and every write reaches the caller as soon as it returns. When
    /// `producer` returns `Ok`, the body is finished. A write fails with [`StreamClosed`]
    /// when the caller went away or the platform cut the body at its size limit: return
    /// that error (`?`), and the body ends there, incomplete.
    ///
    /// The producer runs after the handler has returned, so it owns what it needs
    /// (`move`). A panic in it traps the instance; since the status was already sent, the
    /// caller sees the body break off.
    ///
    /// ```
    /// use palisade_sdk::http::Response;
    ///
    /// let response = Response::stream(200, |writer| {
    ///     for n in 1..=3 {
    ///         writeln!(writer, "line {n}")?;
    ///     }
    ///     Ok(())
    /// })
    /// .with_header("content-type", "text/plain; charset=utf-8");
    ///
    /// assert!(response.is_streaming());
    /// assert_eq!(response.into_body_bytes(), b"line 1\nline 2\nline 3\n");
    /// ```
    pub fn stream(
        status: u16,
        producer: impl FnOnce(&mut BodyWriter) -> Result<(), StreamClosed> + 'static,
    ) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Streaming(Box::new(producer)),
        }
    }

    /// A streaming response that sends each item of `chunks` as it is produced (the
    /// iterator runs while the body is sent), stopping early if the body stream closes.
    /// See [`stream`](Self::stream).
    ///
    /// ```
    /// use palisade_sdk::http::Response;
    ///
    /// let response = Response::from_chunks(200, (1..=3).map(|n| format!("{n},")));
    /// assert_eq!(response.into_body_bytes(), b"1,2,3,");
    /// ```
    pub fn from_chunks<I>(status: u16, chunks: I) -> Self
    where
        I: IntoIterator + 'static,
        I::Item: AsRef<[u8]>,
    {
        Response::stream(status, move |writer| {
            for chunk in chunks {
                writer.write(chunk)?;
            }
            Ok(())
        })
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

    /// Replaces the body (a streaming body too) with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Buffered(body.into());
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

    /// The buffered body; empty for a streaming response (see
    /// [`into_body_bytes`](Self::into_body_bytes)).
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Buffered(bytes) => bytes,
            Body::Streaming(_) => &[],
        }
    }

    /// Whether the body is streamed ([`stream`](Self::stream),
    /// [`from_chunks`](Self::from_chunks)) rather than buffered.
    pub fn is_streaming(&self) -> bool {
        matches!(self.body, Body::Streaming(_))
    }

    /// Parses the buffered body as JSON into `T` (useful in tests of handlers).
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.body())
    }

    /// The whole body: the buffered bytes, or what a streaming body's producer writes,
    /// run here to its end and collected in memory. Meant for tests; a producer that
    /// calls host functions (a sleep, storage) panics outside the runner.
    pub fn into_body_bytes(self) -> Vec<u8> {
        self.body.collect()
    }

    /// Splits the response into status, headers and body. A streaming body is collected
    /// as by [`into_body_bytes`](Self::into_body_bytes).
    pub fn into_parts(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        (self.status, self.headers, self.body.collect())
    }

    /// Splits the response into status, headers and the body still to be written.
    pub(crate) fn into_outgoing(self) -> (u16, Vec<(String, String)>, PendingBody) {
        let body = match self.body {
            Body::Buffered(bytes) => PendingBody::Buffered(bytes),
            Body::Streaming(producer) => PendingBody::Streaming(producer),
        };
        (self.status, self.headers, body)
    }

    pub(crate) fn remove_header(&mut self, name: &str) {
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }
}

impl Body {
    /// Runs a streaming body into memory.
    fn collect(self) -> Vec<u8> {
        match self {
            Body::Buffered(bytes) => bytes,
            Body::Streaming(producer) => {
                let mut writer = BodyWriter::memory(usize::MAX);
                // A memory writer never closes, so the producer cannot fail on a write;
                // the bytes written so far are the body either way.
                let _ = producer(&mut writer);
                writer
                    .into_memory()
                    .map(|(bytes, _)| bytes)
                    .unwrap_or_default()
            }
        }
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

    #[test]
    fn streaming_response_keeps_headers_and_collects_its_chunks() {
        let response = Response::stream(201, |writer| {
            writer.write("one ")?;
            writer.write(b"two")?;
            Ok(())
        })
        .with_header("Content-Type", "text/plain")
        .append_header("x-ext-a", "1");
        assert!(response.is_streaming());
        assert_eq!(response.status(), 201);
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert!(response.body().is_empty());
        assert!(format!("{response:?}").contains("<streaming>"));
        let (status, headers, body) = response.into_parts();
        assert_eq!(status, 201);
        assert_eq!(headers.len(), 2);
        assert_eq!(body, b"one two");
    }

    #[test]
    fn with_body_replaces_a_stream() {
        let response = Response::stream(200, |_| panic!("not run")).with_body("plain");
        assert!(!response.is_streaming());
        assert_eq!(response.into_body_bytes(), b"plain");
    }

    #[test]
    fn from_chunks_runs_the_iterator_lazily_and_stops_when_closed() {
        use std::cell::Cell;
        use std::rc::Rc;

        let pulled = Rc::new(Cell::new(0));
        let counter = Rc::clone(&pulled);
        let chunks = (0..1000).map(move |n| {
            counter.set(counter.get() + 1);
            vec![b'a' + (n % 26) as u8; 3000]
        });
        let response = Response::from_chunks(200, chunks);
        assert_eq!(pulled.get(), 0, "nothing runs before the body is sent");

        let PendingBody::Streaming(producer) = response.into_outgoing().2 else {
            panic!("a streaming body");
        };
        let mut writer = BodyWriter::memory(10_000);
        assert!(producer(&mut writer).is_err());
        // Chunks 1-3 fit (9000 bytes); the 4th fails, and the iterator is not pulled again.
        assert_eq!(pulled.get(), 4);
        let (bytes, pieces) = writer.into_memory().unwrap();
        assert_eq!(bytes.len(), 9000);
        assert_eq!(pieces, [3000, 3000, 3000]);
    }

    #[test]
    fn buffered_and_empty_bodies_go_out_buffered() {
        let PendingBody::Buffered(bytes) = Response::text(200, "x").into_outgoing().2 else {
            panic!("a buffered body");
        };
        assert_eq!(bytes, b"x");
        assert!(
            Response::from_chunks(204, Vec::<Vec<u8>>::new())
                .into_body_bytes()
                .is_empty()
        );
    }
}
