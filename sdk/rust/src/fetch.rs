//! Blocking outgoing HTTP (`wasi:http/outgoing-handler`, feature `http-client`, granted by
//! the manifest capability `http` for the origins in its allow-list).
//!
//! ```no_run
//! use palisade_sdk::fetch::{self, FetchError, Request};
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Rate { eur: f64 }
//!
//! fn rate() -> Result<f64, FetchError> {
//!     let response = fetch::fetch(
//!         Request::get("https://rates.example.com/v1/usd?fields=eur")
//!             .with_header("accept", "application/json")
//!             .with_timeout(Duration::from_secs(2)),
//!     )?;
//!     if response.status() != 200 {
//!         return Err(FetchError::Failed(format!("rates answered {}", response.status())));
//!     }
//!     let rate: Rate = response
//!         .body_json()
//!         .map_err(|error| FetchError::Failed(error.to_string()))?;
//!     Ok(rate.eur)
//! }
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::bindings::handler::wasi::http::types::{ErrorCode, HeaderError, Method as WasiMethod};
#[cfg(not(palisade_fake_host))]
use crate::bindings::handler::wasi::http::types::{
    Fields, OutgoingRequest, RequestOptions, Scheme,
};
#[cfg(not(palisade_fake_host))]
use crate::bindings::http_client::wasi::http::outgoing_handler;
#[cfg(not(palisade_fake_host))]
use crate::body::{self, ReadError};
use crate::http::{Method, Response};

/// The largest response body [`fetch`] reads (16 MiB).
pub const MAX_RESPONSE_BODY_BYTES: usize = 16 * 1024 * 1024;

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Result<Vec<u8>, String>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request for `method` and an absolute `http://` or `https://` URL.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Ok(Vec::new()),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Request::new(Method::Put, url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Request::new(Method::Patch, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Request::new(Method::Delete, url)
    }

    /// Adds a header (names are case-insensitive; adding a name twice keeps both values).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Ok(body.into());
        self
    }

    /// Replaces the body with `value` as JSON and sets `content-type: application/json`.
    /// A value that cannot be serialized makes [`fetch`] fail with
    /// [`FetchError::InvalidRequest`].
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.headers.retain(|(name, _)| name != "content-type");
        self.headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        self.body = serde_json::to_vec(value)
            .map_err(|error| format!("the JSON body could not be serialized: {error}"));
        self
    }

    /// Bounds connecting, waiting for the first response byte and every pause between
    /// response bytes by `timeout` each.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not an absolute `http://` or `https://` URL the client can send.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A method, header or body the host refuses.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The origin is not in the allow-list of the manifest's `http` capability, or the
    /// operator forbids it.
    #[error(
        "request to `{url}` denied: the origin is not allowed by the manifest's `http` capability"
    )]
    Denied {
        /// The URL as given.
        url: String,
    },
    /// The host name resolves only to addresses the platform forbids (loopback, private
    /// networks, cloud metadata endpoints...), unless the operator allows them.
    #[error("request to `{url}` denied: its host resolves only to addresses the platform forbids")]
    Prohibited {
        /// The URL as given.
        url: String,
    },
    /// Connecting, the first response byte or a later one took longer than allowed, or
    /// the call's deadline came first.
    #[error("request to `{url}` timed out")]
    Timeout {
        /// The URL as given.
        url: String,
    },
    /// The response body is larger than the host's egress limit or
    /// [`MAX_RESPONSE_BODY_BYTES`].
    #[error("the response body exceeds the size limit")]
    ResponseTooLarge,
    /// Any other failure (DNS, TLS, connection, protocol); the host's description.
    #[error("request failed: {0}")]
    Failed(String),
}

/// The parts of an absolute URL that an outgoing request carries.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: String,
}

fn parse_url(url: &str) -> Result<Target<'_>, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected an absolute URL such as `https://host/path`"))?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(invalid("the scheme must be `http` or `https`"));
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.is_empty() {
        return Err(invalid("the host is missing"));
    }
    if authority.contains('@') {
        return Err(invalid("user information in URLs is not supported"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "URLs must not contain whitespace or control characters",
        ));
    }
    let path_with_query = if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    };
    Ok(Target {
        https,
        authority,
        path_with_query,
    })
}

#[cfg_attr(palisade_fake_host, allow(dead_code))]
fn to_wasi_method(method: &Method) -> WasiMethod {
    match method {
        Method::Get => WasiMethod::Get,
        Method::Head => WasiMethod::Head,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Delete => WasiMethod::Delete,
        Method::Connect => WasiMethod::Connect,
        Method::Options => WasiMethod::Options,
        Method::Trace => WasiMethod::Trace,
        Method::Patch => WasiMethod::Patch,
        Method::Other(other) => WasiMethod::Other(other.clone()),
    }
}

fn from_error_code(url: &str, code: ErrorCode) -> FetchError {
    match code {
        ErrorCode::HttpRequestDenied => FetchError::Denied {
            url: url.to_owned(),
        },
        ErrorCode::DestinationIpProhibited => FetchError::Prohibited {
            url: url.to_owned(),
        },
        ErrorCode::HttpResponseBodySize(_) => FetchError::ResponseTooLarge,
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => FetchError::Timeout {
            url: url.to_owned(),
        },
        other => FetchError::Failed(format!("{other:?}")),
    }
}

/// Classifies a failure while reading the response body from the host's description
/// (body stream errors carry no `error-code`).
#[cfg_attr(palisade_fake_host, allow(dead_code))]
fn body_error(url: &str, message: String) -> FetchError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("response body size exceeds limit") {
        FetchError::ResponseTooLarge
    } else if lower.contains("timeout") || lower.contains("timed out") {
        FetchError::Timeout {
            url: url.to_owned(),
        }
    } else {
        FetchError::Failed(format!("the response body could not be read: {message}"))
    }
}

fn header_error(name: &str, error: HeaderError) -> FetchError {
    let reason = match error {
        HeaderError::InvalidSyntax => "is not a valid header",
        HeaderError::Forbidden => "is not allowed in an outgoing request",
        HeaderError::Immutable => "could not be set",
    };
    FetchError::InvalidRequest(format!("the header `{name}` {reason}"))
}

/// Sends `request` and waits for the whole response, body included (at most
/// [`MAX_RESPONSE_BODY_BYTES`]). Any status is a successful response; check
/// [`Response::status`]. Response header values that are not UTF-8 are converted lossily.
pub fn fetch(request: Request) -> Result<Response, FetchError> {
    let url = request.url.as_str();
    let target = parse_url(url)?;
    let body = request.body.clone().map_err(FetchError::InvalidRequest)?;
    #[cfg(palisade_fake_host)]
    {
        use crate::testing::egress::{Refusal, send};
        send(
            &request.method,
            url,
            target.https,
            target.authority,
            &request.headers,
            &body,
        )
        .map_err(|refusal| match refusal {
            Refusal::Header(name, error) => header_error(&name, error),
            Refusal::Code(code) => from_error_code(url, code),
            Refusal::Fetch(error) => error,
        })
    }
    #[cfg(not(palisade_fake_host))]
    send(&request, url, &target, &body)
}

/// Sends the request through `wasi:http/outgoing-handler` and reads the whole response.
#[cfg(not(palisade_fake_host))]
fn send(
    request: &Request,
    url: &str,
    target: &Target<'_>,
    body: &[u8],
) -> Result<Response, FetchError> {
    let fields = Fields::new();
    for (name, value) in &request.headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|error| header_error(name, error))?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let refused = |what: &str| FetchError::InvalidRequest(format!("the host refused the {what}"));
    outgoing
        .set_method(&to_wasi_method(&request.method))
        .map_err(|()| refused(&format!("method `{}`", request.method)))?;
    let scheme = if target.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(target.authority))
        .map_err(|()| refused(&format!("host `{}`", target.authority)))?;
    outgoing
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| refused(&format!("path `{}`", target.path_with_query)))?;
    let outgoing_body = outgoing.body().map_err(|()| refused("body"))?;

    let options = match request.timeout {
        Some(timeout) => {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            options
                .set_connect_timeout(Some(nanos))
                .and_then(|()| options.set_first_byte_timeout(Some(nanos)))
                .and_then(|()| options.set_between_bytes_timeout(Some(nanos)))
                .map_err(|()| refused("timeout"))?;
            Some(options)
        }
        None => None,
    };

    let pending =
        outgoing_handler::handle(outgoing, options).map_err(|code| from_error_code(url, code))?;
    body::write_all(outgoing_body, &body).map_err(FetchError::Failed)?;
    pending.subscribe().block();
    let incoming = match pending.get() {
        Some(Ok(Ok(incoming))) => incoming,
        Some(Ok(Err(code))) => return Err(from_error_code(url, code)),
        Some(Err(())) | None => {
            return Err(FetchError::Failed(
                "the response was not available after waiting for it".to_owned(),
            ));
        }
    };

    let mut response = Response::new(incoming.status());
    for (name, value) in incoming.headers().entries() {
        response = response.append_header(&name, String::from_utf8_lossy(&value));
    }
    let incoming_body = incoming
        .consume()
        .map_err(|()| FetchError::Failed("the response body could not be opened".to_owned()))?;
    let bytes =
        body::read_all(incoming_body, MAX_RESPONSE_BODY_BYTES).map_err(|error| match error {
            ReadError::TooLarge => FetchError::ResponseTooLarge,
            ReadError::Unavailable => {
                FetchError::Failed("the response body could not be opened".to_owned())
            }
            ReadError::Failed(message) => body_error(url, message),
        })?;
    Ok(response.with_body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_urls() {
        assert_eq!(
            parse_url("https://api.example.com/v1/items?x=1#frag").unwrap(),
            Target {
                https: true,
                authority: "api.example.com",
                path_with_query: "/v1/items?x=1".to_owned()
            }
        );
        assert_eq!(
            parse_url("HTTP://localhost:8080").unwrap(),
            Target {
                https: false,
                authority: "localhost:8080",
                path_with_query: "/".to_owned()
            }
        );
        assert_eq!(parse_url("http://h?q=1").unwrap().path_with_query, "/?q=1");
    }

    #[test]
    fn refuses_unusable_urls() {
        for (url, reason) in [
            ("/relative", "absolute URL"),
            ("ftp://host/file", "`http` or `https`"),
            ("https:///path", "host is missing"),
            ("https://user:pw@host/", "user information"),
            ("https://host/a b", "whitespace"),
        ] {
            let error = parse_url(url).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(url), "{message}");
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn builder_collects_the_request() {
        let request = Request::post("https://h/x")
            .with_header("X-Ext-A", "1")
            .with_json(&serde_json::json!({"a": 1}))
            .with_timeout(Duration::from_millis(250));
        assert_eq!(request.method(), &Method::Post);
        assert_eq!(request.url(), "https://h/x");
        assert_eq!(
            request.headers,
            [
                ("x-ext-a".to_owned(), "1".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned())
            ]
        );
        assert_eq!(request.body, Ok(br#"{"a":1}"#.to_vec()));
        assert_eq!(request.timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn unserializable_json_body_is_reported() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1], 1);
        let request = Request::put("https://h/").with_json(&map);
        assert!(
            request
                .body
                .unwrap_err()
                .contains("could not be serialized")
        );
    }

    #[test]
    fn error_codes_map_to_errors() {
        assert_eq!(
            from_error_code("https://h/", ErrorCode::HttpRequestDenied),
            FetchError::Denied {
                url: "https://h/".into()
            }
        );
        assert_eq!(
            from_error_code("https://h/", ErrorCode::ConnectionTimeout),
            FetchError::Timeout {
                url: "https://h/".into()
            }
        );
        assert_eq!(
            from_error_code("https://h/", ErrorCode::DestinationIpProhibited),
            FetchError::Prohibited {
                url: "https://h/".into()
            }
        );
        assert_eq!(
            from_error_code("https://h/", ErrorCode::HttpResponseBodySize(Some(10))),
            FetchError::ResponseTooLarge
        );
        assert!(matches!(
            from_error_code("https://h/", ErrorCode::ConnectionRefused),
            FetchError::Failed(message) if message.contains("ConnectionRefused")
        ));
    }

    #[test]
    fn body_errors_are_classified_from_the_host_description() {
        assert_eq!(
            body_error("u", "HTTP response body size exceeds limit: 8 bytes".into()),
            FetchError::ResponseTooLarge
        );
        assert_eq!(
            body_error("u", "connection read timeout".into()),
            FetchError::Timeout { url: "u".into() }
        );
        assert!(matches!(
            body_error("u", "connection reset".into()),
            FetchError::Failed(message) if message.contains("connection reset")
        ));
    }

    #[test]
    fn methods_map_to_wasi() {
        assert!(matches!(to_wasi_method(&Method::Get), WasiMethod::Get));
        assert!(matches!(to_wasi_method(&Method::Patch), WasiMethod::Patch));
        assert!(matches!(
            to_wasi_method(&Method::Other("PURGE".into())),
            WasiMethod::Other(name) if name == "PURGE"
        ));
    }
}
