//! `palisade:extension/metrics`.

/// Per-call state of the `metrics` capability.
#[derive(Debug, Default)]
pub struct MetricsState;
