//! The execute hop: the caller's request forwarded from gateway to runner as plain HTTP.
//!
//! The gateway sends the caller's method, the path inside the extension (under
//! [`EXECUTE_PREFIX`]) and query, the allow-listed headers and the body as it arrives. The
//! call's context and the service token ride in `x-palisade-*` headers, which the gateway
//! strips from anything a caller sent. The runner answers with the guest's status and
//! headers as soon as the guest sets them and streams the body back; the body ends with the
//! trailers [`OUTCOME`] (whether it is whole or was cut, and why) and [`STATS`] (what the
//! call consumed, for the execution log). A platform answer instead of the guest's carries
//! [`ERROR`] with its stable code, and [`STATS`] as a header.
//!
//! HTTP/1.1 sends trailers only on a chunked body to a client that asked for them with
//! `te: trailers`: the runner therefore moves the guest's `content-length` to
//! [`CONTENT_LENGTH`], and a cut body is aborted (not ended) for a client that did not ask.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Every hop request goes to this path prefix on a runner, followed by the path inside the
/// extension (`/v1/execute/items/1` for `/items/1`).
pub const EXECUTE_PREFIX: &str = "/v1/execute";

/// Prefix of every header the platform sets on the hop.
pub const HEADER_PREFIX: &str = "x-palisade-";

/// The service token (an EdDSA JWT bound to this call).
pub const TOKEN: HeaderName = HeaderName::from_static("x-palisade-token");
/// The call's request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-palisade-request-id");
/// The calling tenant.
pub const TENANT: HeaderName = HeaderName::from_static("x-palisade-tenant");
/// The extension id (manifest `id`).
pub const EXTENSION: HeaderName = HeaderName::from_static("x-palisade-extension");
/// The tenant's install.
pub const INSTALL: HeaderName = HeaderName::from_static("x-palisade-install");
/// The installed version's registry id.
pub const VERSION: HeaderName = HeaderName::from_static("x-palisade-version");
/// `sha256:<hex>` of the installed bundle.
pub const CONTENT_HASH: HeaderName = HeaderName::from_static("x-palisade-content-hash");
/// The calling user, when the caller's token names one.
pub const USER: HeaderName = HeaderName::from_static("x-palisade-user");
/// The caller side's deadline for the call, in milliseconds.
pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-palisade-timeout-ms");
/// W3C trace context of the call, when there is one.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("x-palisade-traceparent");
/// On a runner's answer: the platform answered, with this stable code.
pub const ERROR: HeaderName = HeaderName::from_static("x-palisade-error");
/// On a runner's answer: the `content-length` the guest declared.
pub const CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-palisade-content-length");
/// Trailer: how the body ended ([`BodyOutcome`]).
pub const OUTCOME: HeaderName = HeaderName::from_static("x-palisade-outcome");
/// Trailer (or header on a platform answer): [`ExecuteStats`], JSON in unpadded base64url.
pub const STATS: HeaderName = HeaderName::from_static("x-palisade-stats");

/// Whether `name` is one of the platform's own hop headers.
pub fn is_hop_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(HEADER_PREFIX)
}

/// Removes every `x-palisade-*` header from `headers`.
pub fn strip_hop_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_header(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// A hop header that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    /// A required header is absent.
    #[error("header `{0}` is missing")]
    Missing(String),
    /// A header's value cannot be used.
    #[error("header `{name}` is malformed: {reason}")]
    Malformed {
        /// The header.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Who and what a call is about. The runner checks every field against the registry and
/// the service token; it never trusts them on their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallContext {
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
    /// The calling user, when the caller's token names one.
    pub user_id: Option<String>,
    /// The caller side's deadline for the whole call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// W3C `traceparent` of the call.
    pub traceparent: Option<String>,
}

impl CallContext {
    /// Sets the context's headers on `headers`.
    pub fn write_to(&self, headers: &mut HeaderMap) -> Result<(), HopError> {
        let fields: [(&HeaderName, Option<&str>); 9] = [
            (&REQUEST_ID, Some(&self.request_id)),
            (&TENANT, Some(&self.tenant_id)),
            (&EXTENSION, Some(&self.extension_id)),
            (&INSTALL, Some(&self.install_id)),
            (&VERSION, Some(&self.version_id)),
            (&CONTENT_HASH, Some(&self.content_hash)),
            (&USER, self.user_id.as_deref()),
            (&TRACEPARENT, self.traceparent.as_deref()),
            (&TIMEOUT_MS, None),
        ];
        for (name, value) in fields {
            let Some(value) = value else { continue };
            let value = HeaderValue::from_str(value).map_err(|_| HopError::Malformed {
                name: name.to_string(),
                reason: "not a valid header value".into(),
            })?;
            headers.insert(name.clone(), value);
        }
        if let Some(ms) = self.timeout_ms {
            headers.insert(TIMEOUT_MS, HeaderValue::from(ms));
        }
        Ok(())
    }

    /// Reads the context from `headers`, naming the first header that is missing or
    /// malformed.
    pub fn read_from(headers: &HeaderMap) -> Result<Self, HopError> {
        let required = |name: &HeaderName| -> Result<String, HopError> {
            optional(headers, name)?.ok_or(HopError::Missing(name.to_string()))
        };
        let timeout_ms = match optional(headers, &TIMEOUT_MS)? {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| HopError::Malformed {
                name: TIMEOUT_MS.to_string(),
                reason: "not a number of milliseconds".into(),
            })?),
        };
        Ok(CallContext {
            request_id: required(&REQUEST_ID)?,
            tenant_id: required(&TENANT)?,
            extension_id: required(&EXTENSION)?,
            install_id: required(&INSTALL)?,
            version_id: required(&VERSION)?,
            content_hash: required(&CONTENT_HASH)?,
            user_id: optional(headers, &USER)?,
            timeout_ms,
            traceparent: optional(headers, &TRACEPARENT)?,
        })
    }
}

fn optional(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, HopError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HopError::Malformed {
            name: name.to_string(),
            reason: "given more than once".into(),
        });
    }
    let text = value.to_str().map_err(|_| HopError::Malformed {
        name: name.to_string(),
        reason: "not visible ASCII".into(),
    })?;
    if text.is_empty() {
        return Err(HopError::Malformed {
            name: name.to_string(),
            reason: "empty".into(),
        });
    }
    Ok(Some(text.to_owned()))
}

/// How a streamed guest body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOutcome {
    /// The guest finished its body and returned.
    Complete,
    /// The body was cut: over its byte limit, past the deadline, or the guest failed
    /// after sending the head.
    Cut(ErrorCode),
}

impl BodyOutcome {
    /// The trailer value.
    pub fn to_header(self) -> HeaderValue {
        match self {
            BodyOutcome::Complete => HeaderValue::from_static("complete"),
            BodyOutcome::Cut(code) => HeaderValue::from_static(code.as_str()),
        }
    }

    /// Reads the trailer value; an unknown value is a cut body (the safe reading).
    pub fn from_header(value: &HeaderValue) -> Self {
        match value.as_bytes() {
            b"complete" => BodyOutcome::Complete,
            other => BodyOutcome::Cut(ErrorCode::parse(other).unwrap_or(ErrorCode::Internal)),
        }
    }
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
    /// The tenant or the install made all the calls its quota allows in this window.
    CallsQuotaExceeded,
    /// The tenant or the install consumed all the fuel its quota allows in this window.
    FuelQuotaExceeded,
    /// The tenant or the install moved all the HTTP egress bytes its quota allows in this
    /// window.
    EgressQuotaExceeded,
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
    /// The execution log's short outcome word for a call that ended with this error:
    /// `rejected`, `timeout`, `trap` or `error` (a call the guest answered is `ok`).
    pub fn outcome(self) -> &'static str {
        match self {
            ErrorCode::NotFound
            | ErrorCode::TooLarge
            | ErrorCode::BadRequest
            | ErrorCode::Unauthorized
            | ErrorCode::OverQuota
            | ErrorCode::CallsQuotaExceeded
            | ErrorCode::FuelQuotaExceeded
            | ErrorCode::EgressQuotaExceeded
            | ErrorCode::IdempotencyKeyReused => "rejected",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Trap | ErrorCode::OutOfMemory => "trap",
            ErrorCode::BundleIntegrity
            | ErrorCode::Unavailable
            | ErrorCode::Internal
            | ErrorCode::LoadFailed => "error",
        }
    }

    const ALL: [ErrorCode; 16] = [
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::OverQuota,
        ErrorCode::CallsQuotaExceeded,
        ErrorCode::FuelQuotaExceeded,
        ErrorCode::EgressQuotaExceeded,
        ErrorCode::BundleIntegrity,
        ErrorCode::Timeout,
        ErrorCode::Trap,
        ErrorCode::OutOfMemory,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::LoadFailed,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::OverQuota => "over_quota",
            ErrorCode::CallsQuotaExceeded => "calls_quota_exceeded",
            ErrorCode::FuelQuotaExceeded => "fuel_quota_exceeded",
            ErrorCode::EgressQuotaExceeded => "egress_quota_exceeded",
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

    /// The code spelled `text` on the wire.
    pub fn parse(text: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str().as_bytes() == text)
    }

    /// The HTTP status that carries this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::BadRequest => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::OverQuota
            | ErrorCode::CallsQuotaExceeded
            | ErrorCode::FuelQuotaExceeded
            | ErrorCode::EgressQuotaExceeded => 429,
            ErrorCode::BundleIntegrity | ErrorCode::LoadFailed => 502,
            ErrorCode::Timeout => 504,
            ErrorCode::Trap | ErrorCode::OutOfMemory | ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::IdempotencyKeyReused => 422,
        }
    }

    /// The code a status conventionally carries, for an error answer whose code is
    /// unreadable: the inverse of [`ErrorCode::status`] where that is one to one.
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            400 => ErrorCode::BadRequest,
            401 | 403 => ErrorCode::Unauthorized,
            404 => ErrorCode::NotFound,
            413 => ErrorCode::TooLarge,
            422 => ErrorCode::IdempotencyKeyReused,
            429 => ErrorCode::OverQuota,
            502 => ErrorCode::BundleIntegrity,
            503 => ErrorCode::Unavailable,
            504 => ErrorCode::Timeout,
            _ => ErrorCode::Internal,
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
pub struct ErrorBody {
    /// Stable error code.
    pub error: ErrorCode,
    /// The request id, for correlation with the operator's logs.
    pub request_id: String,
    /// The quota a `*_quota_exceeded` refusal is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaRef>,
}

/// Which quota refused a call, and when its window ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRef {
    /// `tenant` (all the tenant's installs together) or `install` (this extension's).
    pub scope: String,
    /// The limit of the window.
    pub limit: u64,
    /// When the window ends and the quota is whole again (unix epoch milliseconds).
    pub resets_at_ms: i64,
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
    /// Response body bytes the runner sent.
    #[serde(default)]
    pub response_bytes: u64,
    /// Log lines the guest wrote that were kept, and those dropped past the bound.
    pub log_lines: u64,
    /// See `log_lines`.
    pub dropped_log_lines: u64,
    /// The first log lines, bounded in size, one per line.
    #[serde(default)]
    pub log_excerpt: String,
}

impl ExecuteStats {
    /// The [`STATS`] header value.
    pub fn to_header(&self) -> HeaderValue {
        let json = serde_json::to_vec(self).unwrap_or_default();
        // Unpadded base64url is always a valid header value.
        HeaderValue::from_str(&B64.encode(json)).unwrap_or(HeaderValue::from_static(""))
    }

    /// Reads a [`STATS`] header value.
    pub fn from_header(value: &HeaderValue) -> Result<Self, HopError> {
        let malformed = |reason: String| HopError::Malformed {
            name: STATS.to_string(),
            reason,
        };
        let json = B64
            .decode(value.as_bytes())
            .map_err(|e| malformed(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_lead_back_to_their_codes() {
        for code in ErrorCode::ALL {
            let back = ErrorCode::for_status(code.status());
            // 429, 500 and 502 carry several codes; each leads back to one of its own
            // status.
            assert_eq!(back.status(), code.status(), "{code}");
            if !matches!(code.status(), 429 | 500 | 502) {
                assert_eq!(back, code);
            }
        }
        assert_eq!(ErrorCode::for_status(418), ErrorCode::Internal);
        assert_eq!(ErrorCode::for_status(403), ErrorCode::Unauthorized);
    }

    fn context() -> CallContext {
        CallContext {
            request_id: "r-1".into(),
            tenant_id: "t".into(),
            extension_id: "com.x".into(),
            install_id: "i".into(),
            version_id: "v".into(),
            content_hash: "sha256:00".into(),
            user_id: Some("u".into()),
            timeout_ms: Some(1500),
            traceparent: None,
        }
    }

    #[test]
    fn the_context_round_trips_through_headers() {
        let mut headers = HeaderMap::new();
        context().write_to(&mut headers).unwrap();
        assert_eq!(CallContext::read_from(&headers).unwrap(), context());
    }

    #[test]
    fn a_missing_or_malformed_header_is_named() {
        let mut headers = HeaderMap::new();
        context().write_to(&mut headers).unwrap();
        headers.remove(INSTALL);
        assert_eq!(
            CallContext::read_from(&headers).unwrap_err(),
            HopError::Missing("x-palisade-install".into())
        );
        context().write_to(&mut headers).unwrap();
        headers.insert(TIMEOUT_MS, HeaderValue::from_static("soon"));
        let err = CallContext::read_from(&headers).unwrap_err();
        assert!(err.to_string().contains("x-palisade-timeout-ms"), "{err}");
        context().write_to(&mut headers).unwrap();
        headers.append(TENANT, HeaderValue::from_static("other"));
        let err = CallContext::read_from(&headers).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn hop_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN, HeaderValue::from_static("forged"));
        headers.insert("x-palisade-anything", HeaderValue::from_static("x"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_headers(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn outcomes_and_stats_round_trip() {
        for outcome in [BodyOutcome::Complete, BodyOutcome::Cut(ErrorCode::TooLarge)] {
            assert_eq!(BodyOutcome::from_header(&outcome.to_header()), outcome);
        }
        assert_eq!(
            BodyOutcome::from_header(&HeaderValue::from_static("???")),
            BodyOutcome::Cut(ErrorCode::Internal)
        );
        let stats = ExecuteStats {
            duration_ms: 3,
            log_excerpt: "info é\nstdout x\n".into(),
            ..Default::default()
        };
        assert_eq!(
            ExecuteStats::from_header(&stats.to_header()).unwrap(),
            stats
        );
    }

    #[test]
    fn codes_parse_and_carry_statuses() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str().as_bytes()), Some(code));
        }
        assert_eq!(ErrorCode::Timeout.status(), 504);
        assert_eq!(
            serde_json::to_string(&ErrorCode::OutOfMemory).unwrap(),
            "\"out_of_memory\""
        );
    }
}
