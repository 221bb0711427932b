//! The runner: an HTTP server that executes extension calls. It verifies the gateway's
//! service token, looks everything else up itself (install, grants, content hash), loads
//! and re-verifies the bundle on first use, and hands the request to the runtime.
//!
//! Routes: `POST /v1/execute`, `GET /healthz`.

mod error;
mod execute;
mod loader;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use palisade_bundle::signing::TrustBundle;
use palisade_protocol::TokenVerifier;
use palisade_registry::Registry;
use palisade_runtime::{HostServices, Runtime};

pub use error::RunnerError;

/// Operator settings of the runner's HTTP side.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Largest guest request body accepted, in bytes (before base64).
    pub max_request_bytes: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_request_bytes: 1024 * 1024,
        }
    }
}

/// Everything the runner's handlers share.
pub struct RunnerState {
    pub(crate) registry: Registry,
    pub(crate) runtime: Runtime,
    pub(crate) verifier: TokenVerifier,
    pub(crate) trust: TrustBundle,
    pub(crate) config: RunnerConfig,
}

impl RunnerState {
    /// Assembles the runner from its parts.
    pub fn new(
        registry: Registry,
        runtime: Runtime,
        verifier: TokenVerifier,
        trust: TrustBundle,
        config: RunnerConfig,
    ) -> Self {
        RunnerState {
            registry,
            runtime,
            verifier,
            trust,
            config,
        }
    }
}

/// The host services the runtime's capabilities use, backed by `registry`.
pub fn host_services(registry: &Registry) -> HostServices {
    let _ = registry;
    HostServices::default()
}

/// The runner's routes.
pub fn app(state: Arc<RunnerState>) -> Router {
    // base64 grows the body by 4/3; leave room for the JSON envelope and headers.
    let envelope_limit = state.config.max_request_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .route(
            palisade_protocol::execute::EXECUTE_PATH,
            post(execute::execute),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(envelope_limit))
        .with_state(state)
}
