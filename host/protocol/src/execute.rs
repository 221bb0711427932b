//! Request and response bodies of `POST /v1/execute`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The path of the execute endpoint on a runner.
pub const EXECUTE_PATH: &str = "/v1/execute";

/// Header carrying the service token (`authorization: Bearer <token>` is used).
pub const AUTHORIZATION: &str = "authorization";

/// Who and what a call is about. The runner checks every field against the registry and the
/// service token; it never trusts them on their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationContext {
    /// Unique id of the call, echoed as `x-request-id`.
    pub request_id: String,
    /// The calling tenant.
    pub tenant_id: String,
    /// The extension id (manifest `id`).
    pub extension_id: String,
    /// The tenant's install.
    pub install_id: String,
    /// The installed version's registry id.
    pub version_id: String,
    /// `sha256:<hex>` of the installed bundle.
    pub content_hash: String,
}

/// The HTTP request handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// Request method, upper case.
    pub method: String,
    /// Path inside the extension, starting with `/` (the `/api/ext/{id}` prefix removed).
    pub path: String,
    /// Raw query string without `?`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Allow-listed request headers, names lower case.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Request body, base64 (standard alphabet, padded).
    #[serde(default)]
    pub body_b64: String,
}

impl HttpRequest {
    /// Decodes the body.
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        B64.decode(&self.body_b64)
    }

    /// Encodes `body` into `body_b64`.
    pub fn set_body(&mut self, body: &[u8]) {
        self.body_b64 = B64.encode(body);
    }
}

/// Limits the caller asks for. The runner applies the minimum of these, the manifest's and
/// the operator's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteLimits {
    /// Deadline for the whole call in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The body of `POST /v1/execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Who and what the call is about.
    pub context: InvocationContext,
    /// The HTTP request for the guest.
    pub http: HttpRequest,
    /// Caller-side limits.
    #[serde(default)]
    pub limits: ExecuteLimits,
}

/// Stable machine-readable error codes. Clients see these, never internal error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, malformed, expired or mismatched credentials.
    Unauthorized,
    /// Unknown extension, install, endpoint or content hash.
    NotFound,
    /// The request is malformed.
    BadRequest,
    /// A request or response body exceeds its limit.
    TooLarge,
    /// A rate or concurrency quota is exhausted.
    OverQuota,
    /// The stored bundle failed its hash or signature check.
    BundleIntegrity,
    /// The call exceeded its deadline.
    Timeout,
    /// The guest trapped (panic, `unreachable`, stack overflow, exit).
    Trap,
    /// The guest exceeded its memory limit.
    OutOfMemory,
    /// The runner or gateway cannot serve now.
    Unavailable,
    /// An unexpected platform failure; the operator's log has the detail.
    Internal,
    /// An `x-idempotency-key` already used for a different request (method, path, query,
    /// body or user) within the replay window.
    IdempotencyKeyReused,
    /// The bundle is intact but the runner's engine refused its component (it does not
    /// compile, link or fit the instance pool with this runner's settings, or compiling
    /// took too long).
    LoadFailed,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::OverQuota => "over_quota",
            ErrorCode::BundleIntegrity => "bundle_integrity",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Trap => "trap",
            ErrorCode::OutOfMemory => "out_of_memory",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::LoadFailed => "load_failed",
        }
    }

    /// The HTTP status that carries this code on the runner hop.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::BadRequest => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::OverQuota => 429,
            ErrorCode::BundleIntegrity | ErrorCode::LoadFailed => 502,
            ErrorCode::Timeout => 504,
            ErrorCode::Trap | ErrorCode::OutOfMemory | ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::IdempotencyKeyReused => 422,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A platform error as clients see it: a stable code and the request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteError {
    /// Stable error code.
    pub error: ErrorCode,
    /// The request id, for correlation with the operator's logs.
    pub request_id: String,
    /// On the runner hop only: what the call consumed before it failed (never sent to
    /// clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ExecuteStats>,
}

/// What a call consumed, for the execution log. Sent by the runner to the gateway only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteStats {
    /// Wall-clock time inside the runner, in milliseconds.
    pub duration_ms: u64,
    /// Fuel consumed, when the runner counts fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
    /// Peak linear memory of the instance, in bytes.
    pub peak_memory_bytes: u64,
    /// HTTP egress bytes, both directions.
    pub egress_bytes: u64,
    /// Log lines the guest wrote that were kept, and those dropped past the bound.
    pub log_lines: u64,
    /// See `log_lines`.
    pub dropped_log_lines: u64,
    /// The first log lines, bounded in size, one per line.
    #[serde(default)]
    pub log_excerpt: String,
}

/// The reply of `POST /v1/execute` when the guest produced a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteResponse {
    /// The guest's HTTP status.
    pub status: u16,
    /// The guest's response headers, names lower case.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The guest's response body, base64.
    #[serde(default)]
    pub body_b64: String,
    /// Set when the platform, not the guest, answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// What the call consumed, for the execution log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ExecuteStats>,
}

impl ExecuteResponse {
    /// Decodes the body.
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        B64.decode(&self.body_b64)
    }

    /// Builds a response from raw parts.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: &[u8]) -> Self {
        ExecuteResponse {
            status,
            headers,
            body_b64: B64.encode(body),
            error: None,
            stats: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"context":{"request_id":"r","tenant_id":"t","extension_id":"e",
            "install_id":"i","version_id":"v","content_hash":"h","grants":["all"]},
            "http":{"method":"GET","path":"/"}}"#;
        let err = serde_json::from_str::<ExecuteRequest>(json).unwrap_err();
        assert!(err.to_string().contains("grants"), "{err}");
    }

    #[test]
    fn body_roundtrip() {
        let mut http = HttpRequest {
            method: "POST".into(),
            path: "/x".into(),
            query: None,
            headers: vec![],
            body_b64: String::new(),
        };
        http.set_body(b"\x00\xffhello");
        assert_eq!(http.body().unwrap(), b"\x00\xffhello");
    }

    #[test]
    fn codes_have_distinct_statuses_for_transport() {
        assert_eq!(ErrorCode::Timeout.status(), 504);
        assert_eq!(ErrorCode::BundleIntegrity.status(), 502);
        assert_eq!(
            serde_json::to_string(&ErrorCode::OutOfMemory).unwrap(),
            "\"out_of_memory\""
        );
    }
}
