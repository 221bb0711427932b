//! The gateway's shared state and its axum router.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use palisade_protocol::{ErrorCode, TokenMinter};
use palisade_registry::{Registry, SecretSealer};

use crate::auth::{AuthError, CallerAuth};
use crate::config::GatewayConfig;
use crate::cors::CorsPolicy;
use crate::error::ApiError;
use crate::execlog::{ExecLog, ExecLogStats};
use crate::headers;
use crate::idempotency::IdempotencyStore;
use crate::installs::ResolveCache;
use crate::pool::RunnerPool;
use crate::proxy;
use crate::ratelimit::RateLimiter;
use crate::runner::RunnerClientError;

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
    /// The runners calls go to.
    pub(crate) runner: RunnerPool,
    /// The public key the admin API seals secrets to (it opens none); `None`: setting
    /// secrets is off.
    pub(crate) sealer: Option<SecretSealer>,
    /// Per-install token buckets.
    pub(crate) rate_limiter: RateLimiter,
    /// Per-tenant token buckets, checked before resolution.
    pub(crate) tenant_limiter: RateLimiter,
    /// Per-caller token buckets, checked before resolution.
    pub(crate) caller_limiter: RateLimiter,
    /// Origins allowed to call from a browser.
    pub(crate) cors: CorsPolicy,
    /// Answers kept for idempotent replay.
    pub(crate) idempotency: IdempotencyStore,
    /// Resolved installs, reused for a short time.
    pub(crate) installs: Arc<ResolveCache>,
    /// Follows the registry's change sequence into `installs` (and the trust cache), when
    /// the state was made inside a Tokio runtime.
    _changes: Option<palisade_registry::changes::Following>,
    /// The queue of execution-log rows and its background writer.
    pub(crate) execution_log: ExecLog,
    /// Scoped admin credentials looked up, reused for a few seconds.
    pub(crate) credentials: crate::admin::CredentialCache,
    /// The series on `/metrics`.
    pub(crate) metrics: crate::metrics::GatewayMetrics,
    /// The quotas of tenants and installs, with this gateway's claimed calls.
    pub(crate) quotas: crate::quota::Quotas,
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
    /// Builds the state: reads the caller-auth key and prepares the runner pool (whose
    /// health checks start when this is called inside a Tokio runtime) and the
    /// execution-log writer (which starts at once inside a Tokio runtime, otherwise with
    /// the first call).
    pub fn new(
        config: GatewayConfig,
        registry: Registry,
        minter: TokenMinter,
    ) -> Result<Self, GatewayError> {
        let auth = CallerAuth::new(&config.caller_auth)?;
        let rate_limiter = RateLimiter::new(&config.rate_limit);
        let cors = CorsPolicy::new(&config.cors_allowed_origins);
        let idempotency = IdempotencyStore::shared(&config.idempotency, registry.clone());
        let runner_tls = config
            .runner_tls
            .as_ref()
            .map(palisade_protocol::tls::ClientTls::load)
            .transpose()
            .map_err(RunnerClientError::from)?;
        let runner = RunnerPool::with_tls(
            &config.runner_urls,
            config.health_interval,
            runner_tls.as_ref(),
        )?;
        let installs = Arc::new(ResolveCache::new(
            config.install_cache_ttl,
            config.install_cache_capacity,
            config.unknown_extension_ttl,
            config.unknown_extension_capacity,
        ));
        let followed = Arc::clone(&installs);
        let changes = registry.follow_changes_by_default(move |change| followed.apply(change));
        let tenant_limiter = RateLimiter::new(&config.tenant_rate_limit);
        let caller_limiter = RateLimiter::new(&config.caller_rate_limit);
        let execution_log = ExecLog::start(registry.clone(), &config.execution_log);
        let quotas = crate::quota::Quotas::new(config.quotas.clone());
        let metrics =
            crate::metrics::GatewayMetrics::new(execution_log.counts(), registry.query_metrics());
        Ok(GatewayState {
            metrics,
            config,
            auth,
            registry,
            minter,
            runner,
            sealer: None,
            rate_limiter,
            tenant_limiter,
            caller_limiter,
            cors,
            idempotency,
            credentials: crate::admin::credential_cache(),
            installs,
            _changes: changes,
            execution_log,
            quotas,
        })
    }

    /// Turns the admin API on, answering to `authorization: Bearer <token>`.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.config.admin_token = Some(token.into());
        self
    }

    /// Lets the admin API set secrets, sealed with `sealer` (a public key: the gateway
    /// cannot open what it seals).
    pub fn with_sealer(mut self, sealer: SecretSealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The configuration in effect.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// What happened to the execution-log rows of the calls so far: written, dropped
    /// because the queue was full, lost to a failed write.
    pub fn execution_log_stats(&self) -> ExecLogStats {
        self.execution_log.stats()
    }

    /// Waits until the execution-log rows of every call answered so far are written. Call
    /// it after the server has stopped, before the process exits: rows are written in the
    /// background, and a process that exits first loses the last ones.
    pub async fn flush_execution_log(&self) {
        self.execution_log.flush().await;
    }
}

/// The gateway's router: `/api/ext/{extension_id}/{*path}` (any method; also without a
/// path, meaning `/`), `GET /healthz`, `GET /readyz`, the admin API and `GET /metrics` (with an admin
/// token), and a JSON 404 for everything else.
pub fn app(state: Arc<GatewayState>) -> Router {
    let calls = Router::new()
        .route("/api/ext/{extension_id}", any(proxy::extension_call))
        .route("/api/ext/{extension_id}/", any(proxy::extension_call))
        .route(
            "/api/ext/{extension_id}/{*path}",
            any(proxy::extension_call),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_calls,
        ));
    Router::new()
        .merge(calls)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::admin::admin_routes(&state))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cors::middleware,
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the gateway can serve calls — the registry's database, trust
/// set and object store answer, and at least one runner passes its health check — else
/// 503; the body names each check.
async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<GatewayState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let checks = state.registry.readiness().await;
    let runners = state.runner.healthy_count();
    let ready = checks.is_ready() && runners > 0;
    let status = if ready {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "healthy_runners": runners,
        "checks": checks,
    });
    (status, axum::Json(body)).into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(ErrorCode::NotFound, headers::request_id(request.headers())).into_response()
}
