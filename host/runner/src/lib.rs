//! The runner: an HTTP server that executes extension calls. It verifies the gateway's
//! service token, looks everything else up itself (install, grants, content hash), loads
//! and re-verifies the bundle on first use, and hands the request to the runtime.
//!
//! Routes: `{any method} /v1/execute/{path}` (the execute hop, see
//! `palisade_protocol::hop`), `GET /healthz` (liveness), `GET /readyz` (readiness: the
//! registry's database, trust set and object store answer, and no drain), `GET /metrics`
//! (the runner's series, see
//! [`platform_metrics`], and the extensions'; behind a bearer token when
//! [`RunnerConfig::metrics_token`] is set), and `GET`/`HEAD
//! /ext-ui/{extension_id}/{content_hash}/{path}` (extension UIs, see `ui`). On
//! [`Drain::begin`] the runner refuses new calls with 503 and finishes the running ones.
//!
//! [`events::Dispatcher`] delivers published events to extensions through the same state.

mod admission;
mod artifacts;
mod drain;
mod error;
pub mod events;
mod execute;
mod installs;
mod loader;
mod metrics;
pub mod platform_metrics;
mod services;
#[cfg(test)]
mod test_support;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{any, get};
use http::StatusCode;
use palisade_protocol::TokenVerifier;
use palisade_registry::{Registry, SecretOpener};
use palisade_runtime::{HostServices, Runtime};

pub use artifacts::artifact_store;
pub use drain::Drain;
pub use error::RunnerError;
pub use metrics::{MetricsToken, MetricsTokenError};
pub use services::storage::RegistryStorage;
pub use ui::UiConfig;

/// Operator settings of the runner's HTTP side.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Largest guest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most calls of one install in flight at once; more get 429.
    pub max_in_flight_per_install: usize,
    /// Most calls of one tenant in flight at once (all its installs); more get 429.
    pub max_in_flight_per_tenant: usize,
    /// How long a looked-up install is reused without reading the registry (zero: read
    /// it on every call). A disable, uninstall or config change drops the entry through the
    /// registry's change sequence within one poll; an upgrade is seen at once, as the
    /// gateway's context names the new version.
    pub install_cache_ttl: std::time::Duration,
    /// Most installs kept in the install cache.
    pub install_cache_entries: usize,
    /// The bearer token `GET /metrics` requires; `None`: the exposition is open to anyone
    /// who reaches the runner's address.
    pub metrics_token: Option<MetricsToken>,
    /// Whether the runner's call series carry the tenant id as a label (their number
    /// then grows with the tenants).
    pub metrics_tenant_label: bool,
    /// Serving extension UIs.
    pub ui: UiConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_request_bytes: 1024 * 1024,
            max_in_flight_per_install: 64,
            max_in_flight_per_tenant: 128,
            install_cache_ttl: std::time::Duration::from_secs(300),
            install_cache_entries: 100_000,
            metrics_token: None,
            metrics_tenant_label: false,
            ui: UiConfig::default(),
        }
    }
}

/// Everything the runner's handlers share.
pub struct RunnerState {
    pub(crate) registry: Registry,
    pub(crate) runtime: Runtime,
    pub(crate) verifier: TokenVerifier,
    pub(crate) verified: loader::VerifiedSigners,
    pub(crate) config: RunnerConfig,
    pub(crate) admission: std::sync::Arc<admission::Admission>,
    pub(crate) installs: Arc<installs::InstallCache>,
    pub(crate) drain: Arc<Drain>,
    /// Follows the registry's change sequence into `installs` (and the trust cache), when
    /// the state was made inside a Tokio runtime.
    _changes: Option<palisade_registry::changes::Following>,
    /// Bundle loads in progress (one per content hash).
    pub(crate) loads: loader::Loads,
    /// The unpacked UI trees.
    pub(crate) ui: ui::UiTrees,
    /// The runner's own series on `/metrics`.
    pub(crate) metrics: Arc<platform_metrics::PlatformMetrics>,
}

impl RunnerState {
    /// Assembles the runner from its parts. Bundle signatures are verified against the
    /// registry's trust set ([`Registry::trust_set`]).
    pub fn new(
        registry: Registry,
        runtime: Runtime,
        verifier: TokenVerifier,
        config: RunnerConfig,
    ) -> Self {
        let installs = Arc::new(installs::InstallCache::new(
            config.install_cache_ttl,
            config.install_cache_entries,
        ));
        let followed = Arc::clone(&installs);
        let changes = registry.follow_changes_by_default(move |change| followed.apply(change));
        RunnerState {
            admission: admission::Admission::new(
                config.max_in_flight_per_install,
                config.max_in_flight_per_tenant,
            ),
            installs,
            _changes: changes,
            metrics: Arc::new(platform_metrics::PlatformMetrics::new(
                runtime.clone(),
                registry.query_metrics(),
                config.metrics_tenant_label,
            )),
            registry,
            runtime,
            verifier,
            verified: loader::VerifiedSigners::default(),
            ui: ui::UiTrees::new(config.ui.clone()),
            config,
            drain: Drain::new(),
            loads: loader::Loads::default(),
        }
    }

    /// The runner's drain switch, for the process that serves it (e.g. on SIGTERM).
    pub fn drain(&self) -> Arc<Drain> {
        Arc::clone(&self.drain)
    }
}

/// The host services the runtime's capabilities use, backed by `registry`; secrets are
/// opened with the runners' private keyring `opener`.
pub fn host_services(registry: &Registry, opener: SecretOpener) -> HostServices {
    HostServices {
        secrets: Some(Arc::new(services::secrets::RegistrySecrets::new(
            registry.clone(),
            opener,
        ))),
        storage: Some(services::storage::RegistryStorage::shared(
            registry.clone(),
            palisade_runtime::capability::storage::StorageLimits::default(),
        )),
        ..HostServices::default()
    }
}

/// `GET /readyz`: 200 when the runner can serve calls — not draining, and the registry's
/// database, trust set and object store answer — else 503; the body names each check.
async fn readyz(State(state): State<Arc<RunnerState>>) -> Response {
    let checks = state.registry.readiness().await;
    let draining = state.drain.is_draining();
    let ready = checks.is_ready() && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": draining,
        "checks": checks,
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /healthz`, `GET /readyz` and `GET /metrics` alone, for a process that dispatches
/// events without serving calls (`palisade dispatcher --metrics-listen`).
pub fn observability_app(state: Arc<RunnerState>) -> Router {
    Router::new()
        .route("/healthz", get(drain::healthz).with_state(state.drain()))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

/// The runner's routes.
pub fn app(state: Arc<RunnerState>) -> Router {
    let execute = any(execute::execute).layer(axum::middleware::from_fn_with_state(
        state.drain(),
        drain::admit,
    ));
    let prefix = palisade_protocol::hop::EXECUTE_PREFIX;
    Router::new()
        .route(&format!("{prefix}/"), execute.clone())
        .route(&format!("{prefix}/{{*path}}"), execute)
        .route("/healthz", get(drain::healthz).with_state(state.drain()))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route(&format!("{}/{{*path}}", ui::UI_PREFIX), get(ui::serve))
        // The execute hop enforces its own limit while the body streams.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
