//! The incoming request as a handler sees it.

use serde::de::DeserializeOwned;

use super::Method;

/// An HTTP request to the extension: method, path, query string, headers and the whole
/// body, plus the path parameters filled in by [`Router`](super::Router).
///
/// Requests reach a handler through [`export_handler!`](crate::export_handler) with the
/// whole body read. A streaming handler
/// ([`export_streaming_handler!`](crate::export_streaming_handler),
/// [`Router::route_streaming`](super::Router::route_streaming)) gets the request with an
/// empty body and the body itself as a [`BodyReader`](super::BodyReader). In unit tests
/// build requests with [`Request::new`]:
///
/// ```
/// use palisade_sdk::http::{Method, Request};
///
/// let request = Request::new(Method::Post, "/notes?draft=true&tag=a%20b")
///     .with_header("Content-Type", "application/json")
///     .with_body(r#"{"title":"hi"}"#);
///
/// assert_eq!(request.path(), "/notes");
/// assert_eq!(request.query(), "draft=true&tag=a%20b");
/// assert_eq!(request.query_param("tag").as_deref(), Some("a b"));
/// assert_eq!(request.header("content-type"), Some("application/json"));
///
/// #[derive(serde::Deserialize)]
/// struct Note { title: String }
/// let note: Note = request.json().unwrap();
/// assert_eq!(note.title, "hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    params: Vec<(String, String)>,
}

impl Request {
    /// Creates a request without headers or body. `path_and_query` is split at the first
    /// `?` into [`path`](Self::path) and [`query`](Self::query); an empty path becomes `/`.
    pub fn new(method: Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        Request {
            method,
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds a header. Names are case-insensitive and stored in lower case; adding a name
    /// twice keeps both values, in order.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, starting with `/`, still percent-encoded, without the query string.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string without the leading `?`; empty when there is none.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of the query parameter `name`, decoded as in an HTML form
    /// (`+` is a space, `%XX` escapes are decoded, invalid UTF-8 is replaced).
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Every query parameter in order, decoded like [`query_param`](Self::query_param).
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of header `name` (case-insensitive) as raw bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Every header as `(lower-case name, value)`, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    /// The whole request body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the body out of the request.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// Parses the body as JSON into `T`.
    ///
    /// ```
    /// # use palisade_sdk::http::{Method, Request, Response};
    /// fn create(request: Request) -> Response {
    ///     let value: serde_json::Value = match request.json() {
    ///         Ok(value) => value,
    ///         Err(error) => return Response::bad_request(format!("invalid JSON body: {error}")),
    ///     };
    ///     Response::json(201, &value)
    /// }
    /// assert_eq!(create(Request::new(Method::Post, "/").with_body("{")).status(), 400);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The value of the router path parameter `name` (declared as `:name` in the route),
    /// percent-decoded. `None` outside a [`Router`](super::Router) or for an unknown name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every router path parameter as `(name, decoded value)`, in route order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    pub(crate) fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    pub(crate) fn set_params(&mut self, params: Vec<(String, String)>) {
        self.params = params;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_path_and_query() {
        let request = Request::new(Method::Get, "/a/b?x=1&y=2");
        assert_eq!(request.path(), "/a/b");
        assert_eq!(request.query(), "x=1&y=2");

        let request = Request::new(Method::Get, "/a/b");
        assert_eq!(request.query(), "");

        let request = Request::new(Method::Get, "?x=1");
        assert_eq!(request.path(), "/");
        assert_eq!(request.query(), "x=1");

        let request = Request::new(Method::Get, "/a?b?c");
        assert_eq!(request.path(), "/a");
        assert_eq!(request.query(), "b?c");
    }

    #[test]
    fn query_params_are_decoded() {
        let request = Request::new(Method::Get, "/?q=a+b%21&q=second&empty=&flag");
        assert_eq!(request.query_param("q").as_deref(), Some("a b!"));
        assert_eq!(request.query_param("empty").as_deref(), Some(""));
        assert_eq!(request.query_param("flag").as_deref(), Some(""));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(
            request.query_params(),
            vec![
                ("q".to_owned(), "a b!".to_owned()),
                ("q".to_owned(), "second".to_owned()),
                ("empty".to_owned(), String::new()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let request = Request::new(Method::Get, "/")
            .with_header("X-Trace", "one")
            .with_header("x-trace", "two")
            .with_header("x-binary", vec![0xff, 0xfe]);
        assert_eq!(request.header("x-trace"), Some("one"));
        assert_eq!(request.header("X-TRACE"), Some("one"));
        assert_eq!(request.header("x-binary"), None);
        assert_eq!(request.header_bytes("X-Binary"), Some(&[0xff, 0xfe][..]));
        assert_eq!(request.header("absent"), None);
        let names: Vec<&str> = request.headers().map(|(name, _)| name).collect();
        assert_eq!(names, ["x-trace", "x-trace", "x-binary"]);
    }

    #[test]
    fn json_body_parses_and_reports_errors() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Body {
            n: u32,
        }
        let request = Request::new(Method::Post, "/").with_body(r#"{"n":7}"#);
        assert_eq!(request.json::<Body>().unwrap(), Body { n: 7 });

        let request = Request::new(Method::Post, "/").with_body(r#"{"n":"x"}"#);
        assert!(request.json::<Body>().is_err());

        let request = Request::new(Method::Post, "/");
        assert!(request.json::<Body>().is_err());
    }

    #[test]
    fn text_body_requires_utf8() {
        let request = Request::new(Method::Post, "/").with_body("héllo");
        assert_eq!(request.text().unwrap(), "héllo");
        let request = Request::new(Method::Post, "/").with_body(vec![0xc3]);
        assert!(request.text().is_err());
        assert_eq!(request.into_body(), vec![0xc3]);
    }

    #[test]
    fn params_are_empty_until_routed() {
        let mut request = Request::new(Method::Get, "/x");
        assert_eq!(request.param("id"), None);
        request.set_params(vec![("id".to_owned(), "42".to_owned())]);
        assert_eq!(request.param("id"), Some("42"));
        assert_eq!(request.param("other"), None);
        assert_eq!(request.params().len(), 1);
    }
}
