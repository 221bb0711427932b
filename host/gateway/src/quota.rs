//! Quotas: the operator's limits on what a tenant, and each of its installs, may use in a
//! window (a UTC day) — calls, fuel and HTTP egress bytes — checked before a call is
//! forwarded.
//!
//! * **Calls** are claimed from the registry (`quota_claim`) in chunks, each claim a
//!   conditional write that never takes the window's total past the limit, and spent
//!   locally: the gateway asks the registry once per chunk, not once per call, and all
//!   gateways together admit at most the limit. A chunk is a hundredth of the limit (at
//!   least 1, at most [`QuotaConfig::max_allowance`]); calls a gateway claimed and did not
//!   spend before the window ended are lost, so the others may be refused up to that many
//!   calls early — never late.
//! * **Fuel and egress bytes** are known only once a call has run. A call is admitted while
//!   the window's consumption, as last read from the registry's usage counters (reused for
//!   [`QuotaConfig::usage_refresh`]), is under the limit; the calls admitted meanwhile can
//!   take it past (see docs/operations.md#quotas for the bound).
//!
//! Usage is counted where the work happens: the runner measures fuel and egress, and the
//! execution-log writers add every call to the usage counters with its row.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use palisade_protocol::{ErrorCode, QuotaRef};
use palisade_registry::quota::{Consumption, QUOTA_WINDOW_MS, QuotaScope, window_start};
use palisade_registry::{Registry, RegistryError, ResolvedInstall};

/// Default of [`QuotaConfig::max_allowance`].
pub const DEFAULT_MAX_ALLOWANCE: u64 = 100;
/// Default of [`QuotaConfig::usage_refresh`].
pub const DEFAULT_USAGE_REFRESH: Duration = Duration::from_secs(1);

/// Limits of one scope over one window; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Calls.
    pub calls: Option<u64>,
    /// Fuel (counted only when the runners count fuel).
    pub fuel: Option<u64>,
    /// HTTP egress bytes, both directions.
    pub egress_bytes: Option<u64>,
}

impl QuotaLimits {
    fn is_unlimited(&self) -> bool {
        self.calls.is_none() && self.fuel.is_none() && self.egress_bytes.is_none()
    }
}

/// The limits that apply to one tenant: to all its installs together, and to each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantQuotas {
    /// Limits of the tenant, over all its installs.
    pub tenant: QuotaLimits,
    /// Limits of each of the tenant's installs.
    pub install: QuotaLimits,
}

impl TenantQuotas {
    fn is_unlimited(&self) -> bool {
        self.tenant.is_unlimited() && self.install.is_unlimited()
    }
}

/// The operator's quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// The quotas of every tenant not named in `tenants`.
    pub default: TenantQuotas,
    /// Tenants with quotas of their own, which replace the default whole.
    pub tenants: HashMap<String, TenantQuotas>,
    /// Most calls this gateway claims from the registry at once.
    pub max_allowance: u64,
    /// How long the consumption read from the registry is reused for fuel and egress
    /// checks.
    pub usage_refresh: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            default: TenantQuotas::default(),
            tenants: HashMap::new(),
            max_allowance: DEFAULT_MAX_ALLOWANCE,
            usage_refresh: DEFAULT_USAGE_REFRESH,
        }
    }
}

impl QuotaConfig {
    /// The quotas of `tenant_id`.
    pub fn for_tenant(&self, tenant_id: &str) -> &TenantQuotas {
        self.tenants.get(tenant_id).unwrap_or(&self.default)
    }

    /// The calls claimed at once under `limit`: a hundredth of it, at least 1, at most
    /// `max_allowance`.
    fn chunk(&self, limit: u64) -> u64 {
        (limit / 100).clamp(1, self.max_allowance.max(1))
    }
}

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaMetric {
    /// Calls.
    Calls,
    /// Fuel.
    Fuel,
    /// HTTP egress bytes.
    EgressBytes,
}

impl QuotaMetric {
    /// The error code of a call this quota refuses.
    pub fn code(self) -> ErrorCode {
        match self {
            QuotaMetric::Calls => ErrorCode::CallsQuotaExceeded,
            QuotaMetric::Fuel => ErrorCode::FuelQuotaExceeded,
            QuotaMetric::EgressBytes => ErrorCode::EgressQuotaExceeded,
        }
    }

    fn name(self) -> &'static str {
        match self {
            QuotaMetric::Calls => "calls",
            QuotaMetric::Fuel => "fuel",
            QuotaMetric::EgressBytes => "egress bytes",
        }
    }
}

/// A call refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {scope}'s {} quota of {limit} a day is used up until {resets_at_ms}", metric.name())]
pub struct QuotaExceeded {
    /// Whose quota.
    pub scope: QuotaScope,
    /// Of what.
    pub metric: QuotaMetric,
    /// The window's limit.
    pub limit: u64,
    /// When the window ends (unix epoch milliseconds).
    pub resets_at_ms: i64,
    /// When the call was refused (unix epoch milliseconds).
    pub at_ms: i64,
}

impl QuotaExceeded {
    /// Whole seconds until the window ends (at least 1): the `retry-after`.
    pub fn retry_after_secs(&self) -> u64 {
        let left = u64::try_from(self.resets_at_ms - self.at_ms).unwrap_or(0);
        left.div_ceil(1000).max(1)
    }

    /// The quota as the caller sees it.
    pub fn quota_ref(&self) -> QuotaRef {
        QuotaRef {
            scope: self.scope.as_str().to_owned(),
            limit: self.limit,
            resets_at_ms: self.resets_at_ms,
        }
    }
}

/// Why a quota check did not admit a call.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A quota is used up.
    #[error(transparent)]
    Exceeded(QuotaExceeded),
    /// The registry could not be asked.
    #[error("checking quotas: {0}")]
    Registry(#[from] RegistryError),
}

type Key = (QuotaScope, String);

/// Calls claimed from the registry and not yet spent, for one window.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    window: i64,
    left: u64,
}

/// The consumption of one scope as last read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    window: i64,
    read_at: Instant,
    consumption: Consumption,
}

/// The quota checks of one gateway: its configuration, the calls it holds, and the
/// consumption it last read.
#[derive(Debug)]
pub struct Quotas {
    config: QuotaConfig,
    allowances: Mutex<HashMap<Key, Allowance>>,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Quotas {
    /// Checks against `config`.
    pub fn new(config: QuotaConfig) -> Self {
        Quotas {
            config,
            allowances: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Admits one call to `install` at `now_ms`, or names the quota that refuses it. A call
    /// admitted has been counted against the calls quotas of its tenant and its install.
    pub async fn admit(
        &self,
        registry: &Registry,
        install: &ResolvedInstall,
        now_ms: i64,
    ) -> Result<(), QuotaError> {
        let quotas = self.config.for_tenant(&install.tenant_id);
        if quotas.is_unlimited() {
            return Ok(());
        }
        let tenant_id = install.tenant_id.as_str();
        let install_id = install.install_id.as_str();
        self.check_consumption(
            registry,
            QuotaScope::Tenant,
            tenant_id,
            &quotas.tenant,
            now_ms,
        )
        .await?;
        self.check_consumption(
            registry,
            QuotaScope::Install,
            install_id,
            &quotas.install,
            now_ms,
        )
        .await?;
        if let Some(limit) = quotas.tenant.calls {
            self.take_call(registry, QuotaScope::Tenant, tenant_id, limit, now_ms)
                .await?;
        }
        if let Some(limit) = quotas.install.calls
            && let Err(error) = self
                .take_call(registry, QuotaScope::Install, install_id, limit, now_ms)
                .await
        {
            // The tenant's call was not spent: it stays this gateway's to admit.
            if quotas.tenant.calls.is_some() {
                self.give_back(QuotaScope::Tenant, tenant_id, now_ms);
            }
            return Err(error);
        }
        Ok(())
    }

    /// Refuses the call when the window's fuel or egress consumption of `id` has reached
    /// its limit.
    async fn check_consumption(
        &self,
        registry: &Registry,
        scope: QuotaScope,
        id: &str,
        limits: &QuotaLimits,
        now_ms: i64,
    ) -> Result<(), QuotaError> {
        if limits.fuel.is_none() && limits.egress_bytes.is_none() {
            return Ok(());
        }
        let consumption = self.consumption(registry, scope, id, now_ms).await?;
        let checks = [
            (QuotaMetric::Fuel, limits.fuel, consumption.fuel),
            (
                QuotaMetric::EgressBytes,
                limits.egress_bytes,
                consumption.egress_bytes,
            ),
        ];
        for (metric, limit, used) in checks {
            if let Some(limit) = limit
                && used >= limit
            {
                return Err(QuotaError::Exceeded(exceeded(scope, metric, limit, now_ms)));
            }
        }
        Ok(())
    }

    /// The window's consumption of `id`, as read at most `usage_refresh` ago.
    async fn consumption(
        &self,
        registry: &Registry,
        scope: QuotaScope,
        id: &str,
        now_ms: i64,
    ) -> Result<Consumption, RegistryError> {
        let window = window_start(now_ms);
        let key = (scope, id.to_owned());
        {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(seen) = seen.get(&key)
                && seen.window == window
                && seen.read_at.elapsed() < self.config.usage_refresh
            {
                return Ok(seen.consumption);
            }
        }
        let consumption = registry.consumption(scope, id, now_ms).await?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, entry| entry.window == window);
        seen.insert(
            key,
            Seen {
                window,
                read_at: Instant::now(),
                consumption,
            },
        );
        Ok(consumption)
    }

    /// Spends one call of `id`'s allowance, claiming a chunk from the registry when none is
    /// left.
    async fn take_call(
        &self,
        registry: &Registry,
        scope: QuotaScope,
        id: &str,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), QuotaError> {
        let window = window_start(now_ms);
        let key = (scope, id.to_owned());
        if self.spend(&key, window) {
            return Ok(());
        }
        let claim = registry
            .claim_calls(scope, id, now_ms, self.config.chunk(limit), limit)
            .await?;
        if claim.granted == 0 {
            return Err(QuotaError::Exceeded(exceeded(
                scope,
                QuotaMetric::Calls,
                limit,
                now_ms,
            )));
        }
        // One of the calls claimed is this one; the rest are the allowance.
        let mut allowances = self
            .allowances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        allowances.retain(|_, allowance| allowance.window == window);
        let allowance = allowances
            .entry(key)
            .or_insert(Allowance { window, left: 0 });
        allowance.left += claim.granted - 1;
        Ok(())
    }

    /// Takes one call from the allowance of `key` in `window`, if it has one.
    fn spend(&self, key: &Key, window: i64) -> bool {
        let mut allowances = self
            .allowances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match allowances.get_mut(key) {
            Some(allowance) if allowance.window == window && allowance.left > 0 => {
                allowance.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Returns one call to the allowance of `id`.
    fn give_back(&self, scope: QuotaScope, id: &str, now_ms: i64) {
        let window = window_start(now_ms);
        let mut allowances = self
            .allowances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let allowance = allowances
            .entry((scope, id.to_owned()))
            .or_insert(Allowance { window, left: 0 });
        if allowance.window == window {
            allowance.left += 1;
        }
    }
}

fn exceeded(scope: QuotaScope, metric: QuotaMetric, limit: u64, now_ms: i64) -> QuotaExceeded {
    QuotaExceeded {
        scope,
        metric,
        limit,
        resets_at_ms: window_start(now_ms) + QUOTA_WINDOW_MS,
        at_ms: now_ms,
    }
}

/// Now, in unix epoch milliseconds (the registry's clock for its timestamp columns).
pub(crate) use palisade_registry::db::now_millis as now_ms;
