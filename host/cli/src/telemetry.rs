//! The process's logs and traces: `tracing` to stderr (text, or JSON with `--log-json`),
//! filtered by `RUST_LOG`; and, when an OTLP endpoint is configured (`[telemetry]
//! otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables), every span
//! exported over OTLP/HTTP through `tracing-opentelemetry`. The ids of the exported spans
//! are the ones propagated in `traceparent` (`palisade_protocol::trace`).

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{OtlpProtocol, TelemetrySection};

/// The environment variables that name an OTLP endpoint when the file does not.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Flushes the spans not yet exported when dropped, at the end of `main`.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {error}");
        }
    }
}

/// Installs the global subscriber: the log to stderr, and the OTLP export when configured.
/// `service` names the process's role (`up`, `gateway`, ...) in the default service name.
pub(crate) fn init(json: bool, settings: &TelemetrySection, service: &str) -> Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = stderr_log(json);
    let provider = provider(settings, service)?;
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("palisade")));
    tracing_subscriber::registry()
        .with(filter)
        .with(log)
        .with(spans)
        .init();
    Ok(Telemetry { provider })
}

/// [`init`] for `palisade dev`: the guest's log lines go to `guest` (and not to the
/// process's log on stderr), which shows only warnings and errors unless `RUST_LOG` says
/// otherwise.
pub(crate) fn init_dev(
    json: bool,
    settings: &TelemetrySection,
    guest: crate::commands::dev::GuestLines,
) -> Result<Telemetry> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| !d.trim().is_empty() && EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| "warn".to_owned());
    let filter = |extra: &str| EnvFilter::new(format!("{directives}{extra}"));
    let log = stderr_log(json);
    let provider = provider(settings, "dev")?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("palisade"))
            .with_filter(filter(""))
    });
    tracing_subscriber::registry()
        .with(log.with_filter(filter(",guest=off")))
        .with(spans)
        .with(guest.with_filter(tracing_subscriber::filter::filter_fn(
            crate::commands::dev::GuestLines::wants,
        )))
        .init();
    Ok(Telemetry { provider })
}

/// The process's log on stderr, as text or JSON; colours only for a person at a terminal,
/// not in files or log collectors.
fn stderr_log<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use std::io::IsTerminal;
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        log.json().boxed()
    } else {
        log.boxed()
    }
}

/// The tracer provider exporting to the configured endpoint, if there is one.
fn provider(settings: &TelemetrySection, service: &str) -> Result<Option<SdkTracerProvider>> {
    let from_environment = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if settings.otlp_endpoint.is_none() && !from_environment {
        return Ok(None);
    }
    let protocol = match settings.otlp_protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol);
    if let Some(endpoint) = &settings.otlp_endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .context("setting up the OTLP span exporter")?;
    let service_name = settings
        .service_name
        .clone()
        .unwrap_or_else(|| format!("palisade-{service}"));
    let resource = Resource::builder().with_service_name(service_name).build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}
