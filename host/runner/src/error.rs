//! Runner errors: each maps to a transport status and a stable code; the detail goes to the
//! operator's log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_protocol::hop;
use palisade_protocol::{ErrorBody, ErrorCode, ExecuteStats};

/// Why the runner refused or failed a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnerError {
    /// Missing, invalid or mismatched service token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Malformed execute request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Unknown install, or the request's context does not match it.
    #[error("not found: {0}")]
    NotFound(String),
    /// Request body over the limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    /// The guest's response body went over its limit (the body is cut there).
    #[error("{0}")]
    ResponseTooLarge(String),
    /// A streamed body was cut, for a client that cannot be told in a trailer.
    #[error("response body cut: {0}")]
    BodyCut(ErrorCode),
    /// The stored bundle failed its hash or signature check, or is missing.
    #[error("bundle integrity: {0}")]
    BundleIntegrity(String),
    /// The call ran out of time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The guest trapped.
    #[error("guest trap: {0}")]
    Trap(String),
    /// The guest ran out of memory.
    #[error("guest out of memory: {0}")]
    OutOfMemory(String),
    /// Too many calls of this install or tenant in flight.
    #[error("over quota: {0}")]
    OverQuota(String),
    /// No capacity to start the call now (instance pool exhausted).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
    /// The bundle is intact, but this runner's engine refused its component: it does not
    /// compile, link or fit the instance pool, or compiling ran out of time.
    #[error("component refused by the engine: {0}")]
    LoadFailed(String),
}

impl RunnerError {
    /// The stable code sent to the caller.
    pub fn code(&self) -> ErrorCode {
        match self {
            RunnerError::Unauthorized(_) => ErrorCode::Unauthorized,
            RunnerError::BadRequest(_) => ErrorCode::BadRequest,
            RunnerError::NotFound(_) => ErrorCode::NotFound,
            RunnerError::TooLarge(_) | RunnerError::ResponseTooLarge(_) => ErrorCode::TooLarge,
            RunnerError::BodyCut(code) => *code,
            RunnerError::BundleIntegrity(_) => ErrorCode::BundleIntegrity,
            RunnerError::Timeout(_) => ErrorCode::Timeout,
            RunnerError::Trap(_) => ErrorCode::Trap,
            RunnerError::OutOfMemory(_) => ErrorCode::OutOfMemory,
            RunnerError::OverQuota(_) => ErrorCode::OverQuota,
            RunnerError::Unavailable(_) => ErrorCode::Unavailable,
            RunnerError::Internal(_) => ErrorCode::Internal,
            RunnerError::LoadFailed(_) => ErrorCode::LoadFailed,
        }
    }

    /// The reply for `request_id`, logging the detail.
    pub fn into_reply(self, request_id: &str) -> Response {
        self.into_reply_with_stats(request_id, None)
    }

    /// The reply for `request_id` carrying what the call consumed, logging the detail.
    pub fn into_reply_with_stats(self, request_id: &str, stats: Option<ExecuteStats>) -> Response {
        let code = self.code();
        if matches!(
            code,
            ErrorCode::Internal | ErrorCode::BundleIntegrity | ErrorCode::LoadFailed
        ) {
            tracing::error!(request_id, error = %self, "execute failed");
        } else {
            tracing::warn!(request_id, error = %self, "execute refused");
        }
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: code,
            request_id: request_id.to_owned(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(hop::ERROR, HeaderValue::from_static(code.as_str()));
        if let Some(stats) = stats {
            headers.insert(hop::STATS, stats.to_header());
        }
        if matches!(code, ErrorCode::OverQuota | ErrorCode::Unavailable) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        response
    }
}
