//! The REST edge: decode HTTP into a method name and params, authenticate, hand them to the
//! core, and encode its answer. Routing is one table ([`routes`]); no operation logic here.

mod health;
mod input;
pub mod openapi;
mod respond;
mod routes;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures::Stream;
use opentelemetry::KeyValue;
use serde_json::Value;
use tracing::Instrument;
use user_core::Core;
use user_core::health::Health;
use user_core::metrics::{Transport, record_request};
use user_core::telemetry;
use user_domain::CorrelationId;
use user_domain::operations::Input;
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::trace::TraceContext;
use user_domain::{CallContext, Caller, CoreError, ParamForm};
use warp::Filter;
use warp::http::{HeaderMap, Method as Http};

use crate::auth::{Authenticator, Credentials, Source};

pub use input::MAX_BODY_BYTES;
use input::{add_body, add_query, decode_segments, read_body};
pub use respond::CORRELATION_HEADER;

/// How much of a request's path a log line quotes.
const LOGGED_PATH_CHARS: usize = 256;

/// What the REST edge needs: the core, the authenticator, and the pieces /health reads.
pub struct Edge {
    pub core: Core,
    pub auth: Arc<Authenticator>,
    pub pool: sqlx::PgPool,
    /// Open while PostgreSQL does not answer: readiness is 503 without asking it.
    pub db_breaker: user_core::breaker::Breaker,
    pub health: Health,
    /// Every supervised actor's state, read directly (even while the HealthMonitor restarts).
    pub actors: user_core::supervisor::Supervision,
    pub redis: Option<user_core::redis::Redis>,
    pub cache: user_core::cache::UserCache,
    pub started: Instant,
    /// How long a request's body may take to arrive (`HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
}

/// The whole HTTP surface as one warp filter.
pub fn filter(
    edge: Arc<Edge>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || edge.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<server::PeerAddr>())
        .and(warp::body::stream())
        .then(
            |edge: Arc<Edge>,
             method,
             path: warp::path::FullPath,
             query,
             headers,
             peer: Option<server::PeerAddr>,
             body| async move {
                let remote = peer.map(|p| p.0);
                handle(
                    edge,
                    method,
                    path.as_str().to_owned(),
                    query,
                    headers,
                    remote,
                    body,
                )
                .await
            },
        )
}

async fn handle<S, B>(
    edge: Arc<Edge>,
    method: Http,
    path: String,
    query: String,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    body: S,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let correlation_id = respond::correlation_id(&headers);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut trace = TraceContext::continue_from(text("traceparent"), text("tracestate"));
    let span = tracing::info_span!(
        "http",
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        method = %cut(method.as_str(), QUOTE_CHARS),
        path = %shown_path(&path),
        caller = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    let started = Instant::now();
    // Without a TCP peer (never seen), no address: refused by the allow-list and open mode.
    let peer = remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    telemetry::begin(
        &span,
        &mut trace,
        || cut(method.as_str(), QUOTE_CHARS).into_owned(),
        "server",
        || {
            vec![
                KeyValue::new(
                    "http.request.method",
                    cut(method.as_str(), QUOTE_CHARS).into_owned(),
                ),
                KeyValue::new("url.path", shown_path(&path).into_owned()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("network.peer.address", peer.to_string()),
                KeyValue::new("network.protocol.name", "http"),
            ]
        },
    );
    telemetry::log_ids(&span, &trace);
    if let Some(response) = unauthenticated(&method, &path, &correlation_id) {
        return respond::with_correlation_id(response, &correlation_id);
    }
    // What the request turned out to be, for the metrics.
    let mut operation = None;
    let mut caller_name = None;
    let mut allow = None;
    let result = async {
        if HEALTH_PATHS.contains(&path.as_str()) && method != Http::GET {
            allow = Some("GET".to_owned());
            return Err(not_allowed(&method));
        }
        match path.as_str() {
            "/health/ready" => return health::ready(&edge).await,
            "/health" | "/health/integrations" => {
                let creds = Credentials::from_headers(|n| headers.get(n)?.to_str().ok());
                let detailed = edge.auth.may_see_details(&creds, peer);
                return Ok(match path.as_str() {
                    "/health" => health::live(&edge, detailed).await,
                    _ => health::integrations(&edge, detailed).await,
                });
            }
            _ => {}
        }
        let segments = decode_segments(&path)?;
        let route = routes::find(&method, &segments).inspect_err(|e| {
            if matches!(e, CoreError::MethodNotAllowed(_)) {
                allow = Some(routes::allowed(&segments).join(", "));
            }
        })?;
        operation = Some(route.method);
        if telemetry::exporting() {
            let span = tracing::Span::current();
            telemetry::rename(&span, format!("{} {}", method.as_str(), route.template));
            telemetry::attribute(&span, "http.route", route.template);
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let caller = edge
            .auth
            .authenticate_slowly(&Credentials::from_headers(header), Source::Address(peer))
            .await?;
        tracing::Span::current().record("caller", caller.name.as_str());
        caller_name = Some(caller.name.clone());
        let mut params = route.path_params;
        add_query(&mut params, &query);
        let form = match route.input {
            Input::Query(_) => ParamForm::Query,
            Input::Body(_) => {
                add_body(
                    &mut params,
                    read_body(&headers, body, edge.body_timeout).await?,
                )?;
                ParamForm::Json
            }
        };
        let key = header("idempotency-key");
        if key.is_some_and(|k| !CorrelationId::is_valid(k)) {
            return Err(CoreError::invalid(
                "Idempotency-Key",
                "must be 1–128 printable ASCII characters",
            ));
        }
        let ctx = CallContext::new(caller, correlation_id.clone(), trace.clone()).keyed(key);
        edge.core
            .call(ctx, route.method, Value::Object(params), form)
            .await
    }
    .instrument(span.clone())
    .await;
    if let Some(op) = operation {
        let status = result
            .as_ref()
            .map_or_else(|e| e.code().status(), |r| r.status.code());
        let error = result.as_ref().err().map(CoreError::code);
        let caller = caller_name.as_deref().unwrap_or(Caller::ANONYMOUS);
        record_request(
            caller,
            op.as_str(),
            Transport::Rest,
            status,
            started.elapsed(),
            error,
        );
    }
    // A body that did not arrive leaves the connection mid-request: close it.
    let close = matches!(result, Err(CoreError::RequestTimeout(_)));
    let mut response = respond::render(result, &correlation_id);
    if close {
        response.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    if let Some(v) = allow.and_then(|a| warp::http::HeaderValue::from_str(&a).ok()) {
        response.headers_mut().insert(warp::http::header::ALLOW, v);
    }
    // The service's span of the caller's trace (or of the one it started).
    if let Ok(v) = warp::http::HeaderValue::from_str(&trace.traceparent()) {
        response.headers_mut().insert("traceparent", v);
    }
    let status = response.status().as_u16();
    telemetry::answered(&span, "http.response.status_code", status);
    span.in_scope(|| {
        tracing::info!(
            status,
            ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3),
            "request"
        )
    });
    response
}

/// The path as logs and exported spans show it, cut: an e-mail address in it (the
/// `users/email/{email}` route) is personal data that an erasure could not reach there, so a
/// segment that holds one reads `{email}`.
fn shown_path(path: &str) -> std::borrow::Cow<'_, str> {
    let path = cut(path, LOGGED_PATH_CHARS);
    let personal = |s: &str| {
        s.contains('@')
            || s.as_bytes()
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"%40"))
    };
    if !personal(&path) {
        return path;
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| if personal(s) { "{email}" } else { s })
        .collect();
    segments.join("/").into()
}

/// The health paths, answered without credentials (GET only).
const HEALTH_PATHS: [&str; 3] = ["/health", "/health/ready", "/health/integrations"];

/// `/metrics`, `/openapi.json` and `/docs`: answered without credentials, before routing.
fn unauthenticated(
    method: &Http,
    path: &str,
    correlation_id: &CorrelationId,
) -> Option<warp::reply::Response> {
    let response = match path {
        "/metrics" => crate::metrics::response(),
        "/openapi.json" => openapi::json(),
        _ => openapi::docs(path)?,
    };
    if *method == Http::GET {
        return Some(response);
    }
    let mut refused = respond::render(Err(not_allowed(method)), correlation_id);
    refused.headers_mut().insert(
        warp::http::header::ALLOW,
        warp::http::HeaderValue::from_static("GET"),
    );
    Some(refused)
}

/// A 405 that quotes the method (the caller's token) cut.
fn not_allowed(method: &Http) -> CoreError {
    CoreError::MethodNotAllowed(cut(method.as_str(), QUOTE_CHARS).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_segment_holding_an_address_is_shown_as_email() {
        let shown = |p| super::shown_path(p).into_owned();
        assert_eq!(
            shown("/api/internal/users/email/ann@example.com"),
            "/api/internal/users/email/{email}"
        );
        assert_eq!(
            shown("/api/internal/users/email/Ann%40Example.com/x"),
            "/api/internal/users/email/{email}/x"
        );
        assert_eq!(shown("/api/internal/users/42"), "/api/internal/users/42");
    }
}
