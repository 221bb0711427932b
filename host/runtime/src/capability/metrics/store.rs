//! The runner-wide series store: one `prometheus-client` registry holding a family per
//! extension and metric name, with a bound on the series each install may create.
//!
//! Names are namespaced by extension: the family of metric `name` of extension `id` is
//! exported as `ext_<id>__<name>` ([`export_prefix`]), so extensions never share a family
//! and one cannot claim a name, or its kind, for another. Within an extension, a name whose
//! exposition names (a counter's `_total`, a histogram's `_bucket`, `_count` and `_sum`, and
//! `_created` for both) would meet another family's is refused, so the exposition stays
//! valid OpenMetrics.
//!
//! Recording is lock-light and never awaits: a sample to an existing series takes two
//! short read locks (the family map, then the family itself) and one atomic update. Only a
//! sample that would create a series takes the install's own mutex (so that its bound is
//! exact under concurrency), and only a new metric name takes the registry's mutex.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::MetricError;
use super::validate::{self, Kind};

/// Prefix of every exported extension metric name.
pub const EXPORT_PREFIX: &str = "ext_";

/// The prefix of every family an extension exports: `ext_`, the extension id with `.` as
/// `_` and `-` as `_0`, then `__` (`com.example.my-ext` → `ext_com_example_my_0ext__`).
///
/// For ids of the manifest's form (`^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$`) the encoding
/// has no `__` and neither starts nor ends with `_` (a `.` is always followed by a letter,
/// a `-` becomes `_0`), so the first `__` after `ext_` ends it and no two (extension, name)
/// pairs share a family name. Any other id is spelt as `x` and its bytes in hex (no `_`
/// at all), which cannot meet the readable form either.
pub fn export_prefix(extension_id: &str) -> String {
    let mut out = String::with_capacity(EXPORT_PREFIX.len() + extension_id.len() * 2 + 2);
    out.push_str(EXPORT_PREFIX);
    if is_manifest_id(extension_id) {
        for c in extension_id.chars() {
            match c {
                '.' => out.push('_'),
                '-' => out.push_str("_0"),
                c => out.push(c),
            }
        }
    } else {
        out.push('x');
        for byte in extension_id.bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out.push_str("__");
    out
}

/// Whether `id` has the manifest's extension-id form: at least two `.`-separated labels,
/// each a lower-case letter and then lower-case letters, digits and `-`.
fn is_manifest_id(id: &str) -> bool {
    let mut labels = 0;
    for label in id.split('.') {
        labels += 1;
        let mut bytes = label.bytes();
        if !matches!(bytes.next(), Some(b'a'..=b'z'))
            || !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return false;
        }
    }
    labels >= 2
}

/// The names a family of `kind` called `key` may put in the exposition: its own and the
/// suffixed sample names OpenMetrics gives its kind.
fn exposition_names(kind: Kind, key: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        Kind::Counter => &["_total", "_created"],
        Kind::Gauge => &[],
        Kind::Histogram => &["_bucket", "_count", "_sum", "_created"],
    };
    std::iter::once(key.to_owned())
        .chain(suffixes.iter().map(|suffix| format!("{key}{suffix}")))
        .collect()
}

/// Name of the counter of samples dropped at the series bound (exposed with `_total`).
pub const DROPPED_SERIES_METRIC: &str = "palisade_extension_series_dropped";

/// Upper bounds of every histogram's buckets (`+Inf` is implicit): the Prometheus default
/// buckets, which suit durations in seconds, extended by decades so that sizes and counts
/// up to a million land in a finite bucket too.
pub const HISTOGRAM_BUCKETS: [f64; 16] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];

/// Operator settings of the `metrics` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Distinct series (metric name + label values) one install may create; samples that
    /// would create more are dropped and counted. Default 1000.
    pub max_series_per_install: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series_per_install: 1000,
        }
    }
}

/// The labels of one series: the host's `tenant` and `extension`, then the guest's labels
/// sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesLabels {
    tenant: Arc<str>,
    extension: Arc<str>,
    labels: Vec<(String, String)>,
}

impl EncodeLabelSet for SeriesLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        [("tenant", &*self.tenant), ("extension", &*self.extension)].encode(encoder)?;
        self.labels.encode(encoder)
    }
}

/// One sample a guest records.
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

fn default_histogram() -> Histogram {
    Histogram::new(HISTOGRAM_BUCKETS)
}

/// The family of one exported metric name; cloning shares the series.
#[derive(Clone)]
enum Series {
    Counter(Family<SeriesLabels, Counter>),
    Gauge(Family<SeriesLabels, Gauge<f64, AtomicU64>>),
    Histogram(Family<SeriesLabels, Histogram, fn() -> Histogram>),
}

impl Series {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Counter => Series::Counter(Family::default()),
            Kind::Gauge => Series::Gauge(Family::default()),
            Kind::Histogram => Series::Histogram(Family::new_with_constructor(
                default_histogram as fn() -> Histogram,
            )),
        }
    }

    fn register(&self, registry: &mut Registry, name: String, help: String) {
        match self {
            Series::Counter(family) => registry.register(name, help, family.clone()),
            Series::Gauge(family) => registry.register(name, help, family.clone()),
            Series::Histogram(family) => registry.register(name, help, family.clone()),
        }
    }

    /// Applies `sample` to the series `labels`, creating it only if `create`; returns
    /// whether the sample was applied.
    fn apply(
        &self,
        labels: &SeriesLabels,
        sample: Sample,
        create: bool,
    ) -> Result<bool, MetricError> {
        match (self, sample) {
            (Series::Counter(family), Sample::Counter(value)) => {
                Ok(with_series(family, labels, create, |c| {
                    c.inc_by(value);
                }))
            }
            (Series::Gauge(family), Sample::Gauge(value)) => {
                Ok(with_series(family, labels, create, |g| {
                    g.set(value);
                }))
            }
            (Series::Histogram(family), Sample::Histogram(value)) => {
                Ok(with_series(family, labels, create, |h| h.observe(value)))
            }
            _ => Err(MetricError::KindMismatch),
        }
    }
}

fn with_series<M, C: MetricConstructor<M>>(
    family: &Family<SeriesLabels, M, C>,
    labels: &SeriesLabels,
    create: bool,
    update: impl FnOnce(&M),
) -> bool {
    if create {
        update(&family.get_or_create(labels));
        return true;
    }
    match family.get(labels) {
        Some(metric) => {
            update(&metric);
            true
        }
        None => false,
    }
}

/// The families of one extension, shared by all its installs.
#[derive(Default)]
struct Families {
    /// By metric name (a counter without `_total`).
    series: HashMap<String, Series>,
    /// Every exposition name the families claim, with the family's name and kind.
    names: HashMap<String, (String, Kind)>,
}

/// One extension's namespace of metric names.
struct ExtensionFamilies {
    /// `ext_<encoded id>__`.
    prefix: String,
    families: RwLock<Families>,
}

/// What one install shares across its concurrent calls.
struct InstallSeries {
    tenant: Arc<str>,
    extension: Arc<str>,
    /// The extension's names.
    families: Arc<ExtensionFamilies>,
    /// Series created so far; held while creating one so the bound is exact.
    created: Mutex<usize>,
    /// This install's series of the dropped-samples counter.
    dropped: Counter,
}

struct Shared {
    config: MetricsConfig,
    registry: Mutex<Registry>,
    extensions: RwLock<HashMap<String, Arc<ExtensionFamilies>>>,
    installs: RwLock<HashMap<(String, String), Arc<InstallSeries>>>,
    dropped: Family<SeriesLabels, Counter>,
}

impl Shared {
    /// The namespace of `extension_id`, created on first use.
    fn extension(&self, extension_id: &str) -> Arc<ExtensionFamilies> {
        if let Some(families) = read(&self.extensions).get(extension_id) {
            return families.clone();
        }
        self.extensions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(extension_id.to_owned())
            .or_insert_with(|| {
                Arc::new(ExtensionFamilies {
                    prefix: export_prefix(extension_id),
                    families: RwLock::default(),
                })
            })
            .clone()
    }

    /// The family `key` of `extension`, registered now if new; refused if its exposition
    /// names would meet those of another family of the extension.
    fn family_or_register(
        &self,
        extension: &ExtensionFamilies,
        extension_id: &str,
        key: &str,
        kind: Kind,
    ) -> Result<Series, MetricError> {
        let mut families = extension
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = families.series.get(key) {
            return Ok(series.clone());
        }
        let names = exposition_names(kind, key);
        for name in &names {
            if let Some((other, other_kind)) = families.names.get(name) {
                return Err(MetricError::InvalidName(collision(
                    kind,
                    key,
                    name,
                    *other_kind,
                    other,
                )));
            }
        }
        let series = Series::new(kind);
        let help = format!(
            "Extension {} `{key}` of `{extension_id}`, recorded through palisade:extension/metrics",
            kind.as_str()
        );
        series.register(
            &mut lock(&self.registry),
            format!("{}{key}", extension.prefix),
            help,
        );
        for name in names {
            families.names.insert(name, (key.to_owned(), kind));
        }
        families.series.insert(key.to_owned(), series.clone());
        Ok(series)
    }
}

/// The guest's error text for a name that would collide in the exposition.
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

/// The extension metrics of one runner: every install's series, exported in the
/// OpenMetrics text format. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ExtensionMetrics {
    shared: Arc<Shared>,
}

impl ExtensionMetrics {
    /// An empty store with the operator's settings.
    pub fn new(config: MetricsConfig) -> Self {
        let dropped = Family::<SeriesLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            DROPPED_SERIES_METRIC,
            "Extension metric samples dropped because the install reached its series bound",
            dropped.clone(),
        );
        ExtensionMetrics {
            shared: Arc::new(Shared {
                config,
                registry: Mutex::new(registry),
                extensions: RwLock::default(),
                installs: RwLock::default(),
                dropped,
            }),
        }
    }

    /// The operator's settings.
    pub fn config(&self) -> &MetricsConfig {
        &self.shared.config
    }

    /// The recording handle of the install of `extension_id` for `tenant_id` (a tenant has
    /// at most one install of an extension, so the pair names the install). Its
    /// dropped-samples counter is exported from now on, starting at zero.
    pub fn install(&self, tenant_id: &str, extension_id: &str) -> InstallMetrics {
        let key = (tenant_id.to_owned(), extension_id.to_owned());
        let existing = read(&self.shared.installs).get(&key).cloned();
        let series = match existing {
            Some(series) => series,
            None => {
                let mut installs = self
                    .shared
                    .installs
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let families = self.shared.extension(extension_id);
                installs
                    .entry(key)
                    .or_insert_with(|| {
                        let tenant: Arc<str> = tenant_id.into();
                        let extension: Arc<str> = extension_id.into();
                        let dropped = self.shared.dropped.get_or_create_owned(&SeriesLabels {
                            tenant: tenant.clone(),
                            extension: extension.clone(),
                            labels: Vec::new(),
                        });
                        Arc::new(InstallSeries {
                            tenant,
                            extension,
                            families,
                            created: Mutex::new(0),
                            dropped,
                        })
                    })
                    .clone()
            }
        };
        InstallMetrics {
            shared: self.shared.clone(),
            series,
        }
    }

    /// Every series in the OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_families(&mut out);
        out.push_str("# EOF\n");
        out
    }

    /// Appends every metric family to `out` without the closing `# EOF`, so that a caller
    /// can combine them with its own metrics in one exposition.
    pub fn encode_families(&self, out: &mut String) {
        let registry = lock(&self.shared.registry);
        if let Err(error) = prometheus_client::encoding::text::encode_registry(out, &registry) {
            // Writing into a String cannot fail; a metric's encoder can only refuse a value.
            tracing::error!(%error, "encoding extension metrics failed");
        }
    }
}

impl fmt::Debug for ExtensionMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionMetrics")
            .field("config", &self.shared.config)
            .field("extensions", &read(&self.shared.extensions).len())
            .field("installs", &read(&self.shared.installs).len())
            .finish()
    }
}

/// Records the samples of one install into the shared store.
#[derive(Clone)]
pub struct InstallMetrics {
    shared: Arc<Shared>,
    series: Arc<InstallSeries>,
}

impl InstallMetrics {
    /// Adds `value` to the counter `name` (exported as `ext_<extension>__<name>` with
    /// `_total`).
    pub fn counter_add(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> Result<(), MetricError> {
        self.record(name, labels, Sample::Counter(value))
    }

    /// Sets the gauge `name` to `value`.
    pub fn gauge_set(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> Result<(), MetricError> {
        self.record(name, labels, Sample::Gauge(value))
    }

    /// Records `value` in the histogram `name`. A NaN or infinite value is ignored: it
    /// would make the histogram's sum meaningless for good.
    pub fn histogram_observe(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> Result<(), MetricError> {
        self.record(name, labels, Sample::Histogram(value))
    }

    /// Distinct series this install has created.
    pub fn series_count(&self) -> usize {
        *lock(&self.series.created)
    }

    /// Samples dropped at the series bound.
    pub fn dropped_samples(&self) -> u64 {
        self.series.dropped.get()
    }

    fn record(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
        sample: Sample,
    ) -> Result<(), MetricError> {
        let key = validate::family_key(sample.kind(), name)?;
        let labels = validate::label_set(labels)?;
        if let Sample::Histogram(value) = sample
            && !value.is_finite()
        {
            tracing::debug!(metric = name, "non-finite histogram observation ignored");
            return Ok(());
        }
        let labels = SeriesLabels {
            tenant: self.series.tenant.clone(),
            extension: self.series.extension.clone(),
            labels,
        };
        if self.apply_existing(key, &labels, sample)? {
            return Ok(());
        }

        let mut created = lock(&self.series.created);
        // Another call of this install may have created the series meanwhile.
        if self.apply_existing(key, &labels, sample)? {
            return Ok(());
        }
        let max = self.shared.config.max_series_per_install;
        if *created >= max {
            if self.series.dropped.inc() == 0 {
                tracing::warn!(
                    tenant = %self.series.tenant,
                    extension = %self.series.extension,
                    max_series = max,
                    metric = name,
                    "extension reached its metric series bound; samples of new series are dropped"
                );
            }
            return Err(MetricError::TooManySeries);
        }
        self.shared
            .family_or_register(
                &self.series.families,
                &self.series.extension,
                key,
                sample.kind(),
            )?
            .apply(&labels, sample, true)?;
        *created += 1;
        Ok(())
    }

    fn apply_existing(
        &self,
        key: &str,
        labels: &SeriesLabels,
        sample: Sample,
    ) -> Result<bool, MetricError> {
        let family = read(&self.series.families.families)
            .series
            .get(key)
            .cloned();
        match family {
            Some(family) => family.apply(labels, sample, false),
            None => Ok(false),
        }
    }
}

impl fmt::Debug for InstallMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallMetrics")
            .field("tenant", &self.series.tenant)
            .field("extension", &self.series.extension)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}
