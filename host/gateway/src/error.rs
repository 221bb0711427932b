//! Platform error answers: a stable code and the request id, never internal text.
//!
//! [`CallError`] is every reason a call through the gateway is not answered by its guest;
//! [`CallError::answer`] is the one place that decides its status and code, and logs the
//! detail in the call's span for the operator.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use palisade_protocol::{ErrorBody, ErrorCode, ExecuteStats, HopError, QuotaRef, TokenError};
use palisade_registry::RegistryError;

use crate::auth::AuthError;
use crate::body::BodyError;
use crate::headers::REQUEST_ID;
use crate::idempotency::KeyError;
use crate::quota::{QuotaError, QuotaExceeded};
use crate::runner::ForwardError;

/// Why a call was answered by the gateway instead of by its guest.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The path names no extension.
    #[error("the path names no extension")]
    NoExtension,
    /// The caller's token was refused.
    #[error("caller refused: {0}")]
    Caller(#[from] AuthError),
    /// The caller, its tenant or the install is over its rate limit.
    #[error("{scope} over its rate limit; retry in {retry_after} s")]
    RateLimited {
        /// `caller or tenant`, or `install`.
        scope: &'static str,
        /// Seconds until the bucket has a token.
        retry_after: u64,
    },
    /// A quota of the tenant or the install is used up for this window.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The registry could not resolve the install.
    #[error("resolving the install: {0}")]
    Registry(#[from] RegistryError),
    /// The tenant has no enabled install of the extension.
    #[error("no enabled install of this extension for the tenant")]
    NotInstalled,
    /// No endpoint of the manifest matches the method and path.
    #[error("no declared endpoint matches {method} {path}")]
    NoEndpoint {
        /// The method.
        method: http::Method,
        /// The path inside the extension.
        path: String,
    },
    /// The idempotency key is malformed.
    #[error("idempotency key refused: {0}")]
    IdempotencyKey(#[from] KeyError),
    /// The key was used before for another request.
    #[error("idempotency key reused for another method, path, query, body or user")]
    IdempotencyKeyReused,
    /// The request body is over its limit, late or broken.
    #[error("request body refused: {0}")]
    Body(#[from] BodyError),
    /// The service token could not be minted.
    #[error("minting the service token: {0}")]
    Token(#[from] TokenError),
    /// The call's context does not fit in hop headers.
    #[error("call context refused: {0}")]
    Context(#[from] HopError),
    /// No answer was obtained from a runner.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The runner answered with a platform error.
    #[error("runner answered {status} `{code}`")]
    Runner {
        /// The runner's status.
        status: StatusCode,
        /// The runner's code.
        code: ErrorCode,
        /// The runner's `retry-after`.
        retry_after: Option<HeaderValue>,
    },
    /// The runner relayed an informational status as the guest's answer.
    #[error("runner relayed the informational status {0}")]
    Informational(StatusCode),
    /// The guest's answer to a HEAD (read to count its length) was cut.
    #[error("the guest's answer to a HEAD was cut: `{0}`")]
    HeadCut(ErrorCode),
}

impl CallError {
    /// The status and code the caller gets, and the `retry-after` to send: the one place
    /// that decides them.
    pub(crate) fn answer(&self) -> (StatusCode, ErrorCode, Option<HeaderValue>) {
        let code = match self {
            CallError::NoExtension | CallError::NotInstalled | CallError::NoEndpoint { .. } => {
                ErrorCode::NotFound
            }
            CallError::Caller(_) => ErrorCode::Unauthorized,
            CallError::RateLimited { retry_after, .. } => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::OverQuota,
                    Some(HeaderValue::from(*retry_after)),
                );
            }
            CallError::QuotaExceeded(exceeded) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    exceeded.metric.code(),
                    Some(HeaderValue::from(exceeded.retry_after_secs())),
                );
            }
            CallError::Registry(err) => registry_code(err),
            CallError::IdempotencyKey(_) | CallError::Context(_) => ErrorCode::BadRequest,
            CallError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            CallError::Body(BodyError::TooLarge { .. }) => ErrorCode::TooLarge,
            CallError::Body(BodyError::Timeout) => {
                return (StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, None);
            }
            CallError::Body(BodyError::Read(_)) => ErrorCode::BadRequest,
            CallError::Token(_) | CallError::Informational(_) => ErrorCode::Internal,
            CallError::Forward(ForwardError::Timeout { .. }) => ErrorCode::Timeout,
            CallError::Forward(
                ForwardError::Unreachable { .. }
                | ForwardError::Transport { .. }
                | ForwardError::BodyConsumed,
            ) => ErrorCode::Unavailable,
            CallError::Forward(ForwardError::Request { .. }) => ErrorCode::Internal,
            // The caller was authenticated; a refused service token is the platform's fault.
            CallError::Runner {
                code: ErrorCode::Unauthorized,
                ..
            } => ErrorCode::Internal,
            CallError::Runner {
                status,
                code,
                retry_after,
            } => {
                // The runner's own status, as long as it is an error status.
                let status = if status.is_client_error() || status.is_server_error() {
                    *status
                } else {
                    status_of(*code)
                };
                return (status, *code, retry_after.clone());
            }
            CallError::HeadCut(code) => *code,
        };
        (status_of(code), code, None)
    }

    /// How loud the operator's log line is: `error` for what the operator must look at
    /// (the registry, a runner that cannot be reached, the platform's own token), `warn`
    /// for a runner too slow or an answer cut, `info` for refusals of the caller's request
    /// and for a runner's platform errors (the runner logs those itself).
    fn level(&self) -> tracing::Level {
        match self {
            CallError::Registry(_)
            | CallError::Token(_)
            | CallError::Informational(_)
            | CallError::Forward(
                ForwardError::Unreachable { .. }
                | ForwardError::Transport { .. }
                | ForwardError::Request { .. },
            )
            | CallError::Runner {
                code: ErrorCode::Unauthorized,
                ..
            } => tracing::Level::ERROR,
            CallError::Forward(ForwardError::Timeout { .. } | ForwardError::BodyConsumed)
            | CallError::HeadCut(_) => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        }
    }

    /// The answer for `request_id`, with the detail logged in the current span at
    /// [`CallError::level`].
    pub(crate) fn into_api_error(self, request_id: &str) -> ApiError {
        let (status, code, retry_after) = self.answer();
        match self.level() {
            tracing::Level::ERROR => tracing::error!(error = %self, %code, "call failed"),
            tracing::Level::WARN => tracing::warn!(error = %self, %code, "call failed"),
            _ => tracing::info!(error = %self, %code, "call refused"),
        }
        let mut error = ApiError::with_status(status, code, request_id);
        error.retry_after = retry_after;
        if let CallError::Caller(err) = &self {
            error.challenge = Some(err.challenge());
        }
        if let CallError::QuotaExceeded(exceeded) = &self {
            error.quota = Some(exceeded.quota_ref());
        }
        error
    }
}

impl From<QuotaError> for CallError {
    fn from(error: QuotaError) -> Self {
        match error {
            QuotaError::Exceeded(exceeded) => CallError::QuotaExceeded(exceeded),
            QuotaError::Registry(error) => CallError::Registry(error),
        }
    }
}

/// The code of a registry failure, on every API: a row that cannot be read is the
/// platform's bug (`internal`); anything else (connection, database, object store) is
/// taken as passing (`unavailable`).
pub(crate) fn registry_code(err: &RegistryError) -> ErrorCode {
    if err.is_corrupt_data() {
        ErrorCode::Internal
    } else {
        ErrorCode::Unavailable
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answered by the gateway itself: `{"error": "<code>", "request_id": "<id>"}`
/// with `x-request-id`, and `www-authenticate: Bearer` on 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable error code of the body.
    pub code: ErrorCode,
    /// The request id.
    pub request_id: String,
    /// `retry-after` to pass on, if any.
    pub retry_after: Option<HeaderValue>,
    /// What the call consumed at the runner, for the execution log (not sent to clients;
    /// taken off before the error becomes a response).
    pub stats: Option<Box<ExecuteStats>>,
    /// The `www-authenticate` challenge of a 401 (`Bearer` when unset).
    pub challenge: Option<&'static str>,
    /// The quota a `*_quota_exceeded` refusal is about.
    pub quota: Option<QuotaRef>,
}

impl ApiError {
    /// An error with the status conventionally carrying `code`.
    pub fn new(code: ErrorCode, request_id: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::with_status(status, code, request_id)
    }

    /// An error with an explicit status.
    pub fn with_status(status: StatusCode, code: ErrorCode, request_id: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            request_id: request_id.into(),
            retry_after: None,
            stats: None,
            challenge: None,
            quota: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            request_id: self.request_id.clone(),
            quota: self.quota,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, id);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = self.challenge.unwrap_or("Bearer");
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, retry_after);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaMetric;

    #[tokio::test]
    async fn body_and_headers() {
        let response = ApiError::new(ErrorCode::NotFound, "rid").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[REQUEST_ID], "rid");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "not_found", "request_id": "rid"})
        );
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let response = ApiError::new(ErrorCode::Unauthorized, "rid").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    /// A refusal by the tenant's quota on `metric`, 60.5 s before the window ends.
    fn exceeded(metric: QuotaMetric) -> QuotaExceeded {
        QuotaExceeded {
            scope: palisade_registry::quota::QuotaScope::Tenant,
            metric,
            limit: 10,
            resets_at_ms: 86_400_000,
            at_ms: 86_400_000 - 60_500,
        }
    }

    /// Every reason a call is answered by the gateway, with the status and code it gets.
    #[test]
    fn each_call_error_has_one_answer() {
        let runner = |status: u16, code| CallError::Runner {
            status: StatusCode::from_u16(status).unwrap(),
            code,
            retry_after: None,
        };
        let cases: Vec<(CallError, u16, ErrorCode)> = vec![
            (CallError::NoExtension, 404, ErrorCode::NotFound),
            (AuthError::Missing.into(), 401, ErrorCode::Unauthorized),
            (
                CallError::RateLimited {
                    scope: "install",
                    retry_after: 3,
                },
                429,
                ErrorCode::OverQuota,
            ),
            (
                CallError::QuotaExceeded(exceeded(QuotaMetric::Calls)),
                429,
                ErrorCode::CallsQuotaExceeded,
            ),
            (
                CallError::QuotaExceeded(exceeded(QuotaMetric::Fuel)),
                429,
                ErrorCode::FuelQuotaExceeded,
            ),
            (
                CallError::QuotaExceeded(exceeded(QuotaMetric::EgressBytes)),
                429,
                ErrorCode::EgressQuotaExceeded,
            ),
            (
                RegistryError::CorruptRow {
                    table: "t",
                    column: "c",
                    key: "k".into(),
                    reason: "r".into(),
                }
                .into(),
                500,
                ErrorCode::Internal,
            ),
            (
                RegistryError::BundleMissing {
                    hash: "h".into(),
                    key: "k".into(),
                }
                .into(),
                503,
                ErrorCode::Unavailable,
            ),
            (CallError::NotInstalled, 404, ErrorCode::NotFound),
            (
                CallError::NoEndpoint {
                    method: http::Method::GET,
                    path: "/x".into(),
                },
                404,
                ErrorCode::NotFound,
            ),
            (KeyError::Invalid.into(), 400, ErrorCode::BadRequest),
            (
                CallError::IdempotencyKeyReused,
                422,
                ErrorCode::IdempotencyKeyReused,
            ),
            (
                BodyError::TooLarge { limit: 1 }.into(),
                413,
                ErrorCode::TooLarge,
            ),
            (BodyError::Timeout.into(), 408, ErrorCode::Timeout),
            (TokenError::Key("k".into()).into(), 500, ErrorCode::Internal),
            (TokenError::Encode("x").into(), 500, ErrorCode::Internal),
            (
                HopError::Missing("x".into()).into(),
                400,
                ErrorCode::BadRequest,
            ),
            (
                ForwardError::Timeout {
                    url: "u".into(),
                    timeout: std::time::Duration::from_secs(1),
                }
                .into(),
                504,
                ErrorCode::Timeout,
            ),
            (
                ForwardError::BodyConsumed.into(),
                503,
                ErrorCode::Unavailable,
            ),
            (
                ForwardError::Request {
                    url: "u".into(),
                    reason: "r".into(),
                }
                .into(),
                500,
                ErrorCode::Internal,
            ),
            (
                runner(401, ErrorCode::Unauthorized),
                500,
                ErrorCode::Internal,
            ),
            (runner(504, ErrorCode::Timeout), 504, ErrorCode::Timeout),
            (runner(200, ErrorCode::TooLarge), 413, ErrorCode::TooLarge),
            (
                CallError::Informational(StatusCode::CONTINUE),
                500,
                ErrorCode::Internal,
            ),
            (
                CallError::HeadCut(ErrorCode::Timeout),
                504,
                ErrorCode::Timeout,
            ),
        ];
        for (error, status, code) in cases {
            let text = error.to_string();
            let answer = error.into_api_error("rid");
            assert_eq!(
                (answer.status.as_u16(), answer.code),
                (status, code),
                "{text}"
            );
        }
        let rate = CallError::RateLimited {
            scope: "install",
            retry_after: 3,
        };
        assert_eq!(rate.into_api_error("rid").retry_after.unwrap(), "3");
        // A quota refusal waits for the end of the window, and names its quota.
        let quota = CallError::QuotaExceeded(exceeded(QuotaMetric::Calls)).into_api_error("rid");
        assert_eq!(quota.retry_after.clone().unwrap(), "61");
        let response = quota.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "61");
        let refused = CallError::from(AuthError::NotBearer).into_api_error("rid");
        let response = refused.into_response();
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_request\""
        );
    }
}
