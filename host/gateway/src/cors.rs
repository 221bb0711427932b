//! CORS for the extension API, only for the origins the operator configured. With no
//! origin configured no CORS header is ever sent. A preflight (`OPTIONS` with
//! `access-control-request-method`) from an allowed origin is answered by the gateway;
//! any other is passed on like a plain call (and so refused without a token). An allowed
//! origin is echoed with `access-control-allow-credentials: true`; the `*` entry allows
//! every origin but never with credentials.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderValue, ORIGIN, VARY,
};
use http::{HeaderMap, Method, StatusCode};

use crate::app::{API_PREFIX, GatewayState};

/// Methods a preflight may ask for.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// Request headers a preflight may ask for: the forwarded allow-list and `authorization`.
pub const ALLOWED_HEADERS: &str =
    "authorization, accept, accept-encoding, content-type, x-request-id, x-idempotency-key";
/// Response headers scripts may read beyond the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str =
    "x-request-id, retry-after, etag, www-authenticate, x-idempotent-replay";
/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE: &str = "600";

/// The configured origins.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: HashSet<String>,
    any: bool,
}

/// Which `access-control-allow-origin` an allowed request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// The request's own origin, with credentials.
    Origin(HeaderValue),
    /// `*`, without credentials.
    Any,
}

impl CorsPolicy {
    /// A policy for `origins` (`scheme://host[:port]`, compared case-insensitively and
    /// without a trailing `/`; `*` for any origin without credentials).
    pub fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o.trim() == "*");
        let origins = origins
            .iter()
            .map(|o| normalize(o))
            .filter(|o| o != "*" && !o.is_empty())
            .collect();
        CorsPolicy { origins, any }
    }

    /// Whether any origin is configured.
    pub fn is_enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    fn allowed(&self, headers: &HeaderMap) -> Option<Allowed> {
        let origin = headers.get(ORIGIN)?;
        let text = origin.to_str().ok()?;
        if self.origins.contains(&normalize(text)) {
            Some(Allowed::Origin(origin.clone()))
        } else if self.any {
            Some(Allowed::Any)
        } else {
            None
        }
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn set_allow_origin(headers: &mut HeaderMap, allowed: Allowed) {
    match allowed {
        Allowed::Origin(origin) => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Allowed::Any => {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
}

fn preflight(allowed: Allowed) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    set_allow_origin(headers, allowed);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    headers.append(
        VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

/// Middleware applying the policy to the extension API (`/api/ext/...`).
pub(crate) async fn middleware(
    State(state): State<Arc<GatewayState>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = &state.cors;
    if !policy.is_enabled() || !request.uri().path().starts_with(API_PREFIX) {
        return next.run(request).await;
    }
    let allowed = policy.allowed(request.headers());
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(allowed) = allowed.clone()
    {
        return preflight(allowed);
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("origin"));
    if let Some(allowed) = allowed {
        set_allow_origin(headers, allowed);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_configured_origins_are_allowed() {
        let policy = CorsPolicy::new(&["https://App.example/".to_owned()]);
        assert!(policy.is_enabled());
        assert_eq!(
            policy.allowed(&origin("https://app.example")),
            Some(Allowed::Origin(HeaderValue::from_static(
                "https://app.example"
            )))
        );
        assert_eq!(policy.allowed(&origin("https://evil.example")), None);
        assert_eq!(policy.allowed(&origin("https://app.example.evil")), None);
        assert_eq!(policy.allowed(&HeaderMap::new()), None);
    }

    #[test]
    fn empty_policy_is_off_and_wildcard_never_has_credentials() {
        assert!(!CorsPolicy::new(&[]).is_enabled());
        let policy = CorsPolicy::new(&["*".to_owned()]);
        assert_eq!(
            policy.allowed(&origin("https://any.example")),
            Some(Allowed::Any)
        );
        let response = preflight(Allowed::Any);
        assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            response
                .headers()
                .get(ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none()
        );
    }
}
