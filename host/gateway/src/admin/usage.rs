//! `GET /admin/v1/tenants/{tenant_id}/usage?from=&to=`: what a tenant's installs used,
//! per extension and UTC day (calls, fuel, egress bytes), the bytes each stores now, and
//! the quotas that apply to the tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use http::HeaderMap;
use palisade_registry::install::validate_tenant_id;
use palisade_registry::quota::{Consumption, QUOTA_WINDOW_MS};
use palisade_registry::{Registry, RegistryError};
use serde::{Deserialize, Serialize};

use super::error::AdminError;
use crate::GatewayState;
use crate::headers;
use crate::quota::{QuotaConfig, QuotaLimits};

/// Days answered when the request names no `from`: the last 30, today included.
pub const DEFAULT_USAGE_DAYS: i64 = 30;
/// Most days one request may span.
pub const MAX_USAGE_DAYS: i64 = 366;

/// Query of `GET .../usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// First day (UTC, `YYYY-MM-DD`), included; default: 29 days before `to`.
    from: Option<String>,
    /// Last day (UTC, `YYYY-MM-DD`), included; default: today.
    to: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: String,
    /// First day reported (UTC).
    pub from: NaiveDate,
    /// Last day reported (UTC).
    pub to: NaiveDate,
    /// The tenant's quotas per UTC day (a missing figure is no limit).
    pub quotas: QuotasJson,
    /// Each extension with usage in the period or bytes stored, by id.
    pub extensions: Vec<ExtensionUsage>,
}

/// The quotas of a tenant as answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuotasJson {
    /// Over all the tenant's installs.
    pub tenant: LimitsJson,
    /// Of each install.
    pub install: LimitsJson,
}

/// One scope's limits per UTC day.
#[derive(Debug, Serialize, Deserialize)]
pub struct LimitsJson {
    /// Calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// HTTP egress bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_bytes: Option<u64>,
}

impl From<&QuotaLimits> for LimitsJson {
    fn from(limits: &QuotaLimits) -> Self {
        LimitsJson {
            calls: limits.calls,
            fuel: limits.fuel,
            egress_bytes: limits.egress_bytes,
        }
    }
}

/// One extension's usage.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExtensionUsage {
    /// The extension.
    pub extension_id: String,
    /// Bytes its storage holds now (keys and values); storage is limited by its own quota,
    /// checked on every write.
    pub storage_bytes: u64,
    /// The sum of `days`.
    pub total: Consumption,
    /// Days with usage, oldest first.
    pub days: Vec<DayUsage>,
}

/// One day of one extension.
#[derive(Debug, Serialize, Deserialize)]
pub struct DayUsage {
    /// The UTC day.
    pub date: NaiveDate,
    /// What was used.
    #[serde(flatten)]
    pub usage: Consumption,
}

/// `GET /admin/v1/tenants/{tenant_id}/usage?from=&to=`.
pub(super) async fn usage(
    State(state): State<Arc<GatewayState>>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageReport>, AdminError> {
    let request_id = headers::request_id(&headers);
    let Query(query) =
        query.map_err(|rejection| AdminError::bad_request(&request_id, rejection.body_text()))?;
    validate_tenant_id(&tenant_id)
        .map_err(|err| AdminError::bad_request(&request_id, err.to_string()))?;
    let (from, to) = period(
        query.from.as_deref(),
        query.to.as_deref(),
        Utc::now().date_naive(),
    )
    .map_err(|message| AdminError::bad_request(&request_id, message))?;

    let report = report(&state.registry, state.quotas.config(), &tenant_id, from, to)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    Ok(Json(report))
}

/// The usage of `tenant_id` from `from` to `to` (UTC days, both included), with the
/// quotas of `config` that apply to it.
pub async fn report(
    registry: &Registry,
    config: &QuotaConfig,
    tenant_id: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<UsageReport, RegistryError> {
    let days = registry
        .daily_usage(
            tenant_id,
            day_start_ms(from),
            day_start_ms(to) + QUOTA_WINDOW_MS,
        )
        .await?;
    let stored = registry.storage_bytes(tenant_id).await?;
    let mut extensions: BTreeMap<String, ExtensionUsage> = BTreeMap::new();
    for day in days {
        let Some(date) = date_of(day.day_start_ms) else {
            continue;
        };
        let extension = extensions
            .entry(day.extension_id.clone())
            .or_insert_with(|| empty(day.extension_id.clone()));
        let total = &mut extension.total;
        total.calls = total.calls.saturating_add(day.consumption.calls);
        total.fuel = total.fuel.saturating_add(day.consumption.fuel);
        total.egress_bytes = total
            .egress_bytes
            .saturating_add(day.consumption.egress_bytes);
        extension.days.push(DayUsage {
            date,
            usage: day.consumption,
        });
    }
    for (extension_id, bytes) in stored {
        extensions
            .entry(extension_id.clone())
            .or_insert_with(|| empty(extension_id))
            .storage_bytes = bytes;
    }
    let quotas = config.for_tenant(tenant_id);
    Ok(UsageReport {
        tenant_id: tenant_id.to_owned(),
        from,
        to,
        quotas: QuotasJson {
            tenant: LimitsJson::from(&quotas.tenant),
            install: LimitsJson::from(&quotas.install),
        },
        extensions: extensions.into_values().collect(),
    })
}

fn empty(extension_id: String) -> ExtensionUsage {
    ExtensionUsage {
        extension_id,
        storage_bytes: 0,
        total: Consumption::default(),
        days: Vec::new(),
    }
}

/// The days a usage query asks for (`YYYY-MM-DD`; by default the 30 days up to `today`),
/// checked: both dates well formed, `from` not after `to`, at most [`MAX_USAGE_DAYS`]
/// days. The error names what is wrong.
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), String> {
    let parse = |name: &str, text: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| format!("`{name}` must be a date as YYYY-MM-DD, not `{text}`"))
    };
    let to = match to {
        Some(text) => parse("to", text)?,
        None => today,
    };
    let from = match from {
        Some(text) => parse("from", text)?,
        None => to - TimeDelta::days(DEFAULT_USAGE_DAYS - 1),
    };
    if from > to {
        return Err(format!("`from` ({from}) is after `to` ({to})"));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_USAGE_DAYS {
        return Err(format!(
            "the period spans {days} days; at most {MAX_USAGE_DAYS} may be asked at once"
        ));
    }
    Ok((from, to))
}

/// Midnight UTC of `date`, in unix epoch milliseconds.
fn day_start_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |midnight| midnight.and_utc().timestamp_millis())
}

/// The UTC day starting at `ms`.
fn date_of(ms: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(ms).map(|at| at.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_period_defaults_to_the_last_thirty_days_and_is_checked() {
        let today = date("2026-12-07");
        assert_eq!(
            period(None, None, today).unwrap(),
            (date("2026-11-08"), today)
        );
        assert_eq!(
            period(Some("2026-12-01"), Some("2026-12-01"), today).unwrap(),
            (date("2026-12-01"), date("2026-12-01"))
        );
        let err = period(Some("2026-13-01"), None, today).unwrap_err();
        assert!(
            err.contains("`from`") && err.contains("2026-13-01"),
            "{err}"
        );
        let err = period(Some("2026-12-02"), Some("2026-12-01"), today).unwrap_err();
        assert!(err.contains("after"), "{err}");
        let err = period(Some("2024-01-01"), None, today).unwrap_err();
        assert!(err.contains("366"), "{err}");
    }

    #[test]
    fn days_are_utc_midnights() {
        let day = date("2026-12-07");
        assert_eq!(day_start_ms(day) % QUOTA_WINDOW_MS, 0);
        assert_eq!(date_of(day_start_ms(day)), Some(day));
    }
}
