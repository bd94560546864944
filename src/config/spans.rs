//! Span export: on when OpenTelemetry's standard variables name an OTLP endpoint. The SDK
//! reads the rest of them itself (the endpoint's path, headers, timeout, and
//! `OTEL_TRACES_SAMPLER` with its argument).

use super::{ConfigError, err};

/// Where spans go, when they are exported at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanExport {
    /// `OTEL_SERVICE_NAME`, `user-service` when unset.
    pub service_name: String,
}

impl SpanExport {
    /// `None` unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// is set, and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
    pub(super) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|var| get(var).map(|url| (var, url)));
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(_) => return Err(err("OTEL_TRACES_EXPORTER", "expected otlp or none")),
        }
        let Some((var, url)) = endpoint.filter(|_| !disabled) else {
            return Ok(None);
        };
        if !url.starts_with("http://") {
            return Err(err(
                var,
                "expected an http:// URL (OTLP over HTTP, to a collector beside the service)",
            ));
        }
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if get(var).is_some_and(|p| p != "http/protobuf") {
                return Err(err(var, "only http/protobuf is supported"));
            }
        }
        Ok(Some(Self {
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "user-service".to_owned()),
        }))
    }
}
