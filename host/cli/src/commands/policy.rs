//! The gateway's request-policy flags: caller keys, per-install, per-tenant and per-caller
//! rate limits, CORS origins and the idempotency window. Each overrides the key of the same
//! name in the configuration file's `[policy]`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::config::PolicySection;

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
    /// The file's `[policy]` with the flags given here replacing its keys (repeatable flags
    /// replace the whole list).
    pub(crate) fn over(&self, file: &PolicySection) -> Result<PolicySection> {
        let mut policy = file.clone();
        if self.caller_issuer.is_some() {
            policy.caller_issuer.clone_from(&self.caller_issuer);
        }
        if self.caller_audience.is_some() {
            policy.caller_audience.clone_from(&self.caller_audience);
        }
        if !self.caller_keys.is_empty() || self.caller_jwks.is_some() {
            policy.caller_keys.clone_from(&self.caller_keys);
            policy.caller_jwks.clone_from(&self.caller_jwks);
        }
        if let Some(claim) = &self.tenant_claim {
            policy.tenant_claim.clone_from(claim);
        }
        if let Some(claim) = &self.user_claim {
            policy.user_claim.clone_from(claim);
        }
        for (limit, flag, per_second, burst) in [
            (
                &mut policy.rate_limit,
                "rate",
                self.rate_per_second,
                self.rate_burst,
            ),
            (
                &mut policy.tenant_rate_limit,
                "tenant-rate",
                self.tenant_rate_per_second,
                self.tenant_rate_burst,
            ),
            (
                &mut policy.caller_rate_limit,
                "caller-rate",
                self.caller_rate_per_second,
                self.caller_rate_burst,
            ),
        ] {
            if let Some(rate) = per_second {
                limit.per_second = rate;
            }
            if let Some(burst) = burst {
                limit.burst = burst;
            }
            if let Some((key, problem)) = limit.problems().into_iter().next() {
                let key = key.replace('_', "-");
                bail!("--{flag}-{key} {problem}");
            }
        }
        if !self.cors_origins.is_empty() {
            policy.cors_origins.clone_from(&self.cors_origins);
        }
        let idempotency = &mut policy.idempotency;
        if let Some(secs) = self.idempotency_window_secs {
            idempotency.window_secs = secs;
        }
        if let Some(entries) = self.idempotency_tenant_entries {
            idempotency.max_entries_per_tenant = entries;
        }
        if let Some(bytes) = self.idempotency_tenant_bytes {
            idempotency.max_bytes_per_tenant = bytes;
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use palisade_gateway::{CallerAuthConfig, CallerKeyAlgorithm, GatewayConfig};

    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig::new("http://127.0.0.1:1", CallerAuthConfig::new("i", "a", "pem"))
    }

    /// The gateway configuration for `flags` over the default file.
    fn applied(flags: &PolicyArgs) -> Result<GatewayConfig> {
        let mut config = config();
        flags.over(&PolicySection::default())?.apply(&mut config)?;
        Ok(config)
    }

    #[test]
    fn no_flags_keep_the_defaults() {
        let config = applied(&PolicyArgs::default()).unwrap();
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
        let config = applied(&args).unwrap();
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
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let file = crate::config::parse(
            "[policy]\ncors_origins = [\"https://file.example\"]\n\
             [policy.rate_limit]\nper_second = 3.0\nburst = 4\n",
        )
        .unwrap()
        .policy;
        let flags = PolicyArgs {
            rate_per_second: Some(9.0),
            ..PolicyArgs::default()
        };
        let policy = flags.over(&file).unwrap();
        assert_eq!(policy.rate_limit.per_second, 9.0);
        assert_eq!(policy.rate_limit.burst, 4);
        assert_eq!(policy.cors_origins, ["https://file.example"]);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for spec in ["HS256", "PS512:/x", "ES256:/nonexistent/key.pem"] {
            let args = PolicyArgs {
                caller_keys: vec![spec.into()],
                ..PolicyArgs::default()
            };
            let err = applied(&args).unwrap_err();
            assert!(
                format!("{err:#}").contains(spec.split(':').next().unwrap()),
                "{err:#}"
            );
        }
        let args = PolicyArgs {
            rate_per_second: Some(-1.0),
            ..PolicyArgs::default()
        };
        let err = applied(&args).unwrap_err();
        assert!(format!("{err}").contains("--rate-per-second"), "{err}");
        let args = PolicyArgs {
            tenant_rate_burst: Some(0),
            ..PolicyArgs::default()
        };
        let err = applied(&args).unwrap_err();
        assert!(format!("{err}").contains("--tenant-rate-burst"), "{err}");
    }
}
