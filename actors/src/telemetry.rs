//! Spans for an OpenTelemetry exporter, when the service has one (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! set up by the service's `telemetry`). The request's span continues the trace it came
//! with, and the ids the service sends on (replies, events) are that span's, so a consumer's
//! span hangs under a span that was exported. The child spans (rate limit, core, Redis,
//! PostgreSQL, each publish) use the target [`TARGET`], which only the exporter's layer
//! enables: without one they are disabled at their call sites, and nothing here does any work.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use user_domain::trace::TraceContext;

/// The target of the spans only an exporter sees (the logs leave them out).
pub const TARGET: &str = "otel";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Said once, by the service, when it has installed an exporter.
pub fn exporting_on() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported: one relaxed load.
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A span at [`TARGET`]: built only for an exporter. `parent: …` first names its parent
/// (`None`: a root), as in `tracing`; else it is the current span's child.
#[macro_export]
macro_rules! otel_span {
    (parent: $parent:expr, $name:expr $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(target: "otel", parent: $parent, $name $(, $($fields)*)?)
    };
    ($name:expr $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(target: "otel", $name $(, $($fields)*)?)
    };
}

/// The current (request's) span, kept by work done later for that request (a group of
/// creates, a round of reads); without an exporter, a disabled span, at no cost.
pub fn request_span() -> tracing::Span {
    match exporting() {
        true => tracing::Span::current(),
        false => tracing::Span::none(),
    }
}

/// Makes `span` (a request's, or a publish's) continue `trace`, and `trace` carry on that
/// span's ids. Without an exporter, nothing.
pub fn continue_trace(span: &tracing::Span, trace: &mut TraceContext) {
    if !exporting() || span.is_disabled() {
        return;
    }
    if let Some(parent) = remote_parent(trace) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        trace.adopt(
            own.trace_id().to_bytes(),
            own.span_id().to_bytes(),
            own.trace_flags().to_u8(),
        );
    }
}

/// The start of a request's span for the exporter: its name, kind (`server`, `consumer`…)
/// and attributes, and the trace it continues (see [`continue_trace`]). The span declares
/// `otel.name` and `otel.kind` as empty fields. Without an exporter, nothing.
pub fn begin(
    span: &tracing::Span,
    trace: &mut TraceContext,
    name: impl FnOnce() -> String,
    kind: &'static str,
    attributes: impl FnOnce() -> Vec<opentelemetry::KeyValue>,
) {
    if !exporting() || span.is_disabled() {
        return;
    }
    span.record("otel.name", name());
    span.record("otel.kind", kind);
    for kv in attributes() {
        span.set_attribute(kv.key, kv.value);
    }
    continue_trace(span, trace);
}

/// The span of work done once for several requests (a round of reads, a group of creates),
/// made by `make` with its parent: a child of the first request's span, following from the
/// others'. Without an exporter, a disabled span.
pub fn shared<'a>(
    requests: impl IntoIterator<Item = &'a tracing::Span>,
    make: impl FnOnce(Option<tracing::Id>) -> tracing::Span,
) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    let mut requests = requests.into_iter();
    let span = make(requests.next().and_then(tracing::Span::id));
    for other in requests {
        span.follows_from(other);
    }
    span
}

/// Names `span` anew, once it knows what it is (a route).
pub fn rename(span: &tracing::Span, name: String) {
    if exporting() {
        span.context().span().update_name(name);
    }
}

/// Records the trace and span ids on a request's span (`trace_id`, `span_id`), for its log
/// lines; nothing when no one logs it.
pub fn log_ids(span: &tracing::Span, trace: &TraceContext) {
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(trace.trace_id()));
        span.record("span_id", tracing::field::display(trace.span_id()));
    }
}

/// A request's status on its span (`key`: `http.response.status_code`…), with `error.type`
/// when the service failed it (5xx).
pub fn answered(span: &tracing::Span, key: &'static str, status: u16) {
    attribute(span, key, i64::from(status));
    if status >= 500 {
        attribute(span, "error.type", status.to_string());
    }
}

/// Sets an attribute on `span` for the exporter only (the logs do not carry it).
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exporting() {
        span.set_attribute(key, value);
    }
}

fn remote_parent(trace: &TraceContext) -> Option<SpanContext> {
    let (trace_id, span_id, flags) = trace.remote_parent()?;
    let state = trace
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags),
        true,
        state,
    ))
}
