//! The operator's configuration file (`--config FILE`, TOML): engine and instance settings,
//! runner admission caps, gateway caches and execution-log writer, and storage limits. Every key is optional and has a documented
//! default; an unknown key is an error naming it.

use std::path::Path;

use anyhow::{Context, Result};
use palisade_gateway::{ExecLogConfig, GatewayConfig};
use palisade_runner::{MetricsToken, RunnerConfig};
use palisade_runtime::RuntimeConfig;
use palisade_runtime::capability::storage::StorageLimits;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OperatorConfig {
    /// `[runtime]`: engine, pool, limits, egress policy, metrics bounds.
    pub runtime: RuntimeConfig,
    /// `[runner]`: request size and in-flight caps.
    pub runner: RunnerSection,
    /// `[gateway]`: caches and the execution-log writer.
    pub gateway: GatewaySection,
    /// `[storage]`: the storage capability's limits.
    pub storage: StorageLimits,
    /// `[registry]`: how the registry's trust set is cached.
    pub registry: RegistrySection,
}

/// `[registry]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RegistrySection {
    /// How long the trusted publisher keys read from the registry are reused, in ms: the
    /// longest a `palisade trust add` or `remove` takes to reach a running process.
    pub trust_cache_ttl_ms: u64,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            trust_cache_ttl_ms: millis(palisade_registry::trust::DEFAULT_TRUST_CACHE_TTL),
        }
    }
}

/// `[runner]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RunnerSection {
    /// Largest guest request body, in bytes.
    pub max_request_bytes: usize,
    /// Calls of one install in flight at once.
    pub max_in_flight_per_install: usize,
    /// Calls of one tenant in flight at once.
    pub max_in_flight_per_tenant: usize,
    /// How long a looked-up install is reused before the registry is read again, in ms.
    pub install_cache_ttl_ms: u64,
    /// Most installs kept in the runner's install cache.
    pub install_cache_entries: usize,
    /// A file holding the bearer token `GET /metrics` requires (none: open).
    pub metrics_token_file: Option<std::path::PathBuf>,
}

impl Default for RunnerSection {
    fn default() -> Self {
        let d = RunnerConfig::default();
        RunnerSection {
            max_request_bytes: d.max_request_bytes,
            max_in_flight_per_install: d.max_in_flight_per_install,
            max_in_flight_per_tenant: d.max_in_flight_per_tenant,
            install_cache_ttl_ms: u64::try_from(d.install_cache_ttl.as_millis())
                .unwrap_or(u64::MAX),
            install_cache_entries: d.install_cache_entries,
            metrics_token_file: None,
        }
    }
}

impl RunnerSection {
    /// As the runner's configuration, reading the metrics token file.
    pub(crate) fn to_runner_config(&self) -> Result<RunnerConfig> {
        let metrics_token =
            match &self.metrics_token_file {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("[runner] metrics_token_file: reading {}", path.display())
                    })?;
                    Some(MetricsToken::new(&text).with_context(|| {
                        format!("[runner] metrics_token_file {}", path.display())
                    })?)
                }
            };
        Ok(RunnerConfig {
            max_request_bytes: self.max_request_bytes,
            max_in_flight_per_install: self.max_in_flight_per_install,
            max_in_flight_per_tenant: self.max_in_flight_per_tenant,
            install_cache_ttl: std::time::Duration::from_millis(self.install_cache_ttl_ms),
            install_cache_entries: self.install_cache_entries,
            metrics_token,
        })
    }
}

/// `[gateway]`. Policy (caller keys, rate limit, CORS, idempotency) stays on the command
/// line of `palisade gateway`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GatewaySection {
    /// Largest request body a caller may send, in bytes (a manifest's
    /// `limits.max_request_bytes` lowers it per extension).
    pub max_request_bytes: usize,
    /// How long a resolved install is reused before the registry is read again, in ms: the
    /// longest a disable, uninstall or config change takes to reach this gateway.
    pub install_cache_ttl_ms: u64,
    /// Most installs kept in the install cache.
    pub install_cache_entries: usize,
    /// How long a verified caller token is reused (never past its `exp`), in ms.
    pub caller_token_cache_ttl_ms: u64,
    /// Most caller tokens kept verified.
    pub caller_token_cache_entries: usize,
    /// Execution-log rows waiting for the writer; a full queue drops rows (counted).
    pub execution_log_queue: usize,
    /// Most execution-log rows per write transaction.
    pub execution_log_batch_rows: usize,
    /// How long the writer lets a batch fill, in ms.
    pub execution_log_batch_interval_ms: u64,
    /// How long a (tenant, extension) pair without an enabled install is answered 404
    /// without asking the registry again, in ms.
    pub unknown_extension_ttl_ms: u64,
    /// Most such pairs remembered.
    pub unknown_extension_entries: usize,
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for GatewaySection {
    fn default() -> Self {
        let d = GatewayConfig::with_runners(
            Vec::new(),
            palisade_gateway::CallerAuthConfig::new("", "", ""),
        );
        GatewaySection {
            max_request_bytes: d.max_request_bytes,
            install_cache_ttl_ms: millis(d.install_cache_ttl),
            install_cache_entries: d.install_cache_capacity,
            caller_token_cache_ttl_ms: millis(d.caller_auth.cache_ttl),
            caller_token_cache_entries: d.caller_auth.cache_capacity,
            execution_log_queue: d.execution_log.queue_capacity,
            execution_log_batch_rows: d.execution_log.batch_rows,
            execution_log_batch_interval_ms: millis(d.execution_log.batch_interval),
            unknown_extension_ttl_ms: millis(d.unknown_extension_ttl),
            unknown_extension_entries: d.unknown_extension_capacity,
        }
    }
}

impl GatewaySection {
    /// Sets these values on `config`.
    pub(crate) fn apply(&self, config: &mut GatewayConfig) {
        use std::time::Duration;
        config.max_request_bytes = self.max_request_bytes;
        config.install_cache_ttl = Duration::from_millis(self.install_cache_ttl_ms);
        config.install_cache_capacity = self.install_cache_entries;
        config.caller_auth.cache_ttl = Duration::from_millis(self.caller_token_cache_ttl_ms);
        config.caller_auth.cache_capacity = self.caller_token_cache_entries;
        config.execution_log = ExecLogConfig {
            queue_capacity: self.execution_log_queue,
            batch_rows: self.execution_log_batch_rows,
            batch_interval: Duration::from_millis(self.execution_log_batch_interval_ms),
        };
        config.unknown_extension_ttl = Duration::from_millis(self.unknown_extension_ttl_ms);
        config.unknown_extension_capacity = self.unknown_extension_entries;
    }
}

/// Reads `path`, or the defaults when none is given.
pub(crate) fn load(path: Option<&Path>) -> Result<OperatorConfig> {
    let Some(path) = path else {
        return Ok(OperatorConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("configuration file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_optional_and_unknown_keys_are_named() {
        let config: OperatorConfig = toml::from_str(
            "[runtime]\nmax_instances = 20\n[runner]\nmax_in_flight_per_tenant = 3\n",
        )
        .unwrap();
        assert_eq!(config.runtime.max_instances, 20);
        assert_eq!(config.runner.max_in_flight_per_tenant, 3);
        assert_eq!(
            config.runner.max_in_flight_per_install,
            RunnerConfig::default().max_in_flight_per_install
        );
        let err = toml::from_str::<OperatorConfig>("[runtime]\nmax_instancez = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_instancez"), "{err}");
    }

    #[test]
    fn gateway_keys_reach_the_gateway_config_and_default_to_its_defaults() {
        let config: OperatorConfig = toml::from_str(
            "[gateway]\ninstall_cache_ttl_ms = 30000\nexecution_log_batch_rows = 64\n",
        )
        .unwrap();
        let defaults = GatewayConfig::with_runners(
            Vec::new(),
            palisade_gateway::CallerAuthConfig::new("i", "a", "pem"),
        );
        let mut gateway = defaults.clone();
        config.gateway.apply(&mut gateway);
        assert_eq!(
            gateway.install_cache_ttl,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(gateway.execution_log.batch_rows, 64);
        assert_eq!(
            gateway.install_cache_capacity,
            defaults.install_cache_capacity
        );
        assert_eq!(
            gateway.caller_auth.cache_ttl,
            defaults.caller_auth.cache_ttl
        );
        assert_eq!(
            gateway.execution_log.queue_capacity,
            defaults.execution_log.queue_capacity
        );
        let err = toml::from_str::<OperatorConfig>("[gateway]\ninstall_cache_tl_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("install_cache_tl_ms"), "{err}");
        assert_eq!(
            gateway.unknown_extension_ttl,
            defaults.unknown_extension_ttl
        );
        let config: OperatorConfig = toml::from_str(
            "[gateway]
unknown_extension_ttl_ms = 5000
",
        )
        .unwrap();
        config.gateway.apply(&mut gateway);
        assert_eq!(
            gateway.unknown_extension_ttl,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn the_metrics_token_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("metrics.token");
        std::fs::write(&token, "scrape-secret\n").unwrap();
        let config: OperatorConfig = toml::from_str(&format!(
            "[runner]\nmetrics_token_file = \"{}\"\n",
            token.display()
        ))
        .unwrap();
        assert!(
            config
                .runner
                .to_runner_config()
                .unwrap()
                .metrics_token
                .is_some()
        );
        assert!(
            OperatorConfig::default()
                .runner
                .to_runner_config()
                .unwrap()
                .metrics_token
                .is_none()
        );
        std::fs::write(&token, "two words\n").unwrap();
        let err = format!("{:#}", config.runner.to_runner_config().unwrap_err());
        assert!(
            err.contains("metrics_token_file") && !err.contains("words"),
            "{err}"
        );
        std::fs::remove_file(&token).unwrap();
        let err = format!("{:#}", config.runner.to_runner_config().unwrap_err());
        assert!(err.contains("metrics.token"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/palisade.toml"))).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/palisade.toml"));
    }
}
