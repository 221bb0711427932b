//! The gateway's request-policy flags: caller keys, per-install, per-tenant and per-caller
//! rate limits, CORS origins and the idempotency window.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_gateway::ratelimit::RateLimitConfig;
use palisade_gateway::{CallerKey, CallerKeyAlgorithm, GatewayConfig};

use crate::datadir::read_string;

/// Request-policy settings of a gateway; without any, the defaults and the data
/// directory's development caller key apply.
#[derive(Debug, Default, Args)]
pub(crate) struct PolicyArgs {
    /// Expected `iss` of caller tokens (default: the development issuer).
    #[arg(long, value_name = "ISSUER")]
    pub caller_issuer: Option<String>,
    /// Expected `aud` of caller tokens (default: the development audience).
    #[arg(long, value_name = "AUDIENCE")]
    pub caller_audience: Option<String>,
    /// A caller-token key, `ALG:FILE` or `ALG:FILE:KID`, ALG one of EdDSA, ES256, RS256
    /// (FILE: public key PEM) or HS256 (FILE: the shared secret). Repeatable; replaces the
    /// development key.
    #[arg(long = "caller-key", value_name = "ALG:FILE[:KID]")]
    pub caller_keys: Vec<String>,
    /// A JWK set file of caller-token keys; replaces the development key.
    #[arg(long, value_name = "FILE")]
    pub caller_jwks: Option<PathBuf>,
    /// Claim carrying the caller's tenant.
    #[arg(long, value_name = "CLAIM")]
    pub tenant_claim: Option<String>,
    /// Claim carrying the caller's user.
    #[arg(long, value_name = "CLAIM")]
    pub user_claim: Option<String>,
    /// Calls a second each install may make on average (0 turns the limit off; default 50).
    #[arg(long, value_name = "N")]
    pub rate_per_second: Option<f64>,
    /// Largest burst of calls per install (default 100).
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Calls a second each tenant may make on average over all its installs, checked
    /// before the install is resolved (0 turns the limit off; default 500).
    #[arg(long, value_name = "N")]
    pub tenant_rate_per_second: Option<f64>,
    /// Largest burst of calls per tenant (default 1000).
    #[arg(long, value_name = "N")]
    pub tenant_rate_burst: Option<u32>,
    /// Calls a second each caller (a tenant's user) may make on average, checked before
    /// the install is resolved (0 turns the limit off; default 200).
    #[arg(long, value_name = "N")]
    pub caller_rate_per_second: Option<f64>,
    /// Largest burst of calls per caller (default 400).
    #[arg(long, value_name = "N")]
    pub caller_rate_burst: Option<u32>,
    /// A browser origin allowed to call the API, e.g. https://app.example (repeatable).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Seconds an idempotent answer is replayed (default 86400).
    #[arg(long, value_name = "SECONDS")]
    pub idempotency_window_secs: Option<u64>,
    /// Most idempotent answers kept for one tenant (default 1000).
    #[arg(long, value_name = "N")]
    pub idempotency_tenant_entries: Option<usize>,
    /// Most bytes of idempotent answers kept for one tenant (default 8388608).
    #[arg(long, value_name = "BYTES")]
    pub idempotency_tenant_bytes: Option<usize>,
}

impl PolicyArgs {
    /// Applies the settings given to `config`.
    pub(crate) fn apply(&self, config: &mut GatewayConfig) -> Result<()> {
        let auth = &mut config.caller_auth;
        if let Some(issuer) = &self.caller_issuer {
            auth.issuer.clone_from(issuer);
        }
        if let Some(audience) = &self.caller_audience {
            auth.audience.clone_from(audience);
        }
        if !self.caller_keys.is_empty() || self.caller_jwks.is_some() {
            auth.keys = self
                .caller_keys
                .iter()
                .map(|spec| caller_key(spec))
                .collect::<Result<_>>()?;
            auth.jwks_path.clone_from(&self.caller_jwks);
        }
        if let Some(claim) = &self.tenant_claim {
            auth.tenant_claim.clone_from(claim);
        }
        if let Some(claim) = &self.user_claim {
            auth.user_claim.clone_from(claim);
        }
        set_limit(
            &mut config.rate_limit,
            "rate",
            self.rate_per_second,
            self.rate_burst,
        )?;
        set_limit(
            &mut config.tenant_rate_limit,
            "tenant-rate",
            self.tenant_rate_per_second,
            self.tenant_rate_burst,
        )?;
        set_limit(
            &mut config.caller_rate_limit,
            "caller-rate",
            self.caller_rate_per_second,
            self.caller_rate_burst,
        )?;
        config
            .cors_allowed_origins
            .extend(self.cors_origins.iter().cloned());
        if let Some(secs) = self.idempotency_window_secs {
            config.idempotency.window = Duration::from_secs(secs);
        }
        if let Some(entries) = self.idempotency_tenant_entries {
            config.idempotency.max_entries_per_tenant = entries;
        }
        if let Some(bytes) = self.idempotency_tenant_bytes {
            config.idempotency.max_bytes_per_tenant = bytes;
        }
        Ok(())
    }
}

/// Applies `--{flag}-per-second` and `--{flag}-burst` to `limit`.
fn set_limit(
    limit: &mut RateLimitConfig,
    flag: &str,
    per_second: Option<f64>,
    burst: Option<u32>,
) -> Result<()> {
    if let Some(rate) = per_second {
        if !rate.is_finite() || rate < 0.0 {
            bail!("--{flag}-per-second must be a non-negative number, got {rate}");
        }
        limit.per_second = rate;
    }
    if let Some(burst) = burst {
        if burst == 0 {
            bail!("--{flag}-burst must be at least 1");
        }
        limit.burst = burst;
    }
    Ok(())
}

/// Reads `ALG:FILE[:KID]`.
fn caller_key(spec: &str) -> Result<CallerKey> {
    let mut parts = spec.splitn(3, ':');
    let (Some(alg), Some(file)) = (parts.next(), parts.next()) else {
        bail!("--caller-key {spec}: expected ALG:FILE or ALG:FILE:KID");
    };
    let algorithm: CallerKeyAlgorithm = alg
        .parse()
        .with_context(|| format!("--caller-key {spec}"))?;
    let path = PathBuf::from(file);
    let key = if algorithm == CallerKeyAlgorithm::Hs256 {
        let secret = std::fs::read(&path)
            .with_context(|| format!("--caller-key {spec}: reading {}", path.display()))?;
        CallerKey::hs256_secret(secret.trim_ascii().to_vec())
    } else {
        CallerKey::pem(
            algorithm,
            read_string(&path).with_context(|| format!("--caller-key {spec}"))?,
        )
    };
    Ok(match parts.next() {
        Some(kid) if !kid.is_empty() => key.with_kid(kid),
        _ => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_gateway::CallerAuthConfig;

    fn config() -> GatewayConfig {
        GatewayConfig::new("http://127.0.0.1:1", CallerAuthConfig::new("i", "a", "pem"))
    }

    #[test]
    fn no_flags_keep_the_defaults() {
        let mut config = config();
        PolicyArgs::default().apply(&mut config).unwrap();
        assert_eq!(config.caller_auth.keys.len(), 1);
        assert!(config.cors_allowed_origins.is_empty());
        assert_eq!(config.rate_limit.per_second, 50.0);
    }

    #[test]
    fn flags_set_keys_limits_and_origins() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hs.secret");
        std::fs::write(&secret, "a shared secret of more than thirty-two bytes\n").unwrap();
        let args = PolicyArgs {
            caller_issuer: Some("https://idp".into()),
            caller_keys: vec![format!("HS256:{}:k1", secret.display())],
            rate_per_second: Some(5.0),
            rate_burst: Some(10),
            tenant_rate_per_second: Some(0.0),
            caller_rate_per_second: Some(7.5),
            caller_rate_burst: Some(3),
            cors_origins: vec!["https://app.example".into()],
            idempotency_window_secs: Some(60),
            idempotency_tenant_entries: Some(5),
            ..PolicyArgs::default()
        };
        let mut config = config();
        args.apply(&mut config).unwrap();
        let keys = &config.caller_auth.keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithm, CallerKeyAlgorithm::Hs256);
        assert_eq!(keys[0].kid.as_deref(), Some("k1"));
        assert_eq!(
            keys[0].material,
            b"a shared secret of more than thirty-two bytes"
        );
        assert_eq!(config.caller_auth.issuer, "https://idp");
        assert_eq!(config.rate_limit.burst, 10);
        assert_eq!(config.tenant_rate_limit.per_second, 0.0);
        assert_eq!(config.caller_rate_limit.per_second, 7.5);
        assert_eq!(config.caller_rate_limit.burst, 3);
        assert_eq!(config.cors_allowed_origins, ["https://app.example"]);
        assert_eq!(config.idempotency.window, Duration::from_secs(60));
        assert_eq!(config.idempotency.max_entries_per_tenant, 5);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for spec in ["HS256", "PS512:/x", "ES256:/nonexistent/key.pem"] {
            let args = PolicyArgs {
                caller_keys: vec![spec.into()],
                ..PolicyArgs::default()
            };
            let err = args.apply(&mut config()).unwrap_err();
            assert!(
                format!("{err:#}").contains(spec.split(':').next().unwrap()),
                "{err:#}"
            );
        }
        let args = PolicyArgs {
            rate_per_second: Some(-1.0),
            ..PolicyArgs::default()
        };
        assert!(args.apply(&mut config()).is_err());
        let args = PolicyArgs {
            tenant_rate_burst: Some(0),
            ..PolicyArgs::default()
        };
        let err = args.apply(&mut config()).unwrap_err();
        assert!(format!("{err}").contains("--tenant-rate-burst"), "{err}");
    }
}
