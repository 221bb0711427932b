//! Usage and quotas, in UTC-day windows.
//!
//! * Usage counters per install (`extension_quota_usage`): calls, fuel and HTTP egress
//!   bytes, added off the request path with each batch of execution-log rows, read for
//!   quota checks and for the usage report.
//! * Call claims per tenant and per install (`quota_claim`): a gateway claims calls in
//!   chunks before admitting them, and a claim never takes the window's total past the
//!   limit, so that several gateways together admit at most the limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::Connection;

use crate::Registry;
use crate::error::RegistryError;

/// Length of one usage window: a UTC day, in milliseconds.
pub const QUOTA_WINDOW_MS: i64 = 86_400_000;

/// Usage metric: calls that reached an install.
pub const METRIC_CALLS: &str = "calls";
/// Usage metric: HTTP egress bytes, both directions.
pub const METRIC_EGRESS_BYTES: &str = "egress_bytes";
/// Usage metric: WebAssembly fuel consumed (when the runners count fuel).
pub const METRIC_FUEL: &str = "fuel";

/// Adds to one counter. An install that no longer exists (uninstalled after the call) is
/// skipped rather than failing the statement: its counters went with it, and a batch
/// written in one transaction must not be lost for it.
const ADD_USAGE: &str = "INSERT INTO extension_quota_usage (install_id, metric, window_start, amount) \
     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM tenant_extension_install WHERE id = $1) \
     ON CONFLICT (install_id, metric, window_start) \
     DO UPDATE SET amount = extension_quota_usage.amount + excluded.amount";

/// The start of the window holding `at_ms`.
pub fn window_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(QUOTA_WINDOW_MS)
}

/// Usage of many calls summed per install, metric and window, so that a batch adds to each
/// counter once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTally {
    amounts: BTreeMap<(String, String, i64), u64>,
}

impl UsageTally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `amount` to `metric` of `install_id` in the window holding `at_ms`.
    pub fn add(&mut self, install_id: &str, metric: &str, at_ms: i64, amount: u64) {
        let total = self
            .amounts
            .entry((
                install_id.to_owned(),
                metric.to_owned(),
                window_start(at_ms),
            ))
            .or_default();
        *total = total.saturating_add(amount);
    }

    /// The usage the calls of `rows` add: one call each, their fuel and egress bytes.
    pub fn of_executions(rows: &[crate::ExecutionRecord]) -> Self {
        let mut usage = UsageTally::new();
        for row in rows {
            if let Some(install_id) = &row.install_id {
                usage.add(install_id, METRIC_CALLS, row.created_at_ms, 1);
                if let Some(fuel) = row.fuel_consumed.filter(|fuel| *fuel > 0) {
                    usage.add(install_id, METRIC_FUEL, row.created_at_ms, fuel);
                }
                if row.egress_bytes > 0 {
                    usage.add(
                        install_id,
                        METRIC_EGRESS_BYTES,
                        row.created_at_ms,
                        row.egress_bytes,
                    );
                }
            }
        }
        usage
    }

    /// How many counters the tally adds to.
    pub fn len(&self) -> usize {
        self.amounts.len()
    }

    /// Whether the tally adds nothing.
    pub fn is_empty(&self) -> bool {
        self.amounts.is_empty()
    }

    /// Adds every amount on `conn` (the caller's transaction).
    pub(crate) async fn write(&self, conn: &mut Connection) -> Result<(), RegistryError> {
        for ((install_id, metric, window), amount) in &self.amounts {
            add_usage(conn, install_id, metric, *window, *amount).await?;
        }
        Ok(())
    }
}

async fn add_usage(
    conn: &mut Connection,
    install_id: &str,
    metric: &str,
    window_start: i64,
    amount: u64,
) -> Result<(), RegistryError> {
    sqlx::query(ADD_USAGE)
        .bind(install_id)
        .bind(metric)
        .bind(window_start)
        .bind(i64::try_from(amount).unwrap_or(i64::MAX))
        .execute(conn)
        .await?;
    Ok(())
}

/// What a quota applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// All the installs of one tenant together; the scope id is the tenant id.
    Tenant,
    /// One install; the scope id is the install id.
    Install,
}

impl QuotaScope {
    /// The scope's name, as stored and as answered.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::Tenant => "tenant",
            QuotaScope::Install => "install",
        }
    }
}

impl std::fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was consumed in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumption {
    /// Calls that reached an install.
    pub calls: u64,
    /// Fuel consumed (zero when the runners do not count fuel).
    pub fuel: u64,
    /// HTTP egress bytes, both directions.
    pub egress_bytes: u64,
}

impl Consumption {
    fn add(&mut self, metric: &str, amount: i64) {
        let amount = u64::try_from(amount).unwrap_or(0);
        let slot = match metric {
            METRIC_CALLS => &mut self.calls,
            METRIC_FUEL => &mut self.fuel,
            METRIC_EGRESS_BYTES => &mut self.egress_bytes,
            _ => return,
        };
        *slot = slot.saturating_add(amount);
    }
}

/// The result of a call claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Calls granted by this claim (zero: the window's limit is reached).
    pub granted: u64,
    /// Calls claimed in the window by everyone, this claim included.
    pub claimed: u64,
}

/// One extension's usage on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The extension.
    pub extension_id: String,
    /// The day's start (unix epoch milliseconds, midnight UTC).
    pub day_start_ms: i64,
    /// What the tenant's install of the extension consumed that day.
    #[serde(flatten)]
    pub consumption: Consumption,
}

/// Adds `want` calls to a claim row unless that would take it past `limit`; answers the
/// new total, or no row when the claim was refused.
const CLAIM: &str = "INSERT INTO quota_claim (scope, scope_id, window_start, claimed) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (scope, scope_id, window_start) \
     DO UPDATE SET claimed = quota_claim.claimed + excluded.claimed \
     WHERE quota_claim.claimed + excluded.claimed <= $5 \
     RETURNING claimed";

/// Tries a claim this many times with ever smaller chunks before giving up on a window
/// other gateways are claiming from at the same moment.
const CLAIM_ATTEMPTS: usize = 4;

fn to_db(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn from_db(amount: i64) -> u64 {
    u64::try_from(amount).unwrap_or(0)
}

impl Registry {
    /// Claims up to `want` calls for `scope_id` in the window holding `at_ms`, never taking
    /// the window's total past `limit`: the whole chunk when it fits, else what is left
    /// under the limit, else nothing. Concurrent claims (from any number of gateways)
    /// together never exceed `limit`.
    pub async fn claim_calls(
        &self,
        scope: QuotaScope,
        scope_id: &str,
        at_ms: i64,
        want: u64,
        limit: u64,
    ) -> Result<Claim, RegistryError> {
        let _timer = self.queries.time("claim_calls");
        let window = window_start(at_ms);
        let mut want = want.min(limit);
        let mut claimed = 0;
        for _ in 0..CLAIM_ATTEMPTS {
            if want == 0 {
                break;
            }
            let _turn = self.write_turn().await;
            let mut conn = self.pool.acquire().await?;
            let row = sqlx::query(CLAIM)
                .bind(scope.as_str())
                .bind(scope_id)
                .bind(window)
                .bind(to_db(want))
                .bind(to_db(limit))
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                let claimed = from_db(row.try_get::<i64, _>("claimed")?);
                if claimed == want {
                    // The window's first claim: older windows of this scope are over.
                    sqlx::query(
                        "DELETE FROM quota_claim \
                         WHERE scope = $1 AND scope_id = $2 AND window_start < $3",
                    )
                    .bind(scope.as_str())
                    .bind(scope_id)
                    .bind(window)
                    .execute(&mut *conn)
                    .await?;
                }
                return Ok(Claim {
                    granted: want,
                    claimed,
                });
            }
            let row = sqlx::query(
                "SELECT claimed FROM quota_claim \
                 WHERE scope = $1 AND scope_id = $2 AND window_start = $3",
            )
            .bind(scope.as_str())
            .bind(scope_id)
            .bind(window)
            .fetch_optional(&mut *conn)
            .await?;
            claimed = match row {
                Some(row) => from_db(row.try_get::<i64, _>("claimed")?),
                None => 0,
            };
            want = limit.saturating_sub(claimed).min(want);
        }
        Ok(Claim {
            granted: 0,
            claimed: claimed.max(limit),
        })
    }

    /// What `scope_id` consumed in the window holding `at_ms`: the sum of the usage
    /// counters of its installs (one install, or all of a tenant's).
    pub async fn consumption(
        &self,
        scope: QuotaScope,
        scope_id: &str,
        at_ms: i64,
    ) -> Result<Consumption, RegistryError> {
        let _timer = self.queries.time("read_consumption");
        let sql = match scope {
            QuotaScope::Install => {
                "SELECT metric, amount FROM extension_quota_usage \
                 WHERE install_id = $1 AND window_start = $2"
            }
            QuotaScope::Tenant => {
                "SELECT u.metric AS metric, CAST(SUM(u.amount) AS BIGINT) AS amount \
                 FROM extension_quota_usage u \
                 JOIN tenant_extension_install i ON i.id = u.install_id \
                 WHERE i.tenant_id = $1 AND u.window_start = $2 \
                 GROUP BY u.metric"
            }
        };
        let rows = sqlx::query(sql)
            .bind(scope_id)
            .bind(window_start(at_ms))
            .fetch_all(&self.pool)
            .await?;
        let mut consumption = Consumption::default();
        for row in rows {
            let metric: String = row.try_get("metric")?;
            consumption.add(&metric, row.try_get("amount")?);
        }
        Ok(consumption)
    }

    /// What each install of `tenant_id` consumed per UTC day, for the days starting in
    /// `[from_ms, to_ms)`, by extension then day. Installs that were removed took their
    /// counters with them.
    pub async fn daily_usage(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DailyUsage>, RegistryError> {
        let rows = sqlx::query(
            "SELECT i.extension_id AS extension_id, u.window_start AS window_start, \
                    u.metric AS metric, CAST(SUM(u.amount) AS BIGINT) AS amount \
             FROM extension_quota_usage u \
             JOIN tenant_extension_install i ON i.id = u.install_id \
             WHERE i.tenant_id = $1 AND u.window_start >= $2 AND u.window_start < $3 \
             GROUP BY i.extension_id, u.window_start, u.metric \
             ORDER BY i.extension_id, u.window_start",
        )
        .bind(tenant_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut days: Vec<DailyUsage> = Vec::new();
        for row in rows {
            let extension_id: String = row.try_get("extension_id")?;
            let day_start_ms: i64 = row.try_get("window_start")?;
            let metric: String = row.try_get("metric")?;
            let amount: i64 = row.try_get("amount")?;
            match days.last_mut() {
                Some(day)
                    if day.extension_id == extension_id && day.day_start_ms == day_start_ms =>
                {
                    day.consumption.add(&metric, amount);
                }
                _ => {
                    let mut consumption = Consumption::default();
                    consumption.add(&metric, amount);
                    days.push(DailyUsage {
                        extension_id,
                        day_start_ms,
                        consumption,
                    });
                }
            }
        }
        Ok(days)
    }

    /// The bytes each install of `tenant_id` stores now (keys and values), by extension;
    /// installs that never wrote are left out.
    pub async fn storage_bytes(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, u64)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT i.extension_id AS extension_id, s.byte_count AS byte_count \
             FROM extension_storage_install s \
             JOIN tenant_extension_install i ON i.id = s.install_id \
             WHERE i.tenant_id = $1 ORDER BY i.extension_id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get("extension_id")?,
                    from_db(row.try_get("byte_count")?),
                ))
            })
            .collect()
    }

    /// Adds `amount` to `metric` of `install_id` in the window holding `at_ms`; nothing
    /// when the install no longer exists.
    pub async fn add_quota_usage(
        &self,
        install_id: &str,
        metric: &str,
        at_ms: i64,
        amount: u64,
    ) -> Result<(), RegistryError> {
        let mut conn = self.pool.acquire().await?;
        add_usage(&mut conn, install_id, metric, window_start(at_ms), amount).await
    }

    /// The amount of `metric` used by `install_id` in the window holding `at_ms`.
    pub async fn quota_usage(
        &self,
        install_id: &str,
        metric: &str,
        at_ms: i64,
    ) -> Result<u64, RegistryError> {
        let row = sqlx::query(
            "SELECT amount FROM extension_quota_usage \
             WHERE install_id = $1 AND metric = $2 AND window_start = $3",
        )
        .bind(install_id)
        .bind(metric)
        .bind(window_start(at_ms))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.get::<i64, _>("amount"))
            .map_or(0, |a| u64::try_from(a).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Fixture;

    #[test]
    fn windows_are_utc_days() {
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(QUOTA_WINDOW_MS - 1), 0);
        assert_eq!(window_start(QUOTA_WINDOW_MS + 5), QUOTA_WINDOW_MS);
    }

    #[test]
    fn a_tally_sums_per_install_metric_and_window() {
        let mut tally = UsageTally::new();
        tally.add("i1", METRIC_CALLS, 10, 1);
        tally.add("i1", METRIC_CALLS, 20, 1);
        tally.add("i1", METRIC_CALLS, QUOTA_WINDOW_MS + 1, 1);
        tally.add("i1", METRIC_EGRESS_BYTES, 10, 7);
        tally.add("i2", METRIC_CALLS, 10, u64::MAX);
        tally.add("i2", METRIC_CALLS, 10, 1);
        assert_eq!(tally.len(), 4);
        assert_eq!(
            tally.amounts[&("i1".to_owned(), METRIC_CALLS.to_owned(), 0)],
            2
        );
        assert_eq!(
            tally.amounts[&("i2".to_owned(), METRIC_CALLS.to_owned(), 0)],
            u64::MAX
        );
    }

    #[tokio::test]
    async fn usage_adds_up_and_skips_installs_that_are_gone() {
        let fixture = Fixture::new().await;
        let install_id = fixture.install_simple("t1", "com.example.q").await;
        let registry = &fixture.registry;
        let id = install_id.as_str();
        registry
            .add_quota_usage(id, METRIC_CALLS, 5, 2)
            .await
            .unwrap();
        registry
            .add_quota_usage(id, METRIC_CALLS, 6, 3)
            .await
            .unwrap();
        assert_eq!(registry.quota_usage(id, METRIC_CALLS, 7).await.unwrap(), 5);
        assert_eq!(
            registry
                .quota_usage(id, METRIC_CALLS, QUOTA_WINDOW_MS)
                .await
                .unwrap(),
            0
        );
        registry
            .add_quota_usage("no-such-install", METRIC_CALLS, 5, 1)
            .await
            .unwrap();
        assert_eq!(
            registry
                .quota_usage("no-such-install", METRIC_CALLS, 5)
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn claims_grant_chunks_then_the_rest_then_nothing_and_reset_by_window() {
        let fixture = Fixture::new().await;
        let registry = &fixture.registry;
        let claim = |want, at| registry.claim_calls(QuotaScope::Tenant, "t1", at, want, 10);
        assert_eq!(
            claim(4, 5).await.unwrap(),
            Claim {
                granted: 4,
                claimed: 4
            }
        );
        assert_eq!(
            claim(4, 6).await.unwrap(),
            Claim {
                granted: 4,
                claimed: 8
            }
        );
        // Only 2 are left: they are granted, not the chunk.
        assert_eq!(
            claim(4, 7).await.unwrap(),
            Claim {
                granted: 2,
                claimed: 10
            }
        );
        assert_eq!(claim(1, 8).await.unwrap().granted, 0);
        // Another scope, and the same scope of an install, are counted apart.
        let other = registry
            .claim_calls(QuotaScope::Install, "t1", 8, 3, 10)
            .await
            .unwrap();
        assert_eq!(
            other,
            Claim {
                granted: 3,
                claimed: 3
            }
        );
        // The next window starts from zero, and the finished one is removed.
        let next = QUOTA_WINDOW_MS + 1;
        assert_eq!(
            claim(4, next).await.unwrap(),
            Claim {
                granted: 4,
                claimed: 4
            }
        );
        let windows: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM quota_claim WHERE scope = 'tenant' AND scope_id = 't1'",
        )
        .fetch_one(registry.pool())
        .await
        .unwrap();
        assert_eq!(windows, 1);
        // A chunk larger than the limit is cut to it; a zero limit grants nothing.
        let big = registry
            .claim_calls(QuotaScope::Tenant, "t2", 0, 50, 3)
            .await
            .unwrap();
        assert_eq!(
            big,
            Claim {
                granted: 3,
                claimed: 3
            }
        );
        let zero = registry
            .claim_calls(QuotaScope::Tenant, "t3", 0, 5, 0)
            .await
            .unwrap();
        assert_eq!(zero.granted, 0);
    }

    #[tokio::test]
    async fn concurrent_claims_never_pass_the_limit() {
        let fixture = Fixture::new().await;
        let registry = fixture.registry.clone();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let mut granted = 0;
                    loop {
                        let claim = registry
                            .claim_calls(QuotaScope::Install, "i1", 0, 3, 50)
                            .await
                            .unwrap();
                        if claim.granted == 0 {
                            return granted;
                        }
                        granted += claim.granted;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert_eq!(total, 50);
    }

    #[tokio::test]
    async fn consumption_sums_a_window_per_install_or_tenant() {
        let fixture = Fixture::new().await;
        let a = fixture.install_simple("t1", "com.example.a").await;
        let b = fixture.install_simple("t1", "com.example.b").await;
        let other = fixture.install_simple("t2", "com.example.c").await;
        let registry = &fixture.registry;
        let mut rows = Vec::new();
        for (install, extension, fuel, egress) in [
            (&a, "com.example.a", Some(100), 10),
            (&a, "com.example.a", None, 0),
            (&b, "com.example.b", Some(7), 5),
            (&other, "com.example.c", Some(1000), 1000),
        ] {
            let tenant = if install == &other { "t2" } else { "t1" };
            let mut row = crate::ExecutionRecord::new("req", tenant, extension, "http");
            row.install_id = Some(install.clone());
            row.created_at_ms = 1_000;
            row.fuel_consumed = fuel;
            row.egress_bytes = egress;
            rows.push(row);
        }
        let mut late = rows[0].clone();
        late.id = "late-row".into();
        late.created_at_ms = QUOTA_WINDOW_MS + 1;
        rows.push(late);
        registry
            .record_execution_batch(&rows, &UsageTally::of_executions(&rows))
            .await
            .unwrap();

        let install = registry
            .consumption(QuotaScope::Install, &a, 2_000)
            .await
            .unwrap();
        assert_eq!(
            install,
            Consumption {
                calls: 2,
                fuel: 100,
                egress_bytes: 10
            }
        );
        let tenant = registry
            .consumption(QuotaScope::Tenant, "t1", 2_000)
            .await
            .unwrap();
        assert_eq!(
            tenant,
            Consumption {
                calls: 3,
                fuel: 107,
                egress_bytes: 15
            }
        );

        let days = registry
            .daily_usage("t1", 0, 2 * QUOTA_WINDOW_MS)
            .await
            .unwrap();
        let summary: Vec<_> = days
            .iter()
            .map(|d| (d.extension_id.as_str(), d.day_start_ms, d.consumption.calls))
            .collect();
        assert_eq!(
            summary,
            [
                ("com.example.a", 0, 2),
                ("com.example.a", QUOTA_WINDOW_MS, 1),
                ("com.example.b", 0, 1)
            ]
        );
        let first_day_only = registry
            .daily_usage("t1", 0, QUOTA_WINDOW_MS)
            .await
            .unwrap();
        assert_eq!(first_day_only.len(), 2);
        assert!(registry.storage_bytes("t1").await.unwrap().is_empty());
    }
}
