//! The client side of the execute protocol: one POST to a runner's `/v1/execute`, and the
//! runner's `/healthz` check.

use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use palisade_protocol::execute::EXECUTE_PATH;
use palisade_protocol::{ErrorCode, ExecuteError, ExecuteRequest, ExecuteResponse, ExecuteStats};

use crate::error::code_for_status;

/// Bound on a runner's reply body (the guest's response, base64, plus framing).
pub const MAX_RUNNER_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// How long to wait for a TCP connection to a runner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a runner answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerReply {
    /// The guest produced a response.
    Guest(ExecuteResponse),
    /// The platform answered instead of the guest.
    Platform {
        /// The runner's status.
        status: StatusCode,
        /// The stable code from the runner's body (or implied by the status).
        code: ErrorCode,
        /// The runner's `retry-after`, if any.
        retry_after: Option<HeaderValue>,
        /// What the call consumed before it failed, if the runner said.
        stats: Option<ExecuteStats>,
    },
}

/// Why no reply was obtained from a runner.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// No connection could be made.
    #[error("runner {url} unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
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
        source: reqwest::Error,
    },
    /// The reply is not a valid execute reply.
    #[error("runner {url} sent an invalid reply (status {status}): {reason}")]
    InvalidReply {
        /// The URL called.
        url: String,
        /// The reply's status.
        status: StatusCode,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a runner client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RunnerClientError {
    /// No runner URL is configured.
    #[error("runner_urls is empty: at least one runner is needed")]
    NoRunners,
    /// The configured runner URL is not an `http://` or `https://` URL.
    #[error("runner_url `{url}` is not an http(s) URL: {reason}")]
    BadUrl {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the runner HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Calls one runner.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    http: reqwest::Client,
    base_url: String,
    execute_url: String,
    healthz_url: String,
}

impl RunnerClient {
    /// A client for the runner at `runner_url` (scheme, host, port, optional base path).
    pub fn new(runner_url: &str) -> Result<Self, RunnerClientError> {
        let bad = |reason: String| RunnerClientError::BadUrl {
            url: runner_url.to_owned(),
            reason,
        };
        let parsed = reqwest::Url::parse(runner_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme `{}` is not supported",
                parsed.scheme()
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed".to_owned()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RunnerClientError::Client)?;
        let base_url = runner_url.trim_end_matches('/').to_owned();
        Ok(RunnerClient {
            http,
            execute_url: format!("{base_url}{EXECUTE_PATH}"),
            healthz_url: format!("{base_url}/healthz"),
            base_url,
        })
    }

    /// The runner's base URL, as configured (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL execute calls go to.
    pub fn execute_url(&self) -> &str {
        &self.execute_url
    }

    /// Whether the runner's `/healthz` answers a success status within `timeout`. A runner
    /// that is draining answers 503 and so counts as unhealthy.
    pub async fn check_health(&self, timeout: Duration) -> bool {
        match self
            .http
            .get(&self.healthz_url)
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) => response.status().is_success(),
            Err(err) => {
                tracing::debug!(url = %self.healthz_url, error = %err, "runner health check failed");
                false
            }
        }
    }

    /// Posts `request` with the service `token`, waiting at most `timeout` for the whole
    /// exchange.
    pub async fn execute(
        &self,
        token: &str,
        request: &ExecuteRequest,
        timeout: Duration,
    ) -> Result<RunnerReply, RunnerError> {
        let url = &self.execute_url;
        let classify = |source: reqwest::Error| {
            if source.is_timeout() {
                RunnerError::Timeout {
                    url: url.clone(),
                    timeout,
                }
            } else if source.is_connect() {
                RunnerError::Unreachable {
                    url: url.clone(),
                    source,
                }
            } else {
                RunnerError::Transport {
                    url: url.clone(),
                    source,
                }
            }
        };
        let mut response = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(request)
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RUNNER_REPLY_BYTES {
                return Err(RunnerError::InvalidReply {
                    url: url.clone(),
                    status,
                    reason: format!("body exceeds {MAX_RUNNER_REPLY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        parse_reply(status, retry_after, &body).map_err(|reason| RunnerError::InvalidReply {
            url: url.clone(),
            status,
            reason,
        })
    }
}

/// Interprets a runner's reply.
fn parse_reply(
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    body: &[u8],
) -> Result<RunnerReply, String> {
    if status.is_success() {
        let reply: ExecuteResponse =
            serde_json::from_slice(body).map_err(|e| format!("execute response: {e}"))?;
        return Ok(match reply.error {
            Some(code) => RunnerReply::Platform {
                status: StatusCode::from_u16(reply.status).unwrap_or(status),
                code,
                retry_after,
                stats: reply.stats,
            },
            None => RunnerReply::Guest(reply),
        });
    }
    let (code, stats) = serde_json::from_slice::<ExecuteError>(body)
        .map(|e| (e.error, e.stats))
        .unwrap_or_else(|_| (code_for_status(status), None));
    Ok(RunnerReply::Platform {
        status,
        code,
        retry_after,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_reply_is_parsed() {
        let body = serde_json::to_vec(&ExecuteResponse::new(
            201,
            vec![("content-type".into(), "text/plain".into())],
            b"hi",
        ))
        .unwrap();
        let reply = parse_reply(StatusCode::OK, None, &body).unwrap();
        let RunnerReply::Guest(guest) = reply else {
            panic!("expected a guest reply: {reply:?}");
        };
        assert_eq!(guest.status, 201);
        assert_eq!(guest.body().unwrap(), b"hi");
    }

    #[test]
    fn platform_errors_keep_status_and_code() {
        let body = br#"{"error":"over_quota","request_id":"r"}"#;
        let retry = HeaderValue::from_static("3");
        let reply = parse_reply(StatusCode::TOO_MANY_REQUESTS, Some(retry.clone()), body).unwrap();
        assert_eq!(
            reply,
            RunnerReply::Platform {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: ErrorCode::OverQuota,
                retry_after: Some(retry),
                stats: None,
            }
        );
    }

    #[test]
    fn unreadable_error_bodies_fall_back_to_the_status() {
        let reply = parse_reply(StatusCode::GATEWAY_TIMEOUT, None, b"<html>").unwrap();
        assert!(matches!(
            reply,
            RunnerReply::Platform {
                code: ErrorCode::Timeout,
                ..
            }
        ));
    }

    #[test]
    fn success_with_error_field_is_a_platform_error() {
        let mut response = ExecuteResponse::new(500, vec![], b"");
        response.error = Some(ErrorCode::Trap);
        let body = serde_json::to_vec(&response).unwrap();
        let reply = parse_reply(StatusCode::OK, None, &body).unwrap();
        assert!(matches!(
            reply,
            RunnerReply::Platform {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: ErrorCode::Trap,
                ..
            }
        ));
    }

    #[test]
    fn malformed_success_is_refused() {
        let err = parse_reply(StatusCode::OK, None, b"{}").unwrap_err();
        assert!(err.contains("execute response"), "{err}");
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["ftp://x", "not a url", "http://x/?q=1"] {
            assert!(RunnerClient::new(url).is_err(), "{url}");
        }
        let client = RunnerClient::new("http://127.0.0.1:9/").unwrap();
        assert_eq!(client.execute_url(), "http://127.0.0.1:9/v1/execute");
        assert_eq!(client.base_url(), "http://127.0.0.1:9");
    }

    #[tokio::test]
    async fn unreachable_runner_is_reported_as_such() {
        // Bind then drop a listener so the port is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = RunnerClient::new(&format!("http://{addr}")).unwrap();
        let request: ExecuteRequest = serde_json::from_value(serde_json::json!({
            "context": {"request_id": "r", "tenant_id": "t", "extension_id": "e",
                "install_id": "i", "version_id": "v", "content_hash": "h"},
            "http": {"method": "GET", "path": "/"}
        }))
        .unwrap();
        let err = client
            .execute("token", &request, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::Unreachable { .. }), "{err}");
    }
}
