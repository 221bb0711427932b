//! A small stand-in for a runner: checks the service token like a real one (and, when
//! given the registry, the install the call names), records what it was sent, and answers
//! according to the guest path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::StatusCode;
use palisade_protocol::hop;
use palisade_protocol::{CallContext, TokenScope, TokenVerifier};
use palisade_registry::Registry;

/// What the fake runner was sent, as the guest would see it.
#[derive(Debug, Clone)]
pub(super) struct SeenCall {
    pub(super) context: CallContext,
    pub(super) http: SeenHttp,
}

/// The request a guest would have seen.
#[derive(Debug, Clone)]
pub(super) struct SeenHttp {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

#[derive(Clone)]
pub(super) struct FakeRunner {
    pub(super) url: String,
    seen: Arc<Mutex<Vec<SeenCall>>>,
}

#[derive(Clone)]
struct Shared {
    verifier: Arc<TokenVerifier>,
    seen: Arc<Mutex<Vec<SeenCall>>>,
    /// When set, a call must name an enabled install at its current version, as a real
    /// runner checks; otherwise it is answered 404 `not_found`.
    registry: Option<Registry>,
}

impl FakeRunner {
    /// Starts a runner on 127.0.0.1 that accepts tokens signed for `public_pem`.
    pub(super) async fn start(public_pem: &str) -> Self {
        Self::serve(public_pem, None).await
    }

    /// Like [`start`](Self::start), also checking each call's install against `registry`.
    pub(super) async fn start_checking(public_pem: &str, registry: Registry) -> Self {
        Self::serve(public_pem, Some(registry)).await
    }

    async fn serve(public_pem: &str, registry: Option<Registry>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            verifier: Arc::new(TokenVerifier::from_pem(public_pem.as_bytes()).unwrap()),
            seen: seen.clone(),
            registry,
        };
        let router = Router::new()
            .route("/v1/execute/", any(execute))
            .route("/v1/execute/{*path}", any(execute))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeRunner { url, seen }
    }

    /// The requests that passed the token check, oldest first.
    pub(super) fn seen(&self) -> Vec<SeenCall> {
        self.seen.lock().unwrap().clone()
    }
}

fn platform_error(status: StatusCode, code: &str, request_id: &str) -> Response {
    let mut response = (
        status,
        Json(serde_json::json!({"error": code, "request_id": request_id})),
    )
        .into_response();
    response.headers_mut().insert(
        hop::ERROR,
        http::HeaderValue::from_str(code).unwrap_or(http::HeaderValue::from_static("internal")),
    );
    response
}

fn guest(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

async fn execute(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(context) = CallContext::read_from(&parts.headers) else {
        return platform_error(StatusCode::BAD_REQUEST, "bad_request", "");
    };
    let rid = context.request_id.clone();
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1/execute")
        .unwrap_or_default()
        .to_owned();
    let token = parts
        .headers
        .get(hop::TOKEN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scope = TokenScope {
        tenant_id: context.tenant_id.clone(),
        extension_id: context.extension_id.clone(),
        install_id: context.install_id.clone(),
        content_hash: context.content_hash.clone(),
        method: parts.method.as_str().to_owned(),
        path: match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        },
        request_id: rid.clone(),
        user_id: context.user_id.clone(),
    };
    if shared.verifier.verify(token, &scope).is_err() {
        return platform_error(StatusCode::UNAUTHORIZED, "unauthorized", &rid);
    }
    if let Some(registry) = &shared.registry {
        let install = registry.load_install(&context.install_id).await.unwrap();
        if install.is_none_or(|install| install.version_id != context.version_id) {
            return platform_error(StatusCode::NOT_FOUND, "not_found", &rid);
        }
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default()
        .to_vec();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            !hop::is_hop_header(name) && !matches!(name.as_str(), "host" | "te" | "content-length")
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let http = SeenHttp {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    shared.seen.lock().unwrap().push(SeenCall {
        context: context.clone(),
        http: http.clone(),
    });

    match http.path.as_str() {
        "/trap" => platform_error(StatusCode::INTERNAL_SERVER_ERROR, "trap", &rid),
        "/quota" => {
            let mut response = platform_error(StatusCode::TOO_MANY_REQUESTS, "over_quota", &rid);
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("7"));
            response
        }
        // A runner error whose code is unknown.
        "/garbage" => platform_error(StatusCode::BAD_GATEWAY, "no_such_code", &rid),
        // A guest asking every cache, shared ones included, to keep its answer.
        "/cached" | "/shared" => guest(
            200,
            &[
                ("cache-control", "public, max-age=3600, s-maxage=3600"),
                ("content-type", "text/plain"),
            ],
            format!("answer for {}", context.tenant_id).into_bytes(),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            guest(200, &[], b"late".to_vec())
        }
        _ => {
            // Echo what the guest would have seen, with a mix of allowed and refused headers.
            let echo = serde_json::json!({
                "method": http.method,
                "path": http.path,
                "query": http.query,
                "headers": http.headers,
                "body": String::from_utf8_lossy(&http.body),
            });
            guest(
                201,
                &[
                    ("content-type", "application/json"),
                    ("etag", "\"v1\""),
                    ("x-ext-trace", "t-1"),
                    ("set-cookie", "session=stolen"),
                    ("x-powered-by", "guest"),
                    ("x-palisade-stats", "forged"),
                ],
                serde_json::to_vec(&echo).unwrap_or_default(),
            )
        }
    }
}
