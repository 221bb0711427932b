//! The client side of the execute hop: one HTTP request to a runner's `/v1/execute/{path}`
//! over pooled keep-alive connections (TLS to an `https://` runner, through
//! [`palisade_protocol::tls::HopConnector`]), and the runner's `/healthz` check over the
//! same connections.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_protocol::hop::{self, EXECUTE_PREFIX};
use palisade_protocol::tls::{ClientTls, HopConnector};
use palisade_protocol::{ErrorCode, ExecuteStats};

/// How long to wait for a TCP connection to a runner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on a platform error body read from a runner (it is only drained, so that the
/// connection can be reused).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Idle connections kept per runner.
const POOL_IDLE_PER_RUNNER: usize = 256;

/// One call as it goes to a runner: what the gateway forwards of the caller's request.
#[derive(Debug)]
pub struct HopRequest {
    /// The method the guest sees.
    pub method: Method,
    /// The path inside the extension, with its query.
    pub path: String,
    /// The forwarded headers, the call's context and its service token.
    pub headers: HeaderMap,
    /// The caller's body.
    pub body: HopBody,
}

/// The caller's body, as the hop sends it.
#[derive(Debug, Clone)]
pub enum HopBody {
    /// Read whole before the call (small, or needed for a fingerprint): can be sent again.
    Buffered(Bytes),
    /// Streamed as it arrives. It can be sent again only while no attempt has started
    /// reading it (a runner that could not be reached).
    Streamed(SharedBody),
}

impl HopBody {
    /// The body for one attempt, or `None` once a previous attempt has read from it.
    fn attempt(&self) -> Option<Body> {
        match self {
            HopBody::Buffered(bytes) => Some(Body::from(bytes.clone())),
            HopBody::Streamed(shared) => shared.attempt().map(Body::new),
        }
    }
}

/// A streamed body that stays with the call until an attempt first reads from it.
#[derive(Debug, Clone)]
pub struct SharedBody {
    slot: Arc<Mutex<Option<Body>>>,
    hint: SizeHint,
}

impl SharedBody {
    /// Wraps `body`.
    pub fn new(body: Body) -> Self {
        let hint = http_body::Body::size_hint(&body);
        SharedBody {
            slot: Arc::new(Mutex::new(Some(body))),
            hint,
        }
    }

    fn attempt(&self) -> Option<Taking> {
        let present = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        present.then(|| Taking {
            slot: Arc::clone(&self.slot),
            body: None,
            hint: self.hint,
        })
    }
}

/// One attempt's hold on a [`SharedBody`]: takes it on the first read.
struct Taking {
    slot: Arc<Mutex<Option<Body>>>,
    body: Option<Body>,
    hint: SizeHint,
}

impl http_body::Body for Taking {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.body.is_none() {
            this.body = this
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            // Another attempt took it: this one cannot send it.
            None => Poll::Ready(Some(Err(axum::Error::new("request body already sent")))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// What a runner answered.
#[derive(Debug)]
pub enum RunnerReply {
    /// The guest's response head; the body streams, ending with the outcome trailers.
    Guest(http::Response<Incoming>),
    /// The platform answered instead of the guest.
    Platform {
        /// The runner's status.
        status: StatusCode,
        /// The stable code from `x-palisade-error` (or implied by the status).
        code: ErrorCode,
        /// The runner's `retry-after`, if any.
        retry_after: Option<HeaderValue>,
        /// What the call consumed before it failed, if the runner said.
        stats: Option<ExecuteStats>,
    },
}

/// Why no reply was obtained from a runner.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made.
    #[error("runner {url} unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The runner did not answer in time.
    #[error("runner {url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL called.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The exchange broke after the connection was made.
    #[error("runner {url} transport failure: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request could not be sent again: an earlier attempt already read its body.
    #[error("the request body was already sent to another runner")]
    BodyConsumed,
    /// The request could not be built.
    #[error("runner {url}: request not built: {reason}")]
    Request {
        /// The URL called.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a runner client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RunnerClientError {
    /// No runner URL is configured.
    #[error("runner_urls is empty: at least one runner is needed")]
    NoRunners,
    /// The configured runner URL is not usable: not `http://` or `https://`, `https://`
    /// without the gateway's runner TLS, or `http://` with it.
    #[error("runner_url `{url}` is not usable: {reason}")]
    BadUrl {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The runner TLS files do not load.
    #[error("runner TLS: {0}")]
    Tls(#[from] palisade_protocol::tls::TlsError),
}

/// Calls one runner.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    hop: Client<HopConnector, Body>,
    base_url: String,
    execute_url: String,
    healthz_url: String,
}

impl RunnerClient {
    /// A client for the runner at `runner_url` (scheme, host, port, optional base path):
    /// `https://` with `tls` (the runner's certificate is checked against its CA, and the
    /// gateway's own is presented when it has one), `http://` without.
    pub fn new(runner_url: &str, tls: Option<&ClientTls>) -> Result<Self, RunnerClientError> {
        let bad = |reason: &str| RunnerClientError::BadUrl {
            url: runner_url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(runner_url).map_err(|e| bad(&e.to_string()))?;
        match (parsed.scheme(), tls) {
            ("http", None) | ("https", Some(_)) => {}
            ("https", None) => {
                return Err(bad(
                    "an https:// runner needs the gateway's runner TLS (`[gateway] runner_tls_ca`)",
                ));
            }
            ("http", Some(_)) => {
                return Err(bad(
                    "runner TLS is configured, so runners must be https:// (service tokens never travel in clear)",
                ));
            }
            (scheme, _) => {
                return Err(bad(&format!(
                    "scheme `{scheme}` is not supported (http:// or https://)"
                )));
            }
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed"));
        }
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let hop = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(POOL_IDLE_PER_RUNNER)
            .build(HopConnector::new(tcp, tls.cloned()));
        let base_url = runner_url.trim_end_matches('/').to_owned();
        Ok(RunnerClient {
            hop,
            execute_url: format!("{base_url}{EXECUTE_PREFIX}"),
            healthz_url: format!("{base_url}/healthz"),
            base_url,
        })
    }

    /// The runner's base URL, as configured (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL prefix execute calls go to (the path inside the extension follows).
    pub fn execute_url(&self) -> &str {
        &self.execute_url
    }

    /// Whether the runner's `/healthz` answers a success status within `timeout`. A runner
    /// that is draining answers 503 and so counts as unhealthy.
    pub async fn check_health(&self, timeout: Duration) -> bool {
        let request = match http::Request::get(&self.healthz_url).body(Body::empty()) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(url = %self.healthz_url, %error, "health check request not built");
                return false;
            }
        };
        let checked = tokio::time::timeout(timeout, async {
            let response = self.hop.request(request).await?;
            let healthy = response.status().is_success();
            // Read the short answer to its end, so that the connection can be reused.
            let _ = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY_BYTES)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>(healthy)
        })
        .await;
        match checked {
            Ok(Ok(healthy)) => healthy,
            Ok(Err(error)) => {
                tracing::debug!(url = %self.healthz_url, error = ?error, "runner health check failed");
                false
            }
            Err(_) => {
                tracing::debug!(url = %self.healthz_url, ?timeout, "runner health check timed out");
                false
            }
        }
    }

    /// Sends `request`, waiting at most `timeout` for the runner's answer head. The guest's
    /// body is not waited for: it streams from the reply.
    pub async fn execute(
        &self,
        request: &HopRequest,
        timeout: Duration,
    ) -> Result<RunnerReply, ForwardError> {
        let url = format!("{}{}", self.execute_url, request.path);
        let body = request.body.attempt().ok_or(ForwardError::BodyConsumed)?;
        let mut outgoing = http::Request::builder()
            .method(request.method.clone())
            .uri(&url)
            .body(body)
            .map_err(|e| ForwardError::Request {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        *outgoing.headers_mut() = request.headers.clone();
        outgoing
            .headers_mut()
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
        let response = match tokio::time::timeout(timeout, self.hop.request(outgoing)).await {
            Err(_) => return Err(ForwardError::Timeout { url, timeout }),
            Ok(Err(source)) if source.is_connect() => {
                return Err(ForwardError::Unreachable { url, source });
            }
            Ok(Err(source)) => return Err(ForwardError::Transport { url, source }),
            Ok(Ok(response)) => response,
        };
        Ok(classify(response).await)
    }
}

/// A guest answer, or the platform's (marked with `x-palisade-error`). An error status
/// without the mark did not come from a runner's call handling (a proxy in between, or
/// the wrong service), and is taken as the platform's.
async fn classify(response: http::Response<Incoming>) -> RunnerReply {
    let mut status = response.status();
    let code = match response.headers().get(hop::ERROR) {
        Some(value) => ErrorCode::parse(value.as_bytes()).unwrap_or_else(|| {
            tracing::error!(code = ?value, "runner answered with an unknown error code");
            status = StatusCode::INTERNAL_SERVER_ERROR;
            ErrorCode::Internal
        }),
        None if !response.headers().contains_key(http::header::TRAILER)
            && (status.is_client_error() || status.is_server_error()) =>
        {
            ErrorCode::for_status(status.as_u16())
        }
        None => return RunnerReply::Guest(response),
    };
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let stats = response
        .headers()
        .get(hop::STATS)
        .and_then(|value| ExecuteStats::from_header(value).ok());
    // Read the short error body to its end, so that the connection can be reused.
    let _ = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY_BYTES)
        .collect()
        .await;
    RunnerReply::Platform {
        status,
        code,
        retry_after,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused() {
        for url in ["ftp://x", "not a url", "http://x/?q=1", "https://x"] {
            assert!(RunnerClient::new(url, None).is_err(), "{url}");
        }
        let client = RunnerClient::new("http://127.0.0.1:9/", None).unwrap();
        assert_eq!(client.execute_url(), "http://127.0.0.1:9/v1/execute");
        assert_eq!(client.base_url(), "http://127.0.0.1:9");
    }

    fn request() -> HopRequest {
        HopRequest {
            method: Method::GET,
            path: "/hello".into(),
            headers: HeaderMap::new(),
            body: HopBody::Buffered(Bytes::new()),
        }
    }

    #[tokio::test]
    async fn unreachable_runner_is_reported_as_such() {
        // Bind then drop a listener so the port is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = RunnerClient::new(&format!("http://{addr}"), None).unwrap();
        let err = client
            .execute(&request(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ForwardError::Unreachable { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_streamed_body_can_be_sent_again_until_it_is_read() {
        let shared = SharedBody::new(Body::from("payload"));
        let body = HopBody::Streamed(shared.clone());
        // An attempt that never reads (the runner was unreachable) leaves it in place.
        drop(body.attempt().unwrap());
        let second = body.attempt().unwrap();
        assert_eq!(
            second.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"payload")
        );
        assert!(body.attempt().is_none());
    }
}
