//! `palisade:extension/metrics`: counters, gauges and histograms that an extension records
//! and the runner exports with `tenant` and `extension` labels. Linked only when the
//! install's grant includes `metrics`.
//!
//! Samples go straight into the runner-wide [`ExtensionMetrics`] store (owned by the
//! [`Runtime`](crate::Runtime)); the per-call [`MetricsState`] is only the install's
//! recording handle. Names and labels are validated first ([`validate`]); each install may
//! create at most [`MetricsConfig::max_series_per_install`] series.

mod store;
pub mod validate;

#[cfg(test)]
mod tests;

use wasmtime::component::{HasData, Linker};

use crate::bindings::current::metrics::{self, Error as WitError, Label};
use crate::capability::{Capability, CapabilityKey, Configure, Linked, Prepare};
use crate::state::InstanceState;

pub use store::{
    DROPPED_SERIES_METRIC, EXPORT_PREFIX, ExtensionMetrics, HISTOGRAM_BUCKETS, InstallMetrics,
    MetricsConfig, export_prefix,
};

/// Why a sample was not recorded; each maps to the WIT variant of the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// The metric name is malformed, or its exposition names would collide with another
    /// metric's of the same extension; the text says how.
    #[error("invalid metric name: {0}")]
    InvalidName(String),
    /// A label name or value is malformed, reserved, too long, repeated, or there are too
    /// many labels; the text says which.
    #[error("invalid metric label: {0}")]
    InvalidLabel(String),
    /// The install's bound on distinct series is reached; the sample was dropped.
    #[error("the install's bound on metric series is reached; the sample was dropped")]
    TooManySeries,
    /// The name is already used by a metric of another kind.
    #[error("the metric name is already used by a metric of another kind")]
    KindMismatch,
}

impl From<MetricError> for WitError {
    fn from(error: MetricError) -> Self {
        match error {
            MetricError::InvalidName(message) => WitError::InvalidName(message),
            MetricError::InvalidLabel(message) => WitError::InvalidLabel(message),
            MetricError::TooManySeries => WitError::TooManySeries,
            MetricError::KindMismatch => WitError::KindMismatch,
        }
    }
}

/// Per-call state of the `metrics` capability: the install's recording handle.
#[derive(Debug, Clone)]
pub struct MetricsState {
    install: InstallMetrics,
}

impl MetricsState {
    /// Prepares the state for one call of the install behind `install`.
    pub fn new(install: InstallMetrics) -> Self {
        MetricsState { install }
    }
}

/// The `metrics` capability: the runtime's store of every extension's series.
pub(crate) struct Metrics {
    series: ExtensionMetrics,
}

impl Metrics {
    /// The series extensions recorded.
    pub(crate) fn series(&self) -> &ExtensionMetrics {
        &self.series
    }
}

impl Capability for Metrics {
    const KEY: CapabilityKey = CapabilityKey::Metrics;
    type State = MetricsState;

    fn configure(runtime: &Configure<'_>) -> Self {
        Metrics {
            series: ExtensionMetrics::new(runtime.config.metrics.clone()),
        }
    }

    fn prepare(&self, call: &Prepare<'_>) -> Option<MetricsState> {
        let invocation = call.invocation;
        invocation.grants.metrics.then(|| {
            MetricsState::new(
                self.series
                    .install(&invocation.tenant_id, &invocation.extension_id),
            )
        })
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        metrics::add_to_linker::<_, Metrics>(linker, |s| s.caps.linked::<Metrics>())
    }
}

impl HasData for Metrics {
    type Data<'a> = Linked<'a, MetricsState>;
}

fn pairs(labels: Vec<Label>) -> Vec<(String, String)> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

impl metrics::Host for Linked<'_, MetricsState> {
    fn counter_add(
        &mut self,
        name: String,
        labels: Vec<Label>,
        value: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .state()?
            .install
            .counter_add(&name, pairs(labels), value)
            .map_err(WitError::from))
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<Label>,
        value: f64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .state()?
            .install
            .gauge_set(&name, pairs(labels), value)
            .map_err(WitError::from))
    }

    fn histogram_observe(
        &mut self,
        name: String,
        labels: Vec<Label>,
        value: f64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .state()?
            .install
            .histogram_observe(&name, pairs(labels), value)
            .map_err(WitError::from))
    }
}
