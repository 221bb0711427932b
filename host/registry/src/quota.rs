//! Per-install usage counters in UTC-day windows (`extension_quota_usage`): calls and HTTP
//! egress bytes, added off the request path after each call, for quotas and billing.

use sqlx::Row;

use crate::Registry;
use crate::error::RegistryError;

/// Length of one usage window: a UTC day, in milliseconds.
pub const QUOTA_WINDOW_MS: i64 = 86_400_000;

/// Usage metric: calls that reached an install.
pub const METRIC_CALLS: &str = "calls";
/// Usage metric: HTTP egress bytes, both directions.
pub const METRIC_EGRESS_BYTES: &str = "egress_bytes";

/// The start of the window holding `at_ms`.
pub fn window_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(QUOTA_WINDOW_MS)
}

impl Registry {
    /// Adds `amount` to `metric` of `install_id` in the window holding `at_ms`.
    pub async fn add_quota_usage(
        &self,
        install_id: &str,
        metric: &str,
        at_ms: i64,
        amount: u64,
    ) -> Result<(), RegistryError> {
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO extension_quota_usage (install_id, metric, window_start, amount) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (install_id, metric, window_start) \
             DO UPDATE SET amount = extension_quota_usage.amount + excluded.amount",
        )
        .bind(install_id)
        .bind(metric)
        .bind(window_start(at_ms))
        .bind(amount)
        .execute(&self.pool)
        .await?;
        Ok(())
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

    #[test]
    fn windows_are_utc_days() {
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(QUOTA_WINDOW_MS - 1), 0);
        assert_eq!(window_start(QUOTA_WINDOW_MS + 5), QUOTA_WINDOW_MS);
    }
}
