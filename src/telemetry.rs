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
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

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
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false);
        let _ = match format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
            LogFormat::Pretty => builder.try_init(),
        };
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
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_target(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(false).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    if installed.is_ok() {
        user_core::telemetry::exporting_on();
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}
