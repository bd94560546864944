//! Logs: `RUST_LOG` filters, `LOG_FORMAT=json` for structured output. Every request runs in
//! a span carrying its correlation id, trace id, span id and caller.
//!
//! Spans: exported over OTLP/HTTP when OpenTelemetry's variables ask for it
//! ([`SpanExport`]); the request spans and the child spans of [`user_core::telemetry`] go to
//! the SDK's batch exporter (its own thread, a bounded queue: a collector that hangs or is
//! gone costs dropped spans, never a request). Without it, the subscriber is the logs alone.

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, SpanExport};

/// What must be flushed before the process ends.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends what is still queued (within the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the logs and, when configured, the span exporter. A second call (tests
/// starting several apps) keeps the first subscriber.
pub fn init(format: LogFormat, export: Option<&SpanExport>) -> Result<Telemetry, String> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The exporter's child spans never become a log line's current span.
    if let Ok(directive) = format!("{}=off", user_core::telemetry::TARGET).parse() {
        filter = filter.add_directive(directive);
    }
    let Some(export) = export else {
        // The filter for every layer: call sites it leaves out are never enabled.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(logs(format))
            .try_init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(export.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    // The spans' own fields and the OpenTelemetry attributes are all a span carries: no
    // thread, source location or busy/idle time per span.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("user-service"))
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    let installed = tracing_subscriber::registry()
        .with(logs(format).with_filter(filter))
        .with(spans)
        .try_init();
    if installed.is_ok() {
        user_core::telemetry::exporting_on();
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The log lines, as `LOG_FORMAT` asks, with each request span's fields.
fn logs<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => layer.boxed(),
    }
}
