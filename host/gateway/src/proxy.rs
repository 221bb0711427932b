//! One extension call: authenticate the caller, resolve the tenant's install, match the
//! endpoint, read the body within limits, forward to a runner, and answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use palisade_bundle::manifest::EndpointCache;
use palisade_protocol::{
    ErrorCode, ExecuteLimits, ExecuteRequest, ExecuteResponse, ExecuteStats, HttpRequest,
    InvocationContext, TokenScope,
};
use palisade_registry::{RegistryError, ResolvedInstall};
use tracing::{Instrument, Span, field};

use crate::app::{API_PREFIX, GatewayState};
use crate::auth::Caller;
use crate::body::{BodyError, read_body};
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::execlog;
use crate::headers::{self, REQUEST_ID};
use crate::idempotency::{self, KeyedRequest};
use crate::installs::Resolution;
use crate::ratelimit;
use crate::routing::match_endpoint;
use crate::runner::{RunnerError, RunnerReply};

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
        tenant = field::Empty,
        extension = field::Empty,
        version = field::Empty,
        content_hash = field::Empty,
    );
    let mut response = serve(&state, request, &request_id, started)
        .instrument(span)
        .await;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

async fn serve(
    state: &GatewayState,
    request: Request,
    request_id: &str,
    started: Instant,
) -> Response {
    let (parts, body) = request.into_parts();
    let span = Span::current();
    let Some((extension_id, path)) = split_path(parts.uri.path()) else {
        return ApiError::new(ErrorCode::NotFound, request_id).into_response();
    };
    span.record("extension", extension_id);

    let caller = match state.auth.authenticate(&parts.headers) {
        Ok(caller) => caller,
        Err(err) => {
            tracing::info!(error = %err, "caller refused");
            let mut response = ApiError::new(ErrorCode::Unauthorized, request_id).into_response();
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(err.challenge()),
            );
            return response;
        }
    };
    span.record("tenant", caller.tenant_id.as_str());

    // Before resolution, so that calls naming unknown extensions are limited as well.
    if let Err(retry_after) = check_caller_limits(state, &caller) {
        tracing::info!(retry_after, "caller or tenant over its rate limit");
        let mut error = ApiError::new(ErrorCode::OverQuota, request_id);
        error.retry_after = Some(HeaderValue::from(retry_after));
        return error.into_response();
    }

    let resolution = match state
        .installs
        .resolve(&state.registry, &caller.tenant_id, extension_id)
        .await
    {
        Ok(resolution) => resolution,
        Err(err) => {
            tracing::error!(error = %err, "resolving the install failed");
            return ApiError::new(registry_error_code(&err), request_id).into_response();
        }
    };
    let Some(mut install) = resolution.install else {
        tracing::info!("no enabled install of this extension for the tenant");
        return ApiError::new(ErrorCode::NotFound, request_id).into_response();
    };
    record_install(&span, &install);

    if let Err(retry_after) = state.rate_limiter.check(&install.install_id) {
        tracing::info!(retry_after, "install over its rate limit");
        let mut error = ApiError::new(ErrorCode::OverQuota, request_id);
        error.retry_after = Some(HeaderValue::from(retry_after));
        return error.into_response();
    }

    let call = Call {
        state,
        parts: &parts,
        path,
        request_id,
    };
    let mut body = CallBody {
        unread: Some(body),
        read: None,
    };
    let (template, result) = match call
        .keyed_request(&install, caller.user_id.as_deref(), &mut body)
        .await
    {
        Err(error) => (None, Err(error)),
        Ok(keyed) => {
            state
                .idempotency
                .run(
                    &caller.tenant_id,
                    extension_id,
                    keyed,
                    request_id,
                    call.forward(&mut install, resolution.cached, body),
                )
                .await
        }
    };
    let (mut response, error) = match result {
        Ok(response) => (response, None),
        Err(error) => {
            let code = error.code;
            (error.into_response(), Some(code))
        }
    };

    let mut record = execlog::record(request_id, &install, &parts.method, template);
    execlog::finish(&mut record, response.status(), error, started.elapsed());
    if let Some(stats) = response.extensions_mut().remove::<ExecuteStats>() {
        execlog::add_stats(&mut record, stats);
    }
    state.execution_log.submit(record);
    response
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

fn registry_error_code(err: &RegistryError) -> ErrorCode {
    match err {
        RegistryError::CorruptRow { .. } => ErrorCode::Internal,
        _ => ErrorCode::Unavailable,
    }
}

/// One call, from endpoint matching to the runner's answer.
struct Call<'a> {
    state: &'a GatewayState,
    parts: &'a Parts,
    /// The path inside the extension.
    path: &'a str,
    request_id: &'a str,
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

/// The caller's body: read once, by the first attempt, and kept for a second one.
struct CallBody {
    unread: Option<Body>,
    read: Option<Bytes>,
}

impl CallBody {
    /// The body's bytes, at most `limit` of them.
    async fn bytes(
        &mut self,
        headers: &http::HeaderMap,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, BodyError> {
        if let Some(body) = self.unread.take() {
            let bytes = read_body(headers, body, limit, timeout).await?;
            self.read = Some(bytes.clone());
            return Ok(bytes);
        }
        let bytes = self.read.clone().unwrap_or_default();
        if bytes.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(bytes)
    }
}

impl Call<'_> {
    fn error(&self, code: ErrorCode) -> ApiError {
        ApiError::new(code, self.request_id)
    }

    /// The request's idempotency key and fingerprint, when it carries a key. The body is
    /// read here (within the install's limit), since its digest is part of the fingerprint.
    async fn keyed_request(
        &self,
        install: &ResolvedInstall,
        user: Option<&str>,
        body: &mut CallBody,
    ) -> Result<Option<KeyedRequest>, ApiError> {
        let parts = self.parts;
        let key = match idempotency::request_key(&parts.method, &parts.headers) {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(None),
            Err(err) => {
                tracing::info!(error = %err, "idempotency key refused");
                return Err(self.error(ErrorCode::BadRequest));
            }
        };
        let config = &self.state.config;
        let bytes = body
            .bytes(
                &parts.headers,
                request_limit(config, install),
                config.request_timeout,
            )
            .await
            .map_err(|err| self.body_error(err))?;
        Ok(Some(KeyedRequest::new(key, parts, user, &bytes)))
    }

    fn body_error(&self, err: BodyError) -> ApiError {
        tracing::info!(error = %err, "request body refused");
        match err {
            BodyError::TooLarge { .. } => self.error(ErrorCode::TooLarge),
            BodyError::Timeout => ApiError::with_status(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::Timeout,
                self.request_id,
            ),
            BodyError::Read(_) => self.error(ErrorCode::BadRequest),
        }
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
            tracing::info!(method = %parts.method, path = self.path, "no declared endpoint matches");
            return (None, Err(self.error(ErrorCode::NotFound).into()));
        };
        // A HEAD served by a GET endpoint reaches the guest as GET; the body is dropped here.
        let head_as_get =
            parts.method == Method::HEAD && !found.method.eq_ignore_ascii_case("HEAD");
        let method = if head_as_get {
            Method::GET.as_str()
        } else {
            parts.method.as_str()
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
        method: &str,
        body: &mut CallBody,
        head_as_get: bool,
        cache: EndpointCache,
    ) -> Result<Response, Refusal> {
        let config = &self.state.config;
        let limits = &install.manifest.limits;
        let body = body
            .bytes(
                &self.parts.headers,
                request_limit(config, install),
                config.request_timeout,
            )
            .await
            .map_err(|err| self.body_error(err))?;

        let budget = config
            .request_timeout
            .min(Duration::from_millis(limits.timeout_ms));
        let request = self.execute_request(install, method, &body, budget);
        let scope = TokenScope {
            tenant_id: install.tenant_id.clone(),
            extension_id: install.extension_id.clone(),
            install_id: install.install_id.clone(),
            content_hash: request.context.content_hash.clone(),
        };
        let token = self.state.minter.token(&scope).map_err(|err| {
            tracing::error!(error = %err, "minting the service token failed");
            self.error(ErrorCode::Internal)
        })?;

        let reply = self
            .state
            .runner
            .execute(&token, &request, budget + RUNNER_GRACE)
            .await
            .map_err(|err| self.runner_error(&err))?;
        match reply {
            RunnerReply::Guest(mut reply) => {
                let stats = reply.stats.take();
                let declared = &install.manifest.api.headers.response;
                let mut response = self.guest_response(reply, head_as_get, cache, declared)?;
                if let Some(stats) = stats {
                    response.extensions_mut().insert(stats);
                }
                Ok(response)
            }
            RunnerReply::Platform {
                status,
                code,
                retry_after,
                stats,
            } => {
                let error = ApiError {
                    stats: stats.map(Box::new),
                    ..self.platform_error(status, code, retry_after)
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

    fn execute_request(
        &self,
        install: &ResolvedInstall,
        method: &str,
        body: &[u8],
        budget: Duration,
    ) -> ExecuteRequest {
        let parts = self.parts;
        let mut http = HttpRequest {
            method: method.to_owned(),
            path: self.path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: headers::header_pairs(&headers::forward_request_headers(
                &parts.headers,
                self.request_id,
                &install.manifest.api.headers.request,
            )),
            body_b64: String::new(),
        };
        http.set_body(body);
        ExecuteRequest {
            context: InvocationContext {
                request_id: self.request_id.to_owned(),
                tenant_id: install.tenant_id.clone(),
                extension_id: install.extension_id.clone(),
                install_id: install.install_id.clone(),
                version_id: install.version_id.clone(),
                content_hash: install.content_hash.to_string(),
            },
            http,
            limits: ExecuteLimits {
                timeout_ms: Some(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX)),
            },
        }
    }

    fn runner_error(&self, err: &RunnerError) -> ApiError {
        match err {
            RunnerError::Timeout { .. } => {
                tracing::warn!(error = %err, "runner call timed out");
                self.error(ErrorCode::Timeout)
            }
            RunnerError::Unreachable { .. } | RunnerError::Transport { .. } => {
                tracing::error!(error = %err, "runner call failed");
                self.error(ErrorCode::Unavailable)
            }
            RunnerError::InvalidReply { .. } => {
                tracing::error!(error = %err, "runner reply refused");
                self.error(ErrorCode::Internal)
            }
        }
    }

    fn platform_error(
        &self,
        status: StatusCode,
        code: ErrorCode,
        retry_after: Option<HeaderValue>,
    ) -> ApiError {
        if code == ErrorCode::Unauthorized {
            // The caller was authenticated; the runner refused the gateway's own token.
            tracing::error!(%status, "runner refused the service token");
            return self.error(ErrorCode::Internal);
        }
        tracing::info!(%status, %code, "runner answered with a platform error");
        let status = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        };
        let mut error = ApiError::with_status(status, code, self.request_id);
        error.retry_after = retry_after;
        error
    }

    fn guest_response(
        &self,
        reply: ExecuteResponse,
        head_as_get: bool,
        cache: EndpointCache,
        declared: &[String],
    ) -> Result<Response, ApiError> {
        let status = StatusCode::from_u16(reply.status)
            .ok()
            .filter(|s| !s.is_informational() && s.as_u16() < 600)
            .ok_or_else(|| {
                tracing::error!(
                    status = reply.status,
                    "runner relayed an invalid guest status"
                );
                self.error(ErrorCode::Internal)
            })?;
        let body = reply.body().map_err(|err| {
            tracing::error!(error = %err, "runner relayed a guest body that is not base64");
            self.error(ErrorCode::Internal)
        })?;
        let (guest, mut dropped) = headers::header_map(&reply.headers);
        let (mut headers, refused) = headers::filter_response_headers(&guest, status, declared);
        dropped.extend(refused);
        if !dropped.is_empty() {
            tracing::debug!(?dropped, "guest response headers dropped");
        }
        headers::apply_cache_policy(&mut headers, cache);
        let length = body.len();
        let body = if head_as_get {
            Body::empty()
        } else {
            Body::from(body)
        };
        let mut response = (status, body).into_response();
        response.headers_mut().extend(headers);
        if head_as_get {
            // The length the GET would have had, as HEAD semantics ask.
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
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

    #[test]
    fn registry_errors_map_to_stable_codes() {
        let corrupt = RegistryError::CorruptRow {
            table: "t",
            column: "c",
            key: "k".into(),
            reason: "r".into(),
        };
        assert_eq!(registry_error_code(&corrupt), ErrorCode::Internal);
        let missing = RegistryError::BundleMissing {
            hash: "h".into(),
            key: "k".into(),
        };
        assert_eq!(registry_error_code(&missing), ErrorCode::Unavailable);
    }
}
