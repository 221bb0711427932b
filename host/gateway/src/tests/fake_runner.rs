//! A small stand-in for a runner: checks the service token like a real one (and, when
//! given the registry, the install the call names), records what it was sent, and answers
//! according to the guest path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use palisade_protocol::{ExecuteRequest, ExecuteResponse, TokenScope, TokenVerifier};
use palisade_registry::Registry;

#[derive(Clone)]
pub(super) struct FakeRunner {
    pub(super) url: String,
    seen: Arc<Mutex<Vec<ExecuteRequest>>>,
}

#[derive(Clone)]
struct Shared {
    verifier: Arc<TokenVerifier>,
    seen: Arc<Mutex<Vec<ExecuteRequest>>>,
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
            .route(palisade_protocol::execute::EXECUTE_PATH, post(execute))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeRunner { url, seen }
    }

    /// The requests that passed the token check, oldest first.
    pub(super) fn seen(&self) -> Vec<ExecuteRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn platform_error(status: StatusCode, code: &str, request_id: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": code, "request_id": request_id})),
    )
        .into_response()
}

async fn execute(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request: ExecuteRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return platform_error(StatusCode::BAD_REQUEST, "bad_request", ""),
    };
    let context = &request.context;
    let rid = context.request_id.clone();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let scope = TokenScope {
        tenant_id: context.tenant_id.clone(),
        extension_id: context.extension_id.clone(),
        install_id: context.install_id.clone(),
        content_hash: context.content_hash.clone(),
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
    shared.seen.lock().unwrap().push(request.clone());

    match request.http.path.as_str() {
        "/trap" => platform_error(StatusCode::INTERNAL_SERVER_ERROR, "trap", &rid),
        "/quota" => {
            let mut response = platform_error(StatusCode::TOO_MANY_REQUESTS, "over_quota", &rid);
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("7"));
            response
        }
        "/garbage" => (StatusCode::OK, "this is not an execute reply").into_response(),
        // A guest asking every cache, shared ones included, to keep its answer.
        "/cached" | "/shared" => Json(ExecuteResponse::new(
            200,
            vec![
                (
                    "cache-control".to_owned(),
                    "public, max-age=3600, s-maxage=3600".to_owned(),
                ),
                ("content-type".to_owned(), "text/plain".to_owned()),
            ],
            format!("answer for {}", context.tenant_id).as_bytes(),
        ))
        .into_response(),
        "/weird" => Json(ExecuteResponse::new(101, vec![], b"")).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Json(ExecuteResponse::new(200, vec![], b"late")).into_response()
        }
        _ => {
            // Echo what the guest would have seen, with a mix of allowed and refused headers.
            let echo = serde_json::json!({
                "method": request.http.method,
                "path": request.http.path,
                "query": request.http.query,
                "headers": request.http.headers,
                "body": String::from_utf8_lossy(&request.http.body().unwrap_or_default()),
            });
            let headers = vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("etag".to_owned(), "\"v1\"".to_owned()),
                ("x-ext-trace".to_owned(), "t-1".to_owned()),
                ("set-cookie".to_owned(), "session=stolen".to_owned()),
                ("connection".to_owned(), "close".to_owned()),
                ("transfer-encoding".to_owned(), "chunked".to_owned()),
                ("x-powered-by".to_owned(), "guest".to_owned()),
            ];
            Json(ExecuteResponse::new(
                201,
                headers,
                &serde_json::to_vec(&echo).unwrap_or_default(),
            ))
            .into_response()
        }
    }
}
