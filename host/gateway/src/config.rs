//! Operator configuration of the gateway.

use std::path::PathBuf;
use std::time::Duration;

use crate::execlog::ExecLogConfig;
use crate::idempotency::IdempotencyConfig;
use crate::jwks::CallerKey;
use crate::quota::QuotaConfig;
use crate::ratelimit::RateLimitConfig;

/// Default bound on a caller's request body: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Default deadline for one call, body upload and runner round trip included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default JWT claim carrying the caller's tenant.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";
/// Default JWT claim carrying the caller's user.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Default interval between two health checks of one runner.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a resolved install is reused. Changes reach the cache through the
/// registry's change sequence within one poll, so this only bounds how long an entry lives.
pub const DEFAULT_INSTALL_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default bound on the (tenant, extension) pairs whose resolution is kept.
pub const DEFAULT_INSTALL_CACHE_CAPACITY: usize = 10_000;
/// Default longest time a verified caller token is reused.
pub const DEFAULT_CALLER_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default bound on the verified caller tokens kept.
pub const DEFAULT_CALLER_CACHE_CAPACITY: usize = 10_000;
/// Default time a (tenant, extension) pair without an enabled install is remembered (an
/// install or an enable drops it at once, through the change sequence).
pub const DEFAULT_UNKNOWN_EXTENSION_TTL: Duration = Duration::from_secs(300);
/// Default bound on the (tenant, extension) pairs without an install that are remembered.
pub const DEFAULT_UNKNOWN_EXTENSION_CAPACITY: usize = 10_000;

/// Everything the gateway needs to serve extension calls.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Base URLs of the runners, e.g. `http://127.0.0.1:8081` (no trailing path); at least
    /// one. Calls are spread over them by content hash (rendezvous hashing).
    pub runner_urls: Vec<String>,
    /// Interval between two `/healthz` checks of each runner.
    pub health_interval: Duration,
    /// Upper bound on a caller's request body; a manifest may only lower it.
    pub max_request_bytes: usize,
    /// Upper bound on one call; a manifest may only lower it.
    pub request_timeout: Duration,
    /// How callers are authenticated.
    pub caller_auth: CallerAuthConfig,
    /// Bearer token of the admin API (`/admin/v1/...`); `None` turns the admin API off
    /// (its routes answer 404).
    pub admin_token: Option<String>,
    /// Per-install token bucket applied before a runner is called.
    pub rate_limit: RateLimitConfig,
    /// Origins (e.g. `https://app.example`) allowed to call from a browser; empty means
    /// no CORS headers are ever sent.
    pub cors_allowed_origins: Vec<String>,
    /// Replay of non-GET calls carrying `x-idempotency-key`.
    pub idempotency: IdempotencyConfig,
    /// How long a tenant's resolved install of an extension — or the absence of one — is
    /// reused before the registry is asked again; zero asks on every call. Changes made
    /// through this gateway's admin API take effect at once; changes made elsewhere within
    /// this time (see docs/gateway.md).
    pub install_cache_ttl: Duration,
    /// Most (tenant, extension) resolutions kept.
    pub install_cache_capacity: usize,
    /// The background writer of execution-log rows and usage counters.
    pub execution_log: ExecLogConfig,
    /// Per-tenant token bucket, checked before the install is resolved.
    pub tenant_rate_limit: RateLimitConfig,
    /// Per-caller (tenant and user) token bucket, checked before the install is resolved.
    pub caller_rate_limit: RateLimitConfig,
    /// How long a (tenant, extension) pair without an enabled install — an unknown
    /// extension id, or one the tenant has not installed — is answered 404 without asking
    /// the registry again; zero asks every time. Kept apart from resolved installs.
    pub unknown_extension_ttl: Duration,
    /// Most pairs without an install remembered.
    pub unknown_extension_capacity: usize,
    /// The public base URL of the runners' extension UIs (e.g.
    /// `https://ui.example.com`), from which the admin API builds each version's and
    /// install's `ui_url`; `None`: no `ui_url` is given.
    pub ui_public_base: Option<String>,
    /// Largest event payload `POST /admin/v1/events` accepts, in bytes.
    pub max_event_payload_bytes: usize,
    /// TLS to the runners: their CA, and the gateway's client certificate for mutual TLS;
    /// set, every runner URL must be `https://`. `None`: runners are `http://`.
    pub runner_tls: Option<palisade_protocol::tls::ClientTlsFiles>,
    /// Limits per tenant and per install over a UTC day: calls, fuel and egress bytes.
    pub quotas: QuotaConfig,
}

/// Default of [`GatewayConfig::max_event_payload_bytes`]: 256 KiB.
pub const DEFAULT_MAX_EVENT_PAYLOAD_BYTES: usize = 256 * 1024;

impl GatewayConfig {
    /// A configuration with one runner and the default limits.
    pub fn new(runner_url: impl Into<String>, caller_auth: CallerAuthConfig) -> Self {
        Self::with_runners(vec![runner_url.into()], caller_auth)
    }

    /// A configuration with several runners and the default limits.
    pub fn with_runners(runner_urls: Vec<String>, caller_auth: CallerAuthConfig) -> Self {
        GatewayConfig {
            runner_urls,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            caller_auth,
            admin_token: None,
            rate_limit: RateLimitConfig::default(),
            cors_allowed_origins: Vec::new(),
            idempotency: IdempotencyConfig::default(),
            install_cache_ttl: DEFAULT_INSTALL_CACHE_TTL,
            install_cache_capacity: DEFAULT_INSTALL_CACHE_CAPACITY,
            execution_log: ExecLogConfig::default(),
            tenant_rate_limit: RateLimitConfig::tenant_default(),
            caller_rate_limit: RateLimitConfig::caller_default(),
            unknown_extension_ttl: DEFAULT_UNKNOWN_EXTENSION_TTL,
            unknown_extension_capacity: DEFAULT_UNKNOWN_EXTENSION_CAPACITY,
            ui_public_base: None,
            max_event_payload_bytes: DEFAULT_MAX_EVENT_PAYLOAD_BYTES,
            quotas: QuotaConfig::default(),
            runner_tls: None,
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field by field so that the admin token never reaches a log line.
        f.debug_struct("GatewayConfig")
            .field("runner_urls", &self.runner_urls)
            .field("health_interval", &self.health_interval)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("caller_auth", &self.caller_auth)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("rate_limit", &self.rate_limit)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("idempotency", &self.idempotency)
            .field("install_cache_ttl", &self.install_cache_ttl)
            .field("install_cache_capacity", &self.install_cache_capacity)
            .field("execution_log", &self.execution_log)
            .field("tenant_rate_limit", &self.tenant_rate_limit)
            .field("caller_rate_limit", &self.caller_rate_limit)
            .field("unknown_extension_ttl", &self.unknown_extension_ttl)
            .field(
                "unknown_extension_capacity",
                &self.unknown_extension_capacity,
            )
            .field("ui_public_base", &self.ui_public_base)
            .field("max_event_payload_bytes", &self.max_event_payload_bytes)
            .field("quotas", &self.quotas)
            .field("runner_tls", &self.runner_tls)
            .finish_non_exhaustive()
    }
}

/// How caller JWTs are checked.
#[derive(Clone)]
pub struct CallerAuthConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Verification keys (PEM for EdDSA, ES256 and RS256; a shared secret for HS256).
    pub keys: Vec<CallerKey>,
    /// A JWK set file whose signature keys are added to `keys`, read at startup.
    pub jwks_path: Option<PathBuf>,
    /// Claim carrying the tenant id (a non-empty string).
    pub tenant_claim: String,
    /// Claim carrying the user id (optional in a token; a string when present).
    pub user_claim: String,
    /// Longest time the caller of a verified token is reused without checking its
    /// signature again (never past the token's `exp`); zero checks every call.
    pub cache_ttl: Duration,
    /// Most verified tokens kept.
    pub cache_capacity: usize,
}

impl CallerAuthConfig {
    /// A configuration with one EdDSA (Ed25519, SPKI PEM) key and the default claim names
    /// (`tenant`, `sub`).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        CallerAuthConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: vec![CallerKey::eddsa_pem(public_key_pem)],
            jwks_path: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.to_owned(),
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
            cache_ttl: DEFAULT_CALLER_CACHE_TTL,
            cache_capacity: DEFAULT_CALLER_CACHE_CAPACITY,
        }
    }
}

impl std::fmt::Debug for CallerAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys)
            .field("jwks_path", &self.jwks_path)
            .field("tenant_claim", &self.tenant_claim)
            .field("user_claim", &self.user_claim)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_admin_token() {
        let mut config = GatewayConfig::new(
            "http://127.0.0.1:1",
            CallerAuthConfig::new("iss", "aud", "pem"),
        );
        config.admin_token = Some("very-secret-admin-token".into());
        let text = format!("{config:?}");
        assert!(!text.contains("very-secret-admin-token"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn defaults() {
        let config = GatewayConfig::new(
            "http://127.0.0.1:1",
            CallerAuthConfig::new("iss", "aud", "pem"),
        );
        assert_eq!(config.max_request_bytes, 1024 * 1024);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.caller_auth.tenant_claim, "tenant");
        assert_eq!(config.caller_auth.user_claim, "sub");
        assert_eq!(config.caller_auth.keys.len(), 1);
        assert!(config.cors_allowed_origins.is_empty());
        assert_eq!(config.rate_limit, RateLimitConfig::default());
        assert_eq!(config.idempotency.window, Duration::from_secs(24 * 3600));
        assert_eq!(config.runner_urls, ["http://127.0.0.1:1"]);
        assert_eq!(config.health_interval, Duration::from_secs(2));
        assert_eq!(config.install_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.caller_auth.cache_ttl, Duration::from_secs(60));
        assert_eq!(config.execution_log, ExecLogConfig::default());
        assert_eq!(config.tenant_rate_limit.per_second, 500.0);
        assert_eq!(config.tenant_rate_limit.burst, 1000);
        assert_eq!(config.caller_rate_limit.per_second, 200.0);
        assert_eq!(config.caller_rate_limit.burst, 400);
        assert_eq!(config.unknown_extension_ttl, Duration::from_secs(300));
        assert_eq!(config.idempotency.max_entries_per_tenant, 1000);
    }
}
