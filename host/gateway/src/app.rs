//! The gateway's shared state and its axum router.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use palisade_protocol::{ErrorCode, TokenMinter};
use palisade_registry::Registry;

use crate::auth::{AuthError, CallerAuth};
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::headers;
use crate::proxy;
use crate::runner::{RunnerClient, RunnerClientError};

/// Prefix of extension API routes.
pub const API_PREFIX: &str = "/api/ext/";

/// Why the gateway could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The caller-auth configuration is unusable.
    #[error("caller_auth: {0}")]
    CallerAuth(#[from] AuthError),
    /// The runner configuration is unusable.
    #[error(transparent)]
    Runner(#[from] RunnerClientError),
}

/// Everything a request handler needs; shared by all requests.
pub struct GatewayState {
    pub(crate) config: GatewayConfig,
    pub(crate) auth: CallerAuth,
    pub(crate) registry: Registry,
    pub(crate) minter: TokenMinter,
    pub(crate) runner: RunnerClient,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("config", &self.config)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// Builds the state: reads the caller-auth key and prepares the runner client.
    pub fn new(
        config: GatewayConfig,
        registry: Registry,
        minter: TokenMinter,
    ) -> Result<Self, GatewayError> {
        let auth = CallerAuth::new(&config.caller_auth)?;
        let runner = RunnerClient::new(&config.runner_url)?;
        Ok(GatewayState {
            config,
            auth,
            registry,
            minter,
            runner,
        })
    }

    /// The configuration in effect.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

/// The gateway's router: `/api/ext/{extension_id}/{*path}` (any method; also without a
/// path, meaning `/`), `GET /healthz`, and a JSON 404 for everything else.
pub fn app(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/api/ext/{extension_id}", any(proxy::extension_call))
        .route("/api/ext/{extension_id}/", any(proxy::extension_call))
        .route(
            "/api/ext/{extension_id}/{*path}",
            any(proxy::extension_call),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(request: Request) -> Response {
    ApiError::new(ErrorCode::NotFound, headers::request_id(request.headers())).into_response()
}
