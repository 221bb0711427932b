//! Per-install usage counters in UTC-day windows (`extension_quota_usage`): calls and HTTP
//! egress bytes, added off the request path after each call, for quotas and billing.

use std::collections::BTreeMap;

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

    /// The usage the calls of `rows` add: one call each, and their egress bytes.
    pub fn of_executions(rows: &[crate::ExecutionRecord]) -> Self {
        let mut usage = UsageTally::new();
        for row in rows {
            if let Some(install_id) = &row.install_id {
                usage.add(install_id, METRIC_CALLS, row.created_at_ms, 1);
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

impl Registry {
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
}
