//! The execution-log row written for every call that reached a resolved install.

use std::time::Duration;

use http::{Method, StatusCode};
use palisade_protocol::{ErrorCode, ExecuteStats};
use palisade_registry::quota;
use palisade_registry::{ExecutionRecord, Registry, ResolvedInstall};
use tracing::{Instrument, Span};

/// The trigger recorded for calls through the gateway.
pub const TRIGGER_HTTP: &str = "http";

/// A row for a call of `install`; `template` is the matched endpoint (empty when none
/// matched), so caller-chosen path values never reach the log.
pub fn record(
    request_id: &str,
    install: &ResolvedInstall,
    method: &Method,
    template: Option<String>,
) -> ExecutionRecord {
    let mut row = ExecutionRecord::new(
        request_id,
        install.tenant_id.as_str(),
        install.extension_id.as_str(),
        TRIGGER_HTTP,
    );
    row.install_id = Some(install.install_id.clone());
    row.version_id = Some(install.version_id.clone());
    row.content_hash = Some(install.content_hash.to_string());
    row.method = method.as_str().to_owned();
    row.path = template.unwrap_or_default();
    row
}

/// Fills in how the call ended.
pub fn finish(
    row: &mut ExecutionRecord,
    status: StatusCode,
    error: Option<ErrorCode>,
    elapsed: Duration,
) {
    row.status = Some(status.as_u16());
    row.outcome = outcome(error).to_owned();
    row.error_code = error.map(|code| code.as_str().to_owned());
    row.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
}

/// Adds what the runner reported the call consumed.
pub fn add_stats(row: &mut ExecutionRecord, stats: ExecuteStats) {
    row.fuel_consumed = stats.fuel_consumed;
    row.peak_memory_bytes = Some(stats.peak_memory_bytes);
    row.egress_bytes = stats.egress_bytes;
    if !stats.log_excerpt.is_empty() {
        row.log_excerpt = Some(stats.log_excerpt);
    }
}

/// The short outcome word for a call that ended with `error` (none: the guest answered).
pub fn outcome(error: Option<ErrorCode>) -> &'static str {
    match error {
        None => "ok",
        Some(
            ErrorCode::NotFound
            | ErrorCode::TooLarge
            | ErrorCode::BadRequest
            | ErrorCode::Unauthorized
            | ErrorCode::OverQuota,
        ) => "rejected",
        Some(ErrorCode::Timeout) => "timeout",
        Some(ErrorCode::Trap | ErrorCode::OutOfMemory) => "trap",
        Some(ErrorCode::BundleIntegrity | ErrorCode::Unavailable | ErrorCode::Internal) => "error",
    }
}

/// Writes `row` in the background; a failure is logged, never surfaced to the caller.
pub fn spawn_write(registry: Registry, row: ExecutionRecord, span: Span) {
    tokio::spawn(
        async move {
            if let Err(err) = registry.record_execution(&row).await {
                tracing::warn!(error = %err, "writing the execution log row failed");
            }
            if let Some(install_id) = &row.install_id {
                let mut usage = vec![(quota::METRIC_CALLS, 1)];
                if row.egress_bytes > 0 {
                    usage.push((quota::METRIC_EGRESS_BYTES, row.egress_bytes));
                }
                for (metric, amount) in usage {
                    if let Err(err) = registry
                        .add_quota_usage(install_id, metric, row.created_at_ms, amount)
                        .await
                    {
                        tracing::warn!(error = %err, metric, "recording quota usage failed");
                    }
                }
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome(None), "ok");
        assert_eq!(outcome(Some(ErrorCode::TooLarge)), "rejected");
        assert_eq!(outcome(Some(ErrorCode::Timeout)), "timeout");
        assert_eq!(outcome(Some(ErrorCode::OutOfMemory)), "trap");
        assert_eq!(outcome(Some(ErrorCode::Unavailable)), "error");
    }
}
