//! One extension call: authenticate the caller, resolve the tenant's install, match the
//! endpoint, read the body within limits, forward to a runner, and answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use palisade_protocol::{
    ErrorCode, ExecuteLimits, ExecuteRequest, ExecuteResponse, ExecuteStats, HttpRequest,
    InvocationContext, TokenScope,
};
use palisade_registry::{RegistryError, ResolvedInstall};
use tracing::{Instrument, Span, field};

use crate::app::{API_PREFIX, GatewayState};
use crate::body::{BodyError, read_body};
use crate::error::ApiError;
use crate::execlog;
use crate::headers::{self, REQUEST_ID};
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

    let install = match state
        .registry
        .resolve(&caller.tenant_id, extension_id)
        .await
    {
        Ok(Some(install)) => install,
        Ok(None) => {
            tracing::info!("no enabled install of this extension for the tenant");
            return ApiError::new(ErrorCode::NotFound, request_id).into_response();
        }
        Err(err) => {
            tracing::error!(error = %err, "resolving the install failed");
            return ApiError::new(registry_error_code(&err), request_id).into_response();
        }
    };
    span.record("version", install.version.as_str());
    span.record("content_hash", field::display(&install.content_hash));

    if let Err(retry_after) = state.rate_limiter.check(&install.install_id) {
        tracing::info!(retry_after, "install over its rate limit");
        let mut error = ApiError::new(ErrorCode::OverQuota, request_id);
        error.retry_after = Some(HeaderValue::from(retry_after));
        return error.into_response();
    }

    let call = Call {
        state,
        install: &install,
        request_id,
    };
    let (template, result) = state
        .idempotency
        .run(
            &install.tenant_id,
            &install.extension_id,
            &parts,
            request_id,
            call.forward(&parts, path, body),
        )
        .await;
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
    execlog::spawn_write(state.registry.clone(), record, span);
    response
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

fn registry_error_code(err: &RegistryError) -> ErrorCode {
    match err {
        RegistryError::CorruptRow { .. } => ErrorCode::Internal,
        _ => ErrorCode::Unavailable,
    }
}

/// A call for one resolved install.
struct Call<'a> {
    state: &'a GatewayState,
    install: &'a ResolvedInstall,
    request_id: &'a str,
}

impl Call<'_> {
    fn error(&self, code: ErrorCode) -> ApiError {
        ApiError::new(code, self.request_id)
    }

    /// Everything after resolution. Returns the matched endpoint template (if any) and the
    /// answer.
    async fn forward(
        &self,
        parts: &Parts,
        path: &str,
        body: Body,
    ) -> (Option<String>, Result<Response, ApiError>) {
        let manifest = &self.install.manifest;
        let endpoints = manifest
            .api
            .endpoints
            .iter()
            .map(|e| (e.method.as_str(), e.path.as_str()));
        let Some(found) = match_endpoint(endpoints, &parts.method, path) else {
            tracing::info!(method = %parts.method, path, "no declared endpoint matches");
            return (None, Err(self.error(ErrorCode::NotFound)));
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
        let result = self.invoke(parts, method, path, body, head_as_get).await;
        (template, result)
    }

    async fn invoke(
        &self,
        parts: &Parts,
        method: &str,
        path: &str,
        body: Body,
        head_as_get: bool,
    ) -> Result<Response, ApiError> {
        let config = &self.state.config;
        let limits = &self.install.manifest.limits;
        let max_bytes = usize::try_from(limits.max_request_bytes)
            .unwrap_or(usize::MAX)
            .min(config.max_request_bytes);
        let body = read_body(&parts.headers, body, max_bytes, config.request_timeout)
            .await
            .map_err(|err| {
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
            })?;

        let budget = config
            .request_timeout
            .min(Duration::from_millis(limits.timeout_ms));
        let request = self.execute_request(parts, method, path, &body, budget);
        let scope = TokenScope {
            tenant_id: self.install.tenant_id.clone(),
            extension_id: self.install.extension_id.clone(),
            install_id: self.install.install_id.clone(),
            content_hash: self.install.content_hash.to_string(),
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
                let mut response = self.guest_response(reply, head_as_get)?;
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
            } => Err(ApiError {
                stats: stats.map(Box::new),
                ..self.platform_error(status, code, retry_after)
            }),
        }
    }

    fn execute_request(
        &self,
        parts: &Parts,
        method: &str,
        path: &str,
        body: &[u8],
        budget: Duration,
    ) -> ExecuteRequest {
        let install = self.install;
        let mut http = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: headers::forward_request_headers(&parts.headers, self.request_id),
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
        let (headers, dropped) = headers::filter_response_headers(&reply.headers);
        if !dropped.is_empty() {
            tracing::debug!(?dropped, "guest response headers dropped");
        }
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
