//! The sections of the operator's configuration file. Each type is the file's schema:
//! its doc comments are the comments of `palisade config default`, its `Default` the
//! values printed there, so the file, the defaults and the documentation cannot drift.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_gateway::quota::{QuotaConfig, QuotaLimits, TenantQuotas};
use palisade_gateway::ratelimit::RateLimitConfig;
use palisade_gateway::{ExecLogConfig, GatewayConfig};
use palisade_runner::{MetricsToken, RunnerConfig};
use palisade_runtime::RuntimeConfig;
use palisade_runtime::capability::storage::StorageLimits;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OperatorConfig {
    /// The wasm engine, the instance pool, the limits of one call, and the operator
    /// settings of the capabilities (`egress`, `metrics`, `cache`).
    pub runtime: RuntimeConfig,
    /// Limits of the `storage` capability.
    pub storage: StorageLimits,
    /// The runner: request size, admission caps, install cache, `/metrics` token.
    pub runner: RunnerSection,
    /// The gateway: request limits, caches, the execution-log writer, runner health checks.
    pub gateway: GatewaySection,
    /// The gateway's request policy: caller tokens, rate limits, CORS and idempotency.
    /// The flags of `palisade gateway` and `palisade up` of the same names override it.
    pub policy: PolicySection,
    /// The registry: its cache of trusted publisher keys, and where its objects are kept.
    pub registry: RegistrySection,
    /// Serving extension UIs (the runner's `/ext-ui`).
    pub ui: UiSection,
    /// Publishing events, and the dispatchers that deliver them.
    pub events: EventsSection,
    /// Exporting the spans of calls over OTLP.
    pub telemetry: TelemetrySection,
    /// The gateway's quotas: what each tenant, and each install, may use in a UTC day.
    pub quotas: QuotasSection,
}

/// `[quotas]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct QuotasSection {
    /// Most calls a gateway claims from the registry at once (it claims a hundredth of a
    /// calls limit, at least 1, at most this); calls a gateway claimed and did not spend
    /// are lost when the day ends.
    pub max_allowance: u64,
    /// How long a gateway reuses the consumption it read for the fuel and egress checks,
    /// in ms.
    pub usage_refresh_ms: u64,
    /// Limits of every tenant, over all its installs (unless `tenants` names it).
    pub tenant: LimitsSection,
    /// Limits of every install (unless `tenants` names its tenant).
    pub install: LimitsSection,
    /// Tenants with quotas of their own, which replace `tenant` and `install` whole for
    /// them: `[quotas.tenants.<tenant_id>.tenant]` and `[quotas.tenants.<tenant_id>.install]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantQuotasSection>,
}

impl Default for QuotasSection {
    fn default() -> Self {
        let d = QuotaConfig::default();
        QuotasSection {
            max_allowance: d.max_allowance,
            usage_refresh_ms: millis(d.usage_refresh),
            tenant: LimitsSection::default(),
            install: LimitsSection::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// The limits of one scope per UTC day; an unset limit is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LimitsSection {
    /// Calls a day (refused with 429 `calls_quota_exceeded`).
    pub calls: Option<u64>,
    /// Fuel a day (refused with 429 `fuel_quota_exceeded`); needs `runtime.fuel`.
    pub fuel: Option<u64>,
    /// HTTP egress bytes a day, both directions (refused with 429
    /// `egress_quota_exceeded`).
    pub egress_bytes: Option<u64>,
}

impl LimitsSection {
    fn to_limits(self) -> QuotaLimits {
        QuotaLimits {
            calls: self.calls,
            fuel: self.fuel,
            egress_bytes: self.egress_bytes,
        }
    }

    fn sets_fuel(&self) -> bool {
        self.fuel.is_some()
    }
}

/// `[quotas.tenants.<tenant_id>]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TenantQuotasSection {
    /// Limits of this tenant, over all its installs.
    pub tenant: LimitsSection,
    /// Limits of each of this tenant's installs.
    pub install: LimitsSection,
}

impl QuotasSection {
    /// The gateway's quota configuration.
    pub(crate) fn to_quota_config(&self) -> QuotaConfig {
        let quotas = |tenant: LimitsSection, install: LimitsSection| TenantQuotas {
            tenant: tenant.to_limits(),
            install: install.to_limits(),
        };
        QuotaConfig {
            default: quotas(self.tenant, self.install),
            tenants: self
                .tenants
                .iter()
                .map(|(id, section)| (id.clone(), quotas(section.tenant, section.install)))
                .collect(),
            max_allowance: self.max_allowance,
            usage_refresh: Duration::from_millis(self.usage_refresh_ms),
        }
    }

    /// Whether any limit is on fuel.
    pub(crate) fn limits_fuel(&self) -> bool {
        self.tenant.sets_fuel()
            || self.install.sets_fuel()
            || self
                .tenants
                .values()
                .any(|t| t.tenant.sets_fuel() || t.install.sets_fuel())
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TelemetrySection {
    /// Where spans are exported over OTLP/HTTP: the collector's base URL (e.g.
    /// `http://127.0.0.1:4318`; spans go to `/v1/traces` under it). Unset: no export,
    /// unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    pub otlp_endpoint: Option<String>,
    /// The OTLP encoding: `http/protobuf` or `http/json`.
    pub otlp_protocol: OtlpProtocol,
    /// The `service.name` of the exported spans. Unset: `palisade-` and the command
    /// (`palisade-up`, `palisade-gateway`, `palisade-runner`, `palisade-dispatcher`).
    pub service_name: Option<String>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            service_name: None,
        }
    }
}

/// The OTLP encoding over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum OtlpProtocol {
    /// Protocol buffers, the default of OTLP.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// JSON.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// `[events]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EventsSection {
    /// Run an event dispatcher in `palisade runner` and `palisade up` (`palisade
    /// dispatcher` always runs one). Any number of processes may dispatch at once.
    pub dispatch: bool,
    /// How long an idle dispatcher waits before looking for due deliveries again, in ms.
    pub poll_interval_ms: u64,
    /// Most deliveries a dispatcher claims, and delivers concurrently, at once.
    pub batch: u32,
    /// Attempts before a delivery is dead (kept, and retried only by hand).
    pub max_attempts: u32,
    /// Wait before the second attempt, in ms; doubled for each further one, with up to a
    /// half taken off at random.
    pub backoff_base_ms: u64,
    /// Longest wait between two attempts, in ms.
    pub backoff_max_ms: u64,
    /// How long a claimed delivery is held by its dispatcher, in ms: a dispatcher that dies
    /// mid-delivery delays it by this much. Must be longer than `runtime.max_timeout_ms`.
    pub lease_ms: u64,
    /// Largest event payload accepted by `POST /admin/v1/events`, in bytes.
    pub max_payload_bytes: usize,
    /// Shortest time between two firings of one schedule, in ms, whatever its manifest
    /// asks (`@every 1s` fires at most this often).
    pub min_schedule_interval_ms: u64,
    /// How long an event is kept once none of its deliveries is pending, in hours; its
    /// publisher id answers as a duplicate for that long. Dispatchers remove older ones.
    pub retention_hours: u64,
}

impl Default for EventsSection {
    fn default() -> Self {
        let d = palisade_runner::events::DispatchConfig::default();
        EventsSection {
            dispatch: true,
            poll_interval_ms: millis(d.poll_interval),
            batch: d.batch,
            max_attempts: d.max_attempts,
            backoff_base_ms: millis(d.backoff_base),
            backoff_max_ms: millis(d.backoff_max),
            lease_ms: millis(d.lease),
            max_payload_bytes: gateway_defaults().max_event_payload_bytes,
            min_schedule_interval_ms: millis(d.min_schedule_interval),
            retention_hours: d.retention.as_secs() / 3600,
        }
    }
}

impl EventsSection {
    /// The dispatchers' settings.
    pub(crate) fn to_dispatch_config(&self) -> palisade_runner::events::DispatchConfig {
        palisade_runner::events::DispatchConfig {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            batch: self.batch,
            max_attempts: self.max_attempts,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            lease: Duration::from_millis(self.lease_ms),
            min_schedule_interval: Duration::from_millis(self.min_schedule_interval_ms),
            retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
        }
    }
}

/// `[ui]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UiSection {
    /// The public base URL under which the runners' `/ext-ui/...` are reached (e.g.
    /// `https://ui.example.com`, a load balancer in front of the runners); the admin API
    /// answers each version's and install's `ui_url` under it. Unset: no `ui_url`, except
    /// with `palisade up`, which uses its runner's address.
    pub public_base: Option<String>,
    /// Origins of the host application allowed to show extension UIs in a frame (the
    /// `frame-ancestors` of their content security policy), e.g. `https://app.example`;
    /// empty: no page may frame them.
    pub frame_ancestors: Vec<String>,
    /// Bytes of unpacked UI trees a runner keeps in its data directory (`ui-cache/`); the
    /// least recently used trees go first.
    pub cache_bytes: u64,
    /// Largest single UI file served, in bytes; a larger one is not found.
    pub max_file_bytes: u64,
}

impl Default for UiSection {
    fn default() -> Self {
        let d = palisade_runner::UiConfig::default();
        UiSection {
            public_base: None,
            frame_ancestors: d.frame_ancestors,
            cache_bytes: d.cache_bytes,
            max_file_bytes: d.max_file_bytes,
        }
    }
}

impl UiSection {
    /// The runner's UI settings, its trees kept in `cache_dir`.
    pub(crate) fn to_ui_config(&self, cache_dir: PathBuf) -> palisade_runner::UiConfig {
        palisade_runner::UiConfig {
            cache_dir,
            cache_bytes: self.cache_bytes,
            max_file_bytes: self.max_file_bytes,
            frame_ancestors: self.frame_ancestors.clone(),
        }
    }
}

/// `[registry]`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RegistrySection {
    /// How long the trusted publisher keys read from the registry are reused, in ms. A
    /// `palisade trust add` or `remove` reaches running processes within half a second
    /// through the registry's change sequence, and a process that cannot read it for 5 s
    /// drops the keys it read.
    pub trust_cache_ttl_ms: u64,
    /// Where bundles, signatures and precompiled artifacts are kept: `s3://bucket` or
    /// `s3://bucket/prefix`, shared by every node of a platform. Unset: `objects/` in the
    /// data directory. `--object-store` overrides it. Credentials come from the standard
    /// `AWS_*` variables, never from this file.
    pub object_store: Option<String>,
    /// The endpoint of an S3-compatible server (e.g. `https://minio.internal:9000`). Unset:
    /// `AWS_ENDPOINT_URL`, else AWS S3.
    pub s3_endpoint: Option<String>,
    /// The bucket's region. Unset: `AWS_REGION` or `AWS_DEFAULT_REGION`.
    pub s3_region: Option<String>,
    /// Allow a plain `http://` endpoint (a server on loopback or a private network).
    pub s3_allow_http: bool,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            trust_cache_ttl_ms: millis(palisade_registry::trust::DEFAULT_TRUST_CACHE_TTL),
            object_store: None,
            s3_endpoint: None,
            s3_region: None,
            s3_allow_http: false,
        }
    }
}

/// `[runner]`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RunnerSection {
    /// Largest guest request body, in bytes.
    pub max_request_bytes: usize,
    /// Calls of one install in flight at once.
    pub max_in_flight_per_install: usize,
    /// Calls of one tenant in flight at once.
    pub max_in_flight_per_tenant: usize,
    /// How long a looked-up install is reused before the registry is read again, in ms.
    /// Changes reach the runner within half a second through the registry's change
    /// sequence, and a runner that cannot read it for 5 s drops its caches.
    pub install_cache_ttl_ms: u64,
    /// Most installs kept in the runner's install cache.
    pub install_cache_entries: usize,
    /// A file holding the bearer token `GET /metrics` requires (unset: open to anyone who
    /// can reach the runner).
    pub metrics_token_file: Option<PathBuf>,
    /// Whether the runner's own call series on `/metrics` carry the tenant id as a label
    /// (their number then grows with the number of tenants).
    pub metrics_tenant_label: bool,
    /// Longest wait, in seconds, for running calls to finish once a drain began (SIGTERM
    /// or Ctrl-C).
    pub drain_timeout_secs: u64,
    /// The runner's TLS certificate chain (PEM): set, `palisade runner` serves its
    /// listener over TLS only (with `tls_key`). Reloaded when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) a gateway's client certificate must chain to: set, the
    /// runner requires one (mutual TLS) and refuses any other peer during the handshake.
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for RunnerSection {
    fn default() -> Self {
        let d = RunnerConfig::default();
        RunnerSection {
            max_request_bytes: d.max_request_bytes,
            max_in_flight_per_install: d.max_in_flight_per_install,
            max_in_flight_per_tenant: d.max_in_flight_per_tenant,
            install_cache_ttl_ms: millis(d.install_cache_ttl),
            install_cache_entries: d.install_cache_entries,
            metrics_token_file: None,
            metrics_tenant_label: d.metrics_tenant_label,
            drain_timeout_secs: 60,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl RunnerSection {
    /// The runner's TLS files, when `tls_cert` and `tls_key` are set.
    pub(crate) fn tls_files(&self) -> Option<palisade_protocol::tls::ServerTlsFiles> {
        Some(palisade_protocol::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

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
            install_cache_ttl: Duration::from_millis(self.install_cache_ttl_ms),
            install_cache_entries: self.install_cache_entries,
            metrics_token,
            metrics_tenant_label: self.metrics_tenant_label,
            ui: palisade_runner::UiConfig::default(),
        })
    }
}

/// `[gateway]`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GatewaySection {
    /// Largest request body a caller may send, in bytes (a manifest's
    /// `limits.max_request_bytes` lowers it per extension).
    pub max_request_bytes: usize,
    /// Longest a call may take, in ms (a manifest's `limits.timeout_ms` lowers it).
    pub request_timeout_ms: u64,
    /// Interval between two health checks of each runner, in ms.
    pub health_interval_ms: u64,
    /// How long a resolved install is reused before the registry is read again, in ms. A
    /// disable, uninstall, upgrade or config change reaches the gateway within half a
    /// second through the registry's change sequence, and a gateway that cannot read it for
    /// 5 s drops its caches.
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
    /// CA certificates (PEM) the runners' certificates must chain to: set, the gateway
    /// speaks TLS to its runners, whose URLs must then be `https://`. Reloaded when the
    /// file changes.
    pub runner_tls_ca: Option<PathBuf>,
    /// The gateway's client certificate (PEM), presented to runners that require one
    /// (`[runner] tls_client_ca`); with `runner_tls_key`.
    pub runner_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `runner_tls_cert`.
    pub runner_tls_key: Option<PathBuf>,
}

/// The gateway's own defaults.
pub(crate) fn gateway_defaults() -> GatewayConfig {
    GatewayConfig::with_runners(
        Vec::new(),
        palisade_gateway::CallerAuthConfig::new("", "", ""),
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for GatewaySection {
    fn default() -> Self {
        let d = gateway_defaults();
        GatewaySection {
            max_request_bytes: d.max_request_bytes,
            request_timeout_ms: millis(d.request_timeout),
            health_interval_ms: millis(d.health_interval),
            install_cache_ttl_ms: millis(d.install_cache_ttl),
            install_cache_entries: d.install_cache_capacity,
            caller_token_cache_ttl_ms: millis(d.caller_auth.cache_ttl),
            caller_token_cache_entries: d.caller_auth.cache_capacity,
            execution_log_queue: d.execution_log.queue_capacity,
            execution_log_batch_rows: d.execution_log.batch_rows,
            execution_log_batch_interval_ms: millis(d.execution_log.batch_interval),
            unknown_extension_ttl_ms: millis(d.unknown_extension_ttl),
            unknown_extension_entries: d.unknown_extension_capacity,
            runner_tls_ca: None,
            runner_tls_cert: None,
            runner_tls_key: None,
        }
    }
}

impl GatewaySection {
    /// Sets these values on `config`.
    pub(crate) fn apply(&self, config: &mut GatewayConfig) {
        config.max_request_bytes = self.max_request_bytes;
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.health_interval = Duration::from_millis(self.health_interval_ms);
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
        config.runner_tls = self.runner_tls_files();
    }

    /// The gateway's runner TLS files, when `runner_tls_ca` is set.
    pub(crate) fn runner_tls_files(&self) -> Option<palisade_protocol::tls::ClientTlsFiles> {
        Some(palisade_protocol::tls::ClientTlsFiles {
            ca: self.runner_tls_ca.clone()?,
            cert: self.runner_tls_cert.clone(),
            key: self.runner_tls_key.clone(),
        })
    }
}

/// `[policy]`: the gateway's request policy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PolicySection {
    /// Expected `iss` of caller tokens (unset: the development issuer of the data
    /// directory).
    pub caller_issuer: Option<String>,
    /// Expected `aud` of caller tokens (unset: the development audience).
    pub caller_audience: Option<String>,
    /// Caller-token keys, each `ALG:FILE` or `ALG:FILE:KID`, ALG one of EdDSA, ES256,
    /// RS256 (FILE: a public key PEM) or HS256 (FILE: the shared secret); they replace the
    /// development key.
    pub caller_keys: Vec<String>,
    /// A JWK set file of caller-token keys; replaces the development key.
    pub caller_jwks: Option<PathBuf>,
    /// Claim carrying the caller's tenant.
    pub tenant_claim: String,
    /// Claim carrying the caller's user.
    pub user_claim: String,
    /// Calls per install: a token bucket applied before a runner is called.
    pub rate_limit: RateSection,
    /// Calls per tenant over all its installs, checked before the install is resolved.
    pub tenant_rate_limit: RateSection,
    /// Calls per caller (a tenant's user), checked before the install is resolved.
    pub caller_rate_limit: RateSection,
    /// Browser origins allowed to call the API, e.g. `https://app.example`; empty: no CORS
    /// headers are sent.
    pub cors_origins: Vec<String>,
    /// Replay of non-GET calls that carry `x-idempotency-key`.
    pub idempotency: IdempotencySection,
}

impl Default for PolicySection {
    fn default() -> Self {
        let d = gateway_defaults();
        PolicySection {
            caller_issuer: None,
            caller_audience: None,
            caller_keys: Vec::new(),
            caller_jwks: None,
            tenant_claim: d.caller_auth.tenant_claim,
            user_claim: d.caller_auth.user_claim,
            rate_limit: RateSection::from(&d.rate_limit),
            tenant_rate_limit: RateSection::from(&d.tenant_rate_limit),
            caller_rate_limit: RateSection::from(&d.caller_rate_limit),
            cors_origins: Vec::new(),
            idempotency: IdempotencySection {
                window_secs: d.idempotency.window.as_secs(),
                max_entries_per_tenant: d.idempotency.max_entries_per_tenant,
                max_bytes_per_tenant: d.idempotency.max_bytes_per_tenant,
            },
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSection {
    /// Calls a second on average; 0 turns the limit off.
    pub per_second: f64,
    /// Largest burst after a quiet period (at least 1).
    pub burst: u32,
}

impl From<&RateLimitConfig> for RateSection {
    fn from(config: &RateLimitConfig) -> Self {
        RateSection {
            per_second: config.per_second,
            burst: config.burst,
        }
    }
}

impl RateSection {
    fn apply(self, config: &mut RateLimitConfig) {
        config.per_second = self.per_second;
        config.burst = self.burst;
    }

    /// What is wrong with this bucket, if anything.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            problems.push((
                "per_second",
                format!("must be a non-negative number, got {}", self.per_second),
            ));
        }
        if self.burst == 0 {
            problems.push(("burst", "must be at least 1".to_owned()));
        }
        problems
    }
}

/// `[policy.idempotency]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct IdempotencySection {
    /// Seconds an idempotent answer is replayed.
    pub window_secs: u64,
    /// Most idempotent answers kept for one tenant.
    pub max_entries_per_tenant: usize,
    /// Most bytes of idempotent answers kept for one tenant.
    pub max_bytes_per_tenant: usize,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        PolicySection::default().idempotency
    }
}

impl PolicySection {
    /// Sets this policy on `config`, reading the caller keys' files.
    pub(crate) fn apply(&self, config: &mut GatewayConfig) -> Result<()> {
        let auth = &mut config.caller_auth;
        if let Some(issuer) = &self.caller_issuer {
            auth.issuer.clone_from(issuer);
        }
        if let Some(audience) = &self.caller_audience {
            auth.audience.clone_from(audience);
        }
        if self.has_caller_keys() {
            auth.keys = self
                .caller_keys
                .iter()
                .map(|spec| caller_key(spec))
                .collect::<Result<_>>()?;
            auth.jwks_path.clone_from(&self.caller_jwks);
        }
        auth.tenant_claim.clone_from(&self.tenant_claim);
        auth.user_claim.clone_from(&self.user_claim);
        self.rate_limit.apply(&mut config.rate_limit);
        self.tenant_rate_limit.apply(&mut config.tenant_rate_limit);
        self.caller_rate_limit.apply(&mut config.caller_rate_limit);
        config
            .cors_allowed_origins
            .extend(self.cors_origins.iter().cloned());
        config.idempotency.window = Duration::from_secs(self.idempotency.window_secs);
        config.idempotency.max_entries_per_tenant = self.idempotency.max_entries_per_tenant;
        config.idempotency.max_bytes_per_tenant = self.idempotency.max_bytes_per_tenant;
        Ok(())
    }

    /// Whether caller keys are configured (else the development key applies).
    pub(crate) fn has_caller_keys(&self) -> bool {
        !self.caller_keys.is_empty() || self.caller_jwks.is_some()
    }
}

/// Reads `ALG:FILE[:KID]`.
fn caller_key(spec: &str) -> Result<palisade_gateway::CallerKey> {
    use palisade_gateway::{CallerKey, CallerKeyAlgorithm};
    let mut parts = spec.splitn(3, ':');
    let (Some(alg), Some(file)) = (parts.next(), parts.next()) else {
        anyhow::bail!("caller key {spec}: expected ALG:FILE or ALG:FILE:KID");
    };
    let algorithm: CallerKeyAlgorithm =
        alg.parse().with_context(|| format!("caller key {spec}"))?;
    let path = PathBuf::from(file);
    let key = if algorithm == CallerKeyAlgorithm::Hs256 {
        let secret = std::fs::read(&path)
            .with_context(|| format!("caller key {spec}: reading {}", path.display()))?;
        CallerKey::hs256_secret(secret.trim_ascii().to_vec())
    } else {
        CallerKey::pem(
            algorithm,
            crate::datadir::read_string(&path).with_context(|| format!("caller key {spec}"))?,
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
}
