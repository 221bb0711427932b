//! One extension call: authenticate the caller, resolve the tenant's install, match the
//! endpoint, forward the request to a runner over the execute hop (the body streamed within
//! its limit), and relay the guest's answer as it streams back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http_body::Body as _;
use http_body_util::BodyExt;
use palisade_bundle::manifest::EndpointCache;
use palisade_protocol::body::{Capped, Guarded};
use palisade_protocol::{BodyOutcome, CallContext, ErrorCode, TokenScope, TraceParent};
use palisade_protocol::{hop, trace};
use palisade_registry::{ExecutionRecord, ResolvedInstall};
use tracing::{Instrument, Span, field};

use crate::app::{API_PREFIX, GatewayState};
use crate::auth::Caller;
use crate::body::{BodyError, content_length, read_body};
use crate::config::GatewayConfig;
use crate::error::{ApiError, CallError};
use crate::execlog;
use crate::headers::{self, REQUEST_ID};
use crate::idempotency::{self, KeyedRequest};
use crate::installs::Resolution;
use crate::relay::{RelayBody, SharedReport};
use crate::routing::match_endpoint;
use crate::runner::{HopBody, HopRequest, RunnerReply, SharedBody};
use crate::{quota, ratelimit};

/// Extra time given to a runner beyond the guest's deadline, so that the runner's own
/// timeout answer (and its accounting) arrives before the gateway gives up.
pub const RUNNER_GRACE: Duration = Duration::from_secs(2);

/// The handler of `/api/ext/{extension_id}/{*path}`.
pub(crate) async fn extension_call(
    State(state): State<Arc<GatewayState>>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let request_id = headers::request_id(request.headers());
    let span = tracing::info_span!(
        "extension_call",
        request_id = %request_id,
        trace_id = field::Empty,
        tenant = field::Empty,
        extension = field::Empty,
        version = field::Empty,
        content_hash = field::Empty,
    );
    // The caller's trace when it sent a valid one, else a new one; this call is a span of
    // it, and the parent of the runner's.
    let caller_trace = request
        .headers()
        .get(trace::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    let trace = trace::join(&span, caller_trace);
    span.record("trace_id", trace.trace_id().as_str());
    let mut response = serve(&state, request, &request_id, trace, started)
        .instrument(span)
        .await;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

async fn serve(
    state: &Arc<GatewayState>,
    request: Request,
    request_id: &str,
    trace: TraceParent,
    started: Instant,
) -> Response {
    let (parts, body) = request.into_parts();
    let admitted = match admit(state, &parts).await {
        Ok(admitted) => admitted,
        Err(error) => return error.into_api_error(request_id).into_response(),
    };
    let Admitted {
        extension_id,
        path,
        caller,
        mut install,
        cached,
    } = admitted;
    let call = Call {
        state,
        parts: &parts,
        path,
        request_id,
        user: caller.user_id.as_deref(),
        trace,
    };
    let mut body = CallBody::Unread(body);
    let (template, result) = match call.keyed_request(&install, &mut body).await {
        Err(error) => (None, Err(error)),
        Ok(keyed) => {
            state
                .idempotency
                .run(
                    &caller.tenant_id,
                    extension_id,
                    keyed,
                    request_id,
                    call.forward(&mut install, cached, body),
                )
                .await
        }
    };
    logged(state, &call, &install, template, result, started)
}

/// A call that may go to a runner: who calls, and the enabled install it names.
struct Admitted<'p> {
    extension_id: &'p str,
    /// The path inside the extension.
    path: &'p str,
    caller: Caller,
    install: Arc<ResolvedInstall>,
    /// Whether the install was answered from the cache.
    cached: bool,
}

/// The checks before a call is forwarded, in order: the path names an extension, the
/// caller is authenticated, within the caller's and the tenant's rate limits, has an
/// enabled install of the extension, the install is within its rate limit, and the tenant
/// and the install are within their quotas (which counts the call against them). Each
/// finding is recorded on the call's span.
async fn admit<'p>(state: &GatewayState, parts: &'p Parts) -> Result<Admitted<'p>, CallError> {
    let span = Span::current();
    let (extension_id, path) = split_path(parts.uri.path()).ok_or(CallError::NoExtension)?;
    span.record("extension", extension_id);
    let caller = state.auth.authenticate(&parts.headers)?;
    span.record("tenant", caller.tenant_id.as_str());
    // Before resolution, so that calls naming unknown extensions are limited as well.
    check_caller_limits(state, &caller).map_err(|retry_after| CallError::RateLimited {
        scope: "caller or tenant",
        retry_after,
    })?;
    let resolution = state
        .installs
        .resolve(&state.registry, &caller.tenant_id, extension_id)
        .await?;
    let install = resolution.install.ok_or(CallError::NotInstalled)?;
    record_install(&span, &install);
    state
        .rate_limiter
        .check(&install.install_id)
        .map_err(|retry_after| CallError::RateLimited {
            scope: "install",
            retry_after,
        })?;
    state
        .quotas
        .admit(&state.registry, &install, quota::now_ms())
        .await?;
    Ok(Admitted {
        extension_id,
        path,
        caller,
        install,
        cached: resolution.cached,
    })
}

/// The answer of a forwarded call (or the refusal of its request), with its
/// execution-log row attached: the row is written when the answer has been sent (or the
/// caller went away), since a streamed guest answer ends with what the runner reports of
/// the call.
fn logged(
    state: &Arc<GatewayState>,
    call: &Call<'_>,
    install: &ResolvedInstall,
    template: Option<String>,
    result: Result<Response, ApiError>,
    started: Instant,
) -> Response {
    let (mut response, error, stats) = match result {
        Ok(response) => (response, None, None),
        Err(mut error) => {
            let code = error.code;
            let stats = error.stats.take();
            (error.into_response(), Some(code), stats)
        }
    };
    let mut record = execlog::record(call.request_id, install, &call.parts.method, template);
    record.user_id = call.user.map(str::to_owned);
    record.trace_id = Some(call.trace.trace_id());
    execlog::finish(&mut record, response.status(), error, Duration::ZERO);
    if let Some(stats) = stats {
        execlog::add_stats(&mut record, *stats);
    }
    let report = response.extensions_mut().remove::<SharedReport>();
    let row = PendingRow {
        state: Arc::clone(state),
        record: Some(record),
        report,
        started,
    };
    response.map(|body| Body::new(Guarded::new(body, row)))
}

/// A call's execution-log row, submitted when the answer's body is dropped: after its end
/// went out, or when the caller went away.
struct PendingRow {
    state: Arc<GatewayState>,
    record: Option<ExecutionRecord>,
    report: Option<SharedReport>,
    started: Instant,
}

impl Drop for PendingRow {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        record.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if let Some(report) = &self.report {
            let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(stats) = report.stats.take() {
                execlog::add_stats(&mut record, stats);
            }
            record.response_bytes = Some(report.bytes);
            match report.ending {
                Some(BodyOutcome::Complete) => {}
                Some(BodyOutcome::Cut(code)) => {
                    tracing::warn!(
                        %code,
                        bytes = report.bytes,
                        "the guest's answer was cut after its head was sent"
                    );
                    record.outcome = execlog::outcome(Some(code)).to_owned();
                    record.error_code = Some(code.as_str().to_owned());
                }
                None => {
                    tracing::info!(
                        bytes = report.bytes,
                        "the caller went away before the answer ended"
                    );
                    record.outcome = execlog::CANCELLED.to_owned();
                }
            }
        }
        self.state.metrics.observe_call(&record, elapsed);
        self.state.execution_log.submit(record);
    }
}

/// Takes a token from the caller's bucket (when the token names a user), then from the
/// tenant's; `Err` carries the seconds until the refusing bucket has one.
fn check_caller_limits(state: &GatewayState, caller: &Caller) -> Result<(), u64> {
    if let Some(user) = &caller.user_id
        && state.caller_limiter.is_enabled()
    {
        state
            .caller_limiter
            .check(&ratelimit::caller_key(&caller.tenant_id, user))?;
    }
    state.tenant_limiter.check(&caller.tenant_id)
}

fn record_install(span: &Span, install: &ResolvedInstall) {
    span.record("version", install.version.as_str());
    span.record("content_hash", field::display(&install.content_hash));
}

/// Splits `/api/ext/{extension_id}{path}` into the id and the path inside the extension
/// (`/` when there is none).
fn split_path(full: &str) -> Option<(&str, &str)> {
    let rest = full.strip_prefix(API_PREFIX)?;
    let (extension_id, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    (!extension_id.is_empty()).then_some((extension_id, path))
}

/// The largest request body `install` accepts here.
fn request_limit(config: &GatewayConfig, install: &ResolvedInstall) -> usize {
    usize::try_from(install.manifest.limits.max_request_bytes)
        .unwrap_or(usize::MAX)
        .min(config.max_request_bytes)
}

/// One call, from endpoint matching to the runner's answer.
struct Call<'a> {
    state: &'a GatewayState,
    parts: &'a Parts,
    /// The path inside the extension.
    path: &'a str,
    request_id: &'a str,
    /// The calling user, when the caller's token names one.
    user: Option<&'a str>,
    /// The call's place in its trace: the parent of what the runner does.
    trace: TraceParent,
}

/// Why an attempt produced no guest answer.
enum Refusal {
    /// Answer with this error.
    Error(ApiError),
    /// The runner does not know the install as sent — it was disabled, removed or moved
    /// to another version after it was resolved — and ran nothing; the error is its answer.
    StaleInstall(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Error(error)
    }
}

impl Refusal {
    fn into_error(self) -> ApiError {
        match self {
            Refusal::Error(error) | Refusal::StaleInstall(error) => error,
        }
    }
}

/// Bodies up to this size, with a declared length, are read whole before the call, so that
/// a call can be sent again to another runner; larger and unsized ones stream.
const BUFFERED_BODY_BYTES: u64 = 64 * 1024;

/// The caller's body, as far as it has been taken.
enum CallBody {
    /// Not looked at yet.
    Unread(Body),
    /// Read whole.
    Read(Bytes),
    /// Streaming to the runner (and to a second attempt, while no attempt has read it).
    Streaming {
        body: SharedBody,
        too_large: Arc<AtomicBool>,
    },
}

impl CallBody {
    /// The body as the hop sends it, within `limit`: small bodies are read whole, the rest
    /// stream (`too_large` then tells when the stream went over).
    async fn for_hop(
        &mut self,
        headers: &http::HeaderMap,
        limit: usize,
        timeout: Duration,
    ) -> Result<(HopBody, Option<Arc<AtomicBool>>), BodyError> {
        if let CallBody::Unread(body) = self {
            let declared = content_length(headers);
            if declared.is_some_and(|length| length > limit as u64) {
                return Err(BodyError::TooLarge { limit });
            }
            let body = std::mem::take(body);
            *self = if body.is_end_stream() {
                CallBody::Read(Bytes::new())
            } else if declared.is_some_and(|length| length <= BUFFERED_BODY_BYTES) {
                CallBody::Read(read_body(headers, body, limit, timeout).await?)
            } else {
                let too_large = Arc::new(AtomicBool::new(false));
                let limited = Capped::new(body, limit as u64, Arc::clone(&too_large));
                CallBody::Streaming {
                    body: SharedBody::new(Body::new(limited)),
                    too_large,
                }
            };
        }
        match self {
            CallBody::Read(bytes) if bytes.len() > limit => Err(BodyError::TooLarge { limit }),
            CallBody::Read(bytes) => Ok((HopBody::Buffered(bytes.clone()), None)),
            CallBody::Streaming { body, too_large } => {
                Ok((HopBody::Streamed(body.clone()), Some(Arc::clone(too_large))))
            }
            CallBody::Unread(_) => Ok((HopBody::Buffered(Bytes::new()), None)),
        }
    }

    /// The whole body, at most `limit` bytes (for an idempotency fingerprint).
    async fn bytes(
        &mut self,
        headers: &http::HeaderMap,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, BodyError> {
        if let CallBody::Unread(body) = self {
            let bytes = read_body(headers, std::mem::take(body), limit, timeout).await?;
            *self = CallBody::Read(bytes);
        }
        match self {
            CallBody::Read(bytes) if bytes.len() > limit => Err(BodyError::TooLarge { limit }),
            CallBody::Read(bytes) => Ok(bytes.clone()),
            _ => Ok(Bytes::new()),
        }
    }
}

impl Call<'_> {
    fn fail(&self, error: impl Into<CallError>) -> ApiError {
        error.into().into_api_error(self.request_id)
    }

    /// The request's idempotency key and fingerprint, when it carries a key. The body is
    /// read here (within the install's limit), since its digest is part of the fingerprint.
    async fn keyed_request(
        &self,
        install: &ResolvedInstall,
        body: &mut CallBody,
    ) -> Result<Option<KeyedRequest>, ApiError> {
        let parts = self.parts;
        let key = match idempotency::request_key(&parts.method, &parts.headers) {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.fail(err)),
        };
        let config = &self.state.config;
        let bytes = body
            .bytes(
                &parts.headers,
                request_limit(config, install),
                config.request_timeout,
            )
            .await
            .map_err(|err| self.fail(err))?;
        Ok(Some(KeyedRequest::new(key, parts, self.user, &bytes)))
    }

    /// Everything after resolution, for `install`. When the runner finds a cached install
    /// stale, the install is resolved again from the registry and the call is made once
    /// more with it; `install` is left at the one the answer is for. Returns the matched
    /// endpoint template (if any) and the answer.
    async fn forward(
        &self,
        install: &mut Arc<ResolvedInstall>,
        cached: bool,
        mut body: CallBody,
    ) -> (Option<String>, Result<Response, ApiError>) {
        let (template, result) = self.attempt(install, &mut body).await;
        let refused = match result {
            Ok(response) => return (template, Ok(response)),
            Err(Refusal::Error(error)) => return (template, Err(error)),
            Err(Refusal::StaleInstall(error)) => error,
        };
        let state = self.state;
        state
            .installs
            .invalidate(&install.tenant_id, &install.extension_id);
        if !cached {
            return (template, Err(refused));
        }
        tracing::info!("the runner no longer knows the cached install; resolving it again");
        match state
            .installs
            .resolve(&state.registry, &install.tenant_id, &install.extension_id)
            .await
        {
            Ok(Resolution {
                install: Some(fresh),
                ..
            }) => {
                *install = fresh;
                record_install(&Span::current(), install);
                let (template, result) = self.attempt(install, &mut body).await;
                (template, result.map_err(Refusal::into_error))
            }
            Ok(Resolution { install: None, .. }) => (template, Err(refused)),
            Err(err) => {
                tracing::error!(error = %err, "resolving the install again failed");
                (template, Err(refused))
            }
        }
    }

    /// Matches the endpoint of `install` and calls the runner.
    async fn attempt(
        &self,
        install: &ResolvedInstall,
        body: &mut CallBody,
    ) -> (Option<String>, Result<Response, Refusal>) {
        let parts = self.parts;
        let endpoints = install
            .manifest
            .api
            .endpoints
            .iter()
            .map(|e| (e.method.as_str(), e.path.as_str()));
        let Some(found) = match_endpoint(endpoints, &parts.method, self.path) else {
            let error = CallError::NoEndpoint {
                method: parts.method.clone(),
                path: self.path.to_owned(),
            };
            return (None, Err(self.fail(error).into()));
        };
        // A HEAD served by a GET (or any-method) endpoint reaches the guest as GET; the
        // body is dropped here.
        let head_as_get =
            parts.method == Method::HEAD && !found.method.eq_ignore_ascii_case("HEAD");
        let method = if head_as_get {
            Method::GET
        } else {
            parts.method.clone()
        };
        let template = Some(found.template.to_owned());
        let cache = install
            .manifest
            .api
            .endpoints
            .iter()
            .find(|e| e.method == found.method && e.path == found.template)
            .map(|e| e.cache)
            .unwrap_or_default();
        let result = self.invoke(install, method, body, head_as_get, cache).await;
        (template, result)
    }

    async fn invoke(
        &self,
        install: &ResolvedInstall,
        method: Method,
        body: &mut CallBody,
        head_as_get: bool,
        cache: EndpointCache,
    ) -> Result<Response, Refusal> {
        let config = &self.state.config;
        let limits = &install.manifest.limits;
        let (body, too_large) = body
            .for_hop(
                &self.parts.headers,
                request_limit(config, install),
                config.request_timeout,
            )
            .await
            .map_err(|err| self.fail(err))?;

        let budget = config
            .request_timeout
            .min(Duration::from_millis(limits.timeout_ms));
        let request = self
            .hop_request(install, method, body, budget)
            .map_err(|err| self.fail(err))?;
        let content_hash = install.content_hash.to_string();
        let reply = self
            .state
            .runner
            .execute(&content_hash, &request, budget + RUNNER_GRACE)
            .await;
        // A body past its limit is answered 413, whatever the runner made of it.
        if too_large.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            let limit = request_limit(config, install);
            return Err(self.fail(BodyError::TooLarge { limit }).into());
        }
        match reply.map_err(|err| self.fail(err))? {
            RunnerReply::Guest(reply) => Ok(self
                .guest_response(install, reply, head_as_get, cache)
                .await?),
            RunnerReply::Platform {
                status,
                code,
                retry_after,
                stats,
            } => {
                let error = ApiError {
                    stats: stats.map(Box::new),
                    ..self.fail(CallError::Runner {
                        status,
                        code,
                        retry_after,
                    })
                };
                // The runner checks the install named by the call against the registry
                // before running anything, and answers `not_found` when it differs.
                Err(if code == ErrorCode::NotFound {
                    Refusal::StaleInstall(error)
                } else {
                    Refusal::Error(error)
                })
            }
        }
    }

    /// The request to the runner: the caller's path and query, the headers the policy
    /// lets through, the call's context, and a service token scoped to exactly this call.
    fn hop_request(
        &self,
        install: &ResolvedInstall,
        method: Method,
        body: HopBody,
        budget: Duration,
    ) -> Result<HopRequest, CallError> {
        let path = match self.parts.uri.query() {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.to_owned(),
        };
        let context = CallContext {
            request_id: self.request_id.to_owned(),
            tenant_id: install.tenant_id.clone(),
            extension_id: install.extension_id.clone(),
            install_id: install.install_id.clone(),
            version_id: install.version_id.clone(),
            content_hash: install.content_hash.to_string(),
            user_id: self.user.map(str::to_owned),
            timeout_ms: Some(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX)),
            traceparent: Some(self.trace.to_string()),
        };
        let scope = TokenScope {
            tenant_id: context.tenant_id.clone(),
            extension_id: context.extension_id.clone(),
            install_id: context.install_id.clone(),
            content_hash: context.content_hash.clone(),
            method: method.as_str().to_owned(),
            path: path.clone(),
            request_id: context.request_id.clone(),
            user_id: context.user_id.clone(),
        };
        let token = self.state.minter.header(&scope)?;
        let mut headers = headers::forward_request_headers(
            &self.parts.headers,
            self.request_id,
            &install.manifest.api.headers.request,
        );
        context.write_to(&mut headers)?;
        headers.insert(hop::TOKEN, token);
        Ok(HopRequest {
            method,
            path,
            headers,
            body,
        })
    }

    /// The caller's answer from the guest's: its status, the headers the policy lets
    /// through, and its body relayed as it streams.
    async fn guest_response(
        &self,
        install: &ResolvedInstall,
        reply: http::Response<hyper::body::Incoming>,
        head_as_get: bool,
        cache: EndpointCache,
    ) -> Result<Response, ApiError> {
        let (parts, incoming) = reply.into_parts();
        let status = parts.status;
        if status.is_informational() {
            return Err(self.fail(CallError::Informational(status)));
        }
        let declared = parts
            .headers
            .get(hop::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (mut headers, dropped) = headers::filter_response_headers(
            &parts.headers,
            status,
            &install.manifest.api.headers.response,
        );
        if !dropped.is_empty() {
            tracing::debug!(?dropped, "guest response headers dropped");
        }
        headers::apply_cache_policy(&mut headers, cache);
        let report = SharedReport::default();
        let relay = RelayBody::new(incoming, declared, Arc::clone(&report));
        let mut response = if head_as_get {
            // The length the GET would have had, as HEAD semantics ask: read (and count)
            // the body the runner sends, bounded by the response limit it enforces.
            let length = match relay.collect().await {
                Ok(collected) => collected.to_bytes().len(),
                Err(err) => {
                    tracing::warn!(error = %err, "reading the guest's answer to a HEAD");
                    let code = report
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .ending
                        .and_then(|ending| match ending {
                            BodyOutcome::Cut(code) => Some(code),
                            BodyOutcome::Complete => None,
                        })
                        .unwrap_or(ErrorCode::Internal);
                    return Err(self.fail(CallError::HeadCut(code)));
                }
            };
            let mut response = (status, Body::empty()).into_response();
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
            response
        } else {
            (status, Body::new(relay)).into_response()
        };
        response.headers_mut().extend(headers);
        response.extensions_mut().insert(report);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_extension_and_inner_path() {
        assert_eq!(split_path("/api/ext/com.x"), Some(("com.x", "/")));
        assert_eq!(split_path("/api/ext/com.x/"), Some(("com.x", "/")));
        assert_eq!(split_path("/api/ext/com.x/a/b"), Some(("com.x", "/a/b")));
        assert_eq!(
            split_path("/api/ext/com.x/a%2Fb/"),
            Some(("com.x", "/a%2Fb/"))
        );
        assert_eq!(split_path("/api/ext/"), None);
        assert_eq!(split_path("/api/ext//x"), None);
        assert_eq!(split_path("/other"), None);
    }
}
