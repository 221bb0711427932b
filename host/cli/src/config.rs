//! The operator's configuration file (`--config FILE`, TOML): engine and instance settings,
//! runner admission caps and storage limits. Every key is optional and has a documented
//! default; an unknown key is an error naming it.

use std::path::Path;

use anyhow::{Context, Result};
use palisade_runner::RunnerConfig;
use palisade_runtime::RuntimeConfig;
use palisade_runtime::capability::storage::StorageLimits;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// `[runtime]`: engine, pool, limits, egress policy, metrics bounds.
    pub runtime: RuntimeConfig,
    /// `[runner]`: request size and in-flight caps.
    pub runner: RunnerSection,
    /// `[storage]`: the storage capability's limits.
    pub storage: StorageLimits,
}

/// `[runner]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerSection {
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
        }
    }
}

impl RunnerSection {
    /// As the runner's configuration.
    pub fn to_runner_config(&self) -> RunnerConfig {
        RunnerConfig {
            max_request_bytes: self.max_request_bytes,
            max_in_flight_per_install: self.max_in_flight_per_install,
            max_in_flight_per_tenant: self.max_in_flight_per_tenant,
            install_cache_ttl: std::time::Duration::from_millis(self.install_cache_ttl_ms),
            install_cache_entries: self.install_cache_entries,
        }
    }
}

/// Reads `path`, or the defaults when none is given.
pub fn load(path: Option<&Path>) -> Result<OperatorConfig> {
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
    fn a_missing_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/palisade.toml"))).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/palisade.toml"));
    }
}
