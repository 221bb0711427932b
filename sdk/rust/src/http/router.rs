//! Routing requests to handlers by method and path pattern.

use percent_encoding::percent_decode_str;

use super::reader::read_whole;
use super::{BodyReader, Method, Request, Response};

enum Handler {
    /// Receives the request with its whole body.
    Buffered(Box<dyn Fn(Request) -> Response>),
    /// Receives the request without body, and the body as a stream.
    Streaming(Box<dyn Fn(Request, BodyReader) -> Response>),
}

/// Dispatches requests to handlers by method and path.
///
/// Paths are `/`-separated segments; a segment `:name` matches any one non-empty segment
/// and makes it available as [`Request::param`]`("name")`, percent-decoded. When several
/// routes match, the one with a literal segment at the first position where they differ
/// wins (`/items/new` before `/items/:id`), whatever the order they were added in.
///
/// * No route matches the path: 404 `{"error":"not_found"}`.
/// * Routes match the path but not the method: 405 `{"error":"method_not_allowed"}` with an
///   `allow` header listing the methods that would match.
/// * `HEAD` is answered by the `GET` route (unless a `HEAD` route exists), without body.
/// * A path parameter that is not valid UTF-8 after decoding: 400.
///
/// Handlers added with [`route`](Self::route), [`get`](Self::get) and the like receive the
/// request with its whole body; handlers added with
/// [`route_streaming`](Self::route_streaming) receive the body as a [`BodyReader`]. To
/// stream request bodies from the host, export the router with
/// [`export_streaming_handler!`](crate::export_streaming_handler) and dispatch with
/// [`handle_streaming`](Self::handle_streaming); see there.
///
/// ```
/// use palisade_sdk::http::{Method, Request, Response, Router};
///
/// fn show(request: Request) -> Response {
///     let id = request.param("id").unwrap_or_default();
///     Response::text(200, format!("item {id}"))
/// }
///
/// let router = Router::new()
///     .get("/items/:id", show)
///     .post("/items", |request: Request| Response::new(201).with_body(request.into_body()));
///
/// let response = router.handle(Request::new(Method::Get, "/items/a%20b"));
/// assert_eq!(response.body(), b"item a b");
///
/// let response = router.handle(Request::new(Method::Delete, "/items/1"));
/// assert_eq!(response.status(), 405);
/// assert_eq!(response.header("allow"), Some("GET, HEAD"));
///
/// assert_eq!(router.handle(Request::new(Method::Get, "/nothing")).status(), 404);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

struct Route {
    method: Method,
    pattern: Pattern,
    handler: Handler,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug)]
struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a route pattern; panics on a malformed one (a programming error).
    fn parse(source: &str) -> Pattern {
        let Some(rest) = source.strip_prefix('/') else {
            panic!("route path `{source}` must start with `/`");
        };
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            if let Some(name) = segment.strip_prefix(':') {
                if name.is_empty() {
                    panic!("route path `{source}` has a `:` segment without a parameter name");
                }
                if segments.contains(&Segment::Param(name.to_owned())) {
                    panic!("route path `{source}` declares parameter `:{name}` twice");
                }
                segments.push(Segment::Param(name.to_owned()));
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Pattern {
            source: source.to_owned(),
            segments,
        }
    }

    /// Whether two patterns match exactly the same paths.
    fn same_shape(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    /// Matches `path` (without the leading `/`) and returns the raw parameter values.
    fn matches<'p>(&self, path_segments: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        if path_segments.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, actual) in self.segments.iter().zip(path_segments) {
            match segment {
                Segment::Literal(literal) if literal == actual => {}
                Segment::Param(name) if !actual.is_empty() => params.push((name.as_str(), *actual)),
                _ => return None,
            }
        }
        Some(params)
    }

    /// Literal segments rank before parameters, position by position.
    fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|segment| matches!(segment, Segment::Literal(_)))
            .collect()
    }
}

impl Router {
    /// A router without routes.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route for `method` and `path`.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`, has a `:` segment without a name, declares a
    /// parameter twice, or the same method already has a route matching the same paths.
    pub fn route(
        self,
        method: Method,
        path: &str,
        handler: impl Fn(Request) -> Response + 'static,
    ) -> Self {
        self.add(method, path, Handler::Buffered(Box::new(handler)))
    }

    /// Adds a route whose handler reads the request body as a stream: it receives the
    /// request without body (its [`body`](Request::body) is empty) and a [`BodyReader`].
    ///
    /// Under [`handle_streaming`](Self::handle_streaming) the reader is the host's body
    /// stream, read as it arrives and without the SDK's size limit; under
    /// [`handle`](Self::handle) (as in native tests) it reads the request's buffered body.
    ///
    /// ```
    /// use std::io::{BufRead, BufReader};
    /// use palisade_sdk::http::{BodyReader, Method, Request, Response, Router};
    ///
    /// fn count_lines(_request: Request, body: BodyReader) -> Response {
    ///     match BufReader::new(body).lines().try_fold(0u64, |n, line| line.map(|_| n + 1)) {
    ///         Ok(lines) => Response::text(200, lines.to_string()),
    ///         Err(error) => Response::bad_request(format!("unreadable body: {error}")),
    ///     }
    /// }
    ///
    /// let router = Router::new().post_streaming("/lines", count_lines);
    /// let response = router.handle(Request::new(Method::Post, "/lines").with_body("a\nb\nc\n"));
    /// assert_eq!(response.body(), b"3");
    /// ```
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route).
    pub fn route_streaming(
        self,
        method: Method,
        path: &str,
        handler: impl Fn(Request, BodyReader) -> Response + 'static,
    ) -> Self {
        self.add(method, path, Handler::Streaming(Box::new(handler)))
    }

    /// Adds a `POST` route that streams the request body. See
    /// [`route_streaming`](Self::route_streaming).
    pub fn post_streaming(
        self,
        path: &str,
        handler: impl Fn(Request, BodyReader) -> Response + 'static,
    ) -> Self {
        self.route_streaming(Method::Post, path, handler)
    }

    /// Adds a `PUT` route that streams the request body. See
    /// [`route_streaming`](Self::route_streaming).
    pub fn put_streaming(
        self,
        path: &str,
        handler: impl Fn(Request, BodyReader) -> Response + 'static,
    ) -> Self {
        self.route_streaming(Method::Put, path, handler)
    }

    fn add(mut self, method: Method, path: &str, handler: Handler) -> Self {
        let pattern = Pattern::parse(path);
        if let Some(existing) = self
            .routes
            .iter()
            .find(|route| route.method == method && route.pattern.same_shape(&pattern))
        {
            panic!(
                "route {method} {path} overlaps route {method} {}",
                existing.pattern.source
            );
        }
        self.routes.push(Route {
            method,
            pattern,
            handler,
        });
        self
    }

    /// Adds a `GET` route (which also answers `HEAD`). See [`route`](Self::route).
    pub fn get(self, path: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Get, path, handler)
    }

    /// Adds a `POST` route. See [`route`](Self::route).
    pub fn post(self, path: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Post, path, handler)
    }

    /// Adds a `PUT` route. See [`route`](Self::route).
    pub fn put(self, path: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Put, path, handler)
    }

    /// Adds a `PATCH` route. See [`route`](Self::route).
    pub fn patch(self, path: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Patch, path, handler)
    }

    /// Adds a `DELETE` route. See [`route`](Self::route).
    pub fn delete(self, path: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Delete, path, handler)
    }

    /// Routes `request` to its handler and returns the handler's response, or the 404,
    /// 405 or 400 described on [`Router`]. A streaming route reads the request's buffered
    /// body through a [`BodyReader`].
    pub fn handle(&self, request: Request) -> Response {
        self.dispatch(request, None)
    }

    /// Routes a request whose body is still a stream, as
    /// [`export_streaming_handler!`](crate::export_streaming_handler) hands it over
    /// (`request` without body, `body` the host's stream).
    ///
    /// A streaming route receives `body` as it is. For any other route the router first
    /// reads the body whole, exactly as [`export_handler!`](crate::export_handler) would:
    /// over [`MAX_REQUEST_BODY_BYTES`](crate::MAX_REQUEST_BODY_BYTES) (declared in
    /// `content-length`, or read) it answers 413, on a read failure 400, without calling the
    /// handler. A request that matches no route is answered without reading the body.
    ///
    /// ```
    /// use palisade_sdk::http::{BodyReader, Request, Response, Router};
    ///
    /// fn router() -> Router {
    ///     Router::new()
    ///         .get("/items/:id", |request: Request| Response::text(200, request.param("id").unwrap_or_default().to_owned()))
    ///         .post_streaming("/uploads", |_request: Request, body: BodyReader| {
    ///             let mut sink = std::io::sink();
    ///             match std::io::copy(&mut { body }, &mut sink) {
    ///                 Ok(bytes) => Response::text(200, format!("{bytes} bytes")),
    ///                 Err(error) => Response::bad_request(error.to_string()),
    ///             }
    ///         })
    /// }
    ///
    /// fn handle(request: Request, body: BodyReader) -> Response {
    ///     router().handle_streaming(request, body)
    /// }
    ///
    /// palisade_sdk::export_streaming_handler!(handle);
    /// # fn main() {}
    /// ```
    pub fn handle_streaming(&self, request: Request, body: BodyReader) -> Response {
        self.dispatch(request, Some(body))
    }

    fn dispatch(&self, mut request: Request, stream: Option<BodyReader>) -> Response {
        let path = request.path().to_owned();
        let path_segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
        let matching: Vec<(&Route, Vec<(&str, &str)>)> = self
            .routes
            .iter()
            .filter_map(|route| {
                route
                    .pattern
                    .matches(&path_segments)
                    .map(|params| (route, params))
            })
            .collect();
        if matching.is_empty() {
            return Response::not_found();
        }

        let method = request.method().clone();
        let best = |wanted: &Method| {
            matching
                .iter()
                .filter(|(route, _)| route.method == *wanted)
                .max_by_key(|(route, _)| route.pattern.specificity())
        };
        let (chosen, strip_body) = match best(&method) {
            Some(found) => (found, false),
            None if method == Method::Head => match best(&Method::Get) {
                Some(found) => (found, true),
                None => return method_not_allowed(&matching),
            },
            None => return method_not_allowed(&matching),
        };

        let (route, raw_params) = chosen;
        let mut params = Vec::with_capacity(raw_params.len());
        for (name, raw) in raw_params {
            match percent_decode_str(raw).decode_utf8() {
                Ok(value) => params.push(((*name).to_owned(), value.into_owned())),
                Err(_) => {
                    return Response::bad_request(format!(
                        "path parameter `{name}` is not valid UTF-8 after percent-decoding"
                    ));
                }
            }
        }
        request.set_params(params);
        let mut response = match (&route.handler, stream) {
            (Handler::Buffered(handler), None) => handler(request),
            (Handler::Buffered(handler), Some(stream)) => {
                match read_whole(&request, stream, crate::MAX_REQUEST_BODY_BYTES) {
                    Ok(bytes) => handler(request.with_body(bytes)),
                    Err(refusal) => refusal,
                }
            }
            (Handler::Streaming(handler), None) => {
                let body = BodyReader::from_bytes(request.take_body());
                handler(request, body)
            }
            (Handler::Streaming(handler), Some(stream)) => handler(request, stream),
        };
        if strip_body {
            response.remove_header("content-length");
            response = response.with_body(Vec::new());
        }
        response
    }
}

fn method_not_allowed(matching: &[(&Route, Vec<(&str, &str)>)]) -> Response {
    let mut allowed: Vec<&str> = matching
        .iter()
        .map(|(route, _)| route.method.as_str())
        .collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.sort_unstable();
    allowed.dedup();
    Response::error_json(405, "method_not_allowed", None).with_header("allow", allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn echo_params(request: Request) -> Response {
        let params: serde_json::Map<String, Value> = request
            .params()
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
            .collect();
        Response::json(200, &params)
    }

    fn label(text: &'static str) -> impl Fn(Request) -> Response {
        move |_| Response::text(200, text)
    }

    fn body_of(response: &Response) -> String {
        String::from_utf8(response.body().to_vec()).unwrap()
    }

    #[test]
    fn routes_by_method_and_path() {
        let router = Router::new()
            .get("/a", label("get a"))
            .post("/a", label("post a"))
            .put("/a", label("put a"))
            .patch("/a", label("patch a"))
            .delete("/a", label("delete a"))
            .get("/b", label("get b"));
        for (method, expected) in [
            (Method::Get, "get a"),
            (Method::Post, "post a"),
            (Method::Put, "put a"),
            (Method::Patch, "patch a"),
            (Method::Delete, "delete a"),
        ] {
            let response = router.handle(Request::new(method, "/a"));
            assert_eq!(response.status(), 200);
            assert_eq!(body_of(&response), expected);
        }
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/b"))),
            "get b"
        );
    }

    #[test]
    fn unknown_path_is_404_json() {
        let router = Router::new().get("/a", label("a"));
        let response = router.handle(Request::new(Method::Get, "/b"));
        assert_eq!(response.status(), 404);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "not_found"})
        );
        assert_eq!(
            Router::new()
                .handle(Request::new(Method::Get, "/"))
                .status(),
            404
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let router = Router::new()
            .get("/items/:id", label("get"))
            .delete("/items/:id", label("delete"))
            .post("/items", label("post"));
        let response = router.handle(Request::new(Method::Put, "/items/7"));
        assert_eq!(response.status(), 405);
        assert_eq!(response.header("allow"), Some("DELETE, GET, HEAD"));
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"error": "method_not_allowed"})
        );

        let response = router.handle(Request::new(Method::Get, "/items"));
        assert_eq!(response.status(), 405);
        assert_eq!(response.header("allow"), Some("POST"));

        let response = router.handle(Request::new(Method::Head, "/items"));
        assert_eq!(response.status(), 405);
    }

    #[test]
    fn params_are_extracted_and_decoded() {
        let router = Router::new().get("/users/:user/notes/:note", echo_params);
        let response = router.handle(Request::new(
            Method::Get,
            "/users/J%C3%BCrgen/notes/a%2Fb?x=1",
        ));
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.body_json::<Value>().unwrap(),
            json!({"user": "Jürgen", "note": "a/b"})
        );
    }

    #[test]
    fn params_that_are_not_utf8_are_400() {
        let router = Router::new().get("/users/:user", echo_params);
        let response = router.handle(Request::new(Method::Get, "/users/%FF"));
        assert_eq!(response.status(), 400);
        let body: Value = response.body_json().unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("`user`"));
    }

    #[test]
    fn params_must_not_be_empty_and_segment_counts_must_agree() {
        let router = Router::new().get("/hello/:name", echo_params);
        assert_eq!(
            router.handle(Request::new(Method::Get, "/hello/")).status(),
            404
        );
        assert_eq!(
            router.handle(Request::new(Method::Get, "/hello")).status(),
            404
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Get, "/hello/a/b"))
                .status(),
            404
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Get, "/hello/a/"))
                .status(),
            404
        );
        assert_eq!(
            router
                .handle(Request::new(Method::Get, "/hello/a"))
                .status(),
            200
        );
    }

    #[test]
    fn literal_segments_win_over_params_regardless_of_order() {
        let router = Router::new()
            .get("/items/:id", label("param"))
            .get("/items/new", label("literal"))
            .get("/:kind/new", label("kind"));
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/items/new"))),
            "literal"
        );
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/items/3"))),
            "param"
        );
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/users/new"))),
            "kind"
        );
    }

    #[test]
    fn root_route() {
        let router = Router::new().get("/", label("root"));
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/"))),
            "root"
        );
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, ""))),
            "root"
        );
        assert_eq!(router.handle(Request::new(Method::Get, "/x")).status(), 404);
    }

    #[test]
    fn head_is_served_by_get_without_body() {
        let router = Router::new().get("/a", |_| {
            Response::text(200, "body")
                .with_header("content-length", "4")
                .with_header("x-ext-kept", "yes")
        });
        let response = router.handle(Request::new(Method::Head, "/a"));
        assert_eq!(response.status(), 200);
        assert!(response.body().is_empty());
        assert_eq!(response.header("x-ext-kept"), Some("yes"));
        assert_eq!(response.header("content-length"), None);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn explicit_head_route_wins_over_get() {
        let router = Router::new()
            .get("/a", label("get"))
            .route(Method::Head, "/a", |_| Response::new(299));
        assert_eq!(
            router.handle(Request::new(Method::Head, "/a")).status(),
            299
        );
    }

    #[test]
    fn closures_can_capture_state() {
        let greeting = String::from("hi");
        let router = Router::new().get("/", move |_| Response::text(200, greeting.clone()));
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Get, "/"))),
            "hi"
        );
    }

    #[test]
    fn handler_receives_the_request() {
        let router = Router::new().post("/echo/:id", |request: Request| {
            assert_eq!(request.method(), &Method::Post);
            assert_eq!(request.query_param("q").as_deref(), Some("1"));
            assert_eq!(request.header("x-a"), Some("b"));
            assert_eq!(request.param("id"), Some("9"));
            Response::new(200).with_body(request.into_body())
        });
        let response = router.handle(
            Request::new(Method::Post, "/echo/9?q=1")
                .with_header("X-A", "b")
                .with_body("payload"),
        );
        assert_eq!(body_of(&response), "payload");
    }

    #[test]
    fn other_methods_can_be_routed() {
        let router = Router::new().route(Method::Other("PURGE".into()), "/cache", label("purged"));
        let response = router.handle(Request::new(Method::Other("PURGE".into()), "/cache"));
        assert_eq!(body_of(&response), "purged");
        let response = router.handle(Request::new(Method::Get, "/cache"));
        assert_eq!(response.header("allow"), Some("PURGE"));
    }

    #[test]
    #[should_panic(expected = "must start with `/`")]
    fn pattern_without_leading_slash_panics() {
        let _ = Router::new().get("hello", label("x"));
    }

    #[test]
    #[should_panic(expected = "without a parameter name")]
    fn pattern_with_empty_param_panics() {
        let _ = Router::new().get("/a/:", label("x"));
    }

    #[test]
    #[should_panic(expected = "declares parameter `:id` twice")]
    fn pattern_with_duplicate_param_panics() {
        let _ = Router::new().get("/:id/:id", label("x"));
    }

    #[test]
    #[should_panic(expected = "route GET /a/:y overlaps route GET /a/:x")]
    fn overlapping_routes_panic() {
        let _ = Router::new()
            .get("/a/:x", label("x"))
            .get("/a/:y", label("y"));
    }

    #[test]
    fn same_pattern_with_other_methods_is_fine() {
        let router = Router::new()
            .get("/a/:x", label("x"))
            .post("/a/:y", label("y"));
        assert_eq!(
            body_of(&router.handle(Request::new(Method::Post, "/a/1"))),
            "y"
        );
    }

    fn count_bytes(request: Request, mut body: BodyReader) -> Response {
        assert!(request.body().is_empty(), "the body comes as a stream");
        match std::io::copy(&mut body, &mut std::io::sink()) {
            Ok(bytes) => Response::text(200, bytes.to_string()),
            Err(error) => Response::bad_request(error.to_string()),
        }
    }

    #[test]
    fn streaming_routes_read_a_buffered_body_through_a_reader() {
        let router = Router::new()
            .post_streaming("/count", count_bytes)
            .put_streaming("/count", count_bytes)
            .route_streaming(Method::Patch, "/count", count_bytes);
        for method in [Method::Post, Method::Put, Method::Patch] {
            let response = router.handle(Request::new(method, "/count").with_body("12345"));
            assert_eq!(body_of(&response), "5");
        }
        let response = router.handle(Request::new(Method::Get, "/count"));
        assert_eq!(response.header("allow"), Some("PATCH, POST, PUT"));
    }

    #[test]
    #[should_panic(expected = "route POST /a/:y overlaps route POST /a/:x")]
    fn streaming_and_buffered_routes_overlap_like_any_other() {
        let _ = Router::new()
            .post("/a/:x", label("x"))
            .post_streaming("/a/:y", count_bytes);
    }

    #[test]
    fn handle_streaming_passes_the_stream_or_reads_it_whole() {
        let router = Router::new()
            .post_streaming("/count", count_bytes)
            .post("/echo", |request: Request| {
                Response::new(200).with_body(request.into_body())
            });

        let response = router.handle_streaming(
            Request::new(Method::Post, "/count"),
            BodyReader::from_bytes(vec![0u8; 100_000]),
        );
        assert_eq!(body_of(&response), "100000");

        let response = router.handle_streaming(
            Request::new(Method::Post, "/echo"),
            BodyReader::from_bytes("whole"),
        );
        assert_eq!(body_of(&response), "whole");

        let too_large = (crate::MAX_REQUEST_BODY_BYTES + 1).to_string();
        let response = router.handle_streaming(
            Request::new(Method::Post, "/echo").with_header("content-length", too_large),
            BodyReader::from_bytes("x"),
        );
        assert_eq!(response.status(), 413);
        assert_eq!(
            response.body_json::<Value>().unwrap()["error"],
            "payload_too_large"
        );

        let response = router.handle_streaming(
            Request::new(Method::Post, "/nothing"),
            BodyReader::from_bytes("x"),
        );
        assert_eq!(response.status(), 404);
    }

    #[test]
    fn handlers_can_return_streaming_responses_and_head_drops_them() {
        let router = Router::new().get("/ticks", |_| {
            Response::from_chunks(200, ["a", "b", "c"])
                .with_header("content-type", "text/plain; charset=utf-8")
        });
        let response = router.handle(Request::new(Method::Get, "/ticks"));
        assert!(response.is_streaming());
        assert_eq!(response.into_body_bytes(), b"abc");

        let response = router.handle(Request::new(Method::Head, "/ticks"));
        assert!(!response.is_streaming());
        assert!(response.body().is_empty());
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
}
