//! How long the registry's operations on a call's path take: one histogram by operation,
//! which the gateway and the runner each export on their `/metrics` as
//! `palisade_<server>_registry_query_seconds{operation}`.
//!
//! The time is that of the whole operation as its caller waits for it (a pooled
//! connection, the write turn on SQLite, every statement of its transaction), which is what
//! a slow database costs a call.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry as MetricsRegistry, Unit};

/// The operations timed, each a label value.
pub const OPERATIONS: [&str; 12] = [
    "resolve_install",
    "load_install",
    "record_executions",
    "storage_get",
    "storage_set",
    "storage_delete",
    "storage_list",
    "read_secret",
    "publish_event",
    "claim_deliveries",
    "claim_calls",
    "read_consumption",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 0.1 ms to about 3.3 s.
        Histogram::new(exponential_buckets(0.0001, 2.0, 16))
    }
}

/// The query-latency histogram of one registry handle (and its clones).
#[derive(Clone)]
pub struct QueryMetrics {
    seconds: Family<Operation, Histogram, Buckets>,
}

impl std::fmt::Debug for QueryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryMetrics")
    }
}

impl Default for QueryMetrics {
    fn default() -> Self {
        let seconds = Family::new_with_constructor(Buckets);
        // Every operation is listed from the start, at zero.
        for operation in OPERATIONS {
            let _ = seconds.get_or_create(&Operation { operation });
        }
        QueryMetrics { seconds }
    }
}

impl QueryMetrics {
    /// Registers the histogram as `registry_query_seconds` in `registry` (whose prefix
    /// names the server).
    pub fn register(&self, registry: &mut MetricsRegistry) {
        registry.register_with_unit(
            "registry_query",
            "Time the registry took for an operation on a call's path, by operation",
            Unit::Seconds,
            self.seconds.clone(),
        );
    }

    /// Times `operation` until the returned guard is dropped.
    pub(crate) fn time(&self, operation: &'static str) -> Timer<'_> {
        Timer {
            metrics: self,
            operation,
            started: Instant::now(),
        }
    }

    fn observe(&self, operation: &'static str, elapsed: Duration) {
        self.seconds
            .get_or_create(&Operation { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// Observes its operation's time when dropped (also when the operation failed or its
/// caller went away).
pub(crate) struct Timer<'a> {
    metrics: &'a QueryMetrics,
    operation: &'static str,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics.observe(self.operation, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_exported_and_a_timed_one_counts() {
        let metrics = QueryMetrics::default();
        drop(metrics.time("storage_get"));
        let mut registry = MetricsRegistry::with_prefix("palisade_test");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for operation in OPERATIONS {
            assert!(
                text.contains(&format!(
                    "palisade_test_registry_query_seconds_count{{operation=\"{operation}\"}}"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains(
                "palisade_test_registry_query_seconds_count{operation=\"storage_get\"} 1"
            ),
            "{text}"
        );
    }
}
