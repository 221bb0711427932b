//! `POST /v1/execute`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use palisade_bundle::hash::ContentHash;
use palisade_protocol::{ExecuteRequest, ExecuteResponse, ExecuteStats, TokenScope};
use palisade_registry::ResolvedInstall;
use palisade_runtime::capability::log::CUT_LEVEL;
use palisade_runtime::{CallLimits, ExecuteError, GrantSet, Invocation, LogLine, Outcome};

use crate::RunnerState;
use crate::admission::Refused;
use crate::error::RunnerError;

pub(crate) async fn execute(
    State(state): State<Arc<RunnerState>>,
    headers: HeaderMap,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Response {
    // Authenticate before looking at the body, so an anonymous caller learns nothing.
    let token = bearer(&headers);
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            let err = if token.is_none() {
                RunnerError::Unauthorized("no service token".into())
            } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                RunnerError::TooLarge(state.config.max_request_bytes)
            } else {
                RunnerError::BadRequest(rejection.body_text())
            };
            return err.into_reply("");
        }
    };
    let request_id = request.context.request_id.clone();
    match run(&state, token, request).await {
        Ok(response) => (StatusCode::OK, Json(response)).into_response(),
        Err(Failure { error, stats }) => error.into_reply_with_stats(&request_id, stats),
    }
}

/// A refused or failed call, with what it consumed if it ran.
struct Failure {
    error: RunnerError,
    stats: Option<ExecuteStats>,
}

impl From<RunnerError> for Failure {
    fn from(error: RunnerError) -> Self {
        Failure { error, stats: None }
    }
}

/// Bound on the log excerpt sent for the execution log.
const LOG_EXCERPT_BYTES: usize = 4096;

/// Room kept at the end of a full excerpt for the line that says what is missing.
const EXCERPT_TRAILER_BYTES: usize = 128;

/// The first log lines of a call, one per line, at most [`LOG_EXCERPT_BYTES`]. When not
/// every line fits, the excerpt ends with a line saying how many are missing; a log the
/// runtime cut ends with the runtime's `cut` line (the lines are escaped, so each is one
/// line of text).
fn excerpt(lines: &[LogLine], dropped: u64) -> String {
    let render = |line: &LogLine| {
        let fields: String = line
            .fields
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect();
        format!("{} {}{}\n", line.level, line.message, fields)
    };
    let total: usize = lines.iter().map(|l| render(l).len()).sum();
    if total <= LOG_EXCERPT_BYTES {
        return lines.iter().map(render).collect();
    }
    let room = LOG_EXCERPT_BYTES - EXCERPT_TRAILER_BYTES;
    let mut excerpt = String::new();
    let mut shown = 0;
    for line in lines.iter().filter(|l| !l.is_cut_mark()) {
        let text = render(line);
        if excerpt.len() + text.len() <= room {
            excerpt.push_str(&text);
            shown += 1;
            continue;
        }
        // The line that does not fit is shown cut, when a useful part of it fits.
        let left = room - excerpt.len();
        if left > 32 {
            let mut end = left - "…\n".len();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            excerpt.push_str(&text[..end]);
            excerpt.push_str("…\n");
            shown += 1;
        }
        break;
    }
    let kept = lines.iter().filter(|l| !l.is_cut_mark()).count();
    let missing = (kept - shown) as u64 + dropped;
    excerpt.push_str(&format!(
        "{CUT_LEVEL} excerpt ends here: {missing} more lines not shown\n"
    ));
    excerpt
}

fn stats(outcome: &Outcome) -> ExecuteStats {
    ExecuteStats {
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        fuel_consumed: outcome.fuel_consumed,
        peak_memory_bytes: outcome.peak_memory_bytes,
        egress_bytes: outcome.egress_bytes_out + outcome.egress_bytes_in,
        log_lines: outcome.logs.iter().filter(|l| !l.is_cut_mark()).count() as u64,
        dropped_log_lines: outcome.dropped_log_lines,
        log_excerpt: excerpt(&outcome.logs, outcome.dropped_log_lines),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn run(
    state: &RunnerState,
    token: Option<&str>,
    request: ExecuteRequest,
) -> Result<ExecuteResponse, Failure> {
    let ctx = &request.context;
    let scope = TokenScope {
        tenant_id: ctx.tenant_id.clone(),
        extension_id: ctx.extension_id.clone(),
        install_id: ctx.install_id.clone(),
        content_hash: ctx.content_hash.clone(),
    };
    state
        .verifier
        .verify(token.unwrap_or_default(), &scope)
        .map_err(|e| RunnerError::Unauthorized(e.to_string()))?;

    let install = state
        .installs
        .get(&state.registry, &ctx.install_id, |install| {
            check_context(install, &request).is_ok()
        })
        .await
        .map_err(|e| RunnerError::Internal(e.to_string()))?
        .ok_or_else(|| RunnerError::NotFound(format!("install {}", ctx.install_id)))?;
    check_context(&install, &request)?;
    let _permit = state
        .admission
        .try_admit(&install.tenant_id, &install.install_id)
        .map_err(|refused| {
            RunnerError::OverQuota(format!(
                "in-flight cap per {} reached",
                match refused {
                    Refused::Install => "install",
                    Refused::Tenant => "tenant",
                }
            ))
        })?;

    let body = request
        .http
        .body()
        .map_err(|e| RunnerError::BadRequest(format!("http.body_b64: {e}")))?;
    let manifest_limits = &install.manifest.limits;
    let max_request = state
        .config
        .max_request_bytes
        .min(usize::try_from(manifest_limits.max_request_bytes).unwrap_or(usize::MAX));
    if body.len() > max_request {
        return Err(RunnerError::TooLarge(max_request).into());
    }
    let http_request = to_http(&request, body)?;

    let grants = GrantSet::of(&install.grants);
    let prepared = state.prepared(&install.content_hash, grants).await?;

    let runtime_config = state.runtime.config();
    let mut timeout_ms = manifest_limits
        .timeout_ms
        .min(runtime_config.max_timeout_ms);
    if let Some(requested) = request.limits.timeout_ms {
        timeout_ms = timeout_ms.min(requested);
    }
    let memory_mb = manifest_limits.memory_mb.min(runtime_config.max_memory_mb);
    let limits = CallLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: usize::try_from(memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
        fuel: manifest_limits
            .fuel
            .map(|fuel| fuel.min(runtime_config.fuel_per_call)),
        max_response_bytes: usize::try_from(manifest_limits.max_response_bytes)
            .unwrap_or(usize::MAX),
    };
    let invocation = Invocation {
        request_id: ctx.request_id.clone(),
        tenant_id: install.tenant_id.clone(),
        extension_id: install.extension_id.clone(),
        install_id: install.install_id.clone(),
        version_id: install.version_id.clone(),
        version: install.version.clone(),
        content_hash: install.content_hash.to_string(),
        trigger: "http".into(),
        config: install.config.clone(),
        grants: install.grants.clone(),
    };
    let outcome = state
        .runtime
        .execute(&prepared, invocation, http_request, limits)
        .await;
    let stats = stats(&outcome);
    match outcome.result {
        Ok(response) => {
            let mut reply = ExecuteResponse::new(response.status, response.headers, &response.body);
            reply.stats = Some(stats);
            Ok(reply)
        }
        Err(err) => Err(Failure {
            stats: Some(stats),
            error: match err {
                ExecuteError::Timeout(_) => RunnerError::Timeout(err.to_string()),
                ExecuteError::OutOfMemory(_) => RunnerError::OutOfMemory(err.to_string()),
                ExecuteError::Trap { .. }
                | ExecuteError::NoResponse(_)
                | ExecuteError::ResponseTooLarge(_) => RunnerError::Trap(err.to_string()),
                ExecuteError::PoolExhausted(_) => RunnerError::Unavailable(err.to_string()),
                ExecuteError::Instantiate(_) => RunnerError::Internal(err.to_string()),
            },
        }),
    }
}

/// The request's context must name exactly the install the registry has: same tenant,
/// extension, version and content hash. A stale or forged context is "not found".
fn check_context(install: &ResolvedInstall, request: &ExecuteRequest) -> Result<(), RunnerError> {
    let ctx = &request.context;
    let claimed: ContentHash = ctx
        .content_hash
        .parse()
        .map_err(|_| RunnerError::BadRequest("context.content_hash is malformed".into()))?;
    let mismatch = if install.tenant_id != ctx.tenant_id {
        Some("tenant_id")
    } else if install.extension_id != ctx.extension_id {
        Some("extension_id")
    } else if install.version_id != ctx.version_id {
        Some("version_id")
    } else if install.content_hash != claimed {
        Some("content_hash")
    } else {
        None
    };
    match mismatch {
        Some(field) => Err(RunnerError::NotFound(format!(
            "context.{field} does not match install {}",
            install.install_id
        ))),
        None => Ok(()),
    }
}

fn to_http(request: &ExecuteRequest, body: Vec<u8>) -> Result<http::Request<Bytes>, RunnerError> {
    let http = &request.http;
    let method = http::Method::from_bytes(http.method.as_bytes()).map_err(|_| {
        RunnerError::BadRequest(format!("http.method `{}` is invalid", http.method))
    })?;
    if !http.path.starts_with('/') {
        return Err(RunnerError::BadRequest(
            "http.path must start with `/`".into(),
        ));
    }
    let uri = match &http.query {
        Some(q) if !q.is_empty() => format!("{}?{}", http.path, q),
        _ => http.path.clone(),
    };
    let mut builder = http::Request::builder().method(method).uri(&uri);
    for (name, value) in &http.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Bytes::from(body))
        .map_err(|e| RunnerError::BadRequest(format!("http request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &'static str, message: &str) -> LogLine {
        LogLine {
            level,
            message: message.to_owned(),
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_short_log_is_the_whole_excerpt() {
        let lines = [line("info", "a"), line("stdout", "b")];
        assert_eq!(excerpt(&lines, 0), "info a\nstdout b\n");
    }

    /// An excerpt too small for the log says so on its last line, counting the lines it
    /// leaves out and those the runtime dropped.
    #[test]
    fn a_full_excerpt_marks_its_cut() {
        let mut lines: Vec<LogLine> = (0..100)
            .map(|i| line("info", &format!("{i:03} {}", "x".repeat(96))))
            .collect();
        lines.push(line(CUT_LEVEL, "log cut"));
        let text = excerpt(&lines, 7);
        assert!(text.len() <= LOG_EXCERPT_BYTES, "{}", text.len());
        let last = text.lines().last().unwrap();
        let shown = text.lines().count() - 1;
        assert_eq!(
            last,
            format!(
                "cut excerpt ends here: {} more lines not shown",
                100 - shown + 7
            )
        );
    }
}
