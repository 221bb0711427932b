//! Runner errors: each keeps the typed error it came from (for the operator's log) and
//! maps to one stable code in one place, [`RunnerError::code`]; the status follows from the
//! code. Clients see the code and the request id, never the text.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_bundle::{ArchiveError, ContentHash, SigningError};
use palisade_protocol::{ErrorBody, ErrorCode, ExecuteStats, HopError, TokenError, hop};
use palisade_registry::RegistryError;
use palisade_runtime::{ExecuteError, LoadError};

/// Why the runner refused or failed a call. Errors are shared between the calls waiting
/// on one bundle load, hence the `Arc`s around sources that cannot be cloned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnerError {
    /// The hop carried no service token.
    #[error("no service token")]
    NoToken,
    /// The service token is invalid, for another call, or replayed.
    #[error(transparent)]
    Token(Arc<TokenError>),
    /// A hop header is missing or malformed.
    #[error(transparent)]
    Hop(#[from] HopError),
    /// The path is not under `/v1/execute/`, or not a valid URI once the prefix is off.
    #[error("path `{0}` is not a call")]
    NotACall(String),
    /// No install has this id.
    #[error("install {0} not found")]
    UnknownInstall(String),
    /// The hop's context names another tenant, extension, version or content hash than
    /// the install has (stale or forged).
    #[error("x-palisade-{field} does not match install {install_id}")]
    ContextMismatch {
        /// The hop header that differs, without its prefix.
        field: &'static str,
        /// The install.
        install_id: String,
    },
    /// Request body over the limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    /// Too many calls of this install or tenant in flight.
    #[error("in-flight cap per {0} reached")]
    OverQuota(&'static str),
    /// The runner is draining and takes no new call.
    #[error("the runner is draining")]
    Draining,
    /// The registry could not answer.
    #[error("registry: {0}")]
    Registry(Arc<RegistryError>),
    /// The stored bundle is missing, does not hash to its content hash, or is not signed by
    /// a trusted key.
    #[error("bundle {hash}: {problem}")]
    BundleIntegrity {
        /// The bundle.
        hash: ContentHash,
        /// What is wrong with it.
        problem: Integrity,
    },
    /// The runtime could not load the component.
    #[error("component {hash}: {source}")]
    Load {
        /// The bundle.
        hash: ContentHash,
        /// Why.
        #[source]
        source: Arc<LoadError>,
    },
    /// The call failed in the runtime (before its head, or cutting its body).
    #[error(transparent)]
    Call(Arc<ExecuteError>),
    /// The runtime reported a failed call without saying why (a host bug).
    #[error("call failed without an error")]
    FailedWithoutError,
    /// A streamed body was cut, for a client that cannot be told in a trailer.
    #[error("response body cut: {0}")]
    BodyCut(ErrorCode),
}

/// What is wrong with a stored bundle.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Integrity {
    /// The object store has no such bundle.
    #[error("missing from the object store: {0}")]
    Missing(Arc<RegistryError>),
    /// The bytes hash to something else.
    #[error("stored bytes hash to {0}")]
    HashMismatch(ContentHash),
    /// An object (the bundle or its signature) does not match the hash its key names.
    #[error("{0}")]
    Corrupt(Arc<RegistryError>),
    /// The signature does not verify with any trusted key.
    #[error("signature: {0}")]
    Signature(Arc<SigningError>),
    /// The archive does not unpack.
    #[error("unpacking: {0}")]
    Unpack(Arc<ArchiveError>),
}

impl From<TokenError> for RunnerError {
    fn from(error: TokenError) -> Self {
        RunnerError::Token(Arc::new(error))
    }
}

impl From<ExecuteError> for RunnerError {
    fn from(error: ExecuteError) -> Self {
        RunnerError::Call(Arc::new(error))
    }
}

impl From<RegistryError> for RunnerError {
    fn from(error: RegistryError) -> Self {
        RunnerError::Registry(Arc::new(error))
    }
}

impl RunnerError {
    /// The stable code sent to the caller: the one place that decides it.
    pub fn code(&self) -> ErrorCode {
        match self {
            RunnerError::NoToken | RunnerError::Token(_) => ErrorCode::Unauthorized,
            RunnerError::Hop(_) => ErrorCode::BadRequest,
            RunnerError::NotACall(_)
            | RunnerError::UnknownInstall(_)
            | RunnerError::ContextMismatch { .. } => ErrorCode::NotFound,
            RunnerError::TooLarge(_) => ErrorCode::TooLarge,
            RunnerError::OverQuota(_) => ErrorCode::OverQuota,
            RunnerError::Draining => ErrorCode::Unavailable,
            // As on every API: data that cannot be read is the platform's bug, anything
            // else (the database or the object store not answering) may pass.
            RunnerError::Registry(error) if !error.is_corrupt_data() => ErrorCode::Unavailable,
            RunnerError::Registry(_) | RunnerError::FailedWithoutError => ErrorCode::Internal,
            RunnerError::BundleIntegrity { .. } => ErrorCode::BundleIntegrity,
            RunnerError::Load { source, .. } => match **source {
                // The bundle passed its integrity checks, so a refusal by the engine is
                // `load_failed`, not `bundle_integrity`.
                LoadError::Compile(_)
                | LoadError::NotAHandler(_)
                | LoadError::Imports(_)
                | LoadError::CompileTimeout { .. } => ErrorCode::LoadFailed,
                LoadError::Link(_) | LoadError::Join(_) | LoadError::Threads(_) => {
                    ErrorCode::Internal
                }
            },
            RunnerError::Call(error) => Self::code_of(error),
            RunnerError::BodyCut(code) => *code,
        }
    }

    /// The code of a call the runtime ran and that failed.
    pub(crate) fn code_of(error: &ExecuteError) -> ErrorCode {
        match error {
            ExecuteError::Timeout(_) => ErrorCode::Timeout,
            ExecuteError::OutOfMemory(_) => ErrorCode::OutOfMemory,
            ExecuteError::ResponseTooLarge(_) => ErrorCode::TooLarge,
            ExecuteError::Trap { .. }
            | ExecuteError::NoResponse(_)
            | ExecuteError::BodyIncomplete(_) => ErrorCode::Trap,
            ExecuteError::PoolExhausted(_) => ErrorCode::Unavailable,
            ExecuteError::Instantiate(_) => ErrorCode::Internal,
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
            quota: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> ContentHash {
        ContentHash::of(b"bundle")
    }

    fn wasm_error() -> wasmtime::Error {
        wasmtime::Error::msg("detail only the operator sees")
    }

    /// Every kind of runner error, the code it answers and the status that code carries.
    #[test]
    fn each_error_has_one_code_and_status() {
        let cases: Vec<(RunnerError, ErrorCode, u16)> = vec![
            (RunnerError::NoToken, ErrorCode::Unauthorized, 401),
            (TokenError::Missing.into(), ErrorCode::Unauthorized, 401),
            (
                HopError::Missing("x-palisade-tenant".into()).into(),
                ErrorCode::BadRequest,
                400,
            ),
            (RunnerError::NotACall("/x".into()), ErrorCode::NotFound, 404),
            (
                RunnerError::UnknownInstall("i".into()),
                ErrorCode::NotFound,
                404,
            ),
            (
                RunnerError::ContextMismatch {
                    field: "tenant",
                    install_id: "i".into(),
                },
                ErrorCode::NotFound,
                404,
            ),
            (RunnerError::TooLarge(1), ErrorCode::TooLarge, 413),
            (RunnerError::OverQuota("install"), ErrorCode::OverQuota, 429),
            (RunnerError::Draining, ErrorCode::Unavailable, 503),
            (
                RegistryError::ObjectStore(object_store::Error::NotImplemented).into(),
                ErrorCode::Unavailable,
                503,
            ),
            (
                RegistryError::CorruptRow {
                    table: "t",
                    column: "c",
                    key: "k".into(),
                    reason: "r".into(),
                }
                .into(),
                ErrorCode::Internal,
                500,
            ),
            (
                RunnerError::BundleIntegrity {
                    hash: hash(),
                    problem: Integrity::HashMismatch(ContentHash::of(b"other")),
                },
                ErrorCode::BundleIntegrity,
                502,
            ),
            (
                RunnerError::Load {
                    hash: hash(),
                    source: Arc::new(LoadError::Compile(wasm_error())),
                },
                ErrorCode::LoadFailed,
                502,
            ),
            (
                RunnerError::Load {
                    hash: hash(),
                    source: Arc::new(LoadError::Link(wasm_error())),
                },
                ErrorCode::Internal,
                500,
            ),
            (ExecuteError::Timeout(5).into(), ErrorCode::Timeout, 504),
            (
                ExecuteError::OutOfMemory(wasm_error()).into(),
                ErrorCode::OutOfMemory,
                500,
            ),
            (
                ExecuteError::ResponseTooLarge(1).into(),
                ErrorCode::TooLarge,
                413,
            ),
            (
                ExecuteError::Trap {
                    code: "unreachable",
                    source: wasm_error(),
                }
                .into(),
                ErrorCode::Trap,
                500,
            ),
            (
                ExecuteError::NoResponse("dropped".into()).into(),
                ErrorCode::Trap,
                500,
            ),
            (
                ExecuteError::PoolExhausted(wasm_error()).into(),
                ErrorCode::Unavailable,
                503,
            ),
            (
                ExecuteError::Instantiate(wasm_error()).into(),
                ErrorCode::Internal,
                500,
            ),
            (RunnerError::FailedWithoutError, ErrorCode::Internal, 500),
            (
                RunnerError::BodyCut(ErrorCode::Timeout),
                ErrorCode::Timeout,
                504,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code, "{error}");
            let reply = error.into_reply("r-1");
            assert_eq!(reply.status().as_u16(), status, "{code}");
            assert_eq!(reply.headers()[hop::ERROR], code.as_str());
        }
    }
}
