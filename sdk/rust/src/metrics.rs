//! Application metrics, exported by the runner with tenant and extension labels
//! (`palisade:extension/metrics`, feature `metrics`, granted by the manifest capability
//! `metrics`).
//!
//! Metric names match `[a-z_][a-z0-9_]{0,63}`; a counter's name may end in `_total`, a
//! gauge's or histogram's may not. A sample takes at most 8 labels (names like metric
//! names, not `tenant`, `extension`, `install`, `le` or `quantile`; values up to 128
//! bytes). The host bounds the number of distinct series per install (1000 by default) and
//! exports every metric as `ext_<extension>__<name>` with `tenant` and `extension` labels.
//!
//! ```no_run
//! use palisade_sdk::metrics;
//!
//! metrics::counter_add("orders_total", &[("kind", "express")], 1)?;
//! metrics::gauge_set("queue_depth", &[], 12.0)?;
//! metrics::histogram_observe("upstream_seconds", &[("upstream", "billing")], 0.25)?;
//! # Ok::<(), metrics::MetricError>(())
//! ```

#[cfg(not(palisade_fake_host))]
use crate::bindings::metrics::palisade::extension::metrics as wit;
#[cfg(palisade_fake_host)]
use crate::testing::metrics as wit;

/// Why a metric was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// The metric name is not `[a-z_][a-z0-9_]*` or is too long.
    #[error("invalid metric name: {0}")]
    InvalidName(String),
    /// A label name or value is malformed, too long, or there are too many labels.
    #[error("invalid metric label: {0}")]
    InvalidLabel(String),
    /// The install's bound on distinct series is reached; the sample was dropped.
    #[error("too many metric series for this install; the sample was dropped")]
    TooManySeries,
    /// The name is already used by a metric of another kind.
    #[error("the metric name is already used by a metric of another kind")]
    KindMismatch,
}

impl From<wit::Error> for MetricError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::InvalidName(message) => MetricError::InvalidName(message),
            wit::Error::InvalidLabel(message) => MetricError::InvalidLabel(message),
            wit::Error::TooManySeries => MetricError::TooManySeries,
            wit::Error::KindMismatch => MetricError::KindMismatch,
        }
    }
}

fn to_labels(labels: &[(&str, &str)]) -> Vec<wit::Label> {
    labels
        .iter()
        .map(|(name, value)| wit::Label {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

/// Adds `value` to the counter `name` with `labels`.
pub fn counter_add(name: &str, labels: &[(&str, &str)], value: u64) -> Result<(), MetricError> {
    Ok(wit::counter_add(name, &to_labels(labels), value)?)
}

/// Sets the gauge `name` with `labels` to `value`.
pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: f64) -> Result<(), MetricError> {
    Ok(wit::gauge_set(name, &to_labels(labels), value)?)
}

/// Records one observation `value` in the histogram `name` with `labels`.
pub fn histogram_observe(
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> Result<(), MetricError> {
    Ok(wit::histogram_observe(name, &to_labels(labels), value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_from_the_host() {
        assert_eq!(
            MetricError::from(wit::Error::InvalidName("Bad".into())),
            MetricError::InvalidName("Bad".into())
        );
        assert_eq!(
            MetricError::from(wit::Error::InvalidLabel("too long".into())),
            MetricError::InvalidLabel("too long".into())
        );
        assert_eq!(
            MetricError::from(wit::Error::TooManySeries),
            MetricError::TooManySeries
        );
        assert_eq!(
            MetricError::from(wit::Error::KindMismatch),
            MetricError::KindMismatch
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            MetricError::InvalidName("name `X` is not lower case".into()).to_string(),
            "invalid metric name: name `X` is not lower case"
        );
    }

    #[test]
    fn labels_keep_their_order() {
        let labels = to_labels(&[("b", "2"), ("a", "1")]);
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str()))
            .collect();
        assert_eq!(pairs, [("b", "2"), ("a", "1")]);
    }
}
