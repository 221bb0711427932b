//! The execute hop, runner side: `{method} /v1/execute/{path}` with the call's context in
//! `x-palisade-*` headers. The request body streams into the guest; the guest's status and
//! headers go out as soon as it sets them, and its body streams back, ending with the
//! outcome and stats trailers (see `palisade_protocol::hop`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TE, TRAILER, TRANSFER_ENCODING};
use http_body::Frame;
use http_body_util::BodyExt;
use palisade_bundle::hash::ContentHash;
use palisade_protocol::body::{Capped, CappedError};
use palisade_protocol::hop::{self, EXECUTE_PREFIX};
use palisade_protocol::{
    BodyOutcome, CallContext, ExecuteStats, HopError, TokenScope, TraceParent,
};
use palisade_registry::ResolvedInstall;
use palisade_runtime::capability::log::CUT_LEVEL;
use palisade_runtime::{
    BodyEvent, CallLimits, GrantSet, GuestBody, Invocation, LogLine, Outcome, RequestBodyError,
    Started,
};

use crate::RunnerState;
use crate::admission::{Permit, Refused};
use crate::error::RunnerError;

pub(crate) async fn execute(State(state): State<Arc<RunnerState>>, request: Request) -> Response {
    let request_id = request
        .headers()
        .get(hop::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match run(&state, request).await {
        Ok(response) => response,
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

pub(crate) fn stats(outcome: &Outcome) -> ExecuteStats {
    ExecuteStats {
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        fuel_consumed: outcome.fuel_consumed,
        peak_memory_bytes: outcome.peak_memory_bytes,
        egress_bytes: outcome.egress_bytes_out + outcome.egress_bytes_in,
        response_bytes: outcome.response_bytes,
        log_lines: outcome.logs.iter().filter(|l| !l.is_cut_mark()).count() as u64,
        dropped_log_lines: outcome.dropped_log_lines,
        log_excerpt: excerpt(&outcome.logs, outcome.dropped_log_lines),
    }
}

/// The path and query inside the extension, from the hop's URI.
fn inner_path(uri: &http::Uri) -> Result<String, RunnerError> {
    let path = uri
        .path()
        .strip_prefix(EXECUTE_PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| RunnerError::NotACall(uri.path().to_owned()))?;
    Ok(match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    })
}

async fn run(state: &RunnerState, request: Request) -> Result<Response, Failure> {
    let (mut parts, body) = request.into_parts();
    let (ctx, path) = authenticate(state, &parts)?;
    let (install, permit) = admit(state, &ctx).await?;
    let manifest_limits = &install.manifest.limits;
    let max_request =
        (state.config.max_request_bytes as u64).min(manifest_limits.max_request_bytes);
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_request) {
        return Err(RunnerError::TooLarge(max_request).into());
    }
    let wants_trailers = parts.headers.get_all(TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "trailers"))
    });
    let prepared = state
        .prepared(&install.content_hash, GrantSet::of(&install.grants))
        .await?;
    let limits = call_limits(state, &install, ctx.timeout_ms);

    // The guest sees the caller's request: no hop header, no framing of the hop.
    hop::strip_hop_headers(&mut parts.headers);
    parts.headers.remove(TE);
    parts.headers.remove(TRANSFER_ENCODING);
    parts.uri = path
        .parse()
        .map_err(|_| RunnerError::NotACall(path.clone()))?;
    let too_large = Arc::new(AtomicBool::new(false));
    // Past its cap the guest's read fails and `too_large` is set, so the call is answered
    // 413.
    let body = Capped::new(body, max_request, Arc::clone(&too_large)).map_err(request_body_error);
    let request = http::Request::from_parts(parts, body);

    let started = state
        .runtime
        .execute(
            &prepared,
            invocation(
                ctx.request_id.clone(),
                &install,
                TRIGGER_HTTP,
                ctx.user_id.clone(),
                call_trace(&ctx),
            ),
            request,
            limits,
        )
        .await;
    // A body past its limit is answered 413 whatever the guest made of it, as long as
    // nothing has been sent yet.
    if too_large.load(Ordering::Relaxed) {
        return Err(RunnerError::TooLarge(max_request).into());
    }
    match started {
        Started::Responded(guest) => Ok(respond(
            guest,
            wants_trailers,
            ctx.request_id,
            permit,
            Observed {
                metrics: Arc::clone(&state.metrics),
                install,
            },
        )),
        Started::Failed(outcome) => {
            state.metrics.observe_call(&install, TRIGGER_HTTP, &outcome);
            let stats = stats(&outcome);
            let error = match outcome.result {
                Err(err) => err.into(),
                Ok(()) => RunnerError::FailedWithoutError,
            };
            Err(Failure {
                error,
                stats: Some(stats),
            })
        }
    }
}

/// Checks the hop's service token against the call it claims, before anything else is
/// looked at, so an anonymous caller learns nothing. Returns the call's context and its
/// path inside the extension.
fn authenticate(
    state: &RunnerState,
    parts: &http::request::Parts,
) -> Result<(CallContext, String), RunnerError> {
    let token = parts
        .headers
        .get(hop::TOKEN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if token.is_empty() {
        return Err(RunnerError::NoToken);
    }
    let ctx = CallContext::read_from(&parts.headers)?;
    let path = inner_path(&parts.uri)?;
    let scope = TokenScope {
        tenant_id: ctx.tenant_id.clone(),
        extension_id: ctx.extension_id.clone(),
        install_id: ctx.install_id.clone(),
        content_hash: ctx.content_hash.clone(),
        method: parts.method.as_str().to_owned(),
        path: path.clone(),
        request_id: ctx.request_id.clone(),
        user_id: ctx.user_id.clone(),
    };
    state.verifier.verify(token, &scope)?;
    Ok((ctx, path))
}

/// The install the call names, checked against the call's context, and the call's place
/// under the install's and the tenant's in-flight caps.
async fn admit(
    state: &RunnerState,
    ctx: &CallContext,
) -> Result<(Arc<ResolvedInstall>, Permit), RunnerError> {
    let install = state
        .installs
        .get(&state.registry, &ctx.install_id, |install| {
            check_context(install, ctx).is_ok()
        })
        .await?
        .ok_or_else(|| RunnerError::UnknownInstall(ctx.install_id.clone()))?;
    check_context(&install, ctx)?;
    let permit = permit(state, &install)?;
    Ok((install, permit))
}

/// The call's place under the install's and the tenant's in-flight caps.
pub(crate) fn permit(
    state: &RunnerState,
    install: &ResolvedInstall,
) -> Result<Permit, RunnerError> {
    state
        .admission
        .try_admit(&install.tenant_id, &install.install_id)
        .map(|permit| permit.counted(state.metrics.in_flight()))
        .map_err(|refused| {
            let scope = match refused {
                Refused::Install => "install",
                Refused::Tenant => "tenant",
            };
            state.metrics.refused(scope);
            RunnerError::OverQuota(scope)
        })
}

/// The call's limits: the manifest's, within the operator's, within what the caller (the
/// gateway) asked for.
pub(crate) fn call_limits(
    state: &RunnerState,
    install: &ResolvedInstall,
    requested_timeout_ms: Option<u64>,
) -> CallLimits {
    let manifest = &install.manifest.limits;
    let operator = state.runtime.config();
    let mut timeout_ms = manifest.timeout_ms.min(operator.max_timeout_ms);
    if let Some(requested) = requested_timeout_ms {
        timeout_ms = timeout_ms.min(requested);
    }
    let memory_mb = manifest.memory_mb.min(operator.max_memory_mb);
    CallLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: usize::try_from(memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
        fuel: manifest.fuel.map(|fuel| fuel.min(operator.fuel_per_call)),
        max_response_bytes: usize::try_from(manifest.max_response_bytes).unwrap_or(usize::MAX),
    }
}

/// The gateway's place in the call's trace (the parent of the runner's), when the hop
/// carried a valid `traceparent`.
fn call_trace(ctx: &CallContext) -> Option<TraceParent> {
    ctx.traceparent.as_deref().and_then(TraceParent::parse)
}

/// Trigger of a call that came over the execute hop.
const TRIGGER_HTTP: &str = "http";

/// What the runtime and the guest know of the call; `user` is the caller's verified user,
/// when a user called, and `parent` the position in the trace the call continues.
pub(crate) fn invocation(
    request_id: String,
    install: &ResolvedInstall,
    trigger: &str,
    user: Option<String>,
    parent: Option<TraceParent>,
) -> Invocation {
    Invocation {
        request_id,
        tenant_id: install.tenant_id.clone(),
        extension_id: install.extension_id.clone(),
        install_id: install.install_id.clone(),
        version_id: install.version_id.clone(),
        version: install.version.clone(),
        content_hash: install.content_hash.to_string(),
        trigger: trigger.to_owned(),
        user,
        trace: parent,
        config: install.config.clone(),
        grants: install.grants.clone(),
    }
}

/// The hop's answer to a guest that set its head: the guest's status and headers (less
/// what it may not say on the hop), its body streamed, the outcome and stats in trailers.
fn respond(
    guest: palisade_runtime::GuestResponse,
    wants_trailers: bool,
    request_id: String,
    permit: Permit,
    observed: Observed,
) -> Response {
    let mut response = Response::new(Body::new(StreamedBody {
        body: guest.body,
        wants_trailers,
        request_id,
        _permit: permit,
        observed,
        ended: false,
    }));
    *response.status_mut() = guest.status;
    let headers = response.headers_mut();
    *headers = guest.headers;
    sanitize_guest_headers(headers);
    headers.insert(
        TRAILER,
        HeaderValue::from_static("x-palisade-outcome, x-palisade-stats"),
    );
    response
}

/// Removes what a guest may not say on the hop: `x-palisade-*` and framing headers. Its
/// `content-length` moves to `x-palisade-content-length`, so the body goes out chunked and
/// can end with trailers.
fn sanitize_guest_headers(headers: &mut HeaderMap) {
    hop::strip_hop_headers(headers);
    for name in [TRAILER, TRANSFER_ENCODING, TE, http::header::CONNECTION] {
        headers.remove(name);
    }
    if let Some(length) = headers.remove(CONTENT_LENGTH) {
        headers.insert(hop::CONTENT_LENGTH, length);
    }
}

/// The caller's request body as the guest reads it: what its cap refuses, and a broken
/// connection, in the runtime's terms.
fn request_body_error(error: CappedError<axum::Error>) -> RequestBodyError {
    match error {
        CappedError::Over(limit) => RequestBodyError::TooLarge(limit),
        CappedError::Inner(e) => RequestBodyError::Aborted(e.to_string()),
    }
}

/// The guest's body on the hop: its data, then the outcome and stats trailers. A cut body
/// is aborted instead for a client that did not ask for trailers, so that it cannot take it
/// for a whole one. Holds the call's admission permit until the body is over.
struct StreamedBody {
    body: GuestBody,
    wants_trailers: bool,
    request_id: String,
    _permit: Permit,
    observed: Observed,
    /// Whether the body reached its end (and the call was counted there).
    ended: bool,
}

/// A body dropped before its end: the gateway stopped reading, because its caller went
/// away. The guest's outcome never arrives; the call is counted as `cancelled`.
impl Drop for StreamedBody {
    fn drop(&mut self) {
        if !self.ended {
            let observed = &self.observed;
            observed
                .metrics
                .observe_cancelled(&observed.install, TRIGGER_HTTP);
        }
    }
}

/// Where a streamed call's end is counted.
struct Observed {
    metrics: Arc<crate::platform_metrics::PlatformMetrics>,
    install: Arc<ResolvedInstall>,
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = RunnerError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RunnerError>>> {
        let this = &mut *self;
        match this.body.poll_event(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(BodyEvent::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(BodyEvent::End(outcome))) => {
                this.ended = true;
                let observed = &this.observed;
                observed
                    .metrics
                    .observe_call(&observed.install, TRIGGER_HTTP, &outcome);
                let stats = stats(&outcome);
                let ending = match outcome.result {
                    Ok(()) => BodyOutcome::Complete,
                    Err(err) => {
                        let error = RunnerError::from(err);
                        tracing::warn!(
                            request_id = %this.request_id,
                            error = %error,
                            bytes = outcome.response_bytes,
                            "guest response body cut"
                        );
                        BodyOutcome::Cut(error.code())
                    }
                };
                if let BodyOutcome::Cut(code) = ending
                    && !this.wants_trailers
                {
                    return Poll::Ready(Some(Err(RunnerError::BodyCut(code))));
                }
                let mut trailers = HeaderMap::new();
                trailers.insert(hop::OUTCOME, ending.to_header());
                trailers.insert(hop::STATS, stats.to_header());
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }
}

/// The context must name exactly the install the registry has: same tenant, extension,
/// version and content hash. A stale or forged context is "not found".
fn check_context(install: &ResolvedInstall, ctx: &CallContext) -> Result<(), RunnerError> {
    let claimed: ContentHash = ctx.content_hash.parse().map_err(|_| HopError::Malformed {
        name: hop::CONTENT_HASH.to_string(),
        reason: "not a content hash".to_owned(),
    })?;
    let mismatch = if install.tenant_id != ctx.tenant_id {
        Some("tenant")
    } else if install.extension_id != ctx.extension_id {
        Some("extension")
    } else if install.version_id != ctx.version_id {
        Some("version")
    } else if install.content_hash != claimed {
        Some("content-hash")
    } else {
        None
    };
    match mismatch {
        Some(field) => Err(RunnerError::ContextMismatch {
            field,
            install_id: install.install_id.clone(),
        }),
        None => Ok(()),
    }
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

    /// The handler as the gateway calls it, through the router, without a socket.
    mod hop {
        use std::sync::Arc;

        use axum::body::Body;
        use http::{Request, StatusCode};
        use palisade_protocol::hop;
        use palisade_protocol::{CallContext, TokenMinter, TokenScope};
        use tower::ServiceExt as _;

        use crate::test_support::{registry_with_install, runner_on};

        struct Hop {
            app: axum::Router,
            minter: TokenMinter,
            context: CallContext,
            _dir: tempfile::TempDir,
        }

        async fn hop() -> Hop {
            let dir = tempfile::tempdir().unwrap();
            let manifest = serde_json::json!({
                "id": "com.example.oneshot",
                "name": "oneshot",
                "version": "1.0.0",
                "publisher": "example",
                "component": "ext.wasm",
                "runtime": "wasi-http@0.2",
                "api": {"endpoints": [{"method": "POST", "path": "/upload"}]},
                "limits": {"max_request_bytes": 1024},
            });
            let (registry, install_id) = registry_with_install(&dir, &manifest).await;
            let install = registry.load_install(&install_id).await.unwrap().unwrap();
            let (state, minter) = runner_on(registry, crate::RunnerConfig::default());
            let context = CallContext {
                request_id: "r-1".into(),
                tenant_id: install.tenant_id.clone(),
                extension_id: install.extension_id.clone(),
                install_id: install.install_id.clone(),
                version_id: install.version_id.clone(),
                content_hash: install.content_hash.to_string(),
                user_id: None,
                timeout_ms: None,
                traceparent: None,
            };
            Hop {
                app: crate::app(Arc::new(state)),
                minter,
                context,
                _dir: dir,
            }
        }

        impl Hop {
            /// A hop request for `path`, its token minted for `token_path`.
            fn request(&self, path: &str, token_path: &str, length: u64) -> Request<Body> {
                let scope = TokenScope {
                    tenant_id: self.context.tenant_id.clone(),
                    extension_id: self.context.extension_id.clone(),
                    install_id: self.context.install_id.clone(),
                    content_hash: self.context.content_hash.clone(),
                    method: "POST".into(),
                    path: token_path.into(),
                    request_id: self.context.request_id.clone(),
                    user_id: self.context.user_id.clone(),
                };
                let mut request = Request::post(format!("/v1/execute{path}"))
                    .header(http::header::CONTENT_LENGTH, length)
                    .body(Body::from(vec![b'x'; length as usize]))
                    .unwrap();
                self.context.write_to(request.headers_mut()).unwrap();
                let token = self.minter.token(&scope).unwrap();
                request
                    .headers_mut()
                    .insert(hop::TOKEN, token.parse().unwrap());
                request
            }

            async fn call(&self, request: Request<Body>) -> (StatusCode, String) {
                let response = self.app.clone().oneshot(request).await.unwrap();
                let code = response
                    .headers()
                    .get(hop::ERROR)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (response.status(), code)
            }
        }

        #[tokio::test]
        async fn refusals_answer_their_status_and_code_before_anything_runs() {
            let hop = hop().await;
            // No token.
            let mut request = hop.request("/upload", "/upload", 1);
            request.headers_mut().remove(hop::TOKEN);
            assert_eq!(
                hop.call(request).await,
                (StatusCode::UNAUTHORIZED, "unauthorized".into())
            );
            // A token minted for another path.
            let request = hop.request("/upload", "/other", 1);
            assert_eq!(
                hop.call(request).await,
                (StatusCode::UNAUTHORIZED, "unauthorized".into())
            );
            // A missing context header.
            let mut request = hop.request("/upload", "/upload", 1);
            request.headers_mut().remove(hop::TENANT);
            assert_eq!(
                hop.call(request).await,
                (StatusCode::BAD_REQUEST, "bad_request".into())
            );
            // A declared body over the manifest's limit: 413 before the bundle is loaded.
            let request = hop.request("/upload", "/upload", 4096);
            assert_eq!(
                hop.call(request).await,
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())
            );
        }

        #[tokio::test]
        async fn a_token_is_good_for_one_call_and_a_stale_context_is_not_found() {
            let hop = hop().await;
            let request = hop.request("/upload", "/upload", 4096);
            let again = Request::from_parts(
                {
                    let (parts, _) = hop.request("/upload", "/upload", 1).into_parts();
                    let mut parts = parts;
                    parts.headers = request.headers().clone();
                    parts.headers.insert(http::header::CONTENT_LENGTH, 1.into());
                    parts
                },
                Body::from("x"),
            );
            // The first use passes the token check (and is refused for its size).
            assert_eq!(hop.call(request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
            // The same token again is refused, whatever the body.
            assert_eq!(
                hop.call(again).await,
                (StatusCode::UNAUTHORIZED, "unauthorized".into())
            );

            // A context naming another version of the install: not found.
            let mut stale = hop.request("/upload", "/upload", 1);
            stale
                .headers_mut()
                .insert(hop::VERSION, "another-version".parse().unwrap());
            assert_eq!(
                hop.call(stale).await,
                (StatusCode::NOT_FOUND, "not_found".into())
            );
        }
    }
}
