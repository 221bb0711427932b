//! `GET /metrics` on the gateway: calls by extension and outcome, call duration as the
//! caller saw it, calls in flight, answers refused with 429 or 503, and what became of
//! the execution-log rows, and how long the registry's queries take. The endpoint answers to the admin token or a credential of
//! scope `metrics` (`palisade credentials add NAME --scope metrics`): a gateway faces
//! callers, and the series name the extensions installed.
//!
//! Labels are bounded: `extension` (one value per extension called), `outcome` and
//! `status` (fixed sets). No series carries a tenant.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_TYPE};
use palisade_protocol::exposition::negotiate;
use palisade_registry::ExecutionRecord;
use palisade_registry::query_metrics::QueryMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::GatewayState;
use crate::execlog::ExecLogCounts;

/// Labels: pairs of a name and a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Labels(Vec<(&'static str, String)>);

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }
}

#[derive(Clone)]
struct SecondsBuckets;

impl MetricConstructor<Histogram> for SecondsBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to about 33 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
}

/// The gateway's series.
pub struct GatewayMetrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, SecondsBuckets>,
    in_flight: Gauge<i64, AtomicI64>,
    refused: Family<Labels, Counter>,
}

impl fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

impl GatewayMetrics {
    /// The series, registered; `execution_log` is read on each scrape, and `queries` is
    /// the registry's query-latency histogram.
    pub fn new(execution_log: ExecLogCounts, queries: &QueryMetrics) -> Self {
        let mut registry = Registry::with_prefix("palisade_gateway");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "Extension calls that reached an install, by extension and outcome (ok, rejected, timeout, trap, error, cancelled)",
            calls.clone(),
        );
        let duration = Family::new_with_constructor(SecondsBuckets);
        registry.register_with_unit(
            "call_duration",
            "Time from a call's arrival to the end of its answer, by extension",
            Unit::Seconds,
            duration.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "calls_in_flight",
            "Extension calls received whose answer has not started yet",
            in_flight.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "refused",
            "Extension calls answered 429 (a rate limit or a runner's in-flight cap) or 503 (no runner, draining), by status",
            refused.clone(),
        );
        // Both statuses start at zero, so that a dashboard sees the series before the first.
        for status in ["429", "503"] {
            refused
                .get_or_create(&Labels(vec![("status", status.to_owned())]))
                .inc_by(0);
        }
        registry.register_collector(Box::new(ExecLogRows(execution_log)));
        queries.register(&mut registry);
        GatewayMetrics {
            registry,
            calls,
            duration,
            in_flight,
            refused,
        }
    }

    /// Records a call's execution-log row (its extension, outcome and duration).
    pub(crate) fn observe_call(&self, row: &ExecutionRecord, elapsed: Duration) {
        let extension = ("extension", row.extension_id.clone());
        self.calls
            .get_or_create(&Labels(vec![
                extension.clone(),
                ("outcome", row.outcome.clone()),
            ]))
            .inc();
        self.duration
            .get_or_create(&Labels(vec![extension]))
            .observe(elapsed.as_secs_f64());
    }

    /// Every series in the OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding the gateway's metrics failed");
        }
        out
    }
}

/// Counts the extension calls in flight and the refused ones; wraps the call routes.
pub(crate) async fn count_calls(
    State(state): State<Arc<GatewayState>>,
    request: Request,
    next: Next,
) -> Response {
    let metrics = &state.metrics;
    metrics.in_flight.inc();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    let status = response.status().as_u16();
    if status == 429 || status == 503 {
        metrics
            .refused
            .get_or_create(&Labels(vec![("status", status.to_string())]))
            .inc();
    }
    response
}

/// `GET /metrics`, behind the admin token or a `metrics` credential (see
/// [`crate::admin::admin_routes`]).
pub(crate) async fn metrics(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = negotiate(accept, state.metrics.encode());
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

/// What became of the execution-log rows, read on each scrape.
struct ExecLogRows(ExecLogCounts);

impl fmt::Debug for ExecLogRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExecLogRows")
    }
}

impl Collector for ExecLogRows {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.stats();
        let mut family = encoder.encode_descriptor(
            "execution_log_rows",
            "Execution-log rows by what became of them: written, dropped (the queue was full), failed (their batch could not be written)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("written", stats.written),
            ("dropped", stats.dropped),
            ("failed", stats.failed),
        ] {
            let labels = Labels(vec![("result", result.to_owned())]);
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
