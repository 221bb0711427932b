//! The runner's own series on `GET /metrics`, beside the ones extensions record: calls and
//! how they ended, guest time, fuel, memory and egress per extension, admission refusals,
//! calls in flight, where compiled components came from, event deliveries, and how long the
//! registry's queries take.
//!
//! Labels are bounded: the extension id (one value per extension installed), the trigger
//! (`http`, `event`, `schedule`), the outcome and error code (fixed sets). The tenant id is
//! a label only when the operator asks for it (`[metrics] tenant_label`), since it grows
//! with the number of tenants.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use palisade_registry::ResolvedInstall;
use palisade_registry::query_metrics::QueryMetrics;
use palisade_runtime::{Outcome, Runtime};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::error::RunnerError;

/// Labels of a series about one extension's calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallLabels {
    extension: String,
    tenant: Option<String>,
    /// Empty on the per-extension series (fuel, memory, egress).
    trigger: String,
    /// `ok`, or the error code's outcome word (`rejected`, `timeout`, `trap`, `error`).
    outcome: Option<&'static str>,
    /// The error code, for the errors series.
    code: Option<&'static str>,
}

impl EncodeLabelSet for CallLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        let mut pairs = vec![("extension", self.extension.as_str())];
        if let Some(tenant) = &self.tenant {
            pairs.push(("tenant", tenant));
        }
        if !self.trigger.is_empty() {
            pairs.push(("trigger", &self.trigger));
        }
        if let Some(outcome) = self.outcome {
            pairs.push(("outcome", outcome));
        }
        if let Some(code) = self.code {
            pairs.push(("code", code));
        }
        pairs.encode(encoder)
    }
}

/// Labels of a series with one fixed-set label (`scope`, `state`...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind(&'static str, &'static str);

impl EncodeLabelSet for Kind {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        [(self.0, self.1)].encode(encoder)
    }
}

/// Exponential histogram buckets: `start`, then `factor` times the one before, `count` in
/// all.
#[derive(Clone, Copy)]
struct Buckets {
    start: f64,
    factor: f64,
    count: u16,
}

/// Guest time: 1 ms to about 33 s.
const SECONDS: Buckets = Buckets {
    start: 0.001,
    factor: 2.0,
    count: 16,
};

/// Peak guest memory: 64 KiB to 4 GiB.
const BYTES: Buckets = Buckets {
    start: 65_536.0,
    factor: 4.0,
    count: 9,
};

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, self.factor, self.count))
    }
}

/// The runner's series. Cheap to update from any task; encoded on each scrape.
pub struct PlatformMetrics {
    registry: Registry,
    tenant_label: bool,
    calls: Family<CallLabels, Counter>,
    errors: Family<CallLabels, Counter>,
    duration: Family<CallLabels, Histogram, Buckets>,
    fuel: Family<CallLabels, Counter>,
    memory: Family<CallLabels, Histogram, Buckets>,
    egress: Family<CallLabels, Counter>,
    refusals: Family<Kind, Counter>,
    in_flight: Gauge<i64, AtomicI64>,
    deliveries: Family<Kind, Counter>,
    lag: Histogram,
}

impl fmt::Debug for PlatformMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformMetrics")
            .field("tenant_label", &self.tenant_label)
            .finish_non_exhaustive()
    }
}

impl PlatformMetrics {
    /// The series, registered; `runtime` is read on each scrape for its compile counts, and
    /// `queries` is the registry's query-latency histogram. With `tenant_label`, call
    /// series also carry the tenant id.
    pub fn new(runtime: Runtime, queries: &QueryMetrics, tenant_label: bool) -> Self {
        let mut registry = Registry::with_prefix("palisade_runner");
        queries.register(&mut registry);
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Guest calls that ran, by extension, trigger and outcome (ok, rejected, timeout, trap, error, cancelled)",
            calls.clone(),
        );
        let errors = Family::<CallLabels, Counter>::default();
        registry.register(
            "call_errors",
            "Guest calls that ended in an error, by extension, trigger and error code (timeout, trap, out_of_memory...)",
            errors.clone(),
        );
        let duration = Family::<CallLabels, Histogram, Buckets>::new_with_constructor(SECONDS);
        registry.register_with_unit(
            "guest_duration",
            "Time from a call's start in the guest to its end (body included), by extension and trigger",
            Unit::Seconds,
            duration.clone(),
        );
        let fuel = Family::<CallLabels, Counter>::default();
        registry.register(
            "fuel_consumed",
            "Fuel the guests consumed, by extension (when fuel metering is on)",
            fuel.clone(),
        );
        let memory = Family::<CallLabels, Histogram, Buckets>::new_with_constructor(BYTES);
        registry.register_with_unit(
            "guest_peak_memory",
            "Largest linear memory of each call's instance, by extension",
            Unit::Bytes,
            memory.clone(),
        );
        let egress = Family::<CallLabels, Counter>::default();
        registry.register_with_unit(
            "egress",
            "Bytes sent and received by guests' outbound HTTP, by extension",
            Unit::Bytes,
            egress.clone(),
        );
        let refusals = Family::<Kind, Counter>::default();
        registry.register(
            "admission_refusals",
            "Calls refused (429) because the install's or the tenant's in-flight cap was full, by scope",
            refusals.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "calls_in_flight",
            "Calls admitted and not yet over, each holding one instance slot",
            in_flight.clone(),
        );
        let deliveries = Family::<Kind, Counter>::default();
        registry.register(
            "event_delivery_attempts",
            "Event and schedule delivery attempts by this process's dispatcher, by how they ended (delivered, retried, dead, unrecorded)",
            deliveries.clone(),
        );
        let lag = SECONDS.new_metric();
        registry.register_with_unit(
            "event_delivery_lag",
            "Time from an event's publishing (or a schedule's slot) to the claim of its first attempt",
            Unit::Seconds,
            lag.clone(),
        );
        // Fixed label sets start at zero, so that a dashboard sees them before the first.
        for scope in ["install", "tenant"] {
            refusals.get_or_create(&Kind("scope", scope)).inc_by(0);
        }
        for result in ["delivered", "retried", "dead", "unrecorded"] {
            deliveries.get_or_create(&Kind("result", result)).inc_by(0);
        }
        registry.register_collector(Box::new(CompileCounts(runtime)));
        PlatformMetrics {
            registry,
            tenant_label,
            calls,
            errors,
            duration,
            fuel,
            memory,
            egress,
            refusals,
            in_flight,
            deliveries,
            lag,
        }
    }

    fn labels(&self, install: &ResolvedInstall, trigger: &str) -> CallLabels {
        CallLabels {
            extension: install.extension_id.clone(),
            tenant: self.tenant_label.then(|| install.tenant_id.clone()),
            trigger: trigger.to_owned(),
            outcome: None,
            code: None,
        }
    }

    /// Records a call of `install` that ran in the guest and ended with `outcome`.
    pub(crate) fn observe_call(&self, install: &ResolvedInstall, trigger: &str, outcome: &Outcome) {
        let labels = self.labels(install, trigger);
        let code = match &outcome.result {
            Ok(()) => None,
            Err(error) => Some(RunnerError::code_of(error)),
        };
        self.calls
            .get_or_create(&CallLabels {
                outcome: Some(code.map_or("ok", |c| c.outcome())),
                ..labels.clone()
            })
            .inc();
        if let Some(code) = code {
            self.errors
                .get_or_create(&CallLabels {
                    code: Some(code.as_str()),
                    ..labels.clone()
                })
                .inc();
        }
        self.duration
            .get_or_create(&labels)
            .observe(outcome.duration.as_secs_f64());
        let per_extension = CallLabels {
            trigger: String::new(),
            ..labels
        };
        if let Some(fuel) = outcome.fuel_consumed {
            self.fuel.get_or_create(&per_extension).inc_by(fuel);
        }
        self.memory
            .get_or_create(&per_extension)
            .observe(outcome.peak_memory_bytes as f64);
        let egress = outcome.egress_bytes_out + outcome.egress_bytes_in;
        self.egress.get_or_create(&per_extension).inc_by(egress);
    }

    /// Records a call whose answer was dropped before its end (outcome `cancelled`): the
    /// guest's consumption never arrives, so only the call is counted.
    pub(crate) fn observe_cancelled(&self, install: &ResolvedInstall, trigger: &str) {
        let labels = self.labels(install, trigger);
        self.calls
            .get_or_create(&CallLabels {
                outcome: Some("cancelled"),
                ..labels
            })
            .inc();
    }

    /// Records a call refused by the in-flight cap of `scope` (`install` or `tenant`).
    pub(crate) fn refused(&self, scope: &'static str) {
        self.refusals.get_or_create(&Kind("scope", scope)).inc();
    }

    /// One more call in flight, until the guard is dropped.
    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    /// Records a delivery attempt that ended `state` (`delivered`, `retried`, `dead`,
    /// `unrecorded`).
    pub(crate) fn delivery_attempt(&self, state: &'static str) {
        self.deliveries.get_or_create(&Kind("result", state)).inc();
    }

    /// Records the lag of a first delivery attempt.
    pub(crate) fn delivery_lag(&self, lag: Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    /// Appends every series to `out`, without the closing `# EOF`.
    pub fn encode(&self, out: &mut String) {
        if let Err(error) = prometheus_client::encoding::text::encode_registry(out, &self.registry)
        {
            tracing::error!(%error, "encoding the runner's metrics failed");
        }
    }
}

/// A call in flight; counted down when dropped.
pub(crate) struct InFlight(Arc<PlatformMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InFlight")
    }
}

/// An empty label set.
#[derive(Debug)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        Ok(())
    }
}

/// Where compiled components came from, read from the runtime on each scrape.
struct CompileCounts(Runtime);

impl fmt::Debug for CompileCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CompileCounts")
    }
}

impl Collector for CompileCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.compile_stats();
        let mut family = encoder.encode_descriptor(
            "component_loads",
            "Components made ready to instantiate, by source: compiled from wasm (a compile-cache miss), from a precompiled artifact, or from memory (a hit)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (source, count) in [
            ("compiled", stats.compiled),
            ("artifact", stats.from_artifact),
            ("memory", stats.from_memory),
        ] {
            let labels = Kind("source", source);
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "compile_seconds",
            "Time spent compiling components from wasm",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let seconds = family.encode_family(&NoLabels)?;
        ConstCounter::new(self.0.compile_time().as_secs_f64()).encode(seconds)?;
        Ok(())
    }
}
