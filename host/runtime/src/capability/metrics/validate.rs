//! Validation of metric names and label sets, before anything touches the shared store.

use super::MetricError;

/// Longest metric or label name, in characters (`[a-z_][a-z0-9_]{0,63}`).
pub const MAX_NAME_CHARS: usize = 64;
/// Most labels a guest may attach to one sample (the host's own labels are not counted).
pub const MAX_LABELS: usize = 8;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;
/// Label names the host sets itself or that the exposition format uses.
pub const RESERVED_LABELS: [&str; 5] = ["tenant", "extension", "install", "le", "quantile"];

/// Longest excerpt of guest input echoed back in an error message.
const ECHO_CHARS: usize = 64;

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Monotonic `u64` counter.
    Counter,
    /// Last-value `f64` gauge.
    Gauge,
    /// Histogram with the fixed default buckets.
    Histogram,
}

impl Kind {
    /// The OpenMetrics type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Checks `name` and returns the key of its family: a counter's `_total` suffix is
/// dropped (the exposition adds it back); gauges and histograms may not end in `_total`.
pub fn family_key(kind: Kind, name: &str) -> Result<&str, MetricError> {
    check_identifier(name)
        .map_err(|why| MetricError::InvalidName(format!("metric name `{}` {why}", echo(name))))?;
    match kind {
        Kind::Counter => {
            let base = name.strip_suffix("_total").unwrap_or(name);
            if base.is_empty() || base.ends_with("_total") {
                return Err(MetricError::InvalidName(format!(
                    "counter name `{name}` needs a name before its one `_total` suffix"
                )));
            }
            Ok(base)
        }
        Kind::Gauge | Kind::Histogram if name.ends_with("_total") => {
            Err(MetricError::InvalidName(format!(
                "{} name `{name}` ends in `_total`, which is reserved for counters",
                kind.as_str()
            )))
        }
        Kind::Gauge | Kind::Histogram => Ok(name),
    }
}

/// Checks a guest's labels and returns them sorted by name, so that the order in which a
/// guest passes them does not make a different series.
pub fn label_set(mut labels: Vec<(String, String)>) -> Result<Vec<(String, String)>, MetricError> {
    if labels.len() > MAX_LABELS {
        return Err(MetricError::InvalidLabel(format!(
            "{} labels given, at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    for (name, value) in &labels {
        check_identifier(name).map_err(|why| {
            MetricError::InvalidLabel(format!("label name `{}` {why}", echo(name)))
        })?;
        if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") {
            return Err(MetricError::InvalidLabel(format!(
                "label name `{name}` is reserved (reserved: {}, and names starting with `__`)",
                RESERVED_LABELS.join(", ")
            )));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(MetricError::InvalidLabel(format!(
                "value of label `{name}` is {} bytes, at most {MAX_LABEL_VALUE_BYTES} are allowed",
                value.len()
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(MetricError::InvalidLabel(format!(
                "value of label `{name}` contains a control character"
            )));
        }
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = labels.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(MetricError::InvalidLabel(format!(
            "label `{}` is given more than once",
            pair[0].0
        )));
    }
    Ok(labels)
}

/// `[a-z_][a-z0-9_]{0,63}`; the error completes "name `x` ...".
fn check_identifier(name: &str) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err("is empty"),
        Some(b'a'..=b'z' | b'_') => {}
        Some(_) => return Err("must start with a lower-case letter or `_`"),
    }
    if name.len() > MAX_NAME_CHARS {
        return Err("is longer than 64 characters");
    }
    if bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
        Ok(())
    } else {
        Err("may contain only lower-case letters, digits and `_`")
    }
}

/// A bounded excerpt of guest input for an error message.
fn echo(input: &str) -> String {
    match input.char_indices().nth(ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &input[..end]),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn invalid_name(kind: Kind, name: &str) -> String {
        match family_key(kind, name) {
            Err(MetricError::InvalidName(message)) => message,
            other => panic!("expected invalid-name for {name:?}, got {other:?}"),
        }
    }

    fn invalid_label(pairs: &[(&str, &str)]) -> String {
        match label_set(labels(pairs)) {
            Err(MetricError::InvalidLabel(message)) => message,
            other => panic!("expected invalid-label for {pairs:?}, got {other:?}"),
        }
    }

    #[test]
    fn good_names_pass_and_counters_lose_their_total_suffix() {
        assert_eq!(
            family_key(Kind::Counter, "page_hits_total"),
            Ok("page_hits")
        );
        assert_eq!(family_key(Kind::Counter, "page_hits"), Ok("page_hits"));
        assert_eq!(family_key(Kind::Counter, "__total"), Ok("_"));
        assert_eq!(family_key(Kind::Gauge, "_queue9"), Ok("_queue9"));
        let longest = format!("a{}", "b".repeat(63));
        assert_eq!(family_key(Kind::Histogram, &longest), Ok(longest.as_str()));
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        assert!(invalid_name(Kind::Counter, "").contains("is empty"));
        assert!(invalid_name(Kind::Counter, "Hits").contains("must start with"));
        assert!(invalid_name(Kind::Counter, "9lives").contains("must start with"));
        assert!(invalid_name(Kind::Gauge, "page-hits").contains("only lower-case"));
        assert!(invalid_name(Kind::Gauge, "pageHits").contains("only lower-case"));
        assert!(invalid_name(Kind::Gauge, "é").contains("must start with"));
        let long = "a".repeat(65);
        assert!(invalid_name(Kind::Counter, &long).contains("longer than 64"));
        assert!(invalid_name(Kind::Counter, "_total").contains("needs a name before"));
        assert!(invalid_name(Kind::Counter, "x_total_total").contains("needs a name before"));
        assert!(invalid_name(Kind::Gauge, "x_total").contains("reserved for counters"));
        assert!(invalid_name(Kind::Histogram, "x_total").contains("reserved for counters"));
    }

    #[test]
    fn echoed_input_is_bounded() {
        let message = invalid_name(Kind::Counter, &"A".repeat(10_000));
        assert!(message.len() < 200, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn labels_are_sorted_by_name() {
        assert_eq!(
            label_set(labels(&[("page", "b"), ("method", "get")])).unwrap(),
            labels(&[("method", "get"), ("page", "b")])
        );
        assert_eq!(label_set(Vec::new()).unwrap(), Vec::new());
    }

    #[test]
    fn label_bounds_are_enforced() {
        let eight: Vec<(String, String)> = (0..8).map(|i| (format!("l{i}"), "v".into())).collect();
        assert!(label_set(eight.clone()).is_ok());
        let mut nine = eight;
        nine.push(("l8".into(), "v".into()));
        assert!(matches!(
            label_set(nine),
            Err(MetricError::InvalidLabel(m)) if m.contains("9 labels given, at most 8")
        ));
        let longest = "v".repeat(MAX_LABEL_VALUE_BYTES);
        assert!(label_set(labels(&[("page", &longest)])).is_ok());
        let too_long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert!(invalid_label(&[("page", &too_long)]).contains("129 bytes, at most 128"));
    }

    #[test]
    fn bad_labels_say_what_is_wrong() {
        assert!(invalid_label(&[("Page", "x")]).contains("label name `Page`"));
        assert!(invalid_label(&[("", "x")]).contains("is empty"));
        for reserved in [
            "tenant",
            "extension",
            "install",
            "le",
            "quantile",
            "__name__",
        ] {
            assert!(
                invalid_label(&[(reserved, "x")]).contains("is reserved"),
                "{reserved}"
            );
        }
        assert!(invalid_label(&[("page", "a\nb")]).contains("control character"));
        assert!(invalid_label(&[("page", "a"), ("page", "b")]).contains("more than once"));
    }

    #[test]
    fn quotes_and_backslashes_are_fine_in_values() {
        assert!(label_set(labels(&[("page", r#"a "quoted" \ value"#)])).is_ok());
    }
}
