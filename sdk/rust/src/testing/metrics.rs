//! The fake of `palisade:extension/metrics`, with the host's checks in the host's order:
//! the name (`invalid-name`), the labels (`invalid-label`), the kind of an existing metric
//! (`kind-mismatch`), the bound of 1000 series per install (`too-many-series`), then the
//! names a new metric would claim in the exposition (`invalid-name`). The error texts are
//! the host's.

use std::collections::BTreeMap;

pub(crate) use crate::bindings::metrics::palisade::extension::metrics::{Error, Label};

use super::{not_granted, with_state};

const MAX_NAME_CHARS: usize = 64;
const MAX_LABELS: usize = 8;
const MAX_LABEL_VALUE_BYTES: usize = 128;
const RESERVED_LABELS: [&str; 5] = ["tenant", "extension", "install", "le", "quantile"];
const MAX_SERIES_PER_INSTALL: usize = 1000;
const ECHO_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Gauge => &[],
            Kind::Histogram => &["_bucket", "_count", "_sum", "_created"],
        }
    }
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy)]
enum Sample {
    Counter(u64),
    Gauge(f64),
    Histogram(f64),
}

impl Sample {
    fn kind(self) -> Kind {
        match self {
            Sample::Counter(_) => Kind::Counter,
            Sample::Gauge(_) => Kind::Gauge,
            Sample::Histogram(_) => Kind::Histogram,
        }
    }
}

enum Values {
    Counter(BTreeMap<Labels, u64>),
    Gauge(BTreeMap<Labels, f64>),
    Histogram(BTreeMap<Labels, Vec<f64>>),
}

/// One install's metrics.
#[derive(Default)]
pub(crate) struct Store {
    /// By family key (a counter's name without `_total`).
    families: BTreeMap<String, Values>,
    /// Exposition names claimed, with the family and kind that claimed them.
    claimed: BTreeMap<String, (String, Kind)>,
    series: usize,
}

impl Store {
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let key = name.strip_suffix("_total").unwrap_or(name);
        match self.families.get(key)? {
            Values::Counter(values) => values.get(&sorted(labels)).copied(),
            _ => None,
        }
    }

    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.families.get(name)? {
            Values::Gauge(values) => values.get(&sorted(labels)).copied(),
            _ => None,
        }
    }

    pub(crate) fn observations(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.families.get(name) {
            Some(Values::Histogram(values)) => {
                values.get(&sorted(labels)).cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn record(&mut self, name: &str, labels: &[Label], sample: Sample) -> Result<(), Error> {
        let kind = sample.kind();
        let key = family_key(kind, name)?.to_owned();
        let labels = label_set(labels)?;
        if let Sample::Histogram(value) = sample
            && !value.is_finite()
        {
            return Ok(());
        }
        let exists = match self.families.get(&key) {
            Some(values) if kind_of(values) != kind => return Err(Error::KindMismatch),
            Some(values) => has_series(values, &labels),
            None => false,
        };
        if !exists {
            if self.series >= MAX_SERIES_PER_INSTALL {
                return Err(Error::TooManySeries);
            }
            if !self.families.contains_key(&key) {
                self.register(kind, &key)?;
            }
            self.series += 1;
        }
        let Some(values) = self.families.get_mut(&key) else {
            return Ok(());
        };
        match (values, sample) {
            (Values::Counter(values), Sample::Counter(value)) => {
                let total = values.entry(labels).or_default();
                *total = total.saturating_add(value);
            }
            (Values::Gauge(values), Sample::Gauge(value)) => {
                values.insert(labels, value);
            }
            (Values::Histogram(values), Sample::Histogram(value)) => {
                values.entry(labels).or_default().push(value);
            }
            // The family's kind was checked above.
            _ => return Err(Error::KindMismatch),
        }
        Ok(())
    }

    fn register(&mut self, kind: Kind, key: &str) -> Result<(), Error> {
        let names: Vec<String> = std::iter::once(key.to_owned())
            .chain(
                kind.suffixes()
                    .iter()
                    .map(|suffix| format!("{key}{suffix}")),
            )
            .collect();
        for name in &names {
            if let Some((other, other_kind)) = self.claimed.get(name) {
                return Err(Error::InvalidName(collision(
                    kind,
                    key,
                    name,
                    *other_kind,
                    other,
                )));
            }
        }
        for name in names {
            self.claimed.insert(name, (key.to_owned(), kind));
        }
        let values = match kind {
            Kind::Counter => Values::Counter(BTreeMap::new()),
            Kind::Gauge => Values::Gauge(BTreeMap::new()),
            Kind::Histogram => Values::Histogram(BTreeMap::new()),
        };
        self.families.insert(key.to_owned(), values);
        Ok(())
    }
}

fn kind_of(values: &Values) -> Kind {
    match values {
        Values::Counter(_) => Kind::Counter,
        Values::Gauge(_) => Kind::Gauge,
        Values::Histogram(_) => Kind::Histogram,
    }
}

fn has_series(values: &Values, labels: &Labels) -> bool {
    match values {
        Values::Counter(values) => values.contains_key(labels),
        Values::Gauge(values) => values.contains_key(labels),
        Values::Histogram(values) => values.contains_key(labels),
    }
}

fn sorted(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn collision(kind: Kind, key: &str, name: &str, other_kind: Kind, other: &str) -> String {
    let what = if name == other {
        format!("{} `{other}`", other_kind.as_str())
    } else {
        format!("the `{name}` series of {} `{other}`", other_kind.as_str())
    };
    let mine = if name == key {
        String::new()
    } else {
        format!(" (its series `{name}`)")
    };
    format!(
        "{} name `{key}`{mine} would collide in the exposition with {what}; choose another name",
        kind.as_str()
    )
}

fn family_key(kind: Kind, name: &str) -> Result<&str, Error> {
    check_identifier(name)
        .map_err(|why| Error::InvalidName(format!("metric name `{}` {why}", echo(name))))?;
    match kind {
        Kind::Counter => {
            let base = name.strip_suffix("_total").unwrap_or(name);
            if base.is_empty() || base.ends_with("_total") {
                return Err(Error::InvalidName(format!(
                    "counter name `{name}` needs a name before its one `_total` suffix"
                )));
            }
            Ok(base)
        }
        Kind::Gauge | Kind::Histogram if name.ends_with("_total") => {
            Err(Error::InvalidName(format!(
                "{} name `{name}` ends in `_total`, which is reserved for counters",
                kind.as_str()
            )))
        }
        Kind::Gauge | Kind::Histogram => Ok(name),
    }
}

fn label_set(labels: &[Label]) -> Result<Labels, Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::InvalidLabel(format!(
            "{} labels given, at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    for Label { name, value } in labels {
        check_identifier(name)
            .map_err(|why| Error::InvalidLabel(format!("label name `{}` {why}", echo(name))))?;
        if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") {
            return Err(Error::InvalidLabel(format!(
                "label name `{name}` is reserved (reserved: {}, and names starting with `__`)",
                RESERVED_LABELS.join(", ")
            )));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Error::InvalidLabel(format!(
                "value of label `{name}` is {} bytes, at most {MAX_LABEL_VALUE_BYTES} are allowed",
                value.len()
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(Error::InvalidLabel(format!(
                "value of label `{name}` contains a control character"
            )));
        }
    }
    let mut labels: Labels = labels
        .iter()
        .map(|label| (label.name.clone(), label.value.clone()))
        .collect();
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = labels.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(Error::InvalidLabel(format!(
            "label `{}` is given more than once",
            pair[0].0
        )));
    }
    Ok(labels)
}

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

fn echo(input: &str) -> String {
    match input.char_indices().nth(ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &input[..end]),
        None => input.to_owned(),
    }
}

fn granted(function: &str, name: &str, labels: &[Label], sample: Sample) -> Result<(), Error> {
    with_state(function, |state| {
        if !state.grants.metrics {
            not_granted("palisade:extension/metrics", "metrics");
        }
        state.metrics.record(name, labels, sample)
    })
}

pub(crate) fn counter_add(name: &str, labels: &[Label], value: u64) -> Result<(), Error> {
    granted("metrics::counter_add", name, labels, Sample::Counter(value))
}

pub(crate) fn gauge_set(name: &str, labels: &[Label], value: f64) -> Result<(), Error> {
    granted("metrics::gauge_set", name, labels, Sample::Gauge(value))
}

pub(crate) fn histogram_observe(name: &str, labels: &[Label], value: f64) -> Result<(), Error> {
    granted(
        "metrics::histogram_observe",
        name,
        labels,
        Sample::Histogram(value),
    )
}
