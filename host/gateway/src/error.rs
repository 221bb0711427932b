//! Platform error answers: a stable code and the request id, never internal text.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use palisade_protocol::{ErrorBody, ErrorCode, ExecuteStats};

use crate::headers::REQUEST_ID;

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
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            request_id: self.request_id.clone(),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, id);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, retry_after);
        }
        response
    }
}

/// The code conventionally carried by a runner status, for replies whose body is unreadable.
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 | 403 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        413 => ErrorCode::TooLarge,
        429 => ErrorCode::OverQuota,
        502 => ErrorCode::BundleIntegrity,
        503 => ErrorCode::Unavailable,
        504 => ErrorCode::Timeout,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn statuses_map_to_codes() {
        assert_eq!(
            code_for_status(StatusCode::GATEWAY_TIMEOUT),
            ErrorCode::Timeout
        );
        assert_eq!(
            code_for_status(StatusCode::TOO_MANY_REQUESTS),
            ErrorCode::OverQuota
        );
        assert_eq!(
            code_for_status(StatusCode::IM_A_TEAPOT),
            ErrorCode::Internal
        );
    }
}
