//! Admin API errors: the gateway's JSON error body (`error`, `request_id`) plus a
//! `message` naming what is wrong. 5xx answers never carry a message: the detail goes to
//! the operator's log.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue, WWW_AUTHENTICATE};
use palisade_protocol::ErrorCode;
use palisade_registry::{EventError, InstallError, PublishError, RegistryError, SecretError};
use serde::Serialize;

use crate::headers::REQUEST_ID;

/// The stable codes of admin API errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminErrorCode {
    /// 400: the request is malformed or refused as invalid.
    BadRequest,
    /// 401: no or a wrong admin token.
    Unauthorized,
    /// 404: the extension, version, install or secret does not exist.
    NotFound,
    /// 409: the request conflicts with what is stored (a version published with other
    /// bytes, another publisher, capabilities not approved).
    Conflict,
    /// 413: the body is over its limit.
    TooLarge,
    /// 503: the gateway is not configured for this operation, or the registry cannot be
    /// reached.
    Unavailable,
    /// 500: an unexpected failure; the operator's log has the detail.
    Internal,
}

impl AdminErrorCode {
    /// The HTTP status carrying this code.
    pub fn status(self) -> StatusCode {
        match self {
            AdminErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            AdminErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminErrorCode::NotFound => StatusCode::NOT_FOUND,
            AdminErrorCode::Conflict => StatusCode::CONFLICT,
            AdminErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An admin API error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The stable code.
    pub code: AdminErrorCode,
    /// The request id.
    pub request_id: String,
    /// What is wrong (4xx only; dropped from 5xx answers).
    pub message: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: AdminErrorCode,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl AdminError {
    /// An error without a message.
    pub fn new(code: AdminErrorCode, request_id: impl Into<String>) -> Self {
        AdminError {
            code,
            request_id: request_id.into(),
            message: None,
        }
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// A 400 with `message`.
    pub fn bad_request(request_id: &str, message: impl Into<String>) -> Self {
        Self::new(AdminErrorCode::BadRequest, request_id).message(message)
    }

    /// A 404 with `message`.
    pub fn not_found(request_id: &str, message: impl Into<String>) -> Self {
        Self::new(AdminErrorCode::NotFound, request_id).message(message)
    }

    /// A 500; `detail` goes to the operator's log only.
    pub fn internal(request_id: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id, error = %detail, "admin request failed");
        Self::new(AdminErrorCode::Internal, request_id)
    }

    /// The answer for a registry failure: `unavailable` or `internal`, as on the call
    /// path ([`crate::error::registry_code`]).
    pub fn registry(request_id: &str, err: &RegistryError) -> Self {
        match crate::error::registry_code(err) {
            ErrorCode::Unavailable => {
                tracing::warn!(request_id, error = %err, "registry unavailable");
                Self::new(AdminErrorCode::Unavailable, request_id)
            }
            _ => Self::internal(request_id, err),
        }
    }

    /// The answer for a refused publish.
    pub fn publish(request_id: &str, err: PublishError) -> Self {
        let code = match &err {
            PublishError::Signature(_)
            | PublishError::Archive(_)
            | PublishError::Manifest(_)
            | PublishError::Imports(_)
            | PublishError::Component(_) => AdminErrorCode::BadRequest,
            PublishError::VersionExists { .. }
            | PublishError::PublisherMismatch { .. }
            | PublishError::SignerNotAllowed { .. } => AdminErrorCode::Conflict,
            PublishError::Interrupted => {
                tracing::warn!(request_id, error = %err, "publish interrupted");
                return Self::new(AdminErrorCode::Unavailable, request_id);
            }
            PublishError::Registry(inner) => return Self::registry(request_id, inner),
        };
        Self::new(code, request_id).message(err.to_string())
    }

    /// The answer for a refused install, upgrade, uninstall, enable or disable.
    pub fn install(request_id: &str, err: InstallError) -> Self {
        let code = match &err {
            InstallError::InvalidTenantId(_)
            | InstallError::Imports { .. }
            | InstallError::VersionRequired { .. } => AdminErrorCode::BadRequest,
            InstallError::NotFound { .. } => AdminErrorCode::NotFound,
            InstallError::NotApproved { .. }
            | InstallError::GrantWidened { .. }
            | InstallError::Signature { .. } => AdminErrorCode::Conflict,
            InstallError::Integrity { .. } => return Self::internal(request_id, &err),
            InstallError::Registry(inner) => return Self::registry(request_id, inner),
        };
        Self::new(code, request_id).message(err.to_string())
    }

    /// The answer for a refused event or delivery operation.
    pub fn event(request_id: &str, err: EventError) -> Self {
        let code = match &err {
            EventError::InvalidTenantId(_)
            | EventError::InvalidTopic { .. }
            | EventError::InvalidKey
            | EventError::InvalidPayload(_) => AdminErrorCode::BadRequest,
            EventError::DeliveryNotFound(_) | EventError::UnknownTenant(_) => {
                AdminErrorCode::NotFound
            }
            EventError::NotRetryable { .. } => AdminErrorCode::Conflict,
            EventError::Registry(inner) => return Self::registry(request_id, inner),
        };
        Self::new(code, request_id).message(err.to_string())
    }

    /// The answer for a refused secret operation. Messages never contain a value.
    pub fn secret(request_id: &str, err: SecretError) -> Self {
        let code = match &err {
            SecretError::InvalidTenantId(_)
            | SecretError::NotDeclared { .. }
            | SecretError::EmptyValue { .. } => AdminErrorCode::BadRequest,
            SecretError::TooLarge { .. } => AdminErrorCode::TooLarge,
            SecretError::InstallNotFound { .. } | SecretError::NotSet { .. } => {
                AdminErrorCode::NotFound
            }
            SecretError::Seal { .. } => return Self::internal(request_id, &err),
            SecretError::Registry(inner) => return Self::registry(request_id, inner),
        };
        Self::new(code, request_id).message(err.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let message = if status.is_server_error() {
            None
        } else {
            self.message.as_deref()
        };
        let body = Body {
            error: self.code,
            request_id: &self.request_id,
            message,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, id);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: AdminError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn client_errors_carry_the_message() {
        let (status, json) = body(AdminError::bad_request("rid", "field `approve` is wrong")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json,
            serde_json::json!({"error": "bad_request", "request_id": "rid", "message": "field `approve` is wrong"})
        );
    }

    #[tokio::test]
    async fn server_errors_never_carry_text() {
        let error = AdminError::new(AdminErrorCode::Internal, "rid").message("db path /x");
        let (status, json) = body(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            json,
            serde_json::json!({"error": "internal", "request_id": "rid"})
        );
    }

    #[test]
    fn not_approved_is_a_conflict_naming_the_capability() {
        let err = AdminError::install(
            "rid",
            InstallError::NotApproved {
                extension_id: "com.example.x".into(),
                version: "2.0.0".into(),
                missing: vec!["http".into()],
            },
        );
        assert_eq!(err.code, AdminErrorCode::Conflict);
        assert!(err.message.unwrap().contains("http"));
    }
}
