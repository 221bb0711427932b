//! Operator configuration of the gateway.

use std::time::Duration;

/// Default bound on a caller's request body: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Default deadline for one call, body upload and runner round trip included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default JWT claim carrying the caller's tenant.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";
/// Default JWT claim carrying the caller's user.
pub const DEFAULT_USER_CLAIM: &str = "sub";

/// Everything the gateway needs to serve extension calls.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL of the runner, e.g. `http://127.0.0.1:8081` (no trailing path).
    pub runner_url: String,
    /// Upper bound on a caller's request body; a manifest may only lower it.
    pub max_request_bytes: usize,
    /// Upper bound on one call; a manifest may only lower it.
    pub request_timeout: Duration,
    /// How callers are authenticated.
    pub caller_auth: CallerAuthConfig,
}

impl GatewayConfig {
    /// A configuration with the default limits.
    pub fn new(runner_url: impl Into<String>, caller_auth: CallerAuthConfig) -> Self {
        GatewayConfig {
            runner_url: runner_url.into(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            caller_auth,
        }
    }
}

/// How caller JWTs are checked.
#[derive(Clone)]
pub struct CallerAuthConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// The issuer's EdDSA (Ed25519) public key, SPKI PEM.
    pub public_key_pem: String,
    /// Claim carrying the tenant id (a non-empty string).
    pub tenant_claim: String,
    /// Claim carrying the user id (optional in a token; a string when present).
    pub user_claim: String,
}

impl CallerAuthConfig {
    /// A configuration with the default claim names (`tenant`, `sub`).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        CallerAuthConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            public_key_pem: public_key_pem.into(),
            tenant_claim: DEFAULT_TENANT_CLAIM.to_owned(),
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
        }
    }
}

impl std::fmt::Debug for CallerAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tenant_claim", &self.tenant_claim)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
